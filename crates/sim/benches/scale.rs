//! Simulating 100,000 dirtying VMs: `scenarios/bench-10k.toml` scaled ten
//! times by `evac_sim::scale` (2,000 source hosts, 200 destinations, a
//! 100 Gbps WAN changing every 30 s), loading included; and `parallel` on
//! 10,000 of them, every VM in flight at once on that flapping WAN (the
//! fluid model's case), with the full solve at every change for comparison.
//!
//! `cargo bench -p evac-sim --bench scale` (figures in docs/scale.md).

use criterion::{criterion_group, criterion_main, Criterion};
use evac_controller::PolicyKind;
use evac_scenario::Scenario;

mod common;
use common::{simulate_under, slow_group};

fn bench(c: &mut Criterion) {
    let text = evac_sim::scale::bench_scenario_toml(100_000);
    let mut group = slow_group(c, "simulate 100k VMs");
    for policy in [
        PolicyKind::Sequential,
        PolicyKind::AimdGlobal,
        PolicyKind::Deadline,
    ] {
        group.bench_function(policy.as_str(), |b| {
            b.iter(|| {
                let scenario =
                    Scenario::from_toml_str(&text, "bench-100k").expect("the scaled scenario parses");
                simulate_under(&scenario, policy)
            })
        });
    }
    group.finish();

    let text = evac_sim::scale::bench_scenario_toml(10_000);
    let scenario = Scenario::from_toml_str(&text, "bench-10k").expect("the scaled scenario parses");
    let mut config = scenario.controller.clone();
    config.policy = PolicyKind::Parallel;
    let mut group = slow_group(c, "parallel 10k VMs, all in flight");
    for solver in [evac_sim::Solver::Fluid, evac_sim::Solver::FullSolve] {
        group.bench_function(format!("{solver:?}"), |b| {
            b.iter(|| {
                let mut controller = evac_controller::Evacuation::with_network(
                    scenario.fleet.clone(),
                    &scenario.network,
                    scenario.migration,
                    config.clone(),
                );
                evac_sim::simulate_with_solver(
                    &scenario.fleet,
                    &scenario.network,
                    config.period,
                    &mut controller,
                    solver,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
