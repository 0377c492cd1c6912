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
pub mod rollout;
#[cfg(test)]
mod testing;

use std::cmp::Reverse;
use std::collections::{BTreeSet, VecDeque};
use std::ops::Bound;
use std::time::Duration;

use evac_model::{
    BitsPerSec, Bytes, BytesPerSec, FieldPath, Fleet, HostId, Invalid, MigrationParams, Network, VmId,
};
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
    /// The hosts whose `host_tx` may have changed since the previous
    /// observation, if the driver knows (the simulator does); `None`: any
    /// may have. With tens of thousands of hosts and a handful sending, this
    /// keeps the per-period throughput measurement O(hosts sending).
    pub tx_changed: Option<Vec<HostId>>,
    /// This is one of the driver's periodic ticks (not one a migration's
    /// end caused). The controller measures the period's throughput at
    /// such a tick even if it comes a little less than a period after the
    /// last measurement: a real driver stamps an observation with the time
    /// its counters were read, which moves with how long the reading took
    /// (the run loop's QMP queries: a few ms either way), so two periodic
    /// ticks can be 0.4957 s apart with a 0.5 s period, and a measurement
    /// skipped for that made an AIMD window move a period late in the lab
    /// where the simulation moved it on time. The simulator's ticks are
    /// exact and leave it `false` (the period's length decides).
    pub periodic: bool,
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
    /// The host it leaves (the VM's host in the fleet, carried here so a
    /// policy reading every migration at every consultation need not look
    /// each VM up).
    pub source: HostId,
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
    /// a migration started ready for it: with [`evac_model::Mode::Postcopy`],
    /// or live with `allow_postcopy`.
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

/// When a controller next needs to be consulted if nothing happens in the
/// meantime (no migration ends, no host loses power): its own clock, as
/// quinn-proto's `poll_timeout` is a connection's.
///
/// A driver consults the controller whenever a migration ends (or is lost)
/// whatever this says; the wakeup only decides the ticks in between. A
/// driver that ticks more often than asked (the QEMU backend ticks every
/// period) is still correct: the controller only wastes a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wakeup {
    /// At the next instant of the driver's periodic grid (0, period,
    /// 2 × period, ...): today's periodic controller, the default.
    #[default]
    NextPeriod,
    /// At this instant (from the evacuation's start), or at once if past.
    At(Duration),
    /// Only when something happens: nothing changes for this controller
    /// with time alone.
    OnEvent,
}

/// Anything that turns observations into actions.
pub trait Controller {
    fn on_tick(&mut self, observations: &Observations) -> Vec<Action>;

    /// When to consult it next, asked after every [`Controller::on_tick`];
    /// see [`Wakeup`]. The default keeps the periodic behaviour.
    fn next_wakeup(&self) -> Wakeup {
        Wakeup::NextPeriod
    }

    /// Whether the controller reads [`Observations::migrations`]. A driver
    /// may leave that list empty for one that does not: with thousands of
    /// migrations in flight, building it every period is most of the cost
    /// of a simulation.
    fn needs_progress(&self) -> bool {
        true
    }

    /// Whether the tick at `now` (not [`Observations::periodic`]: the
    /// simulator's ticks are not) reads [`Observations::host_tx`]. A driver
    /// for which keeping thousands of counters current costs (the
    /// simulator's fluid model brings a link's bytes up to date only when
    /// read) may leave them as they were when this says no, provided that
    /// the next observation that does carry them lists in
    /// [`Observations::tx_changed`] every host whose counter moved since
    /// they were last carried.
    fn reads_host_tx(&self, _now: Duration) -> bool {
        true
    }

