//! The dirtying guest on its own, no migration: it dirties at the rate it
//! was given, measured independently of QEMU (from its RAM file: it
//! increments the first word of each page it writes), and sleeps between
//! its bursts instead of holding a host core (its QEMU's CPU time from
//! `/proc`). Needs QEMU and the guest (GNU binutils at build time).

use std::path::Path;
use std::time::{Duration, Instant};

use evac_lab::{self as lab, Guest, Lab};
use evac_model::BytesPerSec;

/// Per page of the working set, the first u32 of the RAM file (random at
/// start; the guest adds one per write).
fn first_words(ram: &Path, working_set_mib: u64) -> Vec<u32> {
    let bytes = std::fs::read(ram).unwrap();
    let start = lab::DIRTY_WORKING_SET_START as usize;
    (0..(working_set_mib * 256) as usize)
        .map(|i| {
            let at = start + i * 4096;
            u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
        })
        .collect()
}

/// Pages written between two samples: each word's increase (wrapping).
fn writes_between(before: &[u32], after: &[u32]) -> u64 {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| u64::from(a.wrapping_sub(*b)))
        .sum()
}

/// User + system CPU seconds of process `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is 3rd,
    // utime the 14th and stime the 15th of the whole line.
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// One guest at a time: each test measures a guest's pace, which two more
/// guests (and a lab's RAM file being written) on the two cores would
/// starve.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// 16 MB/s over 96 MiB: in 4 s about 15600 pages, fewer than the working
/// set's 24576, so no page is written twice between the samples and each
/// write shows as one increment. The rate must come out within 15 %; the
/// guest's QEMU must use under 40 % of a core (measured: 8 %; the earlier
/// guest that polled the TSC: 90 %).
#[test]
fn the_guest_dirties_at_its_rate_without_holding_a_core() {
    let _serial = one_at_a_time();
    lab::skip_without!(&[lab::qemu_available, lab::dirty_guest_available]);
    const RATE: f64 = 16e6;
    const WORKING_SET_MIB: u64 = 96;
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::new(dir.path());
    let vm = lab
        .start_dirtying_vm_in("g", 128, BytesPerSec(RATE), WORKING_SET_MIB, None)
        .unwrap();
    let ram = dir.path().join("g.mem");
    // Boot and the guest's 50 ms + 10 ms calibrations: well within 2 s.
    std::thread::sleep(Duration::from_secs(2));
    let (words0, cpu0, t0) = (
        first_words(&ram, WORKING_SET_MIB),
        cpu_seconds(vm.pid),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(4));
    let (words1, cpu1, t1) = (
        first_words(&ram, WORKING_SET_MIB),
        cpu_seconds(vm.pid),
        Instant::now(),
    );
    let seconds = (t1 - t0).as_secs_f64();
    let pages_per_sec = writes_between(&words0, &words1) as f64 / seconds;
    let asked = (RATE / 4096.0).round();
    let core = (cpu1 - cpu0) / seconds;
    eprintln!(
        "asked {asked} pages/s, written {pages_per_sec:.0} pages/s; QEMU used {:.0} % of a core",
        core * 100.0
    );
    assert!(
        (pages_per_sec - asked).abs() <= 0.15 * asked,
        "asked {asked} pages/s, the guest wrote {pages_per_sec:.0}"
    );
    assert!(
        core < 0.4,
        "the guest's QEMU used {:.0} % of a core",
        core * 100.0
    );
}

