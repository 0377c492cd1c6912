//! The fluid model in virtual time: a start, a finish or a change of the
//! WAN's capacity in O(log flows) while every migration is held back by the
//! WAN alone.
//!
//! Max-min fairness over the WAN and the hosts' NICs ([`crate::fair_share`])
//! has a simple solution in the common wide case (thousands of migrations
//! sharing one WAN that is much thinner than the NICs behind it): the WAN is
//! the only bottleneck, and every sending flow runs at `weight × λ` with
//! `λ = C_wan / W`, `W` the total weight of the sending flows. That is the
//! max-min allocation exactly when no flow's cap is below its share
//! (`cap / weight ≥ λ` for all) and no NIC is overloaded by it
//! (`C_nic / W_nic ≥ λ` for all, `W_nic` the weight of the flows crossing
//! it): then progressive filling freezes every flow on the WAN at its first
//! step, with the same `λ` to the bit. [`Bottleneck`] keeps the least
//! `cap / weight` and the least `C_nic / W_nic` in ordered sets, so the check
//! costs O(log flows) after any change.
//!
//! While it holds, a flow's progress is its weight times one virtual clock
//! `V(t) = ∫ λ dt` ([`Clock`]): a round that has `b` bytes left at `V₀` ends
//! at `V₀ + b / weight`, whatever `λ` does meanwhile. So round ends sit in a
//! heap keyed by virtual time and stay valid when `λ` changes; a change costs
//! a new clock segment, not a pass over the flows. The bytes a link carried
//! are kept the same way (`weight × ΔV`), brought up to date only when its
//! weight changes or a counter is read. When the check fails the simulator
//! falls back to the full solve over every flow until it holds again.

use std::collections::BTreeSet;

use evac_model::VmId;

use crate::fair_share::{unique_links, Demand, Level};

/// The WAN's index among the links (host `h`'s NIC is `h + 1`).
const WAN: usize = 0;

/// The virtual clock: `V(t) = v_at + λ × (t - t_at)` since `t_at`, the last
/// change of `λ` (bytes per second per unit of weight).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Clock {
    pub v_at: f64,
    pub t_at: f64,
    pub lambda: f64,
}

impl Clock {
    /// `V` at time `t` (not before `t_at`).
    pub fn at(&self, t: f64) -> f64 {
        self.v_at + self.lambda * (t - self.t_at)
    }

    /// When `V` reaches `v` at the current `λ`: never if it stands still,
    /// at once if it already has.
    pub fn time_of(&self, v: f64) -> f64 {
        if v <= self.v_at {
            self.t_at
        } else if self.lambda > 0.0 {
            self.t_at + (v - self.v_at) / self.lambda
        } else {
            f64::INFINITY
        }
    }
}

/// The sending flows' weights per link and the two ordered sets the
/// WAN-only check reads. Flows in their setup time send nothing and are not
/// here.
#[derive(Debug, Default)]
pub(crate) struct Bottleneck {
    /// Per link, the weight of the sending flows crossing it (the WAN's:
    /// every sending flow's). Sums of small integers: exact.
    weight: Vec<f64>,
    /// `(C_nic / W_nic, link)` of every NIC some sending flow crosses.
    nic_levels: BTreeSet<(Level, usize)>,
    /// `(cap / weight, vm)` of every sending flow.
    cap_levels: BTreeSet<(Level, VmId)>,
}

impl Bottleneck {
    pub fn new(links: usize) -> Self {
        Self {
            weight: vec![0.0; links],
            ..Self::default()
        }
    }

    /// The weight of the sending flows crossing `link`.
    pub fn weight(&self, link: usize) -> f64 {
        self.weight[link]
    }

    /// A flow starts sending.
    pub fn add(&mut self, capacity: &[f64], vm: VmId, demand: &Demand) {
        self.reweigh(capacity, &demand.links, demand.weight);
        self.cap_levels.insert((Level(demand.cap / demand.weight), vm));
    }

    /// A sending flow stops (ended, lost, cancelled).
    pub fn remove(&mut self, capacity: &[f64], vm: VmId, demand: &Demand) {
        self.reweigh(capacity, &demand.links, -demand.weight);
        self.cap_levels.remove(&(Level(demand.cap / demand.weight), vm));
    }

