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
            let (link, link_level) = self
                .involved
                .iter()
                .copied()
                .filter(|&l| self.free_weight[l] > 0.0)
                .map(|l| {
                    (
                        l,
                        (capacity[l] - self.frozen_load[l]).max(0.0) / self.free_weight[l],
                    )
                })
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((usize::MAX, f64::INFINITY));
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
        }
    }
}

/// A flow's links without repeats (a host could in principle be both ends).
pub(crate) fn unique_links(links: &[usize; 3]) -> &[usize] {
    if links[2] == links[0] || links[2] == links[1] {
        if links[1] == links[0] {
            &links[..1]
        } else {
            &links[..2]
        }
    } else {
        links
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
