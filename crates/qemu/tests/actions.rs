//! The controller's actions and migration parameters no other test covers,
//! on real QEMU: `SwitchToOffline` mid-flight, `auto_converge`, and
//! `multifd_channels`.
//! Skipped, with the reason printed, where qemu-system-x86_64 or the
//! dirtying guest (GNU binutils at build time) is missing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evac_controller::Action;
use evac_lab::{self as lab, Lab, LabVm};
use evac_model::{BitsPerSec, BytesPerSec, MigrationParams};
use evac_qemu::{run_with_controller, Inventory, Placement};
use evac_qmp::{MigrationStatus, RunState};
use evac_report::Outcome;

mod common;
use common::{
    at_destination, capability, last_running_before, monitor, quick_inventory, watch, Sample, Script, Turn,
};

fn inventory(lab: &Lab, vms: &[LabVm], extra: &str) -> Inventory {
    quick_inventory(lab, "sequential", vms, extra)
}

/// The tests here each migrate a dirtying guest (or move a VM as fast as
/// they can): one at a time, so they do not take each other's CPU.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The non-converging guest: 128 MiB dirtying 60 MB/s over 16 MiB, sent at
/// 200 Mbps (25 MB/s) with the default 300 ms downtime limit.
const MIB: u64 = 128;
const DIRTY_RATE: BytesPerSec = BytesPerSec(60e6);
const WORKING_SET_MIB: u64 = 16;

/// What the tests of a dirtying guest need.
const DIRTYING: &[lab::Prerequisite] = &[lab::qemu_available, lab::dirty_guest_available];
/// What the others need.
const IDLE: &[lab::Prerequisite] = &[lab::qemu_available];

const AC_DIRTY_RATE: BytesPerSec = BytesPerSec(400e6);
const AC_WORKING_SET_MIB: u64 = 64;

/// The guest of the auto-converge tests, `name`: dirtying [`AC_DIRTY_RATE`]
/// over [`AC_WORKING_SET_MIB`] ([`watched_dirtying_vm`]).
async fn ac_guest(lab: &mut Lab, name: &str) -> (LabVm, Inventory, Arc<Mutex<Vec<Sample>>>) {
    watched_dirtying_vm(lab, name, AC_DIRTY_RATE, AC_WORKING_SET_MIB).await
}

/// The parameters of the auto-converge tests: `auto_converge` or not, sent
/// at `max_bandwidth`.
fn ac_params(auto_converge: bool, max_bandwidth: BitsPerSec) -> MigrationParams {
    MigrationParams {
        auto_converge,
        max_bandwidth: Some(max_bandwidth),
        ..Default::default()
    }
}

fn capped() -> MigrationParams {
    MigrationParams {
        max_bandwidth: Some(BitsPerSec::mbps(200.0)),
        ..Default::default()
    }
}

/// Starts VM 0 to host 1 with `params`; after `after` of migration
/// switches it to offline, noting when in `switched_at`.
fn offline_after(
    params: MigrationParams,
    after: Duration,
    switched_at: Arc<Mutex<Option<Instant>>>,
) -> Script {
    Script::then(params, move |obs, m| {
        let mut switched = switched_at.lock().unwrap();
        if switched.is_none() && obs.now.saturating_sub(m.started_at) >= after {
            *switched = Some(Instant::now());
            return vec![Action::SwitchToOffline { vm: m.vm }];
        }
        Vec::new()
    })
}

/// A QMP client of `vm`'s source, which must be running, and its samples.
async fn watch_source(vm: &LabVm) -> Arc<Mutex<Vec<Sample>>> {
    let qmp = monitor(vm).await;
    assert!(qmp.query_status().await.unwrap().running);
    watch(qmp)
}

