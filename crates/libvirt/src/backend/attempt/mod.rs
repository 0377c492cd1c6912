//! One migration attempt: a task owning its own libvirt connection that
//! waits for the hosts' limits, starts the migration, follows its job and
//! carries out the handle's requests ([`LibvirtMigration`]). Its state is
//! one [`Stage`] (waiting for slots, staggered, adopting or starting,
//! precopy, offline, postcopy, cancelling, landed, failed) with its
//! transitions in one place, as the QEMU backend's attempt has its own.
//!
//! | module | job |
//! |---|---|
//! | `progress` | what the handle reads: the attempt's [`Stage`], its transitions in one place ([`Progress::on`]), the job's last reading, the [`Stages`]' times |
//! | `task` | the task from its start to its end, one step per stage; the attempt's state that only the task reads |
//! | `start` | before the job runs: the hosts' slots, the stagger, the migrate call or an earlier evac's migration taken up |
//! | `follow` | the job under way: its progress every 500 ms, the handle's requests, a switch to postcopy |
//! | `end` | where the domain landed (resumed there if we paused it), or the failure with the domain resumed on its source |
//! | `handle` | what the run loop holds (evac-run's `Migration`) and the spawning of the task |
//! | here | what they share: the task's context, the requests, the result |
//!
//! What the QEMU backend's attempt shares with this one is in evac-run:
//! the task behind its handle ([`evac_run::AttemptTask`]: spawning it, the
//! requests, the progress it writes, its result and the run loop woken).
//! The rest has the same shape (a stage enum with its transitions in one
//! place, a progress struct, a control enum) but not the same content, so
//! it stays per backend: QEMU's stages are its own (evac starts the
//! destination process and watches both ends; no host slots, no stagger),
//! its handle refuses a switch to postcopy itself where libvirt's asks the
//! task and waits for libvirt's answer (so the requests differ), and what
//! the handle reads differs (QEMU: when `migrate` was accepted, for the
//! rate from the network's counters; libvirt: the job's reading and the
//! stage times). One generic machine would be a trait with each of these
//! as an associated type or hook: more to read than the two it replaced.

use crate::client::MigrateRequest;
use crate::inventory::HostSpec;
use evac_controller::Retune;
use evac_model::Bytes;
use evac_run::Log;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

use super::{Gate, Landed};

mod end;
mod follow;
mod handle;
mod progress;
mod start;
mod task;

pub use handle::LibvirtMigration;
pub(super) use progress::Stage;
pub use progress::Stages;
use progress::{Happened, Progress};

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

impl AttemptCtx {
    /// A line to the operator about this attempt's domain.
    fn log(&self, message: impl std::fmt::Display) {
        (self.log)(&format!("{}: {message}", self.request.domain));
    }
}

/// A request to an attempt's task.
pub(super) enum Control {
    Retune(Retune),
    Offline,
    /// Switch to postcopy; the answer says whether libvirt did.
    Postcopy(oneshot::Sender<Result<(), String>>),
    Cancel,
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

impl AttemptResult {
    /// A failure before anything was sent.
    fn failed(reason: impl Into<String>) -> AttemptResult {
        AttemptResult::Failed {
            reason: reason.into(),
            bytes: Bytes::ZERO,
        }
    }
}
