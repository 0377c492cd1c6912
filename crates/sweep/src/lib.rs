//! # evac-sweep
//!
//! `evac sweep GRID.toml`: runs the cross product of a grid's factors on the
//! simulator, one evacuation per combination, in parallel on every core
//! (rayon), and tabulates the results: one [`SweepRow`] per combination with
//! its total time, mean and max migration time, VMs lost and score, as a
//! markdown table ([`markdown_table`]), CSV ([`write_csv`]) or JSON
//! ([`write_json`]).
//!
//! ## The grid format
//!
//! ```toml
//! name = "classic comparison"          # default: the file's name
//! base = "../scenarios/two-site.toml"  # a scenario file, relative to the grid file;
//!                                      # or an inline [base] table holding a whole
//!                                      # scenario; default: the embedded default scenario
//! repeat_seeds = [1, 2, 3]             # optional: every combination once per seed
//!
//! [factors]                            # every factor is a list of levels; absent = the base's value
//! policy = ["sequential", "parallel", "static", "aimd-local", "aimd-global"]
//! wan_bandwidth = ["1 Gbps", "10 Gbps"]
//! wan_rtt = ["5 ms", "100 ms"]
//! tcp_window = ["4 MiB", "64 MiB"]
//! connections = [1, 4]
//! memory = ["base", "equal", "skewed"]
//! dirty_rate = ["0 MB/s", "20 MB/s"]
//! mode = ["live", "offline"]
//! trace = ["base", "steady", "fluctuating"]
//! order = ["as-listed", "largest-first"]
//! max_in_flight = [2, 8]               # the static policy's site-wide limit
//! max_in_flight_per_host = [1, 2]      # ... and its limit per source host
//! power_off_scale = [0.5, 2]           # every power-off twice as soon, or as late
//! power_news = ["base", "-40% at 25%", "-40% at 0%", "+5 min at 10 min"]
//!                                      # every power-off moved, announced then
//! ```
//!
//! What the levels mean:
//!
//! - `policy`, `order`, `max_in_flight`, `max_in_flight_per_host`: the
//!   `[controller]` fields.
//! - `wan_bandwidth`: the WAN's capacity. A trace the base has is scaled by
//!   the same ratio, so it keeps its shape.
//! - `wan_rtt`, `tcp_window`: the `[network]` fields (one connection carries
//!   at most `tcp_window / wan_rtt`); `connections`, `mode`: the
//!   `[migration]` fields.
//! - `memory`: `base` keeps the base's VM sizes; `equal` gives every VM the
//!   mean size; `skewed` draws sizes from a lognormal (σ = 1) and rescales
//!   them to the same total, rounded to whole MiB (at least 64 MiB). Each
//!   VM's working set is scaled with its memory.
//! - `dirty_rate`: every VM's dirty rate.
//! - `power_off_scale`: every host's `power_off_at` (and the times of its
//!   `power_trace`) multiplied by it (a positive number): tight (< 1) or
//!   loose (> 1) deadlines.
//! - `power_news`: power that changes during the evacuation. `base` keeps
//!   the base's `power_trace`s, `none` removes them; `"<shift> at <when>"`
//!   gives every host that has a power-off one announced change instead:
//!   at `<when>` (a duration from the start, or a percentage of the host's
//!   own power-off) its power-off moves by `<shift>` (a signed duration,
//!   `-5 min`, or a signed percentage of it, `-40%`; one moved to before
//!   the announcement means now). The same shift announced `at 0%` is the
//!   final deadline known from the start: the grid then measures what
//!   learning it late costs. Applied after `power_off_scale`.
//! - `trace`: `base` keeps the base's trace; `steady` is no trace at all;
//!   `fluctuating` alternates the WAN between 100 % and 40 % of its
//!   bandwidth, each phase lasting 30 to 90 s (60 s on average), drawn from
//!   the seed, for long enough to outlast the slowest evacuation; `dip`,
//!   `slow-start`, `near-outage`, `sawtooth` and `stalls` are the WANs of a
//!   disaster, each drawn from the seed (see `disturbed_trace`).
//!
//! The random levels (`skewed`, `fluctuating`) draw from ChaCha8 keyed by
//! the combination's seed: the base scenario's `seed`, or each of
//! `repeat_seeds` in turn; a repeat seed also replaces the base's `seed`,
//! so generated `[[vm_group]]`s are drawn anew. Combinations run in the
//! order of the factors as written, the last factor varying fastest, and
//! the same grid always gives the same rows.
//!
//! A bad grid is refused before anything runs, with the file, the line and
//! the key: `grid.toml:9: factor `wan_rtt`: `5 xs` is not a duration ...`.

