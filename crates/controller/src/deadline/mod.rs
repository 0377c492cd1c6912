//! `deadline`: evac's own policy, a planner that, whenever it is consulted,
//! plans the rest of the evacuation with what it has measured, and revises
//! the plan as the measurements change.
//!
//! Each call it
//!
//! 1. **measures** ([`crate::estimate`]): the WAN's capacity from the rates
//!    of the migrations in flight (its peak and its time-weighted mean over
//!    the last minutes, so an alternating WAN moves neither the plan nor the
//!    number in flight on each change), and what one connection carries;
//! 2. **plans** ([`crate::plan`]): which VMs can still be saved before their
//!    hosts lose power, cumulatively (every VM of every host dying by `d`
//!    shares the bytes the WAN delivers by `d`), by priority per byte, each
//!    VM's bytes counting what precopy re-sends at its dirty rate; who is
//!    saved is decided at each VM's cheapest mode, then each takes the
//!    first mode whose extra bytes still fit: live, then postcopy (when the
//!    scenario allows it) or offline from the start. A VM that does not fit
//!    even at the WAN's peak goes last (never out of the order: it starts
//!    on room no other VM wants, and the next plan judges it again); one
//!    that fits only at the peak waits behind those that fit at the mean
//!    and die no later;
//! 3. **admits** ([`crate::admission`]): in the plan's order (earliest
//!    deadline first, then priority per byte), as few migrations as fill the
//!    path, no second one on a full NIC, each with the connections the room
//!    it fills needs;
//! 4. **watches** the migrations in flight: one that cannot finish before
//!    its host dies at the share it actually gets (and the share it gets
//!    once the migrations ahead of it are done) is switched to postcopy or
//!    offline at the last safe moment if that saves it (postcopy only on a
//!    WAN watched long enough to trust its trough), and otherwise
//!    cancelled (once, and only if a VM racing a power-off that can make
//!    it would use its bandwidth) and queued again, last;
//! 5. **rolls out** ([`crate::rollout`]), when a driver gave it a
//!    simulator: every 30 s or when the WAN moves, simulates candidate
//!    plans from now under up to four forecasts (the WAN's mean, trough
//!    and peak, constant, and its last minutes replayed) and follows the
//!    best;
//! 6. **explains** ([`crate::explain`]) each decision per VM.
//!
//! Replanning costs `O(n log n)` in the VMs left, so it runs only when
//! something changed: a migration ended, the mean capacity moved by more
//! than [`REPLAN_CHANGE`], or [`REPLAN_EVERY_S`] passed; with no power-off
//! deadline in the fleet there is nothing to plan, only an order.
//!
//! Step 2 is in `order`, step 4 in `watch`, step 5 in `rollouts`; this file
//! keeps the state and the [`Policy`] answers.

mod order;
mod rollouts;
mod watch;

use evac_model::{BitsPerSec, Connections, Fleet, HostId, MigrationParams, Mode, VmId};

use crate::admission::{self, HostLoads, Running, Target};
use crate::estimate::Estimator;
use crate::explain::{Explanation, Journal, Start};
use crate::rollout::{Candidate, FixedPlan, Rollout};
use crate::{Action, Admission, EndOutcome, MigrationObs, PerHost, Phase, Policy, View, Wakeup};

/// A relative change of the mean capacity that calls for a new plan.
pub const REPLAN_CHANGE: f64 = 0.10;

/// How many control periods a migration runs before its rate is taken as
/// a measure of the WAN (the first covers its setup and TCP's ramp).
pub const SETTLE_PERIODS: f64 = 2.0;

/// The longest the rollouts' choice stands, seconds (it is made again
/// sooner when the WAN's mean moves by [`REPLAN_CHANGE`]).
pub const ROLLOUT_EVERY_S: f64 = 30.0;

/// The longest a plan stands, seconds.
pub const REPLAN_EVERY_S: f64 = 30.0;

/// Where the planner believes a VM is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued,
    InFlight,
    /// Cancelled by this policy, the cancel not landed yet: its failed end
    /// queues it again (behind every VM that can still make it), but
    /// nothing starts it before that end comes.
    Cancelling,
    Done,
}

