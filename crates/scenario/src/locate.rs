//! Finding things in the text of a scenario: which line a field is on, and
//! how to name it so that a reader finds it (``field `memory` of [[vm]] "web-1"``).
//!
//! The typed structs of [`crate::raw`] keep no positions, so the text is read
//! a second time into a tree that keeps nothing but the position of every
//! value (and the text of string values, to name `[[vm]]` entries by their
//! `name`). Scenario files are small: the second read costs nothing that
//! matters.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// The arrays of tables whose entries are named by one of their keys.
const NAMED_ENTRIES: [(&str, &str); 3] = [("host", "name"), ("vm", "name"), ("vm_group", "prefix")];

pub use evac_model::validate::{FieldPath, Step};

/// The path where serde gave up on a value.
pub fn path_from_serde(path: &serde_path_to_error::Path) -> FieldPath {
    use serde_path_to_error::Segment;
    let steps = path
        .iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Enum { variant } => Some(Step::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect();
    FieldPath(steps)
}

/// A value of the document, reduced to what locating needs.
#[derive(Debug)]
enum Node {
    Table(BTreeMap<String, Spanned<Node>>),
    Array(Vec<Spanned<Node>>),
    Text(String),
    Other,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

/// The key under which the toml crate hands over a date-time, as a one-key
/// table whose value carries no position.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Node, E> {
        Ok(Node::Text(text.to_owned()))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut table = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == TOML_DATETIME_KEY {
                map.next_value::<IgnoredAny>()?;
                return Ok(Node::Other);
            }
            table.insert(key, map.next_value()?);
        }
        Ok(Node::Table(table))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
}

/// Positions and names of everything in one TOML text (a scenario, an
/// inventory): where a [`FieldPath`] is, and how to name it.
#[derive(Debug)]
pub struct Locator<'a> {
    text: &'a str,
    root: Node,
    /// Tables of one array kept out of `root` (a scenario's `[[vm]]`s, see
    /// `crate::split`): only where each is in `text`, each read again when
    /// a refusal needs to find something in it.
    apart: Option<Apart>,
}

#[derive(Debug)]
struct Apart {
    array: String,
    tables: Vec<Range<usize>>,
}

/// What a path leads to: the span of the value (or of the nearest enclosing
/// value the file writes) and, when the path ends at a string, its text.
#[derive(Default)]
struct Found {
    span: Option<Range<usize>>,
    text: Option<String>,
}

impl<'a> Locator<'a> {
    /// Reads `text`; fails only when it is not TOML.
    pub fn parse(text: &'a str) -> Result<Self, toml::de::Error> {
        let table: BTreeMap<String, Spanned<Node>> = toml::from_str(text)?;
        Ok(Self {
            text,
            root: Node::Table(table),
            apart: None,
        })
    }

    /// Reads `rest`, the text with the `[[array]]` tables at `tables`
    /// blanked (same length and lines as `text`); those tables are located
    /// in `text` when asked about. Fails only when `rest` is not TOML, and
    /// then hands `tables` back.
    pub(crate) fn parse_apart(
        text: &'a str,
        rest: &str,
        array: &str,
        tables: Vec<Range<usize>>,
    ) -> Result<Self, (toml::de::Error, Vec<Range<usize>>)> {
        let table: BTreeMap<String, Spanned<Node>> = match toml::from_str(rest) {
            Ok(table) => table,
            Err(error) => return Err((error, tables)),
        };
        Ok(Self {
            text,
            root: Node::Table(table),
            apart: Some(Apart {
                array: array.to_owned(),
                tables,
            }),
        })
    }

    /// Where the `index`th table of `array` starts: for a table kept apart,
    /// without reading it again.
    pub(crate) fn entry_offset(&self, array: &str, index: usize) -> Option<usize> {
        match &self.apart {
            Some(apart) if apart.array == array => apart.tables.get(index).map(|table| table.start),
            _ => self.offset(&FieldPath::entry(array, index)),
        }
    }

    /// Where the tables kept apart are, in order (none when none are).
    pub(crate) fn tables_apart(&self) -> &[Range<usize>] {
        self.apart.as_ref().map_or(&[], |apart| &apart.tables)
    }

