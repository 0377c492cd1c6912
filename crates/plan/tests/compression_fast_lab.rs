//! `compression = "auto"` where the link is not the bottleneck: a
//! compressible lab guest migrated for real over a veth shaped far above
//! what zstd on one core produces, with `none`, `zstd` and `auto`. There
//! the compressing core binds, so `auto` must not compress, and so cost
//! no more than the better of the two fixed settings (asserted through
//! its choice and its bytes; the times are printed, and docs/plan.md says
//! why they are not asserted to 5 %). The same runs
//! measure the rate one core compresses at (QEMU's multifd zstd, level 1,
//! one channel): the guest's non-zero bytes over the CPU time of the
//! thread that compressed them.
//!
//! docs/plan.md ("Compression: `auto` on a fast link") quotes this test's
//! output.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evac_lab::{self as lab, Guest, Lab, LabNetwork, Mix, Shaping};
use evac_model::Compression;
use evac_qemu::{run_detailed, Inventory, Placement};

/// The link as shaped and as the inventory states it: 20 Gbit/s
/// (2.5 GB/s), ten times the memory one core compresses per second by
/// default (250 MB/s).
const LINK_BPS: u64 = 20_000_000_000;
/// The guest: 256 MiB, 30 % zero pages, 60 % text-like, 10 % random (the
/// WAN-bound test's mix, `content_lab.rs`).
const MIB: u64 = 256;
const MIX: Mix = Mix { zero: 0.3, text: 0.6 };
/// Rounds of the three settings, interleaved so that a change in the
/// machine's load hits each setting alike; the medians are compared.
/// `none` and `auto` (the two close ones) swap places every round, `zstd`
/// last: each of them comes first, after the other, and after `zstd`,
/// equally often.
const ROUNDS: usize = 4;
const ORDERS: [[Compression; 3]; 2] = [
    [Compression::None, Compression::Auto, Compression::Zstd],
    [Compression::Auto, Compression::None, Compression::Zstd],
];

/// The middle value, or the mean of the two middle ones.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (values[(n - 1) / 2] + values[n / 2]) / 2.0
}

fn name(setting: Compression) -> &'static str {
    match setting {
        Compression::None => "none",
        Compression::Zstd => "zstd",
        Compression::Auto => "auto",
    }
}

/// One real migration: its time as evac reports it (from its start to
/// the end of its stop-and-copy, the destination's start included), the
/// bytes on the wire, the CPU time of both QEMUs, and what `auto` chose.
struct Run {
    migration_s: f64,
    wire_bytes: u64,
    /// CPU time the source QEMU spent during the run (every thread).
    source_cpu_s: f64,
    /// The CPU time of the threads the migration started in the source
    /// QEMU, of the busiest of them, and how long that one ran.
    threads_cpu_s: f64,
    thread_cpu_s: f64,
    thread_alive_s: f64,
    /// CPU time the destination QEMU spent, from its start.
    destination_cpu_s: f64,
    chosen: Compression,
}

/// CPU time (user and system) in a `/proc/.../stat` line: its 14th and
/// 15th fields, in clock ticks of 1/100 s (USER_HZ, fixed at 100 by the
/// kernel's ABI); `None` if the task is gone.
fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command's closing parenthesis, from the state (3rd).
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU time process `pid` has used, every thread (also of a zombie not
/// yet reaped).
fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat")).expect("the QEMU's /proc stat")
}

