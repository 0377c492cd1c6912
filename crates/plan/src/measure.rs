//! Reading the live fleet without migrating: memory, what it holds and how
//! fast the guest dirties it, per VM, over QMP (QEMU inventories) or
//! through libvirt (libvirt inventories, with the `libvirt` feature). Both
//! read a sample of the guest's pages (QMP `pmemsave`, or HMP `xp` when
//! QEMU is not on this machine; libvirt `virDomainMemoryPeek`) and ask
//! QEMU for the same dirty-rate measurement (`calc-dirty-rate` in
//! dirty-bitmap mode), and turn them into a [`Measured`] by the same rules
//! ([`measure_vm`], [`crate::sample`]).

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use evac_model::{Bytes, BytesPerSec};
use evac_qmp::Qmp;
use serde_json::json;

use crate::live::Reading;

/// What QEMU told us about one VM.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub memory: Bytes,
    pub dirty_rate: BytesPerSec,
    /// The memory the guest keeps rewriting: what a long sample found
    /// dirtied when that was clearly less than the rate allows (the guest
    /// went over the same pages again), else its whole memory.
    pub working_set: Bytes,
    /// The memory dirtied within each sample's length, as measured (the
    /// dirty curve's points), shortest first.
    pub dirtied: Vec<DirtySample>,
    /// What a sample of its pages holds; `None` when none was read.
    pub content: Option<crate::sample::Content>,
}

/// One `calc-dirty-rate`: the memory dirtied at least once within
/// `seconds`, and how far above that the truth may be (QEMU truncates the
/// dirtied memory to whole MiB, then the rate to whole MiB/s).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DirtySample {
    pub seconds: u64,
    pub dirtied_bytes: u64,
    pub uncertainty_bytes: u64,
}

impl Measured {
    /// A VM measured as idle, its content unread: for tests.
    pub fn idle(memory: Bytes) -> Measured {
        Measured {
            memory,
            dirty_rate: BytesPerSec::ZERO,
            working_set: memory,
            dirtied: Vec::new(),
            content: None,
        }
    }

    /// The dirty curve the samples describe, when the guest went over the
    /// same pages again (its working set found); `None` when it kept
    /// writing new pages (the short form then says `dirty_rate` up to its
    /// whole memory).
    ///
    /// Each point is the least concave curve through 0 B at 0 s that is
    /// nowhere below a sample ([`upper_concave_hull`]) at the sample's
    /// time. Why: the memory a steady guest dirties at least once within
    /// `t` grows ever more slowly (the longer the window, the likelier a
    /// page written at its end was written already in it), so its curve
    /// is concave; and a sample errs only low (QEMU truncates to whole MiB
    /// and whole MiB/s, a guest short of CPU while sampled writes less).
    /// A sample below the chord of its neighbours is such an error: the
    /// curve is raised to the chord, never lowered.
    pub fn dirty_curve(&self) -> Option<Vec<evac_model::DirtyPoint>> {
        if self.working_set >= self.memory || self.dirtied.len() < 2 {
            return None;
        }
        // Never less within a longer time: a later sample that found
        // fewer pages (the guest slowed) is taken at the earlier's.
        let mut most = 0.0f64;
        let points: Vec<(f64, f64)> = self
            .dirtied
            .iter()
            .map(|d| {
                most = most.max(d.dirtied_bytes.min(self.memory.0) as f64);
                (d.seconds as f64, most)
            })
            .collect();
        let hull = upper_concave_hull(&points);
        Some(
            self.dirtied
                .iter()
                .map(|d| evac_model::DirtyPoint {
                    after: Duration::from_secs(d.seconds),
                    dirtied: Bytes(interpolate(&hull, d.seconds as f64).round() as u64).min(self.memory),
                })
                .collect(),
        )
    }
}

