//! The job under way, in [`Stage::Precopy`], [`Stage::Offline`],
//! [`Stage::Postcopy`] or [`Stage::Cancelling`], until the migrate call
//! returns: its progress read every [`POLL`], the handle's requests carried
//! out, a mode-postcopy migration switched once its first pass is done.

use evac_controller::Retune;
use evac_model::BitsPerSec;
use std::time::{Duration, Instant};

use super::task::Task;
use super::{Control, Happened, Stage};
use crate::backend::{CALL_TIMEOUT, POLL};
use crate::client;

/// Whether to go on following the job.
enum Next {
    Follow,
    /// The job is over (the call returned, or aborted for a handle gone).
    Over,
}

impl Task {
    /// Follows the job until the migrate call returns.
    pub(super) async fn follow(&mut self, migration: &mut client::Migration) {
        let mut ticker = tokio::time::interval(POLL);
        let ended = migration.ended();
        loop {
            let next = tokio::select! {
                // The migrate call returned: its end is seen now, not at the
                // next poll.
                () = ended.wait() => Next::Over,
                request = self.control.recv() => self.on_request(migration, request).await,
                _ = ticker.tick() => self.on_poll(migration).await,
            };
            if let Next::Over = next {
                return;
            }
        }
    }

    /// A request of the handle (`None`: it is gone, the run loop no longer
    /// wants this migration: aborted, and waited for).
    async fn on_request(&mut self, migration: &mut client::Migration, request: Option<Control>) -> Next {
        let ctx = &self.ctx;
        match request {
            Some(Control::Retune(change)) => {
                let r = match change {
                    Retune::MaxBandwidth(b) => {
                        migration
                            .set_max_speed(b.map(BitsPerSec::to_bytes_per_sec), CALL_TIMEOUT)
                            .await
                    }
                    Retune::DowntimeLimit(d) => migration.set_max_downtime(d, CALL_TIMEOUT).await,
                    Retune::AutoConverge(_) => {
                        ctx.log("auto-converge is fixed when a libvirt migration starts");
                        Ok(())
                    }
                };
                if let Err(e) = r {
                    ctx.log(format!("retune {change:?}: {e}"));
                }
            }
            Some(Control::Offline) => match migration.suspend(CALL_TIMEOUT).await {
                Ok(()) => self.on(Happened::Paused { at: Instant::now() }),
                Err(e) => ctx.log(format!("pausing for offline: {e}")),
            },
            Some(Control::Postcopy(reply)) => {
                let _ = reply.send(self.switch_to_postcopy(migration).await);
            }
            Some(Control::Cancel) => {
                self.on(Happened::CancelAsked);
                if let Err(e) = migration.abort(CALL_TIMEOUT).await {
                    ctx.log(format!("abort: {e}"));
                }
            }
            None => {
                self.on(Happened::CancelAsked);
                let _ = migration.abort(CALL_TIMEOUT).await;
                let _ = migration.wait(Duration::from_secs(60)).await;
                return Next::Over;
            }
        }
        Next::Follow
    }

    /// Every [`POLL`]: the job's reading (rate, bytes counted to the
    /// source host, the ssh set-up slots released once bytes flow), and a
    /// mode-postcopy migration switched once its first pass is done.
    async fn on_poll(&mut self, migration: &mut client::Migration) -> Next {
        if migration.poll_done().is_some() {
            return Next::Over;
        }
        let Ok(job) = migration.progress(CALL_TIMEOUT).await else {
            return Next::Follow;
        };
        if !job.active {
            return Next::Follow;
        }
        let now = Instant::now();
        let rate = match self.last {
            Some((t, b)) if now > t => {
                BitsPerSec(job.processed.0.saturating_sub(b) as f64 * 8.0 / (now - t).as_secs_f64())
            }
            _ => BitsPerSec(0.0),
        };
        self.last = Some((now, job.processed.0));
        self.count(job.processed);
        if job.total.0 > 0 {
            // Bytes flow: its ssh connections are up.
            self.startup_slots.clear();
        }
        let stage = {
            let mut progress = self.progress.lock().expect("not poisoned");
            progress.measured(job, rate);
            progress.stage()
        };
        // The first pass over memory is done: libvirt counts iterations
        // from 1.
        if self.ctx.auto_postcopy && stage != Stage::Postcopy && job.iteration >= 2 {
            if let Err(e) = self.switch_to_postcopy(migration).await {
                self.ctx.log(format!("switching to postcopy: {e}"));
            }
        }
        Next::Follow
    }

    /// Switches the job to postcopy unless the attempt says why it cannot;
    /// from then on the guest runs at its destination.
    async fn switch_to_postcopy(&self, migration: &client::Migration) -> Result<(), String> {
        if let Some(why) = &self.postcopy_refused {
            return Err(why.clone());
        }
        if self.stage() == Stage::Postcopy {
            return Ok(());
        }
        migration
            .start_postcopy(CALL_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        self.on(Happened::Postcopy);
        Ok(())
    }
}
