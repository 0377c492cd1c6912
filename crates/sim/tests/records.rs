//! What each VM's record says of how it was moved and why: its last
//! attempt's mode and connections, and the controller's decisions, in the
//! result and its JSON.

use std::time::Duration;

use evac_controller::{ControllerConfig, PolicyKind};
use evac_model::{BitsPerSec, Bytes, Fleet, MigrationParams, Mode, Network};
use evac_outcome::Outcome;
use evac_testkit::{two_sites_until, vm, wan_with};

fn fleet(power_off_at: Option<Duration>, sizes_mib: &[u64]) -> Fleet {
    two_sites_until(
        power_off_at,
        sizes_mib
            .iter()
            .enumerate()
            .map(|(i, &mib)| vm(&format!("vm-{i}"), 0, Bytes::mib(mib)))
            .collect(),
    )
}

/// 1 Gbps (125 MB/s), 20 ms, a window that never limits.
fn network() -> Network {
    wan_with(BitsPerSec::gbps(1.0), Duration::from_millis(20), Bytes::gib(1))
}

#[test]
fn a_published_policy_records_mode_and_connections_and_no_decisions() {
    let params = MigrationParams {
        connections: evac_model::Connections::new(2).unwrap(),
        ..MigrationParams::default()
    };
    let config = ControllerConfig {
        policy: PolicyKind::Sequential,
        ..ControllerConfig::default()
    };
    let result = evac_sim::simulate_evacuation(&fleet(None, &[64, 64]), &network(), params, &config);
    for vm in &result.vms {
        assert_eq!(vm.outcome, Outcome::Migrated);
        assert_eq!(vm.mode, Some(Mode::Live));
        assert_eq!(vm.connections, Some(2));
        assert!(vm.decisions.is_empty());
    }
    let json: serde_json::Value = serde_json::from_str(&result.to_json()).unwrap();
    let vm = &json["vms"][0];
    assert_eq!(vm["mode"], "live");
    assert_eq!(vm["connections"], 2);
    assert!(vm.get("decisions").is_none(), "{vm}");
}

/// Two idle VMs on a host that powers off at 10 s: 512 MiB takes 4.3 s at
/// 125 MB/s and is saved; 4 GiB would take 34.4 s, more than the 10 s
/// there are, and no schedule saves it. `deadline` says so in the records,
/// and still tries it once nothing else wants the link.
#[test]
fn deadline_explains_each_vm_in_its_record() {
    let config = ControllerConfig {
        policy: PolicyKind::Deadline,
        ..ControllerConfig::default()
    };
    let fleet = fleet(Some(Duration::from_secs(10)), &[512, 4096]);
    let result = evac_sim::simulate_evacuation(&fleet, &network(), MigrationParams::default(), &config);
    let (small, large) = (&result.vms[0], &result.vms[1]);
    assert_eq!(small.outcome, Outcome::Migrated, "{small:?}");
    assert_ne!(large.outcome, Outcome::Migrated, "{large:?}");
    let first = small.decisions.first().expect("no decision for the small VM");
    assert_eq!(first.decision, "start", "{:?}", small.decisions);
    assert_eq!(small.mode, Some(Mode::Live));
    // Planned last, not given up: it starts only once the small one is
    // across (4.29 s), on room nothing else wants, and its host's
    // power-off takes it.
    assert_eq!(large.decisions[0].decision, "last", "{:?}", large.decisions);
    assert!(
        large.start_s.is_some_and(|s| s >= 512.0 * 1048576.0 / 125e6),
        "{large:?}"
    );
    assert_eq!(large.outcome, Outcome::Lost, "{large:?}");
    let json: serde_json::Value = serde_json::from_str(&result.to_json()).unwrap();
    let decisions = json["vms"][1]["decisions"]
        .as_array()
        .expect("decisions in the JSON");
    assert!(decisions
        .iter()
        .all(|d| d["why"].as_str().is_some_and(|w| !w.is_empty())));
    // Read back as written.
    let back: evac_outcome::RunResult = serde_json::from_str(&result.to_json()).unwrap();
    assert_eq!(back.vms, result.vms);
}
