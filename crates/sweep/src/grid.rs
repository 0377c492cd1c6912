//! Reading a grid: its base, its factors and their levels, each refusal
//! at its file and line; and its combinations.

use std::collections::BTreeMap;
use std::path::Path;

use evac_scenario::locate::line_at;
use evac_scenario::{Scenario, DEFAULT_SCENARIO_TOML};
use rayon::prelude::*;
use serde::Deserialize;
use toml::Spanned;

use crate::apply::apply;
use crate::levels::{level_rank, parse_level, touches_fleet};
use crate::{Factor, Grid, GridError, Level, FACTORS, MAX_COMBINATIONS};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrid {
    name: Option<String>,
    base: Option<Spanned<toml::Value>>,
    repeat_seeds: Option<Spanned<Vec<u64>>>,
    #[serde(skip)]
    repeat_seeds_at: Option<usize>,
    #[serde(default)]
    factors: BTreeMap<Spanned<String>, Spanned<Vec<Spanned<toml::Value>>>>,
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
        let at = |offset: usize| format!("{origin}:{}", line_at(text, offset));
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
pub(crate) fn combination_count(factors: &[Factor], seeds: usize) -> Option<usize> {
    factors
        .iter()
        .map(|f| f.levels.len())
        .chain(std::iter::once(seeds.max(1)))
        .try_fold(1usize, |n, k| n.checked_mul(k))
        .filter(|&n| n <= MAX_COMBINATIONS)
}
