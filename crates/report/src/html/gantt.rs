//! The Gantt chart of one run: a row per VM, named on the axis, its
//! migration as a bar ending in its downtime, its failed attempts hatched,
//! its loss or non-migration marked, and a dashed line where each host
//! loses power.

use std::fmt::Write;

use super::svg::{self, escape, Frame, Swatch};
use crate::readable::{hms, seconds};
use crate::{Outcome, RunResult, VmRecord};

/// Rows drawn at most: beyond, the page would weigh megabytes and no one
/// reads ten thousand rows; the rest are counted in a note.
pub const MAX_ROWS: usize = 2000;

const ROW: f64 = 16.0;
const BAR: f64 = 11.0;

/// Where the VM ended, for the chart's marks.
#[derive(Clone, Copy, PartialEq)]
enum Status {
    Migrated,
    /// Still on its source.
    NotMigrated,
    Lost,
}

impl Status {
    fn of(vm: &VmRecord) -> Self {
        match vm.outcome {
            Outcome::Migrated => Status::Migrated,
            Outcome::NotMigrated => Status::NotMigrated,
            Outcome::Lost => Status::Lost,
        }
    }
    fn class(self) -> &'static str {
        match self {
            Status::Migrated => "migrated",
            Status::NotMigrated => "not-migrated",
            Status::Lost => "lost",
        }
    }
}

pub(super) fn draw(out: &mut String, result: &RunResult, run: usize, end: f64) {
    // Rows in order of first start, VMs that never started last: the chart
    // reads as a cascade.
    let first_start = |vm: &VmRecord| {
        result
            .failed_attempts
            .iter()
            .filter(|a| a.vm == vm.name)
            .map(|a| a.start_s)
            .chain(vm.start_s)
            .fold(f64::INFINITY, f64::min)
    };
    let mut rows: Vec<(f64, usize)> = result
        .vms
        .iter()
        .enumerate()
        .map(|(i, vm)| (first_start(vm), i))
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let hidden = rows.len().saturating_sub(MAX_ROWS);
    rows.truncate(MAX_ROWS);

    let longest = rows
        .iter()
        .map(|&(_, i)| result.vms[i].name.chars().count().min(MAX_NAME))
        .max()
        .unwrap_or(4);
    let frame = Frame {
        width: 900.0,
        height: 56.0 + 40.0 + ROW * rows.len().max(1) as f64,
        left: (longest as f64 * 6.2 + 14.0).clamp(60.0, 230.0),
        right: 16.0,
        top: 56.0,
        bottom: 40.0,
    };
    let x = frame.x_scale(0.0, end);
    svg::open(
        out,
        &frame,
        "gantt",
        &format!("Gantt chart of {} VMs", result.vms.len()),
    );
    let hatch = format!("hatch-{run}");
    let _ = write!(
        out,
        r##"<defs><pattern id="{hatch}" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#fde3c8"/><line x1="0" y1="0" x2="0" y2="6" stroke="#f28e2b" stroke-width="3"/></pattern></defs>"##
    );
    svg::legend(
        out,
        &frame,
        &[
            (Swatch::Box("#59a14f"), "migration".to_owned()),
            (Swatch::Box("#1b4d14"), "downtime".to_owned()),
            (Swatch::Box("#f28e2b"), "failed attempt".to_owned()),
            (Swatch::Box("#e15759"), "lost ✕".to_owned()),
            (Swatch::Box("#999"), "not migrated ○".to_owned()),
            (Swatch::Line("#b00020", 1.5, "5 3"), "power-off".to_owned()),
        ],
    );
    svg::time_axis(out, &frame, &x, svg::SINCE_START);

    for (row, &(_, index)) in rows.iter().enumerate() {
        let vm = &result.vms[index];
        let top = frame.plot_top() + row as f64 * ROW + (ROW - BAR) / 2.0;
        row_of(out, result, vm, &x, top, &hatch);
    }

    power_offs(out, result, &frame, &x);
    if hidden > 0 {
        let _ = write!(
            out,
            r#"<text class="note" x="{:.1}" y="{:.1}">… and {hidden} more VMs not drawn</text>"#,
            frame.plot_left(),
            frame.height - 20.0
        );
    }
    out.push_str("</svg>");
}

/// Names longer than this are cut on the axis (whole in the tooltip).
const MAX_NAME: usize = 32;

