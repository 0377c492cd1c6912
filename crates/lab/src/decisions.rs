//! Whether a real run decided what the simulation of the same lab decided,
//! VM by VM: which VMs started when, in which order, with how many
//! connections and in which mode.
//!
//! Migration times can differ by the model's error and still be a good
//! prediction; decisions that differ make the prediction of a different
//! evacuation, so they are checked apart: no two VMs started in the
//! opposite order, the same connections and mode, each VM started beside
//! as many migrations in flight (what a planner decides: one at a time, or
//! a second on a WAN it thinks has room), and each start within a
//! tolerance of the simulated one:
//!
//! - the clocks are aligned at each run's first start: a real run's clock
//!   starts before it has connected to every VM (0.3-1.8 s for 24 VMs on
//!   the loaded 2-core machine), the simulator's at its first decision;
//! - one control period (a controller that sees the same world a tick
//!   later decides the same a tick later);
//! - plus the drift of the migration whose simulated end last came before
//!   the simulated start (its lab end minus its simulated end): a
//!   controller decides when a migration ends, so a start that follows an
//!   end the model put 0.3 s early comes 0.3 s "late" with the same
//!   decision. That error is the model's migration time, measured apart
//!   (`evacuate::Fidelity`); without this allowance 24 migrations one after
//!   the other 5 % slower than modelled would fail a period of tolerance
//!   from the tenth on, with every decision the same.
//!
//! Destinations are shown but not required to agree: among equal
//! destinations the controller takes the one with most room, which follows
//! which migration ended first, a matter of milliseconds.

use std::fmt::Write as _;

use evac_model::Mode;
use evac_report::VmRecord;

/// Two starts closer than this are one decision: the run loop stamps every
/// start of a tick with that tick's time, the simulator too.
const SAME_DECISION_S: f64 = 1e-3;

/// What a run decided about one VM.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// Seconds from the run's first start (the clocks aligned) of its
    /// (last) start.
    pub at_s: f64,
    /// And of its end, if it migrated.
    pub end_s: Option<f64>,
    /// Migrations of its run in flight when it started (started before
    /// it, not at the same instant, and not ended).
    pub beside: usize,
    pub connections: Option<u32>,
    pub mode: Option<Mode>,
    pub destination: Option<String>,
}

impl Start {
    fn of(vm: &VmRecord, run: &[VmRecord], origin: f64) -> Option<Start> {
        let at = vm.start_s?;
        let beside = run
            .iter()
            .filter(|other| {
                other.start_s.is_some_and(|s| s < at - SAME_DECISION_S)
                    && other.end_s.unwrap_or(f64::INFINITY) > at
            })
            .count();
        Some(Start {
            at_s: at - origin,
            end_s: vm.end_s.map(|end| end - origin),
            beside,
            connections: vm.connections,
            mode: vm.mode,
            destination: vm.destination.clone(),
        })
    }
}

/// One VM's decisions in the lab and in the simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub vm: String,
    pub lab: Option<Start>,
    pub sim: Option<Start>,
    /// How far its lab start may be from its simulated one, seconds.
    pub tolerance_s: f64,
}

/// One way a VM's decisions differ.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub vm: String,
    /// `start`, `order`, `connections`, `mode`, `beside` or `started`.
    pub what: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.vm, self.what, self.detail)
    }
}

/// A real run's decisions beside the simulation's, VM by VM.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub rows: Vec<Row>,
    /// One control period, seconds: the tolerance before drift.
    pub period_s: f64,
    /// The lab's first start on its own clock (what its times were moved
    /// by), seconds; the simulation's is 0 in practice.
    pub lab_origin_s: f64,
    pub sim_origin_s: f64,
}

/// The earliest start of a run, 0 if none started.
fn first_start(vms: &[VmRecord]) -> f64 {
    let first = vms.iter().filter_map(|v| v.start_s).fold(f64::INFINITY, f64::min);
    if first.is_finite() {
        first
    } else {
        0.0
    }
}

