//! What one re-plan by simulation costs (docs/planner.md): the rollouts
//! `deadline` runs at one re-plan, for a scenario's whole fleet waiting, as
//! many candidates as the compute budget allows under four forecasts: the
//! WAN at 40 %, 100 % and 150 % of the scenario's, constant, and a replay
//! as noisy as one gets (a step every 2 s between 100 % and 50 % for an
//! hour: 1,800 steps; a real history's steps within 10 % are merged).
//!
//! ```text
//! cargo run --release -p evac-sim --example replan_cost [-- SCENARIO.toml ...]
//! ```
//!
//! Without arguments, the embedded default (41 VMs). Prints, per scenario,
//! the VMs, the candidates the budget allows, the rollouts and the wall
//! time of one re-plan (the median of five).

use std::path::Path;
use std::time::{Duration, Instant};

use evac_controller::rollout::{self, Candidate, Forecast, Rollout, Situation};
use evac_model::{BitsPerSec, TracePoint};
use evac_scenario::Scenario;
use evac_sim::rollout::SimRollout;

fn main() {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    let scenarios: Vec<(String, Scenario)> = if paths.is_empty() {
        vec![("embedded default".to_owned(), Scenario::embedded_default())]
    } else {
        paths
            .iter()
            .map(|p| match Scenario::from_path(Path::new(p)) {
                Ok(s) => (p.clone(), s),
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            })
            .collect()
    };
    println!("| scenario | VMs | candidates | rollouts | one re-plan (ms) |");
    println!("|---|---:|---:|---:|---:|");
    for (name, scenario) in scenarios {
        let waiting: Vec<_> = scenario.fleet.vm_ids().collect();
        let situation = Situation {
            now: 0.0,
            fleet: &scenario.fleet,
            waiting: &waiting,
            in_flight: &[],
            committed: &[],
        };
        let wan = scenario.network.wan_bandwidth.0;
        let mut forecasts: Vec<Forecast> = [0.4, 1.0, 1.5]
            .map(|share| Forecast {
                wan: BitsPerSec(wan * share),
                trace: Vec::new(),
            })
            .into();
        forecasts.push(Forecast {
            wan: BitsPerSec(wan),
            trace: (1..1800)
                .map(|step| TracePoint {
                    at: Duration::from_secs(2 * step),
                    bandwidth: BitsPerSec(if step % 2 == 1 { 0.5 * wan } else { wan }),
                })
                .collect(),
        });
        let candidates = rollout::within_budget(
            rollout::candidates(scenario.migration.connections, scenario.migration.mode),
            forecasts.len(),
            waiting.len(),
            0,
            Candidate::Planner,
        );
        let sim = SimRollout::new(&scenario.network, scenario.migration, &scenario.controller);
        let runs = if candidates.len() < 2 {
            0
        } else {
            candidates.len() * forecasts.len()
        };
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                let started = Instant::now();
                if runs > 0 {
                    for &c in &candidates {
                        for f in &forecasts {
                            std::hint::black_box(sim.evaluate(&situation, c, f));
                        }
                    }
                }
                started.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "| {name} | {} | {} | {runs} | {:.1} |",
            waiting.len(),
            candidates.len(),
            times[2]
        );
    }
}