/// A dirtying guest `name` of [`MIB`] started in `lab`, dirtying `rate`
/// over `working_set_mib`; the inventory moving it; and the samples of its
/// source ([`watch_source`]).
async fn watched_dirtying_vm(
    lab: &mut Lab,
    name: &str,
    rate: BytesPerSec,
    working_set_mib: u64,
) -> (LabVm, Inventory, Arc<Mutex<Vec<Sample>>>) {
    let vm = lab
        .start_dirtying_vm_in(name, MIB, rate, working_set_mib, None)
        .unwrap();
    let inventory = inventory(lab, std::slice::from_ref(&vm), "");
    let samples = watch_source(&vm).await;
    (vm, inventory, samples)
}

/// A guest that would not converge (60 MB/s over 16 MiB, sent at 200 Mbps
/// = 25 MB/s), switched to offline after 7 s of precopy (the first round,
/// all 128 MiB, takes 5.4 s; then several short ones): the source pauses at
/// once, the rest is sent as stop-and-copy within a few seconds, the guest
/// runs on at its destination (QEMU leaves a guest that was paused at its
/// source paused there: the backend `cont`s it), and the downtime recorded
/// covers the whole pause, from the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_to_offline_mid_flight() {
    let turn = Turn::take(&SERIAL).await;
    let mut lab = lab::lab_or_skip!(DIRTYING);
    let (vm, inv, samples) = watched_dirtying_vm(&mut lab, "busy", DIRTY_RATE, WORKING_SET_MIB).await;
    let switched_at = Arc::default();
    let script = offline_after(capped(), Duration::from_secs(7), Arc::clone(&switched_at));
    let out = run_with_controller(inv, |_| script, std::future::pending())
        .await
        .unwrap();
    let returned = Instant::now();
    let record = out.result.vms[0].clone();
    eprintln!("{record:?}");
    assert_eq!(record.outcome, Outcome::Migrated, "{}", out.result.to_json());
    let switched = switched_at.lock().unwrap().expect("the script never switched");
    let samples = samples.lock().unwrap().clone();
    assert!(!samples.is_empty());
    let since = |s: &Sample| s.at.saturating_duration_since(switched).as_secs_f64();

    // Before the switch: precopy went through several rounds with the
    // guest running, and had not converged.
    let last_before = last_running_before(&samples, switched);
    assert!(
        last_before.syncs >= 3,
        "only {} rounds before the switch",
        last_before.syncs
    );
    assert!(last_before.transferred > MIB << 20, "{last_before:?}");

    // The source paused soon after the switch.
    let paused = samples
        .iter()
        .find(|s| s.at >= switched && s.status != RunState::Running)
        .expect("the source never paused");
    // ...and never ran again.
    let ran_again = samples
        .iter()
        .find(|s| s.at > paused.at && s.status == RunState::Running);
    assert!(ran_again.is_none(), "the source ran again: {ran_again:?}");
    // The migration completed a few seconds after the switch.
    let completed = samples
        .iter()
        .find(|s| s.migration == Some(MigrationStatus::Completed))
        .map(|s| s.at)
        // The source may quit before the watcher sees `completed`.
        .unwrap_or_else(|| samples.last().unwrap().at);
    eprintln!(
        "switch after {:.2} s of run ({} rounds, {} MiB sent); paused {:.3} s after the switch \
         ({:?}); completed {:.2} s after it; run returned {:.2} s after it; downtime {:?} s; \
         {} MiB sent in all",
        switched.duration_since(turn.t0).as_secs_f64(),
        last_before.syncs,
        last_before.transferred >> 20,
        since(paused),
        paused.status,
        since(&Sample {
            at: completed,
            ..paused.clone()
        }),
        returned.duration_since(switched).as_secs_f64(),
        record.downtime_s,
        record.bytes_sent.unwrap() >> 20,
    );
    assert!(
        since(paused) < 0.75,
        "paused {:.3} s after the switch",
        since(paused)
    );
    let to_completion = completed.duration_since(switched).as_secs_f64();
    assert!(
        to_completion < 4.0,
        "completed {to_completion:.2} s after the switch"
    );

    // The guest runs at its destination.
    let _dst = at_destination(&mut lab, &vm, &out.placements[0]).await;

    // The downtime recorded covers the pause: from the switch (less the
    // time the stop took to arrive) to completion at least.
    let downtime = record.downtime_s.expect("no downtime recorded");
    let pause = completed.duration_since(paused.at).as_secs_f64();
    assert!(
        downtime >= pause - 0.1,
        "downtime {downtime:.3} s, but the source was paused {pause:.3} s before completing"
    );
    assert!(downtime < returned.duration_since(switched).as_secs_f64() + 0.1);
}

