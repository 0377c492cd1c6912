//! Tests of the result's figures against sums done by hand: the timeline's
//! thinning, the lower bounds, the summary's metrics, a VM that did not
//! migrate, the median and the percentile.

#[test]
fn thinning_keeps_the_bytes_between_kept_points() {
    let point = |t_s: f64, wan_throughput_bps: f64, in_flight: usize| super::TimelinePoint {
        t_s,
        wan_capacity_bps: Some(100.0 + t_s),
        wan_throughput_bps,
        in_flight,
    };
    let cases = [
        // By hand: (10 * 1 + 20 * 2) / 3 over 0..3, (40 * 1 + 0 * 2) / 3
        // over 3..6; 90 bits in all before and after.
        (
            vec![
                point(0.0, 0.0, 0),
                point(1.0, 10.0, 1),
                point(3.0, 20.0, 2),
                point(4.0, 40.0, 3),
                point(6.0, 0.0, 0),
            ],
            vec![
                point(0.0, 0.0, 0),
                point(3.0, 50.0 / 3.0, 2),
                point(6.0, 40.0 / 3.0, 0),
            ],
        ),
        // An even count keeps its last point unmerged.
        (
            vec![
                point(0.0, 0.0, 0),
                point(1.0, 8.0, 1),
                point(2.0, 4.0, 1),
                point(5.0, 2.0, 0),
            ],
            vec![point(0.0, 0.0, 0), point(2.0, 6.0, 1), point(5.0, 2.0, 0)],
        ),
    ];
    for (mut points, thinned) in cases {
        super::thin_timeline(&mut points);
        assert_eq!(points, thinned);
    }
}

use super::*;
use evac_model::{BitsPerSec, Bytes, Host, Site, TracePoint};
use std::time::Duration;

fn network(trace: Vec<TracePoint>) -> Network {
    Network {
        wan_bandwidth: BitsPerSec::gbps(1.0),
        wan_rtt: Duration::from_millis(10),
        tcp_window: Bytes::mib(64),
        wan_trace: trace,
    }
}

fn fleet(memories: &[Bytes]) -> Fleet {
    let host = |name: &str, site, nic| Host {
        nic: BitsPerSec::gbps(nic),
        ..evac_testkit::host(name, site)
    };
    Fleet {
        hosts: vec![
            host("src", Site::Source, 10.0),
            host("dst", Site::Destination, 0.5),
        ],
        vms: memories
            .iter()
            .enumerate()
            .map(|(i, &memory)| evac_testkit::vm(&format!("vm-{i}"), 0, memory))
            .collect(),
    }
}

#[test]
fn total_bound_integrates_the_trace() {
    // 1 Gbps for 10 s carries 1.25e9 bytes, then 0.5 Gbps: the
    // remaining 1.25e9 bytes of 2.5e9 take another 20 s.
    let trace = vec![TracePoint {
        at: Duration::from_secs(10),
        bandwidth: BitsPerSec::mbps(500.0),
    }];
    let bounds = lower_bounds(&fleet(&[Bytes(2_500_000_000)]), &network(trace));
    assert!(
        (bounds.total.as_secs_f64() - 30.0).abs() < 1e-9,
        "{:?}",
        bounds.total
    );
    // The 0.5 Gbps destination NIC is the best one migration gets:
    // 2.5e9 * 8 / 5e8 = 40 s.
    assert!((bounds.mean_migration.as_secs_f64() - 40.0).abs() < 1e-9);
}

#[test]
fn bounds_count_the_fewest_bytes_a_migration_can_send() {
    // 1 GiB, half zero pages, the rest compressing 4:1. Plain: 2^17 x 9
    // + 2^29 = 538,050,560 B; compressed: 2^17 x 9 + 2^17 x (1024 + 8)
    // = 136,445,952 B, the fewer: 1.091567616 s at 1 Gbps, 2.183135232 s
    // at the 0.5 Gbps destination NIC.
    let mut f = fleet(&[Bytes::gib(1)]);
    f.vms[0].profile.zero_fraction = 0.5;
    f.vms[0].profile.compression_ratio = 4.0;
    let bounds = lower_bounds(&f, &network(vec![]));
    assert!(
        (bounds.total.as_secs_f64() - 1.091567616).abs() < 1e-9,
        "{bounds:?}"
    );
    assert!((bounds.mean_migration.as_secs_f64() - 2.183135232).abs() < 1e-9);
    // Nothing compresses: the zero pages alone, 538,050,560 B.
    f.vms[0].profile.compression_ratio = 1.0;
    let bounds = lower_bounds(&f, &network(vec![]));
    assert!(
        (bounds.total.as_secs_f64() - 4.30440448).abs() < 1e-9,
        "{bounds:?}"
    );
}

