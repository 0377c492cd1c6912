//! A sweep of 120 combinations of 100 VMs each, on all cores.
//!
//! `cargo bench -p evac-sweep` (the figure is quoted in docs/sweep.md).

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use evac_sweep::Grid;

/// 5 policies x 2 RTTs x 2 channel counts x 2 memory presets x 3 traces.
const GRID: &str = r#"
name = "bench: 120 combinations of 100 VMs"

[factors]
policy = ["sequential", "parallel", "static", "aimd-local", "aimd-global"]
wan_rtt = ["5 ms", "100 ms"]
connections = [1, 4]
memory = ["equal", "skewed"]
trace = ["steady", "fluctuating", "base"]

[base]
name = "100 VMs"
seed = 3
host = [
    { name = "src-1", site = "source", nic = "10 Gbps" },
    { name = "src-2", site = "source", nic = "10 Gbps" },
    { name = "dst", site = "destination", nic = "40 Gbps" },
]

[base.network]
wan_bandwidth = "10 Gbps"
tcp_window = "32 MiB"
wan_trace = [{ at = "60 s", bandwidth = "5 Gbps" }, { at = "180 s", bandwidth = "10 Gbps" }]

[[base.vm_group]]
prefix = "vm"
count = 100
host = "round-robin"
memory = { dist = "uniform", min = "1 GiB", max = "8 GiB" }
dirty_rate = "20 MB/s"
working_set = "1 GiB"
"#;

fn bench(c: &mut Criterion) {
    let grid = Grid::from_toml_str(GRID, "bench grid", Path::new(".")).expect("the bench grid parses");
    assert_eq!(grid.len(), 120);
    let mut group = c.benchmark_group("sweep");
    group.sample_size(10);
    group.bench_function("120 combinations x 100 VMs", |b| {
        b.iter(|| evac_sweep::run(&grid).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
