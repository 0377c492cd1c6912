//! The simulator as the planner's [`Rollout`]: the rest of an evacuation,
//! from the planner's picture of now, under one candidate plan and one
//! forecast of the WAN.
//!
//! What a rollout starts from:
//!
//! - each migration in flight as a VM still to move, listed first (so every
//!   candidate starts them before any other, as they are already running),
//!   pinned to the destination it is going to, with only its remaining
//!   bytes of the round as its memory, and its dirty rate; its progress and
//!   round are not carried over, so its TCP ramp and setup are paid again
//!   (a small pessimism every candidate shares);
//! - then the VMs waiting, as they are (memory, dirty rate, priority,
//!   pinned destination), in the candidate's order;
//! - every host's power-off counted from now; each destination's room less
//!   what is promised to it (the VMs moved there and on their way, as the
//!   evacuation counts them). Destinations once kept their whole room, an
//!   optimism that is not shared alike when they differ: on a site whose
//!   fast destinations had room for 48 GiB, plans counted on them long after
//!   they were full (docs/planner.md).
//!
//! The WAN is the forecast's: constant, or the steps of its trace (the
//! WAN's last minutes replayed). Its simulation runs the candidate as
//! `static` runs it (or `deadline` without rollouts, for the planner's own
//! plan), so it never recurses.

use std::time::Duration;

use evac_controller::rollout::{Candidate, Forecast, Rollout, Situation, Verdict};
use evac_controller::{ControllerConfig, Evacuation};
use evac_model::{Bytes, Fleet, MigrationParams, Network, VmId};
use evac_outcome::Outcome;

use crate::Simulation;

/// Rollouts over the simulator, for the network, parameters and controller
/// settings of one evacuation.
#[derive(Debug, Clone)]
pub struct SimRollout {
    network: Network,
    params: MigrationParams,
    config: ControllerConfig,
}

impl SimRollout {
    pub fn new(network: &Network, params: MigrationParams, config: &ControllerConfig) -> Self {
        Self {
            network: network.clone(),
            params,
            config: config.clone(),
        }
    }
}

impl Rollout for SimRollout {
    fn evaluate(&self, situation: &Situation<'_>, candidate: Candidate, forecast: &Forecast) -> Verdict {
        let now = situation.now;
        let mut config = self.config.clone();
        let mut params = self.params;
        let mut waiting = situation.waiting.to_vec();
        if let Some(order) = candidate.configure(&mut config, &mut params) {
            // The candidate's order, behind the migrations in flight.
            order.sort(situation.fleet, &mut waiting);
        }
        let fleet = rest_of(situation, &waiting);
        let network = Network {
            wan_bandwidth: forecast.wan,
            wan_trace: forecast.trace.clone(),
            ..self.network.clone()
        };
        // What is left of the evacuation's horizon.
        config.horizon = Duration::from_secs_f64((config.horizon.as_secs_f64() - now).max(0.0));
        let mut controller = Evacuation::with_network(fleet.clone(), &network, params, config.clone());
        let mut sim = Simulation::new(&fleet, &network, config.period);
        sim.horizon = config.horizon.as_secs_f64();
        sim.run(&mut controller);
        let result = sim.into_result("rollout");
        let mut verdict = Verdict::default();
        for (record, vm) in result.vms.iter().zip(&fleet.vms) {
            if record.outcome == Outcome::Migrated {
                verdict.priority_saved += u64::from(vm.priority);
                verdict.vms_saved += 1;
                verdict.finish_s = verdict.finish_s.max(record.end_s.unwrap_or(0.0));
                verdict.migration_s += record.migration_time_s.unwrap_or(0.0);
            }
        }
        verdict
    }
}

