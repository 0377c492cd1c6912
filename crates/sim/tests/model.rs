//! The simulator against hand-computed results of its written model.

use std::time::Duration;

use evac_controller::PolicyKind;
use evac_model::{
    BitsPerSec, Bytes, BytesPerSec, Fleet, Host, MigrationParams, Mode, Network, Site, TracePoint, Vm,
};
use evac_outcome::{Outcome, RunResult};

const GIB: f64 = 1073741824.0;

fn host(name: &str, site: Site, nic: BitsPerSec) -> Host {
    Host {
        nic,
        ..evac_testkit::host(name, site)
    }
}

fn vm(name: &str, host: usize, memory: Bytes, dirty_rate: BytesPerSec) -> Vm {
    evac_testkit::busy_vm(name, host, memory, dirty_rate)
}

fn fleet(vms: Vec<Vm>) -> Fleet {
    evac_testkit::two_sites(vms)
}

fn wan(bandwidth: BitsPerSec) -> Network {
    evac_testkit::wan(bandwidth)
}

mod common;
use common::simulate as run;

/// `fleet` moved one VM at a time over a 1 Gbps WAN that is the only
/// bottleneck.
fn sequential_over_1_gbps(fleet: &Fleet, params: MigrationParams) -> RunResult {
    run(fleet, &wan(BitsPerSec::gbps(1.0)), params, PolicyKind::Sequential)
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= 1e-6 * expected.abs().max(1.0),
        "{what}: got {actual}, expected {expected}"
    );
}

#[test]
fn an_idle_vm_takes_memory_over_rate() {
    let fleet = fleet(vec![vm("idle", 0, Bytes::gib(1), BytesPerSec::ZERO)]);
    let result = sequential_over_1_gbps(&fleet, MigrationParams::default());
    let record = &result.vms[0];
    // 2^30 bytes * 8 / 1e9 bit/s.
    assert_close(record.migration_time_s.unwrap(), 8.589934592, "migration time");
    assert_eq!(record.downtime_s, Some(0.0));
    assert_eq!(record.rounds, Some(1));
    assert_eq!(record.bytes_sent, Some(1 << 30));
    assert_eq!(record.outcome, Outcome::Migrated);
}

#[test]
fn window_over_rtt_caps_each_connection() {
    // 4 MiB per 50 ms is 671.08864 Mbit/s per connection; the 10 Gbps WAN
    // never binds. 1 GiB takes 8 * 2^30 / (k * 671088640) = 12.8 / k s.
    let network = Network {
        wan_bandwidth: BitsPerSec::gbps(10.0),
        wan_rtt: Duration::from_millis(50),
        tcp_window: Bytes::mib(4),
        wan_trace: vec![],
    };
    let fleet = fleet(vec![vm("idle", 0, Bytes::gib(1), BytesPerSec::ZERO)]);
    for (channels, expected) in [(1, 12.8), (2, 6.4), (4, 3.2)] {
        let params = MigrationParams {
            connections: evac_model::Connections::new(channels).unwrap(),
            ..MigrationParams::default()
        };
        let result = run(&fleet, &network, params, PolicyKind::Sequential);
        assert_close(
            result.vms[0].migration_time_s.unwrap(),
            expected,
            &format!("{channels} channels"),
        );
    }
}

#[test]
fn precopy_rounds_shrink_geometrically() {
    // 1 GiB at 125 MB/s takes T1 = 8.589934592 s; each round dirties
    // 50 MB/s * T, so T(k+1) = 0.4 T(k): 3.4359738368, 1.37438953472,
    // 0.549755813888 s. After round 4, D / r = 0.2199023255552 s <= 300 ms.
    let fleet = fleet(vec![vm("busy", 0, Bytes::gib(1), BytesPerSec(50e6))]);
    let result = sequential_over_1_gbps(&fleet, MigrationParams::default());
    let record = &result.vms[0];
    let t1 = GIB * 8.0 / 1e9;
    let rounds: Vec<f64> = (0..5).map(|k| t1 * 0.4f64.powi(k)).collect();
    assert_eq!(record.rounds, Some(4));
    assert_close(
        record.migration_time_s.unwrap(),
        rounds.iter().sum(),
        "migration time",
    );
    assert_close(
        record.migration_time_s.unwrap(),
        14.1699561029632,
        "migration time by hand",
    );
    assert_close(record.downtime_s.unwrap(), 0.2199023255552, "downtime");
    // Bytes: M (1 + 0.4 + 0.16 + 0.064 + 0.0256).
    assert_eq!(record.bytes_sent, Some((GIB * 1.6496).round() as u64));
}

