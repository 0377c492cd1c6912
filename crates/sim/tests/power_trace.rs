//! Power that changes during the evacuation: a host's `power_trace`
//! announces a new power-off at a given time; the simulator applies it then,
//! and the controller learns it then, not before.
//!
//! Every figure is worked by hand in the comments: idle VMs (nothing to
//! dirty), the ideal model (no setup, no ramp), and a WAN of 1 Gbps
//! (125 MB/s) that is the only bottleneck, so a 512 MiB VM alone takes
//! 536,870,912 / 125e6 = 4.295 s.

use std::time::Duration;

use evac_controller::{ControllerConfig, PolicyKind};
use evac_model::{BitsPerSec, Bytes, Fleet, Host, MigrationParams, Network, PowerChange, Site, Vm};
use evac_outcome::{Outcome, RunResult};

const ONE: f64 = 536_870_912.0 / 125e6;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn host(name: &str, site: Site, power_off_at: Option<f64>, trace: &[(f64, Option<f64>)]) -> Host {
    Host {
        power_off_at: power_off_at.map(secs),
        power_trace: trace
            .iter()
            .map(|&(at, power_off_at)| PowerChange {
                at: secs(at),
                power_off_at: power_off_at.map(secs),
            })
            .collect(),
        ..evac_testkit::host(name, site)
    }
}

/// `src`, losing power at `power_off_at` seconds and then as `trace`
/// says, and `dst`.
fn src_dst(power_off_at: f64, trace: &[(f64, Option<f64>)]) -> Vec<Host> {
    vec![
        host("src", Site::Source, Some(power_off_at), trace),
        host("dst", Site::Destination, None, &[]),
    ]
}

/// `vms` idle VMs of 512 MiB, given as (source host, priority).
fn fleet(hosts: Vec<Host>, vms: &[(usize, u32)]) -> Fleet {
    Fleet {
        hosts,
        vms: vms
            .iter()
            .enumerate()
            .map(|(i, &(host, priority))| Vm {
                priority,
                ..evac_testkit::vm(&format!("vm-{i}"), host, Bytes::mib(512))
            })
            .collect(),
    }
}

fn network() -> Network {
    evac_testkit::wan_with(BitsPerSec::gbps(1.0), Duration::from_millis(20), Bytes::gib(1))
}

fn run(fleet: &Fleet, policy: PolicyKind) -> RunResult {
    let config = ControllerConfig {
        policy,
        ..ControllerConfig::default()
    };
    evac_sim::simulate_evacuation(fleet, &network(), MigrationParams::default(), &config)
}

fn outcomes(result: &RunResult) -> Vec<Outcome> {
    result.vms.iter().map(|vm| vm.outcome).collect()
}

/// Four VMs one after the other end at 4.3, 8.6, 12.9 and 17.2 s. The host
/// was to lose power at 100 s; at 3 s the cut-off moves to 10 s: the first
/// two are saved, the third is lost in flight at 10 s, the fourth never
/// leaves. Without the change all four are saved.
#[test]
fn a_cut_off_moved_earlier_loses_what_it_no_longer_leaves_time_for() {
    let vms = [(0, 1); 4];
    let changed = run(
        &fleet(src_dst(100.0, &[(3.0, Some(10.0))]), &vms),
        PolicyKind::Sequential,
    );
    use Outcome::{Lost, Migrated};
    assert_eq!(outcomes(&changed), [Migrated, Migrated, Lost, Lost]);
    let end = changed.vms[1].end_s.unwrap();
    assert!((end - 2.0 * ONE).abs() < 1e-6, "second VM ends at {end}");
    let steady = run(&fleet(src_dst(100.0, &[]), &vms), PolicyKind::Sequential);
    assert_eq!(outcomes(&steady), [Migrated; 4]);
}

/// The host was to lose power at 6 s (one VM's time and a bit); at 3 s a
/// generator starts and the power-off is gone: all four are saved, the last
/// at 4 × 4.295 = 17.2 s. Without the generator only the first is.
#[test]
fn a_generator_that_starts_cancels_the_power_off() {
    let vms = [(0, 1); 4];
    let saved = run(&fleet(src_dst(6.0, &[(3.0, None)]), &vms), PolicyKind::Sequential);
    assert_eq!(outcomes(&saved), [Outcome::Migrated; 4]);
    let end = saved.vms[3].end_s.unwrap();
    assert!((end - 4.0 * ONE).abs() < 1e-6, "last VM ends at {end}");
    let dark = run(&fleet(src_dst(6.0, &[]), &vms), PolicyKind::Sequential);
    assert_eq!(outcomes(&dark)[0], Outcome::Migrated);
    assert!(outcomes(&dark)[1..].iter().all(|&o| o == Outcome::Lost));
}

