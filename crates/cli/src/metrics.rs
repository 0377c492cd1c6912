//! `evac run --metrics ADDR`: the run's progress snapshots served as
//! Prometheus metrics (evac-metrics) while it runs.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use evac_controller::Phase;
use evac_metrics::{HostSnapshot, Metrics, MigrationSnapshot, Snapshot};
use evac_run::RunProgress;
use tokio::sync::{oneshot, watch};

/// The metrics endpoint of one run; [`Endpoint::stop`] ends it.
pub struct Endpoint {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    updater: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    /// Listens on `addr` (e.g. `127.0.0.1:9100`; port 0 picks one) and
    /// follows `progress`.
    pub async fn start(addr: &str, progress: watch::Receiver<RunProgress>) -> Result<Endpoint> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics {addr}: cannot listen there"))?;
        let addr = listener.local_addr().context("--metrics: the bound address")?;
        let metrics = Arc::new(Metrics::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(evac_metrics::serve(listener, metrics.clone(), async move {
            let _ = stopped.await;
        }));
        let updater = tokio::spawn(async move {
            let mut progress = progress;
            // Ends when the run drops the sender, after its last snapshot.
            loop {
                let snapshot = snapshot(&progress.borrow_and_update());
                metrics.update(&snapshot);
                if progress.changed().await.is_err() {
                    break;
                }
            }
        });
        Ok(Endpoint {
            addr,
            stop,
            server,
            updater,
        })
    }

    /// Applies the last snapshot, then stops serving.
    pub async fn stop(self) {
        let _ = self.updater.await;
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

/// The metrics' view of a progress snapshot.
pub fn snapshot(p: &RunProgress) -> Snapshot {
    Snapshot {
        elapsed_seconds: p.elapsed.as_secs_f64(),
        migrated: p.migrated,
        not_migrated: p.not_migrated,
        lost: p.lost,
        pending: p.waiting,
        in_flight: p.in_flight,
        window: p.window,
        wan_throughput_bits_per_second: p.wan_throughput.0,
        migrations: p
            .migrations
            .iter()
            .map(|m| MigrationSnapshot {
                vm: m.vm.clone(),
                phase: match m.phase {
                    Phase::Precopy => "precopy",
                    Phase::StopAndCopy => "stop-and-copy",
                    Phase::Offline => "offline",
                    Phase::Postcopy => "postcopy",
                }
                .to_owned(),
                round: m.round,
                attempt: m.attempt,
                processed_bytes: m.bytes_sent.0,
                remaining_bytes: m.bytes_remaining.0,
                dirty_rate_bytes_per_second: Some(m.dirty_rate.0),
                transfer_rate_bytes_per_second: m.rate.0 / 8.0,
            })
            .collect(),
        hosts: p
            .hosts
            .iter()
            .map(|h| HostSnapshot {
                host: h.name.clone(),
                power_off_seconds: h.power_off_in.map(|left| left.as_secs_f64()),
                vms_remaining: h.vms_left,
                remaining_bytes: h.bytes_left.0,
            })
            .collect(),
    }
}
