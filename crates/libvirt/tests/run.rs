//! Evacuations through the run loop (evac-run) on a real libvirt lab:
//! host A's domains to host B.

use std::path::Path;

use std::time::Duration;

use evac_lab::libvirt::{self as lab, Lab, LabOptions};
use evac_libvirt::backend::run_with_options;
use evac_libvirt::inventory::Inventory;
use evac_outcome::Outcome;
use evac_run::RunOptions;

/// A pair of hosts, or `None` (the test returns) where libvirt's lab cannot
/// run ([`evac_lab::skip_without()`]).
fn lab() -> Option<Lab> {
    Lab::unless_missing(&[lab::libvirt_lab_available], &LabOptions::pair(false))
}

/// The pair lab's inventory ([`Lab::pair_inventory`]): `migration` added
/// to `[migration]`; `[controller]` runs `policy` every 500 ms, with
/// `controller` added (e.g. `max_attempts = 3`).
fn inventory(lab: &Lab, policy: &str, migration: &str, controller: &str) -> Inventory {
    let controller = format!("policy = \"{policy}\"\nperiod = \"500 ms\"\n{controller}");
    let text = lab.pair_inventory(migration, &controller);
    Inventory::from_str_at(&text, Path::new("lab.toml")).unwrap()
}

/// A cap of 4 MiB/s: a 64 MiB domain sends for 16 s, time to kill
/// something on the destination mid-transfer.
const SLOW: &str = "max_bandwidth = \"32 Mbps\"";

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_domains_move_with_aimd_global_and_with_deadline() {
    let Some(lab) = lab() else { return };
    for policy in ["aimd-global", "deadline"] {
        let names = lab.start_domains(&policy[..4], 3, 32);
        let inv = inventory(&lab, policy, "", "max_attempts = 3");
        let out = run_with_options(inv, RunOptions::default(), std::future::pending())
            .await
            .unwrap();
        let r = &out.result;
        assert_eq!((r.migrated, r.lost), (3, 0), "{policy}: {r:?}");
        for vm in &r.vms {
            assert_eq!(vm.outcome, Outcome::Migrated);
            // Every page of 32 MiB of random RAM was sent at least once.
            assert!(vm.bytes_sent.unwrap() >= 32 << 20, "{policy}: {vm:?}");
            // The destination's record of the migration gives its downtime.
            assert!(
                vm.downtime_s.is_some_and(|d| d > 0.0 && d < 10.0),
                "{policy}: {vm:?}"
            );
        }
        for (vm, landed) in r.vms.iter().zip(&out.landed) {
            assert_eq!(landed.as_ref().unwrap().host, lab.hosts[1].hostname, "{vm:?}");
        }
        assert!(lab.running_domains(0).unwrap().is_empty());
        let on_b = lab.running_domains(1).unwrap();
        assert!(names.iter().all(|n| on_b.contains(n)), "{on_b:?}");
    }
    // Six domains on B, each once; persistent there, undefined on A.
    assert_eq!(lab.running_domains(1).unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_migration_pauses_the_guest_and_resumes_it_at_the_destination() {
    let Some(lab) = lab() else { return };
    let names = lab.start_domains("off", 1, 32);
    let inv = inventory(&lab, "aimd-global", "mode = \"offline\"", "");
    let out = run_with_options(inv, RunOptions::default(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(out.result.migrated, 1, "{:?}", out.result);
    assert_eq!(lab.running_domains(1).unwrap(), names);
    assert!(
        !lab.is_paused(1, &names[0]).unwrap(),
        "left paused at the destination"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_flight_leaves_the_domains_on_their_source() {
    let Some(lab) = lab() else { return };
    let names = lab.start_domains("stay", 2, 64);
    // 2 MiB/s: 64 MiB cannot finish within the 6 s before the shutdown.
    let inv = inventory(&lab, "aimd-global", "max_bandwidth = \"16 Mbps\"", "");
    let shutdown = tokio::time::sleep(Duration::from_secs(6));
    let out = run_with_options(inv, RunOptions::default(), shutdown)
        .await
        .unwrap();
    assert_eq!(
        (out.result.migrated, out.result.not_migrated, out.result.lost),
        (0, 2, 0),
        "{:?}",
        out.result
    );
    assert!(!out.result.failed_attempts.is_empty());
    assert_eq!(lab.running_domains(0).unwrap(), sorted(names));
    assert!(lab.running_domains(1).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_qemu_killed_mid_migration_is_retried() {
    let Some(lab) = lab() else { return };
    let lab = std::sync::Arc::new(lab);
    let names = lab.start_domains("kill", 1, 64);
    let inv = inventory(&lab, "aimd-global", SLOW, "max_attempts = 3");
    // Kills the first incoming QEMU on B once it has received a little.
    let killer = {
        let lab = lab.clone();
        tokio::task::spawn_blocking(move || {
            let mut pids = Vec::new();
            assert!(
                evac_lab::process::wait_until(Duration::from_secs(60), || {
                    pids = lab.qemu_pids(1);
                    !pids.is_empty()
                }),
                "no QEMU ever ran on B"
            );
            std::thread::sleep(Duration::from_secs(3));
            for pid in &pids {
                // SAFETY: kill has no memory-safety preconditions; the pid
                // is a QEMU the lab's daemon B started.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
            pids
        })
    };
    let out = run_with_options(inv, RunOptions::default(), std::future::pending())
        .await
        .unwrap();
    let killed = killer.await.unwrap();
    assert_eq!(killed.len(), 1, "{killed:?}");
    let r = &out.result;
    assert_eq!((r.migrated, r.lost), (1, 0), "{r:?}");
    assert!(
        !r.failed_attempts.is_empty(),
        "the killed attempt is not recorded: {r:?}"
    );
    assert!(lab.running_domains(0).unwrap().is_empty());
    assert_eq!(lab.running_domains(1).unwrap(), names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_daemon_killed_mid_migration_is_retried_after_its_restart() {
    let Some(lab) = lab() else { return };
    let names = lab.start_domains("dkill", 1, 64);
    // Five attempts: the retries wait 1, 2, 4 and 8 s, far more than the
    // daemon's restart takes.
    let inv = inventory(&lab, "aimd-global", SLOW, "max_attempts = 5");
    let lab = std::sync::Arc::new(std::sync::Mutex::new(lab));
    // Once the incoming QEMU on B has received a little, kills B's libvirtd
    // (SIGKILL, by the pid the lab started), checks the domain still runs
    // on A, and starts the daemon again.
    let killer = {
        let lab = lab.clone();
        let domain = names[0].clone();
        tokio::task::spawn_blocking(move || {
            let (incoming, killed) = {
                let lab = lab.lock().unwrap();
                assert!(
                    evac_lab::process::wait_until(Duration::from_secs(60), || !lab.qemu_pids(1).is_empty()),
                    "no QEMU ever ran on B"
                );
                (lab.qemu_pids(1), lab.hosts[1].daemon_pid())
            };
            std::thread::sleep(Duration::from_secs(3));
            let mut lab = lab.lock().unwrap();
            lab.kill_daemon(1);
            // The source notices the lost peer and ends the migration: the
            // guest is still on A, running (not left paused).
            let on_a = evac_lab::process::wait_until(Duration::from_secs(30), || {
                lab.running_domains(0).is_ok_and(|d| d.len() == 1)
            });
            let paused = lab.is_paused(0, &domain).unwrap_or(true);
            lab.start_daemon(1).unwrap();
            (incoming, killed, on_a, paused)
        })
    };
    let out = run_with_options(inv, RunOptions::default(), std::future::pending())
        .await
        .unwrap();
    let (incoming, killed, on_a, paused) = killer.await.unwrap();
    assert_eq!(incoming.len(), 1, "{incoming:?}");
    assert!(killed.is_some(), "B's daemon was not running");
    assert!(on_a, "the domain left A when B's daemon died");
    assert!(!paused, "the domain was left paused on A");
    let r = &out.result;
    assert_eq!((r.migrated, r.lost), (1, 0), "{r:?}");
    assert!(
        !r.failed_attempts.is_empty(),
        "the attempt cut by the daemon's death is not recorded: {r:?}"
    );
    let lab = lab.lock().unwrap();
    assert!(lab.running_domains(0).unwrap().is_empty());
    // Once on the restarted B: no copy left over from the cut attempt.
    assert_eq!(lab.running_domains(1).unwrap(), names);
    assert_eq!(lab.qemu_pids(1).len(), 1, "{:?}", lab.qemu_pids(1));
}

/// Not a test of its own: the evac process the restart test kills. It runs
/// only when that test starts this binary with `EVAC_LV_CHILD` set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: run as a child process by evac_killed_and_restarted_moves_each_domain_once"]
async fn restart_child() {
    let path = std::env::var("EVAC_LV_CHILD").expect("run by the restart test");
    let inv = Inventory::from_path(Path::new(&path)).unwrap();
    run_with_options(inv, RunOptions::default(), std::future::pending())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evac_killed_and_restarted_moves_each_domain_once() {
    let Some(lab) = lab() else { return };
    let names = lab.start_domains("rst", 4, 64);
    // 8 MiB/s, one at a time: about 8 s per domain, so that at the kill
    // one has landed on B and the next one's migration runs.
    let text = lab.pair_inventory(
        "max_bandwidth = \"64 Mbps\"",
        "policy = \"sequential\"\nperiod = \"500 ms\"",
    );
    let path = lab.dir.join("restart.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "restart_child", "--nocapture"])
        .env("EVAC_LV_CHILD", &path)
        .spawn()
        .unwrap();
    // Kill it while a migration runs (a job on A, data flowing) after one
    // domain has landed on B.
    let conn = evac_libvirt::client::connect(&lab.hosts[0].uri(), Duration::from_secs(30))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let in_flight = loop {
        let doms = evac_libvirt::client::running_domains(&conn, &[], Duration::from_secs(30))
            .await
            .unwrap();
        let jobs: Vec<String> = doms
            .into_iter()
            .filter(|d| d.job_running)
            .map(|d| d.name)
            .collect();
        if !jobs.is_empty()
            && started.elapsed() > Duration::from_secs(4)
            && lab.running_domains(0).unwrap().len() < names.len()
        {
            break jobs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no migration ever ran"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the evac process ended early"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(conn);

    // The run loop's restart hook (`--resume`): the first migration left
    // running is followed to its end, not started again.
    {
        use evac_run::{Backend as _, Migration as _, Observed, StartRequest, Wake};
        let inv = Inventory::from_path(&path).unwrap();
        let mut backend = evac_libvirt::LibvirtBackend::connect(inv, evac_run::log_to_stderr(), None)
            .await
            .unwrap();
        let vm = backend
            .fleet()
            .vms
            .iter()
            .position(|v| v.name == in_flight[0])
            .unwrap();
        let request = || StartRequest {
            vm: evac_model::VmId(vm),
            attempt: 1,
            destination: evac_model::HostId(1),
            params: evac_model::MigrationParams::default(),
            wake: Wake::default(),
        };
        let info = backend.reconnect_info(&request());
        let wrong = serde_json::json!({"domain": "another", "source": info["source"]});
        assert!(backend.adopt(request(), &wrong).is_none());
        let mut m = backend.adopt(request(), &info).unwrap();
        let started = std::time::Instant::now();
        loop {
            match m.observe().await.unwrap() {
                Observed::Completed(c) => {
                    assert_eq!(c.landed.host, lab.hosts[1].hostname);
                    break;
                }
                Observed::Failed(f) => panic!("{f:?}"),
                _ => {}
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the adopted migration never ended"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let options = RunOptions {
        log: Some({
            let log = log.clone();
            std::sync::Arc::new(move |line: &str| log.lock().unwrap().push(line.to_owned()))
        }),
        // `--resume`: the journal of the killed run is taken up.
        resume: true,
        ..RunOptions::default()
    };
    let inv = Inventory::from_path(&path).unwrap();
    let journal = evac_run::journal_path(inv.run_dir.as_deref().unwrap());
    let out = run_with_options(inv, options, std::future::pending())
        .await
        .unwrap();
    let log = log.lock().unwrap().clone();
    // Every domain runs on B, once; none is left on A.
    assert!(lab.running_domains(0).unwrap().is_empty(), "{log:?}");
    assert_eq!(lab.running_domains(1).unwrap(), sorted(names.clone()), "{log:?}");
    // One result for the whole run, the domains moved before the kill
    // included (they are on B now: matched by name, not found on A).
    let r = &out.result;
    assert_eq!((r.migrated, r.lost, r.vms.len()), (4, 0, 4), "{r:?}\n{log:?}");
    let mut in_result: Vec<String> = r.vms.iter().map(|v| v.name.clone()).collect();
    in_result.sort();
    assert_eq!(in_result, sorted(names), "{r:?}");
    assert!(
        log.iter().any(|l| l.contains("kept from the journal")),
        "no domain had moved before the kill: {log:?}"
    );
    // Nothing migrated twice: the migrations in flight at the kill were
    // taken up, not started again (no `start` of them after the `resume`).
    let text = std::fs::read_to_string(&journal).unwrap();
    let entries: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let resumed_at = entries
        .iter()
        .position(|e| e["event"] == "resume")
        .expect("a resume entry");
    for domain in &in_flight {
        let restarted = entries[resumed_at..]
            .iter()
            .filter(|e| e["event"] == "start" && e["vm"] == domain.as_str())
            .count();
        assert_eq!(restarted, 0, "{domain} started again after the restart: {text}");
    }
    // And each domain migrated once: one `end` that left it migrated.
    for vm in &r.vms {
        let migrated_ends = entries
            .iter()
            .filter(|e| e["event"] == "end" && e["vm"] == vm.name.as_str())
            .filter(|e| e["record"]["outcome"] == "migrated")
            .count();
        assert_eq!(migrated_ends, 1, "{}: {text}", vm.name);
    }
}
