//! Whether a real run decided what the simulation of the same lab decided,
//! VM by VM: which VMs started when, in which order, with how many
//! connections and in which mode.
//!
//! Migration times can differ by the model's error and still be a good
//! prediction; decisions that differ make the prediction of a different
//! evacuation, so they are checked apart and more strictly: a VM's start
//! within `tolerance` of the simulated one (one control period by default:
//! a controller that sees the same world a tick later decides the same a
//! tick later), no two VMs started in the opposite order, the same
//! connections and mode. Destinations are shown but not required to agree:
//! among equal destinations the controller takes the one with most room,
//! which follows which migration ended first, a matter of milliseconds.

use std::fmt::Write as _;

use evac_model::Mode;
use evac_report::VmRecord;

/// Two starts closer than this are one decision: the run loop stamps every
/// start of a tick with that tick's time, the simulator too.
const SAME_DECISION_S: f64 = 1e-3;

/// What a run decided about one VM.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// Seconds from the evacuation's start of its (last) start.
    pub at_s: f64,
    pub connections: Option<u32>,
    pub mode: Option<Mode>,
    pub destination: Option<String>,
}

impl Start {
    fn of(vm: &VmRecord) -> Option<Start> {
        Some(Start {
            at_s: vm.start_s?,
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
}

/// One way a VM's decisions differ.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub vm: String,
    /// `start`, `order`, `connections`, `mode` or `started`.
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
    /// How far apart two starts of one VM may be, in seconds.
    pub tolerance_s: f64,
}

impl Comparison {
    /// Pairs the lab's VMs with the simulation's by name (in the lab's
    /// order; `RunResult::vms` of both); a start may be `tolerance_s` away
    /// from the simulated one.
    pub fn new(lab: &[VmRecord], sim: &[VmRecord], tolerance_s: f64) -> Comparison {
        let rows = lab
            .iter()
            .map(|vm| Row {
                vm: vm.name.clone(),
                lab: Start::of(vm),
                sim: sim.iter().find(|p| p.name == vm.name).and_then(Start::of),
            })
            .collect();
        Comparison { rows, tolerance_s }
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
                    push(&row.vm, "started", format!("lab {}, sim {}", said(lab), said(sim)));
                    continue;
                }
            };
            let gap = lab.at_s - sim.at_s;
            if gap.abs() > self.tolerance_s {
                push(
                    &row.vm,
                    "start",
                    format!(
                        "lab {:.2} s, sim {:.2} s: {gap:+.2} s, more than {:.2} s apart",
                        lab.at_s, sim.at_s, self.tolerance_s
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
            "| VM | start (s) lab / sim (gap) | connections lab / sim | mode lab / sim | destination lab / sim | differs |\n\
             |---|---:|---:|---|---|---|\n",
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
            let differs: Vec<&str> = mismatches.iter().filter(|m| m.vm == row.vm).map(|m| m.what).collect();
            let _ = writeln!(
                out,
                "| {} | {}{gap} | {} | {} | {} | {} |",
                row.vm,
                pair(&|s| format!("{:.2}", s.at_s)),
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
            name: name.to_owned(),
            host: "s".to_owned(),
            destination: start.map(|_| "d".to_owned()),
            start_s: start,
            end_s: None,
            migration_time_s: None,
            downtime_s: None,
            rounds: None,
            bytes_sent: None,
            outcome: evac_report::Outcome::Migrated,
            reason: None,
            mode: start.map(|_| mode),
            connections: start.map(|_| connections),
            compression: None,
            decisions: Vec::new(),
        }
    }

    fn run(vms: Vec<VmRecord>) -> Vec<VmRecord> {
        vms
    }

    fn whats(c: &Comparison) -> Vec<(String, &'static str)> {
        c.mismatches().into_iter().map(|m| (m.vm, m.what)).collect()
    }

    #[test]
    fn the_same_decisions_a_tick_apart_match() {
        let lab = run(vec![
            vm("a", Some(0.0), 2, Mode::Live),
            vm("b", Some(0.0), 2, Mode::Live),
            vm("c", Some(3.1), 1, Mode::Live),
        ]);
        let sim = run(vec![
            vm("a", Some(0.0), 2, Mode::Live),
            vm("b", Some(0.0), 2, Mode::Live),
            vm("c", Some(2.7), 1, Mode::Live),
        ]);
        let c = Comparison::new(&lab, &sim, 0.5);
        assert_eq!(whats(&c), vec![]);
        assert!((c.worst_start_gap_s() - 0.4).abs() < 1e-9);
    }

    #[test]
    fn a_late_start_other_connections_or_mode_differ() {
        let lab = run(vec![
            vm("a", Some(0.0), 2, Mode::Live),
            vm("b", Some(1.6), 2, Mode::Live),
            vm("c", Some(2.0), 4, Mode::Postcopy),
        ]);
        let sim = run(vec![
            vm("a", Some(0.0), 2, Mode::Live),
            vm("b", Some(1.0), 2, Mode::Live),
            vm("c", Some(2.0), 2, Mode::Live),
        ]);
        let c = Comparison::new(&lab, &sim, 0.5);
        assert_eq!(
            whats(&c),
            vec![
                ("b".to_owned(), "start"),
                ("c".to_owned(), "connections"),
                ("c".to_owned(), "mode")
            ]
        );
    }

    #[test]
    fn starts_within_the_tolerance_in_the_opposite_order_differ() {
        // b and c swap by 0.4 s: each within the tolerance, the order not.
        let lab = run(vec![
            vm("a", Some(0.0), 1, Mode::Live),
            vm("b", Some(2.0), 1, Mode::Live),
            vm("c", Some(2.4), 1, Mode::Live),
        ]);
        let sim = run(vec![
            vm("a", Some(0.0), 1, Mode::Live),
            vm("b", Some(2.4), 1, Mode::Live),
            vm("c", Some(2.0), 1, Mode::Live),
        ]);
        let c = Comparison::new(&lab, &sim, 0.5);
        assert_eq!(whats(&c), vec![("b".to_owned(), "order")]);
    }

    #[test]
    fn ties_in_one_run_are_no_inversion() {
        // Started together in the lab, one after the other in the sim.
        let lab = run(vec![vm("a", Some(1.0), 1, Mode::Live), vm("b", Some(1.0), 1, Mode::Live)]);
        let sim = run(vec![vm("a", Some(1.5), 1, Mode::Live), vm("b", Some(1.0), 1, Mode::Live)]);
        assert_eq!(whats(&Comparison::new(&lab, &sim, 0.5)), vec![]);
    }

    #[test]
    fn a_vm_started_in_one_run_only_differs() {
        let lab = run(vec![vm("a", Some(0.0), 1, Mode::Live), vm("b", None, 1, Mode::Live)]);
        let sim = run(vec![vm("a", Some(0.0), 1, Mode::Live), vm("b", Some(4.0), 1, Mode::Live)]);
        let c = Comparison::new(&lab, &sim, 0.5);
        assert_eq!(whats(&c), vec![("b".to_owned(), "started")]);
        assert!(c.table().contains("| b | - / 4.00 | - / 1 |"), "{}", c.table());
    }
}