    /// A sending flow's cap changes from `old` to `new`.
    pub fn recap(&mut self, vm: VmId, weight: f64, old: f64, new: f64) {
        self.cap_levels.remove(&(Level(old / weight), vm));
        self.cap_levels.insert((Level(new / weight), vm));
    }

    fn reweigh(&mut self, capacity: &[f64], links: &[usize; 3], by: f64) {
        for &l in unique_links(links) {
            let old = self.weight[l];
            let new = old + by;
            self.weight[l] = new;
            if l == WAN {
                continue;
            }
            if old > 0.0 {
                self.nic_levels.remove(&(Level(capacity[l] / old), l));
            }
            if new > 0.0 {
                self.nic_levels.insert((Level(capacity[l] / new), l));
            }
        }
    }

    /// `λ` if the WAN of capacity `wan` is every sending flow's only
    /// bottleneck (no cap and no NIC below it), else `None`. With nothing
    /// sending, 0: nothing moves.
    pub fn wan_level(&self, wan: f64) -> Option<f64> {
        let total = self.weight[WAN];
        if total <= 0.0 {
            return Some(0.0);
        }
        // As progressive filling computes the WAN's level, to the bit.
        let lambda = wan.max(0.0) / total;
        let capped = self.cap_levels.first().is_some_and(|(cap, _)| cap.0 < lambda);
        let nic_bound = self.nic_levels.first().is_some_and(|(nic, _)| nic.0 < lambda);
        (!capped && !nic_bound).then_some(lambda)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(links: [usize; 3], weight: f64, cap: f64) -> Demand {
        Demand { links, weight, cap }
    }

    #[test]
    fn wan_only_check_by_hand() {
        // WAN 100, source NICs 30 (link 1) and 100 (link 2), destination 1000 (link 3).
        let capacity = [100.0, 30.0, 100.0, 1000.0];
        let mut b = Bottleneck::new(4);
        assert_eq!(b.wan_level(100.0), Some(0.0));
        // One flow of weight 2 through NIC 1: λ = 100 / 2 = 50, but NIC 1
        // allows 30 / 2 = 15: not WAN-bound.
        b.add(&capacity, VmId(0), &demand([0, 1, 3], 2.0, 1e9));
        assert_eq!(b.wan_level(100.0), None);
        // With the WAN at 20: λ = 10 ≤ 15 and the cap: WAN-bound.
        assert_eq!(b.wan_level(20.0), Some(10.0));
        // A second flow (weight 2, NIC 2): λ = 100 / 4 = 25 > NIC 1's 15.
        b.add(&capacity, VmId(1), &demand([0, 2, 3], 2.0, 1e9));
        assert_eq!(b.wan_level(100.0), None);
        // The first leaves: λ = 50 ≤ NIC 2's 50 and NIC 3's 500.
        b.remove(&capacity, VmId(0), &demand([0, 1, 3], 2.0, 1e9));
        assert_eq!(b.wan_level(100.0), Some(50.0));
        // Its cap drops to 80 (40 per unit of weight) < 50: capped.
        b.recap(VmId(1), 2.0, 1e9, 80.0);
        assert_eq!(b.wan_level(100.0), None);
        assert_eq!(b.wan_level(80.0), Some(40.0));
        b.remove(&capacity, VmId(1), &demand([0, 2, 3], 2.0, 80.0));
        assert_eq!(b.weight(0), 0.0);
        assert!(b.nic_levels.is_empty() && b.cap_levels.is_empty());
    }

    #[test]
    fn clock_by_hand() {
        let clock = Clock {
            v_at: 10.0,
            t_at: 4.0,
            lambda: 2.0,
        };
        assert_eq!(clock.at(7.0), 16.0);
        assert_eq!(clock.time_of(16.0), 7.0);
        assert_eq!(clock.time_of(3.0), 4.0);
        let stopped = Clock { lambda: 0.0, ..clock };
        assert_eq!(stopped.time_of(11.0), f64::INFINITY);
    }
}
