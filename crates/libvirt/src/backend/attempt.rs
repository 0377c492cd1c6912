//! One migration attempt: a task owning its own libvirt connection that
//! waits for the hosts' limits, starts the migration, follows its job and
//! carries out the handle's requests ([`LibvirtMigration`]).

use crate::client::{self, ClientError, Conn, JobProgress, MigrateRequest};
use crate::inventory::HostSpec;
use crate::limits;
use evac_controller::{Phase, Retune};
use evac_model::{BitsPerSec, Bytes, Site};
use evac_model::{HostId, MigrationParams};
use evac_run::{Completion, Failure, Log, Observed, Progress, StartRequest, Wake};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::{Gate, Landed, LibvirtBackend, Source, CALL_TIMEOUT, POLL, STAGGER};

/// What an attempt's task needs.
pub(super) struct AttemptCtx {
    source_gate: Gate,
    destination_gate: Gate,
    /// The two hosts as the inventory has them: what a failure is
    /// explained with ([`limits::explain`]).
    source_spec: HostSpec,
    destination_spec: HostSpec,
    source_uri: String,
    source_host: usize,
    /// Every destination host (name, uri): where a completed domain is
    /// looked for (an adopted migration may go to any of them).
    destinations: Vec<(String, String)>,
    request: MigrateRequest,
    migrated: Arc<Mutex<Vec<u64>>>,
    next_start: Arc<tokio::sync::Mutex<tokio::time::Instant>>,
    log: Log,
    adopt_only: bool,
    /// Mode postcopy: switch by itself once the first pass over memory is
    /// done (the model's one live round), as the QEMU backend does.
    auto_postcopy: bool,
}

/// A request to an attempt's task.
pub(super) enum Control {
    Retune(Retune),
    Offline,
    /// Switch to postcopy; the answer says whether libvirt did.
    Postcopy(oneshot::Sender<Result<(), String>>),
    Cancel,
}

/// When an attempt passed each of its stages, from its task's start: what
/// a migration's time is made of beyond its bytes (docs/libvirt.md, "Where
/// a migration's time goes"). Logged per attempt with
/// `EVAC_LIBVIRT_STAGES=1`; the setup probe reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Stages {
    /// The migrate call made (connected to the source, the domain looked
    /// up, its speed and downtime limit set).
    pub called: Option<Duration>,
    /// The first poll (every 500 ms) that saw bytes to send: the
    /// destination's QEMU runs and the stream is up.
    pub bytes_seen: Option<Duration>,
    /// The migrate call returned (the destination's finish and the
    /// source's confirm done).
    pub returned: Option<Duration>,
    /// The domain found running at its destination: the attempt's end.
    pub found: Option<Duration>,
}

impl Stages {
    /// One line: each stage's time from the attempt's start.
    pub fn describe(&self) -> String {
        let at =
            |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
        format!(
            "migrate call made at {}, bytes seen at {}, call returned at {}, found at its destination at {}",
            at(self.called),
            at(self.bytes_seen),
            at(self.returned),
            at(self.found)
        )
    }
}

/// What the task last measured.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Shared {
    progress: Option<JobProgress>,
    rate: BitsPerSec,
    paused_by_us: bool,
    /// When we paused the guest: a guest we paused is down from then until
    /// it runs at its destination (libvirt counts only the final switch).
    paused_at: Option<Instant>,
    /// Switched to postcopy: the guest runs at the destination; no cancel.
    in_postcopy: bool,
    /// When the attempt's task started, and its stages since.
    begun: Option<Instant>,
    pub(super) stages: Stages,
}

impl Shared {
    fn mark(&mut self, stage: fn(&mut Stages) -> &mut Option<Duration>) {
        if let Some(begun) = self.begun {
            let slot = stage(&mut self.stages);
            if slot.is_none() {
                *slot = Some(begun.elapsed());
            }
        }
    }
}

pub(super) enum AttemptResult {
    Completed {
        landed: Landed,
        bytes: Bytes,
        rounds: u32,
        downtime: Option<Duration>,
    },
    Failed {
        reason: String,
        bytes: Bytes,
    },
}