fn row_of(out: &mut String, result: &RunResult, vm: &VmRecord, x: &svg::Scale, top: f64, hatch: &str) {
    let status = Status::of(vm);
    let power_off = result
        .hosts
        .iter()
        .find(|h| h.name == vm.host)
        .and_then(|h| h.power_off_s);
    let mut tip = format!("{} on {}: {}", vm.name, vm.host, status.class());
    if let Some(reason) = &vm.reason {
        let _ = write!(tip, " ({reason})");
    }
    if let (Some(start), Some(end)) = (vm.start_s, vm.end_s) {
        let _ = write!(
            tip,
            "\nfrom {} to {} ({})",
            hms(start),
            hms(end),
            seconds(end - start)
        );
    }
    if let Some(d) = &vm.destination {
        let _ = write!(tip, "\nto {d}");
    }
    if let Some(d) = vm.downtime_s {
        let _ = write!(tip, "\ndowntime {:.0} ms", d * 1e3);
    }
    if let Some(r) = vm.rounds {
        let _ = write!(tip, "\n{r} precopy rounds");
    }
    if let (Some(mode), Some(connections)) = (vm.mode, vm.connections) {
        let mode = match mode {
            evac_model::Mode::Live => "live",
            evac_model::Mode::Offline => "offline",
            evac_model::Mode::Postcopy => "postcopy",
        };
        let _ = write!(tip, "\n{mode}, {connections} connection(s)");
    }
    // The controller's account of it (`deadline`'s decisions).
    for d in &vm.decisions {
        let _ = write!(tip, "\n{} {}: {}", hms(d.at_s), d.decision, d.why);
    }
    if let (Status::NotMigrated, Some(reason)) = (status, &vm.reason) {
        let _ = write!(tip, "\nstill on its source: {reason}");
    }
    if status == Status::Lost {
        if let Some(off) = power_off {
            let _ = write!(tip, "\nlost when {} lost power at {}", vm.host, hms(off));
        }
    }
    let attempts: Vec<_> = result
        .failed_attempts
        .iter()
        .filter(|a| a.vm == vm.name)
        .collect();
    for a in &attempts {
        let _ = write!(
            tip,
            "\nfailed attempt {}–{}: {}",
            hms(a.start_s),
            hms(a.end_s),
            a.reason
        );
    }

    let _ = write!(
        out,
        r#"<g class="gantt-row" data-vm="{}" data-outcome="{}"><title>{}</title>"#,
        escape(&vm.name),
        status.class(),
        escape(&tip)
    );
    let shown: String = if vm.name.chars().count() > MAX_NAME {
        vm.name.chars().take(MAX_NAME - 1).chain(['…']).collect()
    } else {
        vm.name.clone()
    };
    let _ = write!(
        out,
        r#"<text class="vm-name {}" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
        status.class(),
        x.from_px - 6.0,
        top + BAR - 1.5,
        escape(&shown)
    );
    for a in &attempts {
        rect(
            out,
            "bar failed",
            x.px(a.start_s),
            x.px(a.end_s),
            top,
            Some(hatch),
        );
    }
    match (status, vm.start_s) {
        (Status::Migrated, Some(start)) => {
            let end = vm.end_s.unwrap_or(start);
            let paused = end - vm.downtime_s.unwrap_or(0.0).max(0.0);
            rect(out, "bar migrated", x.px(start), x.px(end), top, None);
            // At least 2 px, so a 100 ms downtime on an hour-long axis shows.
            let right = x.px(end);
            let left = x.px(paused).min(right - 2.0);
            rect(out, "downtime", left, right, top, None);
        }
        (Status::Lost, Some(start)) => {
            // It migrated until its host died (or to the end of the record).
            let until = power_off.or(vm.end_s).unwrap_or(x.hi);
            rect(out, "bar lost", x.px(start), x.px(until), top, None);
            mark(out, "lost", x.px(until), top, "✕");
        }
        (Status::Lost, None) => {
            mark(out, "lost", x.px(power_off.unwrap_or(x.lo)), top, "✕");
        }
        (Status::NotMigrated, start) => {
            // Still on its source: a mark where it started, if it did.
            mark(out, "not-migrated", x.px(start.unwrap_or(x.lo)), top, "○");
        }
        (Status::Migrated, None) => {}
    }
    out.push_str("</g>");
}

