//! The controller driven by hand, tick by tick: no simulator, no QEMU.

use std::time::Duration;

use evac_controller::{
    Action, Controller, ControllerConfig, EndOutcome, Ended, Evacuation, Observations, PolicyKind,
};
use evac_model::{Bytes, Fleet, Host, MigrationParams, Site, Vm, VmId};

fn host(name: &str, site: Site, memory: Option<Bytes>) -> Host {
    Host {
        memory,
        ..evac_testkit::host(name, site)
    }
}

fn vm(name: &str, host: usize, gib: u64) -> Vm {
    evac_testkit::vm(name, host, Bytes::gib(gib))
}

/// One source host with three VMs of 1 GiB, one destination.
fn three_vms_one_source() -> Fleet {
    Fleet {
        hosts: vec![
            host("src", Site::Source, None),
            host("dst", Site::Destination, None),
        ],
        vms: (0..3).map(|i| vm(&format!("vm-{i}"), 0, 1)).collect(),
    }
}

fn controller(fleet: &Fleet, policy: PolicyKind) -> Evacuation {
    let config = ControllerConfig {
        policy,
        ..ControllerConfig::default()
    };
    Evacuation::new(fleet.clone(), MigrationParams::default(), config)
}

fn tick(at: u64, ended: Vec<Ended>, hosts: usize) -> Observations {
    Observations {
        now: Duration::from_secs(at),
        ended,
        host_tx: vec![Bytes::ZERO; hosts],
        ..Observations::default()
    }
}

fn starts(actions: &[Action]) -> Vec<(usize, usize)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { vm, destination, .. } => Some((vm.0, destination.0)),
            _ => None,
        })
        .collect()
}

#[test]
fn each_vm_goes_to_the_destination_with_most_room_ties_by_name() {
    // Hosts: 0 = source; 1 = "dst-b" with 10 GiB; 2 = "dst-a" with 10 GiB.
    // 4 GiB VMs, all at once. Free room as they are placed, by hand:
    // a tie at 10/10 goes to dst-a (2); then 10 vs 6: dst-b (1); then 6/6:
    // dst-a (2); then 6 vs 2: dst-b (1); then 2/2: nothing fits.
    let fleet = Fleet {
        hosts: vec![
            host("src", Site::Source, None),
            host("dst-b", Site::Destination, Some(Bytes::gib(10))),
            host("dst-a", Site::Destination, Some(Bytes::gib(10))),
        ],
        vms: (0..5).map(|i| vm(&format!("vm-{i}"), 0, 4)).collect(),
    };
    let mut evacuation = controller(&fleet, PolicyKind::Parallel);
    let actions = evacuation.on_tick(&tick(0, vec![], 3));
    assert_eq!(starts(&actions), [(0, 2), (1, 1), (2, 2), (3, 1)]);
    assert_eq!(evacuation.queued(), 1);

    // A failed migration gives its room back; the waiting VM takes it, and
    // the failed one is retried first, where there is room again after it.
    let failed = Ended {
        vm: VmId(1),
        outcome: EndOutcome::Failed {
            reason: "destination died".into(),
        },
    };
    let actions = evacuation.on_tick(&tick(1, vec![failed], 3));
    assert_eq!(
        starts(&actions),
        [(1, 1)],
        "the retry comes first and fits on dst-b again"
    );
    assert_eq!(evacuation.queued(), 1, "vm-4 still fits nowhere");
}

#[test]
fn with_room_everywhere_each_vm_goes_to_an_idle_destination_then_where_its_nic_share_is_largest() {
    // Hosts: 0 = source; 1 = "dst-slow", 1 Gbit/s; 2 = "dst-fast",
    // 2 Gbit/s; no memory limit on either (all equally roomy: every VM once
    // went to the first by name). By hand: both idle, 2 vs 1 -> dst-fast;
    // dst-slow idle -> dst-slow; the share a migration more would get,
    // 2/2 = 1 vs 1/2 -> dst-fast; 2/3 vs 1/2 -> dst-fast.
    let nic = |host: Host, gbps: f64| Host {
        nic: evac_model::BitsPerSec(gbps * 1e9),
        ..host
    };
    let fleet = Fleet {
        hosts: vec![
            host("src", Site::Source, None),
            nic(host("dst-slow", Site::Destination, None), 1.0),
            nic(host("dst-fast", Site::Destination, None), 2.0),
        ],
        vms: (0..4).map(|i| vm(&format!("vm-{i}"), 0, 4)).collect(),
    };
    let mut evacuation = controller(&fleet, PolicyKind::Parallel);
    let actions = evacuation.on_tick(&tick(0, vec![], 3));
    assert_eq!(starts(&actions), [(0, 2), (1, 1), (2, 2), (3, 2)]);
}