    /// Follows `path`, into a table kept apart when it leads there.
    fn find(&self, path: &FieldPath) -> Found {
        let Some(apart) = &self.apart else {
            return walk(&self.root, &path.0);
        };
        let (index, tail) = match path.0.as_slice() {
            [Step::Key(key), Step::Index(index), tail @ ..] if *key == apart.array => (*index, tail),
            // The array itself: where its first table is.
            [Step::Key(key)] if *key == apart.array => (0, &[][..]),
            _ => return walk(&self.root, &path.0),
        };
        let Some(range) = apart.tables.get(index) else {
            return Found::default();
        };
        // The table alone is a document whose `array` has one entry; its
        // spans are counted from the table's start.
        let Ok(table) = toml::from_str::<BTreeMap<String, Spanned<Node>>>(&self.text[range.clone()]) else {
            return Found::default();
        };
        let mut steps = vec![Step::Key(apart.array.clone())];
        if path.0.len() > 1 {
            steps.push(Step::Index(0));
            steps.extend(tail.iter().cloned());
        }
        let found = walk(&Node::Table(table), &steps);
        Found {
            span: found
                .span
                .map(|span| span.start + range.start..span.end + range.start),
            text: found.text,
        }
    }

    /// The span of the value at `path` or, when the file does not write it
    /// (a default), of the nearest enclosing value it does write.
    fn span(&self, path: &FieldPath) -> Option<Range<usize>> {
        self.find(path).span
    }

    /// Where the value at `path` starts, in bytes; see [`Locator::span`].
    pub fn offset(&self, path: &FieldPath) -> Option<usize> {
        self.span(path).map(|span| span.start)
    }

    /// The line of the value at `path`; see [`Locator::span`].
    pub fn line(&self, path: &FieldPath) -> Option<usize> {
        self.offset(path).map(|offset| line_at(self.text, offset))
    }

    /// The string written exactly at `path`, if there is one.
    fn text_at(&self, path: &FieldPath) -> Option<String> {
        self.find(path).text
    }

    /// How a reader finds `path` in the file: ``field `memory` of [[vm]] "web-1"``,
    /// ``field `wan_trace[1].at` of [network]``, ``[[host]] #3``, ``field `seed```.
    /// `None` for the document as a whole.
    pub fn describe(&self, path: &FieldPath) -> Option<String> {
        let (owner, field) = match path.0.as_slice() {
            [] => return None,
            [Step::Key(array), Step::Index(index), rest @ ..] => {
                (Some(self.entry_label(array, *index)), rest)
            }
            [Step::Key(table), rest @ ..] if !rest.is_empty() => (Some(format!("[{table}]")), rest),
            steps => (None, steps),
        };
        let field = FieldPath(field.to_vec());
        Some(match owner {
            Some(owner) if field.0.is_empty() => owner,
            Some(owner) => format!("field `{field}` of {owner}"),
            None => format!("field `{field}`"),
        })
    }

    /// The model's refusal as one line, the way a scenario's is printed:
    /// ``lab.toml:16: field `nic` of [[host]] "dst-1": a NIC of 0 bps carries nothing; ...``.
    pub fn refusal(&self, origin: &str, invalid: &evac_model::Invalid) -> String {
        let at = match self.line(&invalid.path) {
            Some(line) => format!("{origin}:{line}"),
            None => origin.to_owned(),
        };
        match self.describe(&invalid.path) {
            Some(field) => format!("{at}: {field}: {}", invalid.message),
            None => format!("{at}: {}", invalid.message),
        }
    }

    /// `[[vm]] "web-1"` by the entry's name, or `[[vm]] #2` (counted from 1)
    /// when it has none.
    fn entry_label(&self, array: &str, index: usize) -> String {
        let name = NAMED_ENTRIES
            .iter()
            .find(|(named, _)| *named == array)
            .and_then(|(_, key)| self.text_at(&FieldPath::entry(array, index).key(key)));
        match name {
            Some(name) => format!("[[{array}]] \"{name}\""),
            None => format!("[[{array}]] #{}", index + 1),
        }
    }
}

