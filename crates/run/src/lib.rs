//! # evac-run
//!
//! The run loop of a real evacuation, the same for every backend (QEMU over
//! QMP in `evac-qemu`, libvirt in `evac-libvirt`). It drives a sans-IO
//! [`Controller`]: every control period it observes the migrations in
//! flight through a [`Backend`], turns what it measured into
//! [`Observations`](evac_controller::Observations), asks the controller for
//! actions and carries them out, until every VM is migrated or lost, or
//! shutdown is asked for. Then it returns the same [`RunResult`] as the
//! simulator, plus where each migrated VM landed.
//!
//! The backend trait and its contract (what must return at once, what is
//! bounded by which timeout, what "failed" promises about the VM) are in
//! [`backend`]: a new backend is written from that page alone.
//!
//! ## What the loop does, and why here
//!
//! - **Observations, concurrently.** Every migration in flight is observed
//!   at the same time, each call bounded by [`OBSERVE_TIMEOUT`]: a host that
//!   answers slowly (a source in stop-and-copy, a stalled link) costs its
//!   own observation (the last one is reused), never the tick.
//! - **Attempts.** A VM's attempts are counted here; after
//!   `max_attempts` failures it is given up (reported lost).
//! - **Power-off deadlines.** When a source host's `power_off_at` passes,
//!   its VMs are lost: a migration in flight is cancelled, waiting VMs are
//!   left alone.
//! - **Shutdown.** When the `shutdown` future resolves (the CLI passes
//!   Ctrl-C), every migration in flight is cancelled, the loop keeps
//!   observing until each has ended (completed first, or back on its
//!   source), and the partial result is returned.
//! - **Stuck.** For [`STALL_PERIODS`] periods with nothing in flight and
//!   nothing started while VMs wait (e.g. none fits any destination), the
//!   run stops; the VMs still waiting are reported lost.
//! - **Progress.** A [`RunProgress`] snapshot is published on a
//!   [`tokio::sync::watch`] channel every period and once at the end; the
//!   library draws nothing.
//! - **Network usage.** Per source host, the cumulative bytes its NIC sent
//!   when the backend measures it, else the sum of its migrations' bytes;
//!   the WAN's is the sum over source hosts.

pub mod backend;
mod driver;
mod progress;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use evac_controller::{Controller, ControllerConfig, Evacuation, PolicyKind};
use evac_model::MigrationParams;
use evac_outcome::RunResult;
use tokio::sync::watch;

pub use backend::{Backend, Completion, Failure, Migration, Observed, Progress, StartRequest, Wake};
pub use progress::{FlightProgress, RunProgress};

/// How long one [`Migration::observe`] (or [`Backend::host_tx`]) may take
/// before the loop goes on without its answer.
pub const OBSERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one action (retune, offline, cancel) may take to be delivered.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Periods with nothing in flight and nothing started, while VMs wait,
/// after which a run stops.
pub const STALL_PERIODS: usize = 20;

/// Where the loop's messages (one line each, no newline) go.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// The default [`Log`]: standard error.
pub fn log_to_stderr() -> Log {
    Arc::new(|line| eprintln!("{line}"))
}

/// How a run runs, beyond its backend and controller.
#[derive(Default)]
pub struct RunOptions {
    /// Replaces the configuration's policy (for [`run`]).
    pub policy: Option<PolicyKind>,
    /// Where to publish a [`RunProgress`] every control period and at the
    /// end; dropped when the run returns, which closes the channel.
    pub progress: Option<watch::Sender<RunProgress>>,
    /// Where messages go ([`log_to_stderr`] if `None`), e.g. printed above
    /// a progress display rather than through it.
    pub log: Option<Log>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("policy", &self.policy)
            .field("progress", &self.progress)
            .field("log", &self.log.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// Where a migrated VM runs, in the terms of backend `B`.
pub type Landed<B> = <<B as Backend>::Migration as Migration>::Landed;

/// A run's result and, per VM in fleet order, where it landed (`None`:
/// still on its source, or lost).
#[derive(Debug, Clone)]
pub struct RunOutput<L> {
    pub result: RunResult,
    pub landed: Vec<Option<L>>,
}

/// Evacuates the backend's fleet under `config`'s policy (or the options'
/// override) with the [`Evacuation`] controller.
pub async fn run<B: Backend>(
    backend: B,
    params: MigrationParams,
    mut config: ControllerConfig,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunOutput<Landed<B>>> {
    if let Some(policy) = options.policy {
        config.policy = policy;
    }
    let controller = Evacuation::new(backend.fleet().clone(), params, config.clone());
    run_with_controller(backend, controller, &config, options, shutdown).await
}

/// Drives any [`Controller`] (tests use scripted ones); `config` gives the
/// period and `max_attempts` (its policy is the controller's business).
pub async fn run_with_controller<B: Backend, C: Controller>(
    backend: B,
    controller: C,
    config: &ControllerConfig,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunOutput<Landed<B>>> {
    driver::Driver::new(backend, config, options)
        .drive(controller, shutdown)
        .await
}

/// Which backend an inventory is for: its top-level `backend` key
/// (`"qemu"` when absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// QEMU processes reachable over QMP from this machine (`evac-qemu`).
    #[default]
    Qemu,
    /// Hosts run by libvirt daemons (`evac-libvirt`).
    Libvirt,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Qemu => "qemu",
            BackendKind::Libvirt => "libvirt",
        })
    }
}