/// The least concave curve from (0, 0) that is nowhere below `points`
/// (time, bytes; times increasing): its corners, (0, 0) first.
pub fn upper_concave_hull(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut hull: Vec<(f64, f64)> = vec![(0.0, 0.0)];
    for &p in points {
        // Drop the last corner while it lies on or below the chord from
        // the one before it to `p`.
        while let [.., a, b] = hull[..] {
            if (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0) >= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(p);
    }
    hull
}

/// The piecewise linear curve through `corners` (times increasing) at `t`
/// (within their span).
fn interpolate(corners: &[(f64, f64)], t: f64) -> f64 {
    corners.windows(2).find(|w| t <= w[1].0).map_or_else(
        || corners.last().map_or(0.0, |c| c.1),
        |w| w[0].1 + (w[1].1 - w[0].1) * (t - w[0].0) / (w[1].0 - w[0].0),
    )
}

/// Every exchange with QEMU or libvirt but the sample's own wait ends
/// within this.
pub const EXCHANGE: Duration = Duration::from_secs(10);

/// The sample lengths in whole seconds (QEMU 7.2's unit): the rate's (at
/// least 1) and the working set's (at least the rate's).
pub fn sample_seconds(sample: Duration, long: Duration) -> (u64, u64) {
    let seconds = sample.as_secs().max(1);
    (seconds, long.as_secs().max(seconds))
}

/// The periods sampled between the rate's (`seconds`) and the working
/// set's (`long`) when those two found a curve rather than a line: every
/// power of two seconds from 1 s below `long` that is not `seconds` itself.
///
/// Why: two points say only that the guest went over pages again, not how
/// its dirtying bends between them, and the plan interpolates linearly
/// between points (from 0 B at 0 s). A guest that dirties a small hot set
/// fast and a large cold one slowly has a curve whose slope at 1 s is
/// several times its slope at 8 s: a chord from 0 s to a 2 s sample
/// underestimates what a short round re-sends (the last rounds, which
/// decide convergence), and a chord from 2 s to a long sample what a round
/// of a few seconds does. Doubling periods bound the chords' error by the
/// curve's own bend within a factor of two of time; 1 s is QEMU 7.2's
/// shortest period (`calc-time` is whole seconds).
pub fn curve_periods(seconds: u64, long: u64) -> Vec<u64> {
    std::iter::successors(Some(1u64), |p| p.checked_mul(2))
        .take_while(|&p| p < long)
        .filter(|&p| p != seconds)
        .collect()
}

/// One VM of `memory`: its dirty rate over a sample of `seconds`, then the
/// pages it dirties over `long` seconds for its working set and, when that
/// is a working set (the guest went over the same pages again), over each
/// of [`curve_periods`] for the curve's shape. `sample(s)` is the backend's
/// measurement over `s` seconds, in whole MiB/s as QEMU reports it.
pub async fn measure_vm<F, Fut>(memory: Bytes, seconds: u64, long: u64, mut sample: F) -> Result<Measured>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<u64>>,
{
    let rate = sample(seconds).await?;
    let point = |rate: u64, seconds: u64| DirtySample {
        seconds,
        dirtied_bytes: (rate * seconds) << 20,
        uncertainty_bytes: (seconds + 1) << 20,
    };
    let mut dirtied = vec![point(rate, seconds)];
    let mut working_set = memory;
    if long > seconds && rate > 0 {
        // Pages dirtied at least once over the long sample; a guest that
        // writes new pages all along would reach rate x long.
        let long_rate = sample(long).await?;
        dirtied.push(point(long_rate, long));
        let found = long_rate * long;
        if (found as f64) < 0.8 * (rate * long) as f64 {
            working_set = Bytes((found << 20).max(1 << 20)).min(memory);
            // A curve, not a line: its shape between the two.
            for period in curve_periods(seconds, long) {
                dirtied.push(point(sample(period).await?, period));
            }
            dirtied.sort_by_key(|d| d.seconds);
        }
    }
    Ok(Measured {
        memory,
        // QEMU's "MB/s" is 2^20 bytes per second.
        dirty_rate: BytesPerSec(rate as f64 * 1_048_576.0),
        working_set,
        dirtied,
        content: None,
    })
}

/// Reads `runs` runs of the guest's RAM (`ram`, guest-physical) at random
/// places with `read(address)` (one run of [`crate::sample::RUN_BYTES`]
/// each), and what they hold; `None` when `runs` is 0.
pub async fn read_content<F, Fut>(
    ram: &[(u64, u64)],
    runs: usize,
    mut read: F,
) -> Result<Option<crate::sample::Content>>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<Vec<u8>>>,
{
    if runs == 0 {
        return Ok(None);
    }
    let mut tally = crate::sample::Tally::default();
    for address in crate::sample::places(ram, runs, SAMPLE_SEED) {
        let run = read(address)
            .await
            .with_context(|| format!("reading guest memory at {address:#x}"))?;
        // One run of 64 KiB compressed at zstd's fastest level: a fraction
        // of a millisecond, no cause to leave the async thread.
        tally.add(&run);
    }
    Ok(Some(tally.content()))
}

/// The places sampled are drawn with this seed: a plan read twice reads
/// the same places (the guest's content does not depend on it).
const SAMPLE_SEED: u64 = 0x5eed_e7ac;

/// Measures every VM of a QEMU `inventory` at once over QMP (see
/// [`measure_vm`]); memory from `query-memory-size-summary` unless the
/// inventory states it; `how.runs` runs of its RAM read for its content
/// (see [`read_content`]).
pub async fn qemu(inventory: &evac_qemu::Inventory, how: &Reading) -> Result<Vec<Measured>> {
    let (seconds, long) = sample_seconds(how.sample, how.long);
    let runs = how.runs;
    all_at_once(inventory.vms.iter().map(|vm| {
        let (name, qmp, stated) = (vm.name.clone(), vm.qmp.clone(), vm.memory);
        async move {
            qemu_vm(&qmp, stated, seconds, long, runs)
                .await
                .with_context(|| format!("vm `{name}` (QMP {qmp})"))
        }
    }))
    .await
}

/// Runs one measurement per VM, each on its own task so that their samples
/// overlap in time (a fleet takes as long as its slowest VM, not the sum),
/// and gathers them in the VMs' order.
async fn all_at_once<F>(measurements: impl Iterator<Item = F>) -> Result<Vec<Measured>>
where
    F: Future<Output = Result<Measured>> + Send + 'static,
{
    let tasks: Vec<_> = measurements.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.context("a measuring task panicked")??);
    }
    Ok(out)
}