pub(super) async fn run_attempt(
    mut ctx: AttemptCtx,
    mut control: mpsc::UnboundedReceiver<Control>,
    shared: Arc<Mutex<Shared>>,
) -> AttemptResult {
    shared.lock().expect("not poisoned").begun = Some(Instant::now());
    // An adopted migration runs already: it waits for nothing.
    let (_slots, mut startup_slots) = if ctx.adopt_only {
        (Vec::new(), Vec::new())
    } else {
        match wait_for_slots(&mut ctx, &mut control, &shared).await {
            Ok(slots) => slots,
            Err(result) => return result,
        }
    };
    let (source, destination) = (ctx.source_spec.clone(), ctx.destination_spec.clone());
    let result = attempt(ctx, &mut control, &shared, &mut startup_slots).await;
    match result {
        AttemptResult::Failed { reason, bytes } => AttemptResult::Failed {
            reason: match limits::explain(&reason, &source, &destination) {
                Some(limit) => format!("{reason} ({limit})"),
                None => reason,
            },
            bytes,
        },
        done => done,
    }
}

/// Waits (reported as starting) until the attempt's hosts have a slot for
/// it: a migration out of its source, one into its destination, and where
/// ssh is in the way, a connection set up to each. Retunes and a switch to
/// offline that come meanwhile change what will be started; a cancel (or
/// the run loop dropping the handle) ends the attempt before it began.
pub(super) async fn wait_for_slots(
    ctx: &mut AttemptCtx,
    control: &mut mpsc::UnboundedReceiver<Control>,
    shared: &Arc<Mutex<Shared>>,
) -> Result<(Vec<OwnedSemaphorePermit>, Vec<OwnedSemaphorePermit>), AttemptResult> {
    // Always the source's before the destination's: no two attempts can
    // each hold what the other waits for.
    let semaphores = |pick: fn(&Gate) -> &Option<Arc<Semaphore>>| -> Vec<Arc<Semaphore>> {
        [&ctx.source_gate, &ctx.destination_gate]
            .into_iter()
            .filter_map(|g| pick(g).clone())
            .collect()
    };
    let wanted = [semaphores(|g| &g.migrations), semaphores(|g| &g.startups)];
    let mut held: [Vec<OwnedSemaphorePermit>; 2] = [Vec::new(), Vec::new()];
    for (kind, list) in wanted.into_iter().enumerate() {
        for semaphore in list {
            let permit = loop {
                tokio::select! {
                    permit = semaphore.clone().acquire_owned() => break permit.expect("never closed"),
                    request = control.recv() => match request {
                        Some(Control::Retune(Retune::MaxBandwidth(b))) => {
                            ctx.request.max_bandwidth = b.map(BitsPerSec::to_bytes_per_sec);
                        }
                        Some(Control::Retune(Retune::DowntimeLimit(d))) => ctx.request.downtime_limit = d,
                        Some(Control::Retune(Retune::AutoConverge(on))) => ctx.request.auto_converge = on,
                        Some(Control::Offline) => {
                            ctx.request.offline = true;
                            let mut s = shared.lock().expect("not poisoned");
                            s.paused_by_us = true;
                            s.paused_at = Some(Instant::now());
                        }
                        Some(Control::Postcopy(reply)) => {
                            let _ = reply.send(Err("not started yet (waiting for a host's limit)".into()));
                        }
                        Some(Control::Cancel) | None => {
                            return Err(AttemptResult::Failed {
                                reason: "cancelled before it started (it was waiting for a host's limit)".into(),
                                bytes: Bytes::ZERO,
                            })
                        }
                    },
                }
            };
            held[kind].push(permit);
        }
    }
    let [slots, startups] = held;
    Ok((slots, startups))
}

