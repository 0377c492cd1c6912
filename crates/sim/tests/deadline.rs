//! The `deadline` policy against hand-computed evacuations with power-off
//! deadlines.

use std::time::Duration;

use evac_controller::{ControllerConfig, PolicyKind};
use evac_model::{BitsPerSec, Bytes, BytesPerSec, Fleet, Host, MigrationParams, Network, Site, Vm};
use evac_outcome::{Outcome, RunResult};

const GIB: f64 = 1073741824.0;
/// 1 GiB at 1 Gbps.
const ONE: f64 = GIB * 8.0 / 1e9;

fn host(name: &str, site: Site, power_off_at: Option<u64>) -> Host {
    Host {
        power_off_at: power_off_at.map(Duration::from_secs),
        ..evac_testkit::host(name, site)
    }
}

fn vm(name: &str, host: usize, dirty_rate: BytesPerSec) -> Vm {
    evac_testkit::busy_vm(name, host, Bytes::gib(1), dirty_rate)
}

fn wan() -> Network {
    evac_testkit::wan(BitsPerSec::gbps(1.0))
}

fn run(fleet: &Fleet, policy: PolicyKind) -> RunResult {
    let config = ControllerConfig {
        policy,
        ..ControllerConfig::default()
    };
    evac_sim::simulate_evacuation(fleet, &wan(), MigrationParams::default(), &config)
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < 1e-6
}

#[test]
fn the_host_about_to_die_goes_first_and_a_hopeless_vm_is_not_started() {
    // Listed first: a host that never dies. Then a host dying at 20 s with
    // three idle 1 GiB VMs: 8.59 s each alone, so only two can leave it.
    let fleet = Fleet {
        hosts: vec![
            host("safe", Site::Source, None),
            host("dying", Site::Source, Some(20)),
            host("dst", Site::Destination, None),
        ],
        vms: vec![
            vm("safe-1", 0, BytesPerSec::ZERO),
            vm("dying-1", 1, BytesPerSec::ZERO),
            vm("dying-2", 1, BytesPerSec::ZERO),
            vm("dying-3", 1, BytesPerSec::ZERO),
        ],
    };
    // Sequential, as listed: safe-1 ends at 8.59 s, dying-1 at 17.18 s,
    // dying-2 dies mid-migration at 20 s, dying-3 never starts.
    let sequential = run(&fleet, PolicyKind::Sequential);
    assert_eq!(sequential.migrated, 2);

    let deadline = run(&fleet, PolicyKind::Deadline);
    let outcome = |name: &str| {
        let record = deadline.vms.iter().find(|v| v.name == name).unwrap();
        (record.outcome, record.start_s, record.end_s)
    };
    assert_eq!(deadline.migrated, 3, "{}", deadline.to_json());
    assert_eq!(outcome("dying-1").0, Outcome::Migrated);
    assert_eq!(outcome("dying-2").0, Outcome::Migrated);
    // Two of 1 GiB leave by 2 * 8.59 = 17.18 s however they share the link;
    // a third would need until 25.77 s: it goes last, behind the safe VM
    // (which has the link from then on and ends by 17.18 + 8.59 s), so it
    // is never started and is lost with its host.
    assert_eq!(outcome("dying-3"), (Outcome::Lost, None, None));
    let (safe, _, safe_end) = outcome("safe-1");
    assert_eq!(safe, Outcome::Migrated);
    assert!(safe_end.unwrap() <= 3.0 * ONE + 1e-6, "{safe_end:?}");
}

#[test]
fn a_vm_that_cannot_converge_in_time_goes_offline_and_is_saved() {
    // It dirties its whole 1 GiB at 200 MB/s, faster than the 125 MB/s
    // link: precopy resends 1 GiB every round for 30 rounds (about 258 s),
    // and the host dies at 30 s.
    let fleet = Fleet {
        hosts: vec![
            host("dying", Site::Source, Some(30)),
            host("dst", Site::Destination, None),
        ],
        vms: vec![vm("busy", 0, BytesPerSec(200e6))],
    };
    let published = run(&fleet, PolicyKind::AimdGlobal);
    assert_eq!(published.lost, 1);

    // `deadline` pauses it at the last safe moment: at a tick t, the paused
    // copy would send what is left of the round plus at most the working set,
    // and it acts once 30 - t <= 1.5 * that copy's time + 2 periods. In
    // round 1 (0 to 8.59 s) that copy takes 17.18 - t s: never. Round 2
    // resends the 1 GiB working set from 8.59 s; at t = 9 s the copy would
    // take 25.77 - 9 s and 21 <= 1.5 * 16.77 + 2 holds. Paused at 9 s, it
    // sends the rest of round 2 plus what the guest dirtied since 8.59 s:
    // (2^30 - 125e6 (9 - 8.59) + 200e6 (9 - 8.59)) / 125e6 s.
    let deadline = run(&fleet, PolicyKind::Deadline);
    let record = &deadline.vms[0];
    assert_eq!(record.outcome, Outcome::Migrated, "{}", deadline.to_json());
    let into_round_2 = 9.0 - ONE;
    let copy = (GIB + 75e6 * into_round_2) / 125e6;
    assert!(close(record.end_s.unwrap(), 9.0 + copy), "{record:?}");
    assert!(close(record.downtime_s.unwrap(), copy), "{record:?}");
}

#[test]
fn long_rtt_connections_are_multiplied_until_one_migration_fills_the_wan() {
    // One connection carries 4 MiB per 100 ms = 335.5 Mbit/s of a 1 Gbps
    // WAN. Twelve idle VMs on one host: sequential with one connection takes
    // 12 * 8 * 2^30 / 335544320 = 307.2 s; the WAN itself needs 12 * 8.59 s.
    let network = Network {
        wan_bandwidth: BitsPerSec::gbps(1.0),
        wan_rtt: Duration::from_millis(100),
        tcp_window: Bytes::mib(4),
        wan_trace: vec![],
    };
    let fleet = Fleet {
        hosts: vec![
            host("src", Site::Source, None),
            host("dst", Site::Destination, None),
        ],
        vms: (0..12)
            .map(|i| vm(&format!("vm-{i}"), 0, BytesPerSec::ZERO))
            .collect(),
    };
    let run = |policy| {
        let config = ControllerConfig {
            policy,
            ..ControllerConfig::default()
        };
        evac_sim::simulate_evacuation(&fleet, &network, MigrationParams::default(), &config)
    };
    let sequential = run(PolicyKind::Sequential);
    assert!(close(sequential.total_time_s.unwrap(), 307.2));
    let deadline = run(PolicyKind::Deadline);
    let aimd = run(PolicyKind::AimdGlobal);
    // Once connections are doubled to 4 (1342 Mbit/s), a migration alone
    // fills the WAN: the last VMs move at 8.59 s each, one at a time.
    let last = deadline.vms.last().unwrap();
    assert!(close(last.migration_time_s.unwrap(), ONE), "{last:?}");
    // The first ones, started before the connections were multiplied, run
    // slower: the whole takes a little over the WAN's 12 * 8.59 s, not the
    // 307.2 s of one connection at a time.
    assert!(
        deadline.total_time_s.unwrap() < 12.0 * ONE * 1.2,
        "{}",
        deadline.total_time_s.unwrap()
    );
    assert!(
        deadline.score.unwrap() < aimd.score.unwrap(),
        "{:?} vs {:?}",
        deadline.score,
        aimd.score
    );
}
