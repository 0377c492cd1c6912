//! The summary as HTML: one table with a column per run, then per run its
//! hosts, the VMs it did not move and its warnings, side by side.

use std::fmt::Write;

use super::svg::escape;
use super::{colour, Run};
use crate::summary::{describe, Summary};

pub(super) fn summary(out: &mut String, runs: &[Run]) {
    let summaries: Vec<Summary> = runs.iter().map(|r| describe(&r.result)).collect();
    out.push_str(r#"<table class="summary"><thead><tr><th></th>"#);
    for (i, run) in runs.iter().enumerate() {
        let _ = write!(
            out,
            r#"<th><span class="swatch" style="background:{}"></span>{}</th>"#,
            colour(i),
            escape(&run.label)
        );
    }
    out.push_str("</tr></thead><tbody>");
    // Every summary has the same rows in the same order.
    let names: Vec<&String> = summaries
        .first()
        .map(|s| s.rows.iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    for (row, name) in names.iter().enumerate() {
        let _ = write!(out, "<tr><th>{}</th>", escape(name));
        for summary in &summaries {
            let value = summary.rows.get(row).map_or("", |(_, v)| v.as_str());
            let _ = write!(out, "<td>{}</td>", escape(value));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");

    out.push_str(r#"<div class="runs">"#);
    for (i, (run, summary)) in runs.iter().zip(&summaries).enumerate() {
        let _ = write!(
            out,
            r#"<div class="run"><h3><span class="swatch" style="background:{}"></span>{}</h3>"#,
            colour(i),
            escape(&run.label)
        );
        list(out, "warnings", "warning", &summary.warnings);
        list(out, "hosts", "hosts", &summary.hosts);
        if summary.not_moved.is_empty() {
            out.push_str(r#"<p class="all-moved">Every VM was migrated.</p>"#);
        } else {
            list(out, "VMs not migrated", "not-moved", &summary.not_moved);
        }
        out.push_str("</div>");
    }
    out.push_str("</div>");
}

fn list(out: &mut String, title: &str, class: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let _ = write!(out, r#"<p><b>{}</b></p><ul class="{class}">"#, escape(title));
    for line in lines {
        let _ = write!(out, "<li>{}</li>", escape(line));
    }
    out.push_str("</ul>");
}
