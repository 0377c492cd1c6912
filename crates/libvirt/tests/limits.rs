//! The hosts' own limits on a real libvirt lab: host A's libvirtd runs with
//! `max_workers = 4`, below the concurrency the controller asks for (the
//! `parallel` policy starts all 6 domains at once). evac reads the limit
//! through libvirt's admin API (`virt-admin`), says once that it caps A at 2 migrations
//! (4 workers, 2 kept for other calls), and moves every domain exactly
//! once without a failed attempt, never more than 2 migrations out of A at
//! a time (counted independently, from A's running jobs).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use evac_lab::libvirt::{self as lab, Lab, LabOptions};
use evac_libvirt::inventory::Inventory;
use evac_outcome::Outcome;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_with_fewer_workers_than_asked_for_is_respected_without_a_failure() {
    let Some(mut lab) = Lab::unless_missing(&[lab::libvirt_lab_available], &LabOptions::pair(false)) else {
        return;
    };
    lab.set_max_workers(0, 4).unwrap();
    let names = lab.start_domains("w", 6, 32);
    let text = lab.pair_inventory("", "policy = \"parallel\"\nperiod = \"500 ms\"\nmax_attempts = 3");
    let inventory = Inventory::from_str_at(&text, Path::new("lab.toml")).unwrap();

    // A's outgoing migrations, counted from its jobs while the run goes.
    let lab = Arc::new(lab);
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (lab, most, done) = (lab.clone(), most.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = lab.jobs_running(0) {
                    most.fetch_max(n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (out, said) = common::run_logged(inventory).await;
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();

    let cap_lines: Vec<&String> = said
        .iter()
        .filter(|l| l.contains(&format!("host `{}`: at most", lab.hosts[0].hostname)))
        .collect();
    assert_eq!(cap_lines.len(), 1, "said once: {said:#?}");
    assert!(
        cap_lines[0].contains("at most 2 migrations out of it at once")
            && cap_lines[0].contains("max_workers = 4 (read through libvirt's admin API, `virt-admin`)"),
        "{}",
        cap_lines[0]
    );
    let r = &out.result;
    assert_eq!((r.migrated, r.lost), (6, 0), "{r:?}\n{said:#?}");
    for vm in &r.vms {
        assert_eq!(vm.outcome, Outcome::Migrated, "{vm:?}");
    }
    assert!(
        r.failed_attempts.is_empty(),
        "no attempt may fail: {:#?}",
        r.failed_attempts
    );
    let most = most.load(Ordering::Relaxed);
    assert!((1..=2).contains(&most), "{most} migrations out of A at once");
    assert!(lab.running_domains(0).unwrap().is_empty());
    let mut on_b = lab.running_domains(1).unwrap();
    on_b.sort();
    let mut names = names;
    names.sort();
    assert_eq!(on_b, names, "each domain once on B");
}
