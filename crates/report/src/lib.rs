//! # evac-report
//!
//! Renders what an evacuation achieved: [`write_csv`] writes one row per VM,
//! [`summary_table`] and [`summary::render_text`] the terminal summary,
//! [`plot::write_svg`] draws the timeline, [`html::render`] the
//! self-contained HTML report of one or more runs (`evac report`). The result types themselves (run result, VM records, timeline,
//! lower bounds, score) are plain data in `evac-outcome`, re-exported here so
//! `evac_report::RunResult` keeps working.

pub mod html;
pub mod plot;
pub mod readable;
pub mod summary;

use std::io::Write;

pub use evac_outcome::*;

/// Writes one CSV row per VM, with the fields of [`VmRecord`] but its
/// decisions (a list, kept to the JSON); a missing value is an empty cell.
pub fn write_csv<W: Write>(result: &RunResult, out: W) -> Result<(), csv::Error> {
    let mut writer = csv::Writer::from_writer(out);
    for vm in &result.vms {
        writer.serialize(CsvRow::from(vm))?;
    }
    writer.flush()?;
    Ok(())
}

/// A [`VmRecord`] as a CSV row: every field a cell, always present.
#[derive(serde::Serialize)]
struct CsvRow<'a> {
    name: &'a str,
    host: &'a str,
    destination: Option<&'a str>,
    start_s: Option<f64>,
    end_s: Option<f64>,
    migration_time_s: Option<f64>,
    downtime_s: Option<f64>,
    rounds: Option<u32>,
    bytes_sent: Option<u64>,
    outcome: Outcome,
    reason: Option<&'a str>,
    mode: Option<evac_model::Mode>,
    connections: Option<u32>,
}

impl<'a> From<&'a VmRecord> for CsvRow<'a> {
    fn from(vm: &'a VmRecord) -> Self {
        CsvRow {
            name: &vm.name,
            host: &vm.host,
            destination: vm.destination.as_deref(),
            start_s: vm.start_s,
            end_s: vm.end_s,
            migration_time_s: vm.migration_time_s,
            downtime_s: vm.downtime_s,
            rounds: vm.rounds,
            bytes_sent: vm.bytes_sent,
            outcome: vm.outcome,
            reason: vm.reason.as_deref(),
            mode: vm.mode,
            connections: vm.connections,
        }
    }
}

/// The terminal summary of one run as a table (see [`summary::describe`];
/// [`summary::render_text`] adds the per-host and per-VM lines).
pub fn summary_table(result: &RunResult) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    for (name, value) in summary::describe(result).rows {
        table.add_row(vec![name, value]);
    }
    table
}
