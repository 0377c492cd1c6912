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
//! [`backend`]: a new backend is written from that page alone. An attempt
//! runs as a task of its own behind its handle: [`attempt`] is that
//! skeleton, shared by the backends.
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
//!   left alone. A deadline may move during the run ([`power`]: an edited
//!   inventory, a UPS, on [`RunOptions::power`]): each change is applied at
//!   once, journaled, published and told to the controller.
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
//! - **Stalls and retries.** A migration whose bytes do not move for
//!   `stall_after` ([`STALL_AFTER_PERIODS`] periods by default) is
//!   cancelled, with a log line, so the controller retries it on a fresh
//!   destination; a failed VM's retry waits [`RETRY_BACKOFF`], doubling per
//!   failure, at most [`RETRY_BACKOFF_CAP`] (the controller hears of the
//!   failure only then).
//! - **Journal and resume.** Every decision is appended to the run dir's
//!   journal and flushed before it is carried out ([`journal`]); after a
//!   crash, [`run`] with [`RunOptions::replay`] keeps the finished VMs'
//!   records, adopts the attempts in flight ([`Backend::adopt`]) and never
//!   starts a VM twice. A plain run refuses an unfinished journal.
//! - **Network usage.** Per source host, the cumulative bytes its NIC sent
//!   when the backend measures it, else the sum of its migrations' bytes;
//!   the WAN's is the sum over source hosts.

pub mod attempt;
pub mod backend;
mod driver;
pub mod inventory;
pub mod journal;
pub mod power;
mod progress;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use evac_controller::{Controller, ControllerConfig, Evacuation, PolicyKind, Resumed};
use evac_model::wall_clock::Timestamp;
use evac_model::MigrationParams;
use evac_outcome::RunResult;
use tokio::sync::watch;

pub use attempt::AttemptTask;
pub use backend::{
    Backend, Capabilities, Completion, Failure, Migration, Observed, Progress, StartRequest, Wake,
};
pub use progress::{FlightProgress, HostProgress, RunProgress};

/// How long one [`Migration::observe`] (or [`Backend::host_tx`]) may take
/// before the loop goes on without its answer.
pub const OBSERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one action (retune, offline, cancel) may take to be delivered.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Periods with nothing in flight and nothing started, while VMs wait,
/// after which a run stops.
pub const STALL_PERIODS: usize = 20;

/// A migration in flight whose bytes do not move for this many periods
/// (unless [`RunOptions::stall_after`] says otherwise) is cancelled and
/// retried.
pub const STALL_AFTER_PERIODS: u32 = 5;

/// The wait before the first retry of a failed attempt; it doubles with
/// each further failure of the same VM, up to [`RETRY_BACKOFF_CAP`].
pub const RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait before a retry.
pub const RETRY_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Where the loop's messages (one line each, no newline) go.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// The lines a [`log_kept`] log was given, in order.
pub type KeptLines = Arc<std::sync::Mutex<Vec<String>>>;

/// A [`Log`] that keeps its lines (for a test, or a program that shows
/// them its own way), and the lines it keeps.
pub fn log_kept() -> (Log, KeptLines) {
    let lines = KeptLines::default();
    let kept = lines.clone();
    let log: Log = Arc::new(move |line: &str| {
        kept.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.to_owned())
    });
    (log, lines)
}

/// The default [`Log`]: standard error.
pub fn log_to_stderr() -> Log {
    // A closed stderr is no reason to stop an evacuation (eprintln! would
    // panic).
    Arc::new(|line| {
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    })
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
    /// Where to journal every decision (see [`journal`]); `None`: nowhere
    /// (the run cannot be resumed).
    pub journal: Option<PathBuf>,
    /// Cancel (and so retry) a migration whose bytes stand still this long;
    /// default [`STALL_AFTER_PERIODS`] control periods.
    pub stall_after: Option<Duration>,
    /// Take up the unfinished run of the run dir's journal (`--resume`): the
    /// backend layer reads it with [`journal::prepare`] into `replay`.
    pub resume: bool,
    /// Take up this unfinished run (read from `journal` by
    /// [`journal::prepare`]) instead of starting afresh; only [`run`]
    /// resumes (it tells the controller what the journal says).
    pub replay: Option<journal::Replay>,
    /// Lets `deadline` plan by simulating candidate plans (see
    /// `evac_controller::rollout`): builds the simulator it asks from the
    /// run's WAN, parameters and settings. The run loop does not know the
    /// simulator (it sits above this crate); the CLI hands it in, so a real
    /// run decides as `evac simulate` does.
    pub plan_with: Option<RolloutFactory>,
    /// The run's start on the wall clock: the origin of its clock, and
    /// what the inventory's power-offs given as times of day count from
    /// (the backend resolves them against it). [`open_run_dir`] sets it:
    /// now, or a resumed run's first start (from its journal), so that a
    /// restart keeps every deadline where it was. `None`: when the loop
    /// starts.
    pub start: Option<Timestamp>,
    /// News of the hosts' power during the run (see [`power`]): each
    /// update is applied at once and told to the controller. `None`: the
    /// power-offs are the inventory's for the whole run.
    pub power: Option<tokio::sync::mpsc::Receiver<power::PowerUpdate>>,
}

