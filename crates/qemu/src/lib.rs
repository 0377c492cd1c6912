//! # evac-qemu
//!
//! The real backend of evac: it carries out the sans-IO controller's
//! [`Action`]s on QEMU virtual machines over QMP ([`evac_qmp`]) and feeds it
//! [`Observations`] measured from QEMU, then reports the same
//! [`RunResult`] as the simulator. No policy lives here: the backend only
//! executes actions and measures.
//!
//! ## Entry points
//!
//! ```ignore
//! pub async fn run(
//!     inventory: Inventory,
//!     policy_override: Option<evac_controller::PolicyKind>,
//!     shutdown: impl Future<Output = ()>,
//! ) -> anyhow::Result<evac_report::RunResult>;
//! ```
//!
//! [`run_detailed`] also returns where each VM runs at the end
//! ([`Placement`]), [`run_with_options`] does too and can publish a
//! [`RunProgress`] snapshot every control period on a
//! [`tokio::sync::watch`] channel (the CLI draws progress bars from it; the
//! library draws nothing), and [`run_with_controller`] drives any
//! [`Controller`] (tests use scripted ones). When `shutdown` resolves (the CLI passes
//! Ctrl-C) every migration in flight is cancelled, each VM is left running
//! exactly once (on its source, or at its destination if it completed
//! first), and the partial result is returned; VMs that did not migrate are
//! reported with outcome `lost`, as are VMs whose host's `power_off_at`
//! passed (they are left alone, a migration in flight is cancelled) and VMs
//! that failed `max_attempts` times. A run also stops when, for 20 periods,
//! nothing is in flight and the controller starts nothing while VMs wait
//! (e.g. none fits any destination's `memory`); those VMs are reported lost.
//!
//! ## Inventory ([`Inventory::from_path`])
//!
//! ```toml
//! name = "lab"
//! run_dir = "/var/lib/evac/run"  # optional: destination QMP sockets and logs
//! [controller]                   # evac_controller::ControllerConfig, as in scenarios
//! policy = "aimd-global"
//! period = "1 s"
//! [migration]                    # evac_model::MigrationParams
//! downtime_limit = "300 ms"
//! max_bandwidth = "unlimited"
//! [[host]]
//! name = "src-1"
//! site = "source"
//! nic = "10 Gbps"
//! power_off_at = "10 min"        # optional
//! netns = "evac-src"             # optional: the host is this network namespace
//! [[host]]
//! name = "dst-1"
//! site = "destination"
//! nic = "10 Gbps"
//! memory = "64 GiB"              # optional room for VMs
//! migration_address = "127.0.0.1"
//! incoming_command = "ip netns exec {netns} qemu-system-x86_64"  # default "qemu-system-x86_64"
//! netns = "evac-dst"
//! [[vm]]
//! name = "vm-1"
//! host = "src-1"
//! qmp = "/run/evac/vm-1.qmp"     # unix path or host:port; evac is its only QMP client
//! memory = "256 MiB"             # optional: query-memory-size-summary otherwise
//! priority = 1                   # optional
//! destination = "dst-1"          # optional pin
//! qemu_args = ["-machine", "q35,memory-backend=mem", "-object", "memory-backend-ram,id=mem,size=256M", "-m", "256M"]
//! ```
//!
//! `incoming_command` is split on whitespace; `{host}` (host name),
//! `{netns}`, `{address}` (its `migration_address`) and `{vm}` are replaced.
//! evac appends the VM's `qemu_args` and `-incoming defer -qmp
//! unix:<run_dir>/dst-<vm>-<attempt>.qmp,server=on,wait=off -display none
//! -nodefaults`; the QMP socket must therefore be reachable from this machine
//! (a local process or a network namespace; not `ssh`).
//!
//! ## What an action does
//!
//! - `Start`: spawns a fresh destination QEMU (its own process group, output
//!   in `<run_dir>/dst-<vm>-<attempt>.log`, killed on every failure path),
//!   sets capabilities (`events`, `multifd` when channels > 1) and
//!   `multifd-channels` there, `migrate-incoming tcp:<addr>:0` (QEMU binds
//!   a free port itself, in its own network namespace, and evac reads it
//!   back from the destination's `query-migrate` `socket-address`); on
//!   the source sets `events`, `multifd`, `auto-converge`, `max-bandwidth`
//!   (bytes/s; unlimited = 1 TB/s), `downtime-limit`, `multifd-channels`,
//!   `stop`s the guest in offline mode, and `migrate`s.
//! - `Retune`: `migrate-set-parameters`; `AutoConverge` cannot change
//!   mid-flight (QEMU takes capabilities only before `migrate`): logged and
//!   ignored.
//! - `SwitchToOffline`: `stop` on the source; precopy ends as stop-and-copy.
//!   The downtime recorded for a guest we paused (this, or offline mode) runs
//!   from our `stop` to its resumption at the destination (QEMU's own counts
//!   only its final stop-and-copy).
//! - `Cancel`: `migrate_cancel`; the destination exits by itself and is
//!   reaped; the VM keeps running on its source; reported as failed
//!   (`"cancelled"`).
//! - Completion: the source's `MIGRATION` event `completed` and the
//!   destination's `RESUME` (after a `cont` when the guest was sent paused);
//!   then the source QEMU is `quit`. The destination QEMU is left running: it
//!   is the VM now.
//! - Failure (destination died, migration failed): the source's migration
//!   is brought to its end, the guest resumed there if we paused it, and the
//!   controller told; a retry gets a fresh destination process.
//!
//! Observations are taken every `period` and whenever a migration ends: from
//! the source's `query-migrate`; per source host the cumulative transmit
//! bytes of the non-`lo` interfaces in `/proc/<pid>/net/dev` of one of its
//! QEMU processes when the host has a `netns`, else the sum of its
//! migrations' transferred bytes.
//!
//! The lab (namespaces, shaping, small VMs for tests) is the `evac-lab` crate.

