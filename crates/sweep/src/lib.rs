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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use evac_controller::{Order, PolicyKind};
use evac_model::{parse_duration, BitsPerSec, Bytes, BytesPerSec, Connections, Mode, TracePoint};
use evac_scenario::{Scenario, ScenarioError, DEFAULT_SCENARIO_TOML};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use toml::Spanned;

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

/// One level of one factor, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Level {
    Policy(PolicyKind),
    WanBandwidth(BitsPerSec),
    WanRtt(Duration),
    TcpWindow(Bytes),
    Connections(Connections),
    Memory(MemoryPreset),
    DirtyRate(BytesPerSec),
    Mode(Mode),
    Trace(TracePreset),
    Order(Order),
    MaxInFlight(usize),
    MaxInFlightPerHost(usize),
    PowerOffScale(f64),
    PowerNews(PowerNews),
}

/// The `power_news` factor's levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PowerNews {
    /// The base's `power_trace`s as they are.
    Base,
    /// No change is ever announced.
    None,
    /// One change per host with a power-off: at `at`, it moves by `shift`.
    Shift { shift: Amount, at: Amount },
}

/// A time in a `power_news` level: seconds, or a fraction of each host's
/// own power-off; signed for a shift.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Seconds(f64),
    Fraction(f64),
}

impl Amount {
    /// Seconds, for a host whose power-off is at `power_off` s.
    fn of(self, power_off: f64) -> f64 {
        match self {
            Amount::Seconds(s) => s,
            Amount::Fraction(f) => f * power_off,
        }
    }

    /// `-40%`, `+5 min`, `25%`, `5 min`; signed only when `signed`.
    fn parse(text: &str, signed: bool) -> Result<Amount, String> {
        let text = text.trim();
        let (sign, magnitude) = match text.as_bytes().first() {
            Some(b'-') if signed => (-1.0, &text[1..]),
            Some(b'+') if signed => (1.0, &text[1..]),
            _ if signed => return Err(format!("`{text}` needs a sign: `-` (earlier) or `+` (later)")),
            _ => (1.0, text),
        };
        if let Some(percent) = magnitude.trim().strip_suffix('%') {
            let value: f64 = percent
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0 && *v <= 1e4)
                .ok_or_else(|| format!("`{text}` is not a percentage like `40%`"))?;
            return Ok(Amount::Fraction(sign * value / 100.0));
        }
        let duration = parse_duration(magnitude).map_err(|e| e.to_string())?;
        Ok(Amount::Seconds(sign * duration.as_secs_f64()))
    }
}

impl PowerNews {
    fn parse(text: &str) -> Result<PowerNews, String> {
        match text.trim() {
            "base" => return Ok(PowerNews::Base),
            "none" => return Ok(PowerNews::None),
            _ => {}
        }
        let expected = || {
            format!(
                "`{text}` is not `base`, `none` or \"<shift> at <when>\" like \"-40% at 25%\" \
                 or \"+5 min at 10 min\""
            )
        };
        let (shift, at) = text.split_once(" at ").ok_or_else(expected)?;
        let shift = Amount::parse(shift, true).map_err(|e| format!("{}: {e}", expected()))?;
        let at = Amount::parse(at, false).map_err(|e| format!("{}: {e}", expected()))?;
        Ok(PowerNews::Shift { shift, at })
    }
}

/// The `memory` factor's levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryPreset {
    Base,
    Equal,
    Skewed,
}

/// The `trace` factor's levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracePreset {
    Base,
    Steady,
    Fluctuating,
    Dip,
    SlowStart,
    NearOutage,
    Sawtooth,
    Stalls,
}

/// The factors a grid may vary, in the order they are applied.
pub const FACTORS: [&str; 14] = [
    "policy",
    "wan_bandwidth",
    "wan_rtt",
    "tcp_window",
    "connections",
    "memory",
    "dirty_rate",
    "mode",
    "trace",
    "order",
    "max_in_flight",
    "max_in_flight_per_host",
    "power_off_scale",
    "power_news",
];

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

