//! The attempt's task from its start to its end: [`Task::drive`] takes it
//! through its stages in order, one step each (the steps are in `start`,
//! `follow` and `end`), and every stage change goes to [`Progress::on`];
//! what only the task reads (its slots, whether postcopy is refused, what
//! it counted) is kept here.

use evac_model::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::{AttemptCtx, AttemptResult, Control, Happened, Progress, Stage};
use crate::limits;

/// An attempt's task and what only it reads.
pub(super) struct Task {
    pub(super) ctx: AttemptCtx,
    pub(super) control: mpsc::UnboundedReceiver<Control>,
    pub(super) progress: Arc<Mutex<Progress>>,
    /// Held to the attempt's end: a migration out of its source, one into
    /// its destination.
    pub(super) _slots: Vec<OwnedSemaphorePermit>,
    /// Held until bytes flow: an ssh connection being set up to each host.
    pub(super) startup_slots: Vec<OwnedSemaphorePermit>,
    /// Why a switch to postcopy would be refused (`None`: libvirt is asked,
    /// as for a migration started ready for it, or one adopted).
    pub(super) postcopy_refused: Option<String>,
    /// This attempt's bytes already added to its source host's count.
    pub(super) counted: u64,
    /// The job's last reading (when, bytes processed): the rate since.
    pub(super) last: Option<(Instant, u64)>,
}

/// Runs an attempt to its end; a failure is explained by the hosts'
/// limits where one is the cause.
pub(super) async fn run_attempt(
    ctx: AttemptCtx,
    control: mpsc::UnboundedReceiver<Control>,
    progress: Arc<Mutex<Progress>>,
) -> AttemptResult {
    progress.lock().expect("not poisoned").begin(Instant::now());
    let (source, destination) = (ctx.source_spec.clone(), ctx.destination_spec.clone());
    let mut task = Task {
        ctx,
        control,
        progress,
        _slots: Vec::new(),
        startup_slots: Vec::new(),
        postcopy_refused: None,
        counted: 0,
        last: None,
    };
    let result = match task.drive().await {
        AttemptResult::Failed { reason, bytes } => AttemptResult::Failed {
            reason: match limits::explain(&reason, &source, &destination) {
                Some(limit) => format!("{reason} ({limit})"),
                None => reason,
            },
            bytes,
        },
        done => done,
    };
    // Last, with nothing awaited before the result is sent: the handle
    // takes an ended stage for the result about to come.
    task.on(match result {
        AttemptResult::Completed { .. } => Happened::Landed,
        AttemptResult::Failed { .. } => Happened::Failed,
    });
    result
}

impl Task {
    /// The stages in their order: slots, turn, start (or adoption), the
    /// job followed to the migrate call's return, its end.
    async fn drive(&mut self) -> AttemptResult {
        // An adopted migration runs already: it waits for no slot.
        if self.ctx.adopt_only {
            self.on(Happened::SlotsHeld);
        } else if let Err(cancelled) = self.wait_for_slots().await {
            return cancelled;
        }
        self.wait_turn().await;
        if self.ctx.request.offline {
            self.on(Happened::Paused { at: Instant::now() });
        }
        let begun = match self.stage() {
            Stage::Adopting => self.adopt().await,
            _ => self.start().await,
        };
        let mut migration = match begun {
            Ok(migration) => migration,
            Err(ended) => return ended,
        };
        if migration.adopted() {
            self.ctx.log("adopted the migration already running");
        }
        self.on(Happened::Called);
        self.follow(&mut migration).await;
        self.end(migration).await
    }

    /// Reports what happened to the stage machine.
    pub(super) fn on(&self, happened: Happened) {
        self.progress.lock().expect("not poisoned").on(happened);
    }

    pub(super) fn stage(&self) -> Stage {
        self.progress.lock().expect("not poisoned").stage()
    }

    /// A copy of what the handle reads.
    pub(super) fn progress(&self) -> Progress {
        *self.progress.lock().expect("not poisoned")
    }

    /// Adds what this attempt sent since it was last counted to its source
    /// host's migration bytes.
    pub(super) fn count(&mut self, processed: Bytes) {
        if processed.0 > self.counted {
            self.ctx.migrated.lock().expect("not poisoned")[self.ctx.source_host] +=
                processed.0 - self.counted;
            self.counted = processed.0;
        }
    }
}
