//! The `evac` binary as a user runs it.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{arg, evac, evac_command, read_json, text, web_scenario, KillOnDrop};

#[test]
fn simulate_the_embedded_default_writes_json_csv_and_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let csv = dir.path().join("result.csv");
    let svg = dir.path().join("result.svg");
    let out = evac(&[
        "simulate",
        "--json",
        arg(&json),
        "--csv",
        arg(&csv),
        "--plot",
        arg(&svg),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("score") && stdout.contains("41 migrated"),
        "{stdout}"
    );

    let result: Value = read_json(&json);
    for field in [
        "policy",
        "total_time_s",
        "mean_migration_time_s",
        "max_migration_time_s",
        "p95_migration_time_s",
        "mean_completion_time_s",
        "lower_bound_total_s",
        "lower_bound_mean_migration_s",
        "score",
        "migrated",
        "not_migrated",
        "lost",
        "bytes_sent",
        "vms",
        "timeline",
    ] {
        assert!(result.get(field).is_some(), "JSON lacks `{field}`");
    }
    let vms = result["vms"].as_array().unwrap();
    let (migrated, not_migrated, lost) = (
        result["migrated"].as_u64().unwrap(),
        result["not_migrated"].as_u64().unwrap(),
        result["lost"].as_u64().unwrap(),
    );
    assert_eq!(migrated + not_migrated + lost, vms.len() as u64);
    // The totals agree with the per-VM records.
    let sent: u64 = vms.iter().filter_map(|v| v["bytes_sent"].as_u64()).sum();
    assert_eq!(result["bytes_sent"].as_u64(), Some(sent));
    let last_end = vms.iter().filter_map(|v| v["end_s"].as_f64()).fold(0.0, f64::max);
    assert_eq!(result["total_time_s"].as_f64(), Some(last_end));
    for field in ["t_s", "wan_capacity_bps", "wan_throughput_bps", "in_flight"] {
        assert!(
            result["timeline"][0].get(field).is_some(),
            "timeline lacks `{field}`"
        );
    }

    let csv = std::fs::read_to_string(&csv).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("name,host,destination,start_s,end_s,migration_time_s,downtime_s,rounds,bytes_sent,outcome,reason,mode,connections")
    );
    assert_eq!(lines.count(), vms.len());
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
}

