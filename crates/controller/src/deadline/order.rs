//! The plan: which VMs can still make their power-off, in which mode, and
//! in what order (see the module doc of `deadline`, step 2).

use evac_model::{Connections, Fleet, HostId, Mode, VmId};

use super::Deadline;
use crate::admission::MAX_CONNECTIONS;
use crate::explain::{gib, mbps};
use crate::plan::{self, Choice, Item};
use crate::View;

impl Deadline {
    /// The rate a VM of `host` gets running alone at the WAN's `wan` (into
    /// the fastest destination).
    pub(super) fn alone_rate(&self, host: HostId, wan: f64) -> f64 {
        self.estimator
            .nic(host)
            .min(wan)
            .min(self.estimator.fastest_destination())
            .min(
                self.estimator
                    .migration_cap(MAX_CONNECTIONS.max(self.base.connections)),
            )
    }

    /// A queued VM's modes, preferred first, with their bytes at `rate` on
    /// the wire (the simulator's byte model, `evac_model::memory`), the
    /// WAN's `trough` being [`crate::estimate::Estimator::trough`] (read
    /// once per plan by the caller: it walks the estimator's history).
    pub(super) fn alternatives(
        &self,
        fleet: &Fleet,
        vm: VmId,
        rate: f64,
        trough: Option<f64>,
    ) -> Vec<(Mode, f64)> {
        let spec = fleet.vm(vm);
        let compressed = self.compresses(fleet, spec, rate);
        let memory = spec.memory.as_f64() * spec.profile.first_pass_wire_per_byte(compressed);
        let resend = spec.profile.resend_wire_per_byte(compressed);
        let dirtied = |t: f64| spec.dirtied_within(t) * resend;
        // Postcopy's pages after the switch go as they are, on one
        // connection (QEMU before 10.1; the simulator sends them so), and
        // through whatever troughs the WAN has: where that is less than the
        // VM's rate, they are counted as the bytes that rate would carry in
        // the time they take, so a postcopy that fits the plan by its bytes
        // but not by its time does not win over offline. The switch in
        // flight judges it the same way (at the trough, on one connection:
        // `watch.rs`); judged at the mean, the plan started VMs in postcopy
        // that a stalling WAN then lost where offline saved them.
        let trough_alone = trough.map_or(f64::INFINITY, |trough| self.alone_rate(spec.host, trough));
        let slowest = self.estimator.migration_cap(Connections::ONE).min(trough_alone);
        let postcopy = |rate: f64| {
            let bytes = plan::postcopy_bytes(memory, |t| spec.dirtied_within(t), rate);
            if slowest >= rate {
                bytes
            } else if slowest > 0.0 {
                memory + (bytes - memory).max(0.0) * rate / slowest
            } else {
                // A WAN that stalled within the horizon: nothing bounds
                // how long the pages take.
                f64::INFINITY
            }
        };
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
    pub(super) fn compresses(&self, fleet: &Fleet, spec: &evac_model::Vm, rate: f64) -> bool {
        let cpu = evac_model::memory::cpu_share(fleet.host(spec.host), &self.base, 1);
        evac_model::memory::compresses(self.base.compression, &spec.profile, rate, cpu)
    }

    /// Replans the VMs still queued: their order, their modes, and those
    /// given up.
    pub(super) fn plan(&mut self, view: &View<'_>) {
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
        let trough = self.estimator.trough();
        let queued: Vec<VmId> = self.waiting(now);
        for vm in queued {
            let spec = fleet.vm(vm);
            items.push(Item {
                vm,
                host: spec.host,
                deadline: self.fleet_deadline[vm.0],
                priority: spec.priority,
                alternatives: self.alternatives(fleet, vm, self.alone_rate(spec.host, mean), trough),
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
                    alternatives: self.alternatives(fleet, item.vm, self.alone_rate(item.host, peak), trough),
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
                    let was = std::mem::replace(&mut self.mode[vm.0], mode);
                    fits.push(key);
                    if mode != self.base.mode {
                        // A plan that changes the mode says so, even right
                        // after another plan.
                        let why = format!(
                            "{mode:?} planned: live precopy would not fit before the power-off; {} by {mode:?}",
                            gib(bytes)
                        );
                        if mode == was {
                            self.journal.record(vm, now, "plan", why);
                        } else {
                            self.journal.record_anew(vm, now, "plan", why);
                        }
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
                            "needs {} before its host's power-off; at the WAN's mean {} only {} are left after VMs of more priority per byte; fits at the peak {}: behind those that fit and die no later",
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
        hopeless.sort_by(by_deadline_then_density);
        // A VM deferred (it fits only at the peak) waits behind those that
        // fit at the mean and die no later than it, not behind every one
        // that fits: after a dip the mean lags the recovered WAN, and VMs
        // of hosts dying last (with time to spare) took the path from
        // those of the hosts dying first (docs/planner.md). Earliest
        // deadline first is the order that meets every deadline the plan
        // counted on.
        let (mut fits_no_deadline, fits_deadline): (Vec<_>, Vec<_>) =
            fits.into_iter().partition(|f| f.0.is_infinite());
        fits_no_deadline.sort_by(by_deadline_then_density);
        let mut in_line: Vec<(bool, (f64, f64, VmId))> = fits_deadline
            .into_iter()
            .map(|key| (false, key))
            .chain(waits.into_iter().map(|key| (true, key)))
            .collect();
        in_line.sort_by(|(a_waits, a), (b_waits, b)| {
            a.0.total_cmp(&b.0)
                .then(a_waits.cmp(b_waits))
                .then_with(|| by_deadline_then_density(a, b))
        });
        // VMs with no deadline wait behind every one with a deadline that
        // can make it (they have all the time there is); those that cannot
        // make it even at the peak come last: they get the room no other VM
        // would use, and no more.
        self.hopeless_from = in_line.len() + fits_no_deadline.len();
        self.order = in_line
            .into_iter()
            .map(|(_, key)| key)
            .chain(fits_no_deadline)
            .chain(hopeless)
            .map(|(_, _, vm)| vm)
            .collect();
        self.head = 0;
    }
}
