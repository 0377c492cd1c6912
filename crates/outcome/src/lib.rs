//! # evac-outcome
//!
//! What an evacuation achieved, in one format whether it was simulated
//! (`evac simulate`) or real (`evac run`), so the two compare field by field.
//! Plain data only: the rendering (tables, CSV, SVG) lives in `evac-report`,
//! so the simulator and the sweep do not link the plotting and table code.
//!
//! A driver records one [`VmRecord`] per VM and [`TimelinePoint`]s (the
//! simulator whenever the state changes, a real run every period); [`RunResult::summarize`] derives the metrics:
//!
//! - `total_time_s`: the last VM's completion, from the evacuation's start;
//! - mean, 95th percentile (nearest rank) and max of the VMs' own migration
//!   times, and their mean completion time; all over the VMs that migrated;
//! - two lower bounds no policy can beat ([`lower_bounds`]): the earliest
//!   time the WAN could carry all the memory (and local disks), and the mean
//!   over VMs of memory plus disk divided by the best rate one migration
//!   could ever get;
//! - `score = sqrt((total / bound) * (mean migration / bound))`: 1.0 is the
//!   physical limit, and it weighs the evacuation's total time and each VM's
//!   own time together, as the published metric does.
//!
//! [`RunResult`] serializes to the JSON documented in the README.
//!
//! The crate root is the result and its summary; beside it, `record` (the
//! rows: VMs, hosts, failed attempts), `timeline` (the evacuation over time,
//! thinned), `bounds` (the lower bounds) and `stats` (mean, median,
//! percentile).

use evac_model::{Fleet, Network};
use serde::{Deserialize, Serialize};

mod bounds;
mod record;
mod stats;
mod timeline;

pub use bounds::{lower_bounds, lower_bounds_of, LowerBounds};
pub use record::{Decision, FailedAttempt, HostRecord, Outcome, VmRecord};
pub use stats::median;
use stats::{mean, percentile};
pub use timeline::{thin_timeline, TimelinePoint, MAX_TIMELINE_POINTS};

/// The `reason` of a VM that did not migrate, as drivers write it; a driver
/// may append details after a colon (`"attempts exhausted: <last error>"`).
pub mod reason {
    /// [`Outcome::Lost`](super::Outcome::Lost): its source host powered off.
    pub const POWER_OFF: &str = "its source host lost power";
    /// [`Outcome::Lost`](super::Outcome::Lost): the evacuation ended with it
    /// on a source host whose power-off was still to come.
    pub const LEFT_TO_POWER_OFF: &str = "left on a host that loses power";
    /// The controller left it (hopeless, or nothing could start it) and
    /// the evacuation ended with it on its source.
    pub const GIVEN_UP: &str = "given up";
    /// Every attempt the controller allows failed.
    pub const ATTEMPTS_EXHAUSTED: &str = "attempts exhausted";
    /// The simulated-time horizon came before its migration ended.
    pub const HORIZON: &str = "horizon reached";
    /// The run was interrupted (Ctrl-C, SIGTERM) before it migrated.
    pub const INTERRUPTED: &str = "interrupted";
}

/// The result of one evacuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The evac that produced it, with its git commit (`"0.1.0 (abc1234)"`);
    /// set by the `evac` binary, `null` from library callers and absent in
    /// results older than the field (read as `null`).
    #[serde(default)]
    pub evac_version: Option<String>,
    /// What was evacuated: the scenario or inventory file as given to
    /// `evac`, `"<stdin>"`, or `"default"` for the embedded default.
    #[serde(default)]
    pub scenario: Option<String>,
    /// The scenario's `seed` (it drives its generated VMs); `null` for a
    /// real run, whose inventory has none.
    #[serde(default)]
    pub seed: Option<u64>,
    pub policy: String,
    pub total_time_s: Option<f64>,
    pub mean_migration_time_s: Option<f64>,
    pub max_migration_time_s: Option<f64>,
    pub p95_migration_time_s: Option<f64>,
    pub mean_completion_time_s: Option<f64>,
    pub mean_downtime_s: Option<f64>,
    pub lower_bound_total_s: f64,
    pub lower_bound_mean_migration_s: f64,
    pub score: Option<f64>,
    pub migrated: usize,
    /// VMs still on their source host at the end ([`Outcome::NotMigrated`]).
    pub not_migrated: usize,
    /// VMs whose source host lost power ([`Outcome::Lost`]).
    pub lost: usize,
    /// Sum of the priorities of the VMs that migrated, and of all VMs.
    pub priority_saved: u64,
    pub priority_total: u64,
    pub bytes_sent: u64,
    pub vms: Vec<VmRecord>,
    pub timeline: Vec<TimelinePoint>,
    /// Every host with its power-off time (absent in results written before
    /// this field existed: read as empty).
    #[serde(default)]
    pub hosts: Vec<HostRecord>,
    /// Attempts that failed or were cancelled, in the order they ended; the
    /// drivers that know them append them after [`RunResult::summarize`].
    #[serde(default)]
    pub failed_attempts: Vec<FailedAttempt>,
    /// A real run's start on the wall clock (RFC 3339, UTC), from which
    /// every `_s` time counts; `None` for a simulation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