mod attempt;
pub mod inventory;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use evac_controller::{
    Action, Controller, EndOutcome, Ended, Evacuation, MigrationObs, Observations, Phase, PolicyKind,
};
use evac_model::{BitsPerSec, Bytes, BytesPerSec, Fleet, HostId, MigrationParams, Mode, Site, VmId};
use evac_qmp::{MigrationStatus, Qmp};
use evac_report::{reason, Outcome, RunResult, TimelinePoint, VmRecord};
use tokio::sync::{mpsc, watch};

use attempt::{AttemptCtx, AttemptResult, Control, Progress};
pub use inventory::{HostSpec, Inventory, InventoryError, VmSpec};

/// Periods with nothing in flight and nothing started, while VMs wait,
/// after which a run stops.
const STALL_PERIODS: usize = 20;

/// Where a VM runs at the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Still on its source (not migrated, or lost and left alone).
    Source,
    /// At its destination, in a QEMU evac started.
    Destination { host: String, qmp: PathBuf, pid: u32 },
}

/// A run's result and where each VM ended up (in inventory order).
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub result: RunResult,
    pub placements: Vec<Placement>,
}

/// A snapshot of a run, published every control period and once at the end
/// through [`RunOptions::progress`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunProgress {
    /// Since the run started driving migrations.
    pub elapsed: Duration,
    /// VMs in the inventory.
    pub total: usize,
    pub migrated: usize,
    /// Lost for good: their host powered off, or they failed `max_attempts` times.
    pub lost: usize,
    pub in_flight: usize,
    /// Neither done nor in flight.
    pub waiting: usize,
    /// The WAN throughput measured over the last period.
    pub wan_throughput: BitsPerSec,
    /// One per migration in flight, in inventory order.
    pub migrations: Vec<FlightProgress>,
    /// Shutdown was asked for: the migrations in flight are being cancelled.
    pub stopping: bool,
    /// The last snapshot: the run is over and the counts are its result's
    /// (VMs that never migrated count as lost, nothing waits).
    pub finished: bool,
}

/// One migration in flight, as of its last observation.
#[derive(Debug, Clone, PartialEq)]
pub struct FlightProgress {
    pub vm: String,
    pub destination: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub phase: Phase,
    /// Precopy round (QEMU's `dirty-sync-count`), at least 1.
    pub round: u32,
    /// Sent by this attempt so far (rounds after the first send pages again,
    /// so this can exceed `memory`).
    pub bytes_sent: Bytes,
    /// Still to send in the current round.
    pub bytes_remaining: Bytes,
    /// The VM's memory.
    pub memory: Bytes,
    /// This migration's transfer rate as QEMU measures it.
    pub rate: BitsPerSec,
}

/// Where the backend's messages (one line each, no newline) go.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// The default [`Log`]: standard error.
pub fn log_to_stderr() -> Log {
    Arc::new(|line| eprintln!("{line}"))
}

