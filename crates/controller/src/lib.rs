//! # evac-controller
//!
//! The brain of an evacuation, written sans-IO: it never sleeps, spawns or
//! touches a socket. A driver (the simulator in `evac-sim`, or the QEMU
//! backend in `evac-qemu`) calls [`Controller::on_tick`] every control period,
//! and at once whenever a migration ends, with what it measured
//! ([`Observations`]); the controller answers with [`Action`]s (start a
//! migration, retune one, switch one to offline, cancel one) that the driver
//! carries out.
//!
//! ```text
//!            Observations (time, per-migration progress, per-host bytes)
//!   driver  ─────────────────────────────────────────────────────────▶  Controller
//!  (sim or  ◀─────────────────────────────────────────────────────────  (Evacuation
//!    QEMU)      Actions (start, retune, offline, cancel)                 + Policy)
//! ```
//!
//! [`Evacuation`] is the one controller: it keeps the queue of VMs still to
//! move, picks each VM's destination (the destination host with the most
//! free memory that fits, ties by name, unless the scenario pins one), turns
//! cumulative byte counters into measured throughput once per period, and
//! drops VMs whose host has lost power. How many migrations may run at once
//! is the [`Policy`]'s call: [`policies`] has the baselines (sequential,
//! parallel, static limits), the published AIMD feedback controllers
//! (per-host and global), and evac's own `deadline` policy, which also plans
//! against the hosts' power-off deadlines and picks the migrations' parallel
//! connections.

mod admission;
mod deadline;
mod estimate;
mod explain;
mod plan;
pub mod policies;

use std::collections::VecDeque;
use std::time::Duration;

use evac_model::{BitsPerSec, Bytes, BytesPerSec, Fleet, HostId, MigrationParams, Network, VmId};
use serde::{Deserialize, Serialize};

pub use explain::Explanation;
pub use plan::{knapsack_bound, BoundHost, BoundVm};
pub use policies::{AimdParams, PolicyKind};

/// What a driver measured, handed to the controller at every tick.
///
/// A driver fills this as a real deployment can: from its own counters, with
/// no access to the true capacity of the network.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Time since the evacuation started.
    pub now: Duration,
    /// Migrations that ended since the previous tick.
    pub ended: Vec<Ended>,
    /// Every migration in flight (may be empty for a controller whose
    /// [`Controller::needs_progress`] is false).
    pub migrations: Vec<MigrationObs>,
    /// Cumulative bytes each host's NIC has sent, indexed by [`HostId`].
    pub host_tx: Vec<Bytes>,
    /// Cumulative bytes carried across the WAN.
    pub wan_bytes: Bytes,
}

/// A migration that ended, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub vm: VmId,
    pub outcome: EndOutcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EndOutcome {
    /// The VM runs at its destination.
    Completed,
    /// The migration failed or was cancelled; the VM still runs on its
    /// source and may be tried again.
    Failed { reason: String },
    /// The source host lost power: the VM is gone.
    Lost,
}

/// Where a migration is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Live precopy rounds while the guest runs.
    Precopy,
    /// The guest is paused and the last dirty bytes are sent.
    StopAndCopy,
    /// Offline migration: paused from the start.
    Offline,
    /// Postcopy: the guest runs at the destination and its remaining pages
    /// follow; a failure now loses the VM.
    Postcopy,
}

/// The progress of one migration in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationObs {
    pub vm: VmId,
    pub destination: HostId,
    pub phase: Phase,
    /// Precopy round, starting at 1.
    pub round: u32,
    pub started_at: Duration,
    /// Bytes sent so far, all rounds together.
    pub bytes_sent: Bytes,
    /// Bytes left in the current round (QEMU's `ram.remaining`).
    pub bytes_remaining: Bytes,
    /// The rate the migration runs at now.
    pub rate: BitsPerSec,
    /// How fast the guest dirties memory, as measured.
    pub dirty_rate: BytesPerSec,
    pub params: MigrationParams,
}

/// What the controller asks a driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Start {
        vm: VmId,
        destination: HostId,
        params: MigrationParams,
    },
    /// Change a parameter of a migration in flight.
    Retune { vm: VmId, change: Retune },
    /// Pause the guest and send the rest of its memory in one go.
    SwitchToOffline { vm: VmId },
    /// Resume the guest at the destination after one short pause, its
    /// remaining pages following (QEMU's `migrate-start-postcopy`); only for
    /// a migration started with [`evac_model::Mode::Postcopy`] allowed.
    SwitchToPostcopy { vm: VmId },
    /// Abandon the migration; the VM keeps running on its source.
    Cancel { vm: VmId },
}

