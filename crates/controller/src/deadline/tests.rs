//! `deadline`'s unit tests: the planner's own decisions on hand-built
//! fleets, each expected value worked out in its comment.

use std::time::Duration;

use evac_model::{Bytes, Site, Vm};

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
    let mut in_flight = vec![0; fleet.hosts.len()];
    in_flight[0] = observations.migrations.len();
    let view = View {
        now: observations.now,
        fleet,
        observations,
        in_flight: &in_flight,
        in_flight_total: observations.migrations.len(),
        queued: 1,
        committed: &[],
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
    let at_connection = |bytes_per_sec: f64| postcopy_bytes(bytes_per_sec * 8.0, None);
    assert!(
        (at_connection(1e8) - 2_147_483_648.0).abs() < 1.0,
        "{}",
        at_connection(1e8)
    );
    assert!(
        (at_connection(1e9) - 1_181_116_006.4).abs() < 1.0,
        "{}",
        at_connection(1e9)
    );
}

#[test]
fn postcopy_is_costed_through_the_wans_trough() {
    // The VM of the test above, with connections of 1 GB/s, once the WAN
    // was measured at its trough: y alone on one connection at 100 MB/s,
    // below every cap (its connection's 1 GB/s, its NIC's 125 MB/s).
    // Alone at that trough x gets min(NIC 125, WAN 100) = 100 MB/s, so its
    // dirtied pages cost as on a connection of 100 MB/s: 2 GiB exactly.
    // A WAN that stalled (measured at 0) bounds nothing: no finite cost.
    let bytes = postcopy_bytes(8e9, Some(800e6));
    assert!((bytes - 2_147_483_648.0).abs() < 1.0, "{bytes}");
    let bytes = postcopy_bytes(8e9, Some(0.0));
    assert!(bytes.is_infinite(), "{bytes}");
}

