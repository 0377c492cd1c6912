//! What the run leaves: the timeline and the [`RunResult`].

use evac_model::Bytes;
use evac_outcome::{reason, Outcome, RunResult, TimelinePoint, VmRecord, MAX_TIMELINE_POINTS};

use crate::WAN;

use super::Simulation;

impl Simulation<'_> {
    /// Records a timeline point if the WAN's capacity, its load or the
    /// migrations in flight changed since the last one (and, at the `end`,
    /// once more if time passed): between two points the throughput is
    /// constant, so the timeline is exact at a point per change, not per
    /// period.
    pub(super) fn note_timeline(&mut self, end: bool) {
        let state = (self.flows.len(), self.capacity[WAN], self.load[WAN]);
        let (last_t, last_wan) = match self.last_point {
            Some((t, wan, last_state)) => {
                // The WAN's load as a sum of rates, or as `λ × W` in the
                // fluid model, can differ in its last bits for one
                // allocation: a change is more than rounding.
                let (flows, capacity, load) = last_state;
                let load_moved = (load - state.2).abs() > 1e-12 * load.abs().max(state.2.abs());
                let changed = flows != state.0 || capacity != state.1 || load_moved || (end && self.now > t);
                if !changed || self.now < t {
                    return;
                }
                (t, wan)
            }
            None => (0.0, 0.0),
        };
        self.advance_wan();
        match self.timeline.last_mut() {
            // Two changes at one instant: the later state stands.
            Some(point) if point.t_s == self.now => {
                point.wan_capacity_bps = Some(self.capacity[WAN] * 8.0);
                point.in_flight = self.flows.len();
            }
            _ => {
                let throughput = if self.now > last_t {
                    (self.carried[WAN] - last_wan) * 8.0 / (self.now - last_t)
                } else {
                    0.0
                };
                self.timeline.push(TimelinePoint {
                    t_s: self.now,
                    wan_capacity_bps: Some(self.capacity[WAN] * 8.0),
                    wan_throughput_bps: throughput,
                    in_flight: self.flows.len(),
                });
                if self.timeline.len() > MAX_TIMELINE_POINTS {
                    // Bounded memory over any horizon: halve, exactly in bytes.
                    evac_outcome::thin_timeline(&mut self.timeline);
                }
            }
        }
        self.last_point = Some((self.now, self.carried[WAN], state));
    }

    pub(crate) fn into_result(mut self, policy: &str) -> RunResult {
        // Flows still in flight (cut off by the horizon, or stuck) count
        // their bytes: chained rounds are settled first.
        self.unchain_all();
        let fleet = self.fleet;
        // Attempts cut off by the horizon: their bytes count.
        let mut sent = vec![0.0; fleet.vms.len()];
        let (now, v) = (self.now, self.clock.at(self.now));
        for flow in &self.flows {
            sent[flow.vm.0] = flow.earlier_rounds + flow.round_sent_at(now, v);
        }
        let records = fleet
            .vm_ids()
            .map(|id| {
                let vm = fleet.vm(id);
                let p = &self.progress[id.0];
                let (outcome, reason) = if p.migrated {
                    (Outcome::Migrated, None)
                } else if p.lost {
                    (Outcome::Lost, Some(reason::POWER_OFF.to_owned()))
                } else if self.horizon_reached {
                    (Outcome::NotMigrated, Some(reason::HORIZON.to_owned()))
                } else if fleet.host(vm.host).power_off_at.is_some() {
                    // Left on a host whose power will fail: whatever was
                    // decided before, nothing moves it now, so it is lost.
                    (Outcome::Lost, Some(reason::LEFT_TO_POWER_OFF.to_owned()))
                } else {
                    // Still on its source when the controller stopped
                    // starting migrations.
                    (Outcome::NotMigrated, Some(reason::GIVEN_UP.to_owned()))
                };
                VmRecord {
                    name: vm.name.clone(),
                    host: fleet.host(vm.host).name.clone(),
                    destination: p.destination.map(|d| fleet.host(d).name.clone()),
                    start_s: p.start,
                    end_s: p.end,
                    migration_time_s: p.end.zip(p.start).map(|(end, start)| end - start),
                    downtime_s: p.downtime,
                    rounds: p.rounds,
                    bytes_sent: p.start.map(|_| Bytes::from_f64(p.sent + sent[id.0]).0),
                    outcome,
                    reason,
                    mode: p.mode,
                    connections: p.connections,
                    compression: p.compressed.map(|c| {
                        if c {
                            evac_model::Compression::Zstd
                        } else {
                            evac_model::Compression::None
                        }
                    }),
                    decisions: Vec::new(),
                }
            })
            .collect();
        let mut result = RunResult::summarize(policy, fleet, self.network, records, self.timeline);
        result.failed_attempts = self.failed;
        result
    }
}
