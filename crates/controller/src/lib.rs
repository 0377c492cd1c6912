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
//!
//! ## Where things are
//!
//! | module | job |
//! |---|---|
//! | `observe` | events in: [`Observations`], [`Ended`], [`MigrationObs`] |
//! | `action` | actions out ([`Action`], [`Retune`]) and the clock ([`Wakeup`]) |
//! | `config` | [`ControllerConfig`], [`Order`] and their validation |
//! | `policy` | the [`Policy`] trait, what it sees ([`View`]) and answers ([`Admission`]) |
//! | `evacuation` | [`Evacuation`]: the state, a tick; queue, destinations, throughput |
//! | [`policies`] | the baselines, the published AIMD controllers, `deadline` |
//! | `deadline`, `admission`, `estimate`, `plan` | evac's planner, its estimator and bounds |
//! | [`rollout`] | the question the planner asks a simulator (answered by `evac-sim`) |
//! | `explain` | each VM's decisions, in words |

mod action;
mod admission;
mod config;
mod deadline;
mod estimate;
mod evacuation;
mod explain;
mod observe;
mod plan;
pub mod policies;
mod policy;
pub mod rollout;
#[cfg(test)]
mod testing;

use std::time::Duration;

use evac_model::VmId;

pub use action::{Action, Retune, Wakeup};
pub use config::{ControllerConfig, Order, DEFAULT_HORIZON, MAX_ATTEMPTS, MAX_PERIOD, MAX_TICKS, MIN_PERIOD};
pub use evacuation::{Evacuation, Resumed};
pub use explain::Explanation;
pub use observe::{EndOutcome, Ended, MigrationObs, Observations, Phase};
pub use plan::{knapsack_bound, BoundHost, BoundVm};
pub use policies::{AimdParams, PolicyKind};
pub use policy::{Admission, PerHost, Policy, View};

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