#[test]
fn policy_flag_overrides_the_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let out = evac(&["simulate", "--policy", "sequential", "--json", arg(&json)]);
    let result: Value = read_json(&json);
    // Sequential loses VMs of the default scenario to its deadlines: 3.
    let all_migrated = result["vms"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["outcome"] == "migrated");
    let expected = if all_migrated { 0 } else { 3 };
    assert_eq!(out.status.code(), Some(expected), "{}", text(&out.stderr));
    assert_eq!(result["policy"], "sequential");
    // Sequential: no two migrations overlap.
    let mut spans: Vec<(f64, f64)> = result["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| Some((v["start_s"].as_f64()?, v["end_s"].as_f64()?)))
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(spans.windows(2).all(|w| w[1].0 >= w[0].1 - 1e-9));

    let out = evac(&["simulate", "--policy", "fastest"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("aimd-global"), "{}", text(&out.stderr));
}

#[test]
fn a_bad_scenario_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, web_scenario("").replace("\"4 GiB\"", "\"4 GB/s\"")).unwrap();
    let out = evac(&["simulate", arg(&path)]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    // `memory` is on line 15.
    assert!(stderr.contains("bad.toml:15"), "{stderr}");
    assert!(stderr.contains("memory") && stderr.contains("GiB"), "{stderr}");

    // One line naming the file and the cause, once, and no backtrace even
    // where the environment asks Rust for them.
    let out = evac_command()
        .args(["simulate", "/nonexistent/scenario.toml"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim_end(),
        "error: cannot read scenario file /nonexistent/scenario.toml: No such file or directory (os error 2)"
    );
}

#[test]
fn run_offers_quiet_to_turn_the_progress_display_off() {
    let out = evac(&["run", "--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("--quiet"), "{}", text(&out.stdout));
}

/// `evac run` on two real QEMU VMs over loopback; skipped, saying why,
/// where QEMU is missing.
#[test]
fn run_migrates_real_vms_and_writes_the_same_json() {
    use evac_lab::{self as lab};
    let mut lab = lab::lab_or_skip!(&[lab::qemu_available]);
    let vms = ["cli-1", "cli-2"].map(|name| lab.start_vm(name, 64).unwrap());
    let inventory = lab.inventory_file("aimd-global", &vms, "");
    let json = lab.dir.join("run.json");
    let out = evac(&["run", arg(&inventory), "--json", arg(&json)]);
    // The migrated VMs now run in destination QEMUs that evac started and
    // left running: the lab stops them when the test ends.
    for vm in &vms {
        let socket = lab.dir.join(format!("dst-{}-1.qmp", vm.name));
        if let Some(pid) = lab::find_pid(socket.to_str().unwrap()) {
            lab.adopt(pid);
        }
    }
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: Value = read_json(&json);
    assert_eq!(result["policy"], "aimd-global");
    assert_eq!(result["migrated"], 2, "{result}");
    // What made it: this evac, this inventory, no seed (nothing random).
    assert_eq!(result["scenario"], inventory.to_str().unwrap());
    assert!(result["seed"].is_null(), "{result}");
    assert!(
        result["evac_version"]
            .as_str()
            .is_some_and(|v| v.starts_with(env!("CARGO_PKG_VERSION"))),
        "{result}"
    );
    for (record, vm) in result["vms"].as_array().unwrap().iter().zip(&vms) {
        assert_eq!(record["outcome"], "migrated");
        assert!(record["bytes_sent"].as_u64().unwrap() >= vm.mib << 20);
    }
    assert!(Path::new(&json).exists());
}

/// Ctrl-C (SIGINT) to a running `evac run`: it cancels the migration in
/// flight, writes its JSON, exits promptly, and leaves each VM running
/// exactly once. Skipped, saying why, where QEMU is missing.
#[test]
fn ctrl_c_stops_a_real_run_and_leaves_each_vm_running_once() {
    a_signal_stops_a_real_run(libc::SIGINT, "Ctrl-C");
}

/// SIGTERM (what `kill`, `timeout` and service managers send) ends a run as
/// cleanly as Ctrl-C.
#[test]
fn sigterm_stops_a_real_run_like_ctrl_c() {
    a_signal_stops_a_real_run(libc::SIGTERM, "SIGTERM");
}

// SIGHUP does not end a run: evac reads its inventory again
// (crates/cli/tests/power_lab.rs).

fn a_signal_stops_a_real_run(signal: libc::c_int, logged: &str) {
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use evac_lab::{self as lab};
    use evac_qmp::{MigrationStatus, Qmp, RunState};

    let mut lab = lab::lab_or_skip!(&[lab::qemu_available]);
    let vms = vec![
        lab.start_vm("int-1", 96).unwrap(),
        lab.start_vm("int-2", 64).unwrap(),
    ];
    // 40 Mbps: 96 MiB take about 20 s, time enough to interrupt.
    let inventory = lab.inventory_file("sequential", &vms, "max_bandwidth = \"40 Mbps\"");
    let json = lab.dir.join("run.json");
    let (stdout, stderr) = (lab.dir.join("stdout"), lab.dir.join("stderr"));
    let child = evac_command()
        .args(["run", arg(&inventory), "--json", arg(&json)])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("evac runs");
    let mut child = KillOnDrop(child);
    let log = || text(&std::fs::read(&stderr).unwrap_or_default());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The lab VMs' second QMP sockets: evac owns the first ones.
    let monitors: Vec<Qmp> = runtime.block_on(async {
        let mut monitors = Vec::new();
        for vm in &vms {
            monitors.push(Qmp::connect(vm.monitor.to_str().unwrap()).await.unwrap());
        }
        monitors
    });

    // Wait for the first migration to be under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    let migrating = loop {
        let active = runtime.block_on(async {
            for (i, monitor) in monitors.iter().enumerate() {
                if let Ok(info) = monitor.query_migrate().await {
                    if info.status == Some(MigrationStatus::Active) {
                        return Some(i);
                    }
                }
            }
            None
        });
        if let Some(i) = active {
            break i;
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("evac exited ({status}) before migrating:\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "no migration under way after 30 s:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Let some pages go, then interrupt as a terminal's Ctrl-C would.
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
    let sent = unsafe { libc::kill(child.0.id() as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill({logged}) failed");

    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "evac still runs 15 s after {logged}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    // Whatever runs at a destination dies with the lab.
    let dst_pids: Vec<Option<u32>> = vms
        .iter()
        .map(|vm| {
            let socket = lab.dir.join(format!("dst-{}-1.qmp", vm.name));
            lab::find_pid(socket.to_str().unwrap())
        })
        .collect();
    for pid in dst_pids.iter().flatten() {
        lab.adopt(*pid);
    }

    // Interrupted mid-migration, not every VM moved: 3, not success.
    assert_eq!(status.code(), Some(3), "evac exited with {status}:\n{}", log());
    assert!(log().contains(&format!("{logged}: cancelling")), "{}", log());
    assert!(log().contains("cancelled"), "{}", log());
    // stderr is a file, not a terminal: no progress bars drawn into it.
    assert!(!log().contains('\x1b'), "escape codes on stderr:\n{}", log());
    assert!(
        text(&std::fs::read(&stdout).unwrap()).contains("priority saved"),
        "no summary table on stdout"
    );
    let result: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON is written after Ctrl-C"))
            .unwrap();
    let records = result["vms"].as_array().unwrap();
    assert_eq!(records.len(), vms.len());
    // Interrupted, not lost: every VM not moved is still on its source.
    assert_eq!(result["lost"], 0, "{result}");
    assert_eq!(
        result["migrated"].as_u64().unwrap() + result["not_migrated"].as_u64().unwrap(),
        2,
        "{result}"
    );
    for record in records.iter().filter(|r| r["outcome"] != "migrated") {
        assert_eq!(record["outcome"], "not-migrated", "{result}");
        assert_eq!(record["reason"], "interrupted", "{result}");
    }

    runtime.block_on(async {
        for (i, vm) in vms.iter().enumerate() {
            let record = &records[i];
            if lab.exited(vm.pid) {
                // It completed before the cancel: it runs at its destination.
                assert_eq!(record["outcome"], "migrated", "{}: {record}", vm.name);
                let pid =
                    dst_pids[i].unwrap_or_else(|| panic!("{}: neither source nor destination runs", vm.name));
                assert!(lab::pid_alive(pid));
                let socket = lab.dir.join(format!("dst-{}-1.qmp", vm.name));
                let dst = Qmp::connect(socket.to_str().unwrap()).await.unwrap();
                let state = dst.query_status().await.unwrap().status;
                assert_eq!(state, RunState::Running, "{} at its destination", vm.name);
            } else {
                // Still on its source, running, with no destination left.
                assert_ne!(record["outcome"], "migrated", "{}: {record}", vm.name);
                assert_eq!(
                    dst_pids[i], None,
                    "{}: a destination QEMU is left beside its running source",
                    vm.name
                );
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let state = monitors[i].query_status().await.unwrap().status;
                    if state == RunState::Running {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{}: its source is {state:?}, not running",
                        vm.name
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let info = monitors[i].query_migrate().await.unwrap();
                assert_ne!(info.status, Some(MigrationStatus::Active), "{}", vm.name);
            }
        }
    });
    // The VM interrupted mid-migration stays on its source.
    assert!(!lab.exited(vms[migrating].pid), "{}", log());
}
