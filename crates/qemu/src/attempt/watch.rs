//! A migration under way watched to its end: how far its landing has come
//! ([`Landing`], an enum with its transitions in one place), the main
//! loop's requests carried out, a poll every 250 ms.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use evac_controller::Retune;
use evac_model::Mode;
use evac_qmp::{MigrationInfo, MigrationParameters, MigrationStatus, Qmp, RunState};
use tokio::sync::{broadcast, mpsc};

use super::progress::{Happened, PostcopyReady, Progress, Stage};
use super::{bandwidth, qmp_err, AttemptCtx, Control, DstProcess};

/// How far the end of a migration under way has come: the source must say
/// it completed and the guest must run at the destination, in either order.
/// Changed only by [`Landing::source_completed`] and
/// [`Landing::destination_running`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Landing {
    /// Neither yet.
    Sending,
    /// The source completed; the destination does not run yet. `since`:
    /// when that was first seen by a poll (the destination has 30 s).
    SourceDone { since: Option<tokio::time::Instant> },
    /// The destination runs (since `at`); the source has not said it
    /// completed.
    Running { at: tokio::time::Instant },
    /// Both: the migration is over, the guest resumed at `at`.
    Landed { at: tokio::time::Instant },
}

impl Landing {
    fn source_completed(self) -> Landing {
        match self {
            Landing::Sending => Landing::SourceDone { since: None },
            Landing::Running { at } => Landing::Landed { at },
            done => done,
        }
    }

    fn destination_running(self) -> Landing {
        let now = tokio::time::Instant::now();
        match self {
            Landing::Sending => Landing::Running { at: now },
            Landing::SourceDone { .. } => Landing::Landed { at: now },
            done => done,
        }
    }

    fn source_done(self) -> bool {
        matches!(self, Landing::SourceDone { .. } | Landing::Landed { .. })
    }
}

/// A migration under way, watched to its end: the source's and the
/// destination's events, the main loop's requests, a poll every 250 ms.
pub(super) struct Watch<'a> {
    pub(super) ctx: &'a AttemptCtx,
    pub(super) progress: &'a Arc<Mutex<Progress>>,
    pub(super) dst_qmp: &'a Qmp,
    /// When we paused the guest (offline, or a switch to it).
    pub(super) paused_at: Option<tokio::time::Instant>,
    pub(super) landing: Landing,
}

