//! Local disks copied with the migration (`disk`), against hand-computed
//! results: the disk goes first at the migration's share and is never
//! re-sent; the memory's precopy starts after it.

use std::time::Duration;

use evac_controller::PolicyKind;
use evac_model::{BitsPerSec, Bytes, BytesPerSec, MigrationParams, Mode, Vm};
use evac_testkit::{busy_vm, two_sites, wan};

mod common;

const MIB: f64 = 1_048_576.0;

fn vm(name: &str, memory: Bytes, disk: Bytes, dirty_rate: BytesPerSec) -> Vm {
    Vm {
        disk,
        ..busy_vm(name, 0, memory, dirty_rate)
    }
}

/// A WAN of exactly 100 MiB/s; the NICs (10 Gbps) and the TCP window
/// (1 GiB per 1 ms) limit nothing.
fn simulate(vms: Vec<Vm>, policy: PolicyKind, params: MigrationParams) -> evac_outcome::RunResult {
    common::simulate(
        &two_sites(vms),
        &wan(BitsPerSec(100.0 * MIB * 8.0)),
        params,
        policy,
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn an_idle_vm_sends_its_disk_then_its_memory_after_its_setup() {
    // 1 GiB of disk + 1 GiB of idle memory at 100 MiB/s: 2048 / 100 =
    // 20.48 s, after a setup of 0.5 s. Round 1 dirtied nothing: stop-and-copy
    // of 0 bytes, no downtime.
    let params = MigrationParams {
        setup_time: Duration::from_millis(500),
        ..MigrationParams::default()
    };
    let result = simulate(
        vec![vm("a", Bytes::gib(1), Bytes::gib(1), BytesPerSec::ZERO)],
        PolicyKind::Sequential,
        params,
    );
    let record = &result.vms[0];
    assert!(close(record.migration_time_s.unwrap(), 20.98), "{record:?}");
    assert_eq!(record.bytes_sent, Some(2 << 30));
    assert_eq!(record.rounds, Some(1));
    assert!(close(record.downtime_s.unwrap(), 0.0), "{record:?}");
    // The bound counts the disk too: 2 GiB over the WAN.
    assert!(
        close(result.lower_bound_total_s, 20.48),
        "{}",
        result.lower_bound_total_s
    );
    assert!(close(result.lower_bound_mean_migration_s, 20.48));
}

#[test]
fn the_guest_dirties_nothing_that_counts_while_its_disk_goes() {
    // Disk 1 GiB (10.24 s). Then memory 1 GiB dirtying 10 MiB/s, limit 300 ms:
    // round 1 = 10.24 s dirties 102.4 MiB (1.024 s to send > 0.3 s), round 2 =
    // 1.024 s dirties 10.24 MiB (0.1024 s <= 0.3 s): stop-and-copy 0.1024 s.
    // Total 10.24 + 10.24 + 1.024 + 0.1024 = 21.6064 s, 2 rounds. Had the
    // disk's 10.24 s counted, round 1 would have dirtied twice as much.
    let result = simulate(
        vec![vm("a", Bytes::gib(1), Bytes::gib(1), BytesPerSec(10.0 * MIB))],
        PolicyKind::Sequential,
        MigrationParams::default(),
    );
    let record = &result.vms[0];
    assert!(close(record.migration_time_s.unwrap(), 21.6064), "{record:?}");
    assert!(close(record.downtime_s.unwrap(), 0.1024), "{record:?}");
    assert_eq!(record.rounds, Some(2));
    let sent = (1024.0 + 1024.0 + 102.4 + 10.24) * MIB;
    assert!(
        (record.bytes_sent.unwrap() as f64 - sent).abs() <= 1.0,
        "{record:?}"
    );
}

#[test]
fn offline_sends_disk_and_memory_in_one_paused_copy() {
    // 512 MiB disk + 1 GiB memory, paused at once: 1536 / 100 = 15.36 s, all
    // of it downtime.
    let params = MigrationParams {
        mode: Mode::Offline,
        ..MigrationParams::default()
    };
    let result = simulate(
        vec![vm("a", Bytes::gib(1), Bytes::mib(512), BytesPerSec(10.0 * MIB))],
        PolicyKind::Sequential,
        params,
    );
    let record = &result.vms[0];
    assert!(close(record.migration_time_s.unwrap(), 15.36), "{record:?}");
    assert!(close(record.downtime_s.unwrap(), 15.36), "{record:?}");
    assert_eq!(record.bytes_sent, Some(1536 << 20));
}

#[test]
fn a_disk_goes_at_the_migrations_share_of_the_wan() {
    // In parallel: "a" has 1 GiB of disk + 1 GiB of memory, "b" 1 GiB of
    // memory. They share 100 MiB/s: at 20.48 s "b" is done and "a" has sent
    // exactly its disk; then "a" alone sends its memory in 10.24 s: 30.72 s.
    let result = simulate(
        vec![
            vm("a", Bytes::gib(1), Bytes::gib(1), BytesPerSec::ZERO),
            vm("b", Bytes::gib(1), Bytes::ZERO, BytesPerSec::ZERO),
        ],
        PolicyKind::Parallel,
        MigrationParams::default(),
    );
    let (a, b) = (&result.vms[0], &result.vms[1]);
    assert!(close(b.end_s.unwrap(), 20.48), "{b:?}");
    assert!(close(a.end_s.unwrap(), 30.72), "{a:?}");
    assert!(close(result.total_time_s.unwrap(), 30.72));
}
