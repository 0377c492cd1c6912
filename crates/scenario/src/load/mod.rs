//! From text to a checked [`Scenario`]: read the TOML, expand the groups,
//! resolve host names, and refuse anything that could not run, all before
//! anything runs. This module reads (the whole text, or its `[[vm]]` tables
//! apart, and serde's refusals placed in the file); `check` turns what was
//! read into the model and `group` expands a `[[vm_group]]`.

use evac_model::validate::Step;
use evac_model::wall_clock::Timestamp;

use crate::error::{Location, ScenarioError};
use crate::locate::{check_syntax, line_at, FieldPath, Locator};
use crate::raw::{RawScenario, RawVmTable};
use crate::split::{self, Split, SPLIT_ARRAY};
use crate::Scenario;

mod check;
mod group;
#[cfg(test)]
mod tests;

use check::Checker;

pub(crate) fn load(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
    load_at(text, origin, Timestamp::now())
}

/// Loads `text`; a file without its own `start` starts at `start`.
pub(crate) fn load_at(text: &str, origin: &str, start: Timestamp) -> Result<Scenario, ScenarioError> {
    load_with(text, origin, split::split(text), start)
}

/// Loads `text`, with its `[[vm]]` tables cut out by `split` if given.
fn load_with(
    text: &str,
    origin: &str,
    split: Option<Split>,
    start: Timestamp,
) -> Result<Scenario, ScenarioError> {
    let (locator, raw) = match split {
        Some(split) => read_apart(text, origin, split)?,
        None => read_whole(text, origin)?,
    };
    Checker {
        locator: &locator,
        origin,
        start,
    }
    .scenario(raw)
}

/// Reads `text` as one document. The positions are read only when a
/// refusal needs them ([`Locator::lazy`]); when serde refuses, the
/// locator's reading tells a text that is not TOML from a value that is
/// wrong.
fn read_whole<'t>(text: &'t str, origin: &str) -> Result<(Locator<'t>, RawScenario), ScenarioError> {
    match serde_path_to_error::deserialize(toml::Deserializer::new(text)) {
        Ok(raw) => Ok((Locator::lazy(text), raw)),
        Err(error) => {
            let locator = Locator::parse(text).map_err(|error| syntax_error(text, origin, &error, 0))?;
            Err(data_error(text, origin, &locator, error, 0, None))
        }
    }
}