/// The planner; see the module documentation.
pub struct Deadline {
    /// Per VM: its host (read for the candidates at every consultation:
    /// kept here, dense, rather than looked up in the fleet's records).
    host: Vec<HostId>,
    /// Per VM: when its host loses power, seconds.
    fleet_deadline: Vec<Option<f64>>,
    any_deadline: bool,
    base: MigrationParams,
    /// The control period, seconds: how late an action can come.
    period: f64,
    estimator: Estimator,
    journal: Journal,
    state: Vec<State>,
    /// The mode and connections each VM starts with.
    mode: Vec<Mode>,
    connections: Vec<Connections>,
    /// VMs to start, in the plan's order, from `head` on (those before it
    /// have left the queue).
    order: Vec<VmId>,
    head: usize,
    /// Per VM: the last plan found it cannot make its power-off even at the
    /// WAN's peak. Triage only: such a VM waits behind every VM that can,
    /// and still starts whenever the path has room nothing else would use
    /// (a failed attempt costs nothing, and estimates can be pessimistic).
    hopeless: Vec<bool>,
    /// No VM marked hopeless sits in `order` before this index: the plan
    /// puts them last and a VM this policy cancelled goes back at the end,
    /// so the scavengers' pass of the admission scans from here. (It
    /// scanned the whole queue at every call for a scavenger that was not
    /// there: 100,000 VMs with no power-off took 22 s instead of 1 s.)
    hopeless_from: usize,
    /// Per VM: its migration in flight was started on room no VM able to
    /// make it wanted (the second pass of the admission). Its load does
    /// not count when VMs that can make it are admitted, and it is never
    /// cancelled. Set at each start from the pass that started it: a VM
    /// once a scavenger that a later plan finds able to make it starts as
    /// any other, and its load then counts (a sticky flag let VMs be
    /// admitted beside it as if it were not there, and it was lost).
    scavenger: Vec<bool>,
    /// Per VM: this policy cancelled it once. It is never cancelled again,
    /// so no VM is started and cancelled in turn.
    cancelled_once: Vec<bool>,
    /// When the last plan was made and with what mean capacity.
    planned: Option<(f64, f64)>,
    replan: bool,
    /// A VM whose host will lose power started on this tick (it is not in
    /// the observations yet).
    started_racing: bool,
    /// Scratch for [`admission::fill`].
    loads: HostLoads,
    /// The simulator to weigh candidate plans with, if the driver has one.
    rollout: Option<std::sync::Arc<dyn Rollout>>,
    /// The plan the last rollouts chose ([`Candidate::Planner`] without
    /// rollouts), and when and at what mean capacity they ran.
    follow: Candidate,
    rolled_out: Option<(f64, f64)>,
    /// Rollouts run so far: which turn of the budget's candidates is next
    /// ([`crate::rollout::within_budget`]).
    rollouts: usize,
    /// The consultation's time, for decisions journaled on a start.
    now: f64,
}

impl Deadline {
    pub fn new(
        fleet: &Fleet,
        base: MigrationParams,
        period: std::time::Duration,
        connection_cap: Option<BitsPerSec>,
    ) -> Self {
        let fleet_deadline: Vec<Option<f64>> = fleet
            .vms
            .iter()
            .map(|vm| fleet.host(vm.host).power_off_at.map(|t| t.as_secs_f64()))
            .collect();
        // Before anything is measured: earliest deadline first, then
        // priority per byte (the keys worked out once, not at every
        // comparison).
        let mut keyed: Vec<(f64, f64, VmId)> = fleet
            .vm_ids()
            .map(|id| {
                let vm = fleet.vm(id);
                let density = f64::from(vm.priority) / vm.bytes_to_move().as_f64().max(1.0);
                (fleet_deadline[id.0].unwrap_or(f64::INFINITY), density, id)
            })
            .collect();
        keyed.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
        let order: Vec<VmId> = keyed.into_iter().map(|(_, _, id)| id).collect();
        Self {
            hopeless_from: order.len(),
            host: fleet.vms.iter().map(|vm| vm.host).collect(),
            any_deadline: fleet_deadline.iter().any(Option::is_some),
            fleet_deadline,
            base,
            period: period.as_secs_f64(),
            estimator: Estimator::new(fleet, connection_cap.map(|c| c.to_bytes_per_sec().0))
                .settling(SETTLE_PERIODS * period.as_secs_f64()),
            journal: Journal::new(fleet.vms.len()),
            state: vec![State::Queued; fleet.vms.len()],
            mode: vec![base.mode; fleet.vms.len()],
            connections: vec![base.connections; fleet.vms.len()],
            order,
            head: 0,
            hopeless: vec![false; fleet.vms.len()],
            scavenger: vec![false; fleet.vms.len()],
            cancelled_once: vec![false; fleet.vms.len()],
            planned: None,
            replan: true,
            started_racing: false,
            loads: HostLoads::new(fleet.hosts.len()),
            rollout: None,
            follow: Candidate::Planner,
            rolled_out: None,
            rollouts: 0,
            now: 0.0,
        }
    }

