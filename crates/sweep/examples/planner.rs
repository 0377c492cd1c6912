//! The planner benchmark (docs/planner.md): for every scenario of a grid,
//! every policy at the scenario's settings against the best configuration
//! in hindsight and an exact knapsack bound on the priority any schedule
//! saves.
//!
//! ```text
//! cargo run --release -p evac-sweep --example planner [-- GRID...]
//! ```
//!
//! Without arguments, the four grids of `examples/planner/` (the default
//! fleet, a NIC-bound site, many small VMs, few large ones). The table is
//! printed for all scenarios together, then per grid; `PLANNER_DETAIL=1`
//! adds a line per scenario (on stderr); `PLANNER_DEADLINE=1` runs only
//! `deadline` and prints its losses per grid (a planner change's quick
//! before and after), the VMs it left on powered hosts and the control
//! periods it left the WAN under half used while a VM waited
//! (`idle_periods`).
//!
//! Best in hindsight: the lowest-score run, among those saving the most
//! priority, of `static` over order × window × per-host limit ×
//! connections (window 1 is sequential), live only or with offline too.
//! A policy's score ratio is its score over the best score among the
//! hindsight runs that save at least as much priority as it does (1 when
//! none does).

use std::path::PathBuf;

use evac_controller::{knapsack_bound, BoundHost, BoundVm, Order, PolicyKind};
use evac_model::{Connections, Mode, Network};
use evac_outcome::RunResult;
use evac_scenario::Scenario;
use evac_sweep::Grid;
use rayon::prelude::*;

const ORDERS: [Order; 3] = [Order::AsListed, Order::Deadline, Order::Priority];
const WINDOWS: [usize; 4] = [1, 2, 4, 8];
const PER_HOST: [usize; 2] = [1, 1000];
const CONNECTIONS: [u32; 4] = [1, 2, 4, 8];

fn simulate(scenario: &Scenario) -> RunResult {
    evac_sim::simulate_evacuation(
        &scenario.fleet,
        &scenario.network,
        scenario.migration,
        &scenario.controller,
    )
}

/// Bytes the WAN carries from the start to `t` seconds.
fn wan_bytes_by(network: &Network, t: f64) -> f64 {
    let mut bytes = 0.0;
    let mut at = 0.0;
    let mut rate = network.wan_bandwidth.0 / 8.0;
    for point in &network.wan_trace {
        let p = point.at.as_secs_f64();
        if p >= t {
            break;
        }
        bytes += rate * (p - at);
        at = p;
        rate = point.bandwidth.0 / 8.0;
    }
    bytes + rate * (t - at).max(0.0)
}

fn bound(scenario: &Scenario) -> u64 {
    let fleet = &scenario.fleet;
    let hosts: Vec<BoundHost> = fleet
        .hosts
        .iter()
        .map(|h| BoundHost {
            deadline: h.power_off_at.map(|d| d.as_secs_f64()),
            nic: h.nic.0 / 8.0,
        })
        .collect();
    // The fewest bytes a VM can cost: its disk and one pass of its memory
    // by the byte model.
    let vms: Vec<BoundVm> = fleet
        .vms
        .iter()
        .map(|v| BoundVm {
            host: v.host.0,
            bytes: v.least_wire_bytes(),
            priority: v.priority,
        })
        .collect();
    // Whatever crosses the WAN also enters the destinations: by `t` no more
    // than their NICs together carry in `t`.
    let into_destinations = into_destinations(fleet);
    knapsack_bound(
        &hosts,
        &vms,
        |t| wan_bytes_by(&scenario.network, t).min(into_destinations * t),
        4000,
    )
}

/// What the destinations' NICs take in together, bytes per second.
fn into_destinations(fleet: &evac_model::Fleet) -> f64 {
    fleet
        .hosts
        .iter()
        .filter(|h| h.site == evac_model::Site::Destination)
        .map(|h| h.nic.0 / 8.0)
        .sum()
}

/// A VM of a run as `idle_periods` sees it.
struct Journey<'r> {
    host: &'r str,
    memory: f64,
    /// Its host's power-off (infinite: none).
    dies: f64,
    /// When it was moved (infinite: never).
    done: f64,
    /// Where it went and from when its memory was promised there (its
    /// last start), if it was moved.
    landed: Option<(&'r str, f64)>,
    /// Its attempts in flight, from and to.
    flights: Vec<(f64, f64)>,
}

impl Journey<'_> {
    fn in_flight(&self, t: f64) -> bool {
        self.flights.iter().any(|&(from, to)| from <= t && t < to)
    }
}