/// A guest dirtying as fast as it can (400 MB/s asked for: more than it
/// manages) over 64 MiB, sent at 800 Mbps (100 MB/s), does not converge
/// (see the next test); with auto-converge QEMU throttles its vCPU, 10
/// points more every couple of seconds, until it does. (The guest catches
/// up on up to 100 ms of missed writes, so a throttle only lowers its rate
/// once the vCPU time left cannot keep up: with the 60 MB/s, 16 MiB,
/// 200 Mbps guest of `switch_to_offline_mid_flight`, QEMU does not reach
/// the 90 % and more that takes within 25 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_converge_throttles_a_guest_into_converging() {
    let _turn = Turn::take(&SERIAL).await;
    let mut lab = lab::lab_or_skip!(DIRTYING);
    let (vm, inv, samples) = ac_guest(&mut lab, "throttled").await;
    // Set through the Start action's parameters.
    let script = Script::start(ac_params(true, BitsPerSec::mbps(800.0)));
    let started = Instant::now();
    let out = run_with_controller(
        inv,
        |_| script,
        tokio::time::sleep(WITHOUT_DEADLINE + Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    let record = out.result.vms[0].clone();
    let samples = samples.lock().unwrap().clone();
    let throttle = samples.iter().map(|s| s.throttle).max().unwrap_or(0);
    let steps: Vec<(f64, u64)> = samples
        .windows(2)
        .filter(|w| w[1].throttle != w[0].throttle)
        .map(|w| (w[1].at.duration_since(started).as_secs_f64(), w[1].throttle))
        .collect();
    eprintln!("auto-converge: {record:?} in {took:?}; cpu-throttle-percentage steps {steps:?}");
    assert_eq!(record.outcome, Outcome::Migrated, "{}", out.result.to_json());
    assert!(took < WITHOUT_DEADLINE, "took {took:?}");
    assert!(throttle >= 20, "QEMU never throttled: {throttle}%");
    assert!(record.rounds.unwrap() >= 3, "{record:?}");
    let _dst = at_destination(&mut lab, &vm, &out.placements[0]).await;
}

/// When the run stops the same guest without auto-converge: later than
/// `auto_converge_throttles_a_guest_into_converging` completes (17-19 s
/// here), with room for a slower or busier machine.
const WITHOUT_DEADLINE: Duration = Duration::from_secs(30);

/// The guest of `auto_converge_throttles_a_guest_into_converging`, without
/// auto-converge: never throttled, still migrating when the run is stopped
/// after [`WITHOUT_DEADLINE`]; the run cancels it then and the guest runs on
/// at its source.
///
/// Sent at half that test's rate (400 Mbps, 50 MB/s): precopy converges
/// once a round's dirty bytes fit in 300 ms at the link's rate (15 MB),
/// and a round of the 64 MiB working set takes 1.3 s, so the guest must
/// dirty more than about 11 MB/s to prevent it. At 800 Mbps it needed
/// about 100 MB/s, which the guest did not reach on a loaded machine
/// (QEMU measured 104 MB/s there and the migration converged in 4 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_converge_the_same_guest_does_not_converge() {
    let _turn = Turn::take(&SERIAL).await;
    let mut lab = lab::lab_or_skip!(DIRTYING);
    let (vm, inv, samples) = ac_guest(&mut lab, "unthrottled").await;
    let params = ac_params(false, BitsPerSec::mbps(400.0));
    let out = run_with_controller(
        inv,
        |_| Script::start(params),
        tokio::time::sleep(WITHOUT_DEADLINE),
    )
    .await
    .unwrap();
    // The watcher's last sample may be 20 ms old.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let record = out.result.vms[0].clone();
    let samples = samples.lock().unwrap().clone();
    let last = samples.last().expect("no samples").clone();
    let throttle = samples.iter().map(|s| s.throttle).max().unwrap_or(0);
    let syncs = samples.iter().map(|s| s.syncs).max().unwrap_or(0);
    let rate = samples.iter().map(|s| s.dirty_rate).max().unwrap_or(0);
    eprintln!(
        "without, stopped after {WITHOUT_DEADLINE:?}: {record:?}; {syncs} rounds, highest \
         dirty-pages-rate {rate} pages/s, highest throttle {throttle}; last sample {last:?}"
    );
    // Stopped, not lost: it still runs on its source.
    assert_eq!(record.outcome, Outcome::NotMigrated, "{}", out.result.to_json());
    assert_eq!(record.reason.as_deref(), Some("interrupted"));
    assert_eq!(out.placements[0], Placement::Source);
    // What it sent before being cancelled counts.
    assert!(record.bytes_sent.unwrap() > 4 * (MIB << 20), "{record:?}");
    assert_eq!(throttle, 0);
    assert!(syncs >= 8, "only {syncs} rounds");
    assert_eq!(last.status, RunState::Running, "{last:?}");
    assert!(
        matches!(
            last.migration,
            Some(MigrationStatus::Cancelled | MigrationStatus::Failed)
        ),
        "{last:?}"
    );
    assert!(!lab.exited(vm.pid));
}