/// Sets its flag when dropped: a watcher thread stops also when the test
/// panics.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the threads a migration starts in the source QEMU did (QEMU 7.2
/// starts its migration thread and its multifd sending threads, where zstd
/// compresses, for each migration, and ends them with it; unnamed without
/// `-name debug-threads=on`): their CPU time together, the busiest one's,
/// and how long that one was seen alive. Sampled every 10 ms until `stop`
/// is set, so each figure is at most 10 ms short.
fn watch_new_threads(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(f64, f64, f64)> {
    let tasks = move || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|t| t.path())
            .collect()
    };
    let before = tasks();
    std::thread::spawn(move || {
        // Per new thread: its CPU seconds, when first and last seen.
        let mut seen: HashMap<std::path::PathBuf, (f64, Instant, Instant)> = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            for task in tasks().into_iter().filter(|t| !before.contains(t)) {
                if let Some(cpu) = stat_cpu_seconds(&task.join("stat").to_string_lossy()) {
                    let now = Instant::now();
                    let entry = seen.entry(task).or_insert((cpu, now, now));
                    *entry = (cpu, entry.1, now);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let all = seen.values().map(|v| v.0).sum();
        seen.values()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map_or((0.0, 0.0, 0.0), |&(cpu, first, last)| {
                (all, cpu, (last - first).as_secs_f64())
            })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_does_not_compress_where_the_cpu_binds() {
    lab::skip_without!(&[lab::qemu_available, lab::netns_available]);
    let dir = tempfile::tempdir().unwrap();
    // Dropped last: each run's lab (its QEMUs) goes before the namespaces.
    let net = LabNetwork::new(Shaping {
        rate_bps: LINK_BPS,
        // Several of the veth's 64 KiB segments at once.
        burst_bytes: 16 << 20,
        latency: Duration::from_millis(5),
    })
    .expect("the lab network");

    // The truth, from the RAM as the lab writes it (every guest of the
    // same mix holds the same bytes): the zero pages page by page; the
    // zstd ratio of the rest (level 1, as QEMU, in QEMU's packets of 128
    // pages) over the first 64 MiB, whose pages are drawn as all others.
    let pages = MIB * 256;
    let nonzero_bytes = ((pages - MIX.zero_pages(pages)) * 4096) as f64;
    let zero_fraction = 1.0 - nonzero_bytes / (pages * 4096) as f64;
    let ratio = {
        let mut page = [0u8; 4096];
        let mut nonzero = Vec::new();
        for index in 0..64 * 256 {
            MIX.page(index, &mut page);
            if page.iter().any(|&b| b != 0) {
                nonzero.extend_from_slice(&page);
            }
        }
        let compressed: usize = nonzero
            .chunks(128 * 4096)
            .map(|packet| zstd::bulk::compress(packet, 1).unwrap().len())
            .sum();
        nonzero.len() as f64 / compressed as f64
    };
    eprintln!("guest: {MIB} MiB, zero share {zero_fraction:.3}, zstd ratio of the rest {ratio:.2}");

    let mut runs: Vec<(Compression, Run)> = Vec::new();
    for round in 0..ROUNDS {
        for setting in ORDERS[round % 2] {
            let run_dir = dir.path().join(format!("{round}-{}", name(setting)));
            std::fs::create_dir(&run_dir).unwrap();
            let run = migrate(&net, &run_dir, setting, zero_fraction, ratio).await;
            std::fs::remove_dir_all(&run_dir).unwrap();
            eprintln!(
                "round {round} {:>4}: chosen {:>4}, migration {:.2} s, {:.0} MB sent; CPU s: source {:.2} \
                 (migration threads {:.2}, the busiest {:.2} in {:.2} s), destination {:.2}",
                name(setting),
                name(run.chosen),
                run.migration_s,
                run.wire_bytes as f64 / 1e6,
                run.source_cpu_s,
                run.threads_cpu_s,
                run.thread_cpu_s,
                run.thread_alive_s,
                run.destination_cpu_s,
            );
            runs.push((setting, run));
        }
    }
    let of = |setting: Compression| runs.iter().filter(move |(s, _)| *s == setting).map(|(_, r)| r);
    let time = |setting| median(of(setting).map(|r| r.migration_s).collect());
    let (none, zstd, auto) = (
        time(Compression::None),
        time(Compression::Zstd),
        time(Compression::Auto),
    );
    let best = none.min(zstd);
    eprintln!(
        "medians of {ROUNDS}: none {none:.2} s, zstd {zstd:.2} s, auto {auto:.2} s ({:+.1} % against the better)",
        (auto / best - 1.0) * 100.0
    );

    // The rate one core compresses at: the non-zero memory over the CPU
    // time of the migration's threads (under zstd on one channel, two
    // threads of about equal work: the migration thread and the
    // compressing one), which the machine's load does not stretch as it
    // does the wall-clock time; over the busiest thread's (what one core
    // would do were each thread on its own); over the whole source QEMU's;
    // and over the time the busiest thread ran, which the load stretches.
    let zstd_runs: Vec<&Run> = of(Compression::Zstd).collect();
    let rate = |cpu: &dyn Fn(&Run) -> f64| median(zstd_runs.iter().map(|r| nonzero_bytes / cpu(r)).collect());
    eprintln!(
        "QEMU multifd zstd level 1, one channel, MB/s of non-zero memory (medians): {:.0} per CPU second \
         of the migration's threads, {:.0} of the busiest, {:.0} of the whole source QEMU; {:.0} over the \
         time the busiest ran; default zstd_rate_per_core {:.0}",
        rate(&|r| r.threads_cpu_s) / 1e6,
        rate(&|r| r.thread_cpu_s) / 1e6,
        rate(&|r| r.source_cpu_s) / 1e6,
        rate(&|r| r.thread_alive_s) / 1e6,
        evac_model::DEFAULT_ZSTD_RATE_PER_CORE.0 / 1e6
    );
    // What makes that a rate of the core and not of the link: the link
    // carried the compressed stream at under a quarter of its rate, on
    // average over the migration.
    let wire_rate = median(
        zstd_runs
            .iter()
            .map(|r| r.wire_bytes as f64 / r.migration_s)
            .collect(),
    );
    assert!(
        wire_rate * 8.0 < LINK_BPS as f64 / 4.0,
        "the link bound the compressing runs ({wire_rate} B/s)"
    );

    // `auto` decides by the byte model: at 20 Gbit/s the guest's memory
    // moves at 2.5 GB/s / 0.70 (its wire bytes per byte of memory,
    // uncompressed) = 3.6 GB/s, compressed at most 250 MB/s / 0.70 (the
    // share a core reads) = 0.36 GB/s; so `none`.
    for run in of(Compression::Auto) {
        assert_eq!(run.chosen, Compression::None);
    }
    // `auto` ran the very migration `none` does: uncompressed, the
    // non-zero pages' bytes and little more (zero pages' headers, TCP/IP's
    // headers) on the wire, where `zstd` sent them divided by the ratio
    // measured above.
    for (setting, run) in &runs {
        let sent = run.wire_bytes as f64;
        let expected = if *setting == Compression::Zstd {
            nonzero_bytes / ratio
        } else {
            nonzero_bytes
        };
        assert!(
            sent >= expected * 0.95 && sent <= expected * 1.05,
            "{}: {sent} B on the wire, expected {expected} B",
            name(*setting)
        );
    }
    // The measurement agrees that the core, not the link, binds a
    // compressing migration here: one core compresses the memory (per
    // CPU second of the busiest thread, which the machine's load does not
    // stretch) far slower than the link carries it uncompressed, so `none`
    // is the faster and `auto` chose it. Wall-clock times are not
    // compared: two identical migrations differ here from one round to
    // the next by -50 % to +135 % (the machine's load, the destination's
    // start); `none` < `zstd` on the medians of four failed once in CI
    // (0.91 s against 0.78 s, while `auto`, the same migration as `none`,
    // took 0.63 s). So the target (`auto` at most 5 % slower than
    // the better) is judged from the times over many rounds that
    // docs/plan.md quotes, not asserted here.
    let uncompressed = LINK_BPS as f64 / 8.0 / ((1.0 - zero_fraction) + zero_fraction * 9.0 / 4096.0);
    let compressing = rate(&|r| r.thread_cpu_s);
    assert!(
        compressing < uncompressed / 2.0,
        "one core compressed {compressing} B/s of memory; uncompressed the link carries {uncompressed} B/s"
    );
}

/// A fresh guest of [`MIX`] in `dir`, migrated over `net` with `setting`,
/// the inventory stating the fast link and the guest's content.
async fn migrate(net: &LabNetwork, dir: &Path, setting: Compression, zero: f64, ratio: f64) -> Run {
    let mut lab = Lab::new(dir);
    let vm = lab
        .start_guest("text", MIB, Guest::Mixed(MIX), Some(&net.src))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let gbps = LINK_BPS / 1_000_000_000;
    let text = lab
        .inventory_in(
            net,
            "sequential",
            std::slice::from_ref(&vm),
            &format!("compression = \"{}\"", name(setting)),
        )
        .replace("nic = \"1 Gbps\"", &format!("nic = \"{gbps} Gbps\""))
        // The VM's table is the last; an operator copies `evac plan`'s
        // measurement there, this test the truth.
        + &format!(
            "zero_fraction = {zero:?}\ncompression_ratio = {ratio:?}\n\
             [network]\nwan_bandwidth = \"{gbps} Gbps\"\nwan_rtt = \"1 ms\"\n"
        );
    let inventory = Inventory::from_str_at(&text, Path::new("inventory.toml")).unwrap();
    // The bytes on the wire: the veth's counter.
    let tx_before = net.src_tx_bytes().unwrap();
    let cpu_before = cpu_seconds(vm.pid);
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let watcher = watch_new_threads(vm.pid, stop.0.clone());
    let evacuation = run_detailed(inventory, None, std::future::pending());
    let out = tokio::time::timeout(Duration::from_secs(120), evacuation)
        .await
        .expect("a migration of 256 MiB within 2 minutes")
        .unwrap();
    let mut destination_cpu_s = f64::NAN;
    for placement in &out.placements {
        if let Placement::Destination { pid, .. } = placement {
            lab.adopt(*pid);
            destination_cpu_s = cpu_seconds(*pid);
        }
    }
    let source_cpu_s = cpu_seconds(vm.pid) - cpu_before;
    drop(stop);
    let (threads_cpu_s, thread_cpu_s, thread_alive_s) = watcher.join().unwrap();
    let record = &out.result.vms[0];
    assert_eq!(out.result.migrated, 1, "{}: {:?}", name(setting), out.result.vms);
    Run {
        migration_s: record.migration_time_s.unwrap(),
        wire_bytes: net.src_tx_bytes().unwrap() - tx_before,
        source_cpu_s,
        threads_cpu_s,
        thread_cpu_s,
        thread_alive_s,
        destination_cpu_s,
        chosen: record.compression.unwrap(),
    }
}
