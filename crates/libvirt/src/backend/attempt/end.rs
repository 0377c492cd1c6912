//! The attempt's end, once the migrate call returned: the domain found
//! running at a destination (resumed there if we paused it), what it sent
//! and its downtime, toward [`Stage::Landed`]; or the failure, the domain
//! resumed on its source if we paused it, toward [`Stage::Failed`].
//!
//! [`Stage::Landed`]: super::Stage::Landed
//! [`Stage::Failed`]: super::Stage::Failed

use evac_model::Bytes;
use std::time::{Duration, Instant};

use super::task::Task;
use super::{AttemptCtx, AttemptResult, Happened, Stage};
use crate::backend::{Landed, CALL_TIMEOUT};
use crate::client::{self, ClientError, Conn, JobProgress};

impl Task {
    /// Waits for the migrate call's result (it has returned, or returns
    /// within 5 s) and ends the attempt by it.
    pub(super) async fn end(&mut self, mut migration: client::Migration) -> AttemptResult {
        let outcome = migration.wait(Duration::from_secs(5)).await;
        self.on(Happened::Returned);
        let progress = self.progress();
        let job = progress.job().unwrap_or_default();
        match outcome {
            Ok(()) => self.land(job, progress.paused_at()).await,
            Err(e) => {
                if progress.paused_at().is_some() {
                    if let Err(e) = migration.resume_if_paused(CALL_TIMEOUT).await {
                        self.ctx.log(format!("resuming on its source: {e}"));
                    }
                }
                AttemptResult::Failed {
                    reason: if progress.stage() == Stage::Cancelling {
                        "cancelled".into()
                    } else {
                        e.to_string()
                    },
                    bytes: job.processed,
                }
            }
        }
    }

    /// libvirt said the migration succeeded: the domain must run at a
    /// destination. `job`: the last reading; `paused_at`: when we paused
    /// the guest, if we did.
    async fn land(&mut self, job: JobProgress, paused_at: Option<Instant>) -> AttemptResult {
        let Some((landed, completed)) = find_running(&self.ctx, &self.ctx.request.domain).await else {
            return AttemptResult::Failed {
                reason: "libvirt reported success but no destination runs the domain".into(),
                bytes: job.processed,
            };
        };
        self.on(Happened::Found);
        if std::env::var_os("EVAC_LIBVIRT_STAGES").is_some() {
            self.ctx.log(self.progress().stages().describe());
        }
        // The destination's record of the migration; without it, what was
        // left at the last reading went at the end.
        let (bytes, rounds, downtime) = match completed {
            Some(c) => (
                c.data_processed,
                c.iteration.max(job.iteration),
                Some(Duration::from_millis(c.downtime_ms)),
            ),
            None => (job.processed.0 + job.remaining.0, job.iteration, None),
        };
        self.count(Bytes(bytes));
        let mut downtime = downtime;
        if let Some(paused_at) = paused_at {
            resume_at(&self.ctx, &landed).await;
            downtime = Some(paused_at.elapsed());
        }
        AttemptResult::Completed {
            landed,
            bytes: Bytes(bytes),
            rounds: rounds as u32,
            downtime,
        }
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
async fn resume_at(ctx: &AttemptCtx, landed: &Landed) {
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
