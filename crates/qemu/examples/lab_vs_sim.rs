//! The lab against the simulator: the same evacuation, moved for real and
//! predicted.
//!
//! Real QEMU VMs (RAM of random bytes, idle guests) in one network namespace
//! migrate to another over a veth pair shaped by `tc tbf` to 200 Mbit/s; the
//! simulator runs the same fleet over a 200 Mbps WAN. Needs root, QEMU, `ip`
//! and `tc`:
//!
//! ```text
//! cargo run --release -p evac-qemu --example lab_vs_sim
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use evac_controller::PolicyKind;
use evac_model::{BitsPerSec, Bytes};
use evac_qemu::lab::{self, Lab, LabNetwork, Shaping};
use evac_qemu::{run_detailed, Inventory, Placement};
use evac_report::RunResult;

const RATE_BPS: u64 = 200_000_000;
const VM_MIB: [u64; 4] = [64, 128, 96, 64];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    lab::qemu_available().map_err(anyhow::Error::msg)?;
    lab::netns_available().map_err(anyhow::Error::msg)?;
    println!(
        "{} idle VMs ({:?} MiB) over a veth shaped to {} Mbit/s\n",
        VM_MIB.len(),
        VM_MIB,
        RATE_BPS / 1_000_000
    );
    println!("| policy | total (s) lab / sim | mean migration (s) lab / sim | sent (MiB) lab / sim |");
    println!("|---|---:|---:|---:|");
    for policy in [
        PolicyKind::Sequential,
        PolicyKind::Parallel,
        PolicyKind::AimdGlobal,
        PolicyKind::Deadline,
    ] {
        let (lab, sim) = evacuate(policy).await?;
        let pair = |a: Option<f64>, b: Option<f64>| {
            format!("{:.2} / {:.2}", a.unwrap_or(f64::NAN), b.unwrap_or(f64::NAN))
        };
        println!(
            "| {policy} | {} | {} | {} / {} |",
            pair(lab.total_time_s, sim.total_time_s),
            pair(lab.mean_migration_time_s, sim.mean_migration_time_s),
            lab.bytes_sent >> 20,
            sim.bytes_sent >> 20,
        );
    }
    Ok(())
}

/// Moves the lab's VMs under `policy`, and simulates the same.
async fn evacuate(policy: PolicyKind) -> Result<(RunResult, RunResult)> {
    let dir = tempfile::tempdir()?;
    // Dropped last: the lab's processes go before the namespaces.
    let net = LabNetwork::new(Shaping {
        rate_bps: RATE_BPS,
        burst_bytes: 128 * 1024,
        latency: Duration::from_millis(20),
    })
    .context("creating the lab network")?;
    let mut lab = Lab::new(dir.path());
    let mut vms = Vec::new();
    for (i, mib) in VM_MIB.into_iter().enumerate() {
        vms.push(lab.start_vm_in(&format!("vm-{}", i + 1), mib, Some(&net.src))?);
    }
    let text = lab.inventory_in(&net, policy.as_str(), &vms, "");
    let inventory = Inventory::from_str_at(&text, Path::new("lab.toml"))?;

    let memory: Vec<Bytes> = VM_MIB.iter().map(|&mib| Bytes::mib(mib)).collect();
    let fleet = inventory.fleet(&memory);
    let mut network = inventory.network();
    network.wan_bandwidth = BitsPerSec(RATE_BPS as f64);
    let predicted =
        evac_sim::simulate_evacuation(&fleet, &network, inventory.migration, &inventory.controller);

    let out = run_detailed(inventory, None, std::future::pending()).await?;
    for placement in &out.placements {
        if let Placement::Destination { pid, .. } = placement {
            lab.adopt(*pid);
        }
    }
    Ok((out.result, predicted))
}