    /// The most migrations it lets run at once, as of its last decision
    /// (an AIMD window, a static limit); `None` when it sets no limit or
    /// does not say. Live metrics show it.
    fn window(&self) -> Option<usize> {
        None
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

impl Order {
    /// Sorts `vms` (of `fleet`) in this order; stable, so equal VMs keep
    /// the order they came in.
    pub fn sort(self, fleet: &Fleet, vms: &mut [VmId]) {
        match self {
            Order::AsListed => {}
            Order::SmallestFirst => vms.sort_by_key(|&id| fleet.vm(id).memory),
            Order::LargestFirst => vms.sort_by_key(|&id| std::cmp::Reverse(fleet.vm(id).memory)),
            Order::Deadline => vms.sort_by_key(|&id| {
                let vm = fleet.vm(id);
                let deadline = fleet.host(vm.host).power_off_at.unwrap_or(Duration::MAX);
                (deadline, std::cmp::Reverse(vm.priority), vm.memory)
            }),
            Order::Priority => vms.sort_by_key(|&id| {
                let vm = fleet.vm(id);
                (std::cmp::Reverse(vm.priority), vm.memory)
            }),
        }
    }
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
                "unknown order `{text}`; expected as-listed, smallest-first, largest-first, priority or deadline{}",
                evac_model::suggest::did_you_mean(
                    text,
                    ["as-listed", "smallest-first", "largest-first", "priority", "deadline"]
                )
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
    /// Simulated time after which a simulated evacuation ends, the VMs not
    /// yet migrated `not-migrated` ("horizon reached"): a typo such as a
    /// `1 Kbps` WAN ends in a result, not in a run of simulated years.
    /// Default a week ([`DEFAULT_HORIZON`]); at most [`MAX_TICKS`] periods.
    #[serde(with = "evac_model::units::human_duration")]
    pub horizon: Duration,
}

/// The default `[controller] horizon`: a week of simulated time.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);
/// The shortest control period: QEMU's counters move in steps of about a
/// millisecond, and a shorter period only costs ticks.
pub const MIN_PERIOD: Duration = Duration::from_millis(1);
/// The longest control period.
pub const MAX_PERIOD: Duration = Duration::from_secs(3600);
/// The most control periods a horizon may hold: with a period of 1 ms the
/// horizon is at most about 2.8 h, with the default 1 s about 116 days.
pub const MAX_TICKS: u64 = 10_000_000;
/// The most failures of one VM before it is given up.
pub const MAX_ATTEMPTS: u32 = 1000;

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
            horizon: DEFAULT_HORIZON,
        }
    }
}

impl ControllerConfig {
    /// Checks the `[controller]` table (part of the one wall of
    /// `evac_model::validate`); paths are under `controller`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let at = |key: &str| FieldPath::top("controller").key(key);
        let show = evac_model::format_duration;
        if self.period.is_zero() {
            return Err(Invalid::new(
                at("period"),
                "the controller needs a period above zero, like \"1 s\"",
            ));
        }
        if self.period < MIN_PERIOD || self.period > MAX_PERIOD {
            return Err(Invalid::new(
                at("period"),
                format!(
                    "a period of {} is not within {} ..= {}",
                    show(self.period),
                    show(MIN_PERIOD),
                    show(MAX_PERIOD)
                ),
            ));
        }
        // A limit of 0 would start no migration and wait forever. Checked
        // whatever the policy, as the policy may be chosen elsewhere later.
        let never_starts = "a limit of 0 would never start a migration; give at least 1";
        if self.max_in_flight == 0 {
            return Err(Invalid::new(at("max_in_flight"), never_starts));
        }
        if self.max_in_flight_per_host == 0 {
            return Err(Invalid::new(at("max_in_flight_per_host"), never_starts));
        }
        if self.aimd.max_window == 0 {
            return Err(Invalid::new(at("aimd").key("max_window"), never_starts));
        }
        if self.max_attempts == 0 {
            return Err(Invalid::new(
                at("max_attempts"),
                "0 attempts would never start a migration; give at least 1",
            ));
        }
        if self.max_attempts > MAX_ATTEMPTS {
            return Err(Invalid::new(
                at("max_attempts"),
                format!(
                    "{} attempts are more than the {MAX_ATTEMPTS} a VM may have",
                    self.max_attempts
                ),
            ));
        }
        for (key, margin) in [
            ("increase_margin", self.aimd.increase_margin),
            ("decrease_margin", self.aimd.decrease_margin),
        ] {
            if !(0.0..=1.0).contains(&margin) {
                return Err(Invalid::new(
                    at("aimd").key(key),
                    format!("{margin} is not a share within 0 ..= 1"),
                ));
            }
        }
        if self.horizon.is_zero() {
            return Err(Invalid::new(
                at("horizon"),
                "a horizon of 0 s ends the evacuation before it starts; give one above zero",
            ));
        }
        if self.horizon > evac_model::units::MAX_DURATION {
            return Err(Invalid::new(
                at("horizon"),
                format!("a horizon of {} is beyond 87660 h (10 years)", show(self.horizon)),
            ));
        }
        let ticks = self.horizon.as_nanos() / self.period.as_nanos();
        if ticks > u128::from(MAX_TICKS) {
            return Err(Invalid::new(
                at("period"),
                format!(
                    "a period of {} over a horizon of {} is {ticks} periods, more than {MAX_TICKS}; \
                     lengthen the period or shorten `horizon`",
                    show(self.period),
                    show(self.horizon)
                ),
            ));
        }
        Ok(())
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
    /// The sum of `in_flight`, kept as migrations start and end.
    pub in_flight_total: usize,
    /// VMs still waiting to start.
    pub queued: usize,
    /// `Some` on the tick that closes a control period: each source host's
    /// NIC throughput over that period, indexed by [`HostId`].
    pub period_throughput: Option<&'a [BitsPerSec]>,
    /// The hosts whose `period_throughput` may be non-zero, ascending (the
    /// others' is exactly zero); `None`: any host's may be.
    pub sending_hosts: Option<&'a [HostId]>,
}

