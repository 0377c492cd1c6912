//! Finding things in the text of a scenario: which line a field is on, and
//! how to name it so that a reader finds it (``field `memory` of [[vm]] "web-1"``).
//!
//! The typed structs of [`crate::raw`] keep no positions, so the text is read
//! a second time into a tree that keeps nothing but the position of every
//! value (and the text of string values, to name `[[vm]]` entries by their
//! `name`). Scenario files are small: the second read costs nothing that
//! matters.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::ops::Range;

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
    Table(BTreeMap<String, Placed>),
    Array(Vec<Placed>),
    Text(String),
    Other,
}

/// A node and where the file writes it: `None` for a table the file only
/// implies (`[controller.aimd]` makes `controller`), which is then found at
/// the nearest enclosing place written.
#[derive(Debug)]
struct Placed {
    span: Option<Range<usize>>,
    node: Node,
}

/// Reads `text` into its tree of positions. toml_edit's document keeps the
/// span of every item, implied tables included (without one): reading the
/// positions through serde's `Spanned` instead refused valid files whose
/// first mention of a table is a sub-table's header.
fn parse_tree(text: &str) -> Result<Node, toml::de::Error> {
    match toml_edit::ImDocument::parse(text) {
        Ok(document) => Ok(table_node(document.as_table().iter())),
        // The toml crate's words for the same error, as every loader's
        // serde path gives them.
        Err(_) => match toml::from_str::<toml::Table>(text) {
            Err(error) => Err(error),
            Ok(_) => Err(serde::de::Error::custom("not TOML as toml_edit reads it")),
        },
    }
}

fn table_node<'t>(entries: impl Iterator<Item = (&'t str, &'t toml_edit::Item)>) -> Node {
    Node::Table(
        entries
            .map(|(key, item)| (key.to_owned(), item_placed(item)))
            .collect(),
    )
}

fn item_placed(item: &toml_edit::Item) -> Placed {
    let node = match item {
        toml_edit::Item::Value(value) => return value_placed(value),
        toml_edit::Item::Table(table) => table_node(table.iter()),
        toml_edit::Item::ArrayOfTables(tables) => Node::Array(
            tables
                .iter()
                .map(|table| Placed {
                    span: table.span(),
                    node: table_node(table.iter()),
                })
                .collect(),
        ),
        toml_edit::Item::None => Node::Other,
    };
    Placed {
        span: item.span(),
        node,
    }
}

fn value_placed(value: &toml_edit::Value) -> Placed {
    let node = match value {
        toml_edit::Value::String(text) => Node::Text(text.value().clone()),
        toml_edit::Value::Array(items) => Node::Array(items.iter().map(value_placed).collect()),
        toml_edit::Value::InlineTable(table) => Node::Table(
            table
                .iter()
                .map(|(key, value)| (key.to_owned(), value_placed(value)))
                .collect(),
        ),
        _ => Node::Other,
    };
    Placed {
        span: value.span(),
        node,
    }
}

/// Positions and names of everything in one TOML text (a scenario, an
/// inventory): where a [`FieldPath`] is, and how to name it.
#[derive(Debug)]
pub struct Locator<'a> {
    text: &'a str,
    /// The tree of positions, read when first asked for (see
    /// [`Locator::lazy`]).
    root: OnceCell<Node>,
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
        Ok(Self {
            text,
            root: OnceCell::from(parse_tree(text)?),
            apart: None,
        })
    }

    /// Reads `text`, already read as TOML, only when something is to be
    /// found in it. A file that loads asks for nothing, and the tree of
    /// positions cost more than reading the file for its values did (a
    /// WAN trace of 133,000 points: 8 % of a million-VM run). Should the
    /// tree's reader refuse the text after all, nothing is found in it.
    pub fn lazy(text: &'a str) -> Self {
        Self {
            text,
            root: OnceCell::new(),
            apart: None,
        }
    }

    /// The tree of positions, read now if not yet.
    fn root(&self) -> &Node {
        self.root
            .get_or_init(|| parse_tree(self.text).unwrap_or_else(|_| Node::Table(BTreeMap::new())))
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
        let root = match parse_tree(rest) {
            Ok(root) => root,
            Err(error) => return Err((error, tables)),
        };
        Ok(Self {
            text,
            root: OnceCell::from(root),
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
            return walk(self.root(), &path.0);
        };
        let (index, tail) = match path.0.as_slice() {
            [Step::Key(key), Step::Index(index), tail @ ..] if *key == apart.array => (*index, tail),
            // The array itself: where its first table is.
            [Step::Key(key)] if *key == apart.array => (0, &[][..]),
            _ => return walk(self.root(), &path.0),
        };
        let Some(range) = apart.tables.get(index) else {
            return Found::default();
        };
        // The table alone is a document whose `array` has one entry; its
        // spans are counted from the table's start.
        let Ok(table) = parse_tree(&self.text[range.clone()]) else {
            return Found::default();
        };
        let mut steps = vec![Step::Key(apart.array.clone())];
        if path.0.len() > 1 {
            steps.push(Step::Index(0));
            steps.extend(tail.iter().cloned());
        }
        let found = walk(&table, &steps);
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
    parse_tree(text).map(drop)
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
        span = next.span.clone().or(span);
        node = &next.node;
    }
    let text = match node {
        Node::Text(text) => Some(text.clone()),
        _ => None,
    };
    Found { span, text }
}

/// The 1-based line of the byte at `offset`: how every TOML format of
/// evac (scenarios, grids, inventories) turns an error's span into the
/// line it names.
pub fn line_at(text: &str, offset: usize) -> usize {
    line_column(text, offset).0
}

/// The 1-based line and column (in bytes) of the byte at `offset`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.len() - before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
    (line, column)
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
    fn a_table_first_named_by_its_sub_table_is_located() {
        // `controller` is only implied by the header: it has no place of
        // its own, its sub-table does.
        let locator = Locator::parse("seed = 1\n[controller.aimd]\nmax_window = 3\n").unwrap();
        let aimd = FieldPath::top("controller").key("aimd");
        assert_eq!(locator.line(&aimd.clone().key("max_window")), Some(3));
        assert_eq!(locator.line(&aimd), Some(2));
        assert_eq!(locator.line(&FieldPath::top("controller")), None);
        assert_eq!(
            locator.describe(&aimd.key("max_window")).unwrap(),
            "field `aimd.max_window` of [controller]"
        );
    }

    #[test]
    fn counts_lines_from_one() {
        assert_eq!(line_at("a\nb\nc", 0), 1);
        assert_eq!(line_at("a\nb\nc", 2), 2);
        assert_eq!(line_at("a\nb\nc", 4), 3);
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab\ncd", 99), (2, 3));
    }
}
