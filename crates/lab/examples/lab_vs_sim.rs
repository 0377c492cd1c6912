//! The lab against the simulator: the same evacuation, moved for real and
//! predicted.
//!
//! Real QEMU VMs (RAM of random bytes; two idle guests, two that dirty
//! memory at 20 and 10 MB/s over 32 and 16 MiB) in one network namespace
//! migrate to another over a veth pair shaped by `tc tbf` to 200 Mbit/s; the
//! simulator runs the same fleet over a 200 Mbps WAN. Needs root, QEMU, `ip`
//! and `tc`:
//!
//! ```text
//! cargo run --release -p evac-lab --example lab_vs_sim
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use evac_controller::PolicyKind;
use evac_lab::{self as lab, Lab, LabNetwork, Shaping};
use evac_model::{BitsPerSec, Bytes, BytesPerSec};
use evac_qemu::{run_detailed, Inventory};
use evac_report::RunResult;

const RATE_BPS: u64 = 200_000_000;
/// Memory (MiB), dirty rate (bytes/s), working set (MiB).
const VMS: [(u64, f64, u64); 4] = [(64, 0.0, 0), (128, 20e6, 32), (96, 0.0, 0), (64, 10e6, 16)];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    lab::qemu_available().map_err(anyhow::Error::msg)?;
    lab::netns_available().map_err(anyhow::Error::msg)?;
    println!(
        "VMs (MiB, dirty B/s, working set MiB) {VMS:?} over a veth shaped to {} Mbit/s\n",
        RATE_BPS / 1_000_000
    );
    println!(
        "| policy | total (s) lab / sim | mean migration (s) lab / sim | sent (MiB) lab / sim | rounds lab / sim |"
    );
    println!("|---|---:|---:|---:|---:|");
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
        let rounds = |r: &RunResult| r.vms.iter().filter_map(|v| v.rounds).sum::<u32>();
        println!(
            "| {policy} | {} | {} | {} / {} | {} / {} |",
            pair(lab.total_time_s, sim.total_time_s),
            pair(lab.mean_migration_time_s, sim.mean_migration_time_s),
            lab.bytes_sent >> 20,
            sim.bytes_sent >> 20,
            rounds(&lab),
            rounds(&sim),
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
    for (i, (mib, dirty_rate, working_set)) in VMS.into_iter().enumerate() {
        let name = format!("vm-{}", i + 1);
        vms.push(if dirty_rate > 0.0 {
            lab.start_dirtying_vm_in(&name, mib, BytesPerSec(dirty_rate), working_set, Some(&net.src))?
        } else {
            lab.start_vm_in(&name, mib, Some(&net.src))?
        });
    }
    let text = lab.inventory_in(&net, policy.as_str(), &vms, "");
    let inventory = Inventory::from_str_at(&text, Path::new("lab.toml"))?;

    let memory: Vec<Bytes> = VMS.iter().map(|&(mib, _, _)| Bytes::mib(mib)).collect();
    let mut fleet = inventory.fleet(&memory);
    for (vm, (mib, dirty_rate, working_set)) in fleet.vms.iter_mut().zip(VMS) {
        vm.dirty_rate = BytesPerSec(dirty_rate);
        vm.working_set = Bytes::mib(if dirty_rate > 0.0 { working_set } else { mib });
    }
    let mut network = inventory.network();
    network.wan_bandwidth = BitsPerSec(RATE_BPS as f64);
    let predicted = evac_sim::simulate_evacuation(
        &fleet,
        &network,
        inventory.migration.params,
        &inventory.controller,
    );

    let out = run_detailed(inventory, None, std::future::pending()).await?;
    lab.adopt_destinations(&out.placements);
    Ok((out.result, predicted))
}
