//! Time per libvirt migration vs RAM, link rate and TLS, on a real lab
//! (two libvirtd daemons in namespaces, a tbf-shaped link).
//!
//! ```text
//! cargo run --release -p evac-libvirt --features native --example figures -- [RATES_MBIT] [RAM_MIB] [REPEATS]
//! cargo run --release -p evac-libvirt --features native --example figures -- 200,400 32,64,128 2
//! ```
//!
//! Prints a Markdown table, per case the medians of: the wall time of one
//! migration as evac sees it (from the start of [`Migration::start`] to
//! the return of libvirt's migrate call: connection, prepare at the
//! destination, transfer, confirm), the migration's own time as libvirt
//! records it on the destination (the job's elapsed time), the bytes sent
//! over that time, and the downtime. Needs root, libvirt, QEMU, certtool.

use std::time::{Duration, Instant};

use evac_lab::libvirt::{Lab, LabOptions};
use evac_libvirt::client::{completed_migration, MigrateRequest, Migration};

fn list(arg: Option<String>, default: &[u64]) -> Vec<u64> {
    arg.map(|a| {
        a.split(',')
            .map(|x| x.trim().parse().expect("a number"))
            .collect()
    })
    .unwrap_or_else(|| default.to_vec())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rates = list(args.next(), &[200, 400]);
    let rams = list(args.next(), &[32, 64, 128]);
    let repeats: usize = args.next().map_or(Ok(3), |r| r.parse())?;
    println!("Medians of {repeats} migrations per case.\n");
    println!("| link | RAM | TLS | wall time | libvirt job time | goodput | downtime |");
    println!("|---:|---:|:---:|---:|---:|---:|---:|");
    for &rate in &rates {
        let lab = Lab::start(&LabOptions {
            hosts: 2,
            rate_mbit: Some(rate as u32),
            tls: true,
        })?;
        for &mib in &rams {
            let ram = lab.ram_file(&format!("r{mib}"), mib, None)?;
            for tls in [false, true] {
                let (mut times, mut jobs, mut rates, mut downs) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for i in 0..repeats {
                    let name = lab.start_domain(0, &format!("m{mib}-{tls}-{i}"), mib, &ram)?;
                    let request = MigrateRequest {
                        tls,
                        ..lab.migrate_request(&name)
                    };
                    let t = Instant::now();
                    let mut m =
                        Migration::start(&lab.hosts[0].uri(), request, Duration::from_secs(60)).await?;
                    m.wait(Duration::from_secs(600)).await?;
                    times.push(t.elapsed().as_secs_f64());
                    let done =
                        completed_migration(&lab.hosts[1].uri(), &name, Duration::from_secs(60)).await?;
                    let job = done.elapsed.as_secs_f64();
                    jobs.push(job);
                    rates.push(done.bytes.0 as f64 * 8.0 / job / 1e6);
                    downs.push(done.downtime.as_secs_f64() * 1000.0);
                }
                println!(
                    "| {rate} Mbit/s | {mib} MiB | {} | {:.2} s | {:.2} s | {:.0} Mbit/s | {:.0} ms |",
                    if tls { "yes" } else { "no" },
                    median(times),
                    median(jobs),
                    median(rates),
                    median(downs),
                );
            }
        }
    }
    Ok(())
}
