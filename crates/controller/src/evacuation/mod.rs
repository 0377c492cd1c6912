//! [`Evacuation`], the one controller: its state (the queues, what is in
//! flight, what each destination has promised) and how a tick runs. The
//! queue and admission, the destinations, and the throughput samples are
//! in the submodules.

mod destinations;
mod queue;
mod throughput;

use std::cmp::Reverse;
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use evac_model::{BitsPerSec, Bytes, Fleet, HostId, MigrationParams, Network, VmId};

use crate::{
    rollout, Action, Controller, ControllerConfig, EndOutcome, Ended, Explanation, Observations, Policy,
    View, Wakeup,
};

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
    /// Migrations in flight into each destination host.
    inbound: Vec<usize>,
    /// The same destinations by (nothing flowing in, the share of its NIC
    /// a migration more would get, free memory, name descending): where
    /// the next VM goes ([`Evacuation::destination_for`]).
    least_busy: BTreeSet<(bool, u64, u64, Reverse<usize>, HostId)>,
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
    /// What an operator knows of the WAN ([`Evacuation::with_network`]):
    /// its capacity at the start and the most one connection carries, in
    /// bytes per second; for `compression = "auto"`.
    wan: Option<(f64, f64)>,
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
        let mut evacuation = Self::with_policy(name, fleet, params, config, policy);
        evacuation.wan = Some((
            network.capacity_at(Duration::ZERO).to_bytes_per_sec().0,
            network.connection_cap().to_bytes_per_sec().0,
        ));
        evacuation
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
            inbound: vec![0; hosts],
            least_busy: BTreeSet::new(),
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
            wan: None,
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
                self.inbound(destination, true);
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
            self.inbound(destination, false);
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

    /// Takes announced power-offs: the fleet's deadlines become these, the
    /// hosts' order of power-off is made again, and the policy is told. A
    /// host that has lost power already stays dark (a change after the
    /// fact saves nothing), and only source hosts lose power.
    fn learn_power_changes(&mut self, now: Duration, changes: &[(HostId, Option<Duration>)]) {
        let mut changed = false;
        for &(host, power_off_at) in changes {
            let Some(known) = self.fleet.hosts.get_mut(host.0) else {
                continue;
            };
            let dark = known.power_off_at.is_some_and(|t| t <= now)
                && !self.power_offs.iter().any(|&(_, h)| h == host);
            if dark || known.site != evac_model::Site::Source || known.power_off_at == power_off_at {
                continue;
            }
            known.power_off_at = power_off_at;
            self.power_offs.retain(|&(_, h)| h != host);
            if let Some(at) = power_off_at {
                self.power_offs.push((at, host));
            }
            changed = true;
        }
        if changed {
            self.power_offs.sort_by(|a, b| b.cmp(a));
            self.policy.power_changed(&self.fleet);
        }
    }

    /// The policy, and its view of the evacuation as it stands (`fresh`:
    /// this tick closed a control period, whose throughput it then sees):
    /// borrowed together, as the policy decides on the view.
    fn policy_and_view<'a>(
        &'a mut self,
        observations: &'a Observations,
        fresh: bool,
    ) -> (&'a mut (dyn Policy + Send), View<'a>) {
        let view = View {
            now: observations.now,
            fleet: &self.fleet,
            observations,
            in_flight: &self.in_flight,
            in_flight_total: self.in_flight_total,
            queued: self.queued,
            committed: &self.committed,
            period_throughput: fresh.then_some(self.throughput.as_slice()),
            sending_hosts: Some(&self.sending),
        };
        (self.policy.as_mut(), view)
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
}

impl Controller for Evacuation {
    fn on_tick(&mut self, observations: &Observations) -> Vec<Action> {
        self.settle(&observations.ended);
        self.learn_power_changes(observations.now, &observations.power_changes);
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
        let (policy, view) = self.policy_and_view(observations, fresh);
        let admission = policy.admit(&view);
        let mut actions = policy.tune(&view);
        // `parallel` admits usize::MAX: no limit to show.
        self.window = (admission.total < usize::MAX).then_some(admission.total);
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
        // What the policy waits for, seen after these starts.
        let (policy, view) = self.policy_and_view(observations, fresh);
        self.wakeup = policy.next_wakeup(&view);
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
