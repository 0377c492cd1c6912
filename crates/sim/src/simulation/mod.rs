//! The simulation's state and its main loop: events (round ends, control
//! periods, WAN trace points, power-offs) taken in time order. Round ends
//! are in `rounds`, the controller's side in `control`, the links and the
//! fluid model in `links`, the timeline and the result in `record`.

mod control;
mod links;
mod record;
mod rounds;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::Duration;

use evac_controller::{Controller, Ended, Observations, Wakeup, DEFAULT_HORIZON};
use evac_model::{Bytes, Fleet, HostId, Network, VmId};
use evac_outcome::{FailedAttempt, TimelinePoint};

use crate::fair_share::{Demand, FairShare};
use crate::flow::{Flow, RoundEnd, VmProgress};
use crate::fluid::{Bottleneck, Clock};
use crate::radix::RadixHeap;
use crate::{Solver, SolverStats, SAME_INSTANT, WAN};

pub(crate) struct Simulation<'a> {
    fleet: &'a Fleet,
    network: &'a Network,
    period: f64,
    now: f64,
    capacity: Vec<f64>,
    /// Per link: bytes carried up to `links_as_of`, and the current load.
    carried: Vec<f64>,
    load: Vec<f64>,
    links_as_of: f64,
    flows: Vec<Flow>,
    /// Where each VM's flow is in `flows`.
    slot: Vec<Option<usize>>,
    /// Per VM: the last generation its flows reached. A VM's next attempt
    /// goes on from it, so a round end its cancelled attempt left in a heap
    /// can never pass for one of the new attempt's (it did, once policies
    /// began to start cancelled VMs again).
    generation_of: Vec<u64>,
    round_ends: BinaryHeap<Reverse<RoundEnd>>,
    fair_share: FairShare,
    demands: Vec<Demand>,
    rates: Vec<f64>,
    next_trace: usize,
    /// Announced changes of power-offs still to come, latest first: (when,
    /// host, the new power-off). See [`evac_model::PowerChange`].
    power_changes: Vec<(f64, HostId, Option<f64>)>,
    /// Hosts that have lost power: a change announced after that saves
    /// nothing.
    dark: Vec<bool>,
    /// Hosts that will lose power, latest first.
    power_offs: Vec<(f64, HostId)>,
    progress: Vec<VmProgress>,
    unresolved: usize,
    ended: Vec<Ended>,
    observations: Observations,
    timeline: Vec<TimelinePoint>,
    /// The last timeline point: its time, the WAN's bytes then, and the
    /// state it recorded (in flight, capacity, load).
    last_point: Option<(f64, f64, (usize, f64, f64))>,
    /// Cancelled attempts, for the report.
    failed: Vec<FailedAttempt>,
    connection_cap: f64,
    /// Each host's VMs, in fleet order.
    vms_by_host: Vec<Vec<VmId>>,
    /// The links some flow crosses (only they carry bytes), and a mark per
    /// link.
    active_links: Vec<usize>,
    link_active: Vec<bool>,
    /// Hosts whose NIC counter moved since the last consultation.
    tx_changed: Vec<HostId>,
    tx_marked: Vec<bool>,
    pub(crate) solver: Solver,
    /// The fluid model holds now: flows' progress, round ends and links'
    /// bytes are kept in virtual time (`clock`, `virtual_ends`, `v_mark`).
    fluid_on: bool,
    /// Stands still (`λ = 0`) outside the fluid model.
    clock: Clock,
    bottleneck: Bottleneck,
    /// Round ends of the flows in virtual time: (`V` as a key, VM,
    /// generation).
    virtual_ends: RadixHeap<u64>,
    /// Per link, in the fluid model: `V` when `carried` was last brought up
    /// to date.
    v_mark: Vec<f64>,
    pub(crate) stats: SolverStats,
    /// Chained flows by their chain's limit on `λ` (as a key), lowest first.
    chains: BTreeSet<(u64, VmId)>,
    /// The clock's segments since the oldest chain began, to find when a
    /// cut chain's round began.
    history: Vec<Clock>,
    /// The controller reads no progress: rounds may be chained.
    may_chain: bool,
    /// Rebalances so far (see `Flow::joined`).
    epoch: u64,
    /// At most how many flows are in their setup with a join cost still
    /// ahead (`Stage::SettingUp::joining`): `end_joins` looks only then.
    joining: usize,
    /// Simulated seconds after which the run ends ([`simulate_until`]).
    pub(crate) horizon: f64,
    horizon_reached: bool,
}