/// Reads `text` with its `[[vm]]` tables cut out (`crate::split`): the rest
/// as one document, then each table on its own, kept only as its
/// [`RawVm`]. A refusal is the one reading the whole text would give: the
/// file's first syntax error, else the first value serde would meet.
fn read_apart<'t>(
    text: &'t str,
    origin: &str,
    split: Split,
) -> Result<(Locator<'t>, RawScenario), ScenarioError> {
    let Split { rest, tables } = split;
    let first_table = tables.first().map_or(0, |table| table.start);
    // The file's first syntax error, by (stage, offset): see `NotToml`.
    let mut not_toml: Option<NotToml> = None;
    let mut note = |found: NotToml| {
        if not_toml
            .as_ref()
            .map_or(true, |first| found.rank() < first.rank())
        {
            not_toml = Some(found);
        }
    };
    let (locator, tables) = match Locator::parse_apart(text, &rest, SPLIT_ARRAY, tables) {
        Ok(locator) => (Some(locator), Vec::new()),
        Err((error, tables)) => {
            note(NotToml::of(&rest, error, 0));
            (None, tables)
        }
    };
    let rest_read: Option<Result<RawScenario, _>> = locator
        .as_ref()
        .map(|_| serde_path_to_error::deserialize(toml::Deserializer::new(rest.as_str())));
    drop(rest);
    // Serde meets the document's keys in the order they first appear: the
    // rest's refusal comes first when its key appears before `[[vm]]`.
    let rest_refused_first = match (&rest_read, &locator) {
        (Some(Err(error)), Some(locator)) => match error.path().iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) => locator
                .offset(&FieldPath::top(key))
                .is_some_and(|at| at < first_table),
            // A refusal of the document itself (a missing table) comes
            // once every key has been read.
            _ => false,
        },
        _ => false,
    };
    let tables = locator
        .as_ref()
        .map_or(&tables[..], |locator| locator.tables_apart());
    let mut vms = Vec::with_capacity(tables.len());
    let mut vm_refused = None;
    for (index, table) in tables.iter().enumerate() {
        let table_text = &text[table.clone()];
        match serde_path_to_error::deserialize::<_, RawVmTable>(toml::Deserializer::new(table_text)) {
            Ok(read) => {
                if vm_refused.is_none() {
                    vms.extend(read.vm);
                }
            }
            Err(error) => {
                if let Err(syntax) = check_syntax(table_text) {
                    note(NotToml::of(table_text, syntax, table.start));
                } else if vm_refused.is_none() && !rest_refused_first {
                    vm_refused = Some((error, table.start, index));
                }
            }
        }
    }
    if let Some(not_toml) = not_toml {
        return Err(syntax_error(text, origin, &not_toml.error, not_toml.base));
    }
    let (Some(locator), Some(rest_read)) = (locator, rest_read) else {
        unreachable!("the rest was read unless it was not TOML");
    };
    let refused = |(error, base, index)| data_error(text, origin, &locator, error, base, Some(index));
    let mut raw = match (rest_read, vm_refused) {
        (Err(error), _) if rest_refused_first => {
            return Err(data_error(text, origin, &locator, error, 0, None))
        }
        (_, Some(vm)) => return Err(refused(vm)),
        (Err(error), None) => return Err(data_error(text, origin, &locator, error, 0, None)),
        (Ok(raw), None) => raw,
    };
    raw.vm = vms;
    Ok((locator, raw))
}

/// A part of the text that is not TOML as the [`Locator`] reads it.
/// Reading the whole text, the TOML parser stops at the file's first error;
/// read apart, each part's first error is ranked by where it is in the
/// file. Should the locator ever refuse what the parser accepts, the
/// parser's refusals still come first, as they would reading it whole.
struct NotToml {
    error: toml::de::Error,
    /// Where the part starts in the text.
    base: usize,
    /// Whether the TOML parser refused it (rather than the locator).
    parser: bool,
}

impl NotToml {
    fn of(part: &str, error: toml::de::Error, base: usize) -> Self {
        let parser = toml::from_str::<toml::Table>(part).is_err();
        Self { error, base, parser }
    }

    fn rank(&self) -> (bool, usize) {
        let at = self
            .error
            .span()
            .map_or(usize::MAX, |span| self.base + span.start);
        (!self.parser, at)
    }
}

/// `text` (or a table of it starting at `base`) is not TOML.
fn syntax_error(text: &str, origin: &str, error: &toml::de::Error, base: usize) -> ScenarioError {
    ScenarioError::Syntax {
        at: Location {
            origin: origin.to_owned(),
            line: error.span().map(|span| line_at(text, base + span.start)),
        },
        message: one_line(error.message()),
    }
}

/// Serde's refusal of a value of `text` (or of the `[[vm]]` table number
/// `vm`, read on its own from `base`).
fn data_error(
    text: &str,
    origin: &str,
    locator: &Locator,
    error: serde_path_to_error::Error<toml::de::Error>,
    base: usize,
    vm: Option<usize>,
) -> ScenarioError {
    let mut path = crate::locate::path_from_serde(error.path());
    if let (Some(index), Some(step @ Step::Index(0))) = (vm, path.0.get_mut(1)) {
        *step = Step::Index(index);
    }
    let error = error.into_inner();
    ScenarioError::Invalid {
        at: Location {
            origin: origin.to_owned(),
            line: error.span().map(|span| line_at(text, base + span.start)),
        },
        field: locator.describe(&path),
        message: evac_model::suggest::serde_message(&one_line(error.message())),
    }
}

/// The toml crate's messages span lines ("invalid string\nexpected ..."); a
/// refusal reads best on one.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join("; ")
}
