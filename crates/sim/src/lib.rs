//! # evac-sim
//!
//! A fast, event-driven simulator of many precopy live migrations over a
//! shared wide-area network, exact to a written model so that its results
//! can be checked by hand. It is one driver of the sans-IO controller in
//! `evac-controller` (the QEMU backend is another): it feeds the controller
//! [`Observations`] and carries out its [`Action`]s.
//!
//! ## The model
//! - Links: the WAN (capacity `wan_bandwidth`, or the trace's value at that
//!   instant) and every host's NIC. A migration is `multifd_channels` TCP
//!   connections from its source NIC through the WAN to its destination NIC;
//!   each connection carries at most `tcp_window / wan_rtt`, the migration at
//!   most its `max_bandwidth`. Rates are the max-min fair allocation of the
//!   connections over the links ([`fair_share`]), recomputed whenever the set
//!   of migrations, a cap or a capacity changes.
//! - Live (precopy): round 1 sends the whole memory. During a round the guest
//!   dirties `min(working_set, dirty_rate × elapsed)` bytes. At the round's
//!   end, with `D` the dirtied bytes and `r` the round's average rate: if
//!   `D / r <= downtime_limit` or the round count reached `max_rounds`, the
//!   VM pauses and `D` is sent (stop-and-copy, whose duration is the
//!   downtime); otherwise the next round sends `D`.
//! - Each migration first spends its `setup_time` sending nothing (the
//!   destination starting, handshakes), and `ramp_rtts` round trips more
//!   (its TCP connections ramping up to their window, a cost that grows with
//!   `wan_rtt`); round 1 (or the offline copy) starts after it. One that
//!   starts while the migrations in flight fill the WAN waits `join_rtts`
//!   round trips more: joining connections take their share of a full link
//!   slowly, and those already there keep more meanwhile.
//! - Offline: the VM pauses at once and its whole memory is sent.
//! - Local disks (`disk` bytes, copied with the migration as libvirt's
//!   non-shared-disk migration does): after the setup, a live or postcopy
//!   migration first sends the disk at its share of the links; the guest's
//!   writes to the disk are mirrored as they happen, so nothing of it is
//!   re-sent, and its memory dirtied meanwhile does not count (round 1 of
//!   memory starts after the disk). Offline: the disk and the memory go in
//!   one paused copy. While the disk goes, the controller sees round 1 with
//!   the disk's rest plus the whole memory remaining (as libvirt's job
//!   statistics count both).
//! - Postcopy: round 1 as live; at its end (or when the controller says
//!   [`Action::SwitchToPostcopy`]) the guest pauses for one round trip and
//!   resumes at the destination, and the `D` bytes it dirtied follow with no
//!   more dirtying at the source. The downtime is that round trip. Until the
//!   last byte arrives the VM is at risk: its host powering off loses it,
//!   as does a WAN that stays down.
//! - A host that powers off loses every VM still on it, mid-migration or not.
//! - The controller is consulted at once whenever a migration ends (or is
//!   lost), and otherwise when it asks to be ([`Controller::next_wakeup`]):
//!   every control period by default, only on events for the fixed policies,
//!   every period while something is queued for AIMD. The periodic instants
//!   are those of a grid 0, period, 2 × period, ... whether or not a tick
//!   was skipped, so skipping changes no result. An evacuation ends when
//!   every VM has migrated or is lost, or when the controller starts nothing
//!   while nothing is in flight (the VMs it left are `not-migrated`,
//!   given up: they never started).
//! - The timeline gets a point whenever the WAN's capacity, its load or the
//!   migrations in flight change (and at the start and the end), not every
//!   period: between two points the throughput is constant, so nothing is
//!   lost, and a run of days costs its changes, not its seconds.
//!
//! Between events every rate is constant, so a migration's progress is a
//! linear function of time, kept lazily: a round ending touches one
//! migration, and only a change of rates costs a pass over those in flight.
//! Nothing costs a pass over all VMs or all hosts: VMs are indexed by host
//! (a power-off touches its own), only links some migration crosses are
//! advanced, the controller is told which hosts' counters moved, and the
//! fair share looks at the links in use only (see docs/scale.md).
//!
//! With many migrations on one WAN the rates need no solve at all while the
//! WAN is every flow's only bottleneck: the `fluid` module's model in
//! virtual time makes a start, an end or a capacity change O(log flows), its
//! round ends wait in a radix heap (`radix`), and saturated precopy rounds
//! run as one event (`Chain`); a full solve ([`Solver::FullSolve`], the
//! reference the differential test compares with) only when the check
//! fails.

