//! The evacuation over time ([`TimelinePoint`]) and its thinning: a week of
//! control periods is kept to a chart's worth of points without changing
//! the bytes carried between kept points.

use serde::{Deserialize, Serialize};

/// The state of the evacuation at one instant: a simulation records a point
/// whenever the WAN's capacity, its throughput or the migrations in flight
/// change (and at the start and the end), so the throughput is constant
/// between two points; a real run records one per control period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    pub t_s: f64,
    /// The WAN's true capacity; `None` on a real run, where it is unknown.
    pub wan_capacity_bps: Option<f64>,
    /// Bytes carried over the WAN since the previous point, as a rate.
    pub wan_throughput_bps: f64,
    /// Migrations in flight once the controller has acted.
    pub in_flight: usize,
}

/// The most points a timeline keeps: beyond it, [`thin_timeline`] halves
/// it. A week of AIMD ticks at 1 s is 604,800 points (some 20 MB); a
/// chart shows no more than a few thousand anyway.
pub const MAX_TIMELINE_POINTS: usize = 100_000;

/// Halves a timeline by merging every other point into the next one: the
/// merged point keeps the later state (capacity, migrations in flight) and
/// the time-weighted mean of the two throughputs, so the bytes carried
/// between any two kept points are exactly what they were. The first and
/// last points are kept as they are.
pub fn thin_timeline(points: &mut Vec<TimelinePoint>) {
    if points.len() < 3 {
        return;
    }
    let last = points.len() - 1;
    let mut kept = 1;
    let mut i = 1;
    while i <= last {
        let mut point = points[i];
        if i < last {
            let (before, first, second) = (points[kept - 1].t_s, points[i], points[i + 1]);
            let span = second.t_s - before;
            point = second;
            if span > 0.0 {
                point.wan_throughput_bps = (first.wan_throughput_bps * (first.t_s - before)
                    + second.wan_throughput_bps * (second.t_s - first.t_s))
                    / span;
            }
            i += 2;
        } else {
            i += 1;
        }
        points[kept] = point;
        kept += 1;
    }
    points.truncate(kept);
}