impl<'a> Simulation<'a> {
    pub(crate) fn new(fleet: &'a Fleet, network: &'a Network, period: Duration) -> Self {
        let links = fleet.hosts.len() + 1;
        let mut capacity = vec![0.0; links];
        capacity[WAN] = network.capacity_at(Duration::ZERO).to_bytes_per_sec().0;
        for (h, host) in fleet.hosts.iter().enumerate() {
            capacity[h + 1] = host.nic.to_bytes_per_sec().0;
        }
        let mut power_offs: Vec<(f64, HostId)> = fleet
            .host_ids()
            .filter_map(|h| fleet.host(h).power_off_at.map(|t| (t.as_secs_f64(), h)))
            .collect();
        power_offs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut power_changes: Vec<(f64, HostId, Option<f64>)> = fleet
            .host_ids()
            .flat_map(|h| {
                fleet.host(h).power_trace.iter().map(move |change| {
                    (
                        change.at.as_secs_f64(),
                        h,
                        change.power_off_at.map(|t| t.as_secs_f64()),
                    )
                })
            })
            .collect();
        // Latest first; at one instant, the host listed first goes first.
        power_changes.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        let mut vms_by_host = vec![Vec::new(); fleet.hosts.len()];
        for id in fleet.vm_ids() {
            vms_by_host[fleet.vm(id).host.0].push(id);
        }
        Self {
            fleet,
            network,
            period: period.as_secs_f64(),
            now: 0.0,
            capacity,
            carried: vec![0.0; links],
            load: vec![0.0; links],
            links_as_of: 0.0,
            flows: Vec::new(),
            slot: vec![None; fleet.vms.len()],
            generation_of: vec![0; fleet.vms.len()],
            round_ends: BinaryHeap::new(),
            fair_share: FairShare::default(),
            demands: Vec::new(),
            rates: Vec::new(),
            next_trace: network.wan_trace.iter().take_while(|p| p.at.is_zero()).count(),
            power_offs,
            power_changes,
            dark: vec![false; fleet.hosts.len()],
            progress: vec![VmProgress::default(); fleet.vms.len()],
            unresolved: fleet.vms.len(),
            ended: Vec::new(),
            observations: Observations {
                host_tx: vec![Bytes::ZERO; fleet.hosts.len()],
                ..Observations::default()
            },
            timeline: Vec::new(),
            last_point: None,
            failed: Vec::new(),
            connection_cap: network.connection_cap().to_bytes_per_sec().0,
            vms_by_host,
            active_links: Vec::new(),
            link_active: vec![false; links],
            tx_changed: Vec::new(),
            tx_marked: vec![false; fleet.hosts.len()],
            solver: Solver::default(),
            fluid_on: false,
            clock: Clock::default(),
            bottleneck: Bottleneck::new(links),
            virtual_ends: RadixHeap::default(),
            v_mark: vec![0.0; links],
            stats: SolverStats::default(),
            chains: BTreeSet::new(),
            history: Vec::new(),
            may_chain: false,
            epoch: 1,
            joining: 0,
            horizon: DEFAULT_HORIZON.as_secs_f64(),
            horizon_reached: false,
        }
    }

