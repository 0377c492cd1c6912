//! What every backend's inventory file shares: reading it (bounded),
//! parsing its TOML with the place of every error (file, line, column and
//! the field's path, e.g. `host[1].nic`), and the checks of its hosts and
//! VMs that do not depend on the backend; the `[[host]]` and `[[vm]]`
//! fields they share ([`entries`]). Each backend's inventory module keeps
//! its own fields and the checks only it needs.
//!
//! This module reads, parses and places refusals; beside it, `check` (the
//! common checks), `model` (the WAN and a VM's stated profile into the
//! model), `edit` (what a run takes from an inventory and from an edit of
//! it), `entries` and `extend`.

mod check;
mod edit;
pub mod entries;
mod extend;
mod model;
#[cfg(test)]
mod tests;

pub use check::{check_hosts_and_vms, HostView, VmView};
pub use edit::{changed_beyond_power, power_offs, ups_hosts, Editable, PowerView, RunInventory};
pub use evac_scenario::locate::place;
pub use extend::extended;
pub use model::{network, stated_profile, NetworkSpec};

use std::path::{Path, PathBuf};

use evac_scenario::locate::line_column;
use serde::de::DeserializeOwned;

/// Why an inventory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The TOML does not fit the format: a syntax error, an unknown key, a
    /// value of the wrong type or unit.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The file parses but cannot be used; `line` is the entry's (0 when
    /// the problem is the file as a whole).
    #[error("{}", located(path, *line, message))]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

fn located(path: &Path, line: usize, message: &str) -> String {
    if line == 0 {
        format!("{}: {message}", path.display())
    } else {
        format!("{}:{line}: {message}", path.display())
    }
}

/// Inventories larger than this are refused: they are hand-written lists
/// of hosts and VMs, and a larger file is not one.
pub const MAX_INVENTORY_BYTES: u64 = 16 << 20;

/// The text of the inventory at `path`, at most [`MAX_INVENTORY_BYTES`].
pub fn read(path: &Path) -> Result<String, InventoryError> {
    let error = |source| InventoryError::Read {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(error)?.len();
    if len > MAX_INVENTORY_BYTES {
        return Err(error(std::io::Error::other(format!(
            "{len} bytes: an inventory is at most {MAX_INVENTORY_BYTES} bytes"
        ))));
    }
    std::fs::read_to_string(path).map_err(error)
}

/// Parses `text` (the file at `path`) as `T`; an error says where, and
/// which field (the line alone does not say which of several `[[host]]`
/// tables' `nic` it is).
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, InventoryError> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        let field = e.path().to_string();
        let e = e.into_inner();
        let (line, column) = e.span().map_or((0, 0), |s| line_column(text, s.start));
        InventoryError::Parse {
            path: path.to_owned(),
            line,
            column,
            message: if field == "." {
                evac_model::suggest::serde_message(e.message())
            } else {
                format!(
                    "field `{field}`: {}",
                    evac_model::suggest::serde_message(e.message())
                )
            },
        }
    })
}

/// Where a refusal points: an entry (by its `name`) or a top-level key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// The `[[host]]` or `[[vm]]` whose `name` is this.
    Entry(String),
    /// A top-level key such as `backend`.
    Key(&'static str),
    /// The file as a whole.
    File,
}

/// A refusal by a check: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub at: At,
    pub message: String,
}

impl Refusal {
    pub fn new(at: At, message: impl Into<String>) -> Self {
        Refusal {
            at,
            message: message.into(),
        }
    }

    /// The error for `path`, whose `text` gives the line.
    pub fn into_error(self, text: &str, path: &Path) -> InventoryError {
        InventoryError::Invalid {
            path: path.to_owned(),
            line: line_of(text, &self.at),
            message: self.message,
        }
    }
}

/// The line of `at` in `text` (its first `name = "<entry>"` or `<key> =`),
/// 0 if none.
pub fn line_of(text: &str, at: &At) -> usize {
    let found = text.lines().position(|l| {
        let l = l.trim_start();
        match at {
            At::Entry(name) => {
                let Some(rest) = l.strip_prefix("name") else {
                    return false;
                };
                let value = rest.trim_start().strip_prefix('=').map(str::trim);
                value.is_some_and(|v| v.trim_matches(|c| c == '"' || c == '\'') == name)
            }
            At::Key(key) => l
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('=')),
            At::File => false,
        }
    });
    found.map_or(0, |i| i + 1)
}