/// An idle VM moved over four multifd channels: `multifd` is on at both
/// ends, the source used 4 channels, the VM runs at its destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multifd_channels_carry_a_migration() {
    let _turn = Turn::take(&SERIAL).await;
    let mut lab = lab::lab_or_skip!(IDLE);
    let vm = lab.start_vm("vm-1", MIB).unwrap();
    let vms = vec![vm.clone()];
    let monitor = monitor(&vm).await;
    let inv = inventory(&lab, &vms, "multifd_channels = 4\nmax_bandwidth = \"800 Mbps\"");
    assert_eq!(inv.migration.params.connections.get(), 4);
    let run = tokio::spawn(run_with_controller(
        inv,
        |_| {
            Script::start(MigrationParams {
                connections: evac_model::Connections::new(4).unwrap(),
                max_bandwidth: Some(BitsPerSec::mbps(800.0)),
                ..Default::default()
            })
        },
        std::future::pending(),
    ));
    // While it migrates: the source's capability and parameter.
    let mut seen_active = false;
    while !run.is_finished() {
        let Ok(info) = monitor.query_migrate().await else {
            break;
        };
        if info.status == Some(MigrationStatus::Active) && !seen_active {
            let Ok(caps) = monitor.execute("query-migrate-capabilities", None).await else {
                break;
            };
            let Ok(params) = monitor.execute("query-migrate-parameters", None).await else {
                break;
            };
            assert_eq!(
                capability(&caps, "multifd"),
                Some(true),
                "source capabilities {caps}"
            );
            assert_eq!(params["multifd-channels"], 4, "source parameters {params}");
            seen_active = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = run.await.unwrap().unwrap();
    let record = out.result.vms[0].clone();
    eprintln!("{record:?}");
    assert!(seen_active, "never saw the migration active");
    assert_eq!(record.outcome, Outcome::Migrated, "{}", out.result.to_json());
    assert!(record.bytes_sent.unwrap() >= MIB << 20, "{record:?}");
    let dst = at_destination(&mut lab, &vm, &out.placements[0]).await;
    let caps = dst.execute("query-migrate-capabilities", None).await.unwrap();
    assert_eq!(
        capability(&caps, "multifd"),
        Some(true),
        "destination capabilities {caps}"
    );
    let params = dst.execute("query-migrate-parameters", None).await.unwrap();
    assert_eq!(params["multifd-channels"], 4, "destination parameters {params}");
}