/// How [`run_with_options`] runs.
#[derive(Default)]
pub struct RunOptions {
    /// Replaces the inventory's `[controller]` policy.
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

/// Evacuates the inventory's VMs under its `[controller]` policy (or
/// `policy_override`) until each is migrated or lost, or `shutdown` resolves.
pub async fn run(
    inventory: Inventory,
    policy_override: Option<PolicyKind>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunResult> {
    run_detailed(inventory, policy_override, shutdown)
        .await
        .map(|o| o.result)
}

/// [`run`], also telling where each VM runs at the end.
pub async fn run_detailed(
    inventory: Inventory,
    policy_override: Option<PolicyKind>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunOutput> {
    let options = RunOptions {
        policy: policy_override,
        ..RunOptions::default()
    };
    run_with_options(inventory, options, shutdown).await
}

/// [`run_detailed`] with [`RunOptions`]: a policy override and a channel to
/// publish progress on.
pub async fn run_with_options(
    mut inventory: Inventory,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunOutput> {
    if let Some(policy) = options.policy {
        inventory.controller.policy = policy;
    }
    let config = inventory.controller.clone();
    let params = inventory.migration;
    let mut backend = Backend::connect(inventory).await?;
    backend.progress = options.progress;
    if let Some(log) = options.log {
        backend.log = log;
    }
    let controller = Evacuation::new(backend.fleet.clone(), params, config);
    backend.drive(controller, shutdown).await
}

/// Drives the controller `make` builds for the inventory's fleet.
pub async fn run_with_controller<C, F>(
    inventory: Inventory,
    make: F,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunOutput>
where
    C: Controller,
    F: FnOnce(&Fleet) -> C,
{
    let mut backend = Backend::connect(inventory).await?;
    let controller = make(&backend.fleet);
    backend.drive(controller, shutdown).await
}

struct Flight {
    attempt: u32,
    destination: HostId,
    started_at: Duration,
    params: MigrationParams,
    control: mpsc::UnboundedSender<Control>,
    progress: Arc<Mutex<Progress>>,
    /// `ram.transferred` of the last observation.
    transferred: u64,
    last_obs: Option<MigrationObs>,
    /// Its source host lost power: whatever happens, the VM is lost.
    lost: bool,
}

struct VmRun {
    src: Option<Qmp>,
    src_pid: Option<u32>,
    attempts: u32,
    /// Bytes sent by finished attempts.
    bytes_before: u64,
    flight: Option<Flight>,
    record: VmRecord,
    done: bool,
    placement: Placement,
}

struct Finished {
    vm: usize,
    attempt: u32,
    result: AttemptResult,
}

struct Backend {
    inventory: Inventory,
    fleet: Fleet,
    run_dir: PathBuf,
    vms: Vec<VmRun>,
    host_tx: Vec<u64>,
    start: tokio::time::Instant,
    progress: Option<watch::Sender<RunProgress>>,
    log: Log,
}

impl Backend {
    async fn connect(inventory: Inventory) -> anyhow::Result<Backend> {
        let run_dir = inventory.run_dir.clone().unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            std::env::temp_dir().join(format!("evac-{}-{}-{nanos}", inventory.name, std::process::id()))
        });
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create run_dir {}", run_dir.display()))?;
        let mut vms = Vec::new();
        let mut memory = Vec::new();
        for spec in &inventory.vms {
            let src = Qmp::connect(&spec.qmp)
                .await
                .with_context(|| format!("vm {}: cannot reach its QMP at {}", spec.name, spec.qmp))?;
            // Drop the backlog: each attempt subscribes afresh.
            drop(src.events());
            let size = match spec.memory {
                Some(size) => size,
                None => Bytes(
                    src.query_memory_size_summary()
                        .await
                        .with_context(|| format!("vm {}: query-memory-size-summary", spec.name))?
                        .base_memory,
                ),
            };
            memory.push(size);
            vms.push(VmRun {
                src_pid: src.peer_pid(),
                src: Some(src),
                attempts: 0,
                bytes_before: 0,
                flight: None,
                record: VmRecord::unmoved(spec.name.clone(), spec.host.clone()),
                done: false,
                placement: Placement::Source,
            });
        }
        let fleet = inventory.fleet(&memory);
        Ok(Backend {
            host_tx: vec![0; fleet.hosts.len()],
            fleet,
            run_dir,
            vms,
            inventory,
            start: tokio::time::Instant::now(),
            progress: None,
            log: log_to_stderr(),
        })
    }

    async fn drive<C: Controller>(
        &mut self,
        mut controller: C,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<RunOutput> {
        let period = self.inventory.controller.period.max(Duration::from_millis(10));
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (fin_tx, mut fin_rx) = mpsc::unbounded_channel::<Finished>();
        let mut tasks = tokio::task::JoinSet::new();
        let mut ended: Vec<Ended> = Vec::new();
        let mut timeline = Vec::new();
        let mut last_wan: Option<(Duration, u64)> = None;
        let mut wan_rate = BitsPerSec(0.0);
        let mut stopping = false;
        let mut idle_periods = 0usize;
        tokio::pin!(shutdown);
        self.start = tokio::time::Instant::now();
        loop {
            let mut periodic = false;
            tokio::select! {
                _ = interval.tick() => periodic = true,
                Some(fin) = fin_rx.recv() => self.finish(fin, &mut ended),
                _ = &mut shutdown, if !stopping => {
                    (self.log)("evac-qemu: shutting down: cancelling every migration in flight");
                    stopping = true;
                    for vm in &self.vms {
                        if let Some(flight) = &vm.flight {
                            let _ = flight.control.send(Control::Cancel);
                        }
                    }
                    self.publish(self.start.elapsed(), wan_rate, stopping);
                }
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = joined {
                        anyhow::bail!("a migration task failed: {e}");
                    }
                }
            }
            while let Ok(fin) = fin_rx.try_recv() {
                self.finish(fin, &mut ended);
            }
            let now = self.start.elapsed();
            self.power_offs(now);
            let observations = self.observe(now, std::mem::take(&mut ended)).await;
            if !stopping {
                let actions = controller.on_tick(&observations);
                // Nothing in flight and nothing started for many periods
                // while VMs wait (e.g. none fits any destination): stuck.
                let idle = actions.is_empty() && self.vms.iter().all(|v| v.flight.is_none());
                idle_periods = if idle {
                    idle_periods + usize::from(periodic)
                } else {
                    0
                };
                if idle_periods >= STALL_PERIODS {
                    (self.log)(&format!(
                        "evac-qemu: the controller started nothing for {STALL_PERIODS} periods; \
                         giving up on the VMs still waiting (reported not-migrated)"
                    ));
                    break;
                }
                for action in actions {
                    self.act(action, now, &fin_tx, &mut tasks);
                }
            }
            let in_flight = self.vms.iter().filter(|v| v.flight.is_some()).count();
            if periodic {
                // The counters' own time, not the tick's: reading them can
                // come late (see `observe`).
                let (now, wan) = (observations.now, observations.wan_bytes.0);
                let rate = match last_wan {
                    Some((at, bytes)) if now > at => {
                        (wan.saturating_sub(bytes)) as f64 * 8.0 / (now - at).as_secs_f64()
                    }
                    _ => 0.0,
                };
                last_wan = Some((now, wan));
                timeline.push(TimelinePoint {
                    t_s: now.as_secs_f64(),
                    wan_capacity_bps: None,
                    wan_throughput_bps: rate,
                    in_flight,
                });
                wan_rate = BitsPerSec(rate);
                self.publish(now, wan_rate, stopping);
            }
            if in_flight == 0 && (stopping || self.vms.iter().all(|v| v.done)) {
                break;
            }
        }
        // Every VM still on its source says why: the run was interrupted,
        // or the controller left it.
        let why = if stopping {
            reason::INTERRUPTED
        } else {
            reason::GIVEN_UP
        };
        for run in &mut self.vms {
            run.record.left(Outcome::NotMigrated, why);
        }
        let records = self.vms.iter().map(|v| v.record.clone()).collect();
        let result = RunResult::summarize(
            controller.name(),
            &self.fleet,
            &self.inventory.network(),
            records,
            timeline,
        );
        if let Some(progress) = &self.progress {
            let last = progress.borrow().clone();
            progress.send_replace(RunProgress {
                elapsed: self.start.elapsed(),
                total: self.vms.len(),
                migrated: result.migrated,
                lost: result.lost,
                in_flight: 0,
                waiting: 0,
                migrations: Vec::new(),
                stopping,
                finished: true,
                ..last
            });
        }
        Ok(RunOutput {
            result,
            placements: self.vms.iter().map(|v| v.placement.clone()).collect(),
        })
    }

    /// Publishes a [`RunProgress`] if anyone asked for it.
    fn publish(&self, now: Duration, wan_throughput: BitsPerSec, stopping: bool) {
        let Some(progress) = &self.progress else {
            return;
        };
        let mut snapshot = RunProgress {
            elapsed: now,
            total: self.vms.len(),
            wan_throughput,
            stopping,
            ..RunProgress::default()
        };
        for (index, run) in self.vms.iter().enumerate() {
            match (&run.flight, run.done) {
                (Some(flight), _) => {
                    snapshot.in_flight += 1;
                    let memory = self.fleet.vms[index].memory;
                    let obs = flight.last_obs.as_ref();
                    snapshot.migrations.push(FlightProgress {
                        vm: run.record.name.clone(),
                        destination: self.fleet.host(flight.destination).name.clone(),
                        attempt: flight.attempt,
                        phase: obs.map_or(Phase::Precopy, |o| o.phase),
                        round: obs.map_or(1, |o| o.round),
                        bytes_sent: obs.map_or(Bytes::ZERO, |o| o.bytes_sent),
                        bytes_remaining: obs.map_or(memory, |o| o.bytes_remaining),
                        memory,
                        rate: obs.map_or(BitsPerSec(0.0), |o| o.rate),
                    });
                }
                (None, true) if run.record.outcome == Outcome::Migrated => snapshot.migrated += 1,
                (None, true) => snapshot.lost += 1,
                (None, false) => snapshot.waiting += 1,
            }
        }
        progress.send_replace(snapshot);
    }

    /// VMs whose source host lost power: lost, left alone (a migration in
    /// flight is cancelled).
    fn power_offs(&mut self, now: Duration) {
        for vm in 0..self.vms.len() {
            let host = self.fleet.vms[vm].host;
            let Some(at) = self.fleet.host(host).power_off_at else {
                continue;
            };
            if now < at || self.vms[vm].done {
                continue;
            }
            let run = &mut self.vms[vm];
            match &mut run.flight {
                Some(flight) if !flight.lost => {
                    flight.lost = true;
                    let _ = flight.control.send(Control::Cancel);
                }
                Some(_) => {}
                None => {
                    run.done = true;
                    run.record.left(Outcome::Lost, reason::POWER_OFF);
                }
            }
        }
    }

    fn finish(&mut self, fin: Finished, ended: &mut Vec<Ended>) {
        let now = self.start.elapsed().as_secs_f64();
        let max_attempts = self.inventory.controller.max_attempts;
        let run = &mut self.vms[fin.vm];
        let Some(flight) = run.flight.take_if(|f| f.attempt == fin.attempt) else {
            return;
        };
        let dst_name = self.fleet.host(flight.destination).name.clone();
        let vm = VmId(fin.vm);
        match fin.result {
            AttemptResult::Completed {
                info,
                dst_pid,
                dst_qmp,
            } => {
                let ram = info.ram.unwrap_or_default();
                let start = flight.started_at.as_secs_f64();
                run.bytes_before += ram.transferred;
                run.src = None;
                run.done = true;
                run.record = VmRecord {
                    destination: Some(dst_name.clone()),
                    start_s: Some(start),
                    end_s: Some(now),
                    migration_time_s: Some(now - start),
                    downtime_s: info.downtime.map(|ms| ms as f64 / 1000.0),
                    rounds: Some(ram.dirty_sync_count as u32),
                    bytes_sent: Some(run.bytes_before),
                    outcome: Outcome::Migrated,
                    reason: None,
                    ..run.record.clone()
                };
                run.placement = Placement::Destination {
                    host: dst_name,
                    qmp: dst_qmp,
                    pid: dst_pid,
                };
                // Even a VM "lost" to a power-off that completed first is saved.
                ended.push(Ended {
                    vm,
                    outcome: EndOutcome::Completed,
                });
            }
            AttemptResult::Failed { reason, transferred } => {
                // A cancelled migration's `query-migrate` has no `ram`
                // statistics any more: the attempt may not have read them.
                run.bytes_before += transferred.max(flight.transferred);
                run.record.bytes_sent = Some(run.bytes_before);
                let outcome = if flight.lost {
                    run.done = true;
                    run.record.left(Outcome::Lost, reason::POWER_OFF);
                    EndOutcome::Lost
                } else {
                    if run.attempts >= max_attempts {
                        (self.log)(&format!(
                            "evac-qemu: {}: giving up after {} attempts",
                            run.record.name, run.attempts
                        ));
                        run.done = true;
                        run.record.left(
                            Outcome::NotMigrated,
                            &format!("{}: {reason}", reason::ATTEMPTS_EXHAUSTED),
                        );
                    }
                    EndOutcome::Failed { reason }
                };
                ended.push(Ended { vm, outcome });
            }
        }
    }

    fn act(
        &mut self,
        action: Action,
        now: Duration,
        fin_tx: &mpsc::UnboundedSender<Finished>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        match action {
            Action::Start {
                vm,
                destination,
                params,
            } => {
                let run = &mut self.vms[vm.0];
                let Some(src) = run.src.clone() else {
                    (self.log)(&format!(
                        "evac-qemu: start of {}: its source is gone; ignored",
                        run.record.name
                    ));
                    return;
                };
                if run.flight.is_some() || run.done {
                    (self.log)(&format!(
                        "evac-qemu: start of {}: already in flight or done; ignored",
                        run.record.name
                    ));
                    return;
                }
                let dst_host = self.inventory.hosts[destination.0].clone();
                if dst_host.site != Site::Destination {
                    (self.log)(&format!(
                        "evac-qemu: start of {}: {} is not a destination; ignored",
                        run.record.name, dst_host.name
                    ));
                    return;
                }
                run.attempts += 1;
                let (control, control_rx) = mpsc::unbounded_channel();
                let progress = Arc::new(Mutex::new(Progress::default()));
                let ctx = AttemptCtx {
                    vm: run.record.name.clone(),
                    attempt: run.attempts,
                    src,
                    dst_host,
                    qemu_args: self.inventory.vms[vm.0].qemu_args.clone(),
                    run_dir: self.run_dir.clone(),
                    params,
                    log: self.log.clone(),
                };
                run.flight = Some(Flight {
                    attempt: run.attempts,
                    destination,
                    started_at: now,
                    params,
                    control,
                    progress: progress.clone(),
                    transferred: 0,
                    last_obs: None,
                    lost: false,
                });
                let fin_tx = fin_tx.clone();
                let attempt = run.attempts;
                tasks.spawn(async move {
                    let result = attempt::run_attempt(ctx, control_rx, progress).await;
                    let _ = fin_tx.send(Finished {
                        vm: vm.0,
                        attempt,
                        result,
                    });
                });
            }
            Action::Retune { vm, change } => {
                if let Some(flight) = &mut self.vms[vm.0].flight {
                    match change {
                        evac_controller::Retune::MaxBandwidth(cap) => flight.params.max_bandwidth = cap,
                        evac_controller::Retune::DowntimeLimit(limit) => flight.params.downtime_limit = limit,
                        evac_controller::Retune::AutoConverge(_) => {}
                    }
                    let _ = flight.control.send(Control::Retune(change));
                }
            }
            Action::SwitchToOffline { vm } => {
                if let Some(flight) = &mut self.vms[vm.0].flight {
                    flight.params.mode = Mode::Offline;
                    let _ = flight.control.send(Control::Offline);
                }
            }
            Action::Cancel { vm } => {
                if let Some(flight) = &self.vms[vm.0].flight {
                    let _ = flight.control.send(Control::Cancel);
                }
            }
        }
    }

    async fn observe(&mut self, now: Duration, ended: Vec<Ended>) -> Observations {
        let mut migrations = Vec::new();
        for (index, run) in self.vms.iter_mut().enumerate() {
            let (Some(flight), Some(src)) = (&mut run.flight, &run.src) else {
                continue;
            };
            let (migrating, paused) = {
                let p = flight.progress.lock().unwrap();
                (p.migrating, p.paused_by_us)
            };
            let mut obs = MigrationObs {
                vm: VmId(index),
                destination: flight.destination,
                phase: if paused { Phase::Offline } else { Phase::Precopy },
                round: 1,
                started_at: flight.started_at,
                bytes_sent: Bytes::ZERO,
                bytes_remaining: self.fleet.vms[index].memory,
                rate: BitsPerSec(0.0),
                dirty_rate: BytesPerSec::ZERO,
                params: flight.params,
            };
            if migrating {
                match tokio::time::timeout(Duration::from_secs(2), src.query_migrate()).await {
                    Ok(Ok(info)) => {
                        let ram = info.ram.unwrap_or_default();
                        flight.transferred = flight.transferred.max(ram.transferred);
                        obs.bytes_sent = Bytes(ram.transferred);
                        obs.bytes_remaining = Bytes(ram.remaining);
                        obs.rate = BitsPerSec(ram.mbps * 1e6);
                        obs.dirty_rate = BytesPerSec((ram.dirty_pages_rate * ram.page_size) as f64);
                        obs.round = (ram.dirty_sync_count as u32).max(1);
                        if matches!(
                            info.status,
                            Some(MigrationStatus::Device | MigrationStatus::PreSwitchover)
                        ) {
                            obs.phase = Phase::StopAndCopy;
                        }
                    }
                    _ => {
                        if let Some(last) = &flight.last_obs {
                            obs = MigrationObs {
                                params: flight.params,
                                ..last.clone()
                            };
                        }
                    }
                }
            }
            flight.last_obs = Some(obs.clone());
            migrations.push(obs);
        }
        // The queries above can take a while (a source in stop-and-copy
        // answers late): the counters below are as of now, not as of the
        // tick, and a rate computed with the tick's time would be skewed.
        let now = self.start.elapsed().max(now);
        // Per source host: its NIC's counter in its namespace, or the sum of
        // its migrations' bytes.
        for host in self.fleet.host_ids() {
            let spec = &self.inventory.hosts[host.0];
            if spec.site != Site::Source {
                continue;
            }
            let on_host = self
                .fleet
                .vms
                .iter()
                .enumerate()
                .filter(|(_, v)| v.host == host)
                .map(|(i, _)| i);
            let counted = if spec.netns.is_some() {
                self.fleet
                    .vms
                    .iter()
                    .enumerate()
                    .filter(|(i, v)| {
                        v.host == host && self.vms[*i].src.as_ref().is_some_and(|q| !q.is_closed())
                    })
                    .find_map(|(i, _)| self.vms[i].src_pid.and_then(netns_tx_bytes))
            } else {
                None
            };
            let total = counted.unwrap_or_else(|| {
                on_host
                    .map(|i| {
                        let run = &self.vms[i];
                        run.bytes_before + run.flight.as_ref().map_or(0, |f| f.transferred)
                    })
                    .sum()
            });
            self.host_tx[host.0] = self.host_tx[host.0].max(total);
        }
        let wan = self.fleet.source_hosts().map(|h| self.host_tx[h.0]).sum();
        Observations {
            now,
            ended,
            migrations,
            host_tx: self.host_tx.iter().map(|&b| Bytes(b)).collect(),
            wan_bytes: Bytes(wan),
            tx_changed: None,
        }
    }
}

/// Transmitted bytes of the non-`lo` interfaces in the network namespace of `pid`.
pub fn netns_tx_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    Some(parse_net_dev_tx(&text))
}

/// Sums the transmit bytes (the 9th number) of every interface but `lo`.
pub fn parse_net_dev_tx(text: &str) -> u64 {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            if name.trim() == "lo" {
                return None;
            }
            counters.split_whitespace().nth(8)?.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_tx_bytes_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0
  eth0: 5000 10 0 0 0 0 0 0 7000 20 0 0 0 0 0 0
 veth1: 1 1 0 0 0 0 0 0 300 3 0 0 0 0 0 0
";
        assert_eq!(parse_net_dev_tx(text), 7300);
    }

    #[test]
    fn expands_the_incoming_command() {
        let host = HostSpec {
            name: "dst-1".into(),
            site: Site::Destination,
            nic: BitsPerSec::gbps(1.0),
            memory: None,
            power_off_at: None,
            migration_address: Some("10.0.0.2".into()),
            incoming_command: "ip netns exec {netns} qemu-system-x86_64 -name {vm}@{host}".into(),
            netns: Some("evac-dst".into()),
        };
        assert_eq!(
            attempt::expand_template(&host, "vm-1"),
            [
                "ip",
                "netns",
                "exec",
                "evac-dst",
                "qemu-system-x86_64",
                "-name",
                "vm-1@dst-1"
            ]
        );
        assert_eq!(attempt::bandwidth(None), attempt::UNLIMITED_BYTES_PER_SEC);
        assert_eq!(attempt::bandwidth(Some(BitsPerSec::mbps(80.0))), 10_000_000);
    }
}
