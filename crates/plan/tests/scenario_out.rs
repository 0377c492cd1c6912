//! The scenario `evac plan` writes reads back as the fleet it simulated,
//! and the triage's pick saves the most.

use std::path::Path;

use evac_model::{Bytes, BytesPerSec};
use evac_plan::{scenario, triage, Measured};
use evac_qemu::Inventory;
use evac_scenario::Scenario;

const INVENTORY: &str = r#"
name = "dc \"one\""
[network]
wan_bandwidth = "300 Mbps"
wan_rtt = "40 ms"
tcp_window = "8 MiB"
[controller]
policy = "aimd-global"
max_in_flight = 3
[controller.aimd]
max_window = 7
[migration]
downtime_limit = "250 ms"
connections = 2
[[host]]
name = "rack1"
site = "source"
nic = "10 Gbps"
power_off_at = "90 s"
[[host]]
name = "safe"
site = "destination"
nic = "10 Gbps"
memory = "64 GiB"
migration_address = "127.0.0.1"
[[vm]]
name = "db"
host = "rack1"
qmp = "/nonexistent/db.qmp"
priority = 50
qemu_args = []
[[vm]]
name = "web"
host = "rack1"
qmp = "/nonexistent/web.qmp"
qemu_args = []
"#;

/// What `evac plan` measured of the inventory's two VMs: `db`, 8 GiB
/// dirtying `dirty_rate` over a 1 GiB working set, and `web`, 1.5 GiB idle.
fn db_and_web(dirty_rate: BytesPerSec) -> [Measured; 2] {
    [
        Measured {
            memory: Bytes::gib(8),
            dirty_rate,
            working_set: Bytes::gib(1),
            dirtied: vec![],
            content: None,
        },
        Measured::idle(Bytes::mib(1536)),
    ]
}

#[test]
fn the_written_scenario_reads_back_as_the_fleet() {
    let inventory = Inventory::from_str_at(INVENTORY, Path::new("inv.toml")).unwrap();
    let measured = db_and_web(BytesPerSec(19.0 * 1_048_576.0));
    let mut fleet = scenario::with_measured(inventory.fleet(&[Bytes(1), Bytes(1)]), &measured, &[]);
    // A local disk copied with the migration (a libvirt fleet's) is written
    // too, to the byte.
    fleet.vms[1].disk = Bytes(21_474_836_481);
    // And a memory profile: zero pages, a ratio, a dirty curve, a host's
    // cores for compression, none of them round numbers.
    fleet.vms[0].profile.zero_fraction = 0.6123456789;
    fleet.vms[0].profile.compression_ratio = 2.0000001;
    fleet.vms[1].set_dirty_curve(vec![
        evac_model::DirtyPoint {
            after: std::time::Duration::from_micros(125_500),
            dirtied: Bytes(64_424_509),
        },
        evac_model::DirtyPoint {
            after: std::time::Duration::from_secs(60),
            dirtied: Bytes(1_000_000_001),
        },
    ]);
    fleet.hosts[0].migration_cpus = Some(1.5);
    let network = inventory.network();
    let text = scenario::to_toml(
        &inventory.name,
        &fleet,
        &network,
        &inventory.migration.params,
        &inventory.controller,
    )
    .unwrap();
    let back = Scenario::from_toml_str(&text, "plan.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back.name, "dc \"one\"");
    assert_eq!(back.fleet, fleet, "{text}");
    assert_eq!(back.fleet.vms[1].disk, Bytes(21_474_836_481));
    assert_eq!(back.fleet.vms[0].disk, Bytes::ZERO);
    assert_eq!(back.network, network);
    assert_eq!(back.migration, inventory.migration.params);
    assert_eq!(back.controller, inventory.controller);
    assert_eq!(back.controller.aimd.max_window, 7);
}

#[test]
fn the_pick_saves_the_most_priority_then_finishes_first() {
    let inventory = Inventory::from_str_at(INVENTORY, Path::new("inv.toml")).unwrap();
    // 8 GiB dirtying and 1.5 GiB idle behind a 300 Mbps WAN, 90 s before
    // the rack dies: 9.5 GiB need 272 s at best, so some policy loses one.
    let measured = db_and_web(BytesPerSec(5e6));
    let fleet = scenario::with_measured(inventory.fleet(&[Bytes(1), Bytes(1)]), &measured, &[]);
    let plan = triage(
        &fleet,
        &inventory.network(),
        inventory.migration.params,
        &inventory.controller,
    );
    assert_eq!(plan.results.len(), 6);
    let best = plan.results.iter().map(|(_, r)| r.priority_saved).max().unwrap();
    let pick = plan.recommended_result();
    assert_eq!(pick.priority_saved, best);
    let fastest_equal = plan
        .results
        .iter()
        .filter(|(_, r)| (r.priority_saved, r.migrated) == (pick.priority_saved, pick.migrated))
        .filter_map(|(_, r)| r.total_time_s)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(pick.total_time_s, Some(fastest_equal));
    assert_eq!(plan.controller.policy, plan.recommended_policy());
}

/// What was measured goes into the fleet: the content sample's zero share
/// and ratio, a dirty curve when the samples found a working set; what the
/// inventory states wins.
#[test]
fn the_measured_profile_goes_into_the_fleet_unless_stated() {
    use evac_plan::measure::DirtySample;
    use evac_plan::sample::Content;
    let inventory = Inventory::from_str_at(INVENTORY, Path::new("inv.toml")).unwrap();
    let content = Content {
        pages_sampled: 4096,
        runs_sampled: 256,
        zero_fraction: 0.6,
        zero_fraction_stderr: 0.01,
        compression_ratio: 2.5,
        compression_ratio_stderr: 0.05,
    };
    // 20 MiB/s over 2 s, then 64 MiB within 8 s (not 160: a working set).
    let sample = |seconds, mib: u64| DirtySample {
        seconds,
        dirtied_bytes: mib << 20,
        uncertainty_bytes: (seconds + 1) << 20,
    };
    let measured = [
        Measured {
            memory: Bytes::gib(8),
            dirty_rate: BytesPerSec(20.0 * 1_048_576.0),
            working_set: Bytes::mib(64),
            dirtied: vec![sample(2, 40), sample(8, 64)],
            content: Some(content),
        },
        Measured::idle(Bytes::gib(1)),
    ];
    let fleet = scenario::with_measured(inventory.fleet(&[Bytes(1), Bytes(1)]), &measured, &[]);
    let db = &fleet.vms[0];
    assert_eq!(
        (db.profile.zero_fraction, db.profile.compression_ratio),
        (0.6, 2.5)
    );
    assert_eq!(db.profile.dirty_curve.len(), 2);
    assert_eq!(db.working_set, Bytes::mib(64));
    assert_eq!(db.dirty_rate, BytesPerSec(20.0 * 1_048_576.0));
    // Within 5 s: 40 MiB + 24 MiB x 3/6.
    assert_eq!(db.dirtied_within(5.0), (52u64 << 20) as f64);
    assert_eq!(fleet.vms[1].profile, evac_model::MemoryProfile::default());
    let stated = [scenario::Stated {
        zero_fraction: true,
        compression_ratio: false,
    }];
    let fleet = scenario::with_measured(inventory.fleet(&[Bytes(1), Bytes(1)]), &measured, &stated);
    assert_eq!(fleet.vms[0].profile.zero_fraction, 0.0);
    assert_eq!(fleet.vms[0].profile.compression_ratio, 2.5);
}