/// A power-off moved to a time already past means now: at 3 s the host is
/// told it lost power at 1 s, and what is still on it is lost at 3 s, not
/// at the 100 s first announced (nor at 1 s, before anyone knew).
#[test]
fn a_power_off_announced_in_the_past_is_now() {
    let hosts = src_dst(100.0, &[(3.0, Some(1.0))]);
    let result = run(&fleet(hosts, &[(0, 1), (0, 1)]), PolicyKind::Sequential);
    assert_eq!(outcomes(&result), [Outcome::Lost, Outcome::Lost]);
    let sent = result.vms[0].bytes_sent.unwrap() as f64;
    // 3 s at 125 MB/s of the first VM's 512 MiB went before the lights went out.
    assert!((sent - 3.0 * 125e6).abs() < 1.0, "sent {sent}");
}

/// The planner learns a change when it is announced, and plans again.
/// Host `a` has two VMs of priority 10, host `b` two of priority 5; both
/// hosts are to lose power at 100 s, so `deadline` moves `a`'s first, one
/// at a time (one migration fills the WAN). At 1 s host `b` is told it goes
/// dark at 10 s. When `a`'s first VM ends (4.3 s), a planner that heard
/// sends `b`'s first next: it ends at 8.6 s, before 10 s; `b`'s second
/// (8.6 + 4.3 = 12.9 s) cannot make it, and `a`'s second goes instead, by
/// 100 s. A planner that did not hear would send `a`'s second at 4.3 s
/// (ends 8.6 s) and lose both of `b`'s: 20 priority saved, not 25.
#[test]
fn deadline_replans_when_a_cut_off_is_announced() {
    let hosts = vec![
        host("a", Site::Source, Some(100.0), &[]),
        host("b", Site::Source, Some(100.0), &[(1.0, Some(10.0))]),
        host("dst", Site::Destination, None, &[]),
    ];
    let fleet = fleet(hosts, &[(0, 10), (0, 10), (1, 5), (1, 5)]);
    let result = run(&fleet, PolicyKind::Deadline);
    use Outcome::{Lost, Migrated};
    assert_eq!(outcomes(&result), [Migrated, Migrated, Migrated, Lost]);
    let end = result.vms[2].end_s.unwrap();
    assert!((end - 2.0 * ONE).abs() < 0.01, "b's first VM ends at {end}");
}

/// A WAN outage is a trace point of 0: at 2 s the WAN carries nothing until
/// it comes back at 5 s. One VM has sent 2 s × 125 MB/s = 250 MB by then,
/// waits 3 s, and sends the rest: it ends at 4.295 + 3 = 7.295 s, under
/// every policy (one VM fills the WAN, so none has a choice to make).
#[test]
fn a_wan_outage_holds_migrations_until_it_ends() {
    let mut network = network();
    network.wan_trace = vec![
        evac_model::TracePoint {
            at: secs(2.0),
            bandwidth: BitsPerSec(0.0),
        },
        evac_model::TracePoint {
            at: secs(5.0),
            bandwidth: BitsPerSec::gbps(1.0),
        },
    ];
    network.validate().expect("an outage is a valid trace point");
    let hosts = vec![
        host("src", Site::Source, Some(600.0), &[]),
        host("dst", Site::Destination, None, &[]),
    ];
    let fleet = fleet(hosts, &[(0, 1)]);
    for policy in [
        PolicyKind::Sequential,
        PolicyKind::AimdGlobal,
        PolicyKind::Deadline,
    ] {
        let config = ControllerConfig {
            policy,
            ..ControllerConfig::default()
        };
        let result = evac_sim::simulate_evacuation(&fleet, &network, MigrationParams::default(), &config);
        let vm = &result.vms[0];
        assert_eq!(vm.outcome, Outcome::Migrated, "{policy}");
        let end = vm.end_s.unwrap();
        assert!((end - (ONE + 3.0)).abs() < 1e-6, "{policy}: ends at {end}");
    }
}