/// A parameter a migration in flight can have changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retune {
    MaxBandwidth(Option<BitsPerSec>),
    DowntimeLimit(Duration),
    AutoConverge(bool),
}

/// Anything that turns observations into actions.
pub trait Controller {
    fn on_tick(&mut self, observations: &Observations) -> Vec<Action>;

    /// Whether the controller reads [`Observations::migrations`]. A driver
    /// may leave that list empty for one that does not: with thousands of
    /// migrations in flight, building it every period is most of the cost
    /// of a simulation.
    fn needs_progress(&self) -> bool {
        true
    }

    /// A short name for reports.
    fn name(&self) -> &str;

    /// Why the controller did what it did with `vm` (started it when and
    /// with what, switched its mode, cancelled or gave it up), oldest
    /// first; empty for a controller that does not explain itself.
    fn explain(&self, _vm: VmId) -> Vec<Explanation> {
        Vec::new()
    }
}

/// The order in which queued VMs are started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    #[default]
    AsListed,
    SmallestFirst,
    LargestFirst,
    /// Highest priority first; equal priorities smallest first, so that the
    /// most priority is safe soonest.
    Priority,
    /// Earliest power-off first, so the hosts about to die are emptied
    /// first; then as [`Order::Priority`].
    Deadline,
}

impl std::str::FromStr for Order {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "as-listed" => Ok(Order::AsListed),
            "smallest-first" => Ok(Order::SmallestFirst),
            "largest-first" => Ok(Order::LargestFirst),
            "priority" => Ok(Order::Priority),
            "deadline" => Ok(Order::Deadline),
            _ => Err(format!(
                "unknown order `{text}`; expected as-listed, smallest-first, largest-first, priority or deadline"
            )),
        }
    }
}

/// The `[controller]` table of a scenario or inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    pub policy: PolicyKind,
    /// How often the controller is consulted (it is also consulted whenever
    /// a migration ends).
    #[serde(with = "evac_model::units::human_duration")]
    pub period: Duration,
    /// The order VMs start in; unset, the policy's own
    /// ([`PolicyKind::natural_order`]).
    pub order: Option<Order>,
    /// `static`: the most migrations in flight across the site.
    pub max_in_flight: usize,
    /// `static`: the most migrations in flight from one source host.
    pub max_in_flight_per_host: usize,
    /// How often a failed migration is tried again before the VM is given up.
    pub max_attempts: u32,
    /// `aimd-local` and `aimd-global`: the `[controller.aimd]` table.
    pub aimd: AimdParams,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            policy: PolicyKind::Sequential,
            period: Duration::from_secs(1),
            order: None,
            max_in_flight: 5,
            max_in_flight_per_host: 2,
            max_attempts: 3,
            aimd: AimdParams::default(),
        }
    }
}

/// What a [`Policy`] sees when deciding how many migrations may run.
#[derive(Debug)]
pub struct View<'a> {
    pub now: Duration,
    pub fleet: &'a Fleet,
    pub observations: &'a Observations,
    /// Migrations in flight per host, indexed by [`HostId`].
    pub in_flight: &'a [usize],
    /// `Some` on the tick that closes a control period: each source host's
    /// NIC throughput over that period, indexed by [`HostId`].
    pub period_throughput: Option<&'a [BitsPerSec]>,
}

impl View<'_> {
    pub fn total_in_flight(&self) -> usize {
        self.in_flight.iter().sum()
    }
}

/// How many migrations a policy lets run at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// The most in flight across the whole site.
    pub total: usize,
    /// The most in flight per source host, indexed by [`HostId`].
    pub per_host: PerHost,
    /// Fill free slots host by host (the least busy host first) instead of
    /// strictly in queue order, so that no host idles while another has a
    /// queue.
    pub spread_over_hosts: bool,
    /// The rate a migration started now can expect, if the policy has an
    /// estimate: a VM whose host would lose power before it could move at
    /// that rate is given up instead of started, leaving the link to VMs
    /// that can still be saved.
    pub expected_rate: Option<BitsPerSec>,
    /// Queued VMs the policy gives up now: they will not be started.
    pub give_up: Vec<VmId>,
    /// `Some`: the VMs to start, in this order, as far as the limits above
    /// and the destinations' room allow, instead of the queue's order.
    pub picks: Option<Vec<VmId>>,
}

