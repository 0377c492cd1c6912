//! One migration attempt: a fresh destination QEMU, the QMP dance on both
//! ends, and watching it to its end.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evac_controller::Retune;
use evac_model::{Connections, MigrationParams, Mode};
use evac_qmp::{
    MigrationCapability, MigrationInfo, MigrationParameters, MigrationStatus, Qmp, RunState, TlsEndpoint,
};
use tokio::sync::{broadcast, mpsc};

use crate::inventory::HostSpec;
use crate::Log;

/// "Unlimited" bandwidth for QEMU: 1 TB/s.
pub(crate) const UNLIMITED_BYTES_PER_SEC: u64 = 1 << 40;

/// A request from the main loop to a running attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Control {
    Retune(Retune),
    Offline,
    Postcopy,
    Cancel,
}

/// Whether an attempt can switch to postcopy.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum PostcopyReady {
    /// Not known yet: the attempt has not reached `migrate`.
    #[default]
    Pending,
    /// `postcopy-ram` is on at both ends.
    Ready,
    /// It cannot, and why.
    Refused(String),
}

/// What the main loop may read of an attempt while it runs.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// `migrate` was accepted: `query-migrate` on the source is this attempt's.
    pub migrating: bool,
    /// When this attempt's `migrate` was accepted, and its source's
    /// network namespace's transmitted bytes then (`None` for an adopted
    /// one): its first rate is measured from there (see `RateMeter`).
    pub migrating_since: Option<(tokio::time::Instant, Option<u64>)>,
    /// We paused the source (offline mode or a switch to offline).
    pub paused_by_us: bool,
    /// A cancel was asked for: however it ends short of completion, it was cancelled.
    pub cancel_asked: bool,
    /// Whether a switch to postcopy is possible.
    pub postcopy: PostcopyReady,
    /// `migrate-start-postcopy` was accepted: the guest runs (or is about
    /// to) at the destination; no cancel, no resuming the source.
    pub in_postcopy: bool,
}

/// The id of the `tls-creds-x509` object evac adds on both ends.
pub(crate) const TLS_CREDS_ID: &str = "evac-migration-tls";

/// The zstd level a compressing migration uses: QEMU's default, the level
/// `evac plan` measures the compression ratio at.
const ZSTD_LEVEL: u32 = 1;

/// An encrypted attempt: each end's certificate directory (as its QEMU
/// sees it) and the name the source checks the destination's certificate
/// against (`None`: the migration address).
#[derive(Debug, Clone)]
pub(crate) struct TlsCtx {
    pub src_dir: PathBuf,
    pub dst_dir: PathBuf,
    pub hostname: Option<String>,
}

pub(crate) struct AttemptCtx {
    pub vm: String,
    pub attempt: u32,
    pub src: Qmp,
    pub dst_host: HostSpec,
    pub qemu_args: Vec<String>,
    pub run_dir: PathBuf,
    pub params: MigrationParams,
    /// `Some`: the migration stream is TLS.
    pub tls: Option<TlsCtx>,
    pub log: Log,
}

impl AttemptCtx {
    fn log(&self, message: impl std::fmt::Display) {
        (self.log)(&format!(
            "evac-qemu: {} (attempt {}): {message}",
            self.vm, self.attempt
        ));
    }
}

#[derive(Debug)]
pub(crate) enum AttemptResult {
    Completed {
        info: Box<MigrationInfo>,
        dst_pid: u32,
        dst_qmp: PathBuf,
    },
    Failed {
        reason: String,
        transferred: u64,
    },
}

/// The destination QEMU: killed on drop unless released. Started by this
/// attempt (`child`), or found again after a restart of evac (`pid`).
struct DstProcess {
    child: Option<tokio::process::Child>,
    pid: Option<u32>,
}