/// The control periods of a `deadline` run in which the WAN carried under
/// half of what could cross (the WAN's capacity, or less, the NICs of the
/// destinations with room for the smallest VM waiting) while a VM waited
/// on a host that still had power and whose NIC nothing else used (issue
/// 17's "no control period with the WAN under half used while a VM waits
/// ..."), and all its control periods up to its last event. A VM is in
/// flight from each `start` decision to the next `cancel`, its end or its
/// host's power-off, and holds its destination's memory from its last
/// start on if it was moved (a failed attempt's hold is not counted: the
/// room errs high, and so does the count); a host with a VM in flight
/// counts as busy (its NIC may have had room: the count errs low). Sampled
/// in the middle of each period.
fn idle_periods(scenario: &Scenario, run: &RunResult) -> (Vec<f64>, usize) {
    let period = scenario.controller.period.as_secs_f64();
    let end = run.timeline.last().map_or(0.0, |p| p.t_s);
    let power_offs: std::collections::HashMap<&str, f64> = scenario
        .fleet
        .hosts
        .iter()
        .map(|h| {
            (
                h.name.as_str(),
                h.power_off_at.map_or(f64::INFINITY, |t| t.as_secs_f64()),
            )
        })
        .collect();
    let power_off = |host: &str| power_offs.get(host).copied().unwrap_or(f64::INFINITY);
    let memory: std::collections::HashMap<&str, f64> = scenario
        .fleet
        .vms
        .iter()
        .map(|vm| (vm.name.as_str(), vm.memory.as_f64()))
        .collect();
    let vms: Vec<Journey> = run
        .vms
        .iter()
        .map(|record| {
            let dies = power_off(&record.host);
            let done = record.end_s.unwrap_or(f64::INFINITY);
            let mut flights = Vec::new();
            let mut open = None;
            for decision in &record.decisions {
                match decision.decision.as_str() {
                    "start" => open = Some(decision.at_s),
                    "cancel" => flights.extend(open.take().map(|from| (from, decision.at_s))),
                    _ => {}
                }
            }
            flights.extend(open.map(|from| (from, done.min(dies).min(end))));
            let landed = match (&record.destination, record.start_s) {
                (Some(d), Some(from)) if done.is_finite() => Some((d.as_str(), from)),
                _ => None,
            };
            Journey {
                host: &record.host,
                memory: memory.get(record.name.as_str()).copied().unwrap_or(0.0),
                dies,
                done,
                landed,
                flights,
            }
        })
        .collect();
    // Each destination: its name, NIC (bytes per second) and memory.
    let destinations: Vec<(&str, f64, Option<f64>)> = scenario
        .fleet
        .hosts
        .iter()
        .filter(|h| h.site == evac_model::Site::Destination)
        .map(|h| (h.name.as_str(), h.nic.0 / 8.0, h.memory.map(|m| m.as_f64())))
        .collect();
    let (mut idle, mut periods) = (Vec::new(), 0);
    let mut point = 0;
    let mut t = period / 2.0;
    while t < end {
        periods += 1;
        while point + 1 < run.timeline.len() && run.timeline[point].t_s < t {
            point += 1;
        }
        let carried = run.timeline.get(point).map_or(0.0, |p| p.wan_throughput_bps) / 8.0;
        let busy: std::collections::HashSet<&str> = vms
            .iter()
            .filter(|vm| vm.in_flight(t))
            .map(|vm| vm.host)
            .collect();
        let smallest_waiting = vms
            .iter()
            .filter(|vm| t < vm.dies && t < vm.done && !vm.in_flight(t) && !busy.contains(vm.host))
            .map(|vm| vm.memory)
            .reduce(f64::min);
        if let Some(smallest) = smallest_waiting {
            let room = |name: &str, memory: Option<f64>| {
                memory.is_none_or(|m| {
                    let held: f64 = vms
                        .iter()
                        .filter(|vm| vm.landed.is_some_and(|(d, from)| d == name && from <= t))
                        .map(|vm| vm.memory)
                        .sum();
                    m - held >= smallest
                })
            };
            let into: f64 = destinations
                .iter()
                .filter(|&&(name, _, memory)| room(name, memory))
                .map(|&(_, nic, _)| nic)
                .sum();
            let wan = scenario
                .network
                .capacity_at(std::time::Duration::from_secs_f64(t))
                .0
                / 8.0;
            if carried < wan.min(into) / 2.0 {
                idle.push(t);
            }
        }
        t += period;
    }
    (idle, periods)
}

struct Row {
    vms_lost: usize,
    priority_lost: u64,
    ratio: f64,
}