/// The attempt proper, once its hosts have room for it.
pub(super) async fn attempt(
    ctx: AttemptCtx,
    control: &mut mpsc::UnboundedReceiver<Control>,
    shared: &Arc<Mutex<Shared>>,
    startup_slots: &mut Vec<OwnedSemaphorePermit>,
) -> AttemptResult {
    let domain = ctx.request.domain.clone();
    // Why a switch to postcopy would be refused (`None`: ready for it).
    let mut postcopy_refused: Option<String> = None;
    {
        let mut next = ctx.next_start.lock().await;
        let at = (*next).max(tokio::time::Instant::now());
        *next = at + STAGGER;
        drop(next);
        tokio::time::sleep_until(at).await;
    }
    if ctx.request.offline {
        let mut s = shared.lock().expect("not poisoned");
        s.paused_by_us = true;
        s.paused_at = Some(Instant::now());
    }
    let started = if ctx.adopt_only {
        if let Some((landed, completed)) = find_running(&ctx, &domain).await {
            (ctx.log)(&format!(
                "{domain}: the earlier evac's migration completed: runs on {}",
                landed.host
            ));
            return AttemptResult::Completed {
                landed,
                bytes: Bytes(completed.map_or(0, |c| c.data_processed)),
                rounds: completed.map_or(0, |c| c.iteration as u32),
                downtime: completed.map(|c| Duration::from_millis(c.downtime_ms)),
            };
        }
        match client::Migration::find(&ctx.source_uri, &domain, CALL_TIMEOUT).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => {
                return AttemptResult::Failed {
                    reason: "the earlier evac's migration is not running (the domain is still on its source)"
                        .into(),
                    bytes: Bytes::ZERO,
                }
            }
            Err(e) => Err(e),
        }
    } else {
        let mut request = ctx.request.clone();
        if request.postcopy {
            match client::postcopy_obstacle(&ctx.source_uri, &domain, CALL_TIMEOUT).await {
                Ok(None) => {}
                Ok(Some(why)) if ctx.auto_postcopy => {
                    return AttemptResult::Failed {
                        reason: format!("postcopy refused: {why}; postcopy needs anonymous, private memory"),
                        bytes: Bytes::ZERO,
                    }
                }
                Ok(Some(why)) => {
                    // Started without it: a later switch is refused.
                    postcopy_refused = Some(format!("postcopy refused: {why}"));
                    request.postcopy = false;
                }
                Err(e) => {
                    postcopy_refused = Some(format!(
                        "postcopy refused: cannot read the domain's definition: {e}"
                    ));
                    request.postcopy = false;
                }
            }
        } else {
            postcopy_refused = Some(
                "postcopy unavailable: the migration was not started ready for it ([migration] allow_postcopy is off)"
                    .into(),
            );
        }
        client::Migration::start(&ctx.source_uri, request, CALL_TIMEOUT).await
    };
    let mut migration = match started {
        Ok(m) => m,
        Err(e) => {
            // Gone from its source: an earlier evac may have moved it.
            if let Some((landed, _)) = find_running(&ctx, &domain).await {
                (ctx.log)(&format!("{domain}: already runs on {}", landed.host));
                return AttemptResult::Completed {
                    landed,
                    bytes: Bytes::ZERO,
                    rounds: 0,
                    downtime: None,
                };
            }
            return AttemptResult::Failed {
                reason: format!("cannot start: {e}"),
                bytes: Bytes::ZERO,
            };
        }
    };
    if migration.adopted() {
        (ctx.log)(&format!("{domain}: adopted the migration already running"));
    }
    shared.lock().expect("not poisoned").mark(|s| &mut s.called);
    let mut cancelled = false;
    let mut counted = 0u64;
    let mut last: Option<(Instant, u64)> = None;
    let mut ticker = tokio::time::interval(POLL);
    let ended = migration.ended();
    loop {
        tokio::select! {
            // The migrate call returned: its end is seen now, not at the
            // next poll.
            () = ended.wait() => break,
            request = control.recv() => match request {
                Some(Control::Retune(change)) => {
                    let r = match change {
                        Retune::MaxBandwidth(b) => {
                            migration.set_max_speed(b.map(BitsPerSec::to_bytes_per_sec), CALL_TIMEOUT).await
                        }
                        Retune::DowntimeLimit(d) => migration.set_max_downtime(d, CALL_TIMEOUT).await,
                        Retune::AutoConverge(_) => {
                            (ctx.log)(&format!("{domain}: auto-converge is fixed when a libvirt migration starts"));
                            Ok(())
                        }
                    };
                    if let Err(e) = r {
                        (ctx.log)(&format!("{domain}: retune {change:?}: {e}"));
                    }
                }
                Some(Control::Offline) => match migration.suspend(CALL_TIMEOUT).await {
                    Ok(()) => {
                        let mut s = shared.lock().expect("not poisoned");
                        s.paused_by_us = true;
                        s.paused_at = Some(Instant::now());
                    }
                    Err(e) => (ctx.log)(&format!("{domain}: pausing for offline: {e}")),
                },
                Some(Control::Postcopy(reply)) => {
                    let _ = reply.send(switch_to_postcopy(&migration, postcopy_refused.as_deref(), shared).await);
                }
                Some(Control::Cancel) => {
                    cancelled = true;
                    if let Err(e) = migration.abort(CALL_TIMEOUT).await {
                        (ctx.log)(&format!("{domain}: abort: {e}"));
                    }
                }
                // The handle is gone: the loop no longer wants this one.
                None => {
                    cancelled = true;
                    let _ = migration.abort(CALL_TIMEOUT).await;
                    let _ = migration.wait(Duration::from_secs(60)).await;
                    break;
                }
            },
            _ = ticker.tick() => {
                if migration.poll_done().is_some() {
                    break;
                }
                if let Ok(p) = migration.progress(CALL_TIMEOUT).await {
                    if p.active {
                        let now = Instant::now();
                        let rate = match last {
                            Some((t, b)) if now > t => {
                                BitsPerSec(p.processed.0.saturating_sub(b) as f64 * 8.0 / (now - t).as_secs_f64())
                            }
                            _ => BitsPerSec(0.0),
                        };
                        last = Some((now, p.processed.0));
                        count(&ctx, &mut counted, p.processed.0);
                        if p.total.0 > 0 {
                            // Bytes flow: its ssh connections are up.
                            startup_slots.clear();
                        }
                        let switch_now = {
                            let mut s = shared.lock().expect("not poisoned");
                            if p.total.0 > 0 {
                                s.mark(|s| &mut s.bytes_seen);
                            }
                            s.progress = Some(p);
                            s.rate = rate;
                            // The first pass over memory is done: libvirt
                            // counts iterations from 1.
                            ctx.auto_postcopy && !s.in_postcopy && p.iteration >= 2
                        };
                        if switch_now {
                            if let Err(e) = switch_to_postcopy(&migration, postcopy_refused.as_deref(), shared).await {
                                (ctx.log)(&format!("{domain}: switching to postcopy: {e}"));
                            }
                        }
                    }
                }
            }
        }
    }
    let outcome = migration.wait(Duration::from_secs(5)).await;
    shared.lock().expect("not poisoned").mark(|s| &mut s.returned);
    let progress = shared.lock().expect("not poisoned").progress.unwrap_or_default();
    let (paused_by_us, paused_at) = {
        let s = shared.lock().expect("not poisoned");
        (s.paused_by_us, s.paused_at)
    };
    match outcome {
        Ok(()) => match find_running(&ctx, &domain).await {
            Some((landed, completed)) => {
                let stages = {
                    let mut s = shared.lock().expect("not poisoned");
                    s.mark(|s| &mut s.found);
                    s.stages
                };
                if std::env::var_os("EVAC_LIBVIRT_STAGES").is_some() {
                    (ctx.log)(&format!("{domain}: {}", stages.describe()));
                }
                // The destination's record of the migration; without it,
                // what was left at the last reading went at the end.
                let (bytes, rounds, downtime) = match completed {
                    Some(c) => (
                        c.data_processed,
                        c.iteration.max(progress.iteration),
                        Some(Duration::from_millis(c.downtime_ms)),
                    ),
                    None => (
                        progress.processed.0 + progress.remaining.0,
                        progress.iteration,
                        None,
                    ),
                };
                count(&ctx, &mut counted, bytes);
                let mut downtime = downtime;
                if paused_by_us {
                    resume_at(&ctx, &landed).await;
                    downtime = paused_at.map(|t| t.elapsed()).or(downtime);
                }
                AttemptResult::Completed {
                    landed,
                    bytes: Bytes(bytes),
                    rounds: rounds as u32,
                    downtime,
                }
            }
            None => AttemptResult::Failed {
                reason: "libvirt reported success but no destination runs the domain".into(),
                bytes: progress.processed,
            },
        },
        Err(e) => {
            if paused_by_us {
                if let Err(e) = migration.resume_if_paused(CALL_TIMEOUT).await {
                    (ctx.log)(&format!("{domain}: resuming on its source: {e}"));
                }
            }
            AttemptResult::Failed {
                reason: if cancelled {
                    "cancelled".into()
                } else {
                    e.to_string()
                },
                bytes: progress.processed,
            }
        }
    }
}