#[test]
fn max_rounds_forces_stop_and_copy() {
    // Dirtying faster than the link: every round after the first re-sends
    // the 256 MiB working set (2.147483648 s); round 3 is the last.
    let mut busy = vm("busy", 0, Bytes::gib(1), BytesPerSec(200e6));
    busy.working_set = Bytes::mib(256);
    let fleet = fleet(vec![busy]);
    let params = MigrationParams {
        max_rounds: 3,
        ..MigrationParams::default()
    };
    let result = sequential_over_1_gbps(&fleet, params);
    let record = &result.vms[0];
    let working_set_time = 268435456.0 * 8.0 / 1e9;
    assert_eq!(record.rounds, Some(3));
    assert_close(record.downtime_s.unwrap(), working_set_time, "downtime");
    assert_close(
        record.migration_time_s.unwrap(),
        GIB * 8.0 / 1e9 + 3.0 * working_set_time,
        "migration time",
    );
}

#[test]
fn offline_pauses_for_the_whole_copy() {
    let fleet = fleet(vec![vm("busy", 0, Bytes::gib(1), BytesPerSec(50e6))]);
    let params = MigrationParams {
        mode: Mode::Offline,
        ..MigrationParams::default()
    };
    let result = sequential_over_1_gbps(&fleet, params);
    let record = &result.vms[0];
    assert_close(record.migration_time_s.unwrap(), 8.589934592, "migration time");
    assert_eq!(record.downtime_s, record.migration_time_s);
    assert_eq!(record.rounds, Some(0));
    assert_eq!(record.bytes_sent, Some(1 << 30));
}

#[test]
fn sequential_and_parallel_on_equal_vms() {
    let vms = (0..4)
        .map(|i| vm(&format!("vm-{i}"), 0, Bytes::gib(1), BytesPerSec::ZERO))
        .collect();
    let fleet = fleet(vms);
    let network = wan(BitsPerSec::gbps(1.0));
    let one = GIB * 8.0 / 1e9;

    // Back to back: VM i ends at (i + 1) * one, each takes one.
    let sequential = run(
        &fleet,
        &network,
        MigrationParams::default(),
        PolicyKind::Sequential,
    );
    for (i, record) in sequential.vms.iter().enumerate() {
        assert_close(record.end_s.unwrap(), (i + 1) as f64 * one, "sequential end");
        assert_close(record.migration_time_s.unwrap(), one, "sequential migration");
    }
    // All at once: each gets a quarter of the link, all end at 4 * one.
    let parallel = run(&fleet, &network, MigrationParams::default(), PolicyKind::Parallel);
    for record in &parallel.vms {
        assert_eq!(record.start_s, Some(0.0));
        assert_close(record.end_s.unwrap(), 4.0 * one, "parallel end");
    }
    // The same total time, a quarter of the mean migration time: scores
    // sqrt(1 * 1) and sqrt(1 * 4).
    assert_close(
        sequential.total_time_s.unwrap(),
        parallel.total_time_s.unwrap(),
        "total",
    );
    assert_close(sequential.score.unwrap(), 1.0, "sequential score");
    assert_close(parallel.score.unwrap(), 2.0, "parallel score");
}

