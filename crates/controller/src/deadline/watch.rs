//! Watching the migrations in flight (step 4): one that cannot finish
//! before its host dies is switched to postcopy or offline at the last safe
//! moment if that saves it, else cancelled when a VM that can make it would
//! use its bandwidth.

use evac_model::{Connections, HostId, Mode, VmId};

use super::{Deadline, State};
use crate::admission;
use crate::estimate::HORIZON_S;
use crate::explain::{gib, mbps};
use crate::plan;
use crate::rollout::Candidate;
use crate::{Action, MigrationObs, Phase, View};

/// The share of the time left to a power-off for which the WAN must have
/// been watched before a migration racing it is cancelled or switched to
/// postcopy (see [`Deadline::watched_enough_to_bet`]).
const BET_EVIDENCE: f64 = 0.25;

impl Deadline {
    /// Whether cancelling `cancelled` would leave bandwidth to a VM racing
    /// a power-off that can still make it: one waiting to start (on a host
    /// whose NIC has room), or one in flight held by the WAN rather than by
    /// its own caps. If none would, a migration that looks lost keeps
    /// going: trying costs nothing, and the estimate that condemns it may
    /// be pessimistic. A VM with no power-off has all the time there is:
    /// the bandwidth would only bring its move forward, and a priority-10
    /// VM cancelled 466 s into a near-outage for a VM with none took
    /// 1,568 s on its second try (docs/planner.md).
    pub(super) fn bandwidth_wanted(&self, migrations: &[MigrationObs], cancelled: VmId, now: f64) -> bool {
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
                    && self.fleet_deadline[vm.0].is_some()
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

    /// Whether the WAN has been watched long enough to bet on it that it
    /// holds until a power-off `left` seconds away: for a quarter of that
    /// (at most the estimator's horizon). Two decisions make that bet and
    /// cannot be taken back: a cancel (on two seconds of a slow start's
    /// first minutes it cancelled a priority-10 VM that the WAN, recovered
    /// minutes later, would have carried; the wait costs at most a quarter
    /// of the time left at the migration's share), and a switch to
    /// postcopy, whose one connection must then carry the rest through
    /// every trough to come (56 s into a sawtooth it switched a priority-10
    /// VM whose trough was yet to be seen, and lost it; offline, on all its
    /// connections, saved it: docs/planner.md).
    fn watched_enough_to_bet(&self, now: f64, left: f64) -> bool {
        self.estimator.watched_for(now) >= (BET_EVIDENCE * left).min(HORIZON_S)
    }

    /// Step 4: the migrations in flight that cannot finish before their
    /// host dies are switched (postcopy, offline) or cancelled.
    pub(super) fn watch(&mut self, view: &View<'_>) -> Vec<Action> {
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
        // Once per call, not per migration: it walks the estimator's history.
        let trough = self.estimator.trough().unwrap_or(mean).min(mean);
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
                .resend_wire_per_byte(m.params.compression == evac_model::Compression::Zstd);
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
                    .migration_cap(m.params.connections)
                    .min(self.estimator.nic(spec.host)),
            );
            // What arrives by the power-off at `now_rate` until the others
            // are done, then at `alone` (never less than now).
            let shared = others_done.min(left).max(0.0);
            let deliverable_at = |now_rate: f64, alone: f64| {
                now_rate * shared + alone.max(now_rate) * (left - shared).max(0.0)
            };
            let deliverable = |bytes_per_sec_now: f64| deliverable_at(bytes_per_sec_now, alone);
            if to_send <= deliverable(rate) {
                continue;
            }
            if m.phase == Phase::Precopy {
                // Pause (or hand over to the destination) and send the rest
                // once: what is left of the round and what was dirtied.
                let once = remaining + dirtied(left.max(0.0));
                // Postcopy where the migration was started ready for it and
                // it can still save it: the guest runs on at the
                // destination, but its pages follow on one connection
                // (QEMU before 10.1), so at one connection's rate. Offline
                // pauses the guest until the last byte, on all of them.
                // Postcopy is judged on the WAN's trough once alone (the
                // pessimistic forecast), not its peak: it cannot be undone,
                // and its one connection cannot make up for a dip as
                // offline's many can. Where it might not make it, offline
                // is the safer way to save the VM.
                let one_connection = self.estimator.migration_cap(Connections::ONE);
                let trough_alone = self.alone_rate(spec.host, trough).min(one_connection);
                let postcopy = (m.params.mode == Mode::Postcopy
                    || (m.params.allow_postcopy && m.params.mode == Mode::Live))
                    && once <= deliverable_at(rate.min(one_connection), trough_alone)
                    && self.watched_enough_to_bet(now, left);
                if once <= deliverable(rate) {
                    let switch_rate = if postcopy { rate.min(one_connection) } else { rate };
                    let last_safe_moment = 1.5 * once / switch_rate + 2.0 * self.period;
                    if left <= last_safe_moment {
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
            // simulations did not), a migration nothing else would replace
            // keeps going, and so does one in postcopy: its guest already
            // runs at the destination, so a cancel loses it at once where
            // going on may still save it.
            if m.phase == Phase::Postcopy
                || matches!(self.follow, Candidate::Fixed(_))
                || self.scavenger[m.vm.0]
                || self.cancelled_once[m.vm.0]
                || !self.watched_enough_to_bet(now, left)
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
