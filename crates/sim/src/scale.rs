//! `scenarios/bench-10k.toml` scaled to any number of VMs, for the
//! benchmarks at 100k and 1M (`benches/scale.rs`, `examples/scale_scenario.rs`):
//! N / 50 source hosts (10 Gbps NICs), N / 500 destinations (25 Gbps NICs,
//! 4 TiB of room each), dirtying VMs drawn as in bench-10k (1-8 GiB, 0-30
//! MB/s over a 64 MiB-1 GiB working set, two connections each), and a WAN
//! of 10 Gbps per 10,000 VMs whose capacity changes every 30 s (a uniform
//! draw in 34-100 % of it, from a fixed SplitMix64 stream) for long enough
//! that even `sequential` ends before the trace does, and a simulated-time
//! horizon as long as the trace (the default week would cut `sequential`
//! short from about 150,000 VMs on).
//!
//! The VMs are one `[[vm_group]]` (at most 1,000,000 VMs, the loader's
//! limit for a group), so the text stays a few MB and its parsed document
//! small whatever N is.

use std::fmt::Write as _;

/// SplitMix64: a fixed, dependency-free stream, so the file is the same on
/// every machine.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The scenario's TOML text for `vms` VMs (at least 500, so that there is a
/// destination).
pub fn bench_scenario_toml(vms: u64) -> String {
    let vms = vms.max(500);
    let sources = vms / 50;
    let destinations = vms / 500;
    // 10 Gbps per 10,000 VMs, in Mbps.
    let wan_mbps = vms;
    // Sequential sends about 4.5 GiB per VM at a 10 Gbps NIC: about 3.9 s
    // each. Cover that with 30 s steps, and some to spare.
    let steps = vms * 4 / 30 + 100;
    let mut rng = SplitMix64(vms);
    let mut text = String::new();
    writeln!(
        text,
        "# bench-10k scaled to {vms} VMs: written by\n\
         #   cargo run --release -p evac-sim --example scale_scenario -- {vms}\n\
         name = \"{vms} VMs, flapping WAN\"\nseed = {vms}\n\n[network]\n\
         wan_bandwidth = \"{wan_mbps} Mbps\"\nwan_rtt = \"20 ms\"\ntcp_window = \"16 MiB\"\nwan_trace = ["
    )
    .unwrap();
    for step in 1..=steps {
        // 34 % to 100 % of the WAN, in steps of 1 %.
        let percent = 34 + rng.next() % 67;
        writeln!(
            text,
            "  {{ at = \"{} s\", bandwidth = \"{} Mbps\" }},",
            step * 30,
            wan_mbps * percent / 100
        )
        .unwrap();
    }
    write!(
        text,
        "]\n\n[migration]\nconnections = 2\n\n[controller]\npolicy = \"aimd-global\"\nperiod = \"1 s\"\n\
         horizon = \"{} s\"\n",
        (steps + 1) * 30
    )
    .unwrap();
    for i in 1..=sources {
        write!(
            text,
            "\n[[host]]\nname = \"src-{i}\"\nsite = \"source\"\nnic = \"10 Gbps\"\n"
        )
        .unwrap();
    }
    for i in 1..=destinations {
        write!(
            text,
            "\n[[host]]\nname = \"dst-{i}\"\nsite = \"destination\"\nnic = \"25 Gbps\"\nmemory = \"4 TiB\"\n"
        )
        .unwrap();
    }
    write!(
        text,
        "\n[[vm_group]]\nprefix = \"vm\"\ncount = {vms}\nhost = \"round-robin\"\n\
         memory = {{ dist = \"uniform\", min = \"1 GiB\", max = \"8 GiB\" }}\n\
         dirty_rate = {{ dist = \"uniform\", min = \"0 MB/s\", max = \"30 MB/s\" }}\n\
         working_set = {{ dist = \"uniform\", min = \"64 MiB\", max = \"1 GiB\" }}\n"
    )
    .unwrap();
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn the_scaled_scenario_loads_with_a_horizon_past_its_trace() {
        let scenario =
            evac_scenario::Scenario::from_toml_str(&super::bench_scenario_toml(1000), "bench-1000")
                .expect("the scaled scenario parses");
        assert_eq!(scenario.fleet.vms.len(), 1000);
        // 1000 × 4 / 30 + 100 = 233 steps of 30 s: the last at 6,990 s.
        let last = scenario.network.wan_trace.last().expect("a trace").at;
        assert_eq!(last, Duration::from_secs(6990));
        assert_eq!(scenario.controller.horizon, Duration::from_secs(7020));
    }
}
