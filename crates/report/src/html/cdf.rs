//! The distribution of the migrated VMs' migration times, one step curve
//! per run.

use std::fmt::Write;

use super::svg::{self, Frame, Swatch};
use super::{colour, Run};

/// The CDF's corners: for times sorted ascending, the share at or below
/// each one steps up by 1/n there.
pub(super) fn points(times: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = times.iter().copied().filter(|t| t.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let mut out = vec![(0.0, 0.0)];
    for (k, &t) in sorted.iter().enumerate() {
        out.push((t, k as f64 / n));
        out.push((t, (k + 1) as f64 / n));
    }
    out
}

pub(super) fn draw(out: &mut String, runs: &[Run]) {
    let frame = Frame::CHART;
    let curves: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|run| {
            let times: Vec<f64> = run
                .result
                .vms
                .iter()
                .filter_map(|vm| vm.migration_time_s)
                .collect();
            points(&times)
        })
        .collect();
    let longest = curves.iter().flatten().map(|p| p.0).fold(1.0, f64::max);
    let x = frame.x_scale(0.0, longest * 1.05);
    let y = frame.y_scale(0.0, 1.0);
    svg::open(out, &frame, "cdf", "CDF of migration times");
    svg::time_axis(out, &frame, &x, "migration time (start to end of downtime)");
    svg::value_axis(out, &frame, &y, "share of migrated VMs", |v| {
        format!("{:.0}%", v * 100.0)
    });
    let mut legend = Vec::new();
    for (i, (run, curve)) in runs.iter().zip(&curves).enumerate() {
        let c = colour(i);
        let mut d = String::new();
        for (k, &(t, share)) in curve.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if k == 0 { "M" } else { "L" },
                x.px(t),
                y.px(share)
            );
        }
        let _ = write!(
            out,
            r#"<path class="cdf-curve" data-run="{i}" data-points="{}" d="{d}" fill="none" stroke="{c}" stroke-width="1.8"/>"#,
            curve.len().saturating_sub(1) / 2
        );
        legend.push((Swatch::Line(c, 1.8, ""), run.label.clone()));
    }
    svg::legend(out, &frame, &legend);
    out.push_str("</svg>");
}

#[cfg(test)]
mod tests {
    use super::points;

    #[test]
    fn steps_of_one_over_n() {
        // Four times: the share reaches 1/4 at 1 s, 3/4 at 3 s (two VMs
        // there), 1 at 7 s; NaN is dropped before counting.
        let p = points(&[3.0, 1.0, 7.0, 3.0]);
        assert_eq!(p.first(), Some(&(0.0, 0.0)));
        assert_eq!(p[2], (1.0, 0.25));
        assert_eq!(p[6], (3.0, 0.75));
        assert_eq!(p.last(), Some(&(7.0, 1.0)));
        assert_eq!(points(&[f64::NAN, 2.0]).last(), Some(&(2.0, 1.0)));
    }
}