impl View<'_> {
    pub fn total_in_flight(&self) -> usize {
        self.in_flight_total
    }

    /// `Some` on the tick that closes a control period: the sum of every
    /// source host's NIC throughput over it. Summed in host order over the
    /// hosts that sent (adding the others' exact zeros changes nothing), so
    /// it costs O(hosts sending), not O(hosts).
    pub fn period_source_throughput(&self) -> Option<BitsPerSec> {
        let throughput = self.period_throughput?;
        let is_source = |h: &HostId| self.fleet.host(*h).site == evac_model::Site::Source;
        let total = match self.sending_hosts {
            Some(hosts) => hosts
                .iter()
                .filter(|h| is_source(h))
                .fold(0.0, |sum, h| sum + throughput[h.0].0),
            None => self
                .fleet
                .source_hosts()
                .fold(0.0, |sum, h| sum + throughput[h.0].0),
        };
        Some(BitsPerSec(total))
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

    /// Whether the policy reads [`View::period_throughput`]: if not, the
    /// controller measures none (and reads no host counters).
    fn reads_throughput(&self) -> bool {
        true
    }

    /// Changes to migrations in flight (none for the published policies).
    fn tune(&mut self, _view: &View<'_>) -> Vec<Action> {
        Vec::new()
    }

    /// When the policy next needs a tick if nothing happens, asked after
    /// every tick with the state the tick left (see [`Wakeup`]). The default,
    /// every period, is always correct; a policy returns
    /// [`Wakeup::OnEvent`] when time alone changes none of its decisions
    /// (the fixed limits; AIMD once nothing is left to start), or
    /// [`Wakeup::At`] when it knows the next instant it must act (a plan's
    /// next step, a deadline's last safe moment), so that a simulation of a
    /// long evacuation costs its events, not its seconds.
    fn next_wakeup(&self, _view: &View<'_>) -> Wakeup {
        Wakeup::NextPeriod
    }

    /// A simulator to plan with (see [`rollout`]); policies that do not
    /// plan ignore it.
    fn plan_with(&mut self, _rollout: std::sync::Arc<dyn rollout::Rollout>) {}
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
    /// VMs in all the queues.
    queued: usize,
    /// The waiting hosts as admission picks them, so a start costs
    /// O(log hosts): see [`Waiting`].
    waiting: Waiting,
    /// Hosts that will lose power, latest first, so the next is at the end.
    power_offs: Vec<(Duration, HostId)>,
    state: Vec<VmState>,
    in_flight: Vec<usize>,
    in_flight_total: usize,
    /// Memory promised to each destination host: VMs there or on their way.
    committed: Vec<Bytes>,
    /// The unpinned destinations by (free memory, name descending), so the
    /// roomiest (ties: first by name) is the last: O(log destinations).
    roomiest: BTreeSet<(u64, Reverse<usize>, HostId)>,
    /// Each destination's rank among the destinations sorted by name.
    name_rank: Vec<usize>,
    last_sample: Option<Sample>,
    /// The site-wide limit of the last admission, for [`Controller::window`].
    window: Option<usize>,
    throughput: Vec<BitsPerSec>,
    /// Hosts whose counter moved since the last sample (all of them when
    /// the driver does not say), and those with a non-zero throughput.
    touched: Touched,
    sending: Vec<HostId>,
    wakeup: Wakeup,
}