impl RunResult {
    /// Derives the metrics from per-VM records (in the fleet's VM order).
    pub fn summarize(
        policy: &str,
        fleet: &Fleet,
        network: &Network,
        vms: Vec<VmRecord>,
        timeline: Vec<TimelinePoint>,
    ) -> Self {
        let migrated: Vec<&VmRecord> = vms.iter().filter(|v| v.outcome == Outcome::Migrated).collect();
        let migration_times: Vec<f64> = migrated.iter().filter_map(|v| v.migration_time_s).collect();
        let completion_times: Vec<f64> = migrated.iter().filter_map(|v| v.end_s).collect();
        let downtimes: Vec<f64> = migrated.iter().filter_map(|v| v.downtime_s).collect();
        // Records come in the fleet's order (paired by index, O(VMs)); a
        // driver that listed them otherwise is looked up by name, once.
        let in_fleet_order = vms.len() == fleet.vms.len()
            && vms
                .iter()
                .zip(&fleet.vms)
                .all(|(record, vm)| record.name == vm.name);
        let by_name: std::collections::HashMap<&str, usize> = if in_fleet_order {
            Default::default()
        } else {
            fleet
                .vms
                .iter()
                .enumerate()
                .map(|(i, vm)| (vm.name.as_str(), i))
                .collect()
        };
        let index = |i: usize, record: &VmRecord| {
            if in_fleet_order {
                Some(i)
            } else {
                by_name.get(record.name.as_str()).copied()
            }
        };
        let mut moved = vec![false; fleet.vms.len()];
        for (i, record) in vms.iter().enumerate() {
            if record.outcome == Outcome::Migrated {
                if let Some(i) = index(i, record) {
                    moved[i] = true;
                }
            }
        }
        // Over the VMs this run moved: a run that leaves VMs behind is
        // measured against the time its own VMs needed, so no run ends
        // below its bound (the VMs it lost are counted apart).
        let bounds = lower_bounds_of(fleet, network, |vm| moved[vm]);
        let total_time = completion_times.iter().copied().reduce(f64::max);
        let mean_migration = mean(&migration_times);
        let score = match (total_time, mean_migration) {
            (Some(total), Some(mean)) => Some(
                ((total / bounds.total.as_secs_f64()) * (mean / bounds.mean_migration.as_secs_f64())).sqrt(),
            ),
            _ => None,
        };
        let priority_saved: u64 = (0..fleet.vms.len())
            .filter(|&i| moved[i])
            .map(|i| u64::from(fleet.vms[i].priority))
            .sum();
        Self {
            // What only the caller knows (the binary fills them in).
            evac_version: None,
            scenario: None,
            seed: None,
            policy: policy.to_owned(),
            total_time_s: total_time,
            mean_migration_time_s: mean_migration,
            max_migration_time_s: migration_times.iter().copied().reduce(f64::max),
            p95_migration_time_s: percentile(&migration_times, 0.95),
            mean_completion_time_s: mean(&completion_times),
            mean_downtime_s: mean(&downtimes),
            lower_bound_total_s: bounds.total.as_secs_f64(),
            lower_bound_mean_migration_s: bounds.mean_migration.as_secs_f64(),
            score,
            migrated: migrated.len(),
            not_migrated: vms.iter().filter(|v| v.outcome == Outcome::NotMigrated).count(),
            lost: vms.iter().filter(|v| v.outcome == Outcome::Lost).count(),
            priority_saved,
            priority_total: fleet.vms.iter().map(|vm| u64::from(vm.priority)).sum(),
            bytes_sent: vms.iter().filter_map(|v| v.bytes_sent).sum(),
            vms,
            timeline,
            hosts: fleet
                .hosts
                .iter()
                .map(|h| HostRecord {
                    name: h.name.clone(),
                    site: h.site,
                    power_off_s: h.power_off_at.map(|t| t.as_secs_f64()),
                })
                .collect(),
            failed_attempts: Vec::new(),
            started_at: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a RunResult always serializes")
    }

    /// Writes the same JSON as [`RunResult::to_json`] to `out` as it goes,
    /// without building it in memory first (hundreds of MB for a million
    /// VMs). `out` should be buffered.
    pub fn write_json<W: std::io::Write>(&self, out: W) -> std::io::Result<()> {
        serde_json::to_writer_pretty(out, self).map_err(std::io::Error::from)
    }
}

#[cfg(test)]
mod tests;
