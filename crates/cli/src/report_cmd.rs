//! `evac report RUN.json [RUN2.json ...] -o report.html`: one self-contained
//! HTML page of one or more runs' JSON results (simulated or real alike).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use evac_report::html::Run;
use evac_report::RunResult;

/// The largest result file read: a 100,000-VM run writes about 110 MB.
const MAX_INPUT: u64 = 1 << 30;

/// Reads every result, renders the page and writes it to `out`.
pub fn report(inputs: &[PathBuf], labels: &[String], out: &Path) -> Result<()> {
    if inputs.is_empty() {
        bail!("evac report: give at least one result file (written by --json)");
    }
    if labels.len() > inputs.len() {
        bail!(
            "evac report: {} --label given for {} result files",
            labels.len(),
            inputs.len()
        );
    }
    let runs = inputs
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let result = read_result(path)?;
            let label = labels
                .get(i)
                .cloned()
                .unwrap_or_else(|| default_label(path, inputs));
            Ok(Run { label, result })
        })
        .collect::<Result<Vec<_>>>()?;
    let page = evac_report::html::render(&runs);
    std::fs::write(out, page).with_context(|| format!("writing {}", out.display()))?;
    crate::output::say(&format!("wrote {}", out.display()));
    Ok(())
}

fn read_result(path: &Path) -> Result<RunResult> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_INPUT + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    if text.len() as u64 > MAX_INPUT {
        bail!(
            "{}: larger than {} MiB; not a result evac writes",
            path.display(),
            MAX_INPUT >> 20
        );
    }
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}:{}: not an evac result (the JSON of `evac simulate --json` or `evac run --json`): {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })
}

/// The file's stem ("plan" for plan.json), or its whole path when two
/// inputs share a stem.
fn default_label(path: &Path, all: &[PathBuf]) -> String {
    let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned());
    let mine = stem(path);
    let shared = all.iter().filter(|p| stem(p) == mine).count() > 1;
    match mine {
        Some(s) if !shared => s,
        _ => path.display().to_string(),
    }
}
