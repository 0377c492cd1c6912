//! Max-min fair sharing of links among capped, weighted flows.
//!
//! A migration with `k` parallel TCP connections is one flow of weight `k`:
//! its connections take equal shares of every link they cross, so the
//! migration gets `k` shares. Each flow also has a cap (its connections'
//! window/RTT limit, and the migration's bandwidth cap).
//!
//! The allocation is computed by progressive filling: a level `λ` rises from
//! zero, every unfrozen flow runs at `weight × λ`, and a flow freezes when
//! it reaches its cap or when a link it crosses fills up. The result is the
//! unique weighted max-min fair allocation: every flow is either at its cap
//! or crosses a full link on which no flow has a larger rate per weight.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// One flow's demand on the links.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    /// Indices into the link capacities this flow crosses.
    pub links: [usize; 3],
    /// Shares the flow takes of each link (its TCP connections).
    pub weight: f64,
    /// The most the flow can carry, whatever the links allow.
    pub cap: f64,
}

/// Reusable buffers, so a simulation allocates once, not at every event.
#[derive(Debug, Default)]
pub struct FairShare {
    frozen_load: Vec<f64>,
    free_weight: Vec<f64>,
    flows_on_link: Vec<Vec<usize>>,
    by_cap_level: Vec<usize>,
    frozen: Vec<bool>,
    /// The links some flow crosses, ascending: the only ones the filling
    /// looks at, so a few flows on a fleet of thousands of links cost a few.
    involved: Vec<usize>,
    levels: BinaryHeap<Reverse<(Level, usize)>>,
    touched: Vec<usize>,
    touched_mark: Vec<bool>,
}

/// Treats a link as full once less than this fraction of it is left, so
/// rounding cannot leave a sliver that freezes nothing.
const FULL: f64 = 1e-12;

impl FairShare {
    /// Writes into `rates` each flow's max-min fair rate over links of
    /// capacities `capacity` (same unit as the caps).
    pub fn allocate(&mut self, capacity: &[f64], flows: &[Demand], rates: &mut Vec<f64>) {
        let links = capacity.len();
        rates.clear();
        rates.resize(flows.len(), 0.0);
        // Only the links of the last call can hold anything: reset those.
        for &l in &self.involved {
            self.frozen_load[l] = 0.0;
            self.free_weight[l] = 0.0;
            self.flows_on_link[l].clear();
        }
        self.involved.clear();
        self.frozen_load.resize(links, 0.0);
        self.free_weight.resize(links, 0.0);
        self.flows_on_link.resize_with(links, Vec::new);
        self.touched_mark.resize(links, false);
        self.frozen.clear();
        self.frozen.resize(flows.len(), false);
        for (f, flow) in flows.iter().enumerate() {
            for &l in unique_links(&flow.links) {
                if self.flows_on_link[l].is_empty() {
                    self.involved.push(l);
                }
                self.free_weight[l] += flow.weight;
                self.flows_on_link[l].push(f);
            }
        }
        // Ascending, so that ties between links go as a scan of all links
        // in index order would break them.
        self.involved.sort_unstable();
        self.by_cap_level.clear();
        self.by_cap_level.extend(0..flows.len());
        self.by_cap_level.sort_unstable_by(|&a, &b| {
            (flows[a].cap / flows[a].weight).total_cmp(&(flows[b].cap / flows[b].weight))
        });

        // Every involved link's fill level, in a heap ordered by (level,
        // link): an entry is stale once the link changed (a flow on it froze)
        // and is skipped when it surfaces; the link's new level was pushed
        // then. So each freeze costs O(log links), not a scan of them all.
        self.levels.clear();
        for &l in &self.involved {
            let level = (capacity[l] - self.frozen_load[l]).max(0.0) / self.free_weight[l];
            self.levels.push(Reverse((Level(level), l)));
        }
        let mut next_capped = 0;
        let mut unfrozen = flows.len();
        while unfrozen > 0 {
            while next_capped < flows.len() && self.frozen[self.by_cap_level[next_capped]] {
                next_capped += 1;
            }
            let cap_level = self
                .by_cap_level
                .get(next_capped)
                .map_or(f64::INFINITY, |&f| flows[f].cap / flows[f].weight);
            let (link, link_level) = loop {
                let Some(&Reverse((Level(level), l))) = self.levels.peek() else {
                    break (usize::MAX, f64::INFINITY);
                };
                let current = (self.free_weight[l] > 0.0)
                    .then(|| (capacity[l] - self.frozen_load[l]).max(0.0) / self.free_weight[l]);
                if current.is_some_and(|c| c.to_bits() == level.to_bits()) {
                    break (l, level);
                }
                self.levels.pop();
            };
            if cap_level <= link_level {
                let f = self.by_cap_level[next_capped];
                self.freeze(flows, f, flows[f].cap, rates);
                unfrozen -= 1;
            } else {
                for i in 0..self.flows_on_link[link].len() {
                    let f = self.flows_on_link[link][i];
                    if !self.frozen[f] {
                        self.freeze(flows, f, flows[f].weight * link_level, rates);
                        unfrozen -= 1;
                    }
                }
                // Whatever rounding left on the full link goes unused.
                if self.free_weight[link].abs() < FULL {
                    self.free_weight[link] = 0.0;
                }
            }
            // The links whose level moved, once each however many of their
            // flows froze in this step.
            for &l in &self.touched {
                self.touched_mark[l] = false;
                if self.free_weight[l] > 0.0 {
                    let level = (capacity[l] - self.frozen_load[l]).max(0.0) / self.free_weight[l];
                    self.levels.push(Reverse((Level(level), l)));
                }
            }
            self.touched.clear();
        }
    }

