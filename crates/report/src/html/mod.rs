//! `evac report`: one self-contained HTML page of one or more runs.
//!
//! The page fetches nothing and runs no script: its style sheet and its
//! charts (inline SVG, drawn by hand in this module's files) are in the
//! file, so it opens from disk, in a mail attachment or on an air-gapped
//! console the same way. Tooltips are SVG `<title>` elements.
//!
//! With several runs (a plan and the real run, policy A and policy B) the
//! time series and the CDF are overlaid in one chart, one colour per run,
//! and the summaries and Gantt charts stand side by side. All charts of a
//! page share one time axis, so the same instant is at the same place.
//!
//! The report never knows whether a run was simulated or real: it reads
//! the same [`RunResult`] either way.

mod cdf;
mod gantt;
mod series;
pub mod svg;
mod tables;

use std::fmt::Write;

use crate::RunResult;

/// One run on the page and the label it goes by (e.g. its file name).
#[derive(Debug, Clone)]
pub struct Run {
    pub label: String,
    pub result: RunResult,
}

/// Colours of the runs, in order (colour-blind safe, after Okabe and Ito).
const PALETTE: [&str; 6] = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"];

/// The colour of the `i`th run.
fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// The end of the shared time axis: the latest instant any run shows.
fn time_span(runs: &[Run]) -> f64 {
    let mut end: f64 = 1.0;
    for run in runs {
        let r = &run.result;
        end = end.max(r.total_time_s.unwrap_or(0.0));
        end = end.max(r.timeline.last().map_or(0.0, |p| p.t_s));
        for h in &r.hosts {
            end = end.max(h.power_off_s.unwrap_or(0.0));
        }
        for a in &r.failed_attempts {
            end = end.max(a.end_s);
        }
    }
    if end.is_finite() {
        end * 1.02
    } else {
        1.0
    }
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 12px 0 6px; }
.runs { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.run { flex: 1 1 560px; min-width: 0; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
table.summary { border-collapse: collapse; }
table.summary th, table.summary td { text-align: left; padding: 3px 10px; border-bottom: 1px solid #eee; vertical-align: top; }
table.summary th { font-weight: 600; white-space: nowrap; }
ul { margin: 4px 0; padding-left: 20px; }
.warning { color: #a40000; font-weight: 600; }
.note { color: #555; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #222; }
svg .tick { fill: #555; }
svg .axis-title { font-size: 12px; fill: #333; }
svg .grid { stroke: #eee; }
svg .axis { stroke: #888; }
svg .vm-name { font-size: 10px; }
svg .vm-name.lost { fill: #b00020; font-weight: 600; }
svg .vm-name.not-migrated { fill: #777; font-style: italic; }
svg .power-off { stroke: #b00020; stroke-dasharray: 5 3; stroke-width: 1.5; }
svg .power-off-label { fill: #b00020; font-size: 10px; }
svg .bar.migrated { fill: #59a14f; }
svg .bar.lost { fill: #e15759; }
svg .bar.failed { fill: url(#hatch); stroke: #f28e2b; }
svg .downtime { fill: #1b4d14; }
svg .mark.lost { fill: #b00020; font-weight: 700; }
svg .mark.not-migrated { fill: #777; }
svg .round { stroke: #fff; stroke-width: 1; }
"#;

/// The whole page for `runs`.
pub fn render(runs: &[Run]) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let title = match runs {
        [one] => format!("evac report: {}", one.label),
        _ => format!("evac report: {} runs", runs.len()),
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body>",
        svg::escape(&title)
    );
    let _ = write!(out, "<h1>{}</h1>", svg::escape(&title));
    out.push_str(r#"<p class="runs-legend">"#);
    for (i, run) in runs.iter().enumerate() {
        let _ = write!(
            out,
            r#"<span class="run-key"><span class="swatch" style="background:{}"></span>{} ({})</span> &nbsp; "#,
            colour(i),
            svg::escape(&run.label),
            svg::escape(&run.result.policy)
        );
    }
    out.push_str("</p>");
    let end = time_span(runs);

    out.push_str(r#"<h2 id="summary">Summary</h2>"#);
    tables::summary(&mut out, runs);

    out.push_str(r#"<h2 id="gantt">Every VM's migration</h2><p class="note">Green: migrating, dark green at the end: downtime (guest paused), hatched orange: an attempt that failed or was cancelled, red: lost with its host (✕), grey ○: not migrated. Dashed red lines: a host loses power. Hover a bar for its figures.</p><div class="runs">"#);
    for (i, run) in runs.iter().enumerate() {
        let _ = write!(
            out,
            r#"<div class="run"><h3><span class="swatch" style="background:{}"></span>{}</h3>"#,
            colour(i),
            svg::escape(&run.label)
        );
        gantt::draw(&mut out, &run.result, i, end);
        out.push_str("</div>");
    }
    out.push_str("</div>");

    out.push_str(r#"<h2 id="wan">WAN capacity and throughput</h2>"#);
    series::wan(&mut out, runs, end);
    out.push_str(r#"<h2 id="in-flight">Migrations in flight</h2>"#);
    series::in_flight(&mut out, runs, end);
    out.push_str(r#"<h2 id="cdf">Migration times (CDF)</h2><p class="note">The share of the migrated VMs whose migration took at most the time on the axis.</p>"#);
    cdf::draw(&mut out, runs);
    out.push_str("</body></html>\n");
    out
}
