//! The links: bytes carried, the WAN's trace, and the migrations' rates
//! (a full max-min solve, or the fluid model's virtual clock).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use evac_model::{Bytes, HostId};

use crate::fair_share;
use crate::flow::RoundEnd;
use crate::fluid::Clock;
use crate::radix::time_of_key;
use crate::{Solver, WAN};

use super::Simulation;

impl Simulation<'_> {
    /// Brings every loaded link's carried bytes up to now (the others carry
    /// nothing), and the hosts' counters with them.
    pub(super) fn advance_links(&mut self) {
        if self.fluid_on {
            let v = self.clock.at(self.now);
            for i in 0..self.active_links.len() {
                self.settle_link(self.active_links[i], v);
            }
            self.links_as_of = self.now;
            return;
        }
        let elapsed = self.now - self.links_as_of;
        if elapsed > 0.0 {
            for &l in &self.active_links {
                self.carried[l] += self.load[l] * elapsed;
                if l != WAN && self.load[l] != 0.0 {
                    let host = l - 1;
                    self.observations.host_tx[host] = Bytes::from_f64(self.carried[l]);
                    if !std::mem::replace(&mut self.tx_marked[host], true) {
                        self.tx_changed.push(HostId(host));
                    }
                }
            }
        }
        self.links_as_of = self.now;
    }

    /// Brings the WAN's carried bytes up to now (for the timeline).
    pub(super) fn advance_wan(&mut self) {
        if self.fluid_on {
            let v = self.clock.at(self.now);
            self.settle_link(WAN, v);
        } else {
            self.advance_links();
        }
    }

    /// After a change (a start, an end, a cap, the WAN's capacity): the new
    /// rates, in O(log flows) while the fluid model holds, by a full solve
    /// otherwise.
    pub(super) fn rebalance(&mut self) {
        let level = match self.solver {
            Solver::Fluid => self.bottleneck.wan_level(self.capacity[WAN]),
            Solver::FullSolve => None,
        };
        self.epoch += 1;
        if level.is_some() {
            self.stats.fluid_steps += 1;
        } else {
            self.stats.full_solves += 1;
        }
        match (level, self.fluid_on) {
            (Some(lambda), true) => self.retime(lambda),
            (Some(lambda), false) => self.enter_fluid(lambda),
            (None, fluid) => {
                if fluid {
                    self.leave_fluid();
                }
                self.reallocate();
            }
        }
    }

    /// A new `λ` from now on: a new segment of the virtual clock. Nothing
    /// else moves: every round's end is still where it was in virtual time.
    pub(super) fn retime(&mut self, lambda: f64) {
        // Chains that a faster clock could break are cut first, at the old
        // clock's reading.
        while let Some(&(limit, vm)) = self.chains.first() {
            if time_of_key(limit) >= lambda {
                break;
            }
            self.unchain(vm);
        }
        let v = self.clock.at(self.now);
        self.clock = Clock {
            v_at: v,
            t_at: self.now,
            lambda,
        };
        self.load[WAN] = lambda * self.bottleneck.weight(WAN);
        if self.chains.is_empty() {
            self.history.clear();
        } else {
            self.history.push(self.clock);
        }
    }

    /// From full solves to the fluid model: every flow's progress and every
    /// link's bytes brought up to now, then kept in virtual time.
    pub(super) fn enter_fluid(&mut self, lambda: f64) {
        let now = self.now;
        self.advance_links();
        // The clock stood still outside the fluid model.
        let v = self.clock.at(now);
        self.fluid_on = true;
        self.round_ends.clear();
        self.virtual_ends.clear();
        for slot in 0..self.flows.len() {
            let flow = &mut self.flows[slot];
            flow.catch_up(now, v);
            flow.fluid = flow.sending();
            flow.rate = 0.0;
            let (vm, links) = (flow.vm, flow.demand.links);
            for &l in fair_share::unique_links(&links) {
                self.v_mark[l] = v;
                if !std::mem::replace(&mut self.link_active[l], true) {
                    self.active_links.push(l);
                }
            }
            self.schedule(vm);
        }
        self.retime(lambda);
    }

    /// From the fluid model back to full solves: every flow's progress and
    /// every link's bytes brought up to now, for [`Self::reallocate`].
    pub(super) fn leave_fluid(&mut self) {
        self.unchain_all();
        self.history.clear();
        let now = self.now;
        let v = self.clock.at(now);
        self.advance_links();
        for flow in &mut self.flows {
            flow.catch_up(now, v);
            flow.fluid = false;
        }
        self.virtual_ends.clear();
        self.fluid_on = false;
        self.clock = Clock {
            v_at: v,
            t_at: now,
            lambda: 0.0,
        };
    }

    /// Recomputes every rate, and with them every round's end.
    pub(super) fn reallocate(&mut self) {
        let now = self.now;
        self.advance_links();
        let v = self.clock.at(now);
        self.demands.clear();
        for flow in &mut self.flows {
            flow.catch_up(now, v);
            self.demands.push(flow.demand);
        }
        self.fair_share
            .allocate(&self.capacity, &self.demands, &mut self.rates);
        for l in self.active_links.drain(..) {
            self.load[l] = 0.0;
            self.link_active[l] = false;
        }
        let mut events = std::mem::take(&mut self.round_ends).into_vec();
        events.clear();
        for (flow, &rate) in self.flows.iter_mut().zip(&self.rates) {
            flow.rate = rate;
            flow.generation += 1;
            for &l in fair_share::unique_links(&flow.demand.links) {
                self.load[l] += rate;
                if !std::mem::replace(&mut self.link_active[l], true) {
                    self.active_links.push(l);
                }
            }
            let at = flow.round_ends_at();
            if at.is_finite() {
                events.push(Reverse(RoundEnd {
                    at,
                    vm: flow.vm,
                    generation: flow.generation,
                }));
            }
        }
        self.round_ends = BinaryHeap::from(events);
    }
}