impl Watch<'_> {
    pub(super) async fn run(
        mut self,
        control: &mut mpsc::UnboundedReceiver<Control>,
        dst: &mut DstProcess,
        mut src_events: broadcast::Receiver<evac_qmp::Event>,
        mut dst_events: broadcast::Receiver<evac_qmp::Event>,
    ) -> Result<MigrationInfo, String> {
        let src = &self.ctx.src;
        let mut control_open = true;
        let mut poll = tokio::time::interval(Duration::from_millis(250));
        loop {
            let resumed_at = match self.landing {
                Landing::Landed { at } => at,
                _ => {
                    tokio::select! {
                        event = src_events.recv() => self.on_source_event(event).await?,
                        event = dst_events.recv() => match event {
                            Ok(event) if event.name == "RESUME" => {
                                self.landing = self.landing.destination_running();
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
                        request = control.recv(), if control_open => {
                            control_open &= request.is_some();
                            self.on_request(request).await;
                        }
                        _ = poll.tick() => self.on_poll().await?,
                    }
                    continue;
                }
            };
            let mut info = src
                .query_migrate()
                .await
                .map_err(qmp_err("final query-migrate"))?;
            // The guest was down from our `stop` to its resumption at the destination.
            if let Some(paused) = self.paused_at {
                let ms = resumed_at.saturating_duration_since(paused).as_millis() as u64;
                info.downtime = Some(info.downtime.map_or(ms, |qemu| qemu.max(ms)));
            }
            return Ok(info);
        }
    }

    /// A status the source announced or reported: `Err` with the reason
    /// when the migration failed or was cancelled.
    async fn on_source_status(&mut self, status: Option<MigrationStatus>) -> Result<(), String> {
        match status {
            Some(MigrationStatus::Completed) => self.landing = self.landing.source_completed(),
            Some(MigrationStatus::Failed) => return Err(failure_reason(&self.ctx.src).await),
            Some(MigrationStatus::Cancelled) => return Err("cancelled".into()),
            _ => {}
        }
        Ok(())
    }

    async fn on_source_event(
        &mut self,
        event: Result<evac_qmp::Event, broadcast::error::RecvError>,
    ) -> Result<(), String> {
        match event {
            Ok(event) => self.on_source_status(event.migration_status()).await,
            Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
            Err(broadcast::error::RecvError::Closed) => Err("source QMP closed".into()),
        }
    }

    /// A request of the main loop (`None`: it dropped its end, which
    /// cancels as a request does).
    async fn on_request(&mut self, request: Option<Control>) {
        let ctx = self.ctx;
        match request {
            Some(Control::Retune(change)) => retune(ctx, change).await,
            Some(Control::Offline) => match ctx.src.stop().await {
                Ok(()) => {
                    if !self.landing.source_done() {
                        self.paused_at.get_or_insert_with(tokio::time::Instant::now);
                    }
                    self.progress.lock().unwrap().on(Happened::Paused);
                }
                Err(e) => ctx.log(format!("switch to offline: stop failed: {e}")),
            },
            Some(Control::Postcopy) => start_postcopy(ctx, self.progress).await,
            Some(Control::Cancel) | None => {
                let stage = self.progress.lock().unwrap().stage();
                if stage == Stage::Postcopy {
                    if request.is_some() {
                        ctx.log("cannot cancel in postcopy: the guest runs at the destination; the migration goes on to its end");
                    }
                } else if stage != Stage::Cancelling && !self.landing.source_done() {
                    self.progress.lock().unwrap().on(Happened::CancelAsked);
                    if let Err(e) = ctx.src.migrate_cancel().await {
                        ctx.log(format!("migrate_cancel: {e}"));
                    }
                }
            }
        }
    }

    /// Every 250 ms: the source's status (events are the signal; this
    /// catches any that were missed), a postcopy migration switched once
    /// its first pass is done, and after completion the destination
    /// resumed, within 30 s.
    async fn on_poll(&mut self) -> Result<(), String> {
        let ctx = self.ctx;
        if !self.landing.source_done() {
            if let Ok(info) = ctx.src.query_migrate().await {
                // A postcopy migration switches once its first pass over
                // memory is done (the model's "one live round"): QEMU
                // counts a dirty-bitmap sync per pass.
                let synced = info.ram.as_ref().map_or(0, |r| r.dirty_sync_count);
                let in_postcopy = self.progress.lock().unwrap().stage() == Stage::Postcopy;
                if ctx.params.mode == Mode::Postcopy && synced >= 2 && !in_postcopy {
                    start_postcopy(ctx, self.progress).await;
                }
                if matches!(info.status, Some(MigrationStatus::PostcopyActive)) {
                    self.progress.lock().unwrap().on(Happened::Postcopy);
                }
                self.on_source_status(info.status).await?;
            }
        }
        if let Landing::SourceDone { since } = &mut self.landing {
            let since = *since.get_or_insert_with(tokio::time::Instant::now);
            match self.dst_qmp.query_status().await {
                Ok(s) if s.running => self.landing = self.landing.destination_running(),
                // The source was paused when it was sent (offline): resume it here.
                Ok(s)
                    if matches!(
                        s.status,
                        RunState::Paused | RunState::Postmigrate | RunState::Prelaunch
                    ) =>
                {
                    self.dst_qmp
                        .cont()
                        .await
                        .map_err(qmp_err("cont on the destination"))?;
                }
                Ok(_) => {}
                Err(e) => return Err(format!("destination QMP after completion: {e}")),
            }
            if since.elapsed() > Duration::from_secs(30) {
                return Err("the destination did not resume within 30 s of completion".into());
            }
        }
        Ok(())
    }
}

/// `migrate-start-postcopy` on the source, if the attempt is ready for it.
pub(super) async fn start_postcopy(ctx: &AttemptCtx, progress: &Arc<Mutex<Progress>>) {
    let (ready, stage) = {
        let p = progress.lock().unwrap();
        (p.postcopy(), p.stage())
    };
    match ready {
        PostcopyReady::Ready => {}
        PostcopyReady::Refused(why) => return ctx.log(format!("switch to postcopy: {why}")),
        PostcopyReady::Pending => return ctx.log("switch to postcopy: the migration has not begun"),
    }
    if stage == Stage::Postcopy {
        return;
    }
    match ctx.src.execute("migrate-start-postcopy", None).await {
        Ok(_) => {
            ctx.log("switched to postcopy");
            progress.lock().unwrap().on(Happened::Postcopy);
        }
        Err(e) => ctx.log(format!("migrate-start-postcopy: {e}")),
    }
}

/// The destination exits when an incoming migration fails, often before
/// the source has said why (e.g. a certificate it refused): the source's
/// reason, if it gives one within 5 s (a loaded machine), comes first.
pub(super) async fn why_the_destination_left(src: &Qmp, exited: String) -> String {
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

pub(super) async fn failure_reason(src: &Qmp) -> String {
    match src.query_migrate().await {
        Ok(MigrationInfo {
            error_desc: Some(desc),
            ..
        }) => format!("migration failed: {desc}"),
        _ => "migration failed".into(),
    }
}

pub(super) async fn retune(ctx: &AttemptCtx, change: Retune) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_lands_once_both_ends_said_so_in_either_order() {
        let sending = Landing::Sending;
        let done = sending.source_completed();
        assert_eq!(done, Landing::SourceDone { since: None });
        assert!(done.source_done());
        assert!(matches!(done.destination_running(), Landing::Landed { .. }));
        let running = sending.destination_running();
        let Landing::Running { at } = running else {
            panic!("{running:?}")
        };
        assert!(!running.source_done());
        // Landed at the destination's resumption, not the source's word.
        assert_eq!(running.source_completed(), Landing::Landed { at });
        let landed = Landing::Landed { at };
        assert_eq!(landed.source_completed(), landed);
        assert_eq!(landed.destination_running(), landed);
    }
}