    pub(crate) fn run(&mut self, controller: &mut dyn Controller) {
        // The driver's periodic grid (0, period, 2 × period, ... by repeated
        // addition), and when the controller wants to be consulted next.
        let mut grid: f64 = 0.0;
        let mut wakeup: f64 = 0.0;
        loop {
            let next_round_end = self.next_round_end();
            let next_trace = self
                .network
                .wan_trace
                .get(self.next_trace)
                .map_or(f64::INFINITY, |p| p.at.as_secs_f64());
            let next_power_off = self.power_offs.last().map_or(f64::INFINITY, |p| p.0);
            let next_change = self.power_changes.last().map_or(f64::INFINITY, |p| p.0);
            if next_round_end.is_infinite()
                && next_trace.is_infinite()
                && next_power_off.is_infinite()
                && next_change.is_infinite()
                && !self.flows.is_empty()
            {
                // Nothing in flight can ever move again (the WAN is down for
                // good): what is in flight is stuck, and so lost.
                break;
            }
            let next = wakeup
                .min(next_round_end)
                .min(next_trace)
                .min(next_power_off)
                .min(next_change);
            if next.is_infinite() {
                // Nothing will ever happen again, and the controller waits
                // for something to happen.
                break;
            }
            if next > self.horizon {
                // The simulated-time limit: what has not migrated by now
                // stays where it is (see `into_result`).
                self.now = self.horizon.max(self.now);
                self.horizon_reached = true;
                // Chained rounds are settled up to now, as at a power-off.
                self.unchain_all();
                self.advance_links();
                let now = self.now;
                let v = self.clock.at(now);
                for flow in &mut self.flows {
                    flow.catch_up(now, v);
                }
                break;
            }
            // (Rounding of a virtual round end cannot take time back.)
            self.now = next.max(self.now);
            let mut rates_changed = false;
            // At one instant: rounds end first (a migration that ends as its
            // host dies is saved), then the network changes, then power-offs
            // announced, then hosts die.
            while let Some(vm) = self.pop_round_end(next + SAME_INSTANT) {
                self.stats.round_ends += 1;
                rates_changed |= self.end_round(vm);
            }
            while self
                .network
                .wan_trace
                .get(self.next_trace)
                .is_some_and(|p| p.at.as_secs_f64() <= next)
            {
                self.capacity[WAN] = self.network.wan_trace[self.next_trace]
                    .bandwidth
                    .to_bytes_per_sec()
                    .0;
                self.next_trace += 1;
                rates_changed = true;
            }
            let announced = self.announce_power_changes(next);
            while self.power_offs.last().is_some_and(|p| p.0 <= next) {
                let (_, host) = self.power_offs.pop().expect("checked");
                self.dark[host.0] = true;
                rates_changed |= self.power_off(host);
            }
            let woken = next >= wakeup - SAME_INSTANT;
            // An announcement is news the controller acts on at once, as a
            // migration's end is.
            if woken || announced || !self.ended.is_empty() {
                let actions = self.consult(controller);
                let idle = actions.is_empty() && self.flows.is_empty();
                rates_changed |= self.apply(actions);
                while grid <= next + SAME_INSTANT {
                    grid += self.period;
                }
                wakeup = match controller.next_wakeup() {
                    Wakeup::NextPeriod => grid,
                    Wakeup::At(at) if at.as_secs_f64() > next + SAME_INSTANT => at.as_secs_f64(),
                    Wakeup::At(_) => grid,
                    Wakeup::OnEvent => f64::INFINITY,
                };
                if self.unresolved == 0 || idle {
                    if rates_changed {
                        self.rebalance();
                    }
                    break;
                }
            }
            if rates_changed {
                self.rebalance();
                if self.joining > 0 {
                    self.end_joins();
                }
            }
            self.note_timeline(false);
        }
        self.note_timeline(true);
    }

    /// Applies the power-off changes announced by `now`: the host now loses
    /// power at the new time (at once if that is past), and the change goes
    /// to the controller at the consultation that follows. True if any was
    /// announced.
    fn announce_power_changes(&mut self, now: f64) -> bool {
        let mut announced = false;
        while self.power_changes.last().is_some_and(|c| c.0 <= now) {
            let (_, host, power_off_at) = self.power_changes.pop().expect("checked");
            if self.dark[host.0] {
                continue;
            }
            self.power_offs.retain(|&(_, h)| h != host);
            if let Some(at) = power_off_at {
                let i = self.power_offs.partition_point(|&(t, _)| t > at);
                self.power_offs.insert(i, (at, host));
            }
            self.observations
                .power_changes
                .push((host, power_off_at.map(Duration::from_secs_f64)));
            announced = true;
        }
        announced
    }
}