    /// Brings the planner's picture of each VM up to date.
    fn track(&mut self, view: &View<'_>) {
        let now = view.now.as_secs_f64();
        for end in &view.observations.ended {
            self.replan = true;
            let vm = end.vm;
            let cancelled = self.state[vm.0] == State::Cancelling;
            self.state[vm.0] = match end.outcome {
                EndOutcome::Failed { .. } => State::Queued,
                _ => State::Done,
            };
            if self.state[vm.0] == State::Queued {
                // Back in the order (the head has passed it): the next plan
                // places it; one this policy cancelled waits behind every
                // VM that can make it.
                self.hopeless[vm.0] |= cancelled;
                self.cancelled_once[vm.0] |= cancelled;
                let at = match self.order[self.head..].iter().position(|&v| v == vm) {
                    Some(i) => self.head + i,
                    None => {
                        self.order.push(vm);
                        self.order.len() - 1
                    }
                };
                if self.hopeless[vm.0] {
                    self.hopeless_from = self.hopeless_from.min(at);
                }
            }
        }
        // A migration this policy did not start (a resumed run adopted it)
        // is in flight; one it cancelled stays so while its cancel lands (a
        // real cancel can take longer than a period), so that it is not
        // started again before its end.
        for m in &view.observations.migrations {
            let state = &mut self.state[m.vm.0];
            if *state == State::Queued {
                *state = State::InFlight;
            }
        }
        // Skip the VMs at the head of the order that are no longer queued
        // (started, or their host is dark), so that each call does not walk
        // them again.
        while let Some(&vm) = self.order.get(self.head) {
            if !self.startable(vm, now) {
                self.head += 1;
            } else {
                break;
            }
        }
    }

    /// The VMs waiting to start whose hosts still have power, in the
    /// plan's order.
    fn waiting(&self, now: f64) -> Vec<VmId> {
        self.order[self.head..]
            .iter()
            .copied()
            .filter(|&vm| self.startable(vm, now))
            .collect()
    }

    /// Whether `vm` waits to start and its host still has power.
    fn startable(&self, vm: VmId, now: f64) -> bool {
        self.state[vm.0] == State::Queued && !matches!(self.fleet_deadline[vm.0], Some(d) if d <= now)
    }

    /// Whether the migration in flight `m` must keep the path to itself:
    /// it races a power-off, needs more than the share it would keep if
    /// one more migration joined it (by TCP's fairness, its connections
    /// over all of theirs, the joiner with the scenario's fewest), and
    /// carries at least half the `target` alone, so the path is not left
    /// mostly idle for it (or is in postcopy, which cannot be undone). Its
    /// cap below the target says the path has room, but a joiner takes its
    /// room from the migration, not from the path: a postcopy migration on its one connection lost a priority-10
    /// VM that way (docs/planner.md).
    fn needs_the_path(&self, m: &MigrationObs, now: f64, target: f64) -> bool {
        let Some(deadline) = self.fleet_deadline[m.vm.0] else {
            return false;
        };
        let (Some(mean), left) = (self.estimator.mean(now), deadline - now) else {
            return false;
        };
        let cap = self.estimator.own_cap(&m.params);
        // In postcopy the guest already runs at the destination: a joiner
        // that starves its one connection loses the VM, whatever the path
        // left idle beside it (docs/planner.md).
        if left <= 0.0 || (cap < 0.5 * target && m.phase != Phase::Postcopy) {
            return false;
        }
        let (alone, own) = (mean.min(cap), m.params.connections.as_f64());
        let shared = alone * own / (own + self.base.connections.as_f64());
        // One that cannot make it even alone is not kept alone: the watch
        // switches or cancels it.
        let needed = m.bytes_remaining.as_f64() / left;
        needed > shared && needed <= alone
    }