#[test]
fn metrics_by_hand() {
    let fleet = fleet(&[Bytes(1_000_000_000), Bytes(1_000_000_000), Bytes(500_000_000)]);
    let record = |name: &str, start: f64, end: f64| VmRecord {
        compression: None,
        name: name.to_owned(),
        host: "src".into(),
        destination: Some("dst".into()),
        start_s: Some(start),
        end_s: Some(end),
        migration_time_s: Some(end - start),
        downtime_s: Some(0.1),
        rounds: Some(1),
        bytes_sent: Some(100),
        outcome: Outcome::Migrated,
        reason: None,
        mode: None,
        connections: None,
        decisions: Vec::new(),
    };
    let mut lost = VmRecord::unmoved("vm-2".into(), "src".into());
    lost.left(Outcome::Lost, reason::POWER_OFF);
    let vms = vec![record("vm-0", 0.0, 16.0), record("vm-1", 16.0, 48.0), lost];
    let result = RunResult::summarize("test", &fleet, &network(vec![]), vms, vec![]);
    assert_eq!(result.total_time_s, Some(48.0));
    assert_eq!(result.mean_migration_time_s, Some(24.0));
    assert_eq!(result.max_migration_time_s, Some(32.0));
    assert_eq!(result.p95_migration_time_s, Some(32.0));
    assert_eq!(result.mean_completion_time_s, Some(32.0));
    assert_eq!(
        (
            result.migrated,
            result.not_migrated,
            result.lost,
            result.bytes_sent
        ),
        (2, 0, 1, 200)
    );
    assert_eq!((result.priority_saved, result.priority_total), (2, 3));
    // Bounds over the two VMs moved (the lost one counts apart): 2e9
    // bytes at 1 Gbps = 16 s; mean of memory at the 0.5 Gbps NIC =
    // (16 + 16) / 2 s.
    assert_eq!(result.lower_bound_total_s, 16.0);
    assert_eq!(result.lower_bound_mean_migration_s, 16.0);
    let score = ((48.0_f64 / 16.0) * (24.0 / 16.0)).sqrt();
    assert!((result.score.unwrap() - score).abs() < 1e-9);
    let json: serde_json::Value = serde_json::from_str(&result.to_json()).unwrap();
    assert_eq!(json["vms"][2]["end_s"], serde_json::Value::Null);
    assert_eq!(json["vms"][2]["outcome"], "lost");
    assert_eq!(json["vms"][2]["reason"], "its source host lost power");
    assert!(
        json["vms"][0].get("reason").is_none(),
        "a migrated VM has no reason"
    );
}

#[test]
fn the_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
    assert_eq!(median(&[]), None);
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
}

#[test]
fn not_migrated_is_its_own_outcome_with_a_reason() {
    let fleet = fleet(&[Bytes(1_000_000_000), Bytes(1_000_000_000)]);
    let mut given_up = VmRecord::unmoved("vm-0".into(), "src".into());
    given_up.left(Outcome::NotMigrated, reason::GIVEN_UP);
    // A second reason does not overwrite the first.
    given_up.left(Outcome::Lost, reason::POWER_OFF);
    let mut interrupted = VmRecord::unmoved("vm-1".into(), "src".into());
    interrupted.left(Outcome::NotMigrated, reason::INTERRUPTED);
    let result = RunResult::summarize(
        "test",
        &fleet,
        &network(vec![]),
        vec![given_up, interrupted],
        vec![],
    );
    assert_eq!((result.migrated, result.not_migrated, result.lost), (0, 2, 0));
    let json: serde_json::Value = serde_json::from_str(&result.to_json()).unwrap();
    assert_eq!(json["not_migrated"], 2);
    assert_eq!(json["vms"][0]["outcome"], "not-migrated");
    assert_eq!(json["vms"][0]["reason"], "given up");
    assert_eq!(json["vms"][1]["reason"], "interrupted");
    let back: RunResult = serde_json::from_str(&result.to_json()).unwrap();
    assert_eq!(back, result);
}

#[test]
fn nearest_rank_percentile() {
    let values: Vec<f64> = (1..=20).map(f64::from).collect();
    assert_eq!(percentile(&values, 0.95), Some(19.0));
    assert_eq!(percentile(&[3.0], 0.95), Some(3.0));
    assert_eq!(percentile(&[], 0.95), None);
}
