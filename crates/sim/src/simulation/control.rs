//! The controller's side: consulting it with what a real driver could
//! measure, and carrying out its actions (start, retune, switch, cancel).

use std::time::Duration;

use evac_controller::{Action, Controller, EndOutcome, Ended, MigrationObs, Phase, Retune};
use evac_model::memory::{self, cpu_capped_wire_rate, cpu_share};
use evac_model::{BitsPerSec, Bytes, BytesPerSec, HostId, MigrationParams, Mode, VmId};
use evac_outcome::FailedAttempt;

use crate::fair_share::Demand;
use crate::flow::{Flow, Stage};
use crate::{Solver, FULL_WAN, WAN};

use super::Simulation;

impl Simulation<'_> {
    pub(super) fn consult(&mut self, controller: &mut dyn Controller) -> Vec<Action> {
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
                started_at: flow.started,
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
        let actions = controller.on_tick(obs);
        // Each change is told once.
        self.observations.power_changes.clear();
        actions
    }

    /// Carries out the controller's actions; true if rates must be recomputed.
    pub(super) fn apply(&mut self, actions: Vec<Action>) -> bool {
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
                    change.apply(&mut flow.params);
                    // Only a new cap changes a rate.
                    if let Retune::MaxBandwidth(_) = change {
                        if flow.sending() {
                            let old = flow.demand.cap;
                            flow.demand.cap = demand_cap(&flow.params, connection_cap);
                            let (weight, new) = (flow.demand.weight, flow.demand.cap);
                            // Its host's CPU may cap it below that.
                            let (source, compressed) = (flow.source, flow.compressed);
                            self.bottleneck.recap(vm, weight, old, new);
                            if compressed {
                                self.recap_compressors(source);
                            }
                        }
                        rates_changed = true;
                    }
                }
                Action::SwitchToOffline { vm } => {
                    let fleet = self.fleet;
                    let spec = fleet.vm(vm);
                    self.unchain(vm);
                    let Some(flow) = self.flow_mut(vm) else { continue };
                    if flow.phase != Phase::Precopy {
                        continue;
                    }
                    // What is left of the round plus what the guest dirtied
                    // since the round began goes in one paused copy.
                    flow.catch_up(now, v);
                    let dirtied = if flow.disk_pending() {
                        // The rest of the disk, then all the memory.
                        flow.skip_disk();
                        flow.memory
                    } else {
                        spec.dirtied_within(now - flow.round_started_at) * flow.resend_wire
                    };
                    flow.earlier_rounds += flow.round_sent;
                    flow.round_bytes = flow.round_bytes - flow.round_sent + dirtied;
                    flow.round_sent = 0.0;
                    flow.phase = Phase::StopAndCopy;
                    flow.paused_at = Some(now);
                    flow.params.mode = Mode::Offline;
                    let (source, compressed) = (flow.source, flow.compressed);
                    if compressed {
                        // Round 1's rest is now counted as re-sent pages:
                        // the CPU it takes per wire byte changed.
                        rates_changed |= self.recap_compressors(source);
                    }
                    self.schedule(vm);
                    self.progress[vm.0].mode = Some(Mode::Offline);
                }
                Action::SwitchToPostcopy { vm } => {
                    let fleet = self.fleet;
                    let spec = fleet.vm(vm);
                    self.unchain(vm);
                    let Some(flow) = self.flow_mut(vm) else { continue };
                    // Not before round 1 of memory: the disks must be across
                    // before the guest can run at the destination.
                    let ready = flow.params.mode == Mode::Postcopy
                        || (flow.params.mode == Mode::Live && flow.params.allow_postcopy);
                    if flow.phase != Phase::Precopy || !ready || flow.disk_pending() {
                        continue;
                    }
                    // The rest of the round and what the guest dirtied since
                    // it began follow the guest, which dirties no more here;
                    // uncompressed (postcopy's pages go as they are).
                    flow.catch_up(now, v);
                    let dirtied = spec.dirtied_within(now - flow.round_started_at);
                    let rest = (flow.round_bytes - flow.round_sent) * uncompressed_share(flow, spec);
                    flow.earlier_rounds += flow.round_sent;
                    flow.round_bytes = rest + dirtied;
                    flow.round_sent = 0.0;
                    flow.phase = Phase::Postcopy;
                    flow.paused_at = Some(now);
                    let source = flow.source;
                    // As the run loop records a switch the backend took.
                    flow.params.mode = Mode::Postcopy;
                    self.progress[vm.0].mode = Some(Mode::Postcopy);
                    self.postcopy_on_one_connection(vm);
                    // One compressor fewer on its host.
                    self.recap_compressors(source);
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
    pub(super) fn wan_full(&self) -> bool {
        let in_use = if self.fluid_on {
            self.clock.lambda * self.bottleneck.weight(WAN)
        } else {
            self.flows.iter().map(|f| f.rate).sum()
        };
        in_use >= (1.0 - FULL_WAN) * self.capacity[WAN]
    }

    /// A migration that joined a full WAN loses `join_rtts` round trips to
    /// the queue the migrations there hold; once the WAN has room (they
    /// ended, or it got faster) there is no queue to lose them to, and what
    /// is left of that cost is dropped. (A fixed wait, however the WAN
    /// went, left a small VM's joiner idle behind incumbents that had
    /// already ended, where a real one takes the room at once.)
    pub(super) fn end_joins(&mut self) {
        if self.wan_full() {
            return;
        }
        let now = self.now;
        let mut released = Vec::new();
        for flow in &mut self.flows {
            if let Stage::SettingUp {
                ready_at, joining, ..
            } = &mut flow.stage
            {
                if *joining > 0.0 {
                    *ready_at = (*ready_at - *joining).max(now);
                    *joining = 0.0;
                    released.push(flow.vm);
                }
            }
        }
        self.joining = 0;
        for vm in released {
            self.schedule(vm);
        }
    }

    pub(super) fn start(&mut self, vm: VmId, destination: HostId, params: MigrationParams) {
        let spec = self.fleet.vm(vm);
        let offline = params.mode == Mode::Offline;
        // The fixed cost, then the connections' ramp-up: round trips lost
        // while slow start and receive-buffer autotuning open the window;
        // more if the WAN is full as it starts (`join_rtts`).
        let rtt = self.network.wan_rtt.as_secs_f64();
        let mut setup = params.setup_time.as_secs_f64() + params.ramp_rtts * rtt;
        let joining = if params.join_rtts > 0.0 && self.wan_full() {
            self.joining += 1;
            params.join_rtts * rtt
        } else {
            0.0
        };
        setup += joining;
        let disk = spec.disk.as_f64();
        let copying_disk = disk > 0.0 && !offline;
        let compressed = self.compresses(vm, &params);
        let first_wire = spec.profile.first_pass_wire_per_byte(compressed);
        let memory = spec.memory.as_f64() * first_wire;
        let progress = &mut self.progress[vm.0];
        progress.destination = Some(destination);
        progress.start = Some(self.now);
        progress.mode = Some(params.mode);
        progress.connections = Some(params.connections.get());
        progress.compressed = Some(compressed);
        self.slot[vm.0] = Some(self.flows.len());
        self.flows.push(Flow {
            vm,
            source: spec.host,
            destination,
            params,
            phase: if offline { Phase::Offline } else { Phase::Precopy },
            round: u32::from(!offline),
            started_at: self.now,
            started: Duration::from_secs_f64(self.now),
            round_started_at: self.now,
            // The disks first (live), or with the memory in one copy (offline).
            round_bytes: if copying_disk { disk } else { disk + memory },
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
                weight: f64::from(params.connections.get()),
                cap: if setup > 0.0 {
                    0.0
                } else {
                    demand_cap(&params, self.connection_cap)
                },
            },
            generation: self.generation_of[vm.0],
            paused_at: offline.then_some(self.now),
            stage: if setup > 0.0 {
                Stage::SettingUp {
                    ready_at: self.now + setup,
                    disk_first: copying_disk,
                    joining,
                }
            } else if copying_disk {
                Stage::CopyingDisk
            } else {
                Stage::Memory
            },
            memory,
            dirty_rate: spec.dirty_rate,
            compressed,
            first_wire,
            resend_wire: spec.profile.resend_wire_per_byte(compressed),
        });
        let slot = self.flows.len() - 1;
        if self.flows[slot].sending() {
            self.join(slot);
            if compressed {
                self.recap_compressors(spec.host);
            }
        }
        // Its first event: the end of its setup, or (in virtual time) of its
        // first round; a full solve reschedules every flow anyway.
        self.schedule(vm);
    }
}

