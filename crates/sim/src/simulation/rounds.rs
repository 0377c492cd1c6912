//! Precopy rounds: their ends in the event queue, chains of rounds run as
//! one event, a migration's end, and a host's power-off.

use std::cmp::Reverse;

use evac_controller::{EndOutcome, Ended, Phase};
use evac_model::{Connections, HostId, Mode, VmId};

use crate::fair_share::{self, Demand};
use crate::flow::{Chain, Flow, RoundEnd, Stage};
use crate::radix::{key_of, time_of_key};
use crate::WAN;

use super::control::demand_cap;
use super::Simulation;

impl Simulation<'_> {
    pub(super) fn next_round_end(&mut self) -> f64 {
        self.peek_round_end().map_or(f64::INFINITY, |(at, _, _)| at)
    }

    /// The earliest live round end: its time, its VM, and whether it is in
    /// the virtual heap. Stale entries (a flow gone, or rescheduled) are
    /// dropped on the way.
    pub(super) fn peek_round_end(&mut self) -> Option<(f64, VmId, bool)> {
        let live = |slot: &[Option<usize>], flows: &[Flow], vm: VmId, generation: u64| {
            slot[vm.0].is_some_and(|s| flows[s].generation == generation)
        };
        let real = loop {
            match self.round_ends.peek() {
                Some(Reverse(event)) if !live(&self.slot, &self.flows, event.vm, event.generation) => {
                    self.round_ends.pop();
                }
                other => break other.map(|Reverse(event)| (event.at, event.vm, false)),
            }
        };
        let virt = loop {
            match self.virtual_ends.peek() {
                Some((_, vm, generation))
                    if !live(&self.slot, &self.flows, VmId(vm as usize), generation) =>
                {
                    self.virtual_ends.pop();
                }
                other => {
                    break other
                        .map(|(key, vm, _)| (self.clock.time_of(time_of_key(key)), VmId(vm as usize), true))
                }
            }
        };
        match (real, virt) {
            (Some(r), Some(v)) => Some(if (v.0, v.1) < (r.0, r.1) { v } else { r }),
            (r, v) => r.or(v),
        }
    }

    /// Takes the earliest live round end if it is due by `by`.
    pub(super) fn pop_round_end(&mut self, by: f64) -> Option<VmId> {
        let (at, vm, virt) = self.peek_round_end()?;
        if at > by {
            return None;
        }
        if virt {
            self.virtual_ends.pop();
        } else {
            self.round_ends.pop();
        }
        Some(vm)
    }

    pub(super) fn flow_mut(&mut self, vm: VmId) -> Option<&mut Flow> {
        self.slot[vm.0].map(|s| &mut self.flows[s])
    }

    /// Handles the end of a flow's round; true if the flow left.
    pub(super) fn end_round(&mut self, vm: VmId) -> bool {
        let now = self.now;
        let fleet = self.fleet;
        let spec = fleet.vm(vm);
        let working_set = spec.working_set.as_f64();
        let connection_cap = self.connection_cap;
        let v = self.clock.at(now);
        let fluid = self.fluid_on;
        let may_chain = self.may_chain;
        let flow = self.flow_mut(vm).expect("a live event has a flow");
        if let Stage::SettingUp { .. } = flow.stage {
            // Set up: the first round starts now, at the flow's full demand.
            flow.stage_done();
            flow.demand.cap = demand_cap(&flow.params, connection_cap);
            flow.round_started_at = now;
            flow.as_of = now;
            flow.v_as_of = v;
            flow.fluid = fluid;
            let (source, compressed) = (flow.source, flow.compressed);
            let slot = self.slot[vm.0].expect("in flight");
            self.join(slot);
            if compressed {
                self.recap_compressors(source);
            }
            self.schedule(vm);
            return true;
        }
        if let Some(chain) = flow.chain.take() {
            // The chain's last round ended: what the normal path would do
            // after each of them, at once (each sent `ws`, and the guest
            // dirtied `ws` again during the last).
            let ws_wire = working_set * flow.resend_wire;
            flow.earlier_rounds += f64::from(chain.rounds) * ws_wire;
            flow.round = flow.params.max_rounds;
            flow.round_bytes = ws_wire;
            flow.round_sent = 0.0;
            flow.round_started_at = now;
            flow.as_of = now;
            flow.v_as_of = v;
            flow.phase = Phase::StopAndCopy;
            flow.paused_at = Some(now);
            self.chains.remove(&(key_of(chain.limit), vm));
            self.schedule(vm);
            return false;
        }
        flow.round_sent = flow.round_bytes;
        flow.as_of = now;
        flow.v_as_of = v;
        if flow.stage == Stage::CopyingDisk {
            // The disks are across (their writes mirrored from now on): round
            // 1 of memory starts, the guest's dirtying counted from here.
            flow.stage_done();
            flow.earlier_rounds += flow.round_bytes;
            flow.round_sent = 0.0;
            flow.round_bytes = flow.memory;
            flow.round_started_at = now;
            // Compressing from now on: its host's CPU counts.
            let (source, compressed) = (flow.source, flow.compressed);
            let recapped = compressed && self.recap_compressors(source);
            self.schedule(vm);
            return recapped;
        }
        match flow.phase {
            Phase::Precopy => {
                let elapsed = now - flow.round_started_at;
                // Memory the guest dirtied, re-sent as non-zero pages.
                let dirtied = spec.dirtied_within(elapsed);
                let dirtied_wire = dirtied * flow.resend_wire;
                let rate = if elapsed > 0.0 {
                    flow.round_bytes / elapsed
                } else {
                    f64::INFINITY
                };
                let converged = dirtied_wire / rate <= flow.params.downtime_limit.as_secs_f64();
                let was_first = flow.first_pass();
                flow.earlier_rounds += flow.round_bytes;
                flow.round_sent = 0.0;
                flow.round_bytes = dirtied_wire;
                flow.round_started_at = now;
                let (source, compressed) = (flow.source, flow.compressed);
                if flow.params.mode == Mode::Postcopy {
                    flow.phase = Phase::Postcopy;
                    flow.paused_at = Some(now);
                    // Postcopy's pages go as they are.
                    flow.round_bytes = dirtied;
                    flow.compressed = false;
                    flow.resend_wire = 1.0;
                    let mut changed = self.postcopy_on_one_connection(vm);
                    if compressed {
                        changed |= self.recap_compressors(source);
                    }
                    self.schedule(vm);
                    return changed;
                } else if converged || flow.round >= flow.params.max_rounds {
                    flow.phase = Phase::StopAndCopy;
                    flow.paused_at = Some(now);
                } else {
                    flow.round += 1;
                    let ws_wire = working_set * flow.resend_wire;
                    if may_chain && flow.fluid && dirtied == working_set && working_set > 0.0 {
                        let recapped = compressed && was_first && self.recap_compressors(source);
                        self.try_chain(vm, spec.saturated_after(), ws_wire);
                        return recapped;
                    }
                }
                // From the first pass to re-sent pages: the CPU a wire byte
                // takes changed.
                let recapped = compressed && was_first && self.recap_compressors(source);
                self.schedule(vm);
                recapped
            }
            Phase::StopAndCopy | Phase::Offline | Phase::Postcopy => {
                self.finish(vm);
                true
            }
        }
    }

    /// Chains the rounds from the one starting now (saturated: it sends
    /// `ws`) to `max_rounds` if `λ` is low enough for them all to go the
    /// same way (see [`Chain`]); schedules the flow in any case.
    ///
    /// `saturated_after`: how long a round must last for the guest to dirty
    /// its whole working set; `ws_wire`: the working set's wire bytes.
    pub(super) fn try_chain(&mut self, vm: VmId, saturated_after: f64, ws_wire: f64) {
        let lambda = self.clock.lambda;
        let v = self.clock.at(self.now);
        let flow = self.flow_mut(vm).expect("in flight");
        let rounds = flow.params.max_rounds.saturating_sub(flow.round) + 1;
        // Each round must last at least this long: long enough to dirty
        // `ws` and too long to converge (with a margin for rounding).
        let shortest = saturated_after.max(flow.params.downtime_limit.as_secs_f64()) * (1.0 + 1e-9);
        let length = ws_wire / flow.demand.weight;
        let limit = length / shortest;
        if rounds < 2 || lambda >= limit || !limit.is_finite() {
            self.schedule(vm);
            return;
        }
        flow.chain = Some(Chain {
            start_v: v,
            rounds,
            limit,
        });
        flow.generation += 1;
        let generation = flow.generation;
        self.virtual_ends
            .push(key_of(v + f64::from(rounds) * length), vm.0 as u64, generation);
        if self.chains.is_empty() {
            // The history starts with the current segment.
            self.history.clear();
            self.history.push(self.clock);
        }
        self.chains.insert((key_of(limit), vm));
        self.stats.chains += 1;
    }

    /// Cuts `vm`'s chain, if any, where the clock is now: the rounds done
    /// are counted, the one under way goes on as a round of its own.
    pub(super) fn unchain(&mut self, vm: VmId) {
        let Some(slot) = self.slot[vm.0] else { return };
        let Some(chain) = self.flows[slot].chain.take() else {
            return;
        };
        self.chains.remove(&(key_of(chain.limit), vm));
        self.stats.chains_cut += 1;
        let now = self.now;
        let v = self.clock.at(now);
        let working_set = self.fleet.vm(vm).working_set.as_f64() * self.flows[slot].resend_wire;
        let length = working_set / self.flows[slot].demand.weight;
        let done = (((v - chain.start_v) / length).floor().max(0.0) as u32).min(chain.rounds - 1);
        let began_v = chain.start_v + f64::from(done) * length;
        let began = if done == 0 {
            self.flows[slot].round_started_at
        } else {
            self.time_of_past(began_v)
        };
        let flow = &mut self.flows[slot];
        flow.earlier_rounds += f64::from(done) * working_set;
        flow.round += done;
        flow.round_bytes = working_set;
        flow.round_sent = 0.0;
        flow.round_started_at = began;
        flow.as_of = began;
        flow.v_as_of = began_v;
        flow.catch_up(now, v);
        self.schedule(vm);
    }

    /// Cuts every chain (the fluid model ends, or the controller reads
    /// progress).
    pub(super) fn unchain_all(&mut self) {
        while let Some(&(_, vm)) = self.chains.first() {
            self.unchain(vm);
        }
    }

    /// When the virtual clock first read `v` (at most its reading now).
    pub(super) fn time_of_past(&self, v: f64) -> f64 {
        let j = self.history.partition_point(|c| c.v_at < v);
        if j < self.history.len() && self.history[j].v_at == v {
            return self.history[j].t_at;
        }
        let Some(segment) = j.checked_sub(1).map(|i| self.history[i]) else {
            return self.history.first().map_or(self.now, |c| c.t_at);
        };
        if segment.lambda > 0.0 {
            segment.t_at + (v - segment.v_at) / segment.lambda
        } else {
            segment.t_at
        }
    }

    pub(super) fn schedule(&mut self, vm: VmId) {
        let flow = self.flow_mut(vm).expect("scheduling a flow in flight");
        flow.generation += 1;
        if flow.fluid {
            let (key, generation) = (key_of(flow.virtual_end()), flow.generation);
            self.virtual_ends.push(key, vm.0 as u64, generation);
            return;
        }
        let event = RoundEnd {
            at: flow.round_ends_at(),
            vm,
            generation: flow.generation,
        };
        if event.at.is_finite() {
            self.round_ends.push(Reverse(event));
        }
    }

    pub(super) fn remove_flow(&mut self, vm: VmId) -> Flow {
        let slot = self.slot[vm.0].take().expect("removing a flow in flight");
        let flow = self.flows.swap_remove(slot);
        self.generation_of[vm.0] = flow.generation;
        if let Some(moved) = self.flows.get(slot) {
            self.slot[moved.vm.0] = Some(slot);
        }
        if flow.sending() {
            self.settle_links_of(&flow.demand);
            self.bottleneck.remove(&self.capacity, vm, &flow.demand);
        }
        if flow.compressing() {
            // Its host's CPU goes to the others (each caller recomputes
            // the rates).
            self.recap_compressors(flow.source);
        }
        flow
    }

    /// The flow in `slot` starts sending: its weight joins its links'.
    pub(super) fn join(&mut self, slot: usize) {
        self.flows[slot].joined = self.epoch;
        let (vm, demand) = (self.flows[slot].vm, self.flows[slot].demand);
        self.settle_links_of(&demand);
        self.bottleneck.add(&self.capacity, vm, &demand);
    }

    /// In the fluid model, brings the bytes carried by `demand`'s links up
    /// to now before their weights change.
    pub(super) fn settle_links_of(&mut self, demand: &Demand) {
        if self.fluid_on {
            let v = self.clock.at(self.now);
            for &l in fair_share::unique_links(&demand.links) {
                self.settle_link(l, v);
            }
        }
    }

    /// In the fluid model: link `l` carried `weight × ΔV` since it was last
    /// brought up to date; its host's counter moved if that is not nothing.
    pub(super) fn settle_link(&mut self, l: usize, v: f64) {
        let weight = self.bottleneck.weight(l);
        if weight > 0.0 && v > self.v_mark[l] {
            self.carried[l] += weight * (v - self.v_mark[l]);
            if l != WAN && !std::mem::replace(&mut self.tx_marked[l - 1], true) {
                self.tx_changed.push(HostId(l - 1));
            }
        }
        self.v_mark[l] = v;
        if !std::mem::replace(&mut self.link_active[l], true) {
            self.active_links.push(l);
        }
    }

    pub(super) fn finish(&mut self, vm: VmId) {
        let now = self.now;
        let flow = self.remove_flow(vm);
        let progress = &mut self.progress[vm.0];
        progress.sent += flow.sent();
        progress.end = Some(now);
        progress.downtime = Some(if flow.phase == Phase::Postcopy {
            // The one pause: the switch-over's round trip.
            self.network.wan_rtt.as_secs_f64()
        } else {
            now - flow.paused_at.unwrap_or(flow.started_at)
        });
        progress.rounds = Some(if flow.params.mode == Mode::Offline {
            0
        } else {
            flow.round
        });
        progress.migrated = true;
        self.unresolved -= 1;
        self.ended.push(Ended {
            vm,
            outcome: EndOutcome::Completed,
        });
    }

    /// QEMU before 10.1 sends postcopy's pages over one connection,
    /// whatever multifd had: `vm`'s flow (caught up to now, just switched)
    /// goes on with one connection's weight and cap. True if that changed
    /// its demand.
    pub(super) fn postcopy_on_one_connection(&mut self, vm: VmId) -> bool {
        let connection_cap = self.connection_cap;
        if self.flow_mut(vm).is_none_or(|f| f.demand.weight == 1.0) {
            return false;
        }
        // A flow's weight is the one thing the fluid model's virtual clock
        // takes as fixed while it holds (a flow's progress is its weight
        // times the clock's advance). Out of it first, with every rate and
        // round end solved as they stand (the instant's other round ends
        // stay in this instant), so that until the rebalance that follows,
        // this flow and every other report the rates a full solve gives
        // them (the fluid model reported the new weight's at once, and a
        // controller consulted in between decided otherwise:
        // crates/sim/tests/fluid.rs found it).
        if self.fluid_on {
            self.leave_fluid();
            self.reallocate();
        }
        let Some(flow) = self.flow_mut(vm) else {
            return false;
        };
        flow.params.connections = Connections::ONE;
        let old = flow.demand;
        flow.demand.weight = 1.0;
        if flow.sending() {
            flow.demand.cap = demand_cap(&flow.params, connection_cap);
        }
        let (new, sending) = (flow.demand, flow.sending());
        let changed = old.weight != new.weight || old.cap != new.cap;
        if sending && changed {
            self.settle_links_of(&old);
            self.bottleneck.remove(&self.capacity, vm, &old);
            self.bottleneck.add(&self.capacity, vm, &new);
        }
        changed
    }

    /// Loses every VM of `host` that has not left yet; true if flows left.
    pub(super) fn power_off(&mut self, host: HostId) -> bool {
        let now = self.now;
        let mut flows_left = false;
        for i in 0..self.vms_by_host[host.0].len() {
            let vm = self.vms_by_host[host.0][i];
            if let Some(slot) = self.slot[vm.0] {
                self.unchain(vm);
                let v = self.clock.at(now);
                self.flows[slot].catch_up(now, v);
                let flow = self.remove_flow(vm);
                self.progress[vm.0].sent += flow.sent();
                self.ended.push(Ended {
                    vm,
                    outcome: EndOutcome::Lost,
                });
                flows_left = true;
            }
            let progress = &mut self.progress[vm.0];
            if !progress.migrated && !progress.lost {
                progress.lost = true;
                self.unresolved -= 1;
            }
        }
        flows_left
    }
}
