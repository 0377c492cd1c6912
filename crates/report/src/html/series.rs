//! Time series of the runs, overlaid: the WAN's capacity and throughput,
//! and the migrations in flight.

use std::fmt::Write;

use evac_outcome::TimelinePoint;

use super::svg::{self, Frame, Swatch};
use super::{colour, Run};

/// Dash patterns telling overlaid runs apart beyond their colour.
const DASHES: [&str; 3] = ["", "6 3", "2 2"];

/// A period's throughput is the average over the period that ends at its
/// point: it is drawn from the previous point to this one.
fn throughput_points(run: &Run) -> Vec<(f64, f64)> {
    let mut points = Vec::with_capacity(run.result.timeline.len() + 1);
    let mut from = 0.0;
    for p in &run.result.timeline {
        points.push((from, p.wan_throughput_bps / 1e9));
        from = p.t_s;
    }
    if let Some(last) = run.result.timeline.last() {
        points.push((last.t_s, last.wan_throughput_bps / 1e9));
    }
    points
}

/// The run's timeline as chart points: each point's time and `value`,
/// where it has one.
fn along_timeline(run: &Run, value: impl Fn(&TimelinePoint) -> Option<f64>) -> Vec<(f64, f64)> {
    run.result
        .timeline
        .iter()
        .filter_map(|p| Some((p.t_s, value(p)?)))
        .collect()
}

pub(super) fn wan(out: &mut String, runs: &[Run], end: f64) {
    let frame = Frame::CHART;
    let peak = runs
        .iter()
        .flat_map(|r| &r.result.timeline)
        .map(|p| p.wan_capacity_bps.unwrap_or(0.0).max(p.wan_throughput_bps))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let x = frame.x_scale(0.0, end);
    let y = frame.y_scale(0.0, (peak / 1e9 * 1.1).max(1e-3));
    svg::open(out, &frame, "wan", "WAN capacity and throughput over time");
    svg::time_axis(out, &frame, &x, svg::SINCE_START);
    svg::value_axis(out, &frame, &y, "Gbit/s", crate::readable::decimals);
    let mut legend = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let c = colour(i);
        let dash = DASHES[i % DASHES.len()];
        let capacity = along_timeline(run, |p| Some(p.wan_capacity_bps? / 1e9));
        if !capacity.is_empty() {
            // Wide and pale, under the throughput: where the WAN is full the
            // two coincide and both stay visible.
            let _ = write!(
                out,
                r#"<path class="capacity" data-run="{i}" d="{}" fill="none" stroke="{c}" stroke-opacity="0.25" stroke-width="7"/>"#,
                svg::step_path(&capacity, &x, &y)
            );
            legend.push((Swatch::Line(c, 7.0, ""), format!("{} capacity", run.label)));
        }
        let _ = write!(
            out,
            r#"<path class="throughput" data-run="{i}" d="{}" fill="none" stroke="{c}" stroke-width="1.5" stroke-dasharray="{dash}"/>"#,
            svg::step_path(&throughput_points(run), &x, &y)
        );
        legend.push((Swatch::Line(c, 1.5, dash), format!("{} throughput", run.label)));
    }
    if runs
        .iter()
        .all(|r| r.result.timeline.iter().all(|p| p.wan_capacity_bps.is_none()))
    {
        let _ = write!(
            out,
            r#"<text class="note" x="{:.1}" y="{:.1}">capacity unknown on a real run</text>"#,
            frame.plot_right() - 200.0,
            frame.plot_top() + 14.0
        );
    }
    svg::legend(out, &frame, &legend);
    out.push_str("</svg>");
}

pub(super) fn in_flight(out: &mut String, runs: &[Run], end: f64) {
    let frame = Frame::CHART;
    let most = runs
        .iter()
        .flat_map(|r| &r.result.timeline)
        .map(|p| p.in_flight)
        .max()
        .unwrap_or(1)
        .max(1);
    let x = frame.x_scale(0.0, end);
    let y = frame.y_scale(0.0, most as f64 * 1.1);
    svg::open(out, &frame, "in-flight", "migrations in flight over time");
    svg::time_axis(out, &frame, &x, svg::SINCE_START);
    svg::value_axis(out, &frame, &y, "in flight", |v| {
        // Counts are whole: fractional ticks say nothing.
        if v.fract() == 0.0 {
            crate::readable::decimals(v)
        } else {
            String::new()
        }
    });
    let mut legend = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let c = colour(i);
        let dash = DASHES[i % DASHES.len()];
        let points = along_timeline(run, |p| Some(p.in_flight as f64));
        let _ = write!(
            out,
            r#"<path class="in-flight" data-run="{i}" d="{}" fill="none" stroke="{c}" stroke-width="1.5" stroke-dasharray="{dash}"/>"#,
            svg::step_path(&points, &x, &y)
        );
        legend.push((Swatch::Line(c, 1.5, dash), run.label.clone()));
    }
    svg::legend(out, &frame, &legend);
    out.push_str("</svg>");
}