fn ordered_map<S: serde::Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrid {
    name: Option<String>,
    base: Option<Spanned<toml::Value>>,
    repeat_seeds: Option<Spanned<Vec<u64>>>,
    #[serde(skip)]
    repeat_seeds_at: Option<usize>,
    #[serde(default)]
    factors: BTreeMap<Spanned<String>, Spanned<Vec<Spanned<toml::Value>>>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Grid {
    /// Reads and checks the grid file at `path`; a base file is found
    /// relative to it.
    pub fn from_path(path: &Path) -> Result<Grid, GridError> {
        let text = std::fs::read_to_string(path).map_err(|source| GridError::Read {
            path: path.to_owned(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let default_name = path
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        Self::parse(&text, &path.display().to_string(), dir, &default_name)
    }

    /// Reads and checks a grid from its text; `origin` names it in errors
    /// and a base file is found relative to `dir`.
    pub fn from_toml_str(text: &str, origin: &str, dir: &Path) -> Result<Grid, GridError> {
        Self::parse(text, origin, dir, origin)
    }

    fn parse(text: &str, origin: &str, dir: &Path, default_name: &str) -> Result<Grid, GridError> {
        let at = |offset: usize| format!("{origin}:{}", line_of(text, offset));
        let mut raw: RawGrid = toml::from_str(text).map_err(|e| GridError::Invalid {
            at: e.span().map_or_else(|| origin.to_owned(), |s| at(s.start)),
            key: None,
            message: evac_model::suggest::serde_message(e.message().trim()),
        })?;
        raw.repeat_seeds_at = raw.repeat_seeds.as_ref().map(|s| s.span().start);
        let mut factors: Vec<(usize, Factor)> = Vec::new();
        for (key, values) in &raw.factors {
            // The scenario's old name for `connections` is read too.
            let name = match key.get_ref().as_str() {
                "multifd_channels" => "connections",
                name => name,
            };
            let key_at = at(key.span().start);
            if !FACTORS.contains(&name) {
                return Err(GridError::Invalid {
                    at: key_at,
                    key: Some(format!("factor `{name}`")),
                    message: format!(
                        "unknown factor; expected one of {}{}",
                        FACTORS.join(", "),
                        evac_model::suggest::did_you_mean(name, FACTORS.iter().copied())
                    ),
                });
            }
            if values.get_ref().is_empty() {
                return Err(GridError::Invalid {
                    at: key_at,
                    key: Some(format!("factor `{name}`")),
                    message: "no levels; give at least one, or leave the factor out".into(),
                });
            }
            let mut levels = Vec::new();
            let mut level_at = Vec::new();
            for value in values.get_ref() {
                let level = parse_level(name, value.get_ref()).map_err(|message| GridError::Invalid {
                    at: at(value.span().start),
                    key: Some(format!("factor `{name}`")),
                    message,
                })?;
                let written = match value.get_ref() {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                levels.push((written, level));
                level_at.push(at(value.span().start));
            }
            factors.push((
                key.span().start,
                Factor {
                    name: name.to_owned(),
                    levels,
                    level_at,
                },
            ));
        }
        factors.sort_by_key(|(offset, _)| *offset);
        let factors: Vec<Factor> = factors.into_iter().map(|(_, f)| f).collect();
        let repeat_seeds = raw.repeat_seeds.map(|s| s.into_inner()).unwrap_or_default();
        let seeds_at = raw.repeat_seeds_at.map_or_else(|| origin.to_owned(), at);
        let len = combination_count(&factors, repeat_seeds.len()).ok_or_else(|| {
            let levels: Vec<String> = factors
                .iter()
                .map(|f| format!("{} {}", f.levels.len(), f.name))
                .chain((!repeat_seeds.is_empty()).then(|| format!("{} seeds", repeat_seeds.len())))
                .collect();
            let count: u128 = factors
                .iter()
                .map(|f| f.levels.len() as u128)
                .chain(std::iter::once(repeat_seeds.len().max(1) as u128))
                .fold(1u128, |n, k| n.saturating_mul(k));
            GridError::Invalid {
                at: origin.to_owned(),
                key: None,
                message: format!(
                    "the grid has {count} combinations ({}), more than the {MAX_COMBINATIONS} a sweep runs; \
                     drop levels or split the grid",
                    levels.join(" x ")
                ),
            }
        })?;
        // The base last: a grid too large to run is refused before a
        // base of a million VMs is read.
        let read_at = evac_model::wall_clock::Timestamp::now();
        let (base, base_text, base_origin) = match &raw.base {
            None => (
                Scenario::embedded_default(),
                DEFAULT_SCENARIO_TOML.to_owned(),
                "<embedded default>".to_owned(),
            ),
            Some(spanned) => {
                let here = at(spanned.span().start);
                match spanned.get_ref() {
                    toml::Value::String(file) => {
                        let path = dir.join(file);
                        let text = std::fs::read_to_string(&path).map_err(|e| GridError::Invalid {
                            at: here.clone(),
                            key: Some("key `base`".into()),
                            message: format!("cannot read {}: {e}", path.display()),
                        })?;
                        let origin = path.display().to_string();
                        let scenario = Scenario::from_toml_str_at(&text, &origin, read_at)
                            .map_err(|source| GridError::Base { at: here, source })?;
                        (scenario, text, origin)
                    }
                    toml::Value::Table(table) => {
                        let text = toml::to_string(table).map_err(|e| GridError::Invalid {
                            at: here.clone(),
                            key: Some("table [base]".into()),
                            message: e.to_string(),
                        })?;
                        let origin = format!("{origin} [base] (lines counted from the table)");
                        let scenario = Scenario::from_toml_str_at(&text, &origin, read_at)
                            .map_err(|source| GridError::Base { at: here, source })?;
                        (scenario, text, origin)
                    }
                    other => {
                        return Err(GridError::Invalid {
                            at: here,
                            key: Some("key `base`".into()),
                            message: format!(
                                "expected a scenario file name or a [base] table, found {}",
                                other.type_str()
                            ),
                        })
                    }
                }
            }
        };
        let grid = Grid {
            name: raw.name.unwrap_or_else(|| default_name.to_owned()),
            base,
            base_text,
            read_at,
            base_origin,
            repeat_seeds,
            factors,
            origin: origin.to_owned(),
            seeds_at,
            len,
        };
        grid.check()?;
        Ok(grid)
    }

    /// Every level, every repeat seed's redraw and every combination
    /// through the model's wall (`Scenario::validate`), before anything
    /// runs: a level the scenario format would refuse (`tcp_window =
    /// ["0 B"]`) is refused here with the same words, at the level's line.
    fn check(&self) -> Result<(), GridError> {
        // A level that leaves the VMs and hosts alone is checked on the base
        // without them: a grid over a million-VM base does not copy it per
        // level. The model's checks of the network, the migration and the
        // controller look at one field at a time, so such levels cannot
        // clash with each other; only the fleet's levels (and the seeds)
        // are checked in every combination.
        let shell = Scenario {
            name: self.base.name.clone(),
            seed: self.base.seed,
            network: self.base.network.clone(),
            migration: self.base.migration,
            controller: self.base.controller.clone(),
            fleet: evac_model::Fleet::default(),
        };
        for factor in &self.factors {
            for ((written, level), at) in factor.levels.iter().zip(&factor.level_at) {
                let checked = if touches_fleet(level) {
                    let mut scenario = self.base.clone();
                    apply(&mut scenario, level);
                    scenario.validate()
                } else {
                    let mut scenario = shell.clone();
                    apply(&mut scenario, level);
                    scenario
                        .network
                        .validate()
                        .and_then(|()| scenario.migration.validate())
                        .and_then(|()| scenario.controller.validate())
                };
                checked.map_err(|invalid| GridError::Invalid {
                    at: at.clone(),
                    key: Some(format!("factor `{}`", factor.name)),
                    message: format!("level `{written}`: {invalid}"),
                })?;
            }
        }
        for &seed in &self.repeat_seeds {
            self.base_for(seed)?;
        }
        let fleet_factor: Vec<bool> = self
            .factors
            .iter()
            .map(|f| f.levels.iter().any(|(_, level)| touches_fleet(level)))
            .collect();
        let combinations: Vec<(u64, Vec<usize>)> = self
            .combinations()
            .into_iter()
            .filter(|(_, levels)| {
                levels
                    .iter()
                    .zip(&fleet_factor)
                    .all(|(&i, &fleet)| fleet || i == 0)
            })
            .collect();
        combinations
            .par_iter()
            .map(|(seed, levels)| self.scenario(*seed, levels).map(|_| ()))
            .collect::<Result<Vec<()>, GridError>>()?;
        Ok(())
    }

    /// How many evacuations the grid runs (at most [`MAX_COMBINATIONS`]).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every combination: its seed and one level index per factor, the last
    /// factor varying fastest, seeds slowest.
    pub fn combinations(&self) -> Vec<(u64, Vec<usize>)> {
        let seeds = if self.repeat_seeds.is_empty() {
            vec![self.base.seed]
        } else {
            self.repeat_seeds.clone()
        };
        let mut all = Vec::with_capacity(self.len());
        for &seed in &seeds {
            let mut index = vec![0; self.factors.len()];
            loop {
                all.push((seed, index.clone()));
                // Odometer, last factor fastest.
                let mut i = self.factors.len();
                loop {
                    if i == 0 {
                        break;
                    }
                    i -= 1;
                    index[i] += 1;
                    if index[i] < self.factors[i].levels.len() {
                        break;
                    }
                    index[i] = 0;
                }
                if index.iter().all(|&i| i == 0) {
                    break;
                }
            }
        }
        all
    }

    /// The base scenario drawn with `seed`: refused when the redraw is (a
    /// draw whose VMs overfill the destinations).
    fn base_for(&self, seed: u64) -> Result<Scenario, GridError> {
        if self.repeat_seeds.is_empty() || seed == self.base.seed {
            return Ok(self.base.clone());
        }
        let refused = |message: String| GridError::Invalid {
            at: self.seeds_at.clone(),
            key: Some("key `repeat_seeds`".into()),
            message,
        };
        let mut table: toml::Table = toml::from_str(&self.base_text)
            .map_err(|e| refused(format!("the base does not reparse: {e}")))?;
        let seed_value = i64::try_from(seed)
            .map_err(|_| refused(format!("seed {seed} is beyond TOML's largest integer, 2^63 - 1")))?;
        table.insert("seed".into(), toml::Value::Integer(seed_value));
        let text = toml::to_string(&table).map_err(|e| refused(e.to_string()))?;
        Scenario::from_toml_str_at(&text, &self.base_origin, self.read_at)
            .map_err(|e| refused(format!("with seed {seed}, the base scenario is refused: {e}")))
    }

    /// The scenario of one combination; refused (with the levels) when the
    /// model refuses it.
    pub fn scenario(&self, seed: u64, levels: &[usize]) -> Result<Scenario, GridError> {
        let mut scenario = self.base_for(seed)?;
        scenario.seed = seed;
        // Apply in the order of FACTORS: the trace after the bandwidth.
        let mut chosen: Vec<&Level> = self
            .factors
            .iter()
            .zip(levels)
            .map(|(f, &i)| &f.levels[i].1)
            .collect();
        chosen.sort_by_key(|level| level_rank(level));
        for level in chosen {
            apply(&mut scenario, level);
        }
        scenario.validate().map_err(|invalid| {
            let named: Vec<String> = self
                .factors
                .iter()
                .zip(levels)
                .map(|(f, &i)| format!("{} = {}", f.name, f.levels[i].0))
                .collect();
            GridError::Invalid {
                at: self.origin.clone(),
                key: Some(format!("combination seed = {seed}, {}", named.join(", "))),
                message: invalid.to_string(),
            }
        })?;
        Ok(scenario)
    }
}

/// The number of combinations, `None` beyond [`MAX_COMBINATIONS`] (or when
/// the product overflows).
fn combination_count(factors: &[Factor], seeds: usize) -> Option<usize> {
    factors
        .iter()
        .map(|f| f.levels.len())
        .chain(std::iter::once(seeds.max(1)))
        .try_fold(1usize, |n, k| n.checked_mul(k))
        .filter(|&n| n <= MAX_COMBINATIONS)
}

/// Whether a level changes the VMs or hosts (the rest change the network,
/// the migration or the controller).
fn touches_fleet(level: &Level) -> bool {
    matches!(
        level,
        Level::Memory(_) | Level::DirtyRate(_) | Level::PowerOffScale(_) | Level::PowerNews(_)
    )
}

fn level_rank(level: &Level) -> usize {
    match level {
        Level::Policy(_) => 0,
        Level::WanBandwidth(_) => 1,
        Level::WanRtt(_) => 2,
        Level::TcpWindow(_) => 3,
        Level::Connections(_) => 4,
        Level::Memory(_) => 5,
        Level::DirtyRate(_) => 6,
        Level::Mode(_) => 7,
        Level::Trace(_) => 8,
        Level::Order(_) => 9,
        Level::MaxInFlight(_) => 10,
        Level::MaxInFlightPerHost(_) => 11,
        Level::PowerOffScale(_) => 12,
        Level::PowerNews(_) => 13,
    }
}

fn parse_level(name: &str, value: &toml::Value) -> Result<Level, String> {
    let text = || {
        value
            .as_str()
            .ok_or_else(|| format!("expected a string, found {} `{value}`", value.type_str()))
    };
    let integer = || {
        value
            .as_integer()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("expected a positive integer, found `{value}`"))
    };
    Ok(match name {
        "policy" => Level::Policy(text()?.parse()?),
        "wan_bandwidth" => Level::WanBandwidth(text()?.parse().map_err(|e| format!("{e}"))?),
        "wan_rtt" => Level::WanRtt(parse_duration(text()?).map_err(|e| format!("{e}"))?),
        "tcp_window" => Level::TcpWindow(text()?.parse().map_err(|e| format!("{e}"))?),
        "connections" => Level::Connections(Connections::try_from(integer()?)?),
        "memory" => Level::Memory(match text()? {
            "base" => MemoryPreset::Base,
            "equal" => MemoryPreset::Equal,
            "skewed" => MemoryPreset::Skewed,
            other => {
                return Err(format!(
                    "unknown memory preset `{other}`; expected base, equal or skewed"
                ))
            }
        }),
        "dirty_rate" => Level::DirtyRate(text()?.parse().map_err(|e| format!("{e}"))?),
        "mode" => Level::Mode(match text()? {
            "live" => Mode::Live,
            "offline" => Mode::Offline,
            "postcopy" => Mode::Postcopy,
            other => {
                return Err(format!(
                    "unknown mode `{other}`; expected live, offline or postcopy"
                ))
            }
        }),
        "trace" => Level::Trace(match text()? {
            "base" => TracePreset::Base,
            "steady" => TracePreset::Steady,
            "fluctuating" => TracePreset::Fluctuating,
            "dip" => TracePreset::Dip,
            "slow-start" => TracePreset::SlowStart,
            "near-outage" => TracePreset::NearOutage,
            "sawtooth" => TracePreset::Sawtooth,
            "stalls" => TracePreset::Stalls,
            other => {
                return Err(format!(
                    "unknown trace preset `{other}`; expected base, steady, fluctuating, dip, slow-start, near-outage, sawtooth or stalls"
                ))
            }
        }),
        "order" => Level::Order(text()?.parse()?),
        "max_in_flight" => Level::MaxInFlight(integer()? as usize),
        "max_in_flight_per_host" => Level::MaxInFlightPerHost(integer()? as usize),
        "power_off_scale" => Level::PowerOffScale(
            value
                .as_float()
                .or_else(|| value.as_integer().map(|n| n as f64))
                .filter(|x| x.is_finite() && *x > 0.0 && *x <= 1e6)
                .ok_or_else(|| format!("expected a positive number (at most 1e6), found `{value}`"))?,
        ),
        "power_news" => Level::PowerNews(PowerNews::parse(text()?)?),
        _ => unreachable!("checked against FACTORS"),
    })
}

/// The smallest VM `skewed` draws.
const SKEWED_MIN: Bytes = Bytes::mib(64);
/// `fluctuating`: the low phase's share of the bandwidth, and the range of a
/// phase's length in seconds.
const LOW_SHARE: f64 = 0.4;
const PHASE_S: (f64, f64) = (30.0, 90.0);

fn apply(scenario: &mut Scenario, level: &Level) {
    let seed = scenario.seed;
    match *level {
        Level::Policy(policy) => scenario.controller.policy = policy,
        Level::WanBandwidth(bandwidth) => {
            let ratio = bandwidth.0 / scenario.network.wan_bandwidth.0;
            for point in &mut scenario.network.wan_trace {
                point.bandwidth = BitsPerSec(point.bandwidth.0 * ratio);
            }
            scenario.network.wan_bandwidth = bandwidth;
        }
        Level::WanRtt(rtt) => scenario.network.wan_rtt = rtt,
        Level::TcpWindow(window) => scenario.network.tcp_window = window,
        Level::Connections(connections) => scenario.migration.connections = connections,
        Level::Memory(MemoryPreset::Base) => {}
        Level::Memory(preset) => {
            let vms = &mut scenario.fleet.vms;
            if vms.is_empty() {
                return;
            }
            let total: f64 = vms.iter().map(|vm| vm.memory.as_f64()).sum();
            let sizes: Vec<f64> = match preset {
                MemoryPreset::Equal => vec![total / vms.len() as f64; vms.len()],
                _ => {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d65_6d6f_7279);
                    let lognormal = rand_distr::LogNormal::new(0.0, 1.0).expect("valid parameters");
                    let draws: Vec<f64> = vms.iter().map(|_| rng.sample(lognormal)).collect();
                    let sum: f64 = draws.iter().sum();
                    draws.iter().map(|d| d / sum * total).collect()
                }
            };
            for (vm, size) in vms.iter_mut().zip(sizes) {
                let mib = (size / Bytes::mib(1).as_f64()).round().max(1.0) as u64;
                let memory = match preset {
                    MemoryPreset::Skewed => Bytes::mib(mib).max(SKEWED_MIN),
                    _ => Bytes::mib(mib),
                };
                let ratio = vm.working_set.as_f64() / vm.memory.as_f64();
                vm.working_set = Bytes::from_f64(memory.as_f64() * ratio).min(memory);
                // A dirty curve scales with the memory, as the working set.
                let scale = memory.as_f64() / vm.memory.as_f64();
                for point in &mut vm.profile.dirty_curve {
                    point.dirtied = Bytes::from_f64(point.dirtied.as_f64() * scale).min(memory);
                }
                vm.memory = memory;
            }
        }
        Level::DirtyRate(rate) => {
            for vm in &mut scenario.fleet.vms {
                vm.dirty_rate = rate;
                // The factor is one rate: a dirty curve gives way to the
                // short form (that rate up to the curve's last point).
                vm.profile.dirty_curve.clear();
            }
        }
        Level::Mode(mode) => scenario.migration.mode = mode,
        Level::Trace(TracePreset::Base) => {}
        Level::Trace(TracePreset::Steady) => scenario.network.wan_trace.clear(),
        Level::Trace(TracePreset::Fluctuating) => {
            scenario.network.wan_trace = fluctuating_trace(scenario, seed);
        }
        Level::Trace(preset) => {
            scenario.network.wan_trace = disturbed_trace(preset, scenario.network.wan_bandwidth, seed);
        }
        Level::Order(order) => scenario.controller.order = Some(order),
        Level::MaxInFlight(n) => scenario.controller.max_in_flight = n,
        Level::MaxInFlightPerHost(n) => scenario.controller.max_in_flight_per_host = n,
        Level::PowerOffScale(scale) => {
            for host in &mut scenario.fleet.hosts {
                host.power_off_at = host.power_off_at.map(|at| at.mul_f64(scale));
                for change in &mut host.power_trace {
                    change.at = change.at.mul_f64(scale);
                    change.power_off_at = change.power_off_at.map(|at| at.mul_f64(scale));
                }
            }
        }
        Level::PowerNews(PowerNews::Base) => {}
        Level::PowerNews(PowerNews::None) => {
            for host in &mut scenario.fleet.hosts {
                host.power_trace.clear();
            }
        }
        Level::PowerNews(PowerNews::Shift { shift, at }) => {
            for host in &mut scenario.fleet.hosts {
                let Some(power_off) = host.power_off_at else {
                    host.power_trace.clear();
                    continue;
                };
                let off = power_off.as_secs_f64();
                let at = at.of(off).max(0.0);
                let moved = (off + shift.of(off)).max(0.0);
                host.power_trace = vec![evac_model::PowerChange {
                    at: Duration::from_secs_f64(at),
                    power_off_at: Some(Duration::from_secs_f64(moved)),
                }];
            }
        }
    }
}

/// 100 % / 40 % of the bandwidth in phases of 30 to 90 s, up to a horizon
/// no evacuation outlasts: 100 times the time to carry every VM at the low
/// rate over one connection per migration, or at least an hour.
fn fluctuating_trace(scenario: &Scenario, seed: u64) -> Vec<TracePoint> {
    let network = &scenario.network;
    let high = network.wan_bandwidth;
    let low = BitsPerSec(high.0 * LOW_SHARE);
    let slowest = low.0.min(network.connection_cap().0);
    let carry = scenario.fleet.total_memory().as_f64() * 8.0 / slowest;
    let horizon = (100.0 * carry).clamp(3600.0, 1e7);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0074_7261_6365);
    let mut points = Vec::new();
    let mut t = 0.0;
    let mut is_high = true;
    while t < horizon && points.len() < 200_000 {
        t += rng.gen_range(PHASE_S.0..PHASE_S.1);
        is_high = !is_high;
        points.push(TracePoint {
            at: Duration::from_secs_f64(t),
            bandwidth: if is_high { high } else { low },
        });
    }
    points
}

/// The WANs of a disaster, as shares of `base` over time, each drawn from
/// the seed (so repeat seeds give new shapes of the same family):
///
/// - `dip`: after 1-5 min the WAN falls to 5-20 % for 5-15 min, then
///   recovers to 1-5 times what it was (other traffic gone, a backup link
///   up);
/// - `slow-start`: 5-20 % for the first 3-8 min, then all of it;
/// - `near-outage`: after 1-6 min, 0.5-2 % for 2-6 min, then all of it;
/// - `sawtooth`: climbs from 20 % to 100 % in five steps over 3-6 min,
///   falls back, and again;
/// - `stalls`: all of it for 2-5 min, then 0.5-2 % for 0.5-2 min, and
///   again.
///
/// Repeating shapes run for 10 hours (no benchmark evacuation outlasts it);
/// after the last point the WAN stays at full bandwidth.
fn disturbed_trace(preset: TracePreset, base: BitsPerSec, seed: u64) -> Vec<TracePoint> {
    const MIN: f64 = 60.0;
    const HORIZON_S: f64 = 36_000.0;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0064_6973_7475_7262);
    let mut points = Vec::new();
    let mut push = |at: f64, share: f64| {
        points.push(TracePoint {
            at: Duration::from_secs_f64(at),
            bandwidth: BitsPerSec(base.0 * share),
        });
    };
    match preset {
        TracePreset::Dip => {
            let from = rng.gen_range(1.0..5.0) * MIN;
            push(from, rng.gen_range(0.05..0.20));
            push(from + rng.gen_range(5.0..15.0) * MIN, rng.gen_range(1.0..5.0));
        }
        TracePreset::SlowStart => {
            // From the start: the base bandwidth never shows.
            push(0.001, rng.gen_range(0.05..0.20));
            push(rng.gen_range(3.0..8.0) * MIN, 1.0);
        }
        TracePreset::NearOutage => {
            let from = rng.gen_range(1.0..6.0) * MIN;
            push(from, rng.gen_range(0.005..0.02));
            push(from + rng.gen_range(2.0..6.0) * MIN, 1.0);
        }
        TracePreset::Sawtooth => {
            let step = rng.gen_range(3.0..6.0) * MIN / 5.0;
            let mut t = 0.001;
            while t < HORIZON_S {
                for k in 0..5 {
                    push(t, 0.2 + 0.2 * f64::from(k));
                    t += step;
                }
            }
        }
        TracePreset::Stalls => {
            let mut t = 0.0;
            while t < HORIZON_S {
                t += rng.gen_range(2.0..5.0) * MIN;
                push(t, rng.gen_range(0.005..0.02));
                t += rng.gen_range(0.5..2.0) * MIN;
                push(t, 1.0);
            }
        }
        TracePreset::Base | TracePreset::Steady | TracePreset::Fluctuating => {
            unreachable!("not a disturbed trace")
        }
    }
    points
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

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// The rows as a markdown table: a column per factor that varies (and the
/// seed, when it does), then the metrics; factors every row shares are
/// listed in a line above the table.
pub fn markdown_table(rows: &[SweepRow]) -> String {
    let mut out = String::new();
    let Some(first) = rows.first() else {
        return "(no rows)\n".to_owned();
    };
    let varies = |i: usize| rows.iter().any(|r| r.factors[i].1 != first.factors[i].1);
    let varying: Vec<usize> = (0..first.factors.len()).filter(|&i| varies(i)).collect();
    let fixed: Vec<String> = (0..first.factors.len())
        .filter(|&i| !varies(i))
        .map(|i| format!("{} = {}", first.factors[i].0, first.factors[i].1))
        .collect();
    let seed_varies = rows.iter().any(|r| r.seed != first.seed);
    let mut shared = fixed;
    if !seed_varies {
        shared.push(format!("seed = {}", first.seed));
    }
    if rows.iter().all(|r| r.vms == first.vms) {
        shared.push(format!("{} VMs", first.vms));
    }
    if !shared.is_empty() {
        let _ = writeln!(out, "All rows: {}.\n", shared.join(", "));
    }
    let mut header: Vec<String> = varying.iter().map(|&i| first.factors[i].0.clone()).collect();
    if seed_varies {
        header.push("seed".into());
    }
    let metrics = [
        "total (s)",
        "bound total (s)",
        "mean migration (s)",
        "bound mean (s)",
        "max migration (s)",
        "not migrated",
        "lost",
        "score",
    ];
    header.extend(metrics.iter().map(|s| s.to_string()));
    let numeric_from = header.len() - metrics.len();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let align: Vec<&str> = (0..header.len())
        .map(|i| if i < numeric_from { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "|{}|", align.join("|"));
    for row in rows {
        let mut cells: Vec<String> = varying.iter().map(|&i| row.factors[i].1.clone()).collect();
        if seed_varies {
            cells.push(row.seed.to_string());
        }
        cells.extend([
            seconds(row.total_time_s),
            format!("{:.1}", row.lower_bound_total_s),
            seconds(row.mean_migration_time_s),
            format!("{:.1}", row.lower_bound_mean_migration_s),
            seconds(row.max_migration_time_s),
            format!("{} of {}", row.not_migrated, row.vms),
            format!("{} of {}", row.lost, row.vms),
            row.score.map_or_else(|| "-".to_owned(), |s| format!("{s:.3}")),
        ]);
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// One CSV record per row: a column per factor, then `seed`, `vms` and the
/// metrics; a missing value is an empty cell.
pub fn write_csv<W: Write>(rows: &[SweepRow], out: W) -> Result<(), csv::Error> {
    let mut writer = csv::Writer::from_writer(out);
    let opt = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
    if let Some(first) = rows.first() {
        let mut header: Vec<String> = first.factors.iter().map(|(k, _)| k.clone()).collect();
        header.extend(
            [
                "seed",
                "vms",
                "total_time_s",
                "mean_migration_time_s",
                "max_migration_time_s",
                "lower_bound_total_s",
                "lower_bound_mean_migration_s",
                "migrated",
                "not_migrated",
                "lost",
                "score",
                "priority_saved",
                "priority_total",
            ]
            .map(String::from),
        );
        writer.write_record(&header)?;
    }
    for row in rows {
        let mut record: Vec<String> = row.factors.iter().map(|(_, v)| v.clone()).collect();
        record.extend([
            row.seed.to_string(),
            row.vms.to_string(),
            opt(row.total_time_s),
            opt(row.mean_migration_time_s),
            opt(row.max_migration_time_s),
            row.lower_bound_total_s.to_string(),
            row.lower_bound_mean_migration_s.to_string(),
            row.migrated.to_string(),
            row.not_migrated.to_string(),
            row.lost.to_string(),
            opt(row.score),
            row.priority_saved.to_string(),
            row.priority_total.to_string(),
        ]);
        writer.write_record(&record)?;
    }
    writer.flush()?;
    Ok(())
}

/// The rows as a pretty JSON array of [`SweepRow`] objects (`factors` an
/// object in the grid's order).
pub fn write_json<W: Write>(rows: &[SweepRow], out: W) -> serde_json::Result<()> {
    serde_json::to_writer_pretty(out, rows)
}

#[cfg(test)]
mod tests;