/// The grids run when none is named.
const DEFAULT_GRIDS: [&str; 4] = [
    "examples/planner/scenarios.toml",
    "examples/planner/nic-bound.grid.toml",
    "examples/planner/many-small.grid.toml",
    "examples/planner/few-large.grid.toml",
];

const NAMES: [&str; 8] = [
    "sequential",
    "static",
    "aimd-global",
    "deadline, its own plan only (no rollouts)",
    "deadline",
    "deadline, postcopy allowed",
    "best in hindsight, live",
    "best in hindsight, offline allowed",
];

fn main() {
    let mut paths: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() {
        paths = DEFAULT_GRIDS.iter().map(PathBuf::from).collect();
    }
    let started = std::time::Instant::now();
    // Each scenario with the index of its grid.
    let mut scenarios: Vec<(usize, Scenario)> = Vec::new();
    // Each scenario's seed and levels, as written, for the detail lines.
    let mut labels: Vec<String> = Vec::new();
    let mut grid_names = Vec::new();
    for (g, path) in paths.iter().enumerate() {
        let grid = match Grid::from_path(path) {
            Ok(grid) => grid,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        };
        for (seed, levels) in grid.combinations() {
            match grid.scenario(seed, &levels) {
                Ok(scenario) => {
                    let levels: Vec<String> = grid
                        .factors
                        .iter()
                        .zip(&levels)
                        .map(|(f, &i)| format!("{}={}", f.name, f.levels[i].0))
                        .collect();
                    labels.push(format!("seed {seed}, {}", levels.join(", ")));
                    scenarios.push((g, scenario));
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            }
        }
        grid_names.push(grid.name.clone());
    }
    eprintln!("{} scenarios", scenarios.len());
    // `PLANNER_ONLY=N` (1-based, as the detail lines count): that scenario
    // alone, with each run's VMs on stderr, to see why a policy did what.
    if let Some(only) = std::env::var("PLANNER_ONLY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let Some((_, scenario)) = scenarios.get(only.wrapping_sub(1)) else {
            eprintln!(
                "error: PLANNER_ONLY={only}: there are {} scenarios",
                scenarios.len()
            );
            std::process::exit(1);
        };
        eprintln!("scenario {only}: {}", labels[only - 1]);
        explain(scenario);
        return;
    }
    // `PLANNER_BOUNDS=1`: only the knapsack bound per set, no runs (seconds
    // where the runs take an hour).
    if std::env::var_os("PLANNER_BOUNDS").is_some_and(|v| v != "0") {
        for (g, name) in grid_names.iter().enumerate() {
            let lost: u64 = scenarios
                .iter()
                .filter(|(sg, _)| *sg == g)
                .map(|(_, s)| s.fleet.vms.iter().map(|v| u64::from(v.priority)).sum::<u64>() - bound(s))
                .sum();
            println!("{name}: no schedule can lose less priority than {lost}");
        }
        return;
    }
    // `PLANNER_DEADLINE=1`: only `deadline` (with its rollouts), its losses
    // per set: the quick before/after of a planner change, no hindsight.
    if std::env::var_os("PLANNER_DEADLINE").is_some_and(|v| v != "0") {
        let runs: Vec<RunResult> = scenarios
            .par_iter()
            .map(|(_, base)| {
                let mut s = base.clone();
                s.controller.policy = PolicyKind::Deadline;
                simulate(&s)
            })
            .collect();
        for (g, name) in grid_names.iter().enumerate() {
            let (mut vms, mut priority, mut left, mut idle, mut periods) = (0, 0, 0, 0, 0);
            for ((sg, s), run) in scenarios.iter().zip(&runs) {
                if *sg == g {
                    vms += s.fleet.vms.len() - run.migrated;
                    priority += run.priority_total - run.priority_saved;
                    left += run.not_migrated;
                    let (i, p) = idle_periods(s, run);
                    (idle, periods) = (idle + i.len(), periods + p);
                }
            }
            println!(
                "{name}: `deadline` loses {vms} VMs, {priority} priority; {left} VMs left on powered hosts; \
                 the WAN under half used while a VM waited on a powered host with a free NIC in {idle} of {periods} control periods"
            );
        }
        eprintln!("{:.1} s", started.elapsed().as_secs_f64());
        return;
    }
    let detail = std::env::var_os("PLANNER_DETAIL").is_some_and(|v| v != "0");
    let per_scenario: Vec<(Vec<Row>, u64, u64)> =
        scenarios.par_iter().map(|(_, base)| evaluate(base)).collect();
    if detail {
        for (i, ((g, s), (rows, bound_lost, _))) in scenarios.iter().zip(&per_scenario).enumerate() {
            let cells: Vec<String> = rows
                .iter()
                .map(|r| format!("{}/{}/{:.2}", r.vms_lost, r.priority_lost, r.ratio))
                .collect();
            eprintln!(
                "{} {} | {} ({}) | bound {bound_lost} | {}",
                i + 1,
                grid_names[*g],
                s.name,
                labels[i],
                cells.join(" | ")
            );
        }
    }
    let vms: usize = scenarios.iter().map(|(_, s)| s.fleet.vms.len()).sum();
    println!(
        "{} scenarios ({}), {vms} VMs, priority {} in all\n",
        scenarios.len(),
        grid_names.join(", "),
        per_scenario.iter().map(|p| p.2).sum::<u64>()
    );
    let all: Vec<&(Vec<Row>, u64, u64)> = per_scenario.iter().collect();
    table(&all);
    for (g, name) in grid_names.iter().enumerate() {
        let some: Vec<&(Vec<Row>, u64, u64)> = scenarios
            .iter()
            .zip(&per_scenario)
            .filter(|((i, _), _)| *i == g)
            .map(|(_, p)| p)
            .collect();
        let vms: usize = scenarios
            .iter()
            .filter(|(i, _)| *i == g)
            .map(|(_, s)| s.fleet.vms.len())
            .sum();
        println!("\n{name}: {} scenarios, {vms} VMs\n", some.len());
        table(&some);
    }
    eprintln!("{:.1} s", started.elapsed().as_secs_f64());
}