#[test]
fn a_bandwidth_drop_mid_migration_slows_the_rest() {
    // 1 Gbps for 4 s sends 5e8 bytes; the remaining 573741824 bytes go at
    // 250 Mbps (31.25e6 B/s) in 18.35973837 s.
    let mut network = wan(BitsPerSec::gbps(1.0));
    network.wan_trace = vec![TracePoint {
        at: Duration::from_secs(4),
        bandwidth: BitsPerSec::mbps(250.0),
    }];
    let fleet = fleet(vec![vm("idle", 0, Bytes::gib(1), BytesPerSec::ZERO)]);
    let result = run(
        &fleet,
        &network,
        MigrationParams::default(),
        PolicyKind::Sequential,
    );
    assert_close(result.vms[0].end_s.unwrap(), 4.0 + (GIB - 5e8) / 31.25e6, "end");
    // The timeline has a point at each change: the start, the drop (the
    // throughput over 0-4 s, the capacity from then on) and the end.
    let times: Vec<f64> = result.timeline.iter().map(|p| p.t_s).collect();
    assert_eq!(times.len(), 3, "{times:?}");
    let (start, drop, end) = (&result.timeline[0], &result.timeline[1], &result.timeline[2]);
    assert_eq!(
        (start.t_s, start.wan_capacity_bps, start.in_flight),
        (0.0, Some(1e9), 1)
    );
    assert_eq!((drop.t_s, drop.wan_capacity_bps), (4.0, Some(250e6)));
    assert_close(drop.wan_throughput_bps, 1e9, "throughput before the drop");
    assert_close(end.t_s, 4.0 + (GIB - 5e8) / 31.25e6, "the last point at the end");
    assert_close(end.wan_throughput_bps, 250e6, "throughput after the drop");
    assert_eq!(end.in_flight, 0);
}

#[test]
fn a_power_off_loses_exactly_the_vms_that_cannot_finish() {
    // Sequential, 8.59 s each: VMs end at 8.59, 17.18, 25.77 and 34.36 s.
    // Power fails at 20 s: the first two are safe, the third dies
    // mid-migration, the fourth never starts.
    let vms = (0..4)
        .map(|i| vm(&format!("vm-{i}"), 0, Bytes::gib(1), BytesPerSec::ZERO))
        .collect();
    let mut fleet = fleet(vms);
    fleet.hosts[0].power_off_at = Some(Duration::from_secs(20));
    let result = sequential_over_1_gbps(&fleet, MigrationParams::default());
    let outcomes: Vec<Outcome> = result.vms.iter().map(|v| v.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Migrated, Outcome::Migrated, Outcome::Lost, Outcome::Lost]
    );
    assert_eq!((result.migrated, result.lost), (2, 2));
    // The third sent 20 - 17.18 s worth before dying; the fourth nothing.
    let third = &result.vms[2];
    assert_eq!(third.end_s, None);
    assert_close(
        third.bytes_sent.unwrap() as f64,
        (20.0 - 2.0 * GIB * 8.0 / 1e9) * 125e6,
        "bytes of the lost VM",
    );
    assert_eq!(result.vms[3].start_s, None);
    assert_eq!(result.vms[3].bytes_sent, None);
}

#[test]
fn host_nics_and_the_wan_share_max_min_fairly() {
    // Two source hosts, NICs 200 Mbps and 10 Gbps, one VM each, WAN 1 Gbps:
    // the first is held to 200 Mbps by its NIC, the second gets the other
    // 800 Mbps. 1e9 bytes: 40 s and 10 s.
    let mut fleet = fleet(vec![
        vm("slow", 0, Bytes(1_000_000_000), BytesPerSec::ZERO),
        vm("fast", 2, Bytes(1_000_000_000), BytesPerSec::ZERO),
    ]);
    fleet.hosts[0].nic = BitsPerSec::mbps(200.0);
    fleet
        .hosts
        .push(host("src-2", Site::Source, BitsPerSec::gbps(10.0)));
    let result = run(
        &fleet,
        &wan(BitsPerSec::gbps(1.0)),
        MigrationParams::default(),
        PolicyKind::Parallel,
    );
    assert_close(result.vms[1].end_s.unwrap(), 10.0, "fast");
    // After 10 s the slow one has 7.5e8 bytes left, still at 25e6 B/s.
    assert_close(result.vms[0].end_s.unwrap(), 40.0, "slow");
}
