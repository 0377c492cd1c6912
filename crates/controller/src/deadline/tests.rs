//! `deadline`'s unit tests: the planner's own decisions on hand-built
//! fleets, each expected value worked out in its comment.

use std::time::Duration;

use evac_model::Site;

use super::*;
use crate::testing::{first_round, host, idle_vm};
use crate::{Ended, MigrationObs, Observations, Phase};

/// One source host dying at 100 s with two VMs, one destination.
fn fleet() -> Fleet {
    Fleet {
        hosts: vec![
            host("a", Site::Source, 1e9, Some(Duration::from_secs(100))),
            host("b", Site::Destination, 1e9, None),
        ],
        vms: vec![idle_vm("x", 0), idle_vm("y", 0)],
    }
}

/// `vm` in its first precopy round from host 0 to host 1, at `rate` bits per second.
fn migrating(vm: VmId, rate: f64) -> MigrationObs {
    first_round(vm, HostId(0), HostId(1), rate, 1)
}

/// At 2 s, the cancel of `vm`'s migration has landed: it ended, failed.
fn cancel_landed(vm: VmId) -> Observations {
    Observations {
        now: Duration::from_secs(2),
        ended: vec![Ended {
            vm,
            outcome: EndOutcome::Failed {
                reason: "cancelled".into(),
            },
        }],
        ..Observations::default()
    }
}