/// The rest of the evacuation as a fleet: the migrations in flight (their
/// remaining bytes, each on to its own destination), then `waiting` in
/// that order, with every host's power-off counted from now and each
/// destination's room less what is promised to it (hosts keep their ids,
/// so pinned destinations still point right).
fn rest_of(situation: &Situation<'_>, waiting: &[VmId]) -> Fleet {
    let now = situation.now;
    // What the rollout's fleet holds again: each migration in flight its
    // remaining bytes, at its destination.
    let mut again = vec![Bytes::ZERO; situation.fleet.hosts.len()];
    for m in situation.in_flight {
        if let Some(room) = again.get_mut(m.destination.0) {
            *room += m.bytes_remaining.max(Bytes::mib(1));
        }
    }
    let hosts = situation
        .fleet
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| evac_model::Host {
            power_off_at: h
                .power_off_at
                .map(|at| Duration::from_secs_f64((at.as_secs_f64() - now).max(0.0))),
            // The planner knows the power-offs announced so far, not those
            // to come.
            power_trace: Vec::new(),
            // The room the VMs moved and moving leave: a 64 GiB destination
            // started whole at every rollout made plans that counted on the
            // fastest destination long after it was full.
            memory: h.memory.map(|room| {
                let promised = situation.committed.get(i).copied().unwrap_or(Bytes::ZERO);
                Bytes(room.0.saturating_sub(promised.0).saturating_add(again[i].0))
            }),
            ..h.clone()
        })
        .collect();
    let in_flight = situation.in_flight.iter().map(|m| {
        let vm = situation.fleet.vm(m.vm);
        let left = m.bytes_remaining.max(Bytes::mib(1));
        evac_model::Vm {
            memory: left,
            working_set: vm.working_set.min(left),
            disk: Bytes(0),
            destination: Some(m.destination),
            // Its remaining bytes are the wire's already (zero pages and
            // compression counted): sent as they are; the guest dirties as
            // it does.
            profile: evac_model::MemoryProfile {
                dirty_curve: vm.profile.dirty_curve.clone(),
                ..evac_model::MemoryProfile::default()
            },
            ..vm.clone()
        }
    });
    let vms = in_flight
        .chain(waiting.iter().map(|&vm| situation.fleet.vm(vm).clone()))
        .collect();
    Fleet { hosts, vms }
}

#[cfg(test)]
mod tests {
    use evac_controller::{MigrationObs, Phase};
    use evac_model::{BitsPerSec, BytesPerSec, HostId, Site, Vm};

    use super::*;

    fn fleet() -> Fleet {
        let host = |name: &str, site, power_off_at| evac_model::Host {
            power_off_at,
            ..evac_testkit::host(name, site)
        };
        let vm = |name: &str, gib: u64, priority| Vm {
            working_set: Bytes(0),
            priority,
            ..evac_testkit::vm(name, 0, Bytes::gib(gib))
        };
        Fleet {
            hosts: vec![
                host("a", Site::Source, Some(Duration::from_secs(100))),
                host("b", Site::Destination, None),
            ],
            vms: vec![vm("big", 8, 10), vm("small", 1, 1), vm("moving", 1, 1)],
        }
    }

    fn moving(rate_bps: f64, remaining: Bytes) -> MigrationObs {
        MigrationObs {
            vm: VmId(2),
            source: HostId(0),
            destination: HostId(1),
            phase: Phase::Precopy,
            round: 1,
            started_at: Duration::ZERO,
            bytes_sent: Bytes(0),
            bytes_remaining: remaining,
            rate: BitsPerSec(rate_bps),
            dirty_rate: BytesPerSec(0.0),
            params: MigrationParams::default(),
        }
    }