async fn qemu_vm(
    address: &str,
    stated: Option<Bytes>,
    seconds: u64,
    long: u64,
    runs: usize,
) -> Result<Measured> {
    let qmp = tokio::time::timeout(EXCHANGE, Qmp::connect(address))
        .await
        .context("connecting timed out")??;
    qmp.set_timeout(EXCHANGE);
    let memory = match stated {
        Some(memory) => memory,
        None => Bytes(qmp.query_memory_size_summary().await?.base_memory),
    };
    let qmp = &qmp;
    let content = if runs > 0 {
        let mtree = hmp(qmp, "info mtree").await?;
        let ram = crate::sample::mtree_ram_ranges(&mtree)
            .unwrap_or_else(|| crate::sample::x86_ram_ranges(memory.0, true));
        let local = matches!(evac_qmp::QmpAddr::parse(address), evac_qmp::QmpAddr::Unix(_));
        if local {
            // QEMU writes each run to a file of ours: it runs here.
            let dir = tempfile::tempdir().context("a directory for the sample")?;
            let file = dir.path().join("run.bin");
            read_content(&ram, runs, |a| pmemsave(qmp, a, &file)).await?
        } else {
            // QEMU elsewhere: its monitor prints the bytes.
            read_content(&ram, runs.min(REMOTE_RUNS), |a| xp(qmp, a)).await?
        }
    } else {
        None
    };
    let mut measured = measure_vm(memory, seconds, long, |s| qmp_sample(qmp, s)).await?;
    measured.content = content;
    Ok(measured)
}

/// At most this many runs are read from a QEMU that is not on this machine
/// (through HMP `xp`, 240 KB of text a run).
const REMOTE_RUNS: usize = 64;

/// An HMP command's output.
async fn hmp(qmp: &Qmp, command: &str) -> Result<String> {
    let reply = qmp
        .execute("human-monitor-command", Some(json!({ "command-line": command })))
        .await
        .with_context(|| format!("HMP `{command}`"))?;
    reply
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("HMP `{command}`: not text: {reply}"))
}

