//! An SVG picture of a run: the WAN's capacity and throughput over time
//! above, migrations in flight below, and every VM's migration as a bar
//! (green: migrated; a red mark: started, then lost; orange: started, then
//! left on its source).

use std::path::Path;

use plotters::prelude::*;

use crate::{Outcome, RunResult};

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {message}")]
pub struct PlotError {
    path: String,
    message: String,
}

/// Writes the run's timeline and per-VM migrations to an SVG file.
pub fn write_svg(result: &RunResult, path: &Path) -> Result<(), PlotError> {
    draw(result, path).map_err(|e| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn draw(result: &RunResult, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let end = result
        .timeline
        .last()
        .map_or(0.0, |p| p.t_s)
        .max(result.total_time_s.unwrap_or(0.0))
        .max(1.0);
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "evac: {} ({} migrated, {} not migrated, {} lost)",
            result.policy, result.migrated, result.not_migrated, result.lost
        ),
        ("sans-serif", 22),
    )?;
    let (top, rest) = root.split_vertically(300);
    let (middle, bottom) = rest.split_vertically(200);

    let gbps = |bps: f64| bps / 1e9;
    let peak = result
        .timeline
        .iter()
        .map(|p| p.wan_capacity_bps.unwrap_or(0.0).max(p.wan_throughput_bps))
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..gbps(peak).max(0.001) * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("WAN (Gbit/s)")
        .draw()?;
    if result.timeline.iter().any(|p| p.wan_capacity_bps.is_some()) {
        chart
            .draw_series(LineSeries::new(
                result
                    .timeline
                    .iter()
                    .filter_map(|p| Some((p.t_s, gbps(p.wan_capacity_bps?)))),
                // Wide and pale, so the throughput drawn over it stays
                // visible where the two coincide (a saturated WAN).
                BLACK.mix(0.25).stroke_width(6),
            ))?
            .label("capacity")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.25).stroke_width(6)));
    }
    chart
        .draw_series(LineSeries::new(
            result
                .timeline
                .iter()
                .map(|p| (p.t_s, gbps(p.wan_throughput_bps))),
            &BLUE,
        ))?
        .label("throughput")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;

    let most = result
        .timeline
        .iter()
        .map(|p| p.in_flight)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut chart = ChartBuilder::on(&middle)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..most as f64 * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("in flight")
        .draw()?;
    chart.draw_series(LineSeries::new(
        result.timeline.iter().map(|p| (p.t_s, p.in_flight as f64)),
        &RED,
    ))?;

    let vms = result.vms.len().max(1);
    let mut chart = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..vms as f64)?;
    chart.configure_mesh().x_desc("time (s)").y_desc("VM").draw()?;
    chart.draw_series(result.vms.iter().enumerate().filter_map(|(i, vm)| {
        let start = vm.start_s?;
        let (stop, color) = match vm.outcome {
            Outcome::Migrated => (vm.end_s?, GREEN.mix(0.8)),
            // When it died is not recorded: a red mark where it started.
            Outcome::Lost => (start + end / 200.0, RED.mix(0.8)),
            // Started, then left on its source: an orange mark.
            Outcome::NotMigrated => (start + end / 200.0, RGBColor(230, 140, 0).mix(0.8)),
        };
        Some(Rectangle::new(
            [(start, i as f64), (stop, i as f64 + 0.8)],
            color.filled(),
        ))
    }))?;
    root.present()?;
    Ok(())
}