fn table(per_scenario: &[&(Vec<Row>, u64, u64)]) {
    println!("| policy | VMs lost | priority lost | score ratio, median | worst |");
    println!("|---|---:|---:|---:|---:|");
    for (i, name) in NAMES.iter().enumerate() {
        let lost: usize = per_scenario.iter().map(|p| p.0[i].vms_lost).sum();
        let prio: u64 = per_scenario.iter().map(|p| p.0[i].priority_lost).sum();
        let ratios: Vec<f64> = per_scenario.iter().map(|p| p.0[i].ratio).collect();
        let worst = ratios.iter().copied().fold(0.0, f64::max);
        println!(
            "| {name} | {lost} | {prio} | {:.3} | {worst:.3} |",
            evac_outcome::median(&ratios).unwrap_or(f64::NAN)
        );
    }
    let bound_lost: u64 = per_scenario.iter().map(|p| p.1).sum();
    println!("| no schedule can lose less priority than (knapsack bound) | - | {bound_lost} | - | - |");
    // The targets checked scenario by scenario: `deadline` (with rollouts)
    // against the best published policy run with the scenario's settings,
    // and against the best live configuration in hindsight.
    let deadline = NAMES
        .iter()
        .position(|n| *n == "deadline")
        .expect("a deadline row");
    let hindsight = NAMES
        .iter()
        .position(|n| *n == "best in hindsight, live")
        .expect("a hindsight row");
    let behind_published = per_scenario
        .iter()
        .filter(|p| {
            let best = PUBLISHED.iter().map(|&i| p.0[i].priority_lost).min().unwrap_or(0);
            p.0[deadline].priority_lost > best
        })
        .count();
    let behind_hindsight = per_scenario
        .iter()
        .filter(|p| p.0[deadline].priority_lost > p.0[hindsight].priority_lost)
        .count();
    println!(
        "\n`deadline` loses more priority than the best published policy in {behind_published} of {} scenarios, \
         more than the best live configuration in hindsight in {behind_hindsight}.",
        per_scenario.len()
    );
}

/// The rows of the published policies (sequential, static, aimd-global).
const PUBLISHED: [usize; 3] = [0, 1, 2];

/// One scenario: each policy's losses and score ratio (in [`NAMES`]'
/// order), the priority the bound says must be lost, and the total.
fn evaluate(base: &Scenario) -> (Vec<Row>, u64, u64) {
    let (rows, bound_lost, total, _) = evaluate_runs(base);
    (rows, bound_lost, total)
}

