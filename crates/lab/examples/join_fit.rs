//! Calibrates `[migration] join_rtts` on measured lab runs: the per-VM
//! migration times of verbose `fidelity` outputs, predicted again by the
//! simulator with `join_rtts` from 0 to 80 (the measurements do not depend
//! on the model, so no lab is built and no root is needed):
//!
//! ```text
//! cargo run --release -p evac-lab --example join_fit -- crates/lab/calibration/*.md
//! ```
//!
//! For each value it prints the worst per-VM error over every (lab, policy,
//! run), how many of those exceed 20 %, and their mean. The two files in
//! `crates/lab/calibration/` are the runs made before `join_rtts` existed
//! (docs/lab.md).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use evac_controller::PolicyKind;
use evac_scenario::Scenario;

/// One (lab, policy) run: each VM's measured migration time.
struct Measured {
    lab: String,
    policy: PolicyKind,
    times: HashMap<String, f64>,
}

/// The runs of a verbose `fidelity` output: a summary row `| lab | policy |
/// ...` opens a run, its per-VM rows `| vm | Migrated / Migrated | start |
/// time lab / sim (...) | ...` follow.
fn parse(text: &str) -> Result<Vec<Measured>> {
    let mut runs: Vec<Measured> = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 7 {
            continue;
        }
        if ["idle", "dirtying", "rtt50"].contains(&cells[1]) && cells[3].ends_with('%') {
            let policy = cells[2].parse().map_err(anyhow::Error::msg)?;
            runs.push(Measured {
                lab: cells[1].to_owned(),
                policy,
                times: HashMap::new(),
            });
        } else if cells[2] == "Migrated / Migrated" {
            let Some(run) = runs.last_mut() else { continue };
            let measured = cells[4].split_whitespace().next().unwrap_or_default();
            let time: f64 = measured
                .parse()
                .with_context(|| format!("a migration time in `{line}`"))?;
            run.times.insert(cells[1].to_owned(), time);
        }
    }
    Ok(runs)
}

fn main() -> Result<()> {
    let files: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if files.is_empty() {
        bail!("give verbose `fidelity` outputs, e.g. crates/lab/calibration/*.md");
    }
    let mut runs = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        runs.extend(parse(&text).with_context(|| file.display().to_string())?);
    }
    let labs = concat!(env!("CARGO_MANIFEST_DIR"), "/labs");
    println!("| join_rtts | worst per-VM error | (lab, policy, run)s over 20 % | mean of the worst |");
    println!("|---:|---:|---:|---:|");
    for join in [0.0, 10.0, 20.0, 30.0, 35.0, 40.0, 50.0, 60.0, 80.0] {
        let mut worst = Vec::new();
        for run in &runs {
            let path = format!("{labs}/{}.toml", run.lab);
            let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
            let mut scenario = Scenario::from_toml_str(&text, &path)?;
            scenario.migration.join_rtts = join;
            let mut controller = scenario.controller.clone();
            controller.policy = run.policy;
            let predicted = evac_sim::simulate_evacuation(
                &scenario.fleet,
                &scenario.network,
                scenario.migration,
                &controller,
            );
            let errors = predicted.vms.iter().filter_map(|vm| {
                let measured = run.times.get(&vm.name)?;
                Some((vm.migration_time_s? - measured).abs() / measured * 100.0)
            });
            worst.push(errors.fold(0.0, f64::max));
        }
        println!(
            "| {join} | {:.1} % | {} of {} | {:.1} % |",
            worst.iter().copied().fold(0.0, f64::max),
            worst.iter().filter(|&&w| w > 20.0).count(),
            worst.len(),
            worst.iter().sum::<f64>() / worst.len().max(1) as f64
        );
    }
    Ok(())
}