/// `f` on the view of `observations`: its migrations all from host 0,
/// one VM queued.
fn with_view<R>(fleet: &Fleet, observations: &Observations, f: impl FnOnce(&View<'_>) -> R) -> R {
    let view = View {
        now: observations.now,
        fleet,
        observations,
        in_flight: &[observations.migrations.len(), 0],
        in_flight_total: observations.migrations.len(),
        queued: 1,
        period_throughput: None,
        sending_hosts: None,
    };
    f(&view)
}

fn consult(policy: &mut Deadline, fleet: &Fleet, observations: &Observations) -> Admission {
    with_view(fleet, observations, |view| policy.admit(view))
}

#[test]
fn postcopy_is_costed_by_the_time_its_pages_take_on_one_connection() {
    // 1 GiB of random RAM dirtying 100 MB/s, alone at 1 GB/s: postcopy
    // sends the 1 GiB in 1.0737 s, then what it dirtied meanwhile,
    // 107,374,182.4 bytes, on one connection. At 100 MB/s a connection
    // those take 1.0737 s, in which the VM's rate would carry ten times
    // as much: 1 GiB + 1 GiB = 2 GiB exactly. With connections of
    // 1 GB/s (no slower than the VM's rate) its bytes stand:
    // 1,181,116,006.4.
    let mut fleet = fleet();
    fleet.vms[0].memory = evac_model::Bytes::gib(1);
    fleet.vms[0].dirty_rate = evac_model::BytesPerSec(1e8);
    fleet.vms[0].working_set = evac_model::Bytes::gib(1);
    let params = MigrationParams {
        allow_postcopy: true,
        ..MigrationParams::default()
    };
    let postcopy = |connection: f64| {
        let policy = Deadline::new(
            &fleet,
            params,
            Duration::from_secs(1),
            Some(BitsPerSec(connection * 8.0)),
        );
        let alternatives = policy.alternatives(&fleet, VmId(0), 1e9);
        let modes: Vec<Mode> = alternatives.iter().map(|a| a.0).collect();
        assert_eq!(modes, [Mode::Live, Mode::Postcopy, Mode::Offline]);
        alternatives[1].1
    };
    assert!((postcopy(1e8) - 2_147_483_648.0).abs() < 1.0, "{}", postcopy(1e8));
    assert!((postcopy(1e9) - 1_181_116_006.4).abs() < 1.0, "{}", postcopy(1e9));
}

#[test]
fn a_vm_cancelled_in_flight_waits_for_its_cancel_then_queues_behind_those_that_fit() {
    let fleet = fleet();
    let mut policy = Deadline::new(&fleet, MigrationParams::default(), Duration::from_secs(1), None);
    let (x, y) = (VmId(0), VmId(1));
    let migrating = migrating(x, 1e6);
    policy.start_params(x, MigrationParams::default());
    // The planner cancels it (as `tune` does).
    policy.state[x.0] = State::Cancelling;
    // The cancel has not landed a period later: still in flight, and
    // not started a second time.
    let still = Observations {
        now: Duration::from_secs(1),
        migrations: vec![migrating],
        ..Observations::default()
    };
    let admission = consult(&mut policy, &fleet, &still);
    assert_eq!(policy.state[x.0], State::Cancelling);
    assert!(!admission.picks.unwrap_or_default().contains(&x));
    // Then it ends, failed (cancelled): queued again, not given up,
    // marked as unable to make it, and behind y in the order.
    consult(&mut policy, &fleet, &cancel_landed(x));
    assert_eq!(policy.state[x.0], State::Queued);
    assert!(policy.hopeless[x.0]);
    assert!(policy.startable(x, 2.0) && policy.startable(y, 2.0));
    let rest = &policy.order[policy.head..];
    let at = |vm| rest.iter().position(|&v| v == vm);
    assert!(at(y) < at(x), "{rest:?}");
}

#[test]
fn a_vm_cancelled_once_that_a_later_plan_finds_able_starts_as_any_other() {
    // x is cancelled and queued again; y has moved meanwhile. A later plan
    // finds x can make its power-off: it starts in the admission's first
    // pass, so its load counts when others are admitted beside it (it is
    // no scavenger), the start says it is next in the plan, and it is
    // still never cancelled again.
    let fleet = fleet();
    let mut policy = Deadline::new(&fleet, MigrationParams::default(), Duration::from_secs(1), None);
    let (x, y) = (VmId(0), VmId(1));
    policy.start_params(x, MigrationParams::default());
    policy.state[x.0] = State::Cancelling;
    consult(&mut policy, &fleet, &cancel_landed(x));
    assert!(policy.hopeless[x.0] && policy.cancelled_once[x.0]);
    policy.state[y.0] = State::Done;
    // The later plan's verdict (`order.rs` sets it from each plan).
    policy.hopeless[x.0] = false;
    let later = Observations {
        now: Duration::from_secs(3),
        ..Observations::default()
    };
    let picks = consult(&mut policy, &fleet, &later).picks.unwrap_or_default();
    assert_eq!(picks, [x]);
    assert!(!policy.scavenger[x.0], "x started on the plan, not on spare room");
    assert!(policy.cancelled_once[x.0]);
    let start = policy
        .explain(x)
        .into_iter()
        .rev()
        .find(|e| e.decision == "start")
        .expect("a start");
    assert!(start.why.contains("next in the plan"), "{}", start.why);
}

/// [`fleet`]'s policy with connections of 40 MB/s (320 Mbit/s), having
/// measured the WAN at 30 MB/s: `x` alone on one connection, below its
/// cap, from 0 s to 10 s.
fn measured_at_30_mb_s(params: MigrationParams) -> (Fleet, Deadline) {
    let fleet = fleet();
    let mut policy = Deadline::new(&fleet, params, Duration::from_secs(1), Some(BitsPerSec(320e6)));
    for t in [5.0, 10.0] {
        policy.estimator.observe(t, &[migrating(VmId(0), 240e6)]);
    }
    assert_eq!(policy.estimator.mean(10.0), Some(30e6));
    (fleet, policy)
}

#[test]
fn a_migration_racing_its_power_off_keeps_the_path_when_a_joiner_would_sink_it() {
    // At 10 s, 90 s before the power-off: alone it gets min(WAN 30,
    // cap 40) = 30 MB/s; beside a joiner of one connection, half: 15.
    // 1 GiB needs 11.93 MB/s (fits shared), 2 GiB 23.86 (only alone),
    // 3 GiB 35.79 (not even alone: the watch's, not admission's).
    let (_, policy) = measured_at_30_mb_s(MigrationParams::default());
    let x = |gib: u64| MigrationObs {
        bytes_remaining: evac_model::Bytes::gib(gib),
        ..migrating(VmId(0), 240e6)
    };
    assert!(!policy.needs_the_path(&x(1), 10.0, 30e6));
    assert!(policy.needs_the_path(&x(2), 10.0, 30e6));
    assert!(!policy.needs_the_path(&x(3), 10.0, 30e6));
    // Nor when it carries under half the target alone (the path would
    // sit mostly idle for it).
    assert!(!policy.needs_the_path(&x(2), 10.0, 81e6));
}

#[test]
fn a_migration_in_postcopy_is_never_cancelled() {
    // x has 10 GiB left 70 s before the power-off at 30 MB/s (2.1 GB
    // arrive): it cannot make it, and y waits on a powered host, so an
    // offline migration is cancelled for y's sake; one in postcopy is
    // not (its guest runs at the destination: a cancel loses it).
    assert!(cancelled_at(30.0, Phase::Offline, Mode::Offline));
    assert!(!cancelled_at(30.0, Phase::Postcopy, Mode::Postcopy));
}

/// x in `phase` (started in `mode`) with 10 GiB left on a WAN measured at
/// 30 MB/s every 5 s from 5 s on, y waiting: whether the watch cancels x
/// at `now`.
fn cancelled_at(now: f64, phase: Phase, mode: Mode) -> bool {
    let (fleet, mut policy) = measured_at_30_mb_s(MigrationParams::default());
    policy.start_params(VmId(0), MigrationParams::default());
    let mut x = migrating(VmId(0), 240e6);
    x.phase = phase;
    x.params.mode = mode;
    x.bytes_remaining = evac_model::Bytes::gib(10);
    for t in (15..=now as u64).step_by(5) {
        policy.estimator.observe(t as f64, std::slice::from_ref(&x));
    }
    let observations = Observations {
        now: Duration::from_secs_f64(now),
        migrations: vec![x],
        ..Observations::default()
    };
    with_view(&fleet, &observations, |view| policy.watch(view)).contains(&Action::Cancel { vm: VmId(0) })
}

#[test]
fn a_cancel_waits_until_the_wan_was_watched_for_a_quarter_of_the_time_left() {
    // The power-off is at 100 s; the WAN was first seen full at 5 s. x
    // cannot make it at any of these times (10 GiB at 30 MB/s needs
    // 358 s). At 20 s it was watched 15 s of the 80 s left, under a
    // quarter (20 s): kept. At 22 s, 17 s of 78 (19.5): kept. At 25 s,
    // 20 s of 75 (18.75): cancelled.
    let offline = |now| cancelled_at(now, Phase::Offline, Mode::Offline);
    assert!(!offline(20.0));
    assert!(!offline(22.0));
    assert!(offline(25.0));
}

#[test]
fn a_migration_it_did_not_start_is_adopted_as_in_flight() {
    // A resumed run: the driver reports a migration the policy never
    // started; it must not be started a second time.
    let fleet = fleet();
    let mut policy = Deadline::new(&fleet, MigrationParams::default(), Duration::from_secs(1), None);
    let adopted = Observations {
        now: Duration::from_secs(1),
        migrations: vec![migrating(VmId(1), 0.0)],
        ..Observations::default()
    };
    let admission = consult(&mut policy, &fleet, &adopted);
    assert_eq!(policy.state[1], State::InFlight);
    assert!(!admission.picks.unwrap_or_default().contains(&VmId(1)));
}
