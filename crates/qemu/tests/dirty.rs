//! Migrations of lab VMs whose guest dirties memory
//! ([`evac_lab::Lab::start_dirtying_vm_in`]): precopy goes through several
//! rounds, and a guest dirtying faster than the link does not converge.
//! Skipped, with the reason printed, where qemu-system-x86_64 or the guest
//! (GNU binutils at build time) is missing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evac_lab::{self as lab, Lab, LabVm};
use evac_model::BytesPerSec;
use evac_qemu::{run_detailed, Inventory, Placement, RunOutput};
use evac_qmp::{MigrationStatus, Qmp, RunState};
use evac_report::Outcome;
use serde_json::json;

mod common;
use common::Turn;

/// The tests here each migrate a dirtying guest as fast as the cap allows:
/// one at a time, so they do not take each other's CPU.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What these tests need.
const NEEDS: &[lab::Prerequisite] = &[lab::qemu_available, lab::dirty_guest_available];

fn inventory(lab: &Lab, vms: &[LabVm], extra: &str) -> Inventory {
    lab.parsed_inventory("sequential", vms, extra)
}

/// What a second QMP client saw of a source's migration.
#[derive(Debug, Default, Clone)]
struct Watched {
    /// The highest `dirty-sync-count`.
    syncs: u64,
    /// Every non-zero `dirty-pages-rate` (pages per second).
    dirty_pages_rates: Vec<u64>,
    /// The last `transferred`.
    transferred: u64,
    /// (`dirty-sync-count`, `remaining`) when a new count was first seen:
    /// about the dirty bytes a round started with.
    round_starts: Vec<(u64, u64)>,
    status: Option<MigrationStatus>,
    /// Whether the guest ran at the last sample (`query-status`).
    running: bool,
}