    #[test]
    fn the_rest_is_the_migrations_in_flight_first_then_the_waiting_vms() {
        let fleet = fleet();
        let in_flight = [moving(1e9, Bytes::mib(100))];
        let situation = Situation {
            now: 40.0,
            fleet: &fleet,
            waiting: &[VmId(1), VmId(0)],
            in_flight: &in_flight,
            committed: &[],
        };
        let rest = rest_of(&situation, situation.waiting);
        assert_eq!(rest.hosts[0].power_off_at, Some(Duration::from_secs(60)));
        let names: Vec<&str> = rest.vms.iter().map(|vm| vm.name.as_str()).collect();
        assert_eq!(names, ["moving", "small", "big"]);
        assert_eq!(rest.vms[0].memory, Bytes::mib(100));
    }

    #[test]
    fn the_rest_starts_each_destination_with_the_room_left_and_each_migration_on_its_way() {
        // b has 10 GiB; 6 GiB are promised to it (moved or moving), of
        // which the migration in flight still has 100 MiB to send: the
        // rollout lists that VM again with 100 MiB, pinned to b, so b's
        // room is 10 GiB - 6 GiB + 100 MiB.
        let mut fleet = fleet();
        fleet.hosts[1].memory = Some(Bytes::gib(10));
        let in_flight = [moving(1e9, Bytes::mib(100))];
        let committed = [Bytes::ZERO, Bytes::gib(6)];
        let situation = Situation {
            now: 40.0,
            fleet: &fleet,
            waiting: &[VmId(1)],
            in_flight: &in_flight,
            committed: &committed,
        };
        let rest = rest_of(&situation, situation.waiting);
        assert_eq!(rest.hosts[1].memory, Some(Bytes(4 * (1 << 30) + 100 * (1 << 20))));
        assert_eq!(
            rest.hosts[0].memory, fleet.hosts[0].memory,
            "a source keeps its own"
        );
        assert_eq!(rest.vms[0].destination, Some(HostId(1)));
        assert_eq!(
            rest.vms[1].destination, None,
            "a waiting VM goes where there is room"
        );
        // More promised than there is room (a resumed run): none, not a
        // wrap-around.
        let committed = [Bytes::ZERO, Bytes::gib(12)];
        let rest = rest_of(
            &Situation {
                committed: &committed,
                ..situation
            },
            situation.waiting,
        );
        assert_eq!(rest.hosts[1].memory, Some(Bytes::mib(100)));
    }

    #[test]
    fn a_rollout_saves_what_the_forecast_carries_before_the_power_off() {
        // 60 s left at 1 Gbit/s carry 7.5 GB: the 8 GiB VM (8.6 GB) cannot
        // make it alone by any plan, the 1 GiB one can. By priority, one at
        // a time: the big one first, lost at the power-off, and the small
        // one never starts; the planner's own plan saves the small one.
        let fleet = fleet();
        let situation = Situation {
            now: 40.0,
            fleet: &fleet,
            waiting: &[VmId(0), VmId(1)],
            in_flight: &[],
            committed: &[],
        };
        let network = Network {
            wan_bandwidth: BitsPerSec(1e9),
            wan_rtt: Duration::from_millis(10),
            tcp_window: Bytes::mib(64),
            wan_trace: Vec::new(),
        };
        let rollout = SimRollout::new(&network, MigrationParams::default(), &ControllerConfig::default());
        let forecast = Forecast {
            wan: BitsPerSec(1e9),
            trace: Vec::new(),
        };
        let by_priority = Candidate::Fixed(evac_controller::rollout::FixedPlan {
            order: evac_controller::Order::Priority,
            window: 1,
            per_host: usize::MAX,
            connections: evac_model::Connections::ONE,
            mode: evac_model::Mode::Live,
        });
        let fixed = rollout.evaluate(&situation, by_priority, &forecast);
        assert_eq!((fixed.priority_saved, fixed.vms_saved), (0, 0));
        let planner = rollout.evaluate(&situation, Candidate::Planner, &forecast);
        assert_eq!((planner.priority_saved, planner.vms_saved), (1, 1));
        // 1 GiB at 1 Gbit/s: at least 8.6 s after now.
        assert!(planner.finish_s > 8.5, "{planner:?}");
    }
}
