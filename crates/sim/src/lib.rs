//! # evac-sim
//!
//! A fast, event-driven simulator of many precopy live migrations over a
//! shared wide-area network, exact to a written model so that its results
//! can be checked by hand. It is one driver of the sans-IO controller in
//! `evac-controller` (the QEMU backend is another): it feeds the controller
//! [`Observations`](evac_controller::Observations) and carries out its [`Action`](evac_controller::Action)s.
//!
//! ## The model
//! - Links: the WAN (capacity `wan_bandwidth`, or the trace's value at that
//!   instant) and every host's NIC. A migration is `connections` TCP
//!   connections from its source NIC through the WAN to its destination NIC;
//!   each connection carries at most `tcp_window / wan_rtt`, the migration at
//!   most its `max_bandwidth`. Rates are the max-min fair allocation of the
//!   connections over the links ([`fair_share`]), recomputed whenever the set
//!   of migrations, a cap or a capacity changes.
//! - Bytes on the wire (`evac_model::memory`, the byte model the planner
//!   and the bounds share): round 1 sends each zero page as its 9-byte
//!   header and every other page whole, or compressed (`compression =
//!   "zstd"`, or `"auto"` when that is faster for the VM as it starts) as
//!   `4096 / compression_ratio` bytes plus an 8-byte header; pages dirtied
//!   since are re-sent as non-zero pages. A compressing migration sends at
//!   most what it compresses: one core per connection, or its even share
//!   of its source host's `migration_cpus` if less, at
//!   `zstd_rate_per_core` each.
//! - Live (precopy): round 1 sends the whole memory. During a round of
//!   length `t` the guest dirties its dirty curve at `t` (interpolated; the
//!   short form is `min(working_set, dirty_rate × t)`). At the round's
//!   end, with `D` the dirtied bytes on the wire and `r` the round's average
//!   rate: if `D / r <= downtime_limit` or the round count reached
//!   `max_rounds`, the VM pauses and `D` is sent (stop-and-copy, whose
//!   duration is the downtime); otherwise the next round sends `D`.
//! - Each migration first spends its `setup_time` sending nothing (the
//!   destination starting, handshakes), and `ramp_rtts` round trips more
//!   (its TCP connections ramping up to their window, a cost that grows with
//!   `wan_rtt`); round 1 (or the offline copy) starts after it. One that
//!   starts while the migrations in flight fill the WAN waits `join_rtts`
//!   round trips more: joining connections take their share of a full link
//!   slowly, and those already there keep more meanwhile. That wait ends
//!   early if the WAN gets room (the migrations it queued behind ended, or
//!   the WAN got faster): with no queue there is nothing to lose time to.
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
//!   [`Action::SwitchToPostcopy`](evac_controller::Action::SwitchToPostcopy)) the guest pauses for one round trip and
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
//!
//! ## Where things are
//!
//! | module | job |
//! |---|---|
//! | this file | the entry points: [`simulate`], [`simulate_evacuation`], [`evacuation`], [`Solver`] |
//! | `simulation` | the state and the main loop; `rounds`, `control`, `links`, `record` under it |
//! | `flow` | a migration in flight, a VM's progress, a round's end as an event |
//! | [`fair_share`], `fluid`, `radix` | max-min rates, the fluid model's virtual clock, its heap |
//! | [`rollout`] | the planner's question answered: the rest of a run from a given state |
//! | [`scale`] | fleets of a million VMs, built for the scale benchmark |

pub mod fair_share;
mod flow;
mod fluid;
mod radix;
pub mod rollout;
pub mod scale;
mod simulation;

use std::time::Duration;

use evac_controller::{Controller, ControllerConfig, Evacuation, DEFAULT_HORIZON};
use evac_model::{Fleet, MigrationParams, Network, VmId};
use evac_outcome::RunResult;

use simulation::Simulation;

/// How close to its capacity the WAN's load must be to count as full for a
/// migration joining it (`join_rtts`).
pub(crate) const FULL_WAN: f64 = 1e-3;

/// The WAN's index among the links; host `h`'s NIC is link `h + 1`.
pub(crate) const WAN: usize = 0;

/// Times closer than this are one instant (float rounding of event times).
pub(crate) const SAME_INSTANT: f64 = 1e-9;

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