pub mod fair_share;

/// How close to its capacity the WAN's load must be to count as full for a
/// migration joining it (`join_rtts`).
const FULL_WAN: f64 = 1e-3;
mod fluid;
mod radix;
pub mod rollout;
pub mod scale;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::Duration;

use evac_controller::{
    Action, Controller, ControllerConfig, EndOutcome, Ended, Evacuation, MigrationObs, Observations, Phase,
    Retune, Wakeup, DEFAULT_HORIZON,
};
use evac_model::{BitsPerSec, Bytes, BytesPerSec, Fleet, HostId, MigrationParams, Mode, Network, VmId};
use evac_outcome::{reason, FailedAttempt, Outcome, RunResult, TimelinePoint, VmRecord, MAX_TIMELINE_POINTS};

use fair_share::{Demand, FairShare};
use fluid::{Bottleneck, Clock};
use radix::{key_of, time_of_key, RadixHeap};

/// The WAN's index among the links; host `h`'s NIC is link `h + 1`.
const WAN: usize = 0;

/// Times closer than this are one instant (float rounding of event times).
const SAME_INSTANT: f64 = 1e-9;

/// Runs an evacuation of `fleet` over `network` under the [`Evacuation`]
/// controller configured by `config`, starting migrations with `params`.
pub fn simulate_evacuation(
    fleet: &Fleet,
    network: &Network,
    params: MigrationParams,
    config: &ControllerConfig,
) -> RunResult {
    let mut controller = evacuation(fleet, network, params, config);
    simulate_until(fleet, network, config.period, config.horizon, &mut controller)
}

/// The controller [`simulate_evacuation`] runs: the one configured by
/// `config`, told the WAN's per-connection cap, and (for `deadline`)
/// planning by simulating candidate plans from the state of the moment
/// ([`rollout`]). `evac simulate --explain` and `evac run` build the same.
pub fn evacuation(
    fleet: &Fleet,
    network: &Network,
    params: MigrationParams,
    config: &ControllerConfig,
) -> Evacuation {
    let rollout = std::sync::Arc::new(rollout::SimRollout::new(network, params, config));
    Evacuation::with_network(fleet.clone(), network, params, config.clone()).planning_with(rollout)
}

/// Runs an evacuation of `fleet` over `network` under any `controller`,
/// consulting it every `period`, for at most the default horizon (a week of
/// simulated time).
pub fn simulate(
    fleet: &Fleet,
    network: &Network,
    period: Duration,
    controller: &mut dyn Controller,
) -> RunResult {
    simulate_until(fleet, network, period, DEFAULT_HORIZON, controller)
}

/// [`simulate`] until `horizon` of simulated time at most: then the run
/// ends, and every VM not migrated by then (in flight or waiting) is
/// `not-migrated`, "horizon reached".
pub fn simulate_until(
    fleet: &Fleet,
    network: &Network,
    period: Duration,
    horizon: Duration,
    controller: &mut dyn Controller,
) -> RunResult {
    simulate_with_solver_until(fleet, network, period, horizon, controller, Solver::Fluid).0
}

/// How the simulator finds the migrations' rates. Both give the same
/// results (within float rounding); [`Solver::FullSolve`] is the reference
/// the fluid model is checked against, and the way to measure what it saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Solver {
    /// The fluid model in virtual time while the WAN is every migration's
    /// only bottleneck (O(log flows) per event), the full max-min solve
    /// otherwise: see the `fluid` module.
    #[default]
    Fluid,
    /// The full max-min solve over every flow at every change.
    FullSolve,
}

/// How a run's rates were found: changes absorbed by the fluid model, and
/// full solves over every flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SolverStats {
    pub fluid_steps: u64,
    pub full_solves: u64,
    /// Round ends handled (each a precopy round, a stop-and-copy, a setup,
    /// or a chain of rounds).
    pub round_ends: u64,
    /// Chains of rounds run as one event, and those cut short.
    pub chains: u64,
    pub chains_cut: u64,
}

/// [`simulate`] with the choice of [`Solver`], and what it did.
pub fn simulate_with_solver(
    fleet: &Fleet,
    network: &Network,
    period: Duration,
    controller: &mut dyn Controller,
    solver: Solver,
) -> (RunResult, SolverStats) {
    simulate_with_solver_until(fleet, network, period, DEFAULT_HORIZON, controller, solver)
}

