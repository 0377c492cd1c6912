//! A destination that hangs mid-migration (SIGSTOP): the bytes stop moving,
//! the run cancels the attempt after `stall_after`, says so, and the retry
//! on a fresh destination completes. Real QEMU; skipped, with the reason
//! printed, where it is missing.

use std::time::{Duration, Instant};

use evac_lab::{self as lab};
use evac_qemu::{run_with_options, Inventory, Placement, RunOptions};
use evac_report::Outcome;

mod common;
use common::{first_destination_once_sent, monitor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_destination_is_cancelled_and_retried() {
    let mut lab = lab::lab_or_skip!(&[lab::qemu_available]);
    let vms = vec![lab.start_vm("vm-1", 64).unwrap()];
    let text = lab
        .inventory("sequential", &vms, "max_bandwidth = \"100 Mbps\"")
        .replacen("name = \"lab\"\n", "name = \"lab\"\nstall_after = \"2 s\"\n", 1);
    let inv = Inventory::from_str_at(&text, std::path::Path::new("lab.toml")).unwrap();
    let monitor = monitor(&vms[0]).await;
    let (log, lines) = evac_run::log_kept();
    let options = RunOptions {
        log: Some(log),
        ..RunOptions::default()
    };
    let run = tokio::spawn(run_with_options(inv, options, std::future::pending()));
    // Once the first attempt is sending, hang its destination.
    let pid = first_destination_once_sent(&mut lab, &monitor, 8 << 20, Duration::from_secs(30)).await;
    // SAFETY: kill(2) of the destination QEMU the run started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    let stopped_at = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the run ends")
        .unwrap()
        .unwrap();
    let Placement::Destination { qmp, pid: dst, .. } = &out.placements[0] else {
        panic!("not migrated: {}", out.result.to_json())
    };
    lab.adopt(*dst);
    assert_eq!(out.result.vms[0].outcome, Outcome::Migrated);
    // The retry got a fresh destination.
    assert!(qmp.ends_with("dst-vm-1-2.qmp"), "{qmp:?}");
    let failed = &out.result.failed_attempts;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].reason.starts_with("stalled"), "{failed:?}");
    // Cancelled after about `stall_after`, not at once and not never.
    let cancelled_after = failed[0].end_s - failed[0].start_s;
    assert!(cancelled_after >= 2.0, "{failed:?}");
    assert!(stopped_at.elapsed() < Duration::from_secs(60));
    // The retry waited out its backoff (1 s after a first failure).
    let retried_at = out.result.vms[0].start_s.unwrap();
    assert!(
        retried_at >= failed[0].end_s + 1.0,
        "retried at {retried_at}: {failed:?}"
    );
    let lines = lines.lock().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("vm-1") && l.contains("stalled"))
            && lines.iter().any(|l| l.contains("vm-1: retrying in 1 s")),
        "{lines:?}"
    );
    // The hung destination was not left behind.
    assert!(!lab::pid_alive(pid), "the stopped destination still exists");
}
