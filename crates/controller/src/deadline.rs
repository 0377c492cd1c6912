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
//!    the WAN's peak is given up at once; one that fits only at the peak
//!    waits behind those that fit at the mean;
//! 3. **admits** ([`crate::admission`]): in the plan's order (earliest
//!    deadline first, then priority per byte), as few migrations as fill the
//!    path, no second one on a full NIC, each with the connections the room
//!    it fills needs;
//! 4. **watches** the migrations in flight: one that cannot finish before
//!    its host dies at the share it actually gets (and the share it gets
//!    once the migrations ahead of it are done) is switched to postcopy or
//!    offline at the last safe moment if that saves it, and cancelled and
//!    given up otherwise, so its bandwidth goes to VMs that can make it;
//! 5. **explains** ([`crate::explain`]) each decision per VM.
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
use crate::{Action, Admission, EndOutcome, PerHost, Phase, Policy, View, Wakeup};

/// A relative change of the mean capacity that calls for a new plan.
pub const REPLAN_CHANGE: f64 = 0.10;

/// The longest a plan stands, seconds.
pub const REPLAN_EVERY_S: f64 = 30.0;

/// Where the planner believes a VM is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued,
    InFlight,
    Done,
    GivenUp,
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
    /// VMs given up since the last admission (cancelled in flight).
    give_up: Vec<VmId>,
    /// When the last plan was made and with what mean capacity.
    planned: Option<(f64, f64)>,
    replan: bool,
    /// A VM whose host will lose power started on this tick (it is not in
    /// the observations yet).
    started_racing: bool,
    /// Scratch for [`admission::fill`].
    loads: HostLoads,
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
            estimator: Estimator::new(fleet, connection_cap.map(|c| c.to_bytes_per_sec().0)),
            journal: Journal::new(fleet.vms.len()),
            state: vec![State::Queued; fleet.vms.len()],
            mode: vec![base.mode; fleet.vms.len()],
            channels: vec![base.multifd_channels; fleet.vms.len()],
            order,
            head: 0,
            give_up: Vec::new(),
            planned: None,
            replan: true,
            started_racing: false,
            loads: HostLoads::new(fleet.hosts.len()),
        }
    }

    /// Brings the planner's picture of each VM up to date.
    fn track(&mut self, view: &View<'_>) {
        let now = view.now.as_secs_f64();
        for end in &view.observations.ended {
            self.replan = true;
            let state = &mut self.state[end.vm.0];
            *state = match (&end.outcome, *state) {
                (_, State::GivenUp) => State::GivenUp,
                (EndOutcome::Failed { .. }, _) => State::Queued,
                _ => State::Done,
            };
        }
        // A migration this policy did not start (a resumed run adopted it)
        // is in flight; one it gave up stays given up while its cancel
        // lands (a real cancel can take longer than a period), so that
        // its failed end does not queue it again.
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

    /// A queued VM's modes, preferred first, with their bytes at `rate`.
    fn alternatives(&self, fleet: &Fleet, vm: VmId, rate: f64) -> Vec<(Mode, f64)> {
        let spec = fleet.vm(vm);
        let (memory, dirty, ws) = (spec.memory.as_f64(), spec.dirty_rate.0, spec.working_set.as_f64());
        // Local disks are sent once, ahead of the memory, whatever the mode.
        let disk = spec.disk.as_f64();
        let alternatives = match self.base.mode {
            Mode::Offline => vec![(Mode::Offline, memory)],
            Mode::Postcopy => vec![(Mode::Postcopy, plan::postcopy_bytes(memory, dirty, ws, rate))],
            Mode::Live => {
                let (live, _) = plan::live_bytes(
                    memory,
                    dirty,
                    ws,
                    rate,
                    self.base.downtime_limit.as_secs_f64(),
                    self.base.max_rounds,
                );
                let mut alternatives = vec![(Mode::Live, live)];
                if self.base.allow_postcopy {
                    alternatives.push((Mode::Postcopy, plan::postcopy_bytes(memory, dirty, ws, rate)));
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
        let queued: Vec<VmId> = self.order[self.head..]
            .iter()
            .copied()
            .filter(|&vm| self.startable(vm, now))
            .collect();
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

        let wan_known = self.estimator.wan_known();
        let mut fits = Vec::new();
        let mut waits = Vec::new();
        for (index, item) in items.iter().enumerate().skip(queued_from) {
            let vm = item.vm;
            let density = f64::from(item.priority) / item.alternatives[0].1.max(1.0) * f64::from(1u32 << 30);
            match (at_mean[index], at_peak[index]) {
                (Choice::Saved(mode, bytes), _) => {
                    self.mode[vm.0] = mode;
                    fits.push((item.deadline.unwrap_or(f64::INFINITY), density, vm));
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
                    waits.push((item.deadline.unwrap_or(f64::INFINITY), density, vm));
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
                    if wan_known {
                        self.state[vm.0] = State::GivenUp;
                        self.give_up.push(vm);
                        self.journal.record(
                            vm,
                            now,
                            "give-up",
                            format!(
                                "needs {} before its host's power-off at {:.0} s; even at the WAN's peak {} only {} are left for it after VMs of more priority per byte",
                                gib(needs),
                                item.deadline.unwrap_or(f64::INFINITY),
                                mbps(peak),
                                gib(room)
                            ),
                        );
                    } else {
                        waits.push((item.deadline.unwrap_or(f64::INFINITY), 0.0, vm));
                    }
                }
            }
        }
        let by_deadline_then_density = |a: &(f64, f64, VmId), b: &(f64, f64, VmId)| {
            a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2))
        };
        fits.sort_by(by_deadline_then_density);
        waits.sort_by(by_deadline_then_density);
        // VMs with no deadline wait behind every one with a deadline.
        let (fits_no_deadline, fits_deadline): (Vec<_>, Vec<_>) =
            fits.into_iter().partition(|f| f.0.is_infinite());
        self.order = fits_deadline
            .into_iter()
            .chain(waits)
            .chain(fits_no_deadline)
            .map(|(_, _, vm)| vm)
            .collect();
        self.head = 0;
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
        let mut loads = std::mem::take(&mut self.loads);
        let candidates = self.order[self.head..]
            .iter()
            .filter(|&&vm| self.startable(vm, now))
            .map(|&vm| (vm, self.host[vm.0]));
        let running = view.observations.migrations.iter().map(|m| Running {
            host: m.source,
            cap: self.estimator.own_cap(&m.params),
        });
        let nic = |h: HostId| self.estimator.nic(h);
        let picks = admission::fill(&mut loads, candidates, running, nic, target);
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
            };
            self.journal.record(vm, now, "start", start);
            ids.push(vm);
        }
        Admission {
            total: usize::MAX,
            per_host: PerHost::Unlimited,
            spread_over_hosts: false,
            expected_rate: None,
            give_up: std::mem::take(&mut self.give_up),
            picks: Some(ids),
        }
    }

    fn needs_progress(&self) -> bool {
        true
    }

    fn start_params(&mut self, vm: VmId, base: MigrationParams) -> MigrationParams {
        self.state[vm.0] = State::InFlight;
        self.started_racing |= self.fleet_deadline[vm.0].is_some();
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
            let ws = spec.working_set.as_f64();
            // What it still sends: in precopy, the rounds to come too.
            let to_send = if m.phase == Phase::Precopy && m.params.mode == Mode::Live {
                plan::live_bytes(
                    remaining,
                    m.dirty_rate.0,
                    ws,
                    rate,
                    m.params.downtime_limit.as_secs_f64(),
                    m.params.max_rounds.saturating_sub(m.round) + 1,
                )
                .0
            } else if m.phase == Phase::Precopy && m.params.mode == Mode::Postcopy {
                plan::postcopy_bytes(remaining, m.dirty_rate.0, ws, rate)
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
                let once = remaining + ws.min(m.dirty_rate.0 * left.max(0.0));
                if once <= deliverable(rate) {
                    let last_safe_moment = 1.5 * once / rate + 2.0 * self.period;
                    if left <= last_safe_moment {
                        let (action, decision) = if m.params.mode == Mode::Postcopy {
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
            self.state[m.vm.0] = State::GivenUp;
            self.give_up.push(m.vm);
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
    fn a_vm_given_up_in_flight_is_not_queued_again_by_its_cancel() {
        let fleet = fleet();
        let mut policy = Deadline::new(&fleet, MigrationParams::default(), Duration::from_secs(1), None);
        let x = VmId(0);
        let migrating = migrating(x, 1e6);
        policy.start_params(x, MigrationParams::default());
        // The planner gives it up and asks for a cancel (as `tune` does).
        policy.state[x.0] = State::GivenUp;
        // The cancel has not landed a period later: still in flight.
        let still = Observations {
            now: Duration::from_secs(1),
            migrations: vec![migrating],
            ..Observations::default()
        };
        consult(&mut policy, &fleet, &still);
        assert_eq!(policy.state[x.0], State::GivenUp);
        // Then it ends, failed (cancelled): given up it stays, and the
        // admission never picks it again; the other VM is still startable.
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
        let admission = consult(&mut policy, &fleet, &ended);
        assert_eq!(policy.state[x.0], State::GivenUp);
        assert!(!admission.picks.unwrap_or_default().contains(&x));
        assert!(policy.startable(VmId(1), 2.0));
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
