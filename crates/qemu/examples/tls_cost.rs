//! What TLS costs a migration on the QEMU backend: the same VM (RAM of
//! random bytes, so every page is sent) migrated by `evac run`'s backend
//! between two lab namespaces over a `tbf`-shaped veth, with and without
//! `[migration] tls = true`, at a few RAM sizes. Prints a Markdown table of
//! the medians of what QEMU measured (migration time, bytes sent) and the
//! load average before and after (timings on a loaded machine are noisy).
//!
//! ```text
//! sudo cargo run -p evac-qemu --example tls_cost -- [RATE_MBIT|0] [SIZES_MIB,..] [REPETITIONS]
//! sudo cargo run -p evac-qemu --example tls_cost -- 400 64,128,256 3
//! ```
//!
//! A rate of 0 leaves the link unshaped (the CPU is then the bottleneck,
//! and TLS's encryption shows fully). Needs root, QEMU and certtool.

use std::path::Path;
use std::time::Duration;

use evac_lab::{Lab, LabNetwork, Shaping};
use evac_qemu::{run_detailed, Inventory, Placement};
use evac_report::Outcome;

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One migration of a fresh `mib` MiB VM; (seconds, bytes) as QEMU counted.
fn migrate(
    runtime: &tokio::runtime::Runtime,
    net: &LabNetwork,
    pki: &Path,
    mib: u64,
    tls: bool,
) -> anyhow::Result<(f64, u64)> {
    let dir = tempfile::tempdir()?;
    let mut lab = Lab::new(dir.path());
    let vm = lab.start_vm_in("vm", mib, Some(&net.src))?;
    let text = lab
        .inventory_in(
            net,
            "sequential",
            std::slice::from_ref(&vm),
            &format!("tls = {tls}"),
        )
        .replace(
            "name = \"src\"\n",
            &format!("name = \"src\"\ntls_dir = \"{}\"\n", pki.join("src").display()),
        )
        .replace(
            "name = \"dst\"\n",
            &format!("name = \"dst\"\ntls_dir = \"{}\"\n", pki.join("dst").display()),
        );
    let inv = Inventory::from_str_at(&text, Path::new("tls_cost.toml"))?;
    let out =
        runtime.block_on(async { tokio::spawn(run_detailed(inv, None, std::future::pending())).await })??;
    if let Placement::Destination { pid, .. } = &out.placements[0] {
        lab.adopt(*pid);
    }
    let record = &out.result.vms[0];
    anyhow::ensure!(
        record.outcome == Outcome::Migrated,
        "not migrated: {:?}",
        record.reason
    );
    Ok((
        record.migration_time_s.unwrap_or(f64::NAN),
        record.bytes_sent.unwrap_or(0),
    ))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rate_mbit: u64 = args.first().map_or(Ok(400), |a| a.parse())?;
    let sizes: Vec<u64> = args
        .get(1)
        .map_or("64,128,256", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let reps: usize = args.get(2).map_or(Ok(3), |a| a.parse())?;
    anyhow::ensure!(reps >= 1, "at least 1 repetition");
    evac_lab::netns_available().map_err(anyhow::Error::msg)?;
    evac_pki::certtool_available().map_err(anyhow::Error::msg)?;

    let pki_dir = tempfile::tempdir()?;
    let ca = evac_pki::Ca::create(&pki_dir.path().join("ca"), "evac tls_cost CA")?;
    for (host, ip) in [("src", LabNetwork::SRC_ADDRESS), ("dst", LabNetwork::DST_ADDRESS)] {
        ca.issue_host(
            &pki_dir.path().join(host),
            &evac_pki::HostIdentity {
                name: host,
                ip: Some(ip),
            },
        )?;
    }
    // Unshaped: a rate no veth here reaches.
    let rate_bps = if rate_mbit == 0 {
        100_000_000_000
    } else {
        rate_mbit * 1_000_000
    };
    let net = LabNetwork::new(Shaping {
        rate_bps,
        burst_bytes: 256 << 10,
        latency: Duration::from_millis(20),
    })?;
    let runtime = evac_lab::runtime();
    let load_before = load();
    let shaped = if rate_mbit == 0 {
        "unshaped".to_owned()
    } else {
        format!("{rate_mbit} Mbit/s")
    };
    println!("| RAM | link | plain: time (s) | TLS: time (s) | TLS cost | plain: MiB sent | TLS: MiB sent |");
    println!("|---|---|---|---|---|---|---|");
    for &mib in &sizes {
        let (mut plain, mut tls) = (Vec::new(), Vec::new());
        let (mut plain_bytes, mut tls_bytes) = (Vec::new(), Vec::new());
        // Alternating, so a change of load hits both alike.
        for _ in 0..reps {
            let (t, b) = migrate(&runtime, &net, pki_dir.path(), mib, false)?;
            plain.push(t);
            plain_bytes.push(b as f64);
            let (t, b) = migrate(&runtime, &net, pki_dir.path(), mib, true)?;
            tls.push(t);
            tls_bytes.push(b as f64);
        }
        let (p, t) = (median(plain.clone()), median(tls.clone()));
        println!(
            "| {mib} MiB | {shaped} | {p:.2} ({}) | {t:.2} ({}) | {:+.0}% | {:.1} | {:.1} |",
            plain
                .iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            tls.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            (t / p - 1.0) * 100.0,
            median(plain_bytes) / 1048576.0,
            median(tls_bytes) / 1048576.0,
        );
    }
    println!(
        "\nload average before: {load_before}; after: {}; {} cores",
        load(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    drop(runtime);
    drop(net);
    Ok(())
}
