//! `evac init [FILE]`: a scenario of one's own to start from, the embedded
//! default (every section, commented), written to FILE or stdout.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use evac_scenario::DEFAULT_SCENARIO_TOML;

pub fn init(path: Option<&Path>) -> Result<()> {
    match path {
        None => {
            // A closed stdout (`evac init | head`) ends quietly.
            crate::output::Console::stdout().line(DEFAULT_SCENARIO_TOML.trim_end_matches('\n'))?;
        }
        Some(path) => {
            // Never overwrite: the file may be someone's edited scenario.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| {
                    format!(
                        "creating {} (an existing file is never overwritten)",
                        path.display()
                    )
                })?;
            file.write_all(DEFAULT_SCENARIO_TOML.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            crate::output::say(&format!(
                "wrote {}: edit it, then `evac simulate {}`",
                path.display(),
                path.display()
            ));
        }
    }
    Ok(())
}