/// The bytes the plan counts for moving [`fleet`]'s x by postcopy at
/// 1 GB/s, x being 1 GiB of random RAM dirtying 100 MB/s, on connections
/// of `connection_bps`; the WAN measured once at `trough_bps` (y alone on
/// one connection at 5 s), if given.
fn postcopy_bytes(connection_bps: f64, trough_bps: Option<f64>) -> f64 {
    let mut fleet = fleet();
    fleet.vms[0].memory = evac_model::Bytes::gib(1);
    fleet.vms[0].dirty_rate = evac_model::BytesPerSec(1e8);
    fleet.vms[0].working_set = evac_model::Bytes::gib(1);
    let params = MigrationParams {
        allow_postcopy: true,
        ..MigrationParams::default()
    };
    let mut policy = Deadline::new(
        &fleet,
        params,
        Duration::from_secs(1),
        Some(BitsPerSec(connection_bps)),
    );
    if let Some(trough_bps) = trough_bps {
        policy.estimator.observe(5.0, &[migrating(VmId(1), trough_bps)]);
        assert_eq!(policy.estimator.trough(), Some(trough_bps / 8.0));
    }
    let alternatives = policy.alternatives(&fleet, VmId(0), 1e9, policy.estimator.trough());
    let modes: Vec<Mode> = alternatives.iter().map(|a| a.0).collect();
    assert_eq!(modes, [Mode::Live, Mode::Postcopy, Mode::Offline]);
    alternatives[1].1
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
fn a_vm_cancelled_while_still_in_the_order_is_found_by_the_scavengers_pass() {
    // y (second in the order) is started ahead of x, as a resumed run
    // adopts it, and cancelled: it is queued again where it stands, before
    // the end of the order, with nothing after it. The scavengers' pass
    // scans only from where the first VM unable to make it may be; it
    // must start y on the room x leaves once x is done.
    let fleet = fleet();
    let mut policy = Deadline::new(&fleet, MigrationParams::default(), Duration::from_secs(1), None);
    let (x, y) = (VmId(0), VmId(1));
    assert_eq!(policy.order, [x, y]);
    policy.start_params(y, MigrationParams::default());
    policy.state[y.0] = State::Cancelling;
    consult(&mut policy, &fleet, &cancel_landed(y));
    assert!(policy.hopeless[y.0]);
    assert_eq!(
        policy.order.iter().filter(|&&v| v == y).count(),
        1,
        "{:?}",
        policy.order
    );
    policy.state[x.0] = State::Done;
    let later = Observations {
        now: Duration::from_secs(3),
        ..Observations::default()
    };
    let picks = consult(&mut policy, &fleet, &later).picks.unwrap_or_default();
    assert_eq!(picks, [y]);
    assert!(
        policy.scavenger[y.0],
        "y started on room no VM able to make it wanted"
    );
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
    let policy = measured_at_30_mb_s_in(&fleet, params);
    (fleet, policy)
}

/// [`measured_at_30_mb_s`] in `fleet` (x on host 0).
fn measured_at_30_mb_s_in(fleet: &Fleet, params: MigrationParams) -> Deadline {
    let mut policy = Deadline::new(fleet, params, Duration::from_secs(1), Some(BitsPerSec(320e6)));
    for t in [5.0, 10.0] {
        policy.estimator.observe(t, &[migrating(VmId(0), 240e6)]);
    }
    assert_eq!(policy.estimator.mean(10.0), Some(30e6));
    policy
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
    // sit mostly idle for it): 40 < 81 / 2. Unless it is in postcopy,
    // which cannot be undone.
    assert!(!policy.needs_the_path(&x(2), 10.0, 81e6));
    let in_postcopy = MigrationObs {
        phase: Phase::Postcopy,
        ..x(2)
    };
    assert!(policy.needs_the_path(&in_postcopy, 10.0, 81e6));
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

#[test]
fn a_migration_is_not_cancelled_for_a_vm_with_no_power_off() {
    // As above, x cannot make it at 30 s (watched 25 s of the 70 s left,
    // over a quarter), but y's host never loses power: y has all the time
    // there is, x's bandwidth would only bring its move forward, and x
    // keeps going.
    let mut fleet = fleet();
    fleet.hosts.push(host("c", Site::Source, 1e9, None));
    fleet.vms[1].host = HostId(2);
    assert!(!cancelled_in(&fleet, 30.0, Phase::Offline, Mode::Offline));
}

/// x in `phase` (started in `mode`) with 10 GiB left on a WAN measured at
/// 30 MB/s every 5 s from 5 s on, y waiting: whether the watch cancels x
/// at `now`.
fn cancelled_at(now: f64, phase: Phase, mode: Mode) -> bool {
    cancelled_in(&fleet(), now, phase, mode)
}

/// [`cancelled_at`] in `fleet` (x on host 0, which dies at 100 s).
fn cancelled_in(fleet: &Fleet, now: f64, phase: Phase, mode: Mode) -> bool {
    let mut policy = measured_at_30_mb_s_in(fleet, MigrationParams::default());
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
    with_view(fleet, &observations, |view| policy.watch(view)).contains(&Action::Cancel { vm: VmId(0) })
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
fn a_switch_to_postcopy_waits_until_the_wan_was_watched_for_a_quarter_of_the_time_left() {
    // x, started live with postcopy allowed, has 1 GiB left at 25 s, 75 s
    // before the power-off; its guest dirties 100 MB/s of a 1 GiB working
    // set, so precopy never converges at its 30 MB/s, and the rest at once
    // is 1 + 1 = 2 GiB (2,147.5 MB): 71.6 s at 30 MB/s, alone and at the
    // trough, on its one connection (40 MB/s). It fits in the 75 s left,
    // which are under the last safe moment (1.5 x 71.6 + 2 periods =
    // 109.4 s): it is switched now. With the WAN first seen full at 2 s, it
    // was watched 23 s, over a quarter of the 75 s (18.75): postcopy. First
    // seen full at 20 s, 5 s: offline, on all its connections.
    assert_eq!(
        switch_at_25_s(2.0),
        Some(Action::SwitchToPostcopy { vm: VmId(0) })
    );
    assert_eq!(
        switch_at_25_s(20.0),
        Some(Action::SwitchToOffline { vm: VmId(0) })
    );
}

/// [`fleet`]'s x, dirtying 100 MB/s of 1 GiB, migrating live with
/// postcopy allowed at 30 MB/s on connections of 40 MB/s; the WAN seen
/// full at `first_seen` and at 25 s: what the watch does at 25 s.
fn switch_at_25_s(first_seen: f64) -> Option<Action> {
    let mut fleet = fleet();
    fleet.vms[0].working_set = evac_model::Bytes::gib(1);
    let params = MigrationParams {
        allow_postcopy: true,
        ..MigrationParams::default()
    };
    let mut policy = Deadline::new(&fleet, params, Duration::from_secs(1), Some(BitsPerSec(320e6)));
    let mut x = migrating(VmId(0), 240e6);
    x.params.allow_postcopy = true;
    x.dirty_rate = evac_model::BytesPerSec(1e8);
    for t in [first_seen, 25.0] {
        policy.estimator.observe(t, std::slice::from_ref(&x));
    }
    let observations = Observations {
        now: Duration::from_secs(25),
        migrations: vec![x],
        ..Observations::default()
    };
    let actions = with_view(&fleet, &observations, |view| policy.watch(view));
    assert!(actions.len() <= 1, "{actions:?}");
    actions.into_iter().next()
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

#[test]
fn a_vm_that_fits_only_at_the_peak_goes_before_one_that_fits_but_dies_later() {
    // The WAN measured at 30 MB/s from 5 s to 10 s, then 120 MB/s (four
    // connections of 30 MB/s, below their 40 MB/s cap: capacities, not
    // floors) to 20 s: peak 120, time-weighted mean (30 × 5 + 120 × 10) /
    // 15 = 90 MB/s. At 20 s, x (8 GiB, idle: 8.59 GB whatever the mode) on a
    // host dying at 100 s has 80 s: 7.2 GB at the mean, no; 9.6 GB at the
    // peak, yes: deferred. z (1 GiB) on a host dying at 1,000 s fits at
    // the mean. x's window closes first: x goes first.
    let fleet = Fleet {
        hosts: vec![
            host("a", Site::Source, 1e9, Some(Duration::from_secs(100))),
            host("b", Site::Destination, 1e10, None),
            host("c", Site::Source, 1e9, Some(Duration::from_secs(1000))),
        ],
        vms: vec![
            Vm {
                memory: Bytes::gib(8),
                ..idle_vm("x", 0)
            },
            idle_vm("z", 2),
        ],
    };
    let mut policy = Deadline::new(
        &fleet,
        MigrationParams::default(),
        Duration::from_secs(1),
        Some(BitsPerSec(320e6)),
    );
    let four = |rate_bps: f64| MigrationObs {
        params: MigrationParams {
            connections: Connections::clamped(4),
            ..MigrationParams::default()
        },
        ..first_round(VmId(9), HostId(0), HostId(1), rate_bps, 4)
    };
    policy.estimator.observe(5.0, &[migrating(VmId(9), 240e6)]);
    policy.estimator.observe(10.0, &[four(960e6)]);
    policy.estimator.observe(20.0, &[four(960e6)]);
    assert_eq!(policy.estimator.peak(), Some(120e6));
    assert!((policy.estimator.mean(20.0).unwrap() - 90e6).abs() < 1.0);
    let at_20_s = Observations {
        now: Duration::from_secs(20),
        ..Observations::default()
    };
    with_view(&fleet, &at_20_s, |view| policy.plan(view));
    let deferred = policy.explain(VmId(0)).into_iter().any(|e| e.decision == "defer");
    assert!(deferred, "{:?}", policy.explain(VmId(0)));
    assert_eq!(policy.order[policy.head..], [VmId(0), VmId(1)]);
}

#[test]
fn the_replayed_forecast_repeats_the_last_minutes_to_the_last_power_off() {
    // Measured 30 MB/s at 5 and 10 s, 3 MB/s at 30 s (a stall), 30 again
    // at 50 s; at 70 s the history spans 65 s: steps at 0, 25 and 45 s of
    // each cycle, cycles starting at 0 and 65 s, to the power-off 130 s
    // ahead. The step at 45 s runs into the next cycle's first (also
    // 240 Mbit/s): one step.
    let mut fleet = fleet();
    fleet.hosts[0].power_off_at = Some(Duration::from_secs(200));
    let mut policy = measured_at_30_mb_s_in(&fleet, MigrationParams::default());
    policy.estimator.observe(30.0, &[migrating(VmId(0), 24e6)]);
    policy.estimator.observe(50.0, &[migrating(VmId(0), 240e6)]);
    let forecast = policy.replay(70.0).expect("a WAN that varied");
    let steps: Vec<(f64, f64)> = forecast
        .trace
        .iter()
        .map(|p| (p.at.as_secs_f64(), p.bandwidth.0 / 1e6))
        .collect();
    assert_eq!(forecast.wan, BitsPerSec(240e6));
    assert_eq!(
        steps,
        [
            (0.0, 240.0),
            (25.0, 24.0),
            (45.0, 240.0),
            (90.0, 24.0),
            (110.0, 240.0)
        ]
    );
    // A WAN that held steady has nothing to replay.
    let steady = measured_at_30_mb_s_in(&fleet, MigrationParams::default());
    assert!(steady.replay(70.0).is_none());
}