/// Switches `migration` to postcopy unless `refused` says why it cannot;
/// from then on the guest runs at its destination.
pub(super) async fn switch_to_postcopy(
    migration: &client::Migration,
    refused: Option<&str>,
    shared: &Arc<Mutex<Shared>>,
) -> Result<(), String> {
    if let Some(why) = refused {
        return Err(why.to_owned());
    }
    if shared.lock().expect("not poisoned").in_postcopy {
        return Ok(());
    }
    migration
        .start_postcopy(CALL_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    shared.lock().expect("not poisoned").in_postcopy = true;
    Ok(())
}

/// Adds what this attempt sent since it was last counted to its source
/// host's migration bytes.
pub(super) fn count(ctx: &AttemptCtx, counted: &mut u64, processed: u64) {
    if processed > *counted {
        ctx.migrated.lock().expect("not poisoned")[ctx.source_host] += processed - *counted;
        *counted = processed;
    }
}

/// The destination host `domain` runs on (running or paused), if any,
/// with the statistics of its last completed job there (the migration).
pub(super) async fn find_running(
    ctx: &AttemptCtx,
    domain: &str,
) -> Option<(Landed, Option<crate::raw::JobStats>)> {
    for (name, uri) in &ctx.destinations {
        let uri = uri.clone();
        let d = domain.to_owned();
        let found = client::call(CALL_TIMEOUT, move || {
            let conn = Conn::open_blocking(&uri)?;
            match virt::domain::Domain::lookup_by_name(&conn.0, &d) {
                Ok(dom) if dom.is_active().unwrap_or(false) => {
                    Ok(Some(crate::raw::completed_job_stats(&dom).ok()))
                }
                _ => Ok(None),
            }
        })
        .await;
        if let Ok(Some(stats)) = found {
            let landed = Landed {
                host: name.clone(),
                domain: domain.to_owned(),
            };
            return Some((landed, stats.filter(|s| s.data_processed > 0)));
        }
    }
    None
}

/// Resumes at its destination a guest we paused (offline), which libvirt
/// leaves paused there.
pub(super) async fn resume_at(ctx: &AttemptCtx, landed: &Landed) {
    let Some((_, uri)) = ctx.destinations.iter().find(|(n, _)| *n == landed.host) else {
        return;
    };
    let uri = uri.clone();
    let d = landed.domain.clone();
    let r: Result<(), ClientError> = client::call(CALL_TIMEOUT, move || {
        let conn = Conn::open_blocking(&uri)?;
        let dom = virt::domain::Domain::lookup_by_name(&conn.0, &d)?;
        if let Ok((state, _)) = dom.get_state() {
            if state == virt::sys::VIR_DOMAIN_PAUSED {
                dom.resume()?;
            }
        }
        Ok(())
    })
    .await;
    if let Err(e) = r {
        (ctx.log)(&format!("{}: resuming at {}: {e}", landed.domain, landed.host));
    }
}

/// One attempt in flight: its task's control channel and result.
pub struct LibvirtMigration {
    control: mpsc::UnboundedSender<Control>,
    shared: Arc<Mutex<Shared>>,
    result: oneshot::Receiver<AttemptResult>,
}

impl LibvirtMigration {
    /// Waits at most `timeout` for the attempt's end, with its stages;
    /// `None` past it (the handle is dropped: its task aborts the
    /// migration, as when the run loop drops one).
    pub(super) async fn finish_within(mut self, timeout: Duration) -> Option<(AttemptResult, Stages)> {
        let result = tokio::time::timeout(timeout, &mut self.result).await.ok()?.ok()?;
        let stages = self.shared.lock().expect("not poisoned").stages;
        Some((result, stages))
    }
}

impl evac_run::Migration for LibvirtMigration {
    type Landed = Landed;

    async fn observe(&mut self) -> Result<Observed<Landed>, String> {
        match self.result.try_recv() {
            Ok(AttemptResult::Completed {
                landed,
                bytes,
                rounds,
                downtime,
            }) => {
                return Ok(Observed::Completed(Completion {
                    bytes_sent: bytes,
                    rounds: rounds.max(1),
                    downtime,
                    landed,
                }))
            }
            Ok(AttemptResult::Failed { reason, bytes }) => {
                return Ok(Observed::Failed(Failure {
                    reason,
                    bytes_sent: bytes,
                }))
            }
            Err(oneshot::error::TryRecvError::Closed) => {
                return Ok(Observed::Failed(Failure {
                    reason: "the migration task ended without a result".into(),
                    bytes_sent: Bytes::ZERO,
                }))
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let s = *self.shared.lock().expect("not poisoned");
        let Some(p) = s.progress.filter(|p| p.total.0 > 0) else {
            return Ok(Observed::Starting);
        };
        let phase = if s.in_postcopy {
            Phase::Postcopy
        } else if s.paused_by_us {
            Phase::Offline
        } else {
            Phase::Precopy
        };
        Ok(Observed::Running(Progress {
            phase,
            round: (p.iteration as u32).max(1),
            bytes_sent: p.processed,
            bytes_remaining: p.remaining,
            rate: s.rate,
            dirty_rate: p.dirty_rate,
        }))
    }

    async fn retune(&mut self, change: Retune) -> Result<(), String> {
        let _ = self.control.send(Control::Retune(change));
        Ok(())
    }

    async fn switch_to_offline(&mut self) -> Result<(), String> {
        let _ = self.control.send(Control::Offline);
        Ok(())
    }

    async fn switch_to_postcopy(&mut self) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        let _ = self.control.send(Control::Postcopy(reply));
        match tokio::time::timeout(CALL_TIMEOUT + POLL, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the migration ended before it could switch".into()),
            Err(_) => Err(format!("no answer within {} s", (CALL_TIMEOUT + POLL).as_secs())),
        }
    }

    async fn cancel(&mut self) -> Result<(), String> {
        if self.shared.lock().expect("not poisoned").in_postcopy {
            return Err("in postcopy: the guest runs at its destination and cannot go back".into());
        }
        let _ = self.control.send(Control::Cancel);
        Ok(())
    }
}

impl LibvirtBackend {
    /// Starts an attempt's task; `adopt_only`: follow a migration already
    /// started, never start one.
    pub(super) fn spawn(&mut self, request: StartRequest, adopt_only: bool) -> LibvirtMigration {
        let source = self.sources[request.vm.0].clone();
        self.spawn_for(
            source,
            request.destination,
            request.params,
            request.wake,
            adopt_only,
        )
    }

    /// Starts an attempt's task for `source`'s domain, a fleet VM's or a
    /// probe's ([`super::probe`]): the same request, flags and limits.
    pub(super) fn spawn_for(
        &mut self,
        source: Source,
        destination: HostId,
        params: MigrationParams,
        wake: Wake,
        adopt_only: bool,
    ) -> LibvirtMigration {
        let src_host = &self.inventory.hosts[source.host.0];
        let dst_host = &self.inventory.hosts[destination.0];
        let migrate = MigrateRequest {
            domain: source.domain.clone(),
            destination_uri: dst_host.peer_uri().to_owned(),
            migration_uri: dst_host.migration_address.as_ref().map(|a| format!("tcp://{a}")),
            max_bandwidth: params.max_bandwidth.map(BitsPerSec::to_bytes_per_sec),
            parallel_connections: params.connections.get(),
            auto_converge: params.auto_converge,
            downtime_limit: params.downtime_limit,
            tls: self.inventory.migration.tls,
            tls_destination: dst_host.tls_name.clone(),
            copy_storage: self.inventory.migration.copy_storage,
            offline: params.mode == evac_model::Mode::Offline,
            postcopy: params.allow_postcopy || params.mode == evac_model::Mode::Postcopy,
        };
        let destinations = self
            .inventory
            .hosts
            .iter()
            .filter(|h| h.site == Site::Destination)
            .map(|h| (h.name.clone(), h.uri.clone()))
            .collect();
        let ctx = AttemptCtx {
            source_gate: self.gates[source.host.0].clone(),
            destination_gate: self.gates[destination.0].clone(),
            source_spec: src_host.clone(),
            destination_spec: dst_host.clone(),
            source_uri: src_host.uri.clone(),
            source_host: source.host.0,
            destinations,
            request: migrate,
            migrated: self.migrated.clone(),
            next_start: self.next_start.clone(),
            log: self.log.clone(),
            adopt_only,
            auto_postcopy: params.mode == evac_model::Mode::Postcopy,
        };
        let (control, control_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (result_tx, result) = oneshot::channel();
        let task_shared = shared.clone();
        tokio::spawn(async move {
            let result = run_attempt(ctx, control_rx, task_shared).await;
            let _ = result_tx.send(result);
            wake.wake();
        });
        LibvirtMigration {
            control,
            shared,
            result,
        }
    }
}