#[test]
fn sequential_waits_for_the_end_of_each_migration() {
    let fleet = three_vms_one_source();
    let mut evacuation = controller(&fleet, PolicyKind::Sequential);
    assert_eq!(starts(&evacuation.on_tick(&tick(0, vec![], 2))), [(0, 1)]);
    assert!(starts(&evacuation.on_tick(&tick(1, vec![], 2))).is_empty());
    let done = Ended {
        vm: VmId(0),
        outcome: EndOutcome::Completed,
    };
    assert_eq!(starts(&evacuation.on_tick(&tick(2, vec![done], 2))), [(1, 1)]);
}

#[test]
fn static_limits_per_host_and_across_the_site() {
    // Three source hosts with 3 VMs each; static allows 5 in all, 2 per host.
    // In queue order (host 0's three, then host 1's, then host 2's): two
    // from host 0, two from host 1, one from host 2.
    let mut fleet = Fleet {
        hosts: vec![
            host("s0", Site::Source, None),
            host("s1", Site::Source, None),
            host("s2", Site::Source, None),
            host("dst", Site::Destination, None),
        ],
        vms: Vec::new(),
    };
    for h in 0..3 {
        for i in 0..3 {
            fleet.vms.push(vm(&format!("vm-{h}-{i}"), h, 1));
        }
    }
    let mut evacuation = controller(&fleet, PolicyKind::Static);
    let started: Vec<usize> = starts(&evacuation.on_tick(&tick(0, vec![], 4)))
        .into_iter()
        .map(|(vm, _)| vm)
        .collect();
    assert_eq!(started, [0, 1, 3, 4, 6]);
}

#[test]
fn queued_vms_of_a_host_that_lost_power_are_dropped() {
    let mut fleet = three_vms_one_source();
    fleet.hosts[0].power_off_at = Some(Duration::from_secs(5));
    let mut evacuation = controller(&fleet, PolicyKind::Sequential);
    assert_eq!(starts(&evacuation.on_tick(&tick(0, vec![], 2))), [(0, 1)]);
    let lost = Ended {
        vm: VmId(0),
        outcome: EndOutcome::Lost,
    };
    assert!(starts(&evacuation.on_tick(&tick(5, vec![lost], 2))).is_empty());
    assert_eq!(evacuation.queued(), 0);
}

#[test]
fn the_window_is_the_last_admissions_limit() {
    let fleet = three_vms_one_source();
    // Before any decision there is nothing to show.
    assert_eq!(controller(&fleet, PolicyKind::Static).window(), None);
    // static: max_in_flight = 5 by default; sequential: 1; parallel: none.
    for (policy, window) in [
        (PolicyKind::Static, Some(5)),
        (PolicyKind::Sequential, Some(1)),
        (PolicyKind::Parallel, None),
        // AIMD windows start at 1.
        (PolicyKind::AimdGlobal, Some(1)),
    ] {
        let mut evacuation = controller(&fleet, policy);
        evacuation.on_tick(&tick(0, vec![], 2));
        assert_eq!(evacuation.window(), window, "{policy:?}");
    }
}

/// A real driver stamps an observation with the time its counters were
/// read, so a periodic tick can come a little less than a period after the
/// last one. Such a tick still measures the period's throughput (an AIMD
/// window's first measurement grows it from 1 to 2); a tick a migration's
/// end caused at the same instant does not.
#[test]
fn a_periodic_tick_a_little_early_still_measures_the_period() {
    let fleet = three_vms_one_source();
    for (periodic, window) in [(true, Some(2)), (false, Some(1))] {
        let mut evacuation = controller(&fleet, PolicyKind::AimdGlobal);
        assert_eq!(starts(&evacuation.on_tick(&tick(0, vec![], 2))).len(), 1);
        // The default period is 1 s; this tick comes 4.3 ms short of it.
        let early = Observations {
            now: Duration::from_micros(995_700),
            host_tx: vec![Bytes(100_000_000), Bytes::ZERO],
            periodic,
            ..Observations::default()
        };
        let started = starts(&evacuation.on_tick(&early)).len();
        assert_eq!(evacuation.window(), window, "periodic: {periodic}");
        assert_eq!(started, usize::from(periodic), "periodic: {periodic}");
    }
}