    fn freeze(&mut self, flows: &[Demand], f: usize, rate: f64, rates: &mut [f64]) {
        self.frozen[f] = true;
        rates[f] = rate;
        for &l in unique_links(&flows[f].links) {
            self.frozen_load[l] += rate;
            self.free_weight[l] -= flows[f].weight;
            if self.free_weight[l] < FULL * flows[f].weight {
                self.free_weight[l] = 0.0;
            }
            if !std::mem::replace(&mut self.touched_mark[l], true) {
                self.touched.push(l);
            }
        }
    }
}

/// A level (bytes per second per unit of weight), totally ordered: a key of
/// the heaps and sets that find the lowest level, with the index of its link
/// or flow after it to break ties (as a scan in index order would).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Level(pub(crate) f64);

impl PartialEq for Level {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Level {}
impl PartialOrd for Level {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Level {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A flow's links without repeats (a host could in principle be both ends).
pub(crate) fn unique_links(links: &[usize; 3]) -> &[usize] {
    match (links[0] == links[1], links[2] == links[0] || links[2] == links[1]) {
        (true, true) => &links[..1],
        // [a, a, b]: the tail is [a, b].
        (true, false) => &links[1..],
        (false, true) => &links[..2],
        (false, false) => links,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn allocate(capacity: &[f64], flows: &[Demand]) -> Vec<f64> {
        let mut rates = Vec::new();
        FairShare::default().allocate(capacity, flows, &mut rates);
        rates
    }

    fn flow(links: [usize; 3], weight: f64, cap: f64) -> Demand {
        Demand { links, weight, cap }
    }

    #[test]
    fn hand_computed_allocations() {
        // Links: 0 = WAN 100, 1 and 2 = source NICs 30 and 100, 3 = destination NIC 1000.
        let capacity = [100.0, 30.0, 100.0, 1000.0];
        // Two flows on NIC 1 share its 30; the flow on NIC 2 takes the rest of the WAN: 70.
        let rates = allocate(
            &capacity,
            &[
                flow([0, 1, 3], 1.0, f64::INFINITY),
                flow([0, 1, 3], 1.0, f64::INFINITY),
                flow([0, 2, 3], 1.0, f64::INFINITY),
            ],
        );
        assert_eq!(rates, vec![15.0, 15.0, 70.0]);
        // Weight 3 against weight 1 on the WAN: 75 and 25.
        let rates = allocate(
            &capacity,
            &[
                flow([0, 2, 3], 3.0, f64::INFINITY),
                flow([0, 2, 3], 1.0, f64::INFINITY),
            ],
        );
        assert_eq!(rates, vec![75.0, 25.0]);
        // A capped flow leaves its unused share to the other.
        let rates = allocate(
            &capacity,
            &[flow([0, 2, 3], 1.0, 10.0), flow([0, 2, 3], 1.0, f64::INFINITY)],
        );
        assert_eq!(rates, vec![10.0, 90.0]);
    }

    /// A second, independent check of max-min fairness: the bottleneck
    /// condition. Every flow is at its cap, or crosses a full link on which
    /// its rate per weight is the largest.
    fn is_max_min_fair(capacity: &[f64], flows: &[Demand], rates: &[f64]) -> Result<(), String> {
        let tolerance = 1e-6;
        let mut load = vec![0.0; capacity.len()];
        for (flow, rate) in flows.iter().zip(rates) {
            if *rate > flow.cap * (1.0 + tolerance) + tolerance {
                return Err(format!("flow above its cap: {rate} > {}", flow.cap));
            }
            for &l in unique_links(&flow.links) {
                load[l] += rate;
            }
        }
        for (l, (&used, &cap)) in load.iter().zip(capacity).enumerate() {
            if used > cap * (1.0 + tolerance) + tolerance {
                return Err(format!("link {l} above capacity: {used} > {cap}"));
            }
        }
        for (f, flow) in flows.iter().enumerate() {
            if rates[f] >= flow.cap * (1.0 - tolerance) {
                continue;
            }
            let level = rates[f] / flow.weight;
            let bottlenecked = unique_links(&flow.links).iter().any(|&l| {
                let full = load[l] >= capacity[l] * (1.0 - tolerance) - tolerance;
                let largest = flows
                    .iter()
                    .zip(rates)
                    .filter(|(other, _)| unique_links(&other.links).contains(&l))
                    .all(|(other, rate)| rate / other.weight <= level * (1.0 + tolerance) + tolerance);
                full && largest
            });
            if !bottlenecked {
                return Err(format!("flow {f} at {} has no bottleneck", rates[f]));
            }
        }
        Ok(())
    }

    /// The simple solver: progressive filling that scans every link and
    /// every flow at each step. Slow and obviously right; the reference
    /// the heap-based, active-links-only solver is checked against.
    fn simple_allocate(capacity: &[f64], flows: &[Demand]) -> Vec<f64> {
        let mut rates = vec![0.0; flows.len()];
        let mut frozen = vec![false; flows.len()];
        let mut left: Vec<f64> = capacity.to_vec();
        loop {
            let free: Vec<usize> = (0..flows.len()).filter(|&f| !frozen[f]).collect();
            if free.is_empty() {
                return rates;
            }
            // The level at which the next flow freezes: its cap, or a link
            // shared by unfrozen flows filling up.
            let mut level = f64::INFINITY;
            for &f in &free {
                level = level.min(flows[f].cap / flows[f].weight);
            }
            for (l, &room) in left.iter().enumerate() {
                let weight: f64 = free
                    .iter()
                    .filter(|&&f| unique_links(&flows[f].links).contains(&l))
                    .map(|&f| flows[f].weight)
                    .sum();
                if weight > 0.0 {
                    level = level.min(room.max(0.0) / weight);
                }
            }
            let full: Vec<usize> = (0..left.len())
                .filter(|&l| {
                    let weight: f64 = free
                        .iter()
                        .filter(|&&f| unique_links(&flows[f].links).contains(&l))
                        .map(|&f| flows[f].weight)
                        .sum();
                    weight > 0.0 && left[l].max(0.0) / weight <= level * (1.0 + 1e-12)
                })
                .collect();
            for &f in &free {
                let at_cap = flows[f].cap / flows[f].weight <= level * (1.0 + 1e-12);
                let on_full = unique_links(&flows[f].links).iter().any(|l| full.contains(l));
                if at_cap || on_full {
                    frozen[f] = true;
                    rates[f] = if at_cap {
                        flows[f].cap
                    } else {
                        flows[f].weight * level
                    };
                    for &l in unique_links(&flows[f].links) {
                        left[l] -= rates[f];
                    }
                }
            }
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// The fast solver against the simple one on thousands of random
        /// small scenarios, reusing one solver (as the simulator does) so
        /// that leftovers of a previous call would show.
        #[test]
        fn fast_solver_equals_the_simple_one(
            scenarios in prop::collection::vec((
                prop::collection::vec(prop::sample::select(vec![10.0, 25.0, 40.0, 100.0, 333.3, 1000.0]), 3..9),
                prop::collection::vec((0usize..9, 0usize..9, 0usize..9, 1u32..5, prop::option::of(prop::sample::select(vec![5.0, 12.5, 50.0, 400.0]))), 1..25),
            ), 1..4),
        ) {
            let mut solver = FairShare::default();
            for (capacity, raw) in scenarios {
                let links = capacity.len();
                let flows: Vec<Demand> = raw
                    .iter()
                    .map(|&(a, b, c, w, cap)| flow([a % links, b % links, c % links], f64::from(w), cap.unwrap_or(f64::INFINITY)))
                    .collect();
                let mut fast = Vec::new();
                solver.allocate(&capacity, &flows, &mut fast);
                let simple = simple_allocate(&capacity, &flows);
                for (f, (x, y)) in fast.iter().zip(&simple).enumerate() {
                    prop_assert!(close(*x, *y), "flow {}: fast {} simple {} ({:?} on {:?})", f, x, y, flows, capacity);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn allocation_is_max_min_fair(
            capacity in prop::collection::vec(1.0f64..1000.0, 4..8),
            raw in prop::collection::vec((0usize..8, 0usize..8, 0usize..8, 1u32..5, prop::option::of(1.0f64..500.0)), 1..30),
        ) {
            let links = capacity.len();
            let flows: Vec<Demand> = raw
                .iter()
                .map(|&(a, b, c, w, cap)| flow([a % links, b % links, c % links], f64::from(w), cap.unwrap_or(f64::INFINITY)))
                .collect();
            let rates = allocate(&capacity, &flows);
            prop_assert!(rates.iter().all(|r| r.is_finite() && *r >= 0.0));
            if let Err(why) = is_max_min_fair(&capacity, &flows, &rates) {
                prop_assert!(false, "{}", why);
            }
        }
    }
}