/// Hosts marked at most once each.
#[derive(Debug, Clone, Default)]
struct Touched {
    all: bool,
    marked: Vec<bool>,
    list: Vec<HostId>,
}

impl Touched {
    fn mark(&mut self, host: HostId) {
        if !std::mem::replace(&mut self.marked[host.0], true) {
            self.list.push(host);
        }
    }

    fn clear(&mut self) {
        for host in self.list.drain(..) {
            self.marked[host.0] = false;
        }
        self.all = false;
    }
}

/// The hosts with VMs waiting, ordered as [`Evacuation::admit`] picks them:
/// by the rank of their queue's head, or by (migrations in flight, rank)
/// when the policy spreads. Ties (several retries at rank 0) go to the host
/// that began waiting first, as a list of waiting hosts in arrival order
/// would have it.
#[derive(Debug, Clone, Default)]
struct Waiting {
    by_rank: BTreeSet<(usize, u64, HostId)>,
    by_load: BTreeSet<(usize, usize, u64, HostId)>,
    /// The key each listed host is filed under: (load, rank, arrival).
    filed: Vec<Option<(usize, usize, u64)>>,
    /// Whether a host counts as waiting, and since when. A host whose queue
    /// ran dry stays waiting until the next admission (its arrival kept if a
    /// retry refills it before), as the list it replaces behaved.
    waiting: Vec<bool>,
    arrival: Vec<u64>,
    next_arrival: u64,
    ran_dry: Vec<HostId>,
    /// Whether the two ordered sets are kept. A policy that picks its VMs
    /// itself ([`Admission::picks`]) never reads them, so they are dropped
    /// at its first admission rather than kept up to date at every start
    /// and end, and built again should an admission without picks come.
    kept: bool,
}

