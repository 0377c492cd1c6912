//! A cancelled attempt is in the result, for the report's Gantt chart.

use std::time::Duration;

use evac_controller::{Action, Controller, Observations};
use evac_model::{BitsPerSec, Bytes, HostId, MigrationParams, VmId};
use evac_testkit::{two_sites, vm, wan};

/// Starts VM 0 at once, cancels it at 5 s, starts it again at 6 s.
struct CancelOnce {
    step: u32,
}

impl Controller for CancelOnce {
    fn on_tick(&mut self, obs: &Observations) -> Vec<Action> {
        let start = Action::Start {
            vm: VmId(0),
            destination: HostId(1),
            params: MigrationParams::default(),
        };
        match self.step {
            0 => {
                self.step = 1;
                vec![start]
            }
            1 if obs.now >= Duration::from_secs(5) => {
                self.step = 2;
                vec![Action::Cancel { vm: VmId(0) }]
            }
            2 if obs.now >= Duration::from_secs(6) => {
                self.step = 3;
                vec![start]
            }
            _ => vec![],
        }
    }

    fn name(&self) -> &str {
        "cancel-once"
    }
}

#[test]
fn a_cancelled_attempt_is_recorded_with_its_times() {
    let fleet = two_sites(vec![vm("vm", 0, Bytes::gib(1))]);
    let network = wan(BitsPerSec::gbps(1.0));
    let result = evac_sim::simulate(
        &fleet,
        &network,
        Duration::from_secs(1),
        &mut CancelOnce { step: 0 },
    );
    assert_eq!(result.failed_attempts.len(), 1, "{:?}", result.failed_attempts);
    let failed = &result.failed_attempts[0];
    assert_eq!(failed.vm, "vm");
    assert_eq!(failed.destination.as_deref(), Some("dst"));
    assert_eq!((failed.start_s, failed.end_s), (0.0, 5.0));
    assert_eq!(failed.reason, "cancelled");
    // The second attempt moves it: 1 GiB at 1 Gbps = 8.59 s from 6 s.
    assert_eq!(result.migrated, 1);
    let end = result.vms[0].end_s.unwrap();
    assert!((end - (6.0 + 1073741824.0 * 8.0 / 1e9)).abs() < 1e-6, "{end}");
}
