//! The simulator against the lab, VM by VM: every lab of `crates/lab/labs`
//! under every policy, built, evacuated and torn down one after another;
//! prints one row per (lab, policy) with the prediction's errors relative
//! to the measurement. Needs root, QEMU, `ip` and `tc`:
//!
//! ```text
//! cargo run --release -p evac-lab --example fidelity [LAB.toml ...]
//! ```
//!
//! `FIDELITY_POLICIES=sequential,parallel` runs only those policies;
//! `FIDELITY_VERBOSE=1` prints the per-VM table of every run.

use std::path::PathBuf;

use anyhow::{Context, Result};
use evac_controller::PolicyKind;
use evac_lab::evacuate::{evacuate_quietly, policies_from_env};
use evac_lab::instance::LabInstance;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut labs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if labs.is_empty() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/labs");
        for name in ["idle.toml", "dirtying.toml", "rtt50.toml"] {
            labs.push(PathBuf::from(dir).join(name));
        }
    }
    let policies = policies_from_env("FIDELITY_POLICIES", &PolicyKind::ALL)?;
    println!("| lab | policy | time: median / worst error | bytes: median / worst error | total: lab / sim (error) |");
    println!("|---|---|---:|---:|---:|");
    for path in &labs {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for &policy in &policies {
            let mut lab = LabInstance::build(&text, &path.display().to_string())?;
            let run = evacuate_quietly(&mut lab, policy).await?;
            drop(lab);
            let f = run.fidelity();
            println!(
                "| {} | {policy} | {:.1} % / {:.1} % | {:.1} % / {:.1} % | {:.2} / {:.2} s ({:.1} %) |",
                path.file_stem().unwrap_or_default().to_string_lossy(),
                f.time_median,
                f.time_worst,
                f.bytes_median,
                f.bytes_worst,
                run.measured.total_time_s.unwrap_or(f64::NAN),
                run.prediction.total_time_s.unwrap_or(f64::NAN),
                f.total
            );
            if std::env::var_os("FIDELITY_VERBOSE").is_some() {
                println!("{}", run.table());
            }
        }
    }
    Ok(())
}
