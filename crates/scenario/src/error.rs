//! Why a scenario is refused, said so that its author can fix it.

use std::fmt;
use std::path::PathBuf;

/// Where in a scenario's text a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file the text came from, or `<embedded default>`.
    pub origin: String,
    /// The 1-based line, when the problem is tied to one.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    /// `scenarios/x.toml:12`, the way compilers point at a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.origin),
            None => f.write_str(&self.origin),
        }
    }
}

/// A scenario that cannot be loaded.
///
/// Every message is complete on its own: it names the file, the line, the
/// field and what was expected, e.g.
/// ``scenarios/x.toml:12: field `memory` of [[vm]] "web-1": `4 GB/s` is not a size like "4 GiB" (units: ...)``.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML at all.
    #[error("{at}: not valid TOML: {message}")]
    Syntax { at: Location, message: String },
    /// The text is TOML but not a scenario that can run: a field is missing
    /// or unknown, a value has the wrong type or unit, or the values do not
    /// make sense together (a VM on an unknown host, a destination without
    /// room, a trace out of order, ...).
    #[error("{at}: {}{message}", subject(.field))]
    Invalid {
        at: Location,
        /// The field or entry at fault as a reader finds it in the file,
        /// e.g. ``field `memory` of [[vm]] "web-1"``; `None` when the problem
        /// is the scenario as a whole.
        field: Option<String>,
        message: String,
    },
}

/// `field ...: ` before the message, or nothing.
fn subject(field: &Option<String>) -> String {
    field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default()
}
