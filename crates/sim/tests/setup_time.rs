//! The fixed cost of each migration (`setup_time`) against hand-computed
//! results: nothing moves during it, then the migration runs as before.

use std::time::Duration;

use evac_controller::PolicyKind;
use evac_model::{BitsPerSec, Bytes, BytesPerSec, MigrationParams, Vm};
use evac_testkit::{busy_vm, two_sites, two_sites_toml, wan};

mod common;

fn vm(name: &str, memory: Bytes, dirty_rate: BytesPerSec) -> Vm {
    busy_vm(name, 0, memory, dirty_rate)
}

fn simulate(vms: Vec<Vm>, policy: PolicyKind, setup: Duration) -> evac_outcome::RunResult {
    let params = MigrationParams {
        setup_time: setup,
        ..MigrationParams::default()
    };
    common::simulate(&two_sites(vms), &wan(BitsPerSec(100e6)), params, policy)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn an_idle_vm_takes_its_setup_then_its_memory_over_the_wan() {
    // 100 MiB over 100 Mbit/s: 838860800 bits / 1e8 = 8.388608 s, after 0.5 s.
    let result = simulate(
        vec![vm("a", Bytes::mib(100), BytesPerSec::ZERO)],
        PolicyKind::Sequential,
        Duration::from_millis(500),
    );
    let t = result.vms[0].migration_time_s.unwrap();
    assert!(close(t, 8.888608), "{t}");
    assert_eq!(result.vms[0].bytes_sent, Some(100 << 20));
}

#[test]
fn a_migration_setting_up_leaves_the_wan_to_others() {
    // Parallel: both start at 0 and wait out their 1 s setup, then share 100 Mbit/s: 2 x 50 MiB = 8.388608 s together.
    let result = simulate(
        vec![
            vm("a", Bytes::mib(50), BytesPerSec::ZERO),
            vm("b", Bytes::mib(50), BytesPerSec::ZERO),
        ],
        PolicyKind::Parallel,
        Duration::from_secs(1),
    );
    for record in &result.vms {
        let t = record.migration_time_s.unwrap();
        assert!(close(t, 9.388608), "{}: {t}", record.name);
    }
}

#[test]
fn dirtying_starts_counting_with_the_first_round() {
    // 100 MiB at 100 Mbit/s: round 1 takes T1 = 8.388608 s and dirties
    // 1 MB/s x T1 = 8388608 bytes (the setup dirties nothing the model
    // counts); at 12.5 MB/s that is 0.671 s > 300 ms, so round 2 sends them
    // in 0.67108864 s, dirtying 671088.64 bytes: 53.7 ms, stop-and-copy.
    let result = simulate(
        vec![vm("d", Bytes::mib(100), BytesPerSec(1e6))],
        PolicyKind::Sequential,
        Duration::from_millis(200),
    );
    let r = &result.vms[0];
    let expected = 0.2 + 8.388608 + 0.67108864 + 0.67108864 * 1e6 / 12.5e6;
    assert!(
        close(r.migration_time_s.unwrap(), expected),
        "{:?} vs {expected}",
        r.migration_time_s
    );
    assert_eq!(r.rounds, Some(2));
}

#[test]
fn a_scenario_file_sets_the_setup_time() {
    let text = format!(
        "[network]\nwan_bandwidth = \"100 Mbps\"\n[migration]\nsetup_time = \"250 ms\"\n{}",
        two_sites_toml(&[("v", "100 MiB")])
    );
    let scenario = evac_scenario::Scenario::from_toml_str(&text, "test").unwrap();
    assert_eq!(scenario.migration.setup_time, Duration::from_millis(250));
    let result = evac_sim::simulate_evacuation(
        &scenario.fleet,
        &scenario.network,
        scenario.migration,
        &scenario.controller,
    );
    // 0.25 s + 838860800 bits / 1e8 bit/s.
    let t = result.vms[0].migration_time_s.unwrap();
    assert!(close(t, 8.638608), "{t}");
}
