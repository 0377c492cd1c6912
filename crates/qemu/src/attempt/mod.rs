//! One migration attempt: a fresh destination QEMU, the QMP dance on both
//! ends, and watching it to its end. It runs as a task behind its handle
//! through evac-run's `AttemptTask` (the skeleton the backends share); its
//! stages are its own.
//!
//! | module | job |
//! |---|---|
//! | `progress` | what the main loop reads: the attempt's [`Stage`], its transitions in one place |
//! | `start` | what the attempt asks of QEMU, both ends set up, `migrate` |
//! | `watch` | the migration under way to its end: its landing, the main loop's requests |
//! | here | the attempt's context and result, taking one up after a restart, its end (success, or the VM back on its source) |

mod progress;
mod start;
mod watch;

pub(crate) use progress::{Happened, PostcopyReady, Progress, Stage};
use start::drive;
use watch::{Landing, Watch};

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evac_controller::Retune;
use evac_model::{MigrationParams, Mode};
use evac_qmp::{MigrationInfo, MigrationStatus, Qmp, RunState};
use tokio::sync::mpsc;

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

/// The id of the `tls-creds-x509` object evac adds on both ends.
pub(crate) const TLS_CREDS_ID: &str = "evac-migration-tls";

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
#[derive(Default)]
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
    let mut dst = DstProcess::default();
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
    let dst_qmp = connect_destination(&sock).await;
    let mut dst = DstProcess {
        child: None,
        pid: dst_qmp.as_ref().and_then(|q| q.peer_pid()),
    };
    // We paused the guest if it was sent offline.
    let paused_by_us = ctx.params.mode == Mode::Offline;
    if paused_by_us {
        progress.lock().unwrap().on(Happened::Paused);
    }
    let info = ctx.src.query_migrate().await;
    let status = info.as_ref().ok().and_then(|i| i.status);
    let outcome = match (status, &dst_qmp) {
        (Some(MigrationStatus::Completed), Some(dst_qmp)) => match resume_destination(dst_qmp).await {
            Ok(()) => info.map_err(|e| format!("query-migrate: {e}")),
            Err(e) => Err(e),
        },
        (Some(s), Some(dst_qmp)) if !s.is_terminal() && s != MigrationStatus::None => {
            progress.lock().unwrap().on(Happened::Adopted);
            let src_events = ctx.src.events();
            let dst_events = dst_qmp.events();
            Watch {
                ctx: &ctx,
                progress: &progress,
                dst_qmp,
                paused_at: paused_by_us.then(tokio::time::Instant::now),
                landing: Landing::Sending,
            }
            .run(&mut control, &mut dst, src_events, dst_events)
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
    let Some(dst_qmp) = connect_destination(&sock).await else {
        return failed("neither its source nor its destination QEMU answers".into());
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

/// The QMP of a destination found again after a restart of evac, if it
/// answers within 5 s.
async fn connect_destination(sock: &std::path::Path) -> Option<Qmp> {
    match tokio::time::timeout(
        Duration::from_secs(5),
        Qmp::connect(sock.to_str().unwrap_or_default()),
    )
    .await
    {
        Ok(Ok(qmp)) => Some(qmp),
        _ => None,
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
            let (stage, paused_by_us) = {
                let p = progress.lock().unwrap();
                (p.stage(), p.paused_by_us())
            };
            let (cancelled, in_postcopy) = (stage == Stage::Cancelling, stage == Stage::Postcopy);
            let reason = if cancelled {
                "cancelled".to_owned()
            } else {
                explain_tls_failure(ctx.tls.as_ref(), &ctx.dst_host, reason)
            };
            ctx.log(format!("failed: {reason}"));
            let reason = if in_postcopy {
                format!("{reason} (in postcopy: the guest ran at the destination; its source is left paused, the VM is lost)")
            } else {
                reason
            };
            let transferred = recover(&ctx, &mut dst, paused_by_us, in_postcopy).await;
            drop(dst);
            progress.lock().unwrap().on(Happened::Failed);
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

pub(crate) fn bandwidth(cap: Option<evac_model::BitsPerSec>) -> u64 {
    cap.map_or(UNLIMITED_BYTES_PER_SEC, |bits| {
        ((bits.0 / 8.0) as u64).clamp(1, UNLIMITED_BYTES_PER_SEC)
    })
}