/// [`simulate_with_solver`] until `horizon` (see [`simulate_until`]).
pub fn simulate_with_solver_until(
    fleet: &Fleet,
    network: &Network,
    period: Duration,
    horizon: Duration,
    controller: &mut dyn Controller,
    solver: Solver,
) -> (RunResult, SolverStats) {
    let mut sim = Simulation::new(fleet, network, period);
    sim.solver = solver;
    sim.horizon = horizon.as_secs_f64();
    sim.run(controller);
    let stats = sim.stats;
    let mut result = sim.into_result(controller.name());
    for (id, record) in fleet.vm_ids().zip(&mut result.vms) {
        record.decisions = decisions(&*controller, id);
    }
    (result, stats)
}

/// The controller's account of `vm`, as the result's records carry it.
pub fn decisions(controller: &dyn Controller, vm: VmId) -> Vec<evac_outcome::Decision> {
    controller
        .explain(vm)
        .into_iter()
        .map(|e| evac_outcome::Decision {
            at_s: e.at_s,
            decision: e.decision.to_owned(),
            why: e.why,
        })
        .collect()
}

/// A warning for the operator, before simulating: the lower bound on the
/// total time (every VM's memory over the WAN at full capacity) is already
/// beyond the horizon, so the run will end with VMs `not-migrated`.
pub fn horizon_warning(fleet: &Fleet, network: &Network, config: &ControllerConfig) -> Option<String> {
    let bound = evac_outcome::lower_bounds(fleet, network).total;
    (bound > config.horizon).then(|| {
        format!(
            "warning: carrying every VM's memory over the WAN takes at least {}, beyond the \
             simulated horizon of {} ([controller] horizon): VMs will be left not-migrated",
            evac_model::format_duration(bound),
            evac_model::format_duration(config.horizon)
        )
    })
}

/// A migration in flight.
#[derive(Debug, Clone)]
struct Flow {
    vm: VmId,
    source: HostId,
    destination: HostId,
    params: MigrationParams,
    phase: Phase,
    /// Precopy rounds started so far.
    round: u32,
    started_at: f64,
    round_started_at: f64,
    /// Bytes this round (or the stop-and-copy) sends.
    round_bytes: f64,
    /// Bytes of this round sent by `as_of`.
    round_sent: f64,
    /// Bytes of earlier rounds.
    earlier_rounds: f64,
    as_of: f64,
    /// Current rate, bytes per second (unless `fluid`).
    rate: f64,
    /// Progress kept in virtual time: `weight × (V - v_as_of)` more bytes
    /// since `v_as_of`, the round's end in the virtual heap.
    fluid: bool,
    v_as_of: f64,
    /// Rounds run as one event: see [`Chain`].
    chain: Option<Chain>,
    /// The rebalance epoch in which it started sending: until the next
    /// rebalance it has no rate yet, as in a full solve.
    joined: u64,
    demand: Demand,
    /// Bumped whenever the round's end time changes, to spot stale events.
    generation: u64,
    paused_at: Option<f64>,
    /// In its `setup_time`, until `ready_at`: no rate, no round yet.
    setting_up: bool,
    ready_at: f64,
    /// Sending the local disks (`round_bytes` is the disk), before round 1
    /// of memory.
    copying_disk: bool,
    /// The VM's memory and dirty rate, copied from the fleet: every
    /// consultation reports them for every flow, and the fleet's records
    /// of a million VMs are a cache miss each.
    memory: f64,
    dirty_rate: BytesPerSec,
}

impl Flow {
    /// Brings the round's progress up to `now`, when the virtual clock reads
    /// `v`.
    fn catch_up(&mut self, now: f64, v: f64) {
        self.round_sent = self.round_sent_at(now, v);
        self.as_of = now;
        self.v_as_of = v;
    }

    fn round_sent_at(&self, now: f64, v: f64) -> f64 {
        let more = if self.fluid {
            self.demand.weight * (v - self.v_as_of)
        } else {
            self.rate * (now - self.as_of)
        };
        (self.round_sent + more).min(self.round_bytes)
    }

    fn rate_at(&self, clock: &Clock, epoch: u64) -> f64 {
        if self.fluid && self.joined != epoch {
            self.demand.weight * clock.lambda
        } else {
            self.rate
        }
    }

    /// In its setup time a flow sends nothing, and is no weight on a link.
    fn sending(&self) -> bool {
        !self.setting_up
    }