/// Polls the source's `query-migrate` and `query-status` on its monitor
/// socket every 100 ms until the source goes away (it quits after
/// completing). It holds that socket meanwhile: QEMU serves one client per
/// socket.
fn watch(vm: &LabVm) -> Arc<Mutex<Watched>> {
    let seen = Arc::new(Mutex::new(Watched::default()));
    let monitor = vm.monitor.clone();
    let out = seen.clone();
    tokio::spawn(async move {
        let Ok(qmp) = Qmp::connect_retry(monitor.to_str().unwrap(), Duration::from_secs(5)).await else {
            return;
        };
        while let Ok(info) = qmp.query_migrate().await {
            let Ok(status) = qmp.query_status().await else {
                break;
            };
            {
                let mut w = out.lock().unwrap();
                w.running = status.running;
                w.status = info.status;
                if let Some(ram) = info.ram {
                    if ram.dirty_sync_count > w.syncs {
                        w.round_starts.push((ram.dirty_sync_count, ram.remaining));
                    }
                    w.syncs = w.syncs.max(ram.dirty_sync_count);
                    w.transferred = w.transferred.max(ram.transferred);
                    if ram.dirty_pages_rate > 0 {
                        w.dirty_pages_rates.push(ram.dirty_pages_rate);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    seen
}

/// The destination QMP of a VM that migrated.
fn destination(lab: &mut Lab, out: &RunOutput, i: usize) -> String {
    let Placement::Destination { qmp, pid, .. } = &out.placements[i] else {
        panic!("VM {i} is not at a destination: {:?}", out.placements[i])
    };
    lab.adopt(*pid);
    qmp.to_str().unwrap().to_owned()
}

/// QEMU's estimate (`calc-dirty-rate`, page sampling: works under KVM and
/// TCG) of how many MiB per second the guest behind `qmp` dirties.
async fn sampled_dirty_rate(qmp: &Qmp) -> u64 {
    qmp.execute(
        "calc-dirty-rate",
        Some(json!({"calc-time": 1, "sample-pages": 4096, "mode": "page-sampling"})),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let info = qmp.execute("query-dirty-rate", None).await.unwrap();
        if info["status"] == "measured" {
            return info["dirty-rate"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "no dirty rate measured: {info}");
    }
}

/// A 128 MiB guest dirtying 20 MB/s over 32 MiB, migrated at 200 Mbps
/// (25 MB/s), needs several precopy rounds and sends much more than its
/// memory; an idle one sends its memory about once. Both complete, and the
/// dirtying guest keeps dirtying at its destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dirtying_guest_takes_several_rounds() {
    let _turn = Turn::take(&SERIAL).await;
    let mut lab = lab::lab_or_skip!(NEEDS);
    const RATE: BytesPerSec = BytesPerSec(20e6);
    const MIB: u64 = 128;
    let vms = vec![
        lab.start_dirtying_vm_in("busy", MIB, RATE, 32, None).unwrap(),
        lab.start_vm("idle", MIB).unwrap(),
    ];
    let watched: Vec<_> = vms.iter().map(watch).collect();
    let inv = inventory(&lab, &vms, "max_bandwidth = \"200 Mbps\"");
    let out = run_detailed(inv, None, std::future::pending()).await.unwrap();
    let result = &out.result;
    eprintln!("{}", result.to_json());
    assert_eq!(result.migrated, 2, "{}", result.to_json());
    let memory = MIB << 20;
    let (busy, idle) = (&result.vms[0], &result.vms[1]);
    assert_eq!(
        (busy.outcome, idle.outcome),
        (Outcome::Migrated, Outcome::Migrated)
    );
    let (busy_watch, idle_watch) = (
        watched[0].lock().unwrap().clone(),
        watched[1].lock().unwrap().clone(),
    );
    eprintln!("busy: {busy:?}\n  watched {busy_watch:?}");
    eprintln!("idle: {idle:?}\n  watched {idle_watch:?}");

    // The dirtying guest: several rounds, much more than its memory sent.
    let (busy_rounds, busy_bytes) = (busy.rounds.unwrap(), busy.bytes_sent.unwrap());
    assert!(busy_watch.syncs >= 4, "{busy_watch:?}");
    assert!(busy_rounds >= 3, "{busy:?}");
    assert!(busy_bytes > memory * 13 / 10, "{busy:?}");
    // QEMU's measured dirty rate is about the one asked for. (Early
    // samples are low: pages still unsent from the first round do not count
    // as newly dirtied, so take the highest.)
    let asked = RATE.0 / 4096.0;
    let measured = *busy_watch
        .dirty_pages_rates
        .iter()
        .max()
        .expect("no dirty-pages-rate") as f64;
    eprintln!(
        "dirty-pages-rate: asked {asked:.0} pages/s, measured {measured:.0} (all: {:?})",
        busy_watch.dirty_pages_rates
    );
    assert!(
        measured > asked * 0.7 && measured < asked * 1.3,
        "asked {asked:.0} pages/s, QEMU measured {measured:.0}"
    );

    // The idle guest: its memory about once, few rounds.
    let (idle_rounds, idle_bytes) = (idle.rounds.unwrap(), idle.bytes_sent.unwrap());
    assert!(idle_bytes >= memory && idle_bytes < memory * 11 / 10, "{idle:?}");
    assert!(idle_rounds < busy_rounds, "{idle:?} vs {busy:?}");
    assert!(
        idle_watch.syncs < busy_watch.syncs,
        "{idle_watch:?} vs {busy_watch:?}"
    );
    assert!(
        idle_watch.dirty_pages_rates.iter().all(|&r| r < 200),
        "{idle_watch:?}"
    );

    // Both run at their destination; the dirtying guest still dirties there.
    for (i, vm) in vms.iter().enumerate() {
        let qmp = Qmp::connect(&destination(&mut lab, &out, i)).await.unwrap();
        assert_eq!(qmp.query_status().await.unwrap().status, RunState::Running);
        let rate = sampled_dirty_rate(&qmp).await;
        eprintln!(
            "{} at its destination: dirty-rate {rate} MiB/s (page sampling)",
            vm.name
        );
        if i == 0 {
            assert!(
                rate >= 4,
                "the guest stopped dirtying at its destination: {rate} MiB/s"
            );
        } else {
            assert!(rate <= 1, "the idle guest dirties {rate} MiB/s");
        }
    }
}

/// With the default 300 ms downtime limit and a 200 Mbps (25 MB/s) cap, a
/// guest dirtying 2 MB/s over 64 MiB converges in a few rounds; one
/// dirtying 80 MB/s over 16 MiB has not completed after 12 s, after more
/// rounds and more bytes, each round starting with about its whole working
/// set dirty again; it keeps running on its source once the run is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_dirtying_faster_than_the_link_does_not_converge() {
    let _turn = Turn::take(&SERIAL).await;
    let mut lab = lab::lab_or_skip!(NEEDS);
    const MIB: u64 = 128;
    let memory = MIB << 20;
    let extra = "max_bandwidth = \"200 Mbps\"";

    // A slow dirtier converges.
    let slow = lab
        .start_dirtying_vm_in("slow", MIB, BytesPerSec(2e6), 64, None)
        .unwrap();
    let slow_watch = watch(&slow);
    let started = Instant::now();
    let out = run_detailed(
        inventory(&lab, std::slice::from_ref(&slow), extra),
        None,
        std::future::pending(),
    )
    .await
    .unwrap();
    let slow_time = started.elapsed();
    let slow_record = out.result.vms[0].clone();
    let slow_watch = slow_watch.lock().unwrap().clone();
    eprintln!("slow: {slow_record:?} in {slow_time:?}\n  watched {slow_watch:?}");
    assert_eq!(slow_record.outcome, Outcome::Migrated);
    let qmp = Qmp::connect(&destination(&mut lab, &out, 0)).await.unwrap();
    assert_eq!(qmp.query_status().await.unwrap().status, RunState::Running);
    drop(qmp);
    let (slow_rounds, slow_bytes) = (slow_record.rounds.unwrap(), slow_record.bytes_sent.unwrap());

    // A fast one does not, within 12 s: stop the run then.
    let fast = lab
        .start_dirtying_vm_in("fast", MIB, BytesPerSec(80e6), 16, None)
        .unwrap();
    let fast_watch = watch(&fast);
    let out = run_detailed(
        inventory(&lab, std::slice::from_ref(&fast), extra),
        None,
        tokio::time::sleep(Duration::from_secs(12)),
    )
    .await
    .unwrap();
    let fast_record = out.result.vms[0].clone();
    // Its watcher's last sample may be up to 100 ms old.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fast_watch = fast_watch.lock().unwrap().clone();
    eprintln!("fast: {fast_record:?}\n  watched {fast_watch:?}");
    // Stopped, not lost: it still runs on its source.
    assert_eq!(fast_record.outcome, Outcome::NotMigrated, "{fast_record:?}");
    assert_eq!(fast_record.reason.as_deref(), Some("interrupted"));
    assert_eq!(out.result.migrated, 0);
    // More rounds than the slow one needed in all.
    assert!(
        fast_watch.syncs > slow_rounds as u64 + 2,
        "fast {fast_watch:?} vs slow {slow_record:?}"
    );
    // More bytes: well over its memory, more than the slow one in all.
    assert!(
        fast_watch.transferred > memory * 3 / 2 && fast_watch.transferred > slow_bytes,
        "fast {fast_watch:?} vs slow {slow_record:?}"
    );
    // Rounds after the first start with most of the working set dirty
    // (stop-and-copy needs at most 300 ms x 25 MB/s = 7.5 MB left).
    let later: Vec<u64> = fast_watch.round_starts.iter().skip(1).map(|&(_, r)| r).collect();
    assert!(later.len() >= 3, "{fast_watch:?}");
    assert!(later.iter().all(|&r| r > 8 << 20), "{fast_watch:?}");
    let fastest = fast_watch.dirty_pages_rates.iter().copied().max().unwrap_or(0);
    let slowest = slow_watch.dirty_pages_rates.iter().copied().max().unwrap_or(0);
    assert!(
        fastest > 2 * slowest,
        "fast {fast_watch:?} vs slow {slow_watch:?}"
    );
    // The run cancelled it: the guest runs on at its source (the watcher
    // holds the source's monitor socket: ask it).
    assert!(fast_watch.running, "{fast_watch:?}");
    assert!(
        matches!(
            fast_watch.status,
            Some(MigrationStatus::Cancelled | MigrationStatus::Failed)
        ),
        "{fast_watch:?}"
    );
}
