//! `Evacuation::resume_vm`: a fresh controller told what a journal says
//! starts only what is neither done nor in flight, and counts the adopted
//! migration against its limits and the destination's room.

use std::time::Duration;

use evac_controller::{
    Action, Controller, ControllerConfig, EndOutcome, Ended, Evacuation, Observations, PolicyKind, Resumed,
};
use evac_model::{Bytes, Fleet, Host, HostId, MigrationParams, Site, VmId};

fn fleet(dst_room_gib: u64) -> Fleet {
    let host = |name: &str, site, memory| Host {
        memory,
        ..evac_testkit::host(name, site)
    };
    let vm = |name: &str| evac_testkit::vm(name, 0, Bytes::gib(4));
    Fleet {
        hosts: vec![
            host("src", Site::Source, None),
            host("dst", Site::Destination, Some(Bytes::gib(dst_room_gib))),
        ],
        vms: vec![vm("a"), vm("b"), vm("c"), vm("d")],
    }
}

fn controller(fleet: &Fleet, policy: PolicyKind) -> Evacuation {
    let config = ControllerConfig {
        policy,
        ..ControllerConfig::default()
    };
    Evacuation::new(fleet.clone(), MigrationParams::default(), config)
}

fn tick(at: u64, ended: Vec<Ended>) -> Observations {
    Observations {
        now: Duration::from_secs(at),
        ended,
        host_tx: vec![Bytes::ZERO; 2],
        ..Observations::default()
    }
}

fn started(actions: &[Action]) -> Vec<usize> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { vm, .. } => Some(vm.0),
            _ => None,
        })
        .collect()
}

/// What a journal says of a run cut short: a migrated to `dst`, b on its
/// way there (its first attempt), c and d not started.
fn a_done_b_in_flight(c: &mut Evacuation) {
    c.resume_vm(
        VmId(0),
        Resumed::Done {
            destination: Some(HostId(1)),
        },
    );
    c.resume_vm(
        VmId(1),
        Resumed::InFlight {
            destination: HostId(1),
            attempts: 1,
        },
    );
}

#[test]
fn sequential_waits_for_the_adopted_migration_and_skips_the_done() {
    let fleet = fleet(64);
    let mut c = controller(&fleet, PolicyKind::Sequential);
    a_done_b_in_flight(&mut c);
    assert_eq!(c.queued(), 2);
    // One in flight already (b): sequential starts nothing.
    assert_eq!(started(&c.on_tick(&tick(1, vec![]))), Vec::<usize>::new());
    // b completes: c is next, never a or b again.
    let done = Ended {
        vm: VmId(1),
        outcome: EndOutcome::Completed,
    };
    assert_eq!(started(&c.on_tick(&tick(2, vec![done]))), vec![2]);
    let done = Ended {
        vm: VmId(2),
        outcome: EndOutcome::Completed,
    };
    assert_eq!(started(&c.on_tick(&tick(3, vec![done]))), vec![3]);
    assert_eq!(c.queued(), 0);
}

#[test]
fn the_adopted_and_migrated_vms_take_room_at_the_destination() {
    // Room for three 4 GiB VMs: a is there, b on its way, so only c fits.
    let fleet = fleet(12);
    let mut c = controller(&fleet, PolicyKind::Parallel);
    a_done_b_in_flight(&mut c);
    assert_eq!(started(&c.on_tick(&tick(1, vec![]))), vec![2]);
}

#[test]
fn a_waiting_vm_keeps_its_failed_attempts() {
    let fleet = fleet(64);
    let config = ControllerConfig {
        policy: PolicyKind::Sequential,
        max_attempts: 2,
        ..ControllerConfig::default()
    };
    let mut c = Evacuation::new(fleet.clone(), MigrationParams::default(), config);
    c.resume_vm(VmId(0), Resumed::Waiting { attempts: 1 });
    assert_eq!(started(&c.on_tick(&tick(1, vec![]))), vec![0]);
    // Its second attempt fails: with 2 allowed it is given up, b goes next.
    let failed = Ended {
        vm: VmId(0),
        outcome: EndOutcome::Failed { reason: "x".into() },
    };
    assert_eq!(started(&c.on_tick(&tick(2, vec![failed]))), vec![1]);
}
