//! # evac-report
//!
//! Renders what an evacuation achieved: [`write_csv`] writes one row per VM,
//! [`summary_table`] the terminal summary, [`plot::write_svg`] draws the
//! timeline. The result types themselves (run result, VM records, timeline,
//! lower bounds, score) are plain data in `evac-outcome`, re-exported here so
//! `evac_report::RunResult` keeps working.

pub mod plot;

use std::io::Write;

use evac_model::Bytes;
pub use evac_outcome::*;

/// Writes one CSV row per VM, with the fields of [`VmRecord`]; a missing
/// value is an empty cell.
pub fn write_csv<W: Write>(result: &RunResult, out: W) -> Result<(), csv::Error> {
    let mut writer = csv::Writer::from_writer(out);
    for vm in &result.vms {
        writer.serialize(vm)?;
    }
    writer.flush()?;
    Ok(())
}

/// The terminal summary of one run.
pub fn summary_table(result: &RunResult) -> comfy_table::Table {
    let seconds = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} s"));
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    table.set_header(vec!["policy".to_owned(), result.policy.clone()]);
    let rows = [
        (
            "migrated / not migrated / lost",
            format!("{} / {} / {}", result.migrated, result.not_migrated, result.lost),
        ),
        (
            "priority saved",
            format!("{} of {}", result.priority_saved, result.priority_total),
        ),
        (
            "total time",
            format!(
                "{} (bound {:.1} s)",
                seconds(result.total_time_s),
                result.lower_bound_total_s
            ),
        ),
        (
            "mean migration time",
            format!(
                "{} (bound {:.1} s)",
                seconds(result.mean_migration_time_s),
                result.lower_bound_mean_migration_s
            ),
        ),
        (
            "p95 / max migration",
            format!(
                "{} / {}",
                seconds(result.p95_migration_time_s),
                seconds(result.max_migration_time_s)
            ),
        ),
        ("mean completion time", seconds(result.mean_completion_time_s)),
        (
            "mean downtime",
            result
                .mean_downtime_s
                .map_or_else(|| "-".to_owned(), |v| format!("{:.0} ms", v * 1e3)),
        ),
        ("bytes sent", Bytes(result.bytes_sent).to_string()),
        (
            "score (1 = physical limit)",
            result.score.map_or_else(|| "-".to_owned(), |s| format!("{s:.3}")),
        ),
    ];
    for (name, value) in rows {
        table.add_row(vec![name.to_owned(), value]);
    }
    table
}
