//! End-to-end migrations between real QEMU processes over loopback.
//! Skipped, with the reason printed, where qemu-system-x86_64 is missing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evac_controller::{Action, PolicyKind, Retune};
use evac_lab::{self as lab, Lab, LabVm};
use evac_model::{BitsPerSec, MigrationParams};
use evac_qemu::{run_detailed, run_with_controller, Inventory, Placement, RunOutput};
use evac_report::Outcome;

mod common;
use common::{at_destination, first_destination_once_sent, monitor, quick_inventory, Script};

/// What these tests need.
const NEEDS: &[lab::Prerequisite] = &[lab::qemu_available];

fn inventory(lab: &Lab, policy: &str, vms: &[LabVm], extra: &str) -> Inventory {
    lab.parsed_inventory(policy, vms, extra)
}

/// One 64 MiB VM `vm-1` in `lab`, the inventory moving it sequentially with
/// these `[migration]` lines, and a monitor of its source QEMU: what the
/// tests that watch one migration from its source start with.
async fn one_watched_vm(lab: &mut Lab, migration: &str) -> (Vec<LabVm>, Inventory, evac_qmp::Qmp) {
    let vms = vec![lab.start_vm("vm-1", 64).unwrap()];
    let inv = inventory(lab, "sequential", &vms, migration);
    let monitor = monitor(&vms[0]).await;
    (vms, inv, monitor)
}

/// Every VM runs at its destination, its source is gone, the record is sane.
async fn check_migrated(lab: &mut Lab, vms: &[LabVm], out: &RunOutput) {
    let result = &out.result;
    assert_eq!(result.migrated, vms.len(), "{}", result.to_json());
    assert!(!result.timeline.is_empty());
    for (vm, (record, placement)) in vms.iter().zip(result.vms.iter().zip(&out.placements)) {
        assert_eq!(record.outcome, Outcome::Migrated);
        let (start, end) = (record.start_s.unwrap(), record.end_s.unwrap());
        assert!(end > start, "{record:?}");
        assert!(record.bytes_sent.unwrap() >= vm.mib << 20, "{record:?}");
        assert!(
            record.downtime_s.is_some() && record.rounds.unwrap() >= 1,
            "{record:?}"
        );
        // Running there, and the source QEMU quit after completion.
        at_destination(lab, vm, placement).await;
    }
}

