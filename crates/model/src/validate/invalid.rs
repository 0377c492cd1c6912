//! A refusal, in the vocabulary of evac's TOML formats: the path of the
//! value at fault ([`FieldPath`], `vm[0].memory`) and what is wrong
//! ([`Invalid`]). Apart from the checks because every loader maps these
//! paths to its own file, line and entry, and names them the same way.

use std::fmt;

use crate::Fleet;

/// One step into a document: a key of a table or an index into an array.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// The path of a value in a document, e.g. `vm[3].memory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(pub Vec<Step>);

impl FieldPath {
    /// The document as a whole.
    pub fn root() -> Self {
        FieldPath::default()
    }

    /// A key of the top-level table.
    pub fn top(key: &str) -> Self {
        FieldPath::default().key(key)
    }

    /// The `index`th entry of a top-level array of tables such as `[[vm]]`.
    pub fn entry(array: &str, index: usize) -> Self {
        FieldPath::top(array).index(index)
    }

    pub fn key(mut self, key: &str) -> Self {
        self.0.push(Step::Key(key.to_owned()));
        self
    }

    pub fn index(mut self, index: usize) -> Self {
        self.0.push(Step::Index(index));
        self
    }

    pub fn steps(&self) -> &[Step] {
        &self.0
    }

    /// `Some(i)` when the path is in the `i`th entry of top-level `array`.
    pub fn entry_index(&self, array: &str) -> Option<usize> {
        match self.0.as_slice() {
            [Step::Key(key), Step::Index(index), ..] if key == array => Some(*index),
            _ => None,
        }
    }

    /// The steps after the first `n`.
    pub fn tail(&self, n: usize) -> FieldPath {
        FieldPath(self.0.get(n..).unwrap_or_default().to_vec())
    }

    /// This path with `rest`'s steps appended.
    pub fn join(mut self, rest: &FieldPath) -> FieldPath {
        self.0.extend(rest.0.iter().cloned());
        self
    }
}

/// `wan_trace[1].at`: steps as TOML's dotted keys would write them.
impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(key) if i == 0 => f.write_str(key)?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A value the model refuses: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.0.is_empty() { String::new() } else { format!("field `{path}`: ") })]
pub struct Invalid {
    /// Empty when the refusal is about the whole (no source host, the
    /// fleet's memory beyond all rooms).
    pub path: FieldPath,
    pub message: String,
}

impl Invalid {
    pub fn new(path: FieldPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
        }
    }

    /// The refusal for a fleet with no file behind it (found by a backend,
    /// sized by QEMU): the entry named by its name, e.g.
    /// ``vm `web`: field `memory`: a VM needs memory above zero``.
    pub fn named(&self, fleet: &Fleet) -> String {
        let name = |array: &str, i: usize| match array {
            "host" => fleet.hosts.get(i).map(|h| h.name.as_str()),
            _ => fleet.vms.get(i).map(|v| v.name.as_str()),
        };
        for array in ["host", "vm"] {
            if let Some(i) = self.path.entry_index(array) {
                let rest = self.path.tail(2);
                let who = format!("{array} `{}`", name(array, i).unwrap_or("?"));
                return if rest.0.is_empty() {
                    format!("{who}: {}", self.message)
                } else {
                    format!("{who}: field `{rest}`: {}", self.message)
                };
            }
        }
        self.to_string()
    }

    /// This refusal with `prefix` put before its path (a sub-table's
    /// refusal, placed in its document).
    pub fn under(mut self, prefix: FieldPath) -> Self {
        self.path = prefix.join(&self.path);
        self
    }
}