    /// Where the virtual clock will read when the round ends.
    fn virtual_end(&self) -> f64 {
        self.v_as_of + (self.round_bytes - self.round_sent).max(0.0) / self.demand.weight
    }

    fn round_ends_at(&self) -> f64 {
        if self.setting_up {
            return self.ready_at;
        }
        let left = self.round_bytes - self.round_sent;
        if left <= 0.0 {
            self.as_of
        } else if self.rate > 0.0 {
            self.as_of + left / self.rate
        } else {
            f64::INFINITY
        }
    }

    fn sent(&self) -> f64 {
        self.earlier_rounds + self.round_sent
    }

    /// The bytes after this round that are certain to go: the memory while
    /// the disk is being copied.
    fn queued_after_round(&self) -> f64 {
        if self.copying_disk {
            self.memory
        } else {
            0.0
        }
    }
}

/// Precopy rounds of a flow in the fluid model that are certain to go the
/// same way, run as one event: once the guest has dirtied its whole working
/// set `ws` during a round, every next round sends `ws` bytes (`ws / weight`
/// of virtual time) and, while `λ` stays at most `limit`, lasts long enough
/// for the guest to dirty `ws` again and too long to converge
/// (`ws / rate > downtime_limit`), up to `max_rounds`. So rounds
/// `round ..= max_rounds` end at one virtual instant, `start_v + rounds × ws
/// / weight`, with the stop-and-copy of `ws` to follow, and nothing in
/// between can be observed by a controller that reads no progress. If `λ`
/// rises above `limit` (or the controller acts on the flow, or the fluid
/// model ends), the chain is cut where the clock is: the rounds done are
/// counted and the one under way runs on as any other.
#[derive(Debug, Clone, Copy)]
struct Chain {
    /// `V` when the chain's first round began.
    start_v: f64,
    rounds: u32,
    limit: f64,
}

/// A round's end, in the event queue.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RoundEnd {
    at: f64,
    vm: VmId,
    generation: u64,
}

impl Eq for RoundEnd {}
impl PartialOrd for RoundEnd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for RoundEnd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.total_cmp(&other.at).then(self.vm.cmp(&other.vm))
    }
}

/// What became of a VM so far.
#[derive(Debug, Clone, Default)]
struct VmProgress {
    destination: Option<HostId>,
    start: Option<f64>,
    end: Option<f64>,
    downtime: Option<f64>,
    rounds: Option<u32>,
    /// Its last attempt's mode (as switched) and connections.
    mode: Option<Mode>,
    connections: Option<u32>,
    /// Bytes sent over all attempts.
    sent: f64,
    migrated: bool,
    lost: bool,
}

struct Simulation<'a> {
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
    solver: Solver,
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
    stats: SolverStats,
    /// Chained flows by their chain's limit on `λ` (as a key), lowest first.
    chains: BTreeSet<(u64, VmId)>,
    /// The clock's segments since the oldest chain began, to find when a
    /// cut chain's round began.
    history: Vec<Clock>,
    /// The controller reads no progress: rounds may be chained.
    may_chain: bool,
    /// Rebalances so far (see `Flow::joined`).
    epoch: u64,
    /// Simulated seconds after which the run ends ([`simulate_until`]).
    horizon: f64,
    horizon_reached: bool,
}