impl Admission {
    /// Limits only: the queue's order, nobody given up.
    pub fn limits(total: usize, per_host: PerHost, spread_over_hosts: bool) -> Self {
        Self {
            total,
            per_host,
            spread_over_hosts,
            expected_rate: None,
            give_up: Vec::new(),
            picks: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PerHost {
    Unlimited,
    Each(usize),
    ByHost(Vec<usize>),
}

impl PerHost {
    fn limit(&self, host: HostId) -> usize {
        match self {
            PerHost::Unlimited => usize::MAX,
            PerHost::Each(n) => *n,
            PerHost::ByHost(limits) => limits[host.0],
        }
    }
}

/// Decides how many migrations run at once.
pub trait Policy {
    fn admit(&mut self, view: &View<'_>) -> Admission;

    /// The parameters of `vm`'s migration about to start, from the
    /// scenario's.
    fn start_params(&mut self, _vm: VmId, base: MigrationParams) -> MigrationParams {
        base
    }

    /// See [`Controller::explain`].
    fn explain(&self, _vm: VmId) -> Vec<Explanation> {
        Vec::new()
    }

    /// Whether the policy reads the migrations' progress; see
    /// [`Controller::needs_progress`].
    fn needs_progress(&self) -> bool {
        false
    }

    /// Changes to migrations in flight (none for the published policies).
    fn tune(&mut self, _view: &View<'_>) -> Vec<Action> {
        Vec::new()
    }
}

/// The controller: a queue of VMs, bookkeeping, and a [`Policy`].
pub struct Evacuation {
    name: String,
    fleet: Fleet,
    params: MigrationParams,
    config: ControllerConfig,
    policy: Box<dyn Policy + Send>,
    /// Each source host's VMs waiting to start, by their rank in the
    /// evacuation's order; indexed by [`HostId`].
    queues: Vec<VecDeque<(usize, VmId)>>,
    /// Hosts with a non-empty queue.
    waiting_hosts: Vec<HostId>,
    /// Hosts that will lose power, latest first, so the next is at the end.
    power_offs: Vec<(Duration, HostId)>,
    state: Vec<VmState>,
    in_flight: Vec<usize>,
    /// Memory promised to each destination host: VMs there or on their way.
    committed: Vec<Bytes>,
    last_sample: Option<Sample>,
    throughput: Vec<BitsPerSec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VmState {
    Queued { attempts: u32 },
    InFlight { destination: HostId, attempts: u32 },
    Done,
}

#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    host_tx: Vec<Bytes>,
}

impl Evacuation {
    /// A controller for `fleet`, starting migrations with `params` under the
    /// policy named in `config`.
    pub fn new(fleet: Fleet, params: MigrationParams, config: ControllerConfig) -> Self {
        let policy = config.policy.build(&fleet, &config, params, None);
        let name = config.policy.to_string();
        Self::with_policy(name, fleet, params, config, policy)
    }

    /// As [`Evacuation::new`], telling the policy what an operator knows of
    /// the WAN without measuring it: its RTT and TCP window, so the most
    /// one connection carries. Its capacity is still only measured.
    pub fn with_network(
        fleet: Fleet,
        network: &Network,
        params: MigrationParams,
        config: ControllerConfig,
    ) -> Self {
        let policy = config
            .policy
            .build(&fleet, &config, params, Some(network.connection_cap()));
        let name = config.policy.to_string();
        Self::with_policy(name, fleet, params, config, policy)
    }

    /// A controller with a policy of the caller's own.
    pub fn with_policy(
        name: String,
        fleet: Fleet,
        params: MigrationParams,
        config: ControllerConfig,
        policy: Box<dyn Policy + Send>,
    ) -> Self {
        let mut order: Vec<VmId> = fleet.vm_ids().collect();
        match config.order.unwrap_or(config.policy.natural_order()) {
            Order::AsListed => {}
            Order::SmallestFirst => order.sort_by_key(|&id| fleet.vm(id).memory),
            Order::LargestFirst => order.sort_by_key(|&id| std::cmp::Reverse(fleet.vm(id).memory)),
            Order::Deadline => order.sort_by_key(|&id| {
                let vm = fleet.vm(id);
                let deadline = fleet.host(vm.host).power_off_at.unwrap_or(Duration::MAX);
                (deadline, std::cmp::Reverse(vm.priority), vm.memory)
            }),
            Order::Priority => order.sort_by_key(|&id| {
                let vm = fleet.vm(id);
                (std::cmp::Reverse(vm.priority), vm.memory)
            }),
        }
        let hosts = fleet.hosts.len();
        let mut queues = vec![VecDeque::new(); hosts];
        for (rank, &vm) in order.iter().enumerate() {
            queues[fleet.vm(vm).host.0].push_back((rank, vm));
        }
        let waiting_hosts = fleet.host_ids().filter(|h| !queues[h.0].is_empty()).collect();
        let mut power_offs: Vec<(Duration, HostId)> = fleet
            .host_ids()
            .filter_map(|h| fleet.host(h).power_off_at.map(|t| (t, h)))
            .collect();
        power_offs.sort_by(|a, b| b.cmp(a));
        Self {
            name,
            state: vec![VmState::Queued { attempts: 0 }; fleet.vms.len()],
            queues,
            waiting_hosts,
            power_offs,
            in_flight: vec![0; hosts],
            committed: vec![Bytes::ZERO; hosts],
            last_sample: None,
            throughput: vec![BitsPerSec(0.0); hosts],
            fleet,
            params,
            config,
            policy,
        }
    }

    /// VMs still waiting to start.
    pub fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    fn settle(&mut self, ended: &[Ended]) {
        for end in ended {
            let VmState::InFlight {
                destination,
                attempts,
            } = self.state[end.vm.0]
            else {
                continue;
            };
            let vm = self.fleet.vm(end.vm);
            self.in_flight[vm.host.0] -= 1;
            match &end.outcome {
                EndOutcome::Completed => self.state[end.vm.0] = VmState::Done,
                EndOutcome::Lost => {
                    self.committed[destination.0] = self.committed[destination.0] - vm.memory;
                    self.state[end.vm.0] = VmState::Done;
                }
                EndOutcome::Failed { .. } => {
                    self.committed[destination.0] = self.committed[destination.0] - vm.memory;
                    if attempts < self.config.max_attempts {
                        // A retry goes first: it was next in line already.
                        self.state[end.vm.0] = VmState::Queued { attempts };
                        let host = vm.host;
                        self.queues[host.0].push_front((0, end.vm));
                        if !self.waiting_hosts.contains(&host) {
                            self.waiting_hosts.push(host);
                        }
                    } else {
                        self.state[end.vm.0] = VmState::Done;
                    }
                }
            }
        }
    }

    /// Forgets queued VMs whose host has lost power: nothing can save them.
    fn drop_powered_off(&mut self, now: Duration) {
        while let Some(&(at, host)) = self.power_offs.last() {
            if at > now {
                break;
            }
            self.power_offs.pop();
            for (_, vm) in self.queues[host.0].drain(..) {
                self.state[vm.0] = VmState::Done;
            }
        }
    }

    /// Measures each host's throughput once a control period has passed.
    fn sample(&mut self, observations: &Observations) -> bool {
        let now = observations.now;
        let due = match &self.last_sample {
            None => true,
            // A tick caused by a migration's end, between two periodic ticks,
            // is too short a window to measure over.
            Some(last) => {
                now.saturating_sub(last.at).as_secs_f64() >= 0.999 * self.config.period.as_secs_f64()
            }
        };
        if !due {
            return false;
        }
        if let Some(last) = &self.last_sample {
            let elapsed = (now - last.at).as_secs_f64();
            for (host, rate) in self.throughput.iter_mut().enumerate() {
                let sent = observations.host_tx.get(host).copied().unwrap_or_default()
                    - last.host_tx.get(host).copied().unwrap_or_default();
                *rate = BitsPerSec(sent.as_f64() * 8.0 / elapsed);
            }
        }
        match &mut self.last_sample {
            // Every period: reuse the buffer rather than allocate anew.
            Some(last) => {
                last.at = now;
                last.host_tx.clone_from(&observations.host_tx);
                true
            }
            None => {
                self.last_sample = Some(Sample {
                    at: now,
                    host_tx: observations.host_tx.clone(),
                });
                false
            }
        }
    }

    /// The destination host with the most free memory that fits `vm`.
    fn destination_for(&self, vm: VmId) -> Option<HostId> {
        let vm = self.fleet.vm(vm);
        let free = |host: HostId| {
            self.fleet
                .host(host)
                .memory
                .map_or(u64::MAX, |room| room.0.saturating_sub(self.committed[host.0].0))
        };
        if let Some(pinned) = vm.destination {
            return (free(pinned) >= vm.memory.0).then_some(pinned);
        }
        self.fleet
            .destination_hosts()
            .filter(|&host| free(host) >= vm.memory.0)
            .max_by(|&a, &b| {
                free(a)
                    .cmp(&free(b))
                    .then_with(|| self.fleet.host(b).name.cmp(&self.fleet.host(a).name))
            })
    }

    fn start(&mut self, vm: VmId, destination: HostId) -> Action {
        let VmState::Queued { attempts } = self.state[vm.0] else {
            unreachable!("only queued VMs start");
        };
        let host = self.fleet.vm(vm).host;
        self.state[vm.0] = VmState::InFlight {
            destination,
            attempts: attempts + 1,
        };
        self.in_flight[host.0] += 1;
        self.committed[destination.0] += self.fleet.vm(vm).memory;
        Action::Start {
            vm,
            destination,
            params: self.policy.start_params(vm, self.params),
        }
    }

    /// Whether `vm` could be moved at `rate` before its host loses power.
    /// Precopy sends the memory, then what was dirtied meanwhile, and so on:
    /// `M / r × 1 / (1 - d / r)` in all. Past `d / r = 1/2` the rounds are
    /// cut short (stop-and-copy or offline), so the factor is held at 2.
    fn can_finish_in_time(&self, vm: VmId, rate: BitsPerSec, now: Duration) -> bool {
        let vm = self.fleet.vm(vm);
        let Some(deadline) = self.fleet.host(vm.host).power_off_at else {
            return true;
        };
        let bytes_per_sec = rate.to_bytes_per_sec().0;
        if bytes_per_sec <= 0.0 {
            return true;
        }
        let dirty_share = (vm.dirty_rate.0 / bytes_per_sec).min(0.5);
        let needed = vm.memory.as_f64() / bytes_per_sec / (1.0 - dirty_share);
        now.as_secs_f64() + needed <= deadline.as_secs_f64()
    }

    /// Starts queued VMs while the admission allows: each free slot goes to
    /// the VM first in the evacuation's order among the hosts with room or,
    /// when the policy spreads, to the host with the fewest in flight.
    fn admit(&mut self, admission: &Admission, now: Duration) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut total: usize = self.in_flight.iter().sum();
        for &vm in &admission.give_up {
            if let VmState::Queued { .. } = self.state[vm.0] {
                let host = self.fleet.vm(vm).host;
                self.queues[host.0].retain(|&(_, queued)| queued != vm);
                self.state[vm.0] = VmState::Done;
            }
        }
        self.waiting_hosts.retain(|h| !self.queues[h.0].is_empty());
        if let Some(picks) = &admission.picks {
            for &vm in picks {
                if total >= admission.total {
                    break;
                }
                if !matches!(self.state[vm.0], VmState::Queued { .. }) {
                    continue;
                }
                let host = self.fleet.vm(vm).host;
                if self.in_flight[host.0] >= admission.per_host.limit(host) {
                    continue;
                }
                let Some(destination) = self.destination_for(vm) else {
                    continue;
                };
                self.queues[host.0].retain(|&(_, queued)| queued != vm);
                actions.push(self.start(vm, destination));
                total += 1;
            }
            return actions;
        }
        // Hosts whose next VM fits on no destination now.
        let mut stuck: Vec<HostId> = Vec::new();
        while total < admission.total {
            let pick = self
                .waiting_hosts
                .iter()
                .copied()
                .filter(|&h| self.in_flight[h.0] < admission.per_host.limit(h))
                .filter(|h| !stuck.contains(h))
                .filter_map(|h| self.queues[h.0].front().map(|&(rank, vm)| (h, rank, vm)))
                .min_by_key(|&(h, rank, _)| {
                    let load = if admission.spread_over_hosts {
                        self.in_flight[h.0]
                    } else {
                        0
                    };
                    (load, rank)
                });
            let Some((host, _, vm)) = pick else { break };
            if let Some(rate) = admission.expected_rate {
                if !self.can_finish_in_time(vm, rate, now) {
                    self.queues[host.0].pop_front();
                    self.state[vm.0] = VmState::Done;
                    continue;
                }
            }
            match self.destination_for(vm) {
                Some(destination) => {
                    self.queues[host.0].pop_front();
                    actions.push(self.start(vm, destination));
                    total += 1;
                }
                None => stuck.push(host),
            }
        }
        actions
    }
}

impl Controller for Evacuation {
    fn on_tick(&mut self, observations: &Observations) -> Vec<Action> {
        self.settle(&observations.ended);
        self.drop_powered_off(observations.now);
        let fresh = self.sample(observations);
        let view = View {
            now: observations.now,
            fleet: &self.fleet,
            observations,
            in_flight: &self.in_flight,
            period_throughput: fresh.then_some(self.throughput.as_slice()),
        };
        let admission = self.policy.admit(&view);
        let mut actions = self.policy.tune(&view);
        actions.extend(self.admit(&admission, observations.now));
        actions
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn needs_progress(&self) -> bool {
        self.policy.needs_progress()
    }

    fn explain(&self, vm: VmId) -> Vec<Explanation> {
        self.policy.explain(vm)
    }
}
