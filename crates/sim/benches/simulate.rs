//! Simulating the 10,000-VM evacuation of `scenarios/bench-10k.toml`.
//!
//! `cargo bench -p evac-sim` (the figures are quoted in the README).

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use evac_controller::PolicyKind;
use evac_scenario::Scenario;

mod common;
use common::{simulate_under, slow_group};

fn bench(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/bench-10k.toml");
    let scenario = Scenario::from_path(&path).expect("the benchmark scenario parses");
    let mut group = slow_group(c, "simulate 10k VMs");
    // `parallel` and `aimd-local` keep thousands in flight for days of
    // simulated time: timed by the CLI instead (see the README).
    for policy in [
        PolicyKind::Sequential,
        PolicyKind::Static,
        PolicyKind::AimdGlobal,
        PolicyKind::Deadline,
    ] {
        group.bench_function(policy.as_str(), |b| b.iter(|| simulate_under(&scenario, policy)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