/// The guest dirtying along a curve: three regions at three rates (a hot
/// 4 MiB at 8 MiB/s, a warm 16 MiB at 4 MiB/s, a cold 64 MiB at 2 MiB/s).
/// Over a window of 2 s, counted from the RAM file, each region must get
/// its own rate (within 15 %) and have touched `min(pages, rate × 2 s)`
/// distinct pages (the truth of `evac_lab::curve`): the hot one all of its
/// 1024 pages (four times over), the warm one 2048, the cold one 1024.
#[test]
fn the_curve_guest_dirties_each_region_at_its_rate() {
    let _serial = one_at_a_time();
    lab::skip_without!(&[lab::qemu_available, lab::dirty_guest_available]);
    let mib = 1_048_576.0;
    let regions = [
        lab::DirtyRegion {
            rate: BytesPerSec(8.0 * mib),
            mib: 4,
        },
        lab::DirtyRegion {
            rate: BytesPerSec(4.0 * mib),
            mib: 16,
        },
        lab::DirtyRegion {
            rate: BytesPerSec(2.0 * mib),
            mib: 64,
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::new(dir.path());
    lab.start_guest("c", 128, Guest::Dirtying(&regions), None)
        .unwrap();
    let ram = dir.path().join("c.mem");
    std::thread::sleep(Duration::from_secs(2));
    let (before, t0) = (lab::WriteCounters::read(&ram, &regions).unwrap(), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (after, t1) = (lab::WriteCounters::read(&ram, &regions).unwrap(), Instant::now());
    let seconds = (t1 - t0).as_secs_f64();
    let written = after.written_since(&before);
    let touched = after.touched_since(&before);
    // By hand: pages per second 2048, 1024, 512; pages 1024, 4096, 16384.
    let asked = [2048.0, 1024.0, 512.0];
    let distinct = [1024.0, 1024.0 * seconds, 512.0 * seconds];
    for i in 0..3 {
        let rate = written[i] as f64 / seconds;
        eprintln!(
            "region {i}: asked {} pages/s, written {rate:.0} pages/s; touched {} pages, truth {:.0}",
            asked[i], touched[i], distinct[i]
        );
        assert!(
            (rate - asked[i]).abs() <= 0.15 * asked[i],
            "region {i}: {rate:.0} pages/s"
        );
        assert!(
            (touched[i] as f64 - distinct[i]).abs() <= 0.15 * distinct[i],
            "region {i}: {} pages touched",
            touched[i]
        );
    }
    // The truth the plan's measurement is judged by, over the same window.
    let truth = lab::curve::dirtied_within(&regions, seconds) / 4096.0;
    let total: u64 = touched.iter().sum();
    assert!(
        (total as f64 - truth).abs() <= 0.15 * truth,
        "{total} pages, truth {truth:.0}"
    );
}

/// A lab file's `dirty_curve` runs the curve guest: `labs/curve.toml`
/// built as `evac lab` builds it, its VM's rings (16 MiB at 16 MiB/s,
/// 32 MiB at 4 MiB/s, 192 MiB at 2 MiB/s, worked out by hand from the
/// curve's slopes 22, 6 and 2 MiB/s) counted from its RAM file over 2 s.
#[test]
fn a_lab_files_dirty_curve_runs_the_curve_guest() {
    let _serial = one_at_a_time();
    lab::skip_without!(&[
        lab::qemu_available,
        lab::netns_available,
        lab::dirty_guest_available,
    ]);
    let name = format!("curve{}", std::process::id());
    let text =
        include_str!("../labs/curve.toml").replacen("name = \"curve\"", &format!("name = \"{name}\""), 1);
    let built = lab::instance::LabInstance::build(&text, "labs/curve.toml").unwrap();
    let curve = &built.scenario.fleet.vms[0].profile.dirty_curve;
    let regions = lab::curve::regions_for_curve(curve).unwrap();
    let mib = 1_048_576.0;
    let by_hand = [(16.0, 16), (4.0, 32), (2.0, 192)];
    let got: Vec<(f64, u64)> = regions.iter().map(|r| (r.rate.0 / mib, r.mib)).collect();
    assert_eq!(got, by_hand);
    let ram = built.dir.join("curve.mem");
    std::thread::sleep(Duration::from_secs(2));
    let (before, t0) = (lab::WriteCounters::read(&ram, &regions).unwrap(), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (after, t1) = (lab::WriteCounters::read(&ram, &regions).unwrap(), Instant::now());
    let seconds = (t1 - t0).as_secs_f64();
    for ((written, (rate, _)), i) in after.written_since(&before).iter().zip(by_hand).zip(0..) {
        let got = *written as f64 * 4096.0 / seconds / mib;
        eprintln!("ring {i}: {rate} MiB/s asked, {got:.2} MiB/s written");
        assert!((got - rate).abs() <= 0.15 * rate, "ring {i}: {got:.2} MiB/s");
    }
}
