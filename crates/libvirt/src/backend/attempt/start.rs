//! Before the job runs: the stages [`Stage::WaitingForSlots`] (the hosts'
//! slots, while retunes and a switch to offline change what will be
//! started), [`Stage::Staggered`] (starts [`STAGGER`] apart), then
//! [`Stage::Starting`] (postcopy checked, the migrate call made) or, after a
//! restart of evac, [`Stage::Adopting`] (the earlier evac's migration found
//! landed or taken up, never started again).
//!
//! [`Stage::WaitingForSlots`]: super::Stage::WaitingForSlots
//! [`Stage::Staggered`]: super::Stage::Staggered
//! [`Stage::Starting`]: super::Stage::Starting
//! [`Stage::Adopting`]: super::Stage::Adopting

use evac_controller::Retune;
use evac_model::{BitsPerSec, Bytes};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::end::find_running;
use super::task::Task;
use super::{AttemptResult, Control, Happened};
use crate::backend::{Gate, CALL_TIMEOUT, STAGGER};
use crate::client::{self, ClientError};

impl Task {
    /// [`Stage::WaitingForSlots`]: waits (reported as starting) until the
    /// attempt's hosts have a slot for it: a migration out of its source,
    /// one into its destination, and where ssh is in the way, a connection
    /// set up to each. Retunes and a switch to offline that come meanwhile
    /// change what will be started; a cancel (or the run loop dropping the
    /// handle) ends the attempt before it began.
    pub(super) async fn wait_for_slots(&mut self) -> Result<(), AttemptResult> {
        // Always the source's before the destination's: no two attempts can
        // each hold what the other waits for.
        let semaphores = |pick: fn(&Gate) -> &Option<Arc<Semaphore>>| -> Vec<Arc<Semaphore>> {
            [&self.ctx.source_gate, &self.ctx.destination_gate]
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
                        request = self.control.recv() => self.while_waiting(request)?,
                    }
                };
                held[kind].push(permit);
            }
        }
        [self._slots, self.startup_slots] = held;
        self.on(Happened::SlotsHeld);
        Ok(())
    }

    /// A request of the handle while nothing runs yet: kept for the start,
    /// or (a cancel, the handle gone) the attempt's end.
    fn while_waiting(&mut self, request: Option<Control>) -> Result<(), AttemptResult> {
        let request_of = &mut self.ctx.request;
        match request {
            Some(Control::Retune(Retune::MaxBandwidth(b))) => {
                request_of.max_bandwidth = b.map(BitsPerSec::to_bytes_per_sec);
            }
            Some(Control::Retune(Retune::DowntimeLimit(d))) => request_of.downtime_limit = d,
            Some(Control::Retune(Retune::AutoConverge(on))) => request_of.auto_converge = on,
            Some(Control::Offline) => {
                request_of.offline = true;
                self.on(Happened::Paused { at: Instant::now() });
            }
            Some(Control::Postcopy(reply)) => {
                let _ = reply.send(Err("not started yet (waiting for a host's limit)".into()));
            }
            Some(Control::Cancel) | None => {
                self.on(Happened::CancelAsked);
                return Err(AttemptResult::failed(
                    "cancelled before it started (it was waiting for a host's limit)",
                ));
            }
        }
        Ok(())
    }

    /// [`Stage::Staggered`]: waits for its turn, [`STAGGER`] after the
    /// last attempt's.
    pub(super) async fn wait_turn(&mut self) {
        let mut next = self.ctx.next_start.lock().await;
        let at = (*next).max(tokio::time::Instant::now());
        *next = at + STAGGER;
        drop(next);
        tokio::time::sleep_until(at).await;
        self.on(Happened::TurnCame {
            adopting: self.ctx.adopt_only,
        });
    }

    /// [`Stage::Adopting`]: the earlier evac's migration, landed (the
    /// attempt's end) or still running on the source (taken up).
    pub(super) async fn adopt(&mut self) -> Result<client::Migration, AttemptResult> {
        let ctx = &self.ctx;
        if let Some((landed, completed)) = find_running(ctx, &ctx.request.domain).await {
            ctx.log(format!(
                "the earlier evac's migration completed: runs on {}",
                landed.host
            ));
            return Err(AttemptResult::Completed {
                landed,
                bytes: Bytes(completed.map_or(0, |c| c.data_processed)),
                rounds: completed.map_or(0, |c| c.iteration as u32),
                downtime: completed.map(|c| Duration::from_millis(c.downtime_ms)),
            });
        }
        match client::Migration::find(&ctx.source_uri, &ctx.request.domain, CALL_TIMEOUT).await {
            Ok(Some(migration)) => Ok(migration),
            Ok(None) => Err(AttemptResult::failed(
                "the earlier evac's migration is not running (the domain is still on its source)",
            )),
            Err(e) => Err(self.not_started(e).await),
        }
    }

    /// [`Stage::Starting`]: whether the domain may go to postcopy, then
    /// the migrate call.
    pub(super) async fn start(&mut self) -> Result<client::Migration, AttemptResult> {
        let ctx = &self.ctx;
        let mut request = ctx.request.clone();
        if request.postcopy {
            match client::postcopy_obstacle(&ctx.source_uri, &request.domain, CALL_TIMEOUT).await {
                Ok(None) => {}
                Ok(Some(why)) if ctx.auto_postcopy => {
                    return Err(AttemptResult::failed(format!(
                        "postcopy refused: {why}; postcopy needs anonymous, private memory"
                    )))
                }
                Ok(Some(why)) => {
                    // Started without it: a later switch is refused.
                    self.postcopy_refused = Some(format!("postcopy refused: {why}"));
                    request.postcopy = false;
                }
                Err(e) => {
                    self.postcopy_refused = Some(format!(
                        "postcopy refused: cannot read the domain's definition: {e}"
                    ));
                    request.postcopy = false;
                }
            }
        } else {
            self.postcopy_refused = Some(
                "postcopy unavailable: the migration was not started ready for it ([migration] allow_postcopy is off)"
                    .into(),
            );
        }
        match client::Migration::start(&self.ctx.source_uri, request, CALL_TIMEOUT).await {
            Ok(migration) => Ok(migration),
            Err(e) => Err(self.not_started(e).await),
        }
    }

    /// A migration that could not be started or taken up: the domain gone
    /// from its source may have been moved by an earlier evac.
    async fn not_started(&self, e: ClientError) -> AttemptResult {
        let ctx = &self.ctx;
        if let Some((landed, _)) = find_running(ctx, &ctx.request.domain).await {
            ctx.log(format!("already runs on {}", landed.host));
            return AttemptResult::Completed {
                landed,
                bytes: Bytes::ZERO,
                rounds: 0,
                downtime: None,
            };
        }
        AttemptResult::failed(format!("cannot start: {e}"))
    }
}
