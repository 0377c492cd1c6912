//! Simulating 100,000 dirtying VMs: `scenarios/bench-10k.toml` scaled ten
//! times by `evac_sim::scale` (2,000 source hosts, 200 destinations, a
//! 100 Gbps WAN changing every 30 s), loading included.
//!
//! `cargo bench -p evac-sim --bench scale` (figures in docs/scale.md).

use criterion::{criterion_group, criterion_main, Criterion};
use evac_controller::PolicyKind;
use evac_scenario::Scenario;

fn bench(c: &mut Criterion) {
    let text = evac_sim::scale::bench_scenario_toml(100_000);
    let mut group = c.benchmark_group("simulate 100k VMs");
    group.sample_size(10);
    for policy in [
        PolicyKind::Sequential,
        PolicyKind::AimdGlobal,
        PolicyKind::Deadline,
    ] {
        group.bench_function(policy.as_str(), |b| {
            b.iter(|| {
                let scenario =
                    Scenario::from_toml_str(&text, "bench-100k").expect("the scaled scenario parses");
                let mut config = scenario.controller.clone();
                config.policy = policy;
                evac_sim::simulate_evacuation(&scenario.fleet, &scenario.network, scenario.migration, &config)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