/// What a resumed run's journal says of a VM: see [`Evacuation::resume_vm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    Waiting { attempts: u32 },
    InFlight { destination: HostId, attempts: u32 },
    Done { destination: Option<HostId> },
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

    /// Lets the policy plan by simulating candidate plans with `rollout`
    /// (`deadline` does; the published policies ignore it).
    pub fn planning_with(mut self, rollout: std::sync::Arc<dyn rollout::Rollout>) -> Self {
        self.policy.plan_with(rollout);
        self
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
        config
            .order
            .unwrap_or(config.policy.natural_order())
            .sort(&fleet, &mut order);
        let hosts = fleet.hosts.len();
        let mut queues = vec![VecDeque::new(); hosts];
        for (rank, &vm) in order.iter().enumerate() {
            queues[fleet.vm(vm).host.0].push_back((rank, vm));
        }
        let queued = queues.iter().map(VecDeque::len).sum();
        let mut waiting = Waiting {
            filed: vec![None; hosts],
            waiting: vec![false; hosts],
            arrival: vec![0; hosts],
            kept: true,
            ..Waiting::default()
        };
        for h in fleet.host_ids().filter(|h| !queues[h.0].is_empty()) {
            waiting.waiting[h.0] = true;
            waiting.arrival[h.0] = waiting.next_arrival;
            waiting.next_arrival += 1;
        }
        let mut destinations: Vec<HostId> = fleet.destination_hosts().collect();
        destinations.sort_by(|&a, &b| fleet.host(a).name.cmp(&fleet.host(b).name));
        let mut name_rank = vec![0; hosts];
        for (rank, d) in destinations.iter().enumerate() {
            name_rank[d.0] = rank;
        }
        let mut power_offs: Vec<(Duration, HostId)> = fleet
            .host_ids()
            .filter_map(|h| fleet.host(h).power_off_at.map(|t| (t, h)))
            .collect();
        power_offs.sort_by(|a, b| b.cmp(a));
        let mut evacuation = Self {
            name,
            state: vec![VmState::Queued { attempts: 0 }; fleet.vms.len()],
            queues,
            queued,
            waiting,
            power_offs,
            in_flight: vec![0; hosts],
            in_flight_total: 0,
            committed: vec![Bytes::ZERO; hosts],
            roomiest: BTreeSet::new(),
            name_rank,
            last_sample: None,
            window: None,
            throughput: vec![BitsPerSec(0.0); hosts],
            touched: Touched {
                all: false,
                marked: vec![false; hosts],
                list: Vec::new(),
            },
            sending: Vec::new(),
            wakeup: Wakeup::NextPeriod,
            fleet,
            params,
            config,
            policy,
        };
        for h in 0..hosts {
            evacuation.file_host(HostId(h));
        }
        for d in destinations {
            evacuation.file_destination(d);
        }
        evacuation
    }

    /// VMs still waiting to start.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Resuming a run that was interrupted (its driver crashed): tells the
    /// fresh controller what the journal says of `vm`, before its first
    /// tick. `Waiting` after `attempts` failed attempts; `InFlight` to a
    /// destination (adopted, not started again); `Done` (migrated there, or
    /// with no destination: lost or given up). Call once per VM at most.
    pub fn resume_vm(&mut self, vm: VmId, state: Resumed) {
        let (host, memory) = {
            let v = self.fleet.vm(vm);
            (v.host, v.memory)
        };
        let VmState::Queued { .. } = self.state[vm.0] else {
            return;
        };
        let attempts = match state {
            Resumed::Waiting { attempts } => {
                self.state[vm.0] = VmState::Queued { attempts };
                return;
            }
            Resumed::InFlight { attempts, .. } => attempts,
            Resumed::Done { .. } => 0,
        };
        // Out of its host's queue, wherever it is in it.
        self.unfile_host(host);
        if let Some(at) = self.queues[host.0].iter().position(|&(_, v)| v == vm) {
            self.queues[host.0].remove(at);
            self.queued -= 1;
            if self.queues[host.0].is_empty() {
                self.waiting.ran_dry.push(host);
            }
        }
        self.file_host(host);
        match state {
            Resumed::InFlight { destination, .. } => {
                self.add_in_flight(host, true);
                self.commit(destination, memory, true);
                self.state[vm.0] = VmState::InFlight {
                    destination,
                    attempts,
                };
            }
            Resumed::Done { destination } => {
                if let Some(destination) = destination {
                    self.commit(destination, memory, true);
                }
                self.state[vm.0] = VmState::Done;
            }
            Resumed::Waiting { .. } => unreachable!("returned above"),
        }
    }

    /// Files `host` under its current key if it waits with a queue.
    fn file_host(&mut self, host: HostId) {
        let w = &mut self.waiting;
        if !w.kept {
            return;
        }
        debug_assert!(w.filed[host.0].is_none());
        let Some(&(rank, _)) = self.queues[host.0].front() else {
            return;
        };
        let key = (self.in_flight[host.0], rank, w.arrival[host.0]);
        w.by_rank.insert((key.1, key.2, host));
        w.by_load.insert((key.0, key.1, key.2, host));
        w.filed[host.0] = Some(key);
    }

    /// Takes `host` out of the waiting order before its key changes.
    fn unfile_host(&mut self, host: HostId) {
        let w = &mut self.waiting;
        if !w.kept {
            return;
        }
        if let Some(key) = w.filed[host.0].take() {
            w.by_rank.remove(&(key.1, key.2, host));
            w.by_load.remove(&(key.0, key.1, key.2, host));
        }
    }

    /// Keeps the waiting hosts' ordered sets from now on, building them
    /// from the queues, or drops them: see [`Waiting::kept`].
    fn keep_waiting_order(&mut self, keep: bool) {
        if self.waiting.kept == keep {
            return;
        }
        let w = &mut self.waiting;
        w.by_rank.clear();
        w.by_load.clear();
        w.filed.iter_mut().for_each(|key| *key = None);
        w.kept = keep;
        if keep {
            for h in 0..self.queues.len() {
                self.file_host(HostId(h));
            }
        }
    }

    /// Takes the head of `host`'s queue.
    fn pop_queued(&mut self, host: HostId) {
        self.unfile_host(host);
        self.queues[host.0].pop_front();
        self.queued -= 1;
        if self.queues[host.0].is_empty() {
            self.waiting.ran_dry.push(host);
        }
        self.file_host(host);
    }

    /// Takes `vm` out of its host's queue, wherever it is in it: a policy
    /// that picks VMs itself ([`Admission::picks`]) or gives them up. Costs
    /// the length of that one queue.
    fn take_queued(&mut self, vm: VmId) {
        let host = self.fleet.vm(vm).host;
        let Some(at) = self.queues[host.0].iter().position(|&(_, queued)| queued == vm) else {
            return;
        };
        self.unfile_host(host);
        self.queues[host.0].remove(at);
        self.queued -= 1;
        if self.queues[host.0].is_empty() {
            self.waiting.ran_dry.push(host);
        }
        self.file_host(host);
    }

    fn free(&self, host: HostId) -> u64 {
        self.fleet
            .host(host)
            .memory
            .map_or(u64::MAX, |room| room.0.saturating_sub(self.committed[host.0].0))
    }

    fn file_destination(&mut self, host: HostId) {
        let key = (self.free(host), Reverse(self.name_rank[host.0]), host);
        self.roomiest.insert(key);
    }

    fn unfile_destination(&mut self, host: HostId) {
        let key = (self.free(host), Reverse(self.name_rank[host.0]), host);
        self.roomiest.remove(&key);
    }

    fn commit(&mut self, destination: HostId, memory: Bytes, add: bool) {
        self.unfile_destination(destination);
        let committed = &mut self.committed[destination.0];
        *committed = if add {
            *committed + memory
        } else {
            *committed - memory
        };
        self.file_destination(destination);
    }

    fn add_in_flight(&mut self, host: HostId, add: bool) {
        self.unfile_host(host);
        if add {
            self.in_flight[host.0] += 1;
            self.in_flight_total += 1;
        } else {
            self.in_flight[host.0] -= 1;
            self.in_flight_total -= 1;
        }
        self.file_host(host);
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
            let (host, memory) = {
                let vm = self.fleet.vm(end.vm);
                (vm.host, vm.memory)
            };
            self.add_in_flight(host, false);
            match &end.outcome {
                EndOutcome::Completed => self.state[end.vm.0] = VmState::Done,
                EndOutcome::Lost => {
                    self.commit(destination, memory, false);
                    self.state[end.vm.0] = VmState::Done;
                }
                EndOutcome::Failed { .. } => {
                    self.commit(destination, memory, false);
                    if attempts < self.config.max_attempts {
                        // A retry goes first: it was next in line already.
                        self.state[end.vm.0] = VmState::Queued { attempts };
                        self.unfile_host(host);
                        self.queues[host.0].push_front((0, end.vm));
                        self.queued += 1;
                        let w = &mut self.waiting;
                        if !w.waiting[host.0] {
                            w.waiting[host.0] = true;
                            w.arrival[host.0] = w.next_arrival;
                            w.next_arrival += 1;
                        }
                        self.file_host(host);
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
            self.unfile_host(host);
            self.queued -= self.queues[host.0].len();
            for (_, vm) in self.queues[host.0].drain(..) {
                self.state[vm.0] = VmState::Done;
            }
            self.waiting.ran_dry.push(host);
        }
    }

    /// Measures each host's throughput once a control period has passed.
    /// Whether a throughput sample is due at `now`: the first, or a control
    /// period after the last (half of one at a periodic tick).
    fn sample_due(&self, now: Duration, periodic: bool) -> bool {
        match &self.last_sample {
            None => true,
            // A tick caused by a migration's end, between two periodic ticks,
            // is too short a window to measure over; a periodic tick is one
            // (see `Observations::periodic`) unless it follows a measurement
            // taken at such an end.
            Some(last) => {
                let elapsed = now.saturating_sub(last.at).as_secs_f64();
                let period = self.config.period.as_secs_f64();
                elapsed >= 0.999 * period || (periodic && elapsed >= 0.5 * period)
            }
        }
    }

    fn sample(&mut self, observations: &Observations) -> bool {
        let now = observations.now;
        if !self.sample_due(now, observations.periodic) {
            return false;
        }
        let sparse = !self.touched.all;
        if let Some(last) = &mut self.last_sample {
            let elapsed = (now - last.at).as_secs_f64();
            let rate = |host: usize, last: &Sample| {
                let sent = observations.host_tx.get(host).copied().unwrap_or_default()
                    - last.host_tx.get(host).copied().unwrap_or_default();
                BitsPerSec(sent.as_f64() * 8.0 / elapsed)
            };
            if sparse {
                // Only the hosts whose counter moved can have sent: the
                // others' throughput is exactly zero.
                for host in self.sending.drain(..) {
                    self.throughput[host.0] = BitsPerSec(0.0);
                }
                for &host in &self.touched.list {
                    self.throughput[host.0] = rate(host.0, last);
                    if let (Some(slot), Some(&tx)) =
                        (last.host_tx.get_mut(host.0), observations.host_tx.get(host.0))
                    {
                        *slot = tx;
                    }
                }
                self.sending.extend_from_slice(&self.touched.list);
                self.sending.sort_unstable();
            } else {
                for host in 0..self.throughput.len() {
                    self.throughput[host] = rate(host, last);
                }
                self.sending.clear();
                self.sending.extend(self.fleet.host_ids());
            }
        }
        match &mut self.last_sample {
            // Every period: reuse the buffer rather than allocate anew.
            Some(last) => {
                last.at = now;
                if !sparse || last.host_tx.len() != observations.host_tx.len() {
                    last.host_tx.clone_from(&observations.host_tx);
                }
                self.touched.clear();
                true
            }
            None => {
                self.last_sample = Some(Sample {
                    at: now,
                    host_tx: observations.host_tx.clone(),
                });
                self.touched.clear();
                false
            }
        }
    }

    /// The destination host with the most free memory that fits `vm`.
    fn destination_for(&self, vm: VmId) -> Option<HostId> {
        let vm = self.fleet.vm(vm);
        if let Some(pinned) = vm.destination {
            return (self.free(pinned) >= vm.memory.0).then_some(pinned);
        }
        // The roomiest fits, or none does.
        self.roomiest
            .last()
            .filter(|&&(free, _, _)| free >= vm.memory.0)
            .map(|&(_, _, host)| host)
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
        self.add_in_flight(host, true);
        self.commit(destination, self.fleet.vm(vm).memory, true);
        Action::Start {
            vm,
            destination,
            params: self.policy.start_params(vm, self.params),
        }
    }

    /// Starts queued VMs while the admission allows: each free slot goes to
    /// the VM first in the evacuation's order among the hosts with room or,
    /// when the policy spreads, to the host with the fewest in flight.
    fn admit(&mut self, admission: &Admission) -> Vec<Action> {
        let mut actions = Vec::new();
        // Hosts that ran dry since the last admission stop waiting now.
        for host in std::mem::take(&mut self.waiting.ran_dry) {
            if self.queues[host.0].is_empty() {
                self.waiting.waiting[host.0] = false;
            }
        }
        if let Some(picks) = &admission.picks {
            self.keep_waiting_order(false);
            for &vm in picks {
                if self.in_flight_total >= admission.total {
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
                self.take_queued(vm);
                actions.push(self.start(vm, destination));
            }
            return actions;
        }
        self.keep_waiting_order(true);
        let spread = admission.spread_over_hosts;
        // Every host before the cursor is out for this admission: at its
        // limit (which only starts raise) or stuck (its next VM fits on no
        // destination, and starts only fill destinations); and a host picked
        // is filed again under a larger key. So each pick resumes where the
        // last stopped, and a whole admission costs O(k log hosts) for k
        // starts plus the hosts it passes once.
        let mut cursor: Bound<(usize, usize, u64, HostId)> = Bound::Unbounded;
        while self.in_flight_total < admission.total {
            let eligible = |&(load, rank, arrival, host): &(usize, usize, u64, HostId)| {
                (load < admission.per_host.limit(host)).then_some((load, rank, arrival, host))
            };
            let pick = if spread {
                self.waiting
                    .by_load
                    .range((cursor, Bound::Unbounded))
                    .find_map(&eligible)
            } else {
                let from = match cursor {
                    Bound::Excluded((_, rank, arrival, host)) => Bound::Excluded((rank, arrival, host)),
                    _ => Bound::Unbounded,
                };
                self.waiting
                    .by_rank
                    .range((from, Bound::Unbounded))
                    .find_map(|&(rank, arrival, host)| {
                        eligible(&(self.in_flight[host.0], rank, arrival, host))
                    })
                    .map(|(_, rank, arrival, host)| (0, rank, arrival, host))
            };
            let Some(key) = pick else { break };
            cursor = Bound::Excluded(key);
            let host = key.3;
            let &(_, vm) = self.queues[host.0].front().expect("a filed host has a queue");
            if let Some(destination) = self.destination_for(vm) {
                self.pop_queued(host);
                actions.push(self.start(vm, destination));
            }
        }
        actions
    }
}

impl Controller for Evacuation {
    fn on_tick(&mut self, observations: &Observations) -> Vec<Action> {
        self.settle(&observations.ended);
        self.drop_powered_off(observations.now);
        // A policy that reads no throughput needs no sample (nor the hosts'
        // counters: see `reads_host_tx`).
        let reads_throughput = self.policy.reads_throughput();
        match &observations.tx_changed {
            Some(_) if !reads_throughput => {}
            Some(hosts) => {
                for &host in hosts {
                    if host.0 < self.touched.marked.len() {
                        self.touched.mark(host);
                    }
                }
            }
            None => self.touched.all = true,
        }
        let fresh = reads_throughput && self.sample(observations);
        let view = View {
            now: observations.now,
            fleet: &self.fleet,
            observations,
            in_flight: &self.in_flight,
            in_flight_total: self.in_flight_total,
            queued: self.queued,
            period_throughput: fresh.then_some(self.throughput.as_slice()),
            sending_hosts: Some(&self.sending),
        };
        let admission = self.policy.admit(&view);
        // `parallel` admits usize::MAX: no limit to show.
        self.window = (admission.total < usize::MAX).then_some(admission.total);
        let mut actions = self.policy.tune(&view);
        // A migration the policy cancels to give its bandwidth to others is
        // not a failed attempt: the VM may be tried again as often as a VM
        // never started (a policy's triage is revocable; only failures
        // count toward `max_attempts`).
        for action in &actions {
            if let Action::Cancel { vm } = *action {
                if let VmState::InFlight { attempts, .. } = &mut self.state[vm.0] {
                    *attempts = attempts.saturating_sub(1);
                }
            }
        }
        actions.extend(self.admit(&admission));
        let view = View {
            now: observations.now,
            fleet: &self.fleet,
            observations,
            in_flight: &self.in_flight,
            in_flight_total: self.in_flight_total,
            queued: self.queued,
            period_throughput: fresh.then_some(self.throughput.as_slice()),
            sending_hosts: Some(&self.sending),
        };
        self.wakeup = self.policy.next_wakeup(&view);
        actions
    }

    fn next_wakeup(&self) -> Wakeup {
        self.wakeup
    }

    fn window(&self) -> Option<usize> {
        self.window
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn needs_progress(&self) -> bool {
        self.policy.needs_progress()
    }

    fn reads_host_tx(&self, now: Duration) -> bool {
        self.policy.reads_throughput() && self.sample_due(now, false)
    }

    fn explain(&self, vm: VmId) -> Vec<Explanation> {
        self.policy.explain(vm)
    }
}