/// One run of guest-physical memory at `address`, through QEMU's
/// `pmemsave` into `file` (overwritten).
async fn pmemsave(qmp: &Qmp, address: u64, file: &std::path::Path) -> Result<Vec<u8>> {
    let size = crate::sample::RUN_BYTES;
    qmp.execute(
        "pmemsave",
        Some(json!({ "val": address, "size": size, "filename": file })),
    )
    .await
    .context("pmemsave")?;
    let data = tokio::fs::read(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?;
    if data.len() != size {
        bail!("pmemsave wrote {} bytes, not {size}", data.len());
    }
    Ok(data)
}

/// One run of guest-physical memory at `address`, printed by HMP `xp` as
/// 64-bit words and parsed back (little-endian, x86's order).
async fn xp(qmp: &Qmp, address: u64) -> Result<Vec<u8>> {
    let words = crate::sample::RUN_BYTES / 8;
    let text = hmp(qmp, &format!("xp /{words}xg {address:#x}")).await?;
    let data = parse_xp(&text);
    if data.len() != crate::sample::RUN_BYTES {
        bail!(
            "HMP xp printed {} bytes, not {}: {}",
            data.len(),
            crate::sample::RUN_BYTES,
            text.lines().next().unwrap_or_default()
        );
    }
    Ok(data)
}

/// The bytes of `xp /Nxg`'s lines (`0000000000100000: 0x0123456789abcdef
/// 0x...`).
fn parse_xp(text: &str) -> Vec<u8> {
    text.lines()
        .filter_map(|line| line.split_once(':').map(|(_, words)| words))
        .flat_map(|words| words.split_whitespace())
        .filter_map(|word| u64::from_str_radix(word.trim_start_matches("0x"), 16).ok())
        .flat_map(u64::to_le_bytes)
        .collect()
}

/// One `calc-dirty-rate` of `seconds`: the rate in MiB/s.
async fn qmp_sample(qmp: &Qmp, seconds: u64) -> Result<u64> {
    qmp.execute(
        "calc-dirty-rate",
        Some(json!({"calc-time": seconds, "mode": "dirty-bitmap"})),
    )
    .await
    .context("calc-dirty-rate")?;
    // The sample takes `seconds`; QEMU then needs a moment to publish it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds) + EXCHANGE;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    loop {
        let reply = qmp
            .execute("query-dirty-rate", None)
            .await
            .context("query-dirty-rate")?;
        match reply["status"].as_str() {
            Some("measured") => {
                return reply["dirty-rate"]
                    .as_u64()
                    .context("query-dirty-rate: no `dirty-rate` in a measured reply");
            }
            Some("measuring") | Some("unstarted") => {}
            other => bail!("query-dirty-rate: unexpected status {other:?}"),
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "query-dirty-rate: no result {}s after the sample ended",
                EXCHANGE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Measures every domain of a libvirt fleet at once (see [`measure_vm`]):
/// `backend` has found them ([`evac_libvirt::LibvirtBackend::connect`], the
/// discovery `evac run` makes), memory is the domain's; `how.runs` runs of its
/// RAM read through `virDomainMemoryPeek` (the machine's RAM layout from
/// its type: [`crate::sample::x86_ram_ranges`]).
#[cfg(feature = "libvirt")]
pub async fn libvirt(backend: &evac_libvirt::LibvirtBackend, how: &Reading) -> Result<Vec<Measured>> {
    use evac_run::Backend as _;
    let (seconds, long) = sample_seconds(how.sample, how.long);
    let runs = how.runs;
    let fleet = backend.fleet();
    all_at_once(fleet.vms.iter().map(|vm| {
        let conn = backend.connection(vm.host).clone();
        let (name, memory) = (vm.name.clone(), vm.memory);
        let host = fleet.host(vm.host).name.clone();
        async move {
            let content = async {
                if runs == 0 {
                    return Ok(None);
                }
                let q35 = evac_libvirt::client::is_q35(&conn, &name, EXCHANGE).await?;
                let ram = crate::sample::x86_ram_ranges(memory.0, q35);
                read_content(&ram, runs, |address| {
                    let (conn, name) = (conn.clone(), name.clone());
                    async move {
                        let size = crate::sample::RUN_BYTES;
                        Ok(evac_libvirt::client::peek(&conn, &name, address, size, EXCHANGE).await?)
                    }
                })
                .await
            }
            .await;
            let measured = async {
                let mut measured = measure_vm(memory, seconds, long, |s| {
                    let (conn, name) = (conn.clone(), name.clone());
                    async move {
                        let s = u32::try_from(s).context("a sample of more than 2^32 s")?;
                        Ok(evac_libvirt::client::dirty_rate(&conn, &name, s, EXCHANGE).await?)
                    }
                })
                .await?;
                measured.content = content?;
                anyhow::Ok(measured)
            };
            measured
                .await
                .with_context(|| format!("domain `{name}` on host `{host}`"))
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_periods_double_from_one_second() {
        assert_eq!(curve_periods(2, 8), vec![1, 4]);
        assert_eq!(curve_periods(2, 16), vec![1, 4, 8]);
        assert_eq!(curve_periods(3, 16), vec![1, 2, 4, 8]);
        assert_eq!(curve_periods(1, 2), Vec::<u64>::new());
        assert_eq!(curve_periods(1, 1), Vec::<u64>::new());
    }

    /// A backend stub answering whole MiB/s from a curve given by hand: the
    /// periods asked, in order, and the points kept.
    async fn measured_with(curve: fn(u64) -> u64, seconds: u64, long: u64) -> (Vec<u64>, Measured) {
        let asked = std::sync::Mutex::new(Vec::new());
        let m = measure_vm(Bytes(1 << 30), seconds, long, |s| {
            asked.lock().unwrap().push(s);
            // QEMU: MiB dirtied over s seconds, as whole MiB/s.
            std::future::ready(Ok(curve(s) / s))
        })
        .await
        .unwrap();
        (asked.into_inner().unwrap(), m)
    }

    #[tokio::test]
    async fn a_curve_gets_doubling_periods_a_line_two() {
        // A hot 16 MiB at 16 MiB/s and a cold 192 MiB at 2 MiB/s: 18, 20,
        // 24, 32, 48 MiB after 1, 2, 4, 8, 16 s.
        let curve = |s: u64| 16.min(16 * s) + 192.min(2 * s);
        let (asked, m) = measured_with(curve, 2, 16).await;
        assert_eq!(asked, vec![2, 16, 1, 4, 8]);
        let points: Vec<(u64, u64)> = m
            .dirtied
            .iter()
            .map(|d| (d.seconds, d.dirtied_bytes >> 20))
            .collect();
        assert_eq!(points, vec![(1, 18), (2, 20), (4, 24), (8, 32), (16, 48)]);
        assert_eq!(m.working_set, Bytes(48 << 20));
        let curve = m.dirty_curve().unwrap();
        assert_eq!(curve.len(), 5);
        assert_eq!(curve[0].after, Duration::from_secs(1));
        assert_eq!(curve[0].dirtied, Bytes(18 << 20));
        // A guest writing new pages all along: the two samples only.
        let (asked, m) = measured_with(|s| 10 * s, 2, 16).await;
        assert_eq!(asked, vec![2, 16]);
        assert_eq!(m.working_set, Bytes(1 << 30));
        assert_eq!(m.dirty_curve(), None);
    }

    /// Samples as `evac plan` got them, their curve by hand.
    #[test]
    fn a_sample_below_its_neighbours_chord_is_raised_to_it() {
        let curve_of = |mib: &[(u64, u64)]| {
            let m = Measured {
                memory: Bytes(1 << 30),
                dirty_rate: BytesPerSec::ZERO,
                working_set: Bytes(100 << 20),
                dirtied: mib
                    .iter()
                    .map(|&(seconds, mib)| DirtySample {
                        seconds,
                        dirtied_bytes: mib << 20,
                        uncertainty_bytes: (seconds + 1) << 20,
                    })
                    .collect(),
                content: None,
            };
            let curve = m.dirty_curve().unwrap();
            curve
                .iter()
                .map(|p| (p.after.as_secs(), p.dirtied.0 as f64 / 1_048_576.0))
                .collect::<Vec<_>>()
        };
        // curve_lab's third run: the 2 s sample truncated from 28 to 26 MiB
        // lies below the chord from (1 s, 22) to (4 s, 40), which passes
        // 28 at 2 s; the 16 s one (64, truncated from 80) stays: the curve
        // may be flat.
        assert_eq!(
            curve_of(&[(1, 22), (2, 26), (4, 40), (8, 64), (16, 64)]),
            vec![(1, 22.0), (2, 28.0), (4, 40.0), (8, 64.0), (16, 64.0)]
        );
        // plan_lab's one-rate guest with a starved 2 s sample: slopes 19,
        // 7, 21 MiB/s; the chord from (1, 19) to (4, 68) passes 35.33 at 2 s.
        let got = curve_of(&[(1, 19), (2, 26), (4, 68), (8, 96), (16, 96)]);
        assert_eq!(got[1].0, 2);
        assert!((got[1].1 - (19.0 + 49.0 / 3.0)).abs() < 1e-6, "{got:?}");
        assert_eq!(got[2], (4, 68.0));
        // A starved first sample: the chord from (0, 0) to (2 s, 28)
        // passes 14 at 1 s.
        assert_eq!(curve_of(&[(1, 10), (2, 28)])[0], (1, 14.0));
        // A concave curve is kept as measured; a later sample lower than
        // an earlier one is taken at the earlier's.
        assert_eq!(
            curve_of(&[(1, 22), (2, 28), (4, 40), (8, 56), (16, 50)]),
            vec![(1, 22.0), (2, 28.0), (4, 40.0), (8, 56.0), (16, 56.0)]
        );
    }

    #[test]
    fn xp_lines_are_read_back_little_endian() {
        let text = "0000000000100000: 0x0807060504030201 0x0000000000000000\r\n\
                    0000000000100010: 0xffffffffffffffff 0x00000000000000aa\r\n";
        let bytes = super::parse_xp(text);
        assert_eq!(bytes.len(), 32);
        assert_eq!(&bytes[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[16..24], &[0xff; 8]);
        assert_eq!(bytes[24], 0xaa);
    }
}
