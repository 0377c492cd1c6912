//! The simulated-time horizon: a run that cannot finish ends at the
//! horizon with its VMs `not-migrated` ("horizon reached"), and its
//! timeline stays bounded however many changes the run sees.

use std::time::Duration;

use evac_controller::{ControllerConfig, PolicyKind};
use evac_model::{BitsPerSec, Bytes, Fleet, MigrationParams, Network, TracePoint};
use evac_outcome::{reason, Outcome, MAX_TIMELINE_POINTS};
use evac_testkit::{two_sites, vm};

fn fleet(memory: Bytes) -> Fleet {
    two_sites(vec![vm("vm", 0, memory)])
}

fn wan(bandwidth: BitsPerSec, trace: Vec<TracePoint>) -> Network {
    Network {
        wan_trace: trace,
        ..evac_testkit::wan(bandwidth)
    }
}

#[test]
fn a_wan_typo_ends_at_the_horizon_with_the_vm_not_migrated() {
    // "1 Kbps" for "1 Gbps": 1 GiB takes 8 * 2^30 / 1000 s, about 99 days.
    let fleet = fleet(Bytes::gib(1));
    let network = wan(BitsPerSec(1000.0), vec![]);
    let config = ControllerConfig {
        policy: PolicyKind::Sequential,
        horizon: Duration::from_secs(3600),
        ..ControllerConfig::default()
    };
    let warning = evac_sim::horizon_warning(&fleet, &network, &config).expect("a warning up front");
    assert!(warning.contains("60 min"), "{warning}");
    let result = evac_sim::simulate_evacuation(&fleet, &network, MigrationParams::default(), &config);
    let record = &result.vms[0];
    assert_eq!(record.outcome, Outcome::NotMigrated);
    assert_eq!(record.reason.as_deref(), Some(reason::HORIZON));
    // An hour at 1000 bit/s: 450,000 bytes sent.
    assert_eq!(record.bytes_sent, Some(450_000));
    assert_eq!(result.timeline.last().map(|p| p.t_s), Some(3600.0));
    assert_eq!(result.total_time_s, None);
    // The same run with room to finish gets no warning.
    let fast = wan(BitsPerSec::gbps(1.0), vec![]);
    assert_eq!(evac_sim::horizon_warning(&fleet, &fast, &config), None);
}

#[test]
fn a_timeline_of_a_million_changes_stays_bounded_and_exact_in_bytes() {
    // The WAN alternates 2 Mbps / 1 Mbps every second for a million
    // seconds; a 1 TiB VM cannot finish, so every change is a timeline
    // point until the horizon at 10^6 s.
    let trace: Vec<TracePoint> = (1..1_000_000u64)
        .map(|s| TracePoint {
            at: Duration::from_secs(s),
            bandwidth: BitsPerSec(if s % 2 == 0 { 2e6 } else { 1e6 }),
        })
        .collect();
    let network = wan(BitsPerSec(2e6), trace);
    let config = ControllerConfig {
        policy: PolicyKind::Sequential,
        horizon: Duration::from_secs(1_000_000),
        ..ControllerConfig::default()
    };
    let fleet = fleet(Bytes::gib(1024));
    let result = evac_sim::simulate_evacuation(&fleet, &network, MigrationParams::default(), &config);
    assert!(
        result.timeline.len() <= MAX_TIMELINE_POINTS,
        "{}",
        result.timeline.len()
    );
    assert!(
        result.timeline.len() > MAX_TIMELINE_POINTS / 4,
        "{}",
        result.timeline.len()
    );
    // By hand: 500,000 s at 2 Mbps and 500,000 s at 1 Mbps = 1.5e12 bits.
    let bits: f64 = result
        .timeline
        .windows(2)
        .map(|w| w[1].wan_throughput_bps * (w[1].t_s - w[0].t_s))
        .sum();
    assert!((bits - 1.5e12).abs() < 1e-6 * 1.5e12, "{bits}");
    assert_eq!(result.vms[0].bytes_sent, Some(187_500_000_000));
    assert_eq!(result.vms[0].reason.as_deref(), Some(reason::HORIZON));
}