impl Comparison {
    /// Pairs the lab's VMs with the simulation's by name (in the lab's
    /// order; `RunResult::vms` of both); `period_s`: the control period.
    pub fn new(lab: &[VmRecord], sim: &[VmRecord], period_s: f64) -> Comparison {
        let (lab_origin_s, sim_origin_s) = (first_start(lab), first_start(sim));
        let mut rows: Vec<Row> = lab
            .iter()
            .map(|vm| Row {
                vm: vm.name.clone(),
                lab: Start::of(vm, lab, lab_origin_s),
                sim: sim
                    .iter()
                    .find(|p| p.name == vm.name)
                    .and_then(|p| Start::of(p, sim, sim_origin_s)),
                tolerance_s: period_s,
            })
            .collect();
        // Each end's drift, lab minus simulation, by simulated end.
        let mut drifts: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| {
                let sim_end = r.sim.as_ref()?.end_s?;
                Some((sim_end, r.lab.as_ref()?.end_s? - sim_end))
            })
            .collect();
        drifts.sort_by(|a, b| a.0.total_cmp(&b.0));
        for row in &mut rows {
            let Some(sim) = &row.sim else { continue };
            // The last end at or before the simulated start (one instant:
            // the simulator starts the next VM at the very time one ends).
            let before = drifts.partition_point(|&(end, _)| end <= sim.at_s + SAME_DECISION_S);
            if let Some(&(_, drift)) = before.checked_sub(1).and_then(|i| drifts.get(i)) {
                row.tolerance_s += drift.abs();
            }
        }
        Comparison {
            rows,
            period_s,
            lab_origin_s,
            sim_origin_s,
        }
    }

    /// Every way the decisions differ; empty when they match.
    pub fn mismatches(&self) -> Vec<Mismatch> {
        let mut out = Vec::new();
        let mut push = |vm: &str, what, detail: String| {
            out.push(Mismatch {
                vm: vm.to_owned(),
                what,
                detail,
            })
        };
        for row in &self.rows {
            let (lab, sim) = match (&row.lab, &row.sim) {
                (Some(lab), Some(sim)) => (lab, sim),
                (None, None) => continue,
                (lab, sim) => {
                    let said = |s: &Option<Start>| match s {
                        Some(s) => format!("started at {:.2} s", s.at_s),
                        None => "never started".to_owned(),
                    };
                    push(
                        &row.vm,
                        "started",
                        format!("lab {}, sim {}", said(lab), said(sim)),
                    );
                    continue;
                }
            };
            let gap = lab.at_s - sim.at_s;
            if gap.abs() > row.tolerance_s {
                push(
                    &row.vm,
                    "start",
                    format!(
                        "lab {:.2} s, sim {:.2} s: {gap:+.2} s, more than {:.2} s apart",
                        lab.at_s, sim.at_s, row.tolerance_s
                    ),
                );
            }
            if lab.connections != sim.connections {
                push(
                    &row.vm,
                    "connections",
                    format!("lab {:?}, sim {:?}", lab.connections, sim.connections),
                );
            }
            if lab.mode != sim.mode {
                push(&row.vm, "mode", format!("lab {:?}, sim {:?}", lab.mode, sim.mode));
            }
            if lab.beside != sim.beside {
                push(
                    &row.vm,
                    "beside",
                    format!(
                        "started beside {} migration(s) in flight in the lab, {} in the simulation",
                        lab.beside, sim.beside
                    ),
                );
            }
        }
        // The order: a pair started at distinct decisions in both runs, in
        // the opposite order. Each VM is named once, with the first VM it
        // overtook or was overtaken by.
        let both: Vec<(&str, f64, f64)> = self
            .rows
            .iter()
            .filter_map(|r| Some((r.vm.as_str(), r.lab.as_ref()?.at_s, r.sim.as_ref()?.at_s)))
            .collect();
        for &(a, a_lab, a_sim) in &both {
            let swapped = both.iter().find(|&&(_, b_lab, b_sim)| {
                a_lab + SAME_DECISION_S < b_lab && b_sim + SAME_DECISION_S < a_sim
            });
            if let Some(&(b, b_lab, b_sim)) = swapped {
                push(
                    a,
                    "order",
                    format!(
                        "started before {b} in the lab ({a_lab:.2} s < {b_lab:.2} s), after it in the simulation ({a_sim:.2} s > {b_sim:.2} s)"
                    ),
                );
            }
        }
        out
    }

    /// The largest distance between a VM's two starts, in seconds.
    pub fn worst_start_gap_s(&self) -> f64 {
        self.rows
            .iter()
            .filter_map(|r| Some((r.lab.as_ref()?.at_s - r.sim.as_ref()?.at_s).abs()))
            .fold(0.0, f64::max)
    }

    /// A markdown table, one row per VM in the order the lab started them:
    /// start lab / sim and their gap, connections, mode, destination, and
    /// what differs.
    pub fn table(&self) -> String {
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by(|a, b| {
            let at = |r: &Row| r.lab.as_ref().map_or(f64::INFINITY, |s| s.at_s);
            at(a).total_cmp(&at(b))
        });
        let mismatches = self.mismatches();
        let mut out = String::from(
            "| VM | start (s) lab / sim (gap) | tolerance (s) | in flight at start lab / sim | connections lab / sim | mode lab / sim | destination lab / sim | differs |\n\
             |---|---:|---:|---:|---:|---|---|---|\n",
        );
        for row in rows {
            let pair = |f: &dyn Fn(&Start) -> String| {
                let show = |s: &Option<Start>| s.as_ref().map_or("-".to_owned(), f);
                format!("{} / {}", show(&row.lab), show(&row.sim))
            };
            let gap = match (&row.lab, &row.sim) {
                (Some(l), Some(s)) => format!(" ({:+.2})", l.at_s - s.at_s),
                _ => String::new(),
            };
            let differs: Vec<&str> = mismatches
                .iter()
                .filter(|m| m.vm == row.vm)
                .map(|m| m.what)
                .collect();
            let _ = writeln!(
                out,
                "| {} | {}{gap} | {:.2} | {} | {} | {} | {} | {} |",
                row.vm,
                pair(&|s| format!("{:.2}", s.at_s)),
                row.tolerance_s,
                pair(&|s| s.beside.to_string()),
                pair(&|s| s.connections.map_or("-".to_owned(), |c| c.to_string())),
                pair(&|s| s.mode.map_or("-".to_owned(), |m| format!("{m:?}").to_lowercase())),
                pair(&|s| s.destination.clone().unwrap_or_else(|| "-".to_owned())),
                differs.join(", "),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, start: Option<f64>, connections: u32, mode: Mode) -> VmRecord {
        VmRecord {
            destination: start.map(|_| "d".to_owned()),
            start_s: start,
            end_s: start.map(|s| s + 1.0),
            outcome: evac_report::Outcome::Migrated,
            mode: start.map(|_| mode),
            connections: start.map(|_| connections),
            ..VmRecord::unmoved(name.to_owned(), "s".to_owned())
        }
    }

    /// A run of live migrations: each VM's name, start (s) and connections.
    fn live(starts: &[(&str, f64, u32)]) -> Vec<VmRecord> {
        starts
            .iter()
            .map(|&(name, start, connections)| vm(name, Some(start), connections, Mode::Live))
            .collect()
    }

    /// The comparison's mismatches must be these: (VM, what), in order.
    #[track_caller]
    fn assert_mismatches(c: &Comparison, expected: &[(&str, &str)]) {
        let got = c.mismatches();
        let got: Vec<(&str, &str)> = got.iter().map(|m| (m.vm.as_str(), m.what)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn the_same_decisions_a_tick_apart_match() {
        let lab = live(&[("a", 0.0, 2), ("b", 0.0, 2), ("c", 3.1, 1)]);
        let sim = live(&[("a", 0.0, 2), ("b", 0.0, 2), ("c", 2.7, 1)]);
        let c = Comparison::new(&lab, &sim, 0.5);
        assert_mismatches(&c, &[]);
        assert!((c.worst_start_gap_s() - 0.4).abs() < 1e-9);
    }

    #[test]
    fn a_late_start_other_connections_or_mode_differ() {
        let mut lab = live(&[("a", 0.0, 2), ("b", 1.6, 2), ("c", 2.0, 4)]);
        lab[2].mode = Some(Mode::Postcopy);
        let sim = live(&[("a", 0.0, 2), ("b", 1.0, 2), ("c", 2.0, 2)]);
        let c = Comparison::new(&lab, &sim, 0.5);
        assert_mismatches(
            &c,
            &[
                ("b", "start"),
                ("c", "connections"),
                ("c", "mode"),
                // b, started late, was still in flight at c's start.
                ("c", "beside"),
            ],
        );
    }

    #[test]
    fn starts_within_the_tolerance_in_the_opposite_order_differ() {
        // b and c swap by 0.4 s: each within the tolerance, the order not.
        let lab = live(&[("a", 0.0, 1), ("b", 2.0, 1), ("c", 2.4, 1)]);
        let sim = live(&[("a", 0.0, 1), ("b", 2.4, 1), ("c", 2.0, 1)]);
        let c = Comparison::new(&lab, &sim, 0.5);
        // And each started beside the other in one run only.
        assert_mismatches(&c, &[("b", "beside"), ("c", "beside"), ("b", "order")]);
    }

    #[test]
    fn ties_in_one_run_are_no_inversion() {
        // Started together in the lab, one after the other in the sim: no
        // inversion, but `a` started beside `b` in the simulation only.
        let lab = live(&[("a", 1.0, 1), ("b", 1.0, 1)]);
        let sim = live(&[("a", 1.5, 1), ("b", 1.0, 1)]);
        assert_mismatches(&Comparison::new(&lab, &sim, 0.5), &[("a", "beside")]);
    }

    #[test]
    fn a_vm_started_in_one_run_only_differs() {
        let lab = vec![vm("a", Some(0.0), 1, Mode::Live), vm("b", None, 1, Mode::Live)];
        let sim = live(&[("a", 0.0, 1), ("b", 4.0, 1)]);
        let c = Comparison::new(&lab, &sim, 0.5);
        assert_mismatches(&c, &[("b", "started")]);
        assert!(
            c.table().contains("| b | - / 4.00 | 0.50 | - / 0 | - / 1 |"),
            "{}",
            c.table()
        );
    }

    /// One migration after another, each 0.1 s longer in the lab than
    /// simulated (1.1 s for 1.0), after a run start 0.4 s late.
    fn chain(n: usize, lab_each: f64) -> (Vec<VmRecord>, Vec<VmRecord>) {
        let mut lab = Vec::new();
        let mut sim = Vec::new();
        for i in 0..n {
            let name = format!("v{i}");
            let mut l = vm(&name, Some(0.4 + i as f64 * lab_each), 1, Mode::Live);
            l.end_s = Some(0.4 + (i + 1) as f64 * lab_each);
            lab.push(l);
            sim.push(vm(&name, Some(i as f64), 1, Mode::Live));
        }
        (lab, sim)
    }

    #[test]
    fn starts_that_follow_late_ends_are_the_same_decisions() {
        // By hand: v9 starts at 0.4 + 9 x 1.1 = 10.3 s in the lab, 9 s
        // simulated: 0.9 s apart once the clocks are aligned at 0.4 s,
        // after v8, which ended 0.9 s after its simulated end.
        let (lab, sim) = chain(10, 1.1);
        let c = Comparison::new(&lab, &sim, 0.5);
        assert_eq!(c.lab_origin_s, 0.4);
        assert_mismatches(&c, &[]);
        let v9 = &c.rows[9];
        assert!((v9.lab.as_ref().unwrap().at_s - 9.9).abs() < 1e-9);
        assert!((v9.tolerance_s - 1.4).abs() < 1e-9, "{}", v9.tolerance_s);
    }

    #[test]
    fn a_start_later_than_the_end_before_it_allows_differs() {
        // The same chain, but v5 starts 0.6 s after v4 ended in the lab
        // (a decision the simulation took at once).
        let (mut lab, sim) = chain(10, 1.1);
        for vm in &mut lab[5..] {
            vm.start_s = vm.start_s.map(|s| s + 0.6);
            vm.end_s = vm.end_s.map(|s| s + 0.6);
        }
        let c = Comparison::new(&lab, &sim, 0.5);
        // v5: gap 0.5 + 0.6 = 1.1 s; allowed 0.5 + v4's drift 0.5 = 1.0 s.
        assert_mismatches(&c, &[("v5", "start")]);
    }

    #[test]
    fn a_second_migration_beside_one_in_flight_differs_within_the_tolerance() {
        // The lab starts b 0.3 s after a, while a runs; the simulation as
        // a ends, 0.5 s after it: within the tolerance, not the same
        // decision.
        let lab = live(&[("a", 0.0, 1), ("b", 0.3, 1)]);
        let mut sim = live(&[("a", 0.0, 1), ("b", 0.5, 1)]);
        sim[0].end_s = Some(0.5);
        assert_mismatches(&Comparison::new(&lab, &sim, 0.5), &[("b", "beside")]);
    }
}