impl<'a> Simulation<'a> {
    fn new(fleet: &'a Fleet, network: &'a Network, period: Duration) -> Self {
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
            horizon: DEFAULT_HORIZON.as_secs_f64(),
            horizon_reached: false,
        }
    }

    fn run(&mut self, controller: &mut dyn Controller) {
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
            if next_round_end.is_infinite()
                && next_trace.is_infinite()
                && next_power_off.is_infinite()
                && !self.flows.is_empty()
            {
                // Nothing in flight can ever move again (the WAN is down for
                // good): what is in flight is stuck, and so lost.
                break;
            }
            let next = wakeup.min(next_round_end).min(next_trace).min(next_power_off);
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
            // host dies is saved), then the network changes, then hosts die.
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
            while self.power_offs.last().is_some_and(|p| p.0 <= next) {
                let (_, host) = self.power_offs.pop().expect("checked");
                rates_changed |= self.power_off(host);
            }
            let woken = next >= wakeup - SAME_INSTANT;
            if woken || !self.ended.is_empty() {
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
            }
            self.note_timeline(false);
        }
        self.note_timeline(true);
    }

    fn next_round_end(&mut self) -> f64 {
        self.peek_round_end().map_or(f64::INFINITY, |(at, _, _)| at)
    }

    /// The earliest live round end: its time, its VM, and whether it is in
    /// the virtual heap. Stale entries (a flow gone, or rescheduled) are
    /// dropped on the way.
    fn peek_round_end(&mut self) -> Option<(f64, VmId, bool)> {
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
    fn pop_round_end(&mut self, by: f64) -> Option<VmId> {
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

    fn flow_mut(&mut self, vm: VmId) -> Option<&mut Flow> {
        self.slot[vm.0].map(|s| &mut self.flows[s])
    }

    /// Handles the end of a flow's round; true if the flow left.
    fn end_round(&mut self, vm: VmId) -> bool {
        let now = self.now;
        let spec = self.fleet.vm(vm);
        let (dirty_rate, working_set, memory) =
            (spec.dirty_rate.0, spec.working_set.as_f64(), spec.memory.as_f64());
        let connection_cap = self.connection_cap;
        let v = self.clock.at(now);
        let fluid = self.fluid_on;
        let may_chain = self.may_chain;
        let flow = self.flow_mut(vm).expect("a live event has a flow");
        if flow.setting_up {
            // Set up: the first round starts now, at the flow's full demand.
            flow.setting_up = false;
            flow.demand.cap = demand_cap(&flow.params, connection_cap);
            flow.round_started_at = now;
            flow.as_of = now;
            flow.v_as_of = v;
            flow.fluid = fluid;
            let slot = self.slot[vm.0].expect("in flight");
            self.join(slot);
            self.schedule(vm);
            return true;
        }
        if let Some(chain) = flow.chain.take() {
            // The chain's last round ended: what the normal path would do
            // after each of them, at once (each sent `ws`, and the guest
            // dirtied `ws` again during the last).
            flow.earlier_rounds += f64::from(chain.rounds) * working_set;
            flow.round = flow.params.max_rounds;
            flow.round_bytes = working_set;
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
        if flow.copying_disk {
            // The disks are across (their writes mirrored from now on): round
            // 1 of memory starts, the guest's dirtying counted from here.
            flow.copying_disk = false;
            flow.earlier_rounds += flow.round_bytes;
            flow.round_sent = 0.0;
            flow.round_bytes = memory;
            flow.round_started_at = now;
            self.schedule(vm);
            return false;
        }
        match flow.phase {
            Phase::Precopy => {
                let elapsed = now - flow.round_started_at;
                let dirtied = (dirty_rate * elapsed).min(working_set);
                let rate = if elapsed > 0.0 {
                    flow.round_bytes / elapsed
                } else {
                    f64::INFINITY
                };
                let converged = dirtied / rate <= flow.params.downtime_limit.as_secs_f64();
                flow.earlier_rounds += flow.round_bytes;
                flow.round_sent = 0.0;
                flow.round_bytes = dirtied;
                flow.round_started_at = now;
                if flow.params.mode == Mode::Postcopy {
                    flow.phase = Phase::Postcopy;
                    flow.paused_at = Some(now);
                    let changed = self.postcopy_on_one_connection(vm);
                    self.schedule(vm);
                    return changed;
                } else if converged || flow.round >= flow.params.max_rounds {
                    flow.phase = Phase::StopAndCopy;
                    flow.paused_at = Some(now);
                } else {
                    flow.round += 1;
                    if may_chain && flow.fluid && dirtied == working_set && working_set > 0.0 {
                        self.try_chain(vm, dirty_rate, working_set);
                        return false;
                    }
                }
                self.schedule(vm);
                false
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
    fn try_chain(&mut self, vm: VmId, dirty_rate: f64, working_set: f64) {
        let lambda = self.clock.lambda;
        let v = self.clock.at(self.now);
        let flow = self.flow_mut(vm).expect("in flight");
        let rounds = flow.params.max_rounds.saturating_sub(flow.round) + 1;
        // Each round must last at least this long: long enough to dirty
        // `ws` and too long to converge (with a margin for rounding).
        let shortest =
            (working_set / dirty_rate).max(flow.params.downtime_limit.as_secs_f64()) * (1.0 + 1e-9);
        let length = working_set / flow.demand.weight;
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
    fn unchain(&mut self, vm: VmId) {
        let Some(slot) = self.slot[vm.0] else { return };
        let Some(chain) = self.flows[slot].chain.take() else {
            return;
        };
        self.chains.remove(&(key_of(chain.limit), vm));
        self.stats.chains_cut += 1;
        let now = self.now;
        let v = self.clock.at(now);
        let working_set = self.fleet.vm(vm).working_set.as_f64();
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
    fn unchain_all(&mut self) {
        while let Some(&(_, vm)) = self.chains.first() {
            self.unchain(vm);
        }
    }

    /// When the virtual clock first read `v` (at most its reading now).
    fn time_of_past(&self, v: f64) -> f64 {
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

    fn schedule(&mut self, vm: VmId) {
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

    fn remove_flow(&mut self, vm: VmId) -> Flow {
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
        flow
    }

    /// The flow in `slot` starts sending: its weight joins its links'.
    fn join(&mut self, slot: usize) {
        self.flows[slot].joined = self.epoch;
        let (vm, demand) = (self.flows[slot].vm, self.flows[slot].demand);
        self.settle_links_of(&demand);
        self.bottleneck.add(&self.capacity, vm, &demand);
    }

    /// In the fluid model, brings the bytes carried by `demand`'s links up
    /// to now before their weights change.
    fn settle_links_of(&mut self, demand: &Demand) {
        if self.fluid_on {
            let v = self.clock.at(self.now);
            for &l in fair_share::unique_links(&demand.links) {
                self.settle_link(l, v);
            }
        }
    }

    /// In the fluid model: link `l` carried `weight × ΔV` since it was last
    /// brought up to date; its host's counter moved if that is not nothing.
    fn settle_link(&mut self, l: usize, v: f64) {
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

    fn finish(&mut self, vm: VmId) {
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
    fn postcopy_on_one_connection(&mut self, vm: VmId) -> bool {
        let connection_cap = self.connection_cap;
        let Some(flow) = self.flow_mut(vm) else {
            return false;
        };
        flow.params.multifd_channels = 1;
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
    fn power_off(&mut self, host: HostId) -> bool {
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

    fn consult(&mut self, controller: &mut dyn Controller) -> Vec<Action> {
        let now = self.now;
        if controller.reads_host_tx(Duration::from_secs_f64(now)) {
            self.advance_links();
        } else {
            // In the fluid model every loaded NIC's counter moves all the
            // time: bringing them all up to date at every consultation would
            // cost O(hosts). They wait for a tick that reads them; those
            // settled meanwhile (a flow came or went) are listed all the same.
            self.advance_wan();
        }
        let obs = &mut self.observations;
        obs.now = Duration::from_secs_f64(now);
        obs.ended.clear();
        obs.ended.append(&mut self.ended);
        obs.migrations.clear();
        let needs_progress = controller.needs_progress();
        self.may_chain = !needs_progress && self.solver == Solver::Fluid;
        if needs_progress {
            self.unchain_all();
        }
        let obs = &mut self.observations;
        let flows = if needs_progress { &self.flows[..] } else { &[] };
        let v = self.clock.at(now);
        for flow in flows {
            let round_sent = flow.round_sent_at(now, v);
            obs.migrations.push(MigrationObs {
                vm: flow.vm,
                source: flow.source,
                destination: flow.destination,
                phase: flow.phase,
                round: flow.round,
                started_at: Duration::from_secs_f64(flow.started_at),
                bytes_sent: Bytes::from_f64(flow.earlier_rounds + round_sent),
                bytes_remaining: Bytes::from_f64(flow.round_bytes - round_sent + flow.queued_after_round()),
                rate: BytesPerSec(flow.rate_at(&self.clock, self.epoch)).to_bits_per_sec(),
                dirty_rate: if flow.paused_at.is_some() {
                    BytesPerSec::ZERO
                } else {
                    flow.dirty_rate
                },
                params: flow.params,
            });
        }
        // Say which hosts' counters moved, and where they are now.
        let changed = obs.tx_changed.get_or_insert_with(Vec::new);
        changed.clear();
        for host in self.tx_changed.drain(..) {
            self.tx_marked[host.0] = false;
            obs.host_tx[host.0] = Bytes::from_f64(self.carried[host.0 + 1]);
            changed.push(host);
        }
        obs.wan_bytes = Bytes::from_f64(self.carried[WAN]);
        controller.on_tick(obs)
    }

    /// Carries out the controller's actions; true if rates must be recomputed.
    fn apply(&mut self, actions: Vec<Action>) -> bool {
        let now = self.now;
        // Actions change no rate before the next rebalance: the clock holds.
        let v = self.clock.at(now);
        let mut rates_changed = false;
        for action in actions {
            match action {
                Action::Start {
                    vm,
                    destination,
                    params,
                } => {
                    if self.slot[vm.0].is_some() || self.progress[vm.0].migrated || self.progress[vm.0].lost {
                        continue;
                    }
                    self.start(vm, destination, params);
                    rates_changed = true;
                }
                Action::Retune { vm, change } => {
                    self.unchain(vm);
                    let connection_cap = self.connection_cap;
                    let Some(flow) = self.flow_mut(vm) else { continue };
                    match change {
                        Retune::MaxBandwidth(cap) => {
                            flow.params.max_bandwidth = cap;
                            if !flow.setting_up {
                                let old = flow.demand.cap;
                                flow.demand.cap = demand_cap(&flow.params, connection_cap);
                                let (weight, new) = (flow.demand.weight, flow.demand.cap);
                                self.bottleneck.recap(vm, weight, old, new);
                            }
                            rates_changed = true;
                        }
                        Retune::DowntimeLimit(limit) => flow.params.downtime_limit = limit,
                        Retune::AutoConverge(on) => flow.params.auto_converge = on,
                    }
                }
                Action::SwitchToOffline { vm } => {
                    let (dirty_rate, working_set, memory) = {
                        let spec = self.fleet.vm(vm);
                        (spec.dirty_rate.0, spec.working_set.as_f64(), spec.memory.as_f64())
                    };
                    self.unchain(vm);
                    let Some(flow) = self.flow_mut(vm) else { continue };
                    if flow.phase != Phase::Precopy {
                        continue;
                    }
                    // What is left of the round plus what the guest dirtied
                    // since the round began goes in one paused copy.
                    flow.catch_up(now, v);
                    let dirtied = if flow.copying_disk {
                        // The rest of the disk, then all the memory.
                        flow.copying_disk = false;
                        memory
                    } else {
                        (dirty_rate * (now - flow.round_started_at)).clamp(0.0, working_set)
                    };
                    flow.earlier_rounds += flow.round_sent;
                    flow.round_bytes = flow.round_bytes - flow.round_sent + dirtied;
                    flow.round_sent = 0.0;
                    flow.phase = Phase::StopAndCopy;
                    flow.paused_at = Some(now);
                    self.schedule(vm);
                    self.progress[vm.0].mode = Some(Mode::Offline);
                }
                Action::SwitchToPostcopy { vm } => {
                    let (dirty_rate, working_set) = {
                        let spec = self.fleet.vm(vm);
                        (spec.dirty_rate.0, spec.working_set.as_f64())
                    };
                    self.unchain(vm);
                    let Some(flow) = self.flow_mut(vm) else { continue };
                    // Not before round 1 of memory: the disks must be across
                    // before the guest can run at the destination.
                    let ready = flow.params.mode == Mode::Postcopy
                        || (flow.params.mode == Mode::Live && flow.params.allow_postcopy);
                    if flow.phase != Phase::Precopy || !ready || flow.copying_disk {
                        continue;
                    }
                    // The rest of the round and what the guest dirtied since
                    // it began follow the guest, which dirties no more here.
                    flow.catch_up(now, v);
                    let dirtied = (dirty_rate * (now - flow.round_started_at)).min(working_set);
                    flow.earlier_rounds += flow.round_sent;
                    flow.round_bytes = flow.round_bytes - flow.round_sent + dirtied;
                    flow.round_sent = 0.0;
                    flow.phase = Phase::Postcopy;
                    flow.paused_at = Some(now);
                    self.postcopy_on_one_connection(vm);
                    rates_changed = true;
                    self.schedule(vm);
                }
                Action::Cancel { vm } => {
                    self.unchain(vm);
                    let Some(flow) = self.flow_mut(vm) else { continue };
                    flow.catch_up(now, v);
                    let flow = self.remove_flow(vm);
                    self.progress[vm.0].sent += flow.sent();
                    self.failed.push(FailedAttempt {
                        vm: self.fleet.vm(vm).name.clone(),
                        destination: Some(self.fleet.host(flow.destination).name.clone()),
                        start_s: flow.started_at,
                        end_s: now,
                        reason: "cancelled".to_owned(),
                    });
                    self.ended.push(Ended {
                        vm,
                        outcome: EndOutcome::Failed {
                            reason: "cancelled".to_owned(),
                        },
                    });
                    rates_changed = true;
                }
            }
        }
        rates_changed
    }

    /// Whether the migrations still in flight fill the WAN, at the rates
    /// of the last rebalance: those that ended at this instant no longer
    /// count, and those starting at it not yet (so migrations started
    /// together, or one that replaces one that ended, join a WAN with room).
    fn wan_full(&self) -> bool {
        let in_use = if self.fluid_on {
            self.clock.lambda * self.bottleneck.weight(WAN)
        } else {
            self.flows.iter().map(|f| f.rate).sum()
        };
        in_use >= (1.0 - FULL_WAN) * self.capacity[WAN]
    }

    fn start(&mut self, vm: VmId, destination: HostId, params: MigrationParams) {
        let spec = self.fleet.vm(vm);
        let offline = params.mode == Mode::Offline;
        // The fixed cost, then the connections' ramp-up: round trips lost
        // while slow start and receive-buffer autotuning open the window;
        // more if the WAN is full as it starts (`join_rtts`).
        let rtt = self.network.wan_rtt.as_secs_f64();
        let mut setup = params.setup_time.as_secs_f64() + params.ramp_rtts * rtt;
        if params.join_rtts > 0.0 && self.wan_full() {
            setup += params.join_rtts * rtt;
        }
        let disk = spec.disk.as_f64();
        let copying_disk = disk > 0.0 && !offline;
        let progress = &mut self.progress[vm.0];
        progress.destination = Some(destination);
        progress.start = Some(self.now);
        progress.mode = Some(params.mode);
        progress.connections = Some(params.multifd_channels.max(1));
        self.slot[vm.0] = Some(self.flows.len());
        self.flows.push(Flow {
            vm,
            source: spec.host,
            destination,
            params,
            phase: if offline { Phase::Offline } else { Phase::Precopy },
            round: u32::from(!offline),
            started_at: self.now,
            round_started_at: self.now,
            // The disks first (live), or with the memory in one copy (offline).
            round_bytes: if copying_disk {
                disk
            } else {
                disk + spec.memory.as_f64()
            },
            round_sent: 0.0,
            earlier_rounds: 0.0,
            as_of: self.now,
            rate: 0.0,
            fluid: self.fluid_on && setup <= 0.0,
            v_as_of: self.clock.at(self.now),
            chain: None,
            joined: 0,
            demand: Demand {
                links: [WAN, spec.host.0 + 1, destination.0 + 1],
                weight: f64::from(params.multifd_channels.max(1)),
                cap: if setup > 0.0 {
                    0.0
                } else {
                    demand_cap(&params, self.connection_cap)
                },
            },
            generation: self.generation_of[vm.0],
            paused_at: offline.then_some(self.now),
            setting_up: setup > 0.0,
            ready_at: self.now + setup,
            copying_disk,
            memory: spec.memory.as_f64(),
            dirty_rate: spec.dirty_rate,
        });
        let slot = self.flows.len() - 1;
        if self.flows[slot].sending() {
            self.join(slot);
        }
        // Its first event: the end of its setup, or (in virtual time) of its
        // first round; a full solve reschedules every flow anyway.
        self.schedule(vm);
    }

    /// Brings every loaded link's carried bytes up to now (the others carry
    /// nothing), and the hosts' counters with them.
    fn advance_links(&mut self) {
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
    fn advance_wan(&mut self) {
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
    fn rebalance(&mut self) {
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
    fn retime(&mut self, lambda: f64) {
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
    fn enter_fluid(&mut self, lambda: f64) {
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
    fn leave_fluid(&mut self) {
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
    fn reallocate(&mut self) {
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

    /// Records a timeline point if the WAN's capacity, its load or the
    /// migrations in flight changed since the last one (and, at the `end`,
    /// once more if time passed): between two points the throughput is
    /// constant, so the timeline is exact at a point per change, not per
    /// period.
    fn note_timeline(&mut self, end: bool) {
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

    fn into_result(mut self, policy: &str) -> RunResult {
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
                    decisions: Vec::new(),
                }
            })
            .collect();
        let mut result = RunResult::summarize(policy, fleet, self.network, records, self.timeline);
        result.failed_attempts = self.failed;
        result
    }
}

/// A migration's cap: its connections' window limit and its bandwidth cap.
fn demand_cap(params: &MigrationParams, connection_cap: f64) -> f64 {
    let windows = connection_cap * f64::from(params.multifd_channels.max(1));
    params
        .max_bandwidth
        .map_or(windows, |cap: BitsPerSec| windows.min(cap.to_bytes_per_sec().0))
}
