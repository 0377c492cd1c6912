//! Writes `scenarios/bench-10k.toml` scaled to N VMs on standard output
//! (see `evac_sim::scale`):
//!
//! ```text
//! cargo run --release -p evac-sim --example scale_scenario -- 1000000 > /tmp/bench-1m.toml
//! evac simulate /tmp/bench-1m.toml --policy sequential --json /tmp/1m.json
//! ```

use std::io::Write as _;

fn main() {
    let vms: u64 = match std::env::args().nth(1).map(|a| a.replace('_', "").parse()) {
        Some(Ok(n)) if (500..=1_000_000).contains(&n) => n,
        _ => {
            eprintln!("usage: scale_scenario VMS   (500 to 1000000, e.g. 1000000)");
            std::process::exit(2);
        }
    };
    let text = evac_sim::scale::bench_scenario_toml(vms);
    std::io::stdout().lock().write_all(text.as_bytes()).unwrap();
}
