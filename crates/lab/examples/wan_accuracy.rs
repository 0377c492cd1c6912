//! The delay line's accuracy and ceiling: UDP round trips between a source
//! and a destination host of a lab WAN, idle and while TCP fills the
//! shaped link, for RTTs of 10 to 200 ms; then the goodput of one TCP
//! connection vs four at 100 ms RTT with a 1 MiB window. Needs root:
//!
//! ```text
//! cargo run --release -p evac-lab --example wan_accuracy
//! ```

use std::time::Duration;

use anyhow::{Context, Result};
use evac_lab::probe::{tcp_goodput, udp_rtts};
use evac_lab::topology::Topology;
use evac_scenario::Scenario;

fn lab(rate: &str, rtt_ms: u64, window: &str) -> Result<Topology> {
    let text = format!(
        "name = \"wan\"\n{}{}",
        evac_testkit::wan_toml(rate, &format!("{rtt_ms} ms"), window),
        evac_testkit::two_sites_toml(&[("v", "64 MiB")])
    );
    let scenario = Scenario::from_toml_str(&text, "<wan_accuracy>")?;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let prefix = format!("evlab-wanacc{n}-{}", std::process::id());
    Topology::build(&prefix, &scenario.fleet, &scenario.network).context("building the lab WAN")
}

/// The TCP goodput (bytes/s) from the first host to the second over
/// `connections` connections for `seconds`.
fn goodput(topo: &Topology, connections: usize, seconds: u64) -> Result<f64> {
    let (s, d, address) = (&topo.host_netns[0], &topo.host_netns[1], &topo.host_address[1]);
    Ok(tcp_goodput(
        s,
        d,
        address,
        connections,
        Duration::from_secs(seconds),
    )?)
}

fn stats(rtts: &[Duration]) -> (f64, f64, f64, f64) {
    let mut ms: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    (ms[0], ms[ms.len() / 2], mean, ms[ms.len() - 1])
}

fn main() -> Result<()> {
    evac_lab::netns_available().map_err(anyhow::Error::msg)?;
    println!("| RTT set (ms) | load | min / median / mean / max RTT (ms) | lost |");
    println!("|---:|---|---|---:|");
    for rtt in [10u64, 20, 50, 100, 200] {
        let topo = lab("400 Mbps", rtt, "64 MiB")?;
        let (s, d) = (&topo.host_netns[0], &topo.host_netns[1]);
        let address = &topo.host_address[1];
        let idle = udp_rtts(s, d, address, 50, Duration::from_millis(50))?;
        let (min, med, mean, max) = stats(&idle);
        println!(
            "| {rtt} | idle | {min:.2} / {med:.2} / {mean:.2} / {max:.2} | {} |",
            50 - idle.len()
        );
        // Saturate the link with 4 connections while probing.
        let load = {
            let (s, d, a) = (s.clone(), d.clone(), address.clone());
            std::thread::spawn(move || tcp_goodput(&s, &d, &a, 4, Duration::from_secs(8)))
        };
        std::thread::sleep(Duration::from_secs(3));
        let busy = udp_rtts(s, d, address, 50, Duration::from_millis(50))?;
        let goodput = load.join().expect("load thread")?;
        let (min, med, mean, max) = stats(&busy);
        println!(
            "| {rtt} | 400 Mbit/s tbf, 4 TCP at {:.0} Mbit/s | {min:.2} / {med:.2} / {mean:.2} / {max:.2} | {} |",
            goodput * 8e-6,
            50 - busy.len()
        );
    }
    println!();
    println!("Throughput ceiling (tbf at 10 Gbit/s, 10 ms RTT, 4 connections):");
    let topo = lab("10 Gbps", 10, "64 MiB")?;
    let g = goodput(&topo, 4, 8)?;
    println!("  {:.0} Mbit/s of TCP payload", g * 8e-6);
    println!();
    println!("One connection vs four, 100 ms RTT, tcp_window 1 MiB, WAN 400 Mbit/s:");
    println!(
        "  model: one connection at most 1 MiB / 100 ms = {:.1} Mbit/s",
        (1u64 << 20) as f64 * 8.0 / 0.1 * 1e-6
    );
    let topo = lab("400 Mbps", 100, "1 MiB")?;
    for n in [1usize, 4] {
        let g = goodput(&topo, n, 12)?;
        println!("  {n} connection(s): {:.1} Mbit/s", g * 8e-6);
    }
    Ok(())
}
