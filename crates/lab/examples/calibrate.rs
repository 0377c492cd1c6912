//! Calibrates the model's per-migration costs from lab measurements:
//! idle VMs of three sizes migrated one at a time over WANs of several
//! round trips, windows and multifd channel counts. Needs root, QEMU, `ip`
//! and `tc`:
//!
//! ```text
//! cargo run --release -p evac-lab --example calibrate
//! ```
//!
//! An idle VM's migration is one pass over its RAM, so its time is a line
//! in its size: `T = dead + bytes / rate`. For each WAN the example fits
//! that line by least squares over the VMs (`CALIBRATE_REPEAT=n` migrates
//! each size n times, default 2), giving the payload `rate` the migration
//! really got (beside the model's: the WAN, or the channels' window/RTT
//! cap) and the `dead` time every migration pays whatever its size
//! (destination start, handshakes, TCP ramp-up, the last sync and stop).
//! It then fits `dead = setup_time + ramp_rtts x rtt` over the WANs: the
//! two `[migration]` parameters the lab files set.

use anyhow::{bail, Context, Result};
use evac_controller::PolicyKind;
use evac_lab::evacuate::evacuate_quietly;
use evac_lab::fit::fit_line;
use evac_lab::instance::LabInstance;

/// How far (relative) a WAN's measured rate may be from the model's for
/// its dead time to count in the fit of `setup_time` and `ramp_rtts`.
const RATE_TOLERANCE: f64 = 0.06;

/// One WAN of the calibration.
struct Wan {
    bandwidth_mbps: f64,
    rtt_ms: u64,
    /// `None`: large enough never to cap a connection.
    window_mib: Option<u64>,
    channels: u32,
}

impl Wan {
    /// The payload rate the model gives one migration alone on this WAN.
    fn model_rate_mbps(&self) -> f64 {
        let link = self.bandwidth_mbps;
        match self.window_mib {
            Some(w) => {
                let per_connection = (w << 20) as f64 * 8.0 / (self.rtt_ms as f64 / 1e3) / 1e6;
                link.min(per_connection * self.channels as f64)
            }
            None => link,
        }
    }

    fn scenario(&self, sizes_mib: &[u64], repeat: usize) -> String {
        let window = self
            .window_mib
            .map_or("64 MiB".to_owned(), |w| format!("{w} MiB"));
        let mut text = format!(
            "name = \"calib\"\n\
             [network]\n\
             wan_bandwidth = \"{} Mbps\"\n\
             wan_rtt = \"{} ms\"\n\
             tcp_window = \"{window}\"\n\
             [migration]\n\
             connections = {}\n\
             [controller]\n\
             policy = \"sequential\"\n\
             period = \"500 ms\"\n\
             [[host]]\nname = \"src\"\nsite = \"source\"\nnic = \"1 Gbps\"\n\
             [[host]]\nname = \"dst\"\nsite = \"destination\"\nnic = \"1 Gbps\"\n",
            self.bandwidth_mbps, self.rtt_ms, self.channels
        );
        for r in 0..repeat {
            for &mib in sizes_mib {
                text.push_str(&format!(
                    "[[vm]]\nname = \"v{mib}-{r}\"\nhost = \"src\"\nmemory = \"{mib} MiB\"\n"
                ));
            }
        }
        text
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let repeat: usize = match std::env::var("CALIBRATE_REPEAT") {
        Ok(n) => n.parse().context("CALIBRATE_REPEAT: expected a count")?,
        Err(_) => 2,
    };
    let sizes = [64u64, 128, 256];
    let wans = [
        Wan {
            bandwidth_mbps: 200.0,
            rtt_ms: 10,
            window_mib: None,
            channels: 1,
        },
        Wan {
            bandwidth_mbps: 200.0,
            rtt_ms: 40,
            window_mib: None,
            channels: 1,
        },
        Wan {
            bandwidth_mbps: 400.0,
            rtt_ms: 50,
            window_mib: Some(1),
            channels: 1,
        },
        Wan {
            bandwidth_mbps: 400.0,
            rtt_ms: 50,
            window_mib: Some(1),
            channels: 2,
        },
        Wan {
            bandwidth_mbps: 400.0,
            rtt_ms: 100,
            window_mib: Some(1),
            channels: 4,
        },
    ];
    println!(
        "| WAN | model rate (Mbit/s) | measured rate (Mbit/s) | rate / model | dead time (s) | worst residual (s) | dead time at the model's rate (s) | worst residual (s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut dead_by_rtt = Vec::new();
    for wan in &wans {
        let text = wan.scenario(&sizes, repeat);
        let mut lab = LabInstance::build(&text, "<calibrate>")?;
        let run = evacuate_quietly(&mut lab, PolicyKind::Sequential).await?;
        drop(lab);
        let points: Vec<(f64, f64)> = run
            .measured
            .vms
            .iter()
            .filter_map(|v| Some((v.bytes_sent? as f64, v.migration_time_s?)))
            .collect();
        if points.len() < run.measured.vms.len() {
            bail!("not every VM migrated: {}", run.table());
        }
        let Some((dead, seconds_per_byte)) = fit_line(&points) else {
            bail!("one size only: no line to fit");
        };
        let rate = 8.0 / seconds_per_byte / 1e6;
        let worst = points
            .iter()
            .map(|(x, y)| (y - dead - seconds_per_byte * x).abs())
            .fold(0.0, f64::max);
        // What the model needs: the time each migration pays beyond its
        // bytes at the model's own rate (a rate that is off by a few per
        // cent shows here as a dead time growing with the size).
        let model_seconds_per_byte = 8.0 / (wan.model_rate_mbps() * 1e6);
        let dead_at_model_rate = points
            .iter()
            .map(|(x, y)| y - model_seconds_per_byte * x)
            .sum::<f64>()
            / points.len() as f64;
        let worst_at_model_rate = points
            .iter()
            .map(|(x, y)| (y - dead_at_model_rate - model_seconds_per_byte * x).abs())
            .fold(0.0, f64::max);
        let window = wan
            .window_mib
            .map_or("no window cap".to_owned(), |w| format!("{w} MiB window"));
        println!(
            "| {} Mbit/s, {} ms, {window}, {} channel(s) | {:.1} | {rate:.1} | {:.3} | {dead:.3} | {worst:.3} | {dead_at_model_rate:.3} | {worst_at_model_rate:.3} |",
            wan.bandwidth_mbps,
            wan.rtt_ms,
            wan.channels,
            wan.model_rate_mbps(),
            rate / wan.model_rate_mbps(),
        );
        // Where the model's rate itself is off, its error grows with the
        // size and would pass for dead time: such a WAN says nothing of
        // setup_time and ramp_rtts.
        if (rate / wan.model_rate_mbps() - 1.0).abs() <= RATE_TOLERANCE {
            dead_by_rtt.push((wan.rtt_ms as f64 / 1e3, dead_at_model_rate));
        }
    }
    match fit_line(&dead_by_rtt) {
        Some((setup, ramp_rtts)) => println!(
            "\ndead time at the model's rate = setup_time + ramp_rtts x rtt, over the {} WANs whose rate the model has within {:.0} %: setup_time = {:.0} ms, ramp_rtts = {ramp_rtts:.1}",
            dead_by_rtt.len(),
            RATE_TOLERANCE * 100.0,
            setup * 1e3
        ),
        None => println!("\none RTT only: setup_time and ramp_rtts cannot be told apart"),
    }
    Ok(())
}