fn rect(out: &mut String, class: &str, x0: f64, x1: f64, top: f64, pattern: Option<&str>) {
    let width = (x1 - x0).max(1.0);
    let fill = pattern.map_or_else(String::new, |p| format!(r#" fill="url(#{p})""#));
    let _ = write!(
        out,
        r#"<rect class="{class}"{fill} x="{x0:.1}" y="{top:.1}" width="{width:.1}" height="{BAR}"/>"#
    );
}

fn mark(out: &mut String, class: &str, x: f64, top: f64, glyph: &str) {
    let _ = write!(
        out,
        r#"<text class="mark {class}" x="{x:.1}" y="{:.1}" text-anchor="middle">{glyph}</text>"#,
        top + BAR - 1.0
    );
}

/// A dashed line per power-off instant, labelled with the hosts that die.
fn power_offs(out: &mut String, result: &RunResult, frame: &Frame, x: &svg::Scale) {
    let mut instants: Vec<(f64, Vec<&str>)> = Vec::new();
    for host in &result.hosts {
        let Some(off) = host.power_off_s.filter(|t| t.is_finite()) else {
            continue;
        };
        match instants.iter_mut().find(|(t, _)| *t == off) {
            Some((_, names)) => names.push(&host.name),
            None => instants.push((off, vec![&host.name])),
        }
    }
    instants.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (n, (off, names)) in instants.iter().enumerate() {
        let px = x.px(*off);
        let label = format!("{} off at {}", names.join(", "), hms(*off));
        // Labels alternate between two heights so close instants do not
        // print over each other.
        let y = frame.plot_top() - 8.0 - 13.0 * (n % 2) as f64;
        let _ = write!(
            out,
            r#"<g class="power-off-marker"><title>{}</title><line class="power-off" x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}"/><text class="power-off-label" x="{:.1}" y="{y:.1}" text-anchor="end">{}</text></g>"#,
            escape(&label),
            y + 3.0,
            frame.plot_bottom(),
            px - 3.0,
            escape(&label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostRecord;
    use evac_model::Site;

    fn result() -> RunResult {
        let vm = VmRecord {
            destination: Some("d".into()),
            start_s: Some(10.0),
            end_s: Some(20.0),
            migration_time_s: Some(10.0),
            downtime_s: Some(0.2),
            rounds: Some(2),
            bytes_sent: Some(1),
            outcome: Outcome::Migrated,
            mode: Some(evac_model::Mode::Postcopy),
            connections: Some(1),
            decisions: vec![evac_outcome::Decision {
                at_s: 10.0,
                decision: "start".into(),
                why: "fits before its <power-off>".into(),
            }],
            ..VmRecord::unmoved("vm".into(), "h".into())
        };
        RunResult {
            evac_version: None,
            scenario: None,
            seed: None,
            policy: "p".into(),
            total_time_s: Some(20.0),
            mean_migration_time_s: Some(10.0),
            max_migration_time_s: Some(10.0),
            p95_migration_time_s: Some(10.0),
            mean_completion_time_s: Some(20.0),
            mean_downtime_s: Some(0.2),
            lower_bound_total_s: 1.0,
            lower_bound_mean_migration_s: 1.0,
            score: Some(1.0),
            migrated: 1,
            not_migrated: 0,
            lost: 1,
            priority_saved: 1,
            priority_total: 2,
            bytes_sent: 1,
            vms: vec![vm, {
                let mut gone = VmRecord::unmoved("gone<1>".into(), "h".into());
                gone.left(Outcome::Lost, evac_outcome::reason::POWER_OFF);
                gone
            }],
            timeline: vec![],
            hosts: vec![HostRecord {
                name: "h".into(),
                site: Site::Source,
                power_off_s: Some(30.0),
            }],
            failed_attempts: vec![],
            started_at: None,
        }
    }

    #[test]
    fn bars_sit_at_their_times() {
        let mut out = String::new();
        draw(&mut out, &result(), 0, 40.0);
        // Names of at most 7 characters: the 60 px minimum label area; the
        // plot spans 60..884 px, 824 px for 40 s: 20.6 px a second.
        // 10 s -> 60 + 206 = 266; 20 s -> 472; the bar is 206 px wide. Rows
        // are 16 px from y = 56, bars 11 px centred: the first at 58.5.
        assert!(
            out.contains(r#"<rect class="bar migrated" x="266.0" y="58.5" width="206.0" height="11"/>"#),
            "{out}"
        );
        // 0.2 s of downtime is 4.12 px, ending with the bar at 472.
        assert!(
            out.contains(r#"<rect class="downtime" x="467.9" y="58.5" width="4.1""#),
            "{out}"
        );
        // The VM lost before it started: a mark at the power-off, 30 s ->
        // 60 + 618 = 678, in the second row (top 74.5, baseline 84.5); its
        // name escaped.
        assert!(
            out.contains(r#"<text class="mark lost" x="678.0" y="84.5""#),
            "{out}"
        );
        assert!(out.contains(">gone&lt;1&gt;</text>"), "{out}");
        // The tooltip tells how it moved and why, escaped.
        assert!(
            out.contains("\npostcopy, 1 connection(s)\n0:00:10 start: fits before its &lt;power-off&gt;"),
            "{out}"
        );
        assert_eq!(out.matches(r#"<g class="gantt-row""#).count(), 2);
        // One power-off line, at 678 px.
        assert!(out.contains(r#"<line class="power-off" x1="678.0""#), "{out}");
    }
}
