//! One migration attempt: a task owning its own libvirt connection that
//! waits for the hosts' limits, starts the migration, follows its job and
//! carries out the handle's requests ([`LibvirtMigration`]).
//!
//! This module holds what the two halves share (the task's context, the
//! requests, the measurements, the stages and the result); `task` is what
//! the task does, `handle` what the run loop holds.

use crate::client::{JobProgress, MigrateRequest};
use crate::inventory::HostSpec;
use evac_controller::Retune;
use evac_model::{BitsPerSec, Bytes};
use evac_run::Log;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use super::{Gate, Landed};

mod handle;
mod task;

pub use handle::LibvirtMigration;

/// What an attempt's task needs.
pub(super) struct AttemptCtx {
    source_gate: Gate,
    destination_gate: Gate,
    /// The two hosts as the inventory has them: what a failure is
    /// explained with ([`crate::limits::explain`]).
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
