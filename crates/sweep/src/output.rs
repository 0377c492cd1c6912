//! A sweep's rows as a Markdown table, CSV and JSON.

use std::fmt::Write as _;
use std::io::Write;

use crate::SweepRow;

pub(crate) fn ordered_map<S: serde::Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// The rows as a markdown table: a column per factor that varies (and the
/// seed, when it does), then the metrics; factors every row shares are
/// listed in a line above the table.
pub fn markdown_table(rows: &[SweepRow]) -> String {
    let mut out = String::new();
    let Some(first) = rows.first() else {
        return "(no rows)\n".to_owned();
    };
    let varies = |i: usize| rows.iter().any(|r| r.factors[i].1 != first.factors[i].1);
    let varying: Vec<usize> = (0..first.factors.len()).filter(|&i| varies(i)).collect();
    let fixed: Vec<String> = (0..first.factors.len())
        .filter(|&i| !varies(i))
        .map(|i| format!("{} = {}", first.factors[i].0, first.factors[i].1))
        .collect();
    let seed_varies = rows.iter().any(|r| r.seed != first.seed);
    let mut shared = fixed;
    if !seed_varies {
        shared.push(format!("seed = {}", first.seed));
    }
    if rows.iter().all(|r| r.vms == first.vms) {
        shared.push(format!("{} VMs", first.vms));
    }
    if !shared.is_empty() {
        let _ = writeln!(out, "All rows: {}.\n", shared.join(", "));
    }
    let mut header: Vec<String> = varying.iter().map(|&i| first.factors[i].0.clone()).collect();
    if seed_varies {
        header.push("seed".into());
    }
    let metrics = [
        "total (s)",
        "bound total (s)",
        "mean migration (s)",
        "bound mean (s)",
        "max migration (s)",
        "not migrated",
        "lost",
        "score",
    ];
    header.extend(metrics.iter().map(|s| s.to_string()));
    let numeric_from = header.len() - metrics.len();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let align: Vec<&str> = (0..header.len())
        .map(|i| if i < numeric_from { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "|{}|", align.join("|"));
    for row in rows {
        let mut cells: Vec<String> = varying.iter().map(|&i| row.factors[i].1.clone()).collect();
        if seed_varies {
            cells.push(row.seed.to_string());
        }
        cells.extend([
            seconds(row.total_time_s),
            format!("{:.1}", row.lower_bound_total_s),
            seconds(row.mean_migration_time_s),
            format!("{:.1}", row.lower_bound_mean_migration_s),
            seconds(row.max_migration_time_s),
            format!("{} of {}", row.not_migrated, row.vms),
            format!("{} of {}", row.lost, row.vms),
            row.score.map_or_else(|| "-".to_owned(), |s| format!("{s:.3}")),
        ]);
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// One CSV record per row: a column per factor, then `seed`, `vms` and the
/// metrics; a missing value is an empty cell.
pub fn write_csv<W: Write>(rows: &[SweepRow], out: W) -> Result<(), csv::Error> {
    let mut writer = csv::Writer::from_writer(out);
    let opt = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
    if let Some(first) = rows.first() {
        let mut header: Vec<String> = first.factors.iter().map(|(k, _)| k.clone()).collect();
        header.extend(
            [
                "seed",
                "vms",
                "total_time_s",
                "mean_migration_time_s",
                "max_migration_time_s",
                "lower_bound_total_s",
                "lower_bound_mean_migration_s",
                "migrated",
                "not_migrated",
                "lost",
                "score",
                "priority_saved",
                "priority_total",
            ]
            .map(String::from),
        );
        writer.write_record(&header)?;
    }
    for row in rows {
        let mut record: Vec<String> = row.factors.iter().map(|(_, v)| v.clone()).collect();
        record.extend([
            row.seed.to_string(),
            row.vms.to_string(),
            opt(row.total_time_s),
            opt(row.mean_migration_time_s),
            opt(row.max_migration_time_s),
            row.lower_bound_total_s.to_string(),
            row.lower_bound_mean_migration_s.to_string(),
            row.migrated.to_string(),
            row.not_migrated.to_string(),
            row.lost.to_string(),
            opt(row.score),
            row.priority_saved.to_string(),
            row.priority_total.to_string(),
        ]);
        writer.write_record(&record)?;
    }
    writer.flush()?;
    Ok(())
}

/// The rows as a pretty JSON array of [`SweepRow`] objects (`factors` an
/// object in the grid's order).
pub fn write_json<W: Write>(rows: &[SweepRow], out: W) -> serde_json::Result<()> {
    serde_json::to_writer_pretty(out, rows)
}