/// See [`RunOptions::plan_with`].
pub type RolloutFactory = std::sync::Arc<
    dyn Fn(
            &evac_model::Network,
            MigrationParams,
            &ControllerConfig,
        ) -> std::sync::Arc<dyn evac_controller::rollout::Rollout>
        + Send
        + Sync,
>;

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("policy", &self.policy)
            .field("progress", &self.progress)
            .field("log", &self.log.as_ref().map(|_| "custom"))
            .field("journal", &self.journal)
            .field("stall_after", &self.stall_after)
            .field("replay", &self.replay.is_some())
            .field("plan_with", &self.plan_with.is_some())
            .field("start", &self.start)
            .field("power", &self.power.is_some())
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
    // The controller plans only with what the backend can carry out.
    let (params, notes) = backend
        .capabilities()
        .fit(backend.name(), params)
        .map_err(|why| anyhow::anyhow!(why))?;
    let log = options.log.clone().unwrap_or_else(log_to_stderr);
    for note in notes {
        log(&note);
    }
    // The policy knows what the operator wrote of the WAN (its RTT and TCP
    // window: the most one connection carries), as in the simulator: the
    // deadline policy sizes its multifd channels by it. Without a
    // `[network]` the cap is unknown and learnt from measurements.
    let network = backend.network();
    let mut controller = Evacuation::with_network(backend.fleet().clone(), &network, params, config.clone());
    if let Some(factory) = &options.plan_with {
        controller = controller.planning_with(factory(&network, params, &config));
    }
    if let Some(replay) = &options.replay {
        seed(&mut controller, backend.fleet(), replay);
    }
    let name = controller.name().to_owned();
    driver::Driver::new(backend, &name, &config, options)?
        .drive(controller, shutdown)
        .await
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
    if options.replay.is_some() {
        anyhow::bail!("only `evac_run::run` resumes a run (it tells the controller what the journal says)");
    }
    let name = controller.name().to_owned();
    driver::Driver::new(backend, &name, config, options)?
        .drive(controller, shutdown)
        .await
}

/// Tells a fresh controller what the journal says of each VM.
fn seed(controller: &mut Evacuation, fleet: &evac_model::Fleet, replay: &journal::Replay) {
    let host = |name: &str| {
        fleet
            .hosts
            .iter()
            .position(|h| h.name == name)
            .map(evac_model::HostId)
    };
    for (vm, spec) in fleet.vms.iter().enumerate() {
        let Some(at) = replay.vms.iter().position(|n| n == &spec.name) else {
            continue;
        };
        let state = &replay.states[at];
        let resumed = if state.done {
            let destination = state
                .record
                .as_ref()
                .filter(|r| r.outcome == evac_outcome::Outcome::Migrated)
                .and_then(|r| r.destination.as_deref())
                .and_then(host);
            Resumed::Done { destination }
        } else if let Some(flight) = &state.in_flight {
            match host(&flight.destination) {
                Some(destination) => Resumed::InFlight {
                    destination,
                    attempts: state.attempts,
                },
                None => continue,
            }
        } else {
            Resumed::Waiting {
                attempts: state.attempts,
            }
        };
        controller.resume_vm(evac_model::VmId(vm), resumed);
    }
}

/// Where a run keeps its journal, destination sockets and logs when its
/// inventory names no `run_dir`: `$EVAC_STATE_DIR/<name>`, else
/// `$XDG_STATE_HOME/evac/<name>`, else `$HOME/.local/state/evac/<name>`,
/// else `/var/lib/evac/<name>`. Stable across restarts, so that
/// `--resume` finds the journal.
pub fn default_run_dir(name: &str) -> PathBuf {
    let env = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = env("EVAC_STATE_DIR")
        .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("evac")))
        .or_else(|| env("HOME").map(|d| d.join(".local/state/evac")))
        .unwrap_or_else(|| PathBuf::from("/var/lib/evac"));
    base.join(name)
}

/// The journal's path in `run_dir`.
pub fn journal_path(run_dir: &Path) -> PathBuf {
    run_dir.join(journal::FILE_NAME)
}

/// Makes the run dir of inventory `name` (its own `run_dir`, else
/// [`default_run_dir`]) and points `options` at its journal, reading the
/// unfinished run to take up when `options.resume` is set (see
/// [`journal::prepare`]). Every backend calls it before connecting, so that
/// a backend can find the VMs the journal names. Returns the run dir.
pub fn open_run_dir(name: &str, run_dir: Option<&Path>, options: &mut RunOptions) -> anyhow::Result<PathBuf> {
    // The run dir must be the same across restarts: its journal is what
    // `--resume` takes up.
    if run_dir.is_none() && (name.is_empty() || name.contains('/') || name.starts_with('.')) {
        anyhow::bail!(
            "inventory `name` = {name:?} cannot name a run dir (no `/`, no leading `.`): \
             give one with `run_dir`"
        );
    }
    let run_dir = run_dir.map_or_else(|| default_run_dir(name), Path::to_owned);
    std::fs::create_dir_all(&run_dir)
        .map_err(|e| anyhow::anyhow!("cannot create run_dir {}: {e}", run_dir.display()))?;
    let journal = journal_path(&run_dir);
    options.replay = journal::prepare(&journal, options.resume)?;
    options.start = Some(match &options.replay {
        Some(replay) => replay.start(),
        None => Timestamp::now(),
    });
    options.journal = Some(journal);
    Ok(run_dir)
}