impl DstProcess {
    /// Resolves when a destination we started exits; never for an adopted
    /// one (its QMP closing tells instead).
    async fn exited(&mut self) -> String {
        match &mut self.child {
            Some(child) => {
                let status = child.wait().await;
                format!(
                    "destination QEMU exited ({})",
                    status.map(|s| s.to_string()).unwrap_or_default()
                )
            }
            None => std::future::pending().await,
        }
    }

    /// Whatever becomes of this attempt, the process now is the VM.
    fn release(&mut self) -> Option<u32> {
        let pid = self.child.take().and_then(|c| c.id()).or(self.pid);
        self.pid = None;
        pid
    }
}

impl Drop for DstProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        } else if let Some(pid) = self.pid {
            // SAFETY: kill(2) of the destination QEMU of this attempt, found
            // through its QMP socket (SO_PEERCRED).
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// The QMP socket of an attempt's destination QEMU.
pub(crate) fn dst_socket(run_dir: &std::path::Path, vm: &str, attempt: u32) -> PathBuf {
    run_dir.join(format!("dst-{vm}-{attempt}.qmp"))
}

/// Replaces the placeholders of an `incoming_command`.
pub(crate) fn expand_template(host: &HostSpec, vm: &str) -> Vec<String> {
    host.incoming_command
        .split_whitespace()
        .map(|token| {
            token
                .replace("{host}", &host.name)
                .replace("{netns}", host.netns.as_deref().unwrap_or(""))
                .replace("{address}", host.migration_address.as_deref().unwrap_or(""))
                .replace("{vm}", vm)
        })
        .collect()
}

pub(crate) async fn run_attempt(
    ctx: AttemptCtx,
    mut control: mpsc::UnboundedReceiver<Control>,
    progress: Arc<Mutex<Progress>>,
) -> AttemptResult {
    let mut dst = DstProcess {
        child: None,
        pid: None,
    };
    let sock = dst_socket(&ctx.run_dir, &ctx.vm, ctx.attempt);
    let outcome = drive(&ctx, &sock, &mut control, &progress, &mut dst).await;
    conclude(ctx, sock, outcome, dst, &progress).await
}

/// After a restart of evac: takes up the attempt whose destination listens
/// for QMP at `sock`, wherever it got to. Never migrates the VM again: a
/// migration still under way is watched, a completed one finished, anything
/// else ends as a failure with the VM on its source.
pub(crate) async fn adopt_attempt(
    ctx: AttemptCtx,
    sock: PathBuf,
    mut control: mpsc::UnboundedReceiver<Control>,
    progress: Arc<Mutex<Progress>>,
) -> AttemptResult {
    let mut dst = DstProcess {
        child: None,
        pid: None,
    };
    let dst_qmp = match tokio::time::timeout(
        Duration::from_secs(5),
        Qmp::connect(sock.to_str().unwrap_or_default()),
    )
    .await
    {
        Ok(Ok(qmp)) => Some(qmp),
        _ => None,
    };
    dst.pid = dst_qmp.as_ref().and_then(|q| q.peer_pid());
    // We paused the guest if it was sent offline.
    let paused_by_us = ctx.params.mode == Mode::Offline;
    progress.lock().unwrap().paused_by_us = paused_by_us;
    let info = ctx.src.query_migrate().await;
    let status = info.as_ref().ok().and_then(|i| i.status);
    let outcome = match (status, &dst_qmp) {
        (Some(MigrationStatus::Completed), Some(dst_qmp)) => match resume_destination(dst_qmp).await {
            Ok(()) => info.map_err(|e| format!("query-migrate: {e}")),
            Err(e) => Err(e),
        },
        (Some(s), Some(dst_qmp)) if !s.is_terminal() && s != MigrationStatus::None => {
            progress.lock().unwrap().migrating = true;
            let src_events = ctx.src.events();
            let dst_events = dst_qmp.events();
            let paused_at = paused_by_us.then(tokio::time::Instant::now);
            watch(
                &ctx,
                &mut control,
                &progress,
                &mut dst,
                dst_qmp,
                src_events,
                dst_events,
                paused_at,
            )
            .await
        }
        (_, None) => Err("its destination QEMU is gone (evac was restarted)".into()),
        (status, _) => Err(format!(
            "interrupted by a restart of evac (the source's migration: {status:?})"
        )),
    };
    conclude(ctx, sock, outcome, dst, &progress).await
}

/// After a restart of evac, for a VM whose source is gone (it quit once
/// the migration completed): its destination must be running.
pub(crate) async fn adopt_without_source(sock: PathBuf) -> AttemptResult {
    let failed = |reason: String| AttemptResult::Failed {
        reason,
        transferred: 0,
    };
    let dst_qmp = match tokio::time::timeout(
        Duration::from_secs(5),
        Qmp::connect(sock.to_str().unwrap_or_default()),
    )
    .await
    {
        Ok(Ok(qmp)) => qmp,
        _ => return failed("neither its source nor its destination QEMU answers".into()),
    };
    if let Err(e) = resume_destination(&dst_qmp).await {
        return failed(e);
    }
    AttemptResult::Completed {
        info: Box::new(MigrationInfo {
            status: Some(MigrationStatus::Completed),
            ram: None,
            total_time: None,
            expected_downtime: None,
            downtime: None,
            setup_time: None,
            error_desc: None,
            cpu_throttle_percentage: None,
            socket_address: Vec::new(),
        }),
        dst_pid: dst_qmp.peer_pid().unwrap_or(0),
        dst_qmp: sock,
    }
}

/// The destination of a completed migration runs (resumed if it came paused).
async fn resume_destination(dst_qmp: &Qmp) -> Result<(), String> {
    match dst_qmp.query_status().await {
        Ok(s) if s.running => Ok(()),
        Ok(s)
            if matches!(
                s.status,
                RunState::Paused | RunState::Postmigrate | RunState::Prelaunch
            ) =>
        {
            dst_qmp.cont().await.map_err(qmp_err("cont on the destination"))
        }
        Ok(s) => Err(format!("the destination is {:?}", s.status)),
        Err(e) => Err(format!("destination QMP: {e}")),
    }
}

/// The end of an attempt: released destination and source quit, or the
/// VM back to running on its source.
async fn conclude(
    ctx: AttemptCtx,
    sock: PathBuf,
    outcome: Result<MigrationInfo, String>,
    mut dst: DstProcess,
    progress: &Arc<Mutex<Progress>>,
) -> AttemptResult {
    match outcome {
        Ok(info) => {
            // Released: it is the VM now.
            let dst_pid = dst.release().unwrap_or(0);
            if let Err(e) = ctx.src.quit().await {
                ctx.log(format!("quit on the source failed: {e}"));
            }
            AttemptResult::Completed {
                info: Box::new(info),
                dst_pid,
                dst_qmp: sock,
            }
        }
        Err(reason) => {
            let (paused_by_us, cancelled) = {
                let p = progress.lock().unwrap();
                (p.paused_by_us, p.cancel_asked)
            };
            let reason = if cancelled {
                "cancelled".to_owned()
            } else {
                explain_tls_failure(ctx.tls.as_ref(), &ctx.dst_host, reason)
            };
            ctx.log(format!("failed: {reason}"));
            let in_postcopy = progress.lock().unwrap().in_postcopy;
            let reason = if in_postcopy {
                format!("{reason} (in postcopy: the guest ran at the destination; its source is left paused, the VM is lost)")
            } else {
                reason
            };
            let transferred = recover(&ctx, &mut dst, paused_by_us, in_postcopy).await;
            drop(dst);
            progress.lock().unwrap().migrating = false;
            AttemptResult::Failed { reason, transferred }
        }
    }
}

/// After a failure: the source's migration over, the destination gone, the
/// guest running on the source. Returns the bytes this attempt sent.
async fn recover(ctx: &AttemptCtx, dst: &mut DstProcess, paused_by_us: bool, in_postcopy: bool) -> u64 {
    let src = &ctx.src;
    let began = tokio::time::Instant::now();
    let mut cancelled = false;
    let mut transferred = 0;
    loop {
        match src.query_migrate().await {
            Ok(info) => {
                transferred = info.ram.as_ref().map_or(transferred, |r| r.transferred);
                match info.status {
                    None | Some(MigrationStatus::None) => break,
                    Some(s) if s.is_terminal() => break,
                    _ => {}
                }
            }
            Err(e) => {
                ctx.log(format!("source unreachable while recovering: {e}"));
                break;
            }
        }
        if !cancelled && began.elapsed() > Duration::from_secs(2) {
            let _ = src.migrate_cancel().await;
            cancelled = true;
        }
        if began.elapsed() > Duration::from_secs(30) {
            ctx.log("the source's migration did not end within 30 s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(child) = &mut dst.child {
        // It exits by itself when the incoming migration fails; reap it.
        if tokio::time::timeout(Duration::from_secs(3), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        dst.child = None;
    }
    if in_postcopy {
        // The destination ran the guest: resuming the source would run a
        // stale copy of it.
        return transferred;
    }
    match src.query_status().await {
        Ok(status) if !status.running => {
            if paused_by_us || matches!(status.status, RunState::Postmigrate | RunState::FinishMigrate) {
                if let Err(e) = src.cont().await {
                    ctx.log(format!("cannot resume the source: {e}"));
                }
            }
        }
        Ok(_) => {}
        Err(e) => ctx.log(format!("cannot check the source: {e}")),
    }
    transferred
}

fn qmp_err(what: &str) -> impl Fn(evac_qmp::QmpError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

async fn drive(
    ctx: &AttemptCtx,
    sock: &std::path::Path,
    control: &mut mpsc::UnboundedReceiver<Control>,
    progress: &Arc<Mutex<Progress>>,
    dst: &mut DstProcess,
) -> Result<MigrationInfo, String> {
    let mut params = ctx.params;
    // Postcopy: wanted when the migration is one, or may become one.
    let postcopy = if params.mode == Mode::Postcopy || params.allow_postcopy {
        match crate::postcopy::refusal(&ctx.src, &ctx.vm).await {
            Some(why) if params.mode == Mode::Postcopy => return Err(why),
            Some(why) => PostcopyReady::Refused(why),
            // QEMU 7.2 refuses `postcopy-ram` with `multifd`: a postcopy
            // migration goes over one connection; one that only may switch
            // keeps its connections and cannot.
            None if params.connections > Connections::ONE && params.mode != Mode::Postcopy => PostcopyReady::Refused(format!(
                "vm {}: postcopy unavailable: this migration uses {} multifd connections, and QEMU does not combine postcopy with multifd",
                ctx.vm, params.connections
            )),
            None => {
                if params.connections > Connections::ONE {
                    ctx.log(format!(
                        "postcopy over one connection, not {}: QEMU does not combine postcopy with multifd",
                        params.connections
                    ));
                    params.connections = Connections::ONE;
                }
                PostcopyReady::Ready
            }
        }
    } else {
        PostcopyReady::Refused(format!(
            "vm {}: postcopy unavailable: the migration was not started ready for it ([migration] allow_postcopy is off)",
            ctx.vm
        ))
    };
    let postcopy_ram = postcopy == PostcopyReady::Ready;
    // QEMU compresses only multifd channels: a compressing migration is a
    // multifd one, of one channel if that is all it was given. The
    // controller has made `auto` `zstd` or `none` by now.
    let compress = params.compression == evac_model::Compression::Zstd && !postcopy_ram;
    let multifd = params.connections > Connections::ONE || compress;
    let compression = multifd.then(|| if compress { "zstd" } else { "none" }.to_owned());
    // 1. A fresh destination process.
    let mut command = expand_template(&ctx.dst_host, &ctx.vm);
    if command.is_empty() {
        return Err(format!("host {}: empty incoming_command", ctx.dst_host.name));
    }
    let program = command.remove(0);
    command.extend(ctx.qemu_args.iter().cloned());
    command.extend([
        "-incoming".to_owned(),
        "defer".to_owned(),
        "-qmp".to_owned(),
        format!("unix:{},server=on,wait=off", sock.display()),
        "-display".to_owned(),
        "none".to_owned(),
        "-nodefaults".to_owned(),
    ]);
    let _ = std::fs::remove_file(sock);
    let log_path = ctx.run_dir.join(format!("dst-{}-{}.log", ctx.vm, ctx.attempt));
    let log_file =
        std::fs::File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let child = tokio::process::Command::new(&program)
        .args(&command)
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        // Its own process group: a Ctrl-C at the terminal must not kill VMs.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    dst.child = Some(child);
    let child = dst.child.as_mut().expect("just set");
    // Journaled before the start: found again through this socket after a
    // restart of evac.
    let dst_qmp = tokio::select! {
        qmp = Qmp::connect_retry(sock.to_str().unwrap_or_default(), Duration::from_secs(15)) => {
            qmp.map_err(qmp_err("destination QMP"))?
        }
        status = child.wait() => {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("destination QEMU exited at start ({}): {}", status.map(|s| s.to_string()).unwrap_or_default(), tail.trim()));
        }
    };
    let dst_events = dst_qmp.events();
    // 2. The destination listens.
    let mut caps = vec![(MigrationCapability::Events, true)];
    if multifd {
        caps.push((MigrationCapability::Multifd, true));
    }
    if postcopy_ram {
        caps.push((MigrationCapability::PostcopyRam, true));
    }
    dst_qmp
        .migrate_set_capabilities(&caps)
        .await
        .map_err(qmp_err("destination capabilities"))?;
    if let Some(tls) = &ctx.tls {
        dst_qmp
            .add_tls_creds_x509(TLS_CREDS_ID, &tls.dst_dir.to_string_lossy(), TlsEndpoint::Server)
            .await
            .map_err(|e| {
                format!(
                    "TLS credentials of destination host {} (tls_dir {}): {e}",
                    ctx.dst_host.name,
                    tls.dst_dir.display()
                )
            })?;
    }
    if multifd || ctx.tls.is_some() {
        dst_qmp
            .migrate_set_parameters(&MigrationParameters {
                multifd_channels: multifd.then_some(params.connections.get()),
                tls_creds: ctx.tls.as_ref().map(|_| TLS_CREDS_ID.to_owned()),
                multifd_compression: compression.clone(),
                multifd_zstd_level: compress.then_some(ZSTD_LEVEL),
                ..Default::default()
            })
            .await
            .map_err(qmp_err("destination parameters"))?;
    }
    let address = ctx
        .dst_host
        .migration_address
        .clone()
        .unwrap_or_else(|| "127.0.0.1".into());
    let host_part = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.clone()
    };
    // Port 0: QEMU binds a free port itself, in its own network namespace
    // (where `address` exists; evac's may not have it), with no window for
    // another process to take it between a probe and the bind. The port it
    // bound is in its `query-migrate` reply.
    dst_qmp
        .migrate_incoming(&format!("tcp:{host_part}:0"))
        .await
        .map_err(qmp_err("migrate-incoming"))?;
    let listening = dst_qmp
        .query_migrate()
        .await
        .map_err(qmp_err("query-migrate on the destination"))?;
    let port = listening.listening_port().ok_or_else(|| {
        format!(
            "the destination did not report the port it listens on for {address} \
             (query-migrate socket-address: {:?})",
            listening.socket_address
        )
    })?;
    let uri = format!("tcp:{host_part}:{port}");
    // 3. The source.
    let src = &ctx.src;
    let src_events = src.events();
    caps.push((MigrationCapability::AutoConverge, params.auto_converge));
    if !multifd {
        caps.push((MigrationCapability::Multifd, false));
    }
    // Off unless wanted: a capability set by an earlier attempt stays set.
    if !postcopy_ram {
        caps.push((MigrationCapability::PostcopyRam, false));
    }
    src.migrate_set_capabilities(&caps)
        .await
        .map_err(qmp_err("source capabilities"))?;
    if let Some(tls) = &ctx.tls {
        // A previous attempt's object (same id) may be there: replace it,
        // the certificates may have been renewed since.
        let _ = src.object_del(TLS_CREDS_ID).await;
        src.add_tls_creds_x509(TLS_CREDS_ID, &tls.src_dir.to_string_lossy(), TlsEndpoint::Client)
            .await
            .map_err(|e| {
                format!(
                    "TLS credentials of the source host (tls_dir {}): {e}",
                    tls.src_dir.display()
                )
            })?;
    }
    src.migrate_set_parameters(&MigrationParameters {
        max_bandwidth: Some(bandwidth(params.max_bandwidth)),
        downtime_limit: Some(params.downtime_limit.as_millis() as u64),
        multifd_channels: Some(params.connections.get()),
        tls_creds: ctx.tls.as_ref().map(|_| TLS_CREDS_ID.to_owned()),
        tls_hostname: ctx
            .tls
            .as_ref()
            .map(|tls| tls.hostname.clone().unwrap_or_default()),
        // Set on every multifd attempt: an earlier attempt's setting stays.
        multifd_compression: compression,
        multifd_zstd_level: compress.then_some(ZSTD_LEVEL),
        ..Default::default()
    })
    .await
    .map_err(qmp_err("source parameters"))?;
    // When we paused the guest on the source: QEMU's `downtime` only counts
    // from its own stop for stop-and-copy, not from ours.
    let mut paused_at: Option<tokio::time::Instant> = None;
    if params.mode == Mode::Offline {
        src.stop().await.map_err(qmp_err("stop (offline)"))?;
        paused_at = Some(tokio::time::Instant::now());
        progress.lock().unwrap().paused_by_us = true;
    }
    src.migrate(&uri).await.map_err(qmp_err("migrate"))?;
    {
        let mut p = progress.lock().unwrap();
        p.migrating = true;
        p.migrating_since = Some((
            tokio::time::Instant::now(),
            src.peer_pid().and_then(crate::netns_tx_bytes),
        ));
        p.postcopy = postcopy;
    }
    watch(
        ctx, control, progress, dst, &dst_qmp, src_events, dst_events, paused_at,
    )
    .await
}

/// Watches a migration under way to its end.
#[allow(clippy::too_many_arguments)]
async fn watch(
    ctx: &AttemptCtx,
    control: &mut mpsc::UnboundedReceiver<Control>,
    progress: &Arc<Mutex<Progress>>,
    dst: &mut DstProcess,
    dst_qmp: &Qmp,
    mut src_events: broadcast::Receiver<evac_qmp::Event>,
    mut dst_events: broadcast::Receiver<evac_qmp::Event>,
    mut paused_at: Option<tokio::time::Instant>,
) -> Result<MigrationInfo, String> {
    let src = &ctx.src;
    // 4. Watch it.
    let mut src_done = false;
    let mut resumed = false;
    let mut cancel_asked = false;
    let mut control_open = true;
    let mut completed_at: Option<tokio::time::Instant> = None;
    let mut resumed_at: Option<tokio::time::Instant> = None;
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    loop {
        if src_done && resumed {
            break;
        }
        tokio::select! {
            event = src_events.recv() => match event {
                Ok(event) => match event.migration_status() {
                    Some(MigrationStatus::Completed) => src_done = true,
                    Some(MigrationStatus::Failed) => return Err(failure_reason(src).await),
                    Some(MigrationStatus::Cancelled) => return Err("cancelled".into()),
                    _ => {}
                },
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Err("source QMP closed".into()),
            },
            event = dst_events.recv() => match event {
                Ok(event) if event.name == "RESUME" => {
                    resumed = true;
                    resumed_at.get_or_insert_with(tokio::time::Instant::now);
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    // The destination's QMP closed: it died.
                    let reason = if dst.child.is_some() {
                        dst.exited().await
                    } else {
                        "destination QMP closed (its QEMU exited)".into()
                    };
                    return Err(why_the_destination_left(src, reason).await);
                }
            },
            reason = dst.exited() => return Err(why_the_destination_left(src, reason).await),
            request = control.recv(), if control_open => match request {
                Some(Control::Retune(change)) => retune(ctx, change).await,
                Some(Control::Offline) => {
                    match src.stop().await {
                        Ok(()) => {
                            if !src_done {
                                paused_at.get_or_insert_with(tokio::time::Instant::now);
                            }
                            progress.lock().unwrap().paused_by_us = true;
                        }
                        Err(e) => ctx.log(format!("switch to offline: stop failed: {e}")),
                    }
                }
                Some(Control::Postcopy) => start_postcopy(ctx, progress).await,
                Some(Control::Cancel) | None => {
                    control_open &= request.is_some();
                    if progress.lock().unwrap().in_postcopy {
                        if request.is_some() {
                            ctx.log("cannot cancel in postcopy: the guest runs at the destination; the migration goes on to its end");
                        }
                    } else if !cancel_asked && !src_done {
                        cancel_asked = true;
                        progress.lock().unwrap().cancel_asked = true;
                        if let Err(e) = src.migrate_cancel().await {
                            ctx.log(format!("migrate_cancel: {e}"));
                        }
                    }
                }
            },
            _ = poll.tick() => {
                // Events are the signal; this catches any that were missed.
                if !src_done {
                    if let Ok(info) = src.query_migrate().await {
                        // A postcopy migration switches once its first
                        // pass over memory is done (the model's "one live
                        // round"): QEMU counts a dirty-bitmap sync per pass.
                        let synced = info.ram.as_ref().map_or(0, |r| r.dirty_sync_count);
                        if ctx.params.mode == Mode::Postcopy && synced >= 2 && !progress.lock().unwrap().in_postcopy {
                            start_postcopy(ctx, progress).await;
                        }
                        if matches!(info.status, Some(MigrationStatus::PostcopyActive)) {
                            progress.lock().unwrap().in_postcopy = true;
                        }
                        match info.status {
                            Some(MigrationStatus::Completed) => src_done = true,
                            Some(MigrationStatus::Failed) => return Err(failure_reason(src).await),
                            Some(MigrationStatus::Cancelled) => return Err("cancelled".into()),
                            _ => {}
                        }
                    }
                }
                if src_done && !resumed {
                    let since = *completed_at.get_or_insert_with(tokio::time::Instant::now);
                    match dst_qmp.query_status().await {
                        Ok(s) if s.running => {
                            resumed = true;
                            resumed_at.get_or_insert_with(tokio::time::Instant::now);
                        }
                        // The source was paused when it was sent (offline): resume it here.
                        Ok(s) if matches!(s.status, RunState::Paused | RunState::Postmigrate | RunState::Prelaunch) => {
                            dst_qmp.cont().await.map_err(qmp_err("cont on the destination"))?;
                        }
                        Ok(_) => {}
                        Err(e) => return Err(format!("destination QMP after completion: {e}")),
                    }
                    if since.elapsed() > Duration::from_secs(30) {
                        return Err("the destination did not resume within 30 s of completion".into());
                    }
                }
            }
        }
    }
    let mut info = src
        .query_migrate()
        .await
        .map_err(qmp_err("final query-migrate"))?;
    // The guest was down from our `stop` to its resumption at the destination.
    if let (Some(paused), Some(resumed)) = (paused_at, resumed_at) {
        let ms = resumed.saturating_duration_since(paused).as_millis() as u64;
        info.downtime = Some(info.downtime.map_or(ms, |qemu| qemu.max(ms)));
    }
    Ok(info)
}

/// `migrate-start-postcopy` on the source, if the attempt is ready for it.
async fn start_postcopy(ctx: &AttemptCtx, progress: &Arc<Mutex<Progress>>) {
    let ready = progress.lock().unwrap().postcopy.clone();
    match ready {
        PostcopyReady::Ready => {}
        PostcopyReady::Refused(why) => return ctx.log(format!("switch to postcopy: {why}")),
        PostcopyReady::Pending => return ctx.log("switch to postcopy: the migration has not begun"),
    }
    if progress.lock().unwrap().in_postcopy {
        return;
    }
    match ctx.src.execute("migrate-start-postcopy", None).await {
        Ok(_) => {
            ctx.log("switched to postcopy");
            progress.lock().unwrap().in_postcopy = true;
        }
        Err(e) => ctx.log(format!("migrate-start-postcopy: {e}")),
    }
}

/// The destination exits when an incoming migration fails, often before
/// the source has said why (e.g. a certificate it refused): the source's
/// reason, if it gives one within 5 s (a loaded machine), comes first.
async fn why_the_destination_left(src: &Qmp, exited: String) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match src.query_migrate().await {
            Ok(MigrationInfo {
                status: Some(MigrationStatus::Failed),
                error_desc: Some(desc),
                ..
            }) => return format!("migration failed: {desc} ({exited})"),
            Ok(MigrationInfo { status: Some(s), .. }) if s.is_terminal() => return exited,
            Err(_) => return exited,
            Ok(_) => {}
        }
        if tokio::time::Instant::now() > deadline {
            return exited;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With TLS, a failure QEMU blames on a certificate or the TLS channel
/// gets a hint at what to check.
pub(crate) fn explain_tls_failure(tls: Option<&TlsCtx>, dst_host: &HostSpec, reason: String) -> String {
    let Some(tls) = tls else {
        return reason;
    };
    // Our own setup errors (a credentials directory QEMU cannot load)
    // already name the host and directory.
    let lower = reason.to_lowercase();
    if reason.starts_with("TLS credentials of") || !(lower.contains("certificate") || lower.contains("tls")) {
        return reason;
    }
    let name = tls
        .hostname
        .clone()
        .or_else(|| dst_host.migration_address.clone())
        .unwrap_or_default();
    format!(
        "{reason} [TLS certificate check failed: destination host {}'s server-cert.pem in {} must \
         name `{name}` (its `tls_name`, else its `migration_address`) and both ends' certificates \
         must be signed by the CA in the other's ca-cert.pem (source tls_dir {})]",
        dst_host.name,
        tls.dst_dir.display(),
        tls.src_dir.display()
    )
}

async fn failure_reason(src: &Qmp) -> String {
    match src.query_migrate().await {
        Ok(MigrationInfo {
            error_desc: Some(desc),
            ..
        }) => format!("migration failed: {desc}"),
        _ => "migration failed".into(),
    }
}

pub(crate) fn bandwidth(cap: Option<evac_model::BitsPerSec>) -> u64 {
    cap.map_or(UNLIMITED_BYTES_PER_SEC, |bits| {
        ((bits.0 / 8.0) as u64).clamp(1, UNLIMITED_BYTES_PER_SEC)
    })
}

async fn retune(ctx: &AttemptCtx, change: Retune) {
    let parameters = match change {
        Retune::MaxBandwidth(cap) => MigrationParameters {
            max_bandwidth: Some(bandwidth(cap)),
            ..Default::default()
        },
        Retune::DowntimeLimit(limit) => MigrationParameters {
            downtime_limit: Some(limit.as_millis() as u64),
            ..Default::default()
        },
        Retune::AutoConverge(on) => {
            ctx.log(format!("cannot set auto-converge to {on} mid-flight: QEMU only takes capabilities before `migrate`; ignored"),
            );
            return;
        }
    };
    if let Err(e) = ctx.src.migrate_set_parameters(&parameters).await {
        ctx.log(format!("retune {change:?} failed: {e}"));
    }
}