use std::path::PathBuf;

use evac_scenario::{Scenario, ScenarioError};
use rayon::prelude::*;
use serde::Serialize;

mod apply;
mod grid;
mod levels;
mod output;

pub use levels::{Amount, Level, MemoryPreset, PowerNews, TracePreset, FACTORS};
use output::ordered_map;
pub use output::{markdown_table, write_csv, write_json};

/// Why a grid is refused.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    #[error("cannot read grid file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `at` is `file:line`; `key` the grid key at fault, if one is.
    #[error("{at}: {}{message}", key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Invalid {
        at: String,
        key: Option<String>,
        message: String,
    },
    /// The base scenario is refused; its error names its own file and line.
    #[error("{at}: base scenario")]
    Base {
        at: String,
        #[source]
        source: ScenarioError,
    },
}

/// One factor: its name and its levels, each with the text it was written as.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    pub name: String,
    pub levels: Vec<(String, Level)>,
    /// `file:line` of each level, for refusals.
    level_at: Vec<String>,
}

/// The most evacuations one grid may run (levels multiplied, times the
/// seeds): beyond it a grid is a typo or a week of CPU.
pub const MAX_COMBINATIONS: usize = 100_000;

/// A parsed, checked grid.
#[derive(Debug, Clone)]
pub struct Grid {
    pub name: String,
    pub base: Scenario,
    /// The base's text, reloaded with another seed for `repeat_seeds`.
    base_text: String,
    /// When the base was read: a base without `start` is reloaded with
    /// this one, so that its power-offs given as times mean the same
    /// deadlines in every combination.
    read_at: evac_model::wall_clock::Timestamp,
    base_origin: String,
    /// Empty: the base's own seed only.
    pub repeat_seeds: Vec<u64>,
    /// In the order written in the grid.
    pub factors: Vec<Factor>,
    /// `file` (or `file:line` of `repeat_seeds`), for refusals.
    origin: String,
    seeds_at: String,
    /// Checked: at most [`MAX_COMBINATIONS`].
    len: usize,
}

/// The result of one combination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    /// Every factor of the grid with this row's level, as written, in the
    /// grid's order.
    #[serde(serialize_with = "ordered_map")]
    pub factors: Vec<(String, String)>,
    pub seed: u64,
    pub vms: usize,
    pub total_time_s: Option<f64>,
    pub mean_migration_time_s: Option<f64>,
    pub max_migration_time_s: Option<f64>,
    pub lower_bound_total_s: f64,
    pub lower_bound_mean_migration_s: f64,
    pub migrated: usize,
    /// VMs left on their source (given up, horizon reached).
    pub not_migrated: usize,
    /// VMs whose source host lost power with them on it.
    pub lost: usize,
    pub score: Option<f64>,
    /// The sum of the priorities of the VMs migrated, and of all.
    pub priority_saved: u64,
    pub priority_total: u64,
}

/// Runs every combination of `grid` on the simulator, in parallel on all
/// cores; the rows come back in the grid's order. Every combination was
/// checked when the grid was read; the error is for a grid changed since.
pub fn run(grid: &Grid) -> Result<Vec<SweepRow>, GridError> {
    grid.combinations()
        .into_par_iter()
        .map(|(seed, levels)| {
            let scenario = grid.scenario(seed, &levels)?;
            let result = evac_sim::simulate_evacuation(
                &scenario.fleet,
                &scenario.network,
                scenario.migration,
                &scenario.controller,
            );
            Ok(SweepRow {
                factors: grid
                    .factors
                    .iter()
                    .zip(&levels)
                    .map(|(f, &i)| (f.name.clone(), f.levels[i].0.clone()))
                    .collect(),
                seed,
                vms: scenario.fleet.vms.len(),
                total_time_s: result.total_time_s,
                mean_migration_time_s: result.mean_migration_time_s,
                max_migration_time_s: result.max_migration_time_s,
                lower_bound_total_s: result.lower_bound_total_s,
                lower_bound_mean_migration_s: result.lower_bound_mean_migration_s,
                migrated: result.migrated,
                not_migrated: result.not_migrated,
                lost: result.lost,
                score: result.score,
                priority_saved: result.priority_saved,
                priority_total: result.priority_total,
            })
        })
        .collect()
}
#[cfg(test)]
mod tests;