    fn needs_replan(&self, now: f64) -> bool {
        let Some((at, mean)) = self.planned else {
            return true;
        };
        if self.replan || now - at >= REPLAN_EVERY_S {
            return true;
        }
        self.estimator
            .mean(now)
            .is_some_and(|m| (m - mean).abs() > REPLAN_CHANGE * mean)
    }
}

impl Policy for Deadline {
    fn admit(&mut self, view: &View<'_>) -> Admission {
        let now = view.now.as_secs_f64();
        self.started_racing = false;
        self.track(view);
        // A tick right after a migration ended sees rates not yet
        // re-shared: no sample.
        if view.period_throughput.is_some() && view.observations.ended.is_empty() {
            self.estimator.observe(now, &view.observations.migrations);
        }
        // With no power-off in the fleet there is nothing to plan: the
        // order stands.
        if self.any_deadline && self.needs_replan(now) {
            self.plan(view);
        }
        self.now = now;
        if self.any_deadline && self.rollout.is_some() && self.needs_rollout(now) {
            self.roll_out(view);
        }
        if let Candidate::Fixed(plan) = self.follow {
            return self.follow_fixed(view, plan);
        }
        let in_flight = view.observations.migrations.len();
        let target = match self.estimator.peak() {
            // A peak the migrations in flight set while each ran at its
            // own cap (e.g. its NIC) is only a floor: aim above it, by the
            // margin the connections are sized with, so a WAN that carries
            // more shows it (else the count in flight can only ratchet
            // down, as it did on the 100k-VM scenario: docs/planner.md).
            Some(peak) if self.estimator.wan_known() => Target {
                rate: if self.estimator.peak_is_floor() {
                    peak * (1.0 + admission::FILL_MARGIN)
                } else {
                    peak
                },
                max_new: usize::MAX,
                base_connections: self.base.connections,
                per_connection: self.estimator.per_connection(),
            },
            // Not seen full yet, but every migration ran at its own cap:
            // twice the floor it measured (as TCP's slow start), so short
            // migrations that end within a period still add up. A floor
            // from a migration still settling below its caps is no such
            // sign: what is in flight already asks for more than it, and
            // its next reading tells (`Estimator::floor_at_caps`).
            Some(floor) => Target {
                rate: if self.estimator.floor_at_caps() {
                    2.0 * floor
                } else {
                    floor
                },
                max_new: usize::MAX,
                base_connections: self.base.connections,
                per_connection: self.estimator.per_connection(),
            },
            // Nothing measured yet: one migration, whose rate the next
            // period shows.
            None => Target {
                rate: f64::INFINITY,
                max_new: usize::from(in_flight == 0),
                base_connections: self.base.connections,
                per_connection: self.estimator.per_connection(),
            },
        };
        // Two passes. The VMs that can make it first, as if the scavengers
        // in flight (VMs started on room no one else wanted) were not
        // there: a scavenger never keeps such a VM from starting. Then the
        // scavengers, on what room is left once everything is counted.
        let mut loads = std::mem::take(&mut self.loads);
        let this = &*self;
        let nic = |h: HostId| this.estimator.nic(h);
        let running = |scavengers: bool| {
            view.observations
                .migrations
                .iter()
                .filter(move |m| scavengers || !this.scavenger[m.vm.0])
                .map(|m| Running {
                    host: m.source,
                    // Its destination's NIC bounds it too: behind slow
                    // destinations, a migration that could carry the WAN
                    // on its connections fills only its destination.
                    cap: if this.needs_the_path(m, now, target.rate) {
                        f64::INFINITY
                    } else {
                        this.estimator
                            .own_cap(&m.params)
                            .min(this.estimator.destination_nic(m.destination))
                    },
                })
        };
        let waiting = |hopeless: bool| {
            let from = if hopeless {
                this.head.max(this.hopeless_from)
            } else {
                this.head
            };
            this.order[from..]
                .iter()
                .filter(move |&&vm| this.startable(vm, now) && this.hopeless[vm.0] == hopeless)
                .map(|&vm| (vm, this.host[vm.0]))
        };
        let mut picks = admission::fill(&mut loads, waiting(false), running(false), nic, target);
        let picked: Vec<Running> = picks
            .iter()
            .map(|&(vm, connections)| Running {
                host: this.host[vm.0],
                cap: this.estimator.migration_cap(connections),
            })
            .collect();
        let mut scavengers = admission::fill(
            &mut loads,
            waiting(true),
            running(true).chain(picked),
            nic,
            Target {
                max_new: target.max_new.saturating_sub(picks.len()),
                ..target
            },
        );
        // Never an empty pipe while a VM waits on a powered host: with
        // nothing in flight the WAN has room whatever the estimate says (a
        // backend that reports progress in bursts, as libvirt does, can
        // leave a measured floor near 0 that would admit nothing, and the
        // run loop then gives the waiting VMs up).
        if picks.is_empty() && scavengers.is_empty() && in_flight == 0 {
            let one = Target {
                rate: f64::INFINITY,
                max_new: 1,
                ..target
            };
            picks = admission::fill(&mut loads, waiting(false), std::iter::empty(), nic, one);
            if picks.is_empty() {
                scavengers = admission::fill(&mut loads, waiting(true), std::iter::empty(), nic, one);
            }
        }
        for &(vm, _) in &picks {
            self.scavenger[vm.0] = false;
        }
        for &(vm, _) in &scavengers {
            self.scavenger[vm.0] = true;
        }
        picks.extend(scavengers);
        self.loads = loads;
        let mut ids = Vec::with_capacity(picks.len());
        for (vm, connections) in picks {
            self.connections[vm.0] = connections;
            let start = Start {
                mode: self.mode[vm.0],
                connections,
                per_connection: self.estimator.per_connection(),
                deadline: self.fleet_deadline[vm.0],
                priority: view.fleet.vm(vm).priority,
                in_flight,
                peak: self.estimator.peak(),
                scavenger: self.scavenger[vm.0],
            };
            self.journal.record(vm, now, "start", start);
            ids.push(vm);
        }
        Admission {
            total: usize::MAX,
            per_host: PerHost::Unlimited,
            spread_over_hosts: false,
            picks: Some(ids),
        }
    }

