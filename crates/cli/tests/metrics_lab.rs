//! `evac run --metrics`: a real evacuation of real QEMU VMs, scraped over
//! loopback while it runs.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use evac_lab::{self as lab};
use evac_model::BytesPerSec;

mod common;
use common::{read_json, run_with_metrics, scrape};

#[test]
fn a_real_run_is_scraped_while_it_runs() {
    let mut lab = lab::lab_or_skip!(&[lab::qemu_available, lab::dirty_guest_available]);
    let vms = vec![
        lab.start_dirtying_vm_in("vm-1", 128, BytesPerSec(5e6), 32, None)
            .unwrap(),
        lab.start_vm("vm-2", 96).unwrap(),
    ];
    // 80 Mbit/s a migration (10 MB/s): each takes several seconds, so the
    // scrapes see them in flight.
    let inventory = lab.inventory_file("sequential", &vms, "max_bandwidth = \"80 Mbps\"");
    let json = lab.dir.join("result.json");
    let (mut evac, addr) = run_with_metrics(&inventory, &["--json", json.to_str().unwrap()]);

    // Scrape until vm-1 has been seen in its second round and vm-2 in
    // flight, or the run ends.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut processed = Vec::new();
    let mut saw_dirty_rate = 0.0;
    let mut saw_vm2 = false;
    let mut saw_window = false;
    let vm1 = |name: &str| format!("{name}{{vm=\"vm-1\"}}");
    while evac.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the run took over 120 s");
        let Ok(stream) = TcpStream::connect(&addr) else {
            break;
        };
        drop(stream);
        let m = scrape(&addr);
        assert!(m.contains_key("evac_migrations_in_flight"), "{m:?}");
        let in_flight = m["evac_migrations_in_flight"];
        assert!(in_flight <= 1.0, "sequential: {m:?}");
        assert_eq!(m.get("evac_vms{outcome=\"in-flight\"}"), Some(&in_flight));
        let total: f64 = ["migrated", "not-migrated", "lost", "pending", "in-flight"]
            .iter()
            .map(|o| m[&format!("evac_vms{{outcome=\"{o}\"}}")])
            .sum();
        if total == 0.0 {
            // Served before the run's first snapshot (connecting to QEMU).
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        assert_eq!(total, 2.0, "every VM is counted once: {m:?}");
        if m.get("evac_controller_window") == Some(&1.0) {
            saw_window = true;
        }
        if let Some(&sent) = m.get(&vm1("evac_migration_data_processed_bytes")) {
            processed.push(sent);
            let remaining = m[&vm1("evac_migration_data_remaining_bytes")];
            assert!(remaining <= (128u64 << 20) as f64, "{remaining}");
            // Capped at 80 Mbit/s = 10 MB/s (QEMU's own rate, a little over
            // at times).
            let rate = m[&vm1("evac_migration_transfer_rate_bytes_per_second")];
            assert!(rate <= 12.5e6, "{rate}");
            assert_eq!(
                m.get("evac_migration_phase{vm=\"vm-1\",phase=\"precopy\"}")
                    .copied()
                    .unwrap_or(1.0),
                1.0
            );
            if m[&vm1("evac_migration_round")] >= 2.0 {
                saw_dirty_rate = f64::max(
                    saw_dirty_rate,
                    m[&vm1("evac_migration_dirty_rate_bytes_per_second")],
                );
            }
        }
        if m.contains_key("evac_migration_data_processed_bytes{vm=\"vm-2\"}") {
            saw_vm2 = true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    evac.assert_exits_successfully();
    let scraped = processed.len();
    assert!(scraped >= 3, "vm-1 was scraped in flight only {scraped} times");
    assert!(
        processed.windows(2).any(|w| w[1] > w[0]),
        "processed bytes never grew: {processed:?}"
    );
    assert!(saw_vm2, "vm-2 was never seen in flight");
    assert!(saw_window, "the sequential window (1) was never seen");
    // The guest dirties 5 MB/s: QEMU's measure, once round 1 is over.
    assert!(saw_dirty_rate > 1e6, "dirty rate {saw_dirty_rate}");
    let result: serde_json::Value = read_json(&json);
    assert_eq!(result["migrated"], 2);
    // Dropping the lab kills the destination QEMUs evac started in its
    // directory (the VMs now).
    drop(lab);
}
