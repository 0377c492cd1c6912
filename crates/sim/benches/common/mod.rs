//! What the simulator's benchmarks share: a group sized for runs of
//! seconds, and a scenario simulated under each policy timed.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use evac_controller::PolicyKind;
use evac_outcome::RunResult;
use evac_scenario::Scenario;

/// A benchmark group of ten samples: one simulation of a large fleet takes
/// seconds, and criterion's default is a hundred.
pub fn slow_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group
}

/// `scenario` simulated under `policy` in place of its own.
pub fn simulate_under(scenario: &Scenario, policy: PolicyKind) -> RunResult {
    let mut config = scenario.controller.clone();
    config.policy = policy;
    evac_sim::simulate_evacuation(&scenario.fleet, &scenario.network, scenario.migration, &config)
}