    fn needs_progress(&self) -> bool {
        true
    }

    /// New deadlines: plan again and choose again at once, from the
    /// fleet's new power-offs (a VM that can no longer make it drops in the
    /// order, one that now can is started). With no deadline left, nothing
    /// is last any more.
    fn power_changed(&mut self, fleet: &Fleet) {
        for (deadline, vm) in self.fleet_deadline.iter_mut().zip(&fleet.vms) {
            *deadline = fleet.host(vm.host).power_off_at.map(|t| t.as_secs_f64());
        }
        self.any_deadline = self.fleet_deadline.iter().any(Option::is_some);
        if !self.any_deadline {
            self.hopeless.fill(false);
            self.hopeless_from = self.order.len();
        }
        self.replan = true;
        self.follow = Candidate::Planner;
        self.rolled_out = None;
    }

    fn plan_with(&mut self, rollout: std::sync::Arc<dyn Rollout>) {
        self.rollout = Some(rollout);
    }

    fn start_params(&mut self, vm: VmId, base: MigrationParams) -> MigrationParams {
        self.state[vm.0] = State::InFlight;
        self.started_racing |= self.fleet_deadline[vm.0].is_some();
        if let Candidate::Fixed(FixedPlan {
            connections, mode, ..
        }) = self.follow
        {
            // Started by the plan it follows, not on spare room.
            self.scavenger[vm.0] = false;
            self.mode[vm.0] = mode;
            self.connections[vm.0] = connections;
            self.journal.record(
                vm,
                self.now,
                "start",
                format!(
                    "{mode:?} with {connections} connection(s): next under the plan that saved the most in simulations of the rest of the evacuation ({})",
                    self.follow
                ),
            );
        }
        MigrationParams {
            mode: self.mode[vm.0],
            connections: self.connections[vm.0],
            ..base
        }
    }

    fn explain(&self, vm: VmId) -> Vec<Explanation> {
        self.journal.of(vm)
    }

    /// Every period while VMs wait (each period's sample may move the plan
    /// and the admission) or a migration in flight races a power-off (its
    /// last safe moment is judged each period); otherwise only on events.
    fn next_wakeup(&self, view: &View<'_>) -> Wakeup {
        let racing = self.started_racing
            || (self.any_deadline
                && view
                    .observations
                    .migrations
                    .iter()
                    .any(|m| self.fleet_deadline[m.vm.0].is_some()));
        if view.queued > 0 || racing {
            Wakeup::NextPeriod
        } else {
            Wakeup::OnEvent
        }
    }
    fn tune(&mut self, view: &View<'_>) -> Vec<Action> {
        self.watch(view)
    }
}

#[cfg(test)]
mod tests;
