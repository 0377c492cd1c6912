//! The dirtying guest on its own, no migration: it dirties at the rate it
//! was given, measured independently of QEMU (from its RAM file: it
//! increments the first word of each page it writes), and sleeps between
//! its bursts instead of holding a host core (its QEMU's CPU time from
//! `/proc`). Needs QEMU and the guest (GNU binutils at build time).

use std::path::Path;
use std::time::{Duration, Instant};

use evac_lab::{self as lab, Lab};
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

/// 16 MB/s over 96 MiB: in 4 s about 15600 pages, fewer than the working
/// set's 24576, so no page is written twice between the samples and each
/// write shows as one increment. The rate must come out within 15 %; the
/// guest's QEMU must use under 40 % of a core (measured: 8 %; the earlier
/// guest that polled the TSC: 90 %).
#[test]
fn the_guest_dirties_at_its_rate_without_holding_a_core() {
    if lab::skip_without(&[lab::qemu_available, lab::dirty_guest_available]) {
        return;
    }
    const RATE: f64 = 16e6;
    const WORKING_SET_MIB: u64 = 96;
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::new(dir.path());
    let vm = lab
        .start_dirtying_vm("g", 128, BytesPerSec(RATE), WORKING_SET_MIB)
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
