//! A real lab fleet's decisions beside the simulation's, VM by VM: each lab
//! file (default `labs/fleet24.toml`) under each policy (default `deadline`
//! and `aimd-global`) built, evacuated by the real run loop and torn down;
//! prints per run the decisions table (`evac_lab::decisions`), what differs,
//! and the prediction's errors. Needs root, QEMU, `ip` and `tc`:
//!
//! ```text
//! cargo run --release -p evac-lab --example decisions [LAB.toml ...]
//! ```
//!
//! With `.json` files instead (`evac lab run --json`'s, which carry the
//! `prediction`), compares those runs without building anything
//! (`DECISIONS_PERIOD_S`: their control period, default 0.5).
//!
//! `DECISIONS_CALIBRATE=N` first migrates N probe VMs on the lab and
//! predicts with the setup time they measured (`evac_lab::calibration`),
//! printing the prediction with the lab file's too;
//! `DECISIONS_POLICIES=deadline` runs only those policies;
//! `DECISIONS_JSON=DIR` writes each run's JSON (with its `prediction`) to
//! `DIR/<lab>-<policy>.json`; `DECISIONS_VERBOSE=1` adds the per-VM table
//! of migration times.

use std::path::PathBuf;

use anyhow::{Context, Result};
use evac_controller::PolicyKind;
use evac_lab::decisions::Comparison;
use evac_lab::evacuate::{evacuate_quietly, policies_from_env};
use evac_lab::instance::LabInstance;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut labs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if labs.is_empty() {
        labs.push(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/labs/fleet24.toml"
        )));
    }
    let policies = policies_from_env(
        "DECISIONS_POLICIES",
        &[PolicyKind::Deadline, PolicyKind::AimdGlobal],
    )?;
    if labs.iter().all(|p| p.extension().is_some_and(|e| e == "json")) {
        let period: f64 = std::env::var("DECISIONS_PERIOD_S")
            .map_or(Ok(0.5), |p| p.parse())
            .context("DECISIONS_PERIOD_S")?;
        for path in &labs {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
            let lab: evac_report::RunResult = serde_json::from_value(value.clone())
                .with_context(|| format!("{}: not a run's result", path.display()))?;
            let sim: evac_report::RunResult = serde_json::from_value(value["prediction"].clone())
                .with_context(|| format!("{}: field `prediction`: not a run's result", path.display()))?;
            report(
                &path.display().to_string(),
                &Comparison::new(&lab.vms, &sim.vms, period),
            );
        }
        return Ok(());
    }
    let json_dir = std::env::var_os("DECISIONS_JSON").map(PathBuf::from);
    let probes: usize = std::env::var("DECISIONS_CALIBRATE")
        .map_or(Ok(0), |n| n.parse())
        .context("DECISIONS_CALIBRATE")?;
    for path in &labs {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let stem = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for &policy in &policies {
            let mut lab = LabInstance::build(&text, &path.display().to_string())?;
            let period = lab.scenario.controller.period.as_secs_f64();
            let file_migration = lab.scenario.migration;
            if probes > 0 {
                let calibration = evac_lab::calibration::calibrate(&mut lab, probes).await?;
                println!("{}\n", calibration.summary());
            }
            let run = evacuate_quietly(&mut lab, policy).await?;
            let (fleet, network, lab_controller) = (
                lab.scenario.fleet.clone(),
                lab.scenario.network.clone(),
                lab.scenario.controller.clone(),
            );
            drop(lab);
            let comparison = Comparison::new(&run.measured.vms, &run.prediction.vms, period);
            let f = run.fidelity();
            report(&format!("{stem} under {policy}"), &comparison);
            println!(
                "total {:.2} s lab / {:.2} s sim ({:.1} %), per-VM migration time error median {:.1} % worst {:.1} %",
                run.measured.total_time_s.unwrap_or(f64::NAN),
                run.prediction.total_time_s.unwrap_or(f64::NAN),
                f.total,
                f.time_median,
                f.time_worst,
            );
            if probes > 0 {
                let mut controller = lab_controller.clone();
                controller.policy = policy;
                let with_file = evac_sim::simulate_evacuation(&fleet, &network, file_migration, &controller);
                let errors: Vec<f64> = run
                    .measured
                    .vms
                    .iter()
                    .zip(&with_file.vms)
                    .filter_map(|(m, p)| {
                        evac_lab::evacuate::relative_error(m.migration_time_s?, p.migration_time_s?)
                            .map(f64::abs)
                    })
                    .collect();
                let mut sorted = errors.clone();
                sorted.sort_by(f64::total_cmp);
                println!(
                    "with the lab file's setup time ({} ms) instead: total {:.2} s predicted ({:.1} %), per-VM median error {:.1} %",
                    file_migration.setup_time.as_millis(),
                    with_file.total_time_s.unwrap_or(f64::NAN),
                    evac_lab::evacuate::relative_error(
                        run.measured.total_time_s.unwrap_or(f64::NAN),
                        with_file.total_time_s.unwrap_or(f64::NAN)
                    )
                    .unwrap_or(f64::NAN),
                    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
                );
            }
            if std::env::var_os("DECISIONS_VERBOSE").is_some() {
                println!("\n{}", run.table());
            }
            if let Some(dir) = &json_dir {
                let out = dir.join(format!("{stem}-{policy}.json"));
                std::fs::write(&out, run.to_json()).with_context(|| format!("writing {}", out.display()))?;
            }
            println!();
        }
    }
    Ok(())
}

/// Prints a comparison: a heading with its counts, the table, each difference.
fn report(what: &str, comparison: &Comparison) {
    let mismatches = comparison.mismatches();
    let mut vms: Vec<&str> = mismatches.iter().map(|m| m.vm.as_str()).collect();
    vms.sort_unstable();
    vms.dedup();
    println!(
        "## {what}: {} of {} VMs' decisions differ ({} differences); lab clock moved by {:.2} s; largest start gap {:.2} s\n",
        vms.len(),
        comparison.rows.len(),
        mismatches.len(),
        comparison.lab_origin_s - comparison.sim_origin_s,
        comparison.worst_start_gap_s(),
    );
    println!("{}", comparison.table());
    for m in &mismatches {
        println!("- {m}");
    }
}