/// One scenario's runs, each VM's start, end, connections and mode, and
/// the hindsight winners' settings (`PLANNER_ONLY`).
fn explain(base: &Scenario) {
    let (rows, bound_lost, total, runs) = evaluate_runs(base);
    eprintln!("priority {total}, the bound says at least {bound_lost} lost");
    for ((name, row), run) in NAMES.iter().zip(&rows).zip(&runs) {
        eprintln!(
            "\n{name}: {} lost, priority {} lost, ratio {:.3}, total {:.1} s, mean migration {:.1} s, score {:.3} {}",
            row.vms_lost,
            row.priority_lost,
            row.ratio,
            run.total_time_s.unwrap_or(f64::NAN),
            run.mean_migration_time_s.unwrap_or(f64::NAN),
            run.score.unwrap_or(f64::NAN),
            run.policy,
        );
        if run.policy.starts_with("deadline") {
            let (idle, periods) = idle_periods(base, run);
            eprintln!("  idle WAN in {} of {periods} periods, at {idle:.0?}", idle.len());
        }
        for vm in &run.vms {
            eprintln!(
                "  {:<16} {:>8.1} {:>8.1} c{} {:?} {:?} to {}",
                vm.name,
                vm.start_s.unwrap_or(f64::NAN),
                vm.end_s.unwrap_or(f64::NAN),
                vm.connections.unwrap_or(0),
                vm.mode,
                vm.outcome,
                vm.destination.as_deref().unwrap_or("-"),
            );
            if std::env::var_os("PLANNER_DECISIONS").is_some() {
                for d in &vm.decisions {
                    eprintln!("      {:>8.1} {} {}", d.at_s, d.decision, d.why);
                }
            }
        }
    }
}

fn evaluate_runs(base: &Scenario) -> (Vec<Row>, u64, u64, Vec<RunResult>) {
    let total: u64 = base.fleet.vms.iter().map(|v| u64::from(v.priority)).sum();
    let mut hindsight: Vec<(RunResult, Mode)> = Vec::new();
    // The settings of each hindsight run, named in its `policy` field.
    let label = |order: Order, window: usize, per_host: usize, connections: u32, mode: Mode| {
        format!("static {order:?} window {window} per host {per_host} connections {connections} {mode:?}")
    };
    for mode in [Mode::Live, Mode::Offline] {
        for order in ORDERS {
            for window in WINDOWS {
                for per_host in PER_HOST {
                    for connections in CONNECTIONS {
                        let mut s = base.clone();
                        s.controller.policy = PolicyKind::Static;
                        s.controller.order = Some(order);
                        s.controller.max_in_flight = window;
                        s.controller.max_in_flight_per_host = per_host;
                        s.migration.connections = Connections::new(connections).expect("1 ..= 255");
                        s.migration.mode = mode;
                        let mut run = simulate(&s);
                        run.policy = label(order, window, per_host, connections, mode);
                        hindsight.push((run, mode));
                    }
                }
            }
        }
    }
    let best = |offline: bool| {
        hindsight
            .iter()
            .filter(|(_, m)| offline || *m == Mode::Live)
            .map(|(r, _)| r)
            .max_by(|a, b| {
                a.priority_saved.cmp(&b.priority_saved).then(
                    b.score
                        .unwrap_or(f64::INFINITY)
                        .total_cmp(&a.score.unwrap_or(f64::INFINITY)),
                )
            })
            .expect("a hindsight run")
            .clone()
    };
    let live: Vec<&RunResult> = hindsight
        .iter()
        .filter(|(_, m)| *m == Mode::Live)
        .map(|(r, _)| r)
        .collect();
    let ratio = |r: &RunResult| {
        let best = live
            .iter()
            .filter(|h| h.priority_saved >= r.priority_saved)
            .filter_map(|h| h.score)
            .fold(f64::INFINITY, f64::min);
        match r.score {
            Some(s) if best.is_finite() => s / best,
            _ => 1.0,
        }
    };
    let policy = |kind: PolicyKind, postcopy: bool| {
        let mut s = base.clone();
        s.controller.policy = kind;
        s.migration.allow_postcopy = postcopy;
        simulate(&s)
    };
    let heuristic = {
        let mut controller = evac_controller::Evacuation::with_network(
            base.fleet.clone(),
            &base.network,
            base.migration,
            evac_controller::ControllerConfig {
                policy: PolicyKind::Deadline,
                ..base.controller.clone()
            },
        );
        evac_sim::simulate_until(
            &base.fleet,
            &base.network,
            base.controller.period,
            base.controller.horizon,
            &mut controller,
        )
    };
    let runs = [
        policy(PolicyKind::Sequential, false),
        policy(PolicyKind::Static, false),
        policy(PolicyKind::AimdGlobal, false),
        heuristic,
        policy(PolicyKind::Deadline, false),
        policy(PolicyKind::Deadline, true),
        best(false),
        best(true),
    ];
    let rows = runs
        .iter()
        .map(|r| Row {
            vms_lost: r.vms.len() - r.migrated,
            priority_lost: total - r.priority_saved,
            ratio: ratio(r),
        })
        .collect();
    (rows, total - bound(base), total, runs.to_vec())
}
