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
//!    VM's bytes counting what precopy re-sends at its dirty rate; each in
//!    the first mode that fits: live, then postcopy (when the scenario
//!    allows it) or offline from the start. A VM that does not fit even at
//!    the WAN's peak goes last (never out of the order: it starts on room
//!    no other VM wants, and the next plan judges it again); one that fits
//!    only at the peak waits behind those that fit at the mean;
//! 3. **admits** ([`crate::admission`]): in the plan's order (earliest
//!    deadline first, then priority per byte), as few migrations as fill the
//!    path, no second one on a full NIC, each with the connections the room
//!    it fills needs;
//! 4. **watches** the migrations in flight: one that cannot finish before
//!    its host dies at the share it actually gets (and the share it gets
//!    once the migrations ahead of it are done) is switched to postcopy or
//!    offline at the last safe moment if that saves it, and otherwise
//!    cancelled (once, and only if a VM that can make it would use its
//!    bandwidth) and queued again, last;
//! 5. **rolls out** ([`crate::rollout`]), when a driver gave it a
//!    simulator: every 30 s or when the WAN moves, simulates candidate
//!    plans from now under three forecasts and follows the best;
//! 6. **explains** ([`crate::explain`]) each decision per VM.
//!
//! Replanning costs `O(n log n)` in the VMs left, so it runs only when
//! something changed: a migration ended, the mean capacity moved by more
//! than [`REPLAN_CHANGE`], or [`REPLAN_EVERY_S`] passed; with no power-off
//! deadline in the fleet there is nothing to plan, only an order.

use evac_model::{BitsPerSec, Fleet, HostId, MigrationParams, Mode, VmId};

