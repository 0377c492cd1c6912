//! Postcopy on real QEMU: a guest whose precopy cannot converge is moved by
//! switching to postcopy; and a guest with file-backed shared RAM is never
//! moved by postcopy. Skipped, with the reason printed, where
//! qemu-system-x86_64 or the dirtying guest is missing (fails instead under
//! `EVAC_REQUIRE_LAB=1`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evac_controller::Action;
use evac_lab::{self as lab, Guest, Lab, LabVm};
use evac_model::{BitsPerSec, BytesPerSec, MigrationParams, Mode};
use evac_qemu::{run_with_controller, Inventory, Placement, RunOutput};
use evac_qmp::{MigrationStatus, Qmp, RunState};
use evac_report::Outcome;

mod common;
use common::{at_destination, last_running_before, monitor, quick_inventory, watch, Script, Turn};

/// Each test keeps a core busy with a spinning guest: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The guest: 128 MiB of anonymous RAM, every page marked at boot, then
/// dirtying 60 MB/s over 16 MiB, sent at 400 Mbps (50 MB/s). Its working
/// set wraps every 0.28 s, a pass over it takes 0.34 s: every precopy round
/// after the first re-sends about all 16 MiB, far above what a 1 ms
/// downtime limit lets stop-and-copy send (50 kB).
const MIB: u64 = 128;
const DIRTY_RATE: BytesPerSec = BytesPerSec(60e6);
const WORKING_SET_MIB: u64 = 16;
/// Precopy rounds (QEMU's dirty-bitmap syncs) seen before the switch.
const ROUNDS_BEFORE_SWITCH: u32 = 5;

fn inventory(lab: &Lab, vms: &[LabVm]) -> Inventory {
    quick_inventory(lab, "sequential", vms, "")
}

/// Reads the guest-physical dword at `addr` through HMP's `xp`.
async fn peek(qmp: &Qmp, addr: u64) -> u32 {
    let reply = qmp
        .execute(
            "human-monitor-command",
            Some(serde_json::json!({ "command-line": format!("xp /1wx {addr:#x}") })),
        )
        .await
        .unwrap();
    // "0000000007fff000: 0x5a17e5ac\r\n"
    let text = reply.as_str().unwrap_or_default();
    let word = text.rsplit("0x").next().map(|w| w.trim()).unwrap_or_default();
    u32::from_str_radix(word, 16).unwrap_or_else(|_| panic!("cannot read `xp` reply {text:?}"))
}

/// Starts VM 0 to host 1 with `params`; once QEMU has done `after`
/// rounds, asks for postcopy, noting in `switched` when and at which round.
fn postcopy_after(
    params: MigrationParams,
    after: u32,
    switched: Arc<Mutex<Option<(Instant, u32)>>>,
) -> Script {
    Script::then(params, move |_, m| {
        let mut switched = switched.lock().unwrap();
        if switched.is_none() && m.round >= after {
            *switched = Some((Instant::now(), m.round));
            return vec![Action::SwitchToPostcopy { vm: m.vm }];
        }
        Vec::new()
    })
}

