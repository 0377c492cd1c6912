//! `evac run` killed with SIGKILL mid-evacuation and taken up again with
//! `--resume`: real `evac` binaries over real QEMU VMs. Skipped, saying why,
//! where QEMU is missing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evac_lab::{self as lab};
use evac_qmp::{Qmp, RunState};
use serde_json::Value;

mod common;

use common::{arg, journal_lines, read_json};

#[test]
fn a_killed_run_is_resumed_and_moves_every_vm_exactly_once() {
    killed_and_resumed("res", false);
}

/// The migration in flight when evac died completes before `--resume`:
/// the resumed run finishes it (the destination runs, the source quits)
/// instead of starting it again.
#[test]
fn a_migration_that_completed_while_evac_was_down_is_finished_not_repeated() {
    killed_and_resumed("fin", true);
}

/// `prefix` names the VMs: tests run at once and look for their
/// destination QEMUs by name among all processes.
fn killed_and_resumed(prefix: &str, let_it_complete: bool) {
    let name = |i: u32| format!("{prefix}-{i}");
    let mut lab = lab::lab_or_skip!(&[lab::qemu_available]);
    let vms: Vec<_> = (1..=3).map(|i| lab.start_vm(&name(i), 64).unwrap()).collect();
    // One at a time at 100 Mbps: about 5.5 s each.
    let inventory = lab.inventory_file("sequential", &vms, "max_bandwidth = \"100 Mbps\"");
    let journal = lab.dir.join("journal.jsonl");
    let evac = env!("CARGO_BIN_EXE_evac");
    let mut first = Command::new(evac)
        .args(["run", "--quiet", arg(&inventory)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the first VM has migrated and the second is under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "{:?}", journal_lines(&journal));
        let lines = journal_lines(&journal);
        let first_done = lines.iter().any(|l| {
            l["event"] == "end" && l["vm"] == name(1).as_str() && l["record"]["outcome"] == "migrated"
        });
        let second_started = lines
            .iter()
            .any(|l| l["event"] == "start" && l["vm"] == name(2).as_str());
        if first_done && second_started {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let lines = journal_lines(&journal);
    assert!(
        !lines
            .iter()
            .any(|l| l["event"] == "end" && l["vm"] == name(2).as_str()),
        "the second VM ended before the kill: {lines:?}"
    );
    if let_it_complete {
        // The source goes on without evac: wait for it to finish sending.
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let monitor = Qmp::connect(vms[1].monitor.to_str().unwrap()).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let info = monitor.query_migrate().await.unwrap();
                if info.status == Some(evac_qmp::MigrationStatus::Completed) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the second VM never completed: {info:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    // A plain run refuses the run dir and says how to finish it.
    let plain = Command::new(evac)
        .args(["run", "--quiet", arg(&inventory)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success() && stderr.contains("--resume"), "{stderr}");

    let json = lab.dir.join("resumed.json");
    let resumed = common::run_resumed(&inventory, &json);
    // Whatever happened, the lab stops every destination QEMU.
    for vm in &vms {
        for pid in lab::process::pids_mentioning(&format!("dst-{}-", vm.name)) {
            lab.adopt(pid);
        }
    }
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    let result: Value = read_json(&json);
    assert_eq!(result["migrated"], 3, "{result}");
    let records = result["vms"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    for (record, vm) in records.iter().zip(&vms) {
        assert_eq!(record["name"], vm.name.as_str());
        assert_eq!(record["outcome"], "migrated", "{record}");
        // Times run on from the first start: the first VM ended before the kill,
        // the third after the resume.
        assert!(record["end_s"].as_f64().unwrap() > record["start_s"].as_f64().unwrap());
    }
    // The second was not started again: its one attempt was taken up.
    let lines = journal_lines(&journal);
    let starts = |vm: &str| {
        lines
            .iter()
            .filter(|l| l["event"] == "start" && l["vm"] == vm)
            .count()
    };
    assert_eq!(starts(&name(1)), 1);
    assert_eq!(starts(&name(2)), 1, "{lines:?}");
    assert!(lines.last().is_some_and(|l| l["event"] == "finish"), "{lines:?}");

    // Each VM runs exactly once: its source QEMU is gone, one destination runs it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    for vm in &vms {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !lab.exited(vm.pid) {
            assert!(Instant::now() < deadline, "the source of {} still runs", vm.name);
            std::thread::sleep(Duration::from_millis(50));
        }
        let destinations = lab::process::pids_mentioning(&format!("dst-{}-", vm.name));
        assert_eq!(
            destinations.len(),
            1,
            "{}: destinations {destinations:?}",
            vm.name
        );
        let socket = lab.dir.join(format!("dst-{}-1.qmp", vm.name));
        let status = rt.block_on(async {
            let qmp = Qmp::connect(socket.to_str().unwrap()).await.unwrap();
            qmp.query_status().await.unwrap()
        });
        assert_eq!(status.status, RunState::Running, "{}", vm.name);
    }
}
