//! The journal: every decision of a run, one JSON line each, written and
//! flushed to disk (`fsync`) **before** it is carried out, so that after a
//! crash of evac (even `kill -9`) `--resume` knows what may be under way.
//!
//! ## Format
//!
//! `<run_dir>/journal.jsonl`; each line one object with an `event`:
//!
//! - `run`: the first line: the fleet (VM names and memory, in order),
//!   the policy, and `started_unix_ms`, the wall-clock origin of every
//!   `t_s` (seconds since the run started, across restarts);
//! - `resume`: a restart with `--resume`;
//! - `start`: `vm`, `destination`, `attempt`, `params`, and `backend`,
//!   what the backend needs to reconnect to this attempt (for QEMU the
//!   destination's QMP socket);
//! - `retune`, `offline`, `cancel`: `vm`, `attempt` (and the change);
//! - `end`: `vm`, `attempt`, the VM's `record` after it, `done` (no attempt
//!   will follow) and, for a failed attempt, `failed`;
//! - `lost`: a waiting VM whose host lost power;
//! - `power`: a source host's power-off changed during the run (`host`,
//!   `power_off_s` from the start or null for none, and `by`: the edited
//!   inventory or the UPS that said so); a resumed run keeps the last one
//!   of each host;
//! - `finish`: the run is over (the result was written or returned).
//!
//! A journal whose last line is not `finish` is unfinished: a plain run
//! refuses its run dir and says `--resume`. A torn last line (a crash while
//! writing it) is ignored: it was not flushed, so its action never ran.
//!
//! This module holds the entries and their format; `file` writes and reads
//! the journal on disk, `replay` makes of its entries what `--resume` needs.

use evac_model::{Bytes, MigrationParams};
use evac_outcome::{FailedAttempt, VmRecord};
use serde::{Deserialize, Serialize};

mod file;
mod replay;
#[cfg(test)]
mod tests;

pub use file::{inspect, prepare, Journal};
pub use replay::{replay, InFlight, PowerChanged, Replay, State, VmReplay};

/// The journal's file name in a run dir.
pub const FILE_NAME: &str = "journal.jsonl";

/// The longest line read back: a start's backend blob is small; anything
/// longer is not ours.
const MAX_LINE: usize = 1 << 20;

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Entry {
    Run {
        started_unix_ms: u64,
        policy: String,
        vms: Vec<String>,
        memory: Vec<Bytes>,
    },
    Resume {
        t_s: f64,
    },
    Start {
        t_s: f64,
        vm: String,
        destination: String,
        attempt: u32,
        params: MigrationParams,
        backend: serde_json::Value,
    },
    Retune {
        t_s: f64,
        vm: String,
        attempt: u32,
        change: String,
        params: MigrationParams,
    },
    Offline {
        t_s: f64,
        vm: String,
        attempt: u32,
    },
    /// A switch to postcopy was asked for.
    Postcopy {
        t_s: f64,
        vm: String,
        attempt: u32,
    },
    Cancel {
        t_s: f64,
        vm: String,
        attempt: u32,
    },
    End {
        t_s: f64,
        vm: String,
        attempt: u32,
        record: VmRecord,
        done: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed: Option<FailedAttempt>,
    },
    Lost {
        t_s: f64,
        vm: String,
        record: VmRecord,
    },
    Power {
        t_s: f64,
        host: String,
        power_off_s: Option<f64>,
        by: String,
    },
    Finish {
        t_s: f64,
    },
}
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