impl Simulation<'_> {
    /// Whether `vm`'s migration, starting now with `params`, compresses
    /// ([`memory::compresses`]): under `auto`, judged with the WAN's share
    /// it would get beside the migrations sending (by weight) and its host's
    /// CPU shared with the host's compressing migrations.
    fn compresses(&self, vm: VmId, params: &MigrationParams) -> bool {
        let spec = self.fleet.vm(vm);
        let mode = params.compression;
        if mode != evac_model::Compression::Auto {
            return memory::compresses(mode, &spec.profile, 0.0, BytesPerSec::ZERO);
        }
        let weight = f64::from(params.connections.get());
        let sending: f64 = self
            .flows
            .iter()
            .filter(|f| f.sending())
            .map(|f| f.demand.weight)
            .sum();
        let nic = self.capacity[spec.host.0 + 1];
        let link = demand_cap(params, self.connection_cap)
            .min(self.capacity[WAN] * weight / (sending + weight))
            .min(nic);
        let sharing = self.compressors_on(spec.host) + 1;
        let cpu = cpu_share(self.fleet.host(spec.host), params, sharing);
        memory::compresses(mode, &spec.profile, link, cpu)
    }

    /// How many migrations from `host` compress now.
    fn compressors_on(&self, host: HostId) -> usize {
        self.vms_by_host[host.0]
            .iter()
            .filter_map(|vm| self.slot[vm.0])
            .filter(|&s| self.flows[s].compressing())
            .count()
    }

    /// The most wire bytes per second the flow in `slot` sends when its
    /// host's CPU is shared by `sharing` compressing migrations.
    fn cpu_cap(&self, slot: usize, sharing: usize) -> f64 {
        let flow = &self.flows[slot];
        if !flow.compressing() {
            return f64::INFINITY;
        }
        let cpu = cpu_share(self.fleet.host(flow.source), &flow.params, sharing);
        if flow.first_pass() {
            let share = self.fleet.vm(flow.vm).profile.first_pass_compressed_share();
            cpu_capped_wire_rate(cpu, flow.first_wire, share)
        } else {
            cpu_capped_wire_rate(cpu, flow.resend_wire, 1.0)
        }
    }

    /// Sets the cap of every compressing migration from `host` to the least
    /// of its connections', its bandwidth cap and its share of the host's
    /// CPU (shared evenly); true if one changed. Called whenever one starts
    /// or stops compressing there, or its pages change kind (first pass to
    /// re-sent).
    pub(super) fn recap_compressors(&mut self, host: HostId) -> bool {
        let sharing = self.compressors_on(host);
        let mut changed = false;
        for i in 0..self.vms_by_host[host.0].len() {
            let vm = self.vms_by_host[host.0][i];
            let Some(slot) = self.slot[vm.0] else { continue };
            if !self.flows[slot].compressed || !self.flows[slot].sending() {
                continue;
            }
            let new =
                demand_cap(&self.flows[slot].params, self.connection_cap).min(self.cpu_cap(slot, sharing));
            let old = self.flows[slot].demand.cap;
            if new != old {
                self.unchain(vm);
                let slot = self.slot[vm.0].expect("in flight");
                let flow = &mut self.flows[slot];
                flow.demand.cap = new;
                let weight = flow.demand.weight;
                self.bottleneck.recap(vm, weight, old, new);
                changed = true;
            }
        }
        changed
    }
}

/// The share of a compressed flow's bytes left in its round that stays
/// when they go uncompressed (postcopy): the first pass's pages as they
/// are over as compressed (1 when it did not compress).
pub(super) fn uncompressed_share(flow: &mut Flow, spec: &evac_model::Vm) -> f64 {
    if !flow.compressed {
        return 1.0;
    }
    let (plain, packed) = if flow.disk_pending() {
        // The disk goes as it is either way.
        (1.0, 1.0)
    } else if flow.first_pass() {
        (
            spec.profile.first_pass_wire_per_byte(false),
            spec.profile.first_pass_wire_per_byte(true),
        )
    } else {
        (1.0, flow.resend_wire)
    };
    flow.compressed = false;
    flow.first_wire = spec.profile.first_pass_wire_per_byte(false);
    flow.resend_wire = 1.0;
    plain / packed
}

/// A migration's cap: its connections' window limit and its bandwidth cap.
pub(super) fn demand_cap(params: &MigrationParams, connection_cap: f64) -> f64 {
    let windows = connection_cap * f64::from(params.connections.get());
    params
        .max_bandwidth
        .map_or(windows, |cap: BitsPerSec| windows.min(cap.to_bytes_per_sec().0))
}