use crate::admission::{self, HostLoads, Running, Target, MAX_CHANNELS};
use crate::estimate::Estimator;
use crate::explain::{gib, mbps, Explanation, Journal, Start};
use crate::plan::{self, Choice, Item};
use crate::rollout::{self, Candidate, Forecast, Rollout, Situation, Verdict};
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
    channels: Vec<u32>,
    /// VMs to start, in the plan's order, from `head` on (those before it
    /// have left the queue).
    order: Vec<VmId>,
    head: usize,
    /// Per VM: the last plan found it cannot make its power-off even at the
    /// WAN's peak. Triage only: such a VM waits behind every VM that can,
    /// and still starts whenever the path has room nothing else would use
    /// (a failed attempt costs nothing, and estimates can be pessimistic).
    hopeless: Vec<bool>,
    /// Per VM: its migration in flight was started on room no VM able to
    /// make it wanted, or it was cancelled once already. Such a migration
    /// is never cancelled (so no VM is started and cancelled in turn), and
    /// its load does not count when VMs that can make it are admitted.
    scavenger: Vec<bool>,
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
            channels: vec![base.multifd_channels; fleet.vms.len()],
            order,
            head: 0,
            hopeless: vec![false; fleet.vms.len()],
            scavenger: vec![false; fleet.vms.len()],
            planned: None,
            replan: true,
            started_racing: false,
            loads: HostLoads::new(fleet.hosts.len()),
            rollout: None,
            follow: Candidate::Planner,
            rolled_out: None,
            now: 0.0,
        }
    }

    /// Whether the rollouts' choice is due: never made, older than
    /// [`ROLLOUT_EVERY_S`], or made at a mean capacity that has since moved
    /// by [`REPLAN_CHANGE`].
    fn needs_rollout(&self, now: f64) -> bool {
        let Some(mean) = self.estimator.mean(now) else {
            return false;
        };
        match self.rolled_out {
            None => true,
            Some((at, then)) => now - at >= ROLLOUT_EVERY_S || (mean - then).abs() > REPLAN_CHANGE * then,
        }
    }

    /// Simulates the candidate plans from now under a pessimistic, a likely
    /// and an optimistic WAN, as many as the compute budget allows, and
    /// follows the one that saves the most.
    fn roll_out(&mut self, view: &View<'_>) {
        let Some(rollout) = self.rollout.clone() else {
            return;
        };
        // Until a rollout chooses again, the planner's own plan.
        self.follow = Candidate::Planner;
        let now = view.now.as_secs_f64();
        let (Some(mean), Some(peak)) = (self.estimator.mean(now), self.estimator.peak()) else {
            return;
        };
        self.rolled_out = Some((now, mean));
        // Forecasts need the WAN seen full: a capacity measured only as the
        // sum of migrations held by their own caps is a floor, and a plan
        // chosen for a WAN that small would start too few to ever show it
        // larger (the planner's own admission probes above a floor).
        if !self.estimator.wan_known() || self.estimator.peak_is_floor() {
            return;
        }
        let waiting: Vec<VmId> = self.waiting(now);
        if waiting.is_empty() {
            return;
        }
        // Likely first: it breaks ties on time.
        let trough = self.estimator.trough().unwrap_or(mean).min(mean);
        let mut forecasts = vec![mean];
        for wan in [trough, peak] {
            if forecasts.iter().all(|&f| (f - wan).abs() > 0.01 * f) {
                forecasts.push(wan);
            }
        }
        let forecasts: Vec<Forecast> = forecasts
            .into_iter()
            .map(|bytes_per_sec| Forecast {
                wan: evac_model::BitsPerSec(bytes_per_sec * 8.0),
            })
            .collect();
        let mut candidates = rollout::candidates(self.base.multifd_channels, self.base.mode);
        let vms = waiting.len() + view.observations.migrations.len();
        candidates.truncate(rollout::affordable(candidates.len(), forecasts.len(), vms));
        if candidates.len() < 2 {
            self.follow = Candidate::Planner;
            return;
        }
        let situation = Situation {
            now,
            fleet: view.fleet,
            waiting: &waiting,
            in_flight: &view.observations.migrations,
        };
        let verdicts: Vec<Vec<Verdict>> = candidates
            .iter()
            .map(|&c| {
                forecasts
                    .iter()
                    .map(|&f| rollout.evaluate(&situation, c, f))
                    .collect()
            })
            .collect();
        self.follow = candidates[rollout::best(&candidates, &verdicts)];
    }

    /// The admission of a fixed plan the rollouts chose: the VMs waiting
    /// in its order, within its limits.
    fn follow_fixed(
        &mut self,
        view: &View<'_>,
        order: crate::Order,
        window: usize,
        per_host: usize,
    ) -> Admission {
        let now = view.now.as_secs_f64();
        let mut picks: Vec<VmId> = self.waiting(now);
        order.sort(view.fleet, &mut picks);
        Admission {
            total: window,
            per_host: PerHost::Each(per_host),
            spread_over_hosts: false,
            picks: Some(picks),
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
                self.scavenger[vm.0] |= cancelled;
                if !self.order[self.head..].contains(&vm) {
                    self.order.push(vm);
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

    /// The rate a VM of `host` gets running alone at the WAN's `wan`.
    fn alone_rate(&self, host: HostId, wan: f64) -> f64 {
        self.estimator.nic(host).min(wan).min(
            self.estimator
                .migration_cap(MAX_CHANNELS.max(self.base.multifd_channels)),
        )
    }

    /// A queued VM's modes, preferred first, with their bytes at `rate` on
    /// the wire (the simulator's byte model, `evac_model::memory`).
    fn alternatives(&self, fleet: &Fleet, vm: VmId, rate: f64) -> Vec<(Mode, f64)> {
        let spec = fleet.vm(vm);
        let compressed = self.compresses(fleet, spec, rate);
        let memory = spec.memory.as_f64() * spec.profile.first_pass_wire_per_byte(compressed);
        let resend = spec.profile.resend_wire_per_byte(compressed);
        let dirtied = |t: f64| spec.dirtied_within(t) * resend;
        // Postcopy's pages after the switch go as they are.
        let postcopy = |rate| plan::postcopy_bytes(memory, |t| spec.dirtied_within(t), rate);
        // Local disks are sent once, ahead of the memory, whatever the mode.
        let disk = spec.disk.as_f64();
        let alternatives = match self.base.mode {
            Mode::Offline => vec![(Mode::Offline, memory)],
            Mode::Postcopy => vec![(Mode::Postcopy, postcopy(rate))],
            Mode::Live => {
                let (live, _) = plan::live_bytes(
                    memory,
                    dirtied,
                    rate,
                    self.base.downtime_limit.as_secs_f64(),
                    self.base.max_rounds,
                );
                let mut alternatives = vec![(Mode::Live, live)];
                if self.base.allow_postcopy {
                    alternatives.push((Mode::Postcopy, postcopy(rate)));
                }
                alternatives.push((Mode::Offline, memory));
                alternatives
            }
        };
        alternatives
            .into_iter()
            .map(|(mode, bytes)| (mode, disk + bytes))
            .collect()
    }

    /// Whether a migration of `spec` compresses at `rate` under the
    /// migration's `compression` (its host's CPU to itself):
    /// [`evac_model::memory::compresses`], as the simulator decides.
    fn compresses(&self, fleet: &Fleet, spec: &evac_model::Vm, rate: f64) -> bool {
        let cpu = evac_model::memory::cpu_share(fleet.host(spec.host), &self.base, 1);
        evac_model::memory::compresses(self.base.compression, &spec.profile, rate, cpu)
    }

    /// Replans the VMs still queued: their order, their modes, and those
    /// given up.
    fn plan(&mut self, view: &View<'_>) {
        let now = view.now.as_secs_f64();
        let fleet = view.fleet;
        let (Some(mean), Some(peak)) = (self.estimator.mean(now), self.estimator.peak()) else {
            return;
        };
        self.planned = Some((now, mean));
        self.replan = false;
        if !self.any_deadline {
            return;
        }
        // The migrations in flight hold their bytes first.
        let mut items: Vec<Item<Mode>> = Vec::new();
        for m in &view.observations.migrations {
            let spec = fleet.vm(m.vm);
            items.push(Item {
                vm: m.vm,
                host: spec.host,
                deadline: self.fleet_deadline[m.vm.0],
                priority: spec.priority,
                alternatives: vec![(m.params.mode, m.bytes_remaining.as_f64())],
                committed: true,
            });
        }
        let queued_from = items.len();
        let queued: Vec<VmId> = self.waiting(now);
        for vm in queued {
            let spec = fleet.vm(vm);
            items.push(Item {
                vm,
                host: spec.host,
                deadline: self.fleet_deadline[vm.0],
                priority: spec.priority,
                alternatives: self.alternatives(fleet, vm, self.alone_rate(spec.host, mean)),
                committed: false,
            });
        }
        let nic = |h: HostId| self.estimator.nic(h);
        let at_mean = plan::choose(now, &items, mean, nic);
        // Whether it fits at the peak: only what does not is given up.
        let optimistic: Vec<Item<Mode>> = items
            .iter()
            .map(|item| {
                if item.committed {
                    return item.clone();
                }
                Item {
                    alternatives: self.alternatives(fleet, item.vm, self.alone_rate(item.host, peak)),
                    ..item.clone()
                }
            })
            .collect();
        let at_peak = plan::choose(now, &optimistic, peak, nic);

        let mut fits = Vec::new();
        let mut waits = Vec::new();
        let mut hopeless = Vec::new();
        for (index, item) in items.iter().enumerate().skip(queued_from) {
            let vm = item.vm;
            let density = f64::from(item.priority) / item.alternatives[0].1.max(1.0) * f64::from(1u32 << 30);
            let key = (item.deadline.unwrap_or(f64::INFINITY), density, vm);
            // Only this plan's verdict counts: a VM deferred on a WAN that
            // has since recovered is back in line.
            self.hopeless[vm.0] = false;
            match (at_mean[index], at_peak[index]) {
                (Choice::Saved(mode, bytes), _) => {
                    self.mode[vm.0] = mode;
                    fits.push(key);
                    if mode != self.base.mode {
                        self.journal.record(
                            vm,
                            now,
                            "plan",
                            format!(
                                "{mode:?} planned: live precopy would not fit before the power-off; {} by {mode:?}",
                                gib(bytes)
                            ),
                        );
                    }
                }
                (Choice::Left { needs, room }, Choice::Saved(mode, _)) => {
                    self.mode[vm.0] = mode;
                    waits.push(key);
                    self.journal.record(
                        vm,
                        now,
                        "defer",
                        format!(
                            "needs {} before its host's power-off; at the WAN's mean {} only {} are left after VMs of more priority per byte; fits at the peak {}: behind those that fit",
                            gib(needs),
                            mbps(mean),
                            gib(room),
                            mbps(peak)
                        ),
                    );
                }
                (Choice::Left { .. }, Choice::Left { needs, room }) => {
                    // Last in line, not given up: it starts when the path
                    // has room that no VM able to make it would use, in
                    // the fastest mode there is.
                    self.hopeless[vm.0] = true;
                    self.mode[vm.0] = item.alternatives.last().map_or(self.base.mode, |a| a.0);
                    hopeless.push(key);
                    self.journal.record(
                        vm,
                        now,
                        "last",
                        format!(
                            "needs {} before its host's power-off at {:.0} s; even at the WAN's peak {} only {} are left for it after VMs of more priority per byte: it starts only on room no other VM would use",
                            gib(needs),
                            item.deadline.unwrap_or(f64::INFINITY),
                            mbps(peak),
                            gib(room)
                        ),
                    );
                }
            }
        }
        let by_deadline_then_density = |a: &(f64, f64, VmId), b: &(f64, f64, VmId)| {
            a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2))
        };
        fits.sort_by(by_deadline_then_density);
        waits.sort_by(by_deadline_then_density);
        hopeless.sort_by(by_deadline_then_density);
        // VMs with no deadline wait behind every one with a deadline that
        // can make it (they have all the time there is); those that cannot
        // make it even at the peak come last: they get the room no other VM
        // would use, and no more.
        let (fits_no_deadline, fits_deadline): (Vec<_>, Vec<_>) =
            fits.into_iter().partition(|f| f.0.is_infinite());
        self.order = fits_deadline
            .into_iter()
            .chain(waits)
            .chain(fits_no_deadline)
            .chain(hopeless)
            .map(|(_, _, vm)| vm)
            .collect();
        self.head = 0;
    }

    /// Whether cancelling `cancelled` would leave bandwidth to a VM that
    /// can still make it: one waiting to start (on a host whose NIC has
    /// room), or one in flight racing a power-off and held by the WAN
    /// rather than by its own caps. If none would, a migration that looks
    /// lost keeps going: trying costs nothing, and the estimate that
    /// condemns it may be pessimistic.
    fn bandwidth_wanted(&self, migrations: &[MigrationObs], cancelled: VmId, now: f64) -> bool {
        let host_load = |host: HostId| -> f64 {
            migrations
                .iter()
                .filter(|o| o.source == host && o.vm != cancelled)
                .map(|o| o.rate.to_bytes_per_sec().0)
                .sum()
        };
        let waiting = self.order[self.head..]
            .iter()
            .take(admission::MAX_SCAN)
            .any(|&vm| {
                self.startable(vm, now)
                    && !self.hopeless[vm.0]
                    && host_load(self.host[vm.0]) < admission::NIC_FULL * self.estimator.nic(self.host[vm.0])
            });
        waiting
            || migrations.iter().any(|o| {
                o.vm != cancelled
                    && self.fleet_deadline[o.vm.0].is_some()
                    && o.rate.to_bytes_per_sec().0 < admission::NIC_FULL * self.estimator.own_cap(&o.params)
            })
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
        if let Candidate::Fixed {
            order,
            window,
            per_host,
            ..
        } = self.follow
        {
            return self.follow_fixed(view, order, window, per_host);
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
                base_channels: self.base.multifd_channels,
                per_connection: self.estimator.per_connection(),
            },
            // Not seen full yet, but every migration ran at its own cap:
            // twice the floor it measured (as TCP's slow start), so short
            // migrations that end within a period still add up.
            Some(floor) => Target {
                rate: 2.0 * floor,
                max_new: usize::MAX,
                base_channels: self.base.multifd_channels,
                per_connection: self.estimator.per_connection(),
            },
            // Nothing measured yet: one migration, whose rate the next
            // period shows.
            None => Target {
                rate: f64::INFINITY,
                max_new: usize::from(in_flight == 0),
                base_channels: self.base.multifd_channels,
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
                    cap: this.estimator.own_cap(&m.params),
                })
        };
        let waiting = |hopeless: bool| {
            this.order[this.head..]
                .iter()
                .filter(move |&&vm| this.startable(vm, now) && this.hopeless[vm.0] == hopeless)
                .map(|&vm| (vm, this.host[vm.0]))
        };
        let mut picks = admission::fill(&mut loads, waiting(false), running(false), nic, target);
        let picked: Vec<Running> = picks
            .iter()
            .map(|&(vm, channels)| Running {
                host: this.host[vm.0],
                cap: this.estimator.migration_cap(channels),
            })
            .collect();
        let scavengers = admission::fill(
            &mut loads,
            waiting(true),
            running(true).chain(picked),
            nic,
            Target {
                max_new: target.max_new.saturating_sub(picks.len()),
                ..target
            },
        );
        for &(vm, _) in &scavengers {
            self.scavenger[vm.0] = true;
        }
        picks.extend(scavengers);
        self.loads = loads;
        let mut ids = Vec::with_capacity(picks.len());
        for (vm, channels) in picks {
            self.channels[vm.0] = channels;
            let start = Start {
                mode: self.mode[vm.0],
                channels,
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

    fn plan_with(&mut self, rollout: std::sync::Arc<dyn Rollout>) {
        self.rollout = Some(rollout);
    }

    fn start_params(&mut self, vm: VmId, base: MigrationParams) -> MigrationParams {
        self.state[vm.0] = State::InFlight;
        self.started_racing |= self.fleet_deadline[vm.0].is_some();
        if let Candidate::Fixed {
            connections, mode, ..
        } = self.follow
        {
            self.mode[vm.0] = mode;
            self.channels[vm.0] = connections;
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
            multifd_channels: self.channels[vm.0],
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
        // Only a migration racing a power-off is ever switched or cancelled.
        if !self.any_deadline || !self.estimator.wan_known() {
            return Vec::new();
        }
        let now = view.now.as_secs_f64();
        let (Some(mean), Some(peak)) = (self.estimator.mean(now), self.estimator.peak()) else {
            return Vec::new();
        };
        let migrations = &view.observations.migrations;
        let backlog: f64 = migrations.iter().map(|m| m.bytes_remaining.as_f64()).sum();
        let mut actions = Vec::new();
        for m in migrations {
            if self.state[m.vm.0] == State::Cancelling {
                continue;
            }
            let Some(deadline) = self.fleet_deadline[m.vm.0] else {
                continue;
            };
            let rate = m.rate.to_bytes_per_sec().0;
            if rate <= 0.0 {
                continue;
            }
            let spec = view.fleet.vm(m.vm);
            let left = deadline - now;
            let remaining = m.bytes_remaining.as_f64();
            // What the guest dirties within a time, in the bytes that
            // re-sends (the byte model; the guest's curve, or its short
            // form at the rate measured now).
            let resend = spec
                .profile
                .resend_wire_per_byte(self.compresses(view.fleet, spec, rate));
            let measured = |t: f64| {
                if spec.profile.dirty_curve.is_empty() {
                    (m.dirty_rate.0 * t).clamp(0.0, spec.working_set.as_f64())
                } else {
                    spec.dirtied_within(t)
                }
            };
            let dirtied = |t: f64| measured(t) * resend;
            // What it still sends: in precopy, the rounds to come too.
            let to_send = if m.phase == Phase::Precopy && m.params.mode == Mode::Live {
                plan::live_bytes(
                    remaining,
                    dirtied,
                    rate,
                    m.params.downtime_limit.as_secs_f64(),
                    m.params.max_rounds.saturating_sub(m.round) + 1,
                )
                .0
            } else if m.phase == Phase::Precopy && m.params.mode == Mode::Postcopy {
                plan::postcopy_bytes(remaining, measured, rate)
            } else {
                remaining
            };
            // Its share now, until the others are done; then what it can
            // take alone.
            let others_done = (backlog - remaining).max(0.0) / mean.max(1.0);
            let alone = self.alone_rate(spec.host, peak).min(
                self.estimator
                    .migration_cap(m.params.multifd_channels)
                    .min(self.estimator.nic(spec.host)),
            );
            let deliverable = |bytes_per_sec_now: f64| {
                let shared = others_done.min(left).max(0.0);
                bytes_per_sec_now * shared + alone.max(bytes_per_sec_now) * (left - shared).max(0.0)
            };
            if to_send <= deliverable(rate) {
                continue;
            }
            if m.phase == Phase::Precopy {
                // Pause (or hand over to the destination) and send the rest
                // once: what is left of the round and what was dirtied.
                let once = remaining + dirtied(left.max(0.0));
                if once <= deliverable(rate) {
                    let last_safe_moment = 1.5 * once / rate + 2.0 * self.period;
                    if left <= last_safe_moment {
                        // Postcopy where the migration was started ready for
                        // it: the guest runs on at the destination; offline
                        // pauses it until the last byte.
                        let postcopy = m.params.mode == Mode::Postcopy
                            || (m.params.allow_postcopy && m.params.mode == Mode::Live);
                        let (action, decision) = if postcopy {
                            (Action::SwitchToPostcopy { vm: m.vm }, "postcopy")
                        } else {
                            (Action::SwitchToOffline { vm: m.vm }, "offline")
                        };
                        self.journal.record(
                            m.vm,
                            now,
                            decision,
                            format!(
                                "precopy would send {} more by the power-off in {left:.0} s at its share of {}; the rest at once is {}",
                                gib(to_send),
                                mbps(rate),
                                gib(once)
                            ),
                        );
                        actions.push(action);
                    }
                    continue;
                }
            }
            // A fixed plan the rollouts chose cancels nothing (its
            // simulations did not), and a migration nothing else would
            // replace keeps going.
            if matches!(self.follow, Candidate::Fixed { .. })
                || self.scavenger[m.vm.0]
                || !self.bandwidth_wanted(migrations, m.vm, now)
            {
                continue;
            }
            self.journal.record(
                m.vm,
                now,
                "cancel",
                format!(
                    "needs {} more, but at its share of {} (then {} alone once the {} ahead are done) only {} arrive before the power-off in {left:.0} s: its bandwidth goes to VMs that can make it",
                    gib(to_send),
                    mbps(rate),
                    mbps(alone),
                    gib((backlog - remaining).max(0.0)),
                    gib(deliverable(rate))
                ),
            );
            self.state[m.vm.0] = State::Cancelling;
            self.replan = true;
            actions.push(Action::Cancel { vm: m.vm });
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use evac_model::Site;

    use super::*;
    use crate::testing::{first_round, host, idle_vm};
    use crate::{Ended, MigrationObs, Observations};

    /// One source host dying at 100 s with two VMs, one destination.
    fn fleet() -> Fleet {
        Fleet {
            hosts: vec![
                host("a", Site::Source, 1e9, Some(Duration::from_secs(100))),
                host("b", Site::Destination, 1e9, None),
            ],
            vms: vec![idle_vm("x", 0), idle_vm("y", 0)],
        }
    }

    /// `vm` in its first precopy round from host 0 to host 1, at `rate` bits per second.
    fn migrating(vm: VmId, rate: f64) -> MigrationObs {
        first_round(vm, HostId(0), HostId(1), rate, 1)
    }

    fn consult(policy: &mut Deadline, fleet: &Fleet, observations: &Observations) -> Admission {
        let view = View {
            now: observations.now,
            fleet,
            observations,
            in_flight: &[observations.migrations.len(), 0],
            in_flight_total: observations.migrations.len(),
            queued: 1,
            period_throughput: None,
            sending_hosts: None,
        };
        policy.admit(&view)
    }

    #[test]
    fn a_vm_cancelled_in_flight_waits_for_its_cancel_then_queues_behind_those_that_fit() {
        let fleet = fleet();
        let mut policy = Deadline::new(&fleet, MigrationParams::default(), Duration::from_secs(1), None);
        let (x, y) = (VmId(0), VmId(1));
        let migrating = migrating(x, 1e6);
        policy.start_params(x, MigrationParams::default());
        // The planner cancels it (as `tune` does).
        policy.state[x.0] = State::Cancelling;
        // The cancel has not landed a period later: still in flight, and
        // not started a second time.
        let still = Observations {
            now: Duration::from_secs(1),
            migrations: vec![migrating],
            ..Observations::default()
        };
        let admission = consult(&mut policy, &fleet, &still);
        assert_eq!(policy.state[x.0], State::Cancelling);
        assert!(!admission.picks.unwrap_or_default().contains(&x));
        // Then it ends, failed (cancelled): queued again, not given up,
        // marked as unable to make it, and behind y in the order.
        let ended = Observations {
            now: Duration::from_secs(2),
            ended: vec![Ended {
                vm: x,
                outcome: EndOutcome::Failed {
                    reason: "cancelled".into(),
                },
            }],
            ..Observations::default()
        };
        consult(&mut policy, &fleet, &ended);
        assert_eq!(policy.state[x.0], State::Queued);
        assert!(policy.hopeless[x.0]);
        assert!(policy.startable(x, 2.0) && policy.startable(y, 2.0));
        let rest = &policy.order[policy.head..];
        let at = |vm| rest.iter().position(|&v| v == vm);
        assert!(at(y) < at(x), "{rest:?}");
    }

    #[test]
    fn a_migration_it_did_not_start_is_adopted_as_in_flight() {
        // A resumed run: the driver reports a migration the policy never
        // started; it must not be started a second time.
        let fleet = fleet();
        let mut policy = Deadline::new(&fleet, MigrationParams::default(), Duration::from_secs(1), None);
        let adopted = Observations {
            now: Duration::from_secs(1),
            migrations: vec![migrating(VmId(1), 0.0)],
            ..Observations::default()
        };
        let admission = consult(&mut policy, &fleet, &adopted);
        assert_eq!(policy.state[1], State::InFlight);
        assert!(!admission.picks.unwrap_or_default().contains(&VmId(1)));
    }
}
