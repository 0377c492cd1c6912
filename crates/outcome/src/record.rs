//! What a run records of each VM ([`VmRecord`], with the controller's
//! [`Decision`]s about it), of each host ([`HostRecord`]) and of each failed
//! attempt ([`FailedAttempt`]): the rows of the result, apart from the
//! result's summary (the crate root) that derives figures from them.

use evac_model::Site;
use serde::{Deserialize, Serialize};

/// How a VM's evacuation ended (JSON `migrated`, `not-migrated`, `lost`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It runs at a destination.
    Migrated,
    /// It still runs on its source host: given up, attempts exhausted, the
    /// horizon reached, the run interrupted. An operator can still move it.
    NotMigrated,
    /// Its source host lost power with it still there (or mid-migration).
    Lost,
}

/// One VM's evacuation; `None` (JSON `null`) where a VM that did not
/// migrate has no value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    pub name: String,
    pub host: String,
    pub destination: Option<String>,
    /// When its (last) migration started, from the evacuation's start.
    pub start_s: Option<f64>,
    /// When its stop-and-copy ended.
    pub end_s: Option<f64>,
    pub migration_time_s: Option<f64>,
    pub downtime_s: Option<f64>,
    /// Precopy rounds before stop-and-copy.
    pub rounds: Option<u32>,
    /// Bytes sent for it, stop-and-copy included.
    pub bytes_sent: Option<u64>,
    pub outcome: Outcome,
    /// Why it did not migrate (see [`reason`](crate::reason)); `None` (absent from the
    /// JSON) for a migrated VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How its last migration moved it: live, offline or postcopy (as
    /// switched mid-flight); absent if it was never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<evac_model::Mode>,
    /// The TCP connections of its last migration; absent if never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// Whether its last migration compressed its pages (`zstd`) or not
    /// (`none`), as chosen for it (`auto` resolved); absent if never
    /// started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<evac_model::Compression>,
    /// The controller's account of it, oldest first: when and why it was
    /// started and with what, deferred, switched, cancelled or given up
    /// (the `deadline` planner's; absent for a policy that does not
    /// explain itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<Decision>,
}

/// One decision a controller took about a VM, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Seconds from the evacuation's start.
    pub at_s: f64,
    /// `start`, `plan`, `defer`, `offline`, `postcopy`, `cancel` or
    /// `give-up`.
    pub decision: String,
    /// Why, in words and figures.
    pub why: String,
}

impl VmRecord {
    /// A VM that has not moved (yet): not migrated, its reason to be given
    /// by the driver, unless a migration of it completes.
    pub fn unmoved(name: String, host: String) -> Self {
        Self {
            compression: None,
            name,
            host,
            destination: None,
            start_s: None,
            end_s: None,
            migration_time_s: None,
            downtime_s: None,
            rounds: None,
            bytes_sent: None,
            outcome: Outcome::NotMigrated,
            reason: None,
            mode: None,
            connections: None,
            decisions: Vec::new(),
        }
    }

    /// Marks it not migrated (or lost, for [`reason::POWER_OFF`](crate::reason::POWER_OFF)) for
    /// `reason`, unless it migrated or already has a reason.
    pub fn left(&mut self, outcome: Outcome, reason: &str) {
        if self.outcome != Outcome::Migrated && self.reason.is_none() {
            self.outcome = outcome;
            self.reason = Some(reason.to_owned());
        }
    }
}

/// A host of the fleet as the run saw it: the report draws a line where it
/// lost power and says how long before that it was emptied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    pub site: Site,
    /// When it loses power, from the evacuation's start; `None` if never.
    pub power_off_s: Option<f64>,
}

/// A migration attempt that failed or was cancelled, leaving the VM on its
/// source (a later attempt may still have moved it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    pub vm: String,
    pub destination: Option<String>,
    pub start_s: f64,
    pub end_s: f64,
    pub reason: String,
}