/// Where the model's refusal is in a TOML `text` (an inventory's): its
/// 1-based line (0 when unknown) and the refusal as the reader finds it,
/// ``field `nic` of [[host]] "dst-1": a NIC of 0 bps carries nothing; ...``,
/// the same words a scenario's refusal has after its `file:line: `.
pub fn place(text: &str, invalid: &evac_model::Invalid) -> (usize, String) {
    let Ok(locator) = Locator::parse(text) else {
        return (0, invalid.to_string());
    };
    let line = locator.line(&invalid.path).unwrap_or(0);
    let message = match locator.describe(&invalid.path) {
        Some(field) => format!("{field}: {}", invalid.message),
        None => invalid.message.clone(),
    };
    (line, message)
}

/// Whether `text` reads as [`Locator::parse`] reads it, for a part of a
/// text read apart: what it refuses is the text's syntax error.
pub(crate) fn check_syntax(text: &str) -> Result<(), toml::de::Error> {
    toml::from_str::<BTreeMap<String, Spanned<Node>>>(text).map(drop)
}

/// Follows `steps` from `node` as far as the document goes.
fn walk(mut node: &Node, steps: &[Step]) -> Found {
    let mut span = None;
    for step in steps {
        let next = match (node, step) {
            (Node::Table(table), Step::Key(key)) => table.get(key),
            (Node::Array(items), Step::Index(index)) => items.get(*index),
            _ => None,
        };
        let Some(next) = next else {
            return Found { span, text: None };
        };
        span = Some(next.span());
        node = next.get_ref();
    }
    let text = match node {
        Node::Text(text) => Some(text.clone()),
        _ => None,
    };
    Found { span, text }
}

/// The 1-based line of the byte at `offset`.
pub fn line_at(text: &str, offset: usize) -> usize {
    let before = &text.as_bytes()[..offset.min(text.len())];
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "seed = 1\n\n[network]\nwan_trace = [\n  { at = \"0 s\" },\n  { at = \"1 s\" },\n]\n\n[[vm]]\nname = \"web-1\"\nmemory = \"4 GiB\"\n\n[[vm]]\nmemory = \"1 GiB\"\n";

    #[test]
    fn finds_lines_of_nested_values() {
        let locator = Locator::parse(TEXT).unwrap();
        assert_eq!(locator.line(&FieldPath::top("seed")), Some(1));
        let trace = FieldPath::top("network").key("wan_trace");
        assert_eq!(locator.line(&trace.clone().index(1).key("at")), Some(6));
        assert_eq!(locator.line(&FieldPath::entry("vm", 0).key("memory")), Some(11));
        // Not written: the entry's own line stands in.
        assert_eq!(
            locator.line(&FieldPath::entry("vm", 1).key("dirty_rate")),
            Some(13)
        );
        assert_eq!(locator.line(&FieldPath::top("migration")), None);
    }

    #[test]
    fn names_fields_as_the_file_shows_them() {
        let locator = Locator::parse(TEXT).unwrap();
        let describe = |path: FieldPath| locator.describe(&path).unwrap();
        assert_eq!(
            describe(FieldPath::entry("vm", 0).key("memory")),
            "field `memory` of [[vm]] \"web-1\""
        );
        assert_eq!(describe(FieldPath::entry("vm", 1)), "[[vm]] #2");
        assert_eq!(
            describe(FieldPath::top("network").key("wan_trace").index(1).key("at")),
            "field `wan_trace[1].at` of [network]"
        );
        assert_eq!(describe(FieldPath::top("seed")), "field `seed`");
        assert_eq!(locator.describe(&FieldPath::default()), None);
    }

    #[test]
    fn a_datetime_does_not_stop_the_locator() {
        let locator = Locator::parse("when = 1979-05-27T07:32:00Z\nseed = 2\n").unwrap();
        assert_eq!(locator.line(&FieldPath::top("seed")), Some(2));
    }

    #[test]
    fn counts_lines_from_one() {
        assert_eq!(line_at("a\nb\nc", 0), 1);
        assert_eq!(line_at("a\nb\nc", 2), 2);
        assert_eq!(line_at("a\nb\nc", 4), 3);
    }
}