async fn two_vms(policy: PolicyKind) {
    let mut lab = lab::lab_or_skip!(NEEDS);
    let vms = vec![
        lab.start_vm("vm-1", 64).unwrap(),
        lab.start_vm("vm-2", 96).unwrap(),
    ];
    let inv = inventory(&lab, "sequential", &vms, "");
    let out = run_detailed(inv, Some(policy), std::future::pending())
        .await
        .unwrap();
    assert_eq!(out.result.policy, policy.as_str());
    check_migrated(&mut lab, &vms, &out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vms_sequential() {
    two_vms(PolicyKind::Sequential).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vms_aimd_global() {
    two_vms(PolicyKind::AimdGlobal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_keeps_the_guest_paused_during_the_transfer() {
    let mut lab = lab::lab_or_skip!(NEEDS);
    let (vms, inv, monitor) =
        one_watched_vm(&mut lab, "mode = \"offline\"\nmax_bandwidth = \"200 Mbps\"").await;
    assert!(monitor.query_status().await.unwrap().running);
    let run = tokio::spawn(run_detailed(inv, None, std::future::pending()));
    let mut seen_migrating = 0;
    while !run.is_finished() {
        let Ok(info) = monitor.query_migrate().await else {
            break;
        };
        if info.status == Some(evac_qmp::MigrationStatus::Active) {
            seen_migrating += 1;
            match monitor.query_status().await {
                Ok(status) => assert!(
                    !status.running,
                    "guest running during an offline migration: {status:?}"
                ),
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = run.await.unwrap().unwrap();
    assert!(
        seen_migrating >= 3,
        "the migration was too quick to watch ({seen_migrating} samples)"
    );
    check_migrated(&mut lab, &vms, &out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_destination_is_retried_on_a_fresh_one() {
    let mut lab = lab::lab_or_skip!(NEEDS);
    let (vms, inv, monitor) = one_watched_vm(&mut lab, "max_bandwidth = \"150 Mbps\"").await;
    let run = tokio::spawn(run_detailed(inv, None, std::future::pending()));
    // Wait until the first attempt is sending, then kill its destination.
    // 20 MiB at 150 Mbps is over a second: the run has polled this
    // attempt's progress at least once (every 500 ms) before the kill.
    let pid = first_destination_once_sent(&mut lab, &monitor, 20 << 20, Duration::from_secs(20)).await;
    // SAFETY: kill(2) of the destination QEMU the run started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    // The guest keeps running on the source meanwhile.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = monitor.query_migrate().await.unwrap();
        if info.status == Some(evac_qmp::MigrationStatus::Failed) {
            break;
        }
        assert!(Instant::now() < deadline, "the source never noticed: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(monitor.query_status().await.unwrap().running);
    let out = run.await.unwrap().unwrap();
    check_migrated(&mut lab, &vms, &out).await;
    let Placement::Destination { qmp, .. } = &out.placements[0] else {
        unreachable!()
    };
    assert!(qmp.ends_with("dst-vm-1-2.qmp"), "{qmp:?}");
    // The failed attempt's bytes count too.
    assert!(out.result.vms[0].bytes_sent.unwrap() > 68 << 20);
    // And it is in the result, with why it failed.
    let failed = &out.result.failed_attempts;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].vm, "vm-1");
    assert_eq!(failed[0].destination.as_deref(), Some("dst"));
    assert!(failed[0].end_s > failed[0].start_s, "{failed:?}");
    assert!(
        failed[0].end_s <= out.result.vms[0].start_s.unwrap(),
        "{failed:?}"
    );
}

/// When, bytes sent, QEMU's rate, whether the cap was lifted yet.
type Sample = (Duration, u64, f64, bool);

/// Starts VM 0 capped at 50 Mbps, lifts the cap after 2 s, and records
/// what it observes in `log`.
fn lift_cap_after_2s(log: Arc<Mutex<Vec<Sample>>>) -> Script {
    let capped = MigrationParams {
        max_bandwidth: Some(BitsPerSec::mbps(50.0)),
        ..Default::default()
    };
    let mut retuned_at = None;
    Script::then(capped, move |obs, m| {
        log.lock()
            .unwrap()
            .push((obs.now, m.bytes_sent.0, m.rate.0, retuned_at.is_some()));
        if retuned_at.is_none() && obs.now.saturating_sub(m.started_at) >= Duration::from_secs(2) {
            retuned_at = Some(obs.now);
            return vec![Action::Retune {
                vm: m.vm,
                change: Retune::MaxBandwidth(Some(BitsPerSec::gbps(10.0))),
            }];
        }
        Vec::new()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retune_mid_flight_changes_the_rate() {
    let mut lab = lab::lab_or_skip!(NEEDS);
    let vms = vec![lab.start_vm("vm-1", 128).unwrap()];
    let inv = quick_inventory(&lab, "sequential", &vms, "");
    let log = Arc::new(Mutex::new(Vec::new()));
    let scripted = lift_cap_after_2s(Arc::clone(&log));
    let out = run_with_controller(inv, |_| scripted, std::future::pending())
        .await
        .unwrap();
    check_migrated(&mut lab, &vms, &out).await;
    let log = log.lock().unwrap().clone();
    // Throughput from bytes_sent: capped vs uncapped.
    let before: Vec<_> = log.iter().filter(|s| !s.3 && s.1 > 0).collect();
    // (The uncapped rest may finish before the next observation.)
    assert!(before.len() >= 2, "{log:?}");
    let rate = |a: &Sample, b: &Sample| (b.1 - a.1) as f64 * 8.0 / (b.0 - a.0).as_secs_f64();
    let capped = rate(before[0], before[before.len() - 1]);
    let record = &out.result.vms[0];
    // After the retune: the rest of the memory in the rest of the time.
    let last_capped = before[before.len() - 1];
    let uncapped = (record.bytes_sent.unwrap() - last_capped.1) as f64 * 8.0
        / (record.end_s.unwrap() - last_capped.0.as_secs_f64());
    eprintln!(
        "capped {:.0} Mbps, uncapped {:.0} Mbps",
        capped / 1e6,
        uncapped / 1e6
    );
    assert!(capped < 80e6, "capped at {capped}");
    assert!(
        uncapped > 4.0 * capped,
        "capped {capped}, uncapped {uncapped}; {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_and_leaves_the_vm_on_its_source() {
    let mut lab = lab::lab_or_skip!(NEEDS);
    let (vms, inv, monitor) = one_watched_vm(&mut lab, "max_bandwidth = \"50 Mbps\"").await;
    // Shut down once the migration is under way.
    let watch = monitor.clone();
    let under_way = async move {
        loop {
            if let Ok(info) = watch.query_migrate().await {
                if info.ram.is_some_and(|r| r.transferred > 1 << 20) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let out = run_detailed(inv, None, under_way).await.unwrap();
    assert_eq!(out.result.migrated, 0);
    assert_eq!(out.placements[0], Placement::Source);
    assert!(out.result.vms[0].bytes_sent.unwrap() > 0);
    assert_eq!(
        monitor.query_migrate().await.unwrap().status,
        Some(evac_qmp::MigrationStatus::Cancelled)
    );
    assert!(monitor.query_status().await.unwrap().running);
    assert!(
        lab::find_pid(lab.dir.join("dst-vm-1-1.qmp").to_str().unwrap()).is_none(),
        "the destination still runs"
    );
    assert!(!lab.exited(vms[0].pid));
}

/// `run_with_options` publishes a snapshot every period: migrations in
/// flight with their bytes and rate, then a last one with the result's counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_published_every_period() {
    use evac_qemu::{run_with_options, RunOptions, RunProgress};
    let mut lab = lab::lab_or_skip!(NEEDS);
    let vms = vec![
        lab.start_vm("vm-1", 64).unwrap(),
        lab.start_vm("vm-2", 64).unwrap(),
    ];
    // 200 Mbps: each VM takes about 3 s, several periods of 500 ms.
    let inv = inventory(&lab, "sequential", &vms, "max_bandwidth = \"200 Mbps\"");
    let (tx, mut rx) = tokio::sync::watch::channel(RunProgress::default());
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        while rx.changed().await.is_ok() {
            seen.push(rx.borrow_and_update().clone());
        }
        seen
    });
    let (log, lines) = evac_run::log_kept();
    let options = RunOptions {
        progress: Some(tx),
        log: Some(log),
        ..RunOptions::default()
    };
    let out = run_with_options(inv, options, std::future::pending())
        .await
        .unwrap();
    check_migrated(&mut lab, &vms, &out).await;
    // The run dropped the sender: the collector ends with the last snapshot.
    let seen = tokio::time::timeout(Duration::from_secs(5), collector)
        .await
        .unwrap()
        .unwrap();
    let last = seen.last().expect("snapshots were published");
    assert!(last.finished && !last.stopping, "{last:?}");
    assert_eq!((last.total, last.migrated, last.lost), (2, 2, 0), "{last:?}");
    assert!(last.migrations.is_empty() && last.in_flight == 0, "{last:?}");
    assert!(seen.len() >= 4, "only {} snapshots", seen.len());
    assert!(seen.windows(2).all(|w| w[0].elapsed <= w[1].elapsed));
    for p in &seen {
        assert_eq!(p.total, 2);
        assert_eq!(p.in_flight, p.migrations.len(), "{p:?}");
        if !p.finished {
            assert_eq!(p.migrated + p.lost + p.in_flight + p.waiting, 2, "{p:?}");
            // Sequential: one at a time.
            assert!(p.in_flight <= 1, "{p:?}");
        }
    }
    // Some snapshot caught a migration moving, at a rate, and the WAN busy.
    let moving = seen
        .iter()
        .flat_map(|p| &p.migrations)
        .find(|m| m.bytes_sent.0 > 0 && m.rate.0 > 0.0)
        .expect("a migration seen moving");
    assert_eq!(moving.destination, "dst");
    assert_eq!(moving.memory.0, 64 << 20);
    assert!(moving.attempt == 1 && moving.round >= 1, "{moving:?}");
    assert!(seen.iter().any(|p| p.wan_throughput.0 > 0.0));
    assert!(seen.iter().any(|p| p.migrated == 1 && !p.finished));
    // Nothing went wrong, so nothing was logged.
    assert!(lines.lock().unwrap().is_empty(), "{:?}", lines.lock().unwrap());
}