/// A guest precopy cannot move with a 1 ms downtime limit (rounds go on,
/// each re-sending its working set) is switched to postcopy after
/// [`ROUNDS_BEFORE_SWITCH`] rounds: QEMU goes `postcopy-active`, the
/// migration completes, the guest runs at its destination with the memory
/// it filled at boot and keeps dirtying there; the bytes and rounds
/// recorded are QEMU's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postcopy_moves_a_guest_precopy_cannot() {
    let turn = Turn::take(&SERIAL).await;
    let mut lab = lab::lab_or_skip!(&[lab::qemu_available, lab::dirty_guest_available]);
    let region = lab::DirtyRegion {
        rate: DIRTY_RATE,
        mib: WORKING_SET_MIB,
    };
    let vm = lab
        .start_guest("filled", MIB, Guest::FilledDirtying(&[region]), None)
        .unwrap();
    let monitor = monitor(&vm).await;
    // The fill runs upward: its last page marked means it is done.
    let top = (MIB << 20) - 4096;
    let deadline = Instant::now() + Duration::from_secs(30);
    while peek(&monitor, top).await != lab::DIRTY_FILL_PATTERN {
        assert!(
            Instant::now() < deadline,
            "the guest did not fill its RAM within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let filled_in = turn.t0.elapsed();
    assert_eq!(
        peek(&monitor, lab::DIRTY_FILL_START).await,
        lab::DIRTY_FILL_PATTERN
    );
    // QEMU's MIGRATION events reach every monitor: postcopy-active is
    // recorded however short the postcopy phase (the 20 ms samples may
    // fall on either side of it).
    let mut events = monitor.events();
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let seen = statuses.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(status) = event.migration_status() {
                        seen.lock().unwrap().push(status);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    });
    let samples = watch(monitor);
    let switched = Arc::default();
    let script = postcopy_after(
        MigrationParams {
            mode: Mode::Live,
            downtime_limit: Duration::from_millis(1),
            max_bandwidth: Some(BitsPerSec::mbps(400.0)),
            allow_postcopy: true,
            ..Default::default()
        },
        ROUNDS_BEFORE_SWITCH,
        Arc::clone(&switched),
    );
    let vms = vec![vm.clone()];
    let out: RunOutput = run_with_controller(
        inventory(&lab, &vms),
        |_| script,
        tokio::time::sleep(Duration::from_secs(90)),
    )
    .await
    .unwrap();
    let record = out.result.vms[0].clone();
    eprintln!("{record:?}");
    assert_eq!(record.outcome, Outcome::Migrated, "{}", out.result.to_json());
    let (switched, round) = switched.lock().unwrap().expect("the script never switched");
    let samples = samples.lock().unwrap().clone();

    // Before the switch: round after round with the guest running, never
    // converging.
    let before: Vec<_> = samples.iter().filter(|s| s.at < switched).collect();
    let last_before = last_running_before(&samples, switched);
    assert!(
        last_before.syncs >= u64::from(ROUNDS_BEFORE_SWITCH) - 1,
        "{last_before:?}"
    );
    assert!(
        before
            .iter()
            .all(|s| s.migration != Some(MigrationStatus::Completed)),
        "precopy completed before the switch"
    );
    // Every marked page (127 MiB from 1 MiB up) went at least once.
    assert!(last_before.transferred > (MIB - 1) << 20, "{last_before:?}");
    // After it: postcopy, as QEMU announced it.
    let statuses = statuses.lock().unwrap().clone();
    let postcopy = statuses.iter().find(|&&s| s == MigrationStatus::PostcopyActive);
    eprintln!(
        "filled in {:.2} s; switch at round {round} after {:.2} s ({} MiB sent, {} syncs); \
         postcopy-active announced: {}; downtime {:?} s; {} MiB in {:?} rounds as QEMU counts",
        filled_in.as_secs_f64(),
        switched.duration_since(turn.t0).as_secs_f64(),
        last_before.transferred >> 20,
        last_before.syncs,
        postcopy.is_some(),
        record.downtime_s,
        record.bytes_sent.unwrap_or(0) >> 20,
        record.rounds,
    );
    assert!(
        postcopy.is_some(),
        "QEMU never announced postcopy-active: {statuses:?}"
    );
    // The record is QEMU's final `query-migrate`: at least what the source
    // had sent before the switch, and no fewer passes.
    assert!(
        record.bytes_sent.unwrap() >= last_before.transferred,
        "{record:?}"
    );
    assert!(
        u64::from(record.rounds.unwrap()) >= last_before.syncs,
        "{record:?}"
    );
    assert!(record.downtime_s.is_some(), "{record:?}");
    // The record says how it moved: switched to postcopy, one connection.
    assert_eq!(record.mode, Some(Mode::Postcopy), "{record:?}");
    assert_eq!(record.connections, Some(1), "{record:?}");

    // The guest runs at its destination, with the memory it filled at its
    // source, and goes on dirtying there.
    let dst = at_destination(&mut lab, &vm, &out.placements[0]).await;
    assert_eq!(peek(&dst, top).await, lab::DIRTY_FILL_PATTERN);
    assert_eq!(peek(&dst, lab::DIRTY_FILL_START).await, lab::DIRTY_FILL_PATTERN);
    // The first page of the working set counts up once per pass (every
    // 0.28 s at the asked rate).
    let first = peek(&dst, lab::DIRTY_WORKING_SET_START).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = peek(&dst, lab::DIRTY_WORKING_SET_START).await;
    assert_ne!(first, second, "the guest does not dirty at its destination");
}

/// A lab VM of the usual kind (RAM a shared file) started in mode postcopy:
/// the attempt fails at once with an error naming the VM and its
/// file-backed RAM, nothing is sent, and the VM runs on at its source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postcopy_is_refused_for_file_backed_ram() {
    let _turn = Turn::take(&SERIAL).await;
    let mut lab = lab::lab_or_skip!(&[lab::qemu_available]);
    let vm = lab.start_vm("filevm", 32).unwrap();
    let script = Script::start(MigrationParams {
        mode: Mode::Postcopy,
        allow_postcopy: true,
        ..Default::default()
    });
    let vms = vec![vm.clone()];
    let out = run_with_controller(
        inventory(&lab, &vms),
        |_| script,
        tokio::time::sleep(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    let record = &out.result.vms[0];
    assert_ne!(record.outcome, Outcome::Migrated, "{}", out.result.to_json());
    assert_eq!(out.placements[0], Placement::Source);
    let failed = &out.result.failed_attempts;
    assert_eq!(failed.len(), 1, "{}", out.result.to_json());
    assert!(
        failed[0].reason.contains("vm filevm") && failed[0].reason.contains("file-backed"),
        "{failed:?}"
    );
    let monitor = monitor(&vm).await;
    assert_eq!(monitor.query_status().await.unwrap().status, RunState::Running);
    let info = monitor.query_migrate().await.unwrap();
    assert!(
        matches!(info.status, None | Some(MigrationStatus::None)),
        "a migration was begun: {info:?}"
    );
}
