//! evac-qemu as an [`evac_run::Backend`]: each migration attempt is a task
//! ([`crate::attempt`]) driving a fresh destination QEMU and the source over
//! QMP; its handle ([`QemuMigration`]) talks to that task and reads the
//! source's `query-migrate`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use evac_controller::{Phase, Retune};
use evac_model::{BitsPerSec, Bytes, BytesPerSec, Fleet, Network, Site};
use evac_qmp::{MigrationStatus, Qmp};
use evac_run::journal::Replay;
use evac_run::{Completion, Failure, Log, Observed, Progress, StartRequest, Wake};
use tokio::sync::{mpsc, oneshot};

use crate::attempt::{self, AttemptCtx, AttemptResult, Control};
use crate::inventory::Inventory;

/// Where a migrated VM runs: the destination QEMU evac started.
#[derive(Debug, Clone, PartialEq)]
pub struct Landed {
    pub host: String,
    pub qmp: PathBuf,
    pub pid: u32,
}

/// The QEMU VMs of an inventory, connected.
pub struct QemuBackend {
    inventory: Inventory,
    fleet: Fleet,
    run_dir: PathBuf,
    /// Each VM's source QMP, in inventory order; `None` for a VM a resumed
    /// run finds without its source (it quit after completing).
    sources: Vec<Option<Qmp>>,
    log: Log,
}

impl QemuBackend {
    /// Connects to every VM's QMP (it must be evac's alone) and reads the
    /// memory of those the inventory does not size.
    ///
    /// Resuming (`replay`), a VM the journal shows migrating or migrated may
    /// have no source any more; its memory then comes from the journal.
    pub async fn connect(
        inventory: Inventory,
        log: Log,
        replay: Option<&Replay>,
    ) -> anyhow::Result<QemuBackend> {
        let run_dir = inventory
            .run_dir
            .clone()
            .unwrap_or_else(|| evac_run::default_run_dir(&inventory.name));
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create run_dir {}", run_dir.display()))?;
        let mut sources = Vec::new();
        let mut memory = Vec::new();
        for spec in &inventory.vms {
            let journaled = replay.and_then(|r| {
                let at = r.vms.iter().position(|n| n == &spec.name)?;
                let state = &r.states[at];
                (state.done || state.in_flight.is_some()).then_some(r.memory[at])
            });
            let src = match (Qmp::connect(&spec.qmp).await, journaled) {
                (Ok(src), _) => src,
                (Err(_), Some(size)) => {
                    sources.push(None);
                    memory.push(spec.memory.unwrap_or(size));
                    continue;
                }
                (Err(e), None) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("vm {}: cannot reach its QMP at {}", spec.name, spec.qmp)))
                }
            };
            // Drop the backlog: each attempt subscribes afresh.
            drop(src.events());
            // What QEMU says wins over what the inventory states: a typo
            // there (64 GiB for 64 MiB) would skew every plan and bound.
            let reported = src
                .query_memory_size_summary()
                .await
                .map(|summary| Bytes(summary.base_memory));
            let size = match (spec.memory, reported) {
                (Some(stated), Ok(reported)) if stated != reported => {
                    log(&format!(
                        "WARNING: vm {}: the inventory states memory = \"{stated}\" but QEMU reports {reported} \
                         (query-memory-size-summary); using QEMU's",
                        spec.name
                    ));
                    reported
                }
                (_, Ok(reported)) => reported,
                (Some(stated), Err(e)) => {
                    log(&format!(
                        "vm {}: query-memory-size-summary failed ({e}); using the inventory's {stated}",
                        spec.name
                    ));
                    stated
                }
                (None, Err(e)) => {
                    return Err(
                        anyhow::Error::new(e).context(format!("vm {}: query-memory-size-summary", spec.name))
                    )
                }
            };
            memory.push(size);
            sources.push(Some(src));
        }
        let fleet = inventory.fleet(&memory);
        // Checked again now that QEMU has said each VM's memory.
        fleet.validate().map_err(|invalid| {
            anyhow::anyhow!("inventory `{}`: {}", inventory.name, invalid.named(&fleet))
        })?;
        Ok(QemuBackend {
            fleet,
            inventory,
            run_dir,
            sources,
            log,
        })
    }
}

impl evac_run::Backend for QemuBackend {
    /// Everything the controller asks: postcopy (`migrate-start-postcopy`),
    /// auto-converge at any time (a migration parameter QEMU takes
    /// mid-flight), multifd zstd compression.
    fn capabilities(&self) -> evac_run::Capabilities {
        evac_run::Capabilities {
            postcopy: true,
            auto_converge_in_flight: true,
            compression: true,
        }
    }

    fn name(&self) -> &'static str {
        "QEMU"
    }

    type Migration = QemuMigration;

    fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    fn network(&self) -> Network {
        self.inventory.network()
    }

    fn start(&mut self, request: StartRequest) -> QemuMigration {
        self.launch(request, None)
    }

    fn reconnect_info(&self, request: &StartRequest) -> serde_json::Value {
        let vm = &self.inventory.vms[request.vm.0].name;
        let sock = attempt::dst_socket(&self.run_dir, vm, request.attempt);
        serde_json::json!({ "qmp": sock })
    }

    fn adopt(&mut self, request: StartRequest, info: &serde_json::Value) -> Option<QemuMigration> {
        let sock = match info.get("qmp").and_then(|q| q.as_str()) {
            Some(path) => PathBuf::from(path),
            None => attempt::dst_socket(
                &self.run_dir,
                &self.inventory.vms[request.vm.0].name,
                request.attempt,
            ),
        };
        Some(self.launch(request, Some(sock)))
    }

    /// A source host with a `netns`: the transmit counter of that namespace
    /// (read through a live source QEMU in it), guests' traffic included.
    async fn host_tx(&mut self) -> Vec<Option<Bytes>> {
        let mut tx = vec![None; self.fleet.hosts.len()];
        for (host, spec) in self.inventory.hosts.iter().enumerate() {
            if spec.site != Site::Source || spec.netns.is_none() {
                continue;
            }
            tx[host] = self
                .fleet
                .vms
                .iter()
                .zip(&self.sources)
                .filter_map(|(vm, src)| src.as_ref().map(|src| (vm, src)))
                .filter(|(vm, src)| vm.host.0 == host && !src.is_closed())
                .find_map(|(_, src)| src.peer_pid().and_then(crate::netns_tx_bytes))
                .map(Bytes);
        }
        tx
    }
}

/// Runs an attempt's task: its result goes to the backend's receiver,
/// then the run loop is woken to read it.
fn report_to(
    result_tx: oneshot::Sender<AttemptResult>,
    wake: Wake,
    task: impl std::future::Future<Output = AttemptResult> + Send + 'static,
) {
    tokio::spawn(async move {
        let _ = result_tx.send(task.await);
        wake.wake();
    });
}

impl QemuBackend {
    /// What an attempt of `request` from the source `src` needs: its VM,
    /// the destination host, and where the TLS credentials of both ends
    /// are when the stream is TLS.
    fn attempt_ctx(&self, request: &StartRequest, src: &Qmp) -> AttemptCtx {
        let vm = request.vm.0;
        AttemptCtx {
            vm: self.inventory.vms[vm].name.clone(),
            attempt: request.attempt,
            src: src.clone(),
            dst_host: self.inventory.hosts[request.destination.0].clone(),
            qemu_args: self.inventory.vms[vm].qemu_args.clone(),
            run_dir: self.run_dir.clone(),
            params: request.params,
            tls: self.inventory.tls.then(|| {
                let src_name = &self.inventory.vms[vm].host;
                let src_dir = self
                    .inventory
                    .hosts
                    .iter()
                    .find(|h| &h.name == src_name)
                    .map_or(Path::new(crate::inventory::DEFAULT_TLS_DIR), |h| h.tls_dir());
                let dst_host = &self.inventory.hosts[request.destination.0];
                attempt::TlsCtx {
                    src_dir: src_dir.to_owned(),
                    dst_dir: dst_host.tls_dir().to_owned(),
                    hostname: dst_host.tls_name.clone(),
                }
            }),
            log: self.log.clone(),
        }
    }

    /// Starts an attempt's task: a fresh one, or (`adopt`: its destination's
    /// QMP socket) one a previous evac started.
    fn launch(&mut self, request: StartRequest, adopt: Option<PathBuf>) -> QemuMigration {
        let vm = request.vm.0;
        let (control, control_rx) = mpsc::unbounded_channel();
        let progress = Arc::new(Mutex::new(attempt::Progress::default()));
        let (result_tx, result) = oneshot::channel();
        let host = self.inventory.hosts[request.destination.0].name.clone();
        // As `host_tx`: a source's counters tell its migrations' bytes only
        // in a namespace of its own (in the root one a migration over `lo`,
        // as in tests, is not counted).
        let source_netns = self.fleet.vms[vm].host.0;
        let source_netns = self.inventory.hosts[source_netns].netns.is_some();
        let wake = request.wake.clone();
        let src = self.sources[vm].clone();
        match &src {
            // No source: resumed after it completed, or it is gone.
            None => report_to(result_tx, wake, async move {
                match adopt {
                    Some(sock) => attempt::adopt_without_source(sock).await,
                    None => attempt::AttemptResult::Failed {
                        reason: "its source QEMU is gone".into(),
                        transferred: 0,
                    },
                }
            }),
            Some(src) => {
                let ctx = self.attempt_ctx(&request, src);
                let task_progress = progress.clone();
                report_to(result_tx, wake, async move {
                    match adopt {
                        Some(sock) => attempt::adopt_attempt(ctx, sock, control_rx, task_progress).await,
                        None => attempt::run_attempt(ctx, control_rx, task_progress).await,
                    }
                })
            }
        }
        QemuMigration {
            src,
            host,
            control,
            progress,
            result,
            rate: RateMeter::default(),
            source_netns,
            max_bandwidth: request.params.max_bandwidth,
        }
    }
}

/// One attempt in flight: its task's control channel and result.
pub struct QemuMigration {
    src: Option<Qmp>,
    host: String,
    control: mpsc::UnboundedSender<Control>,
    progress: Arc<Mutex<attempt::Progress>>,
    result: oneshot::Receiver<AttemptResult>,
    rate: RateMeter,
    /// Its source host is a network namespace of its own, whose
    /// transmitted bytes bound the migration's (see [`RateMeter`]).
    source_netns: bool,
    /// Its `max-bandwidth`, as last set: QEMU holds the migration to it, so
    /// a rate read above it is bytes still in the sockets' buffers (a
    /// migration's first seconds), not what crossed the wire.
    max_bandwidth: Option<BitsPerSec>,
}

/// Shorter than this since the last reading, a rate between two readings
/// would be noise: the last rate measured stands.
const MIN_RATE_WINDOW: Duration = Duration::from_millis(200);

/// The rate of `sent` bytes over `elapsed` between two readings of QEMU's
/// `transferred` counter; `None` over too short a time to tell.
///
/// Why not QEMU's `mbps`: it is measured over the last 100 ms, and behind
/// a WAN of several multifd connections it swings widely from one 100 ms to
/// the next (a migration held at 336 Mbit/s by its connections' windows read
/// 577 Mbit/s once on the lab's 400 Mbit/s WAN), which the deadline policy
/// took for the WAN's peak and sized the next migrations' channels to. Over
/// the time between two observations (a control period) the swings
/// average out, as the simulator's rates do.
pub fn rate_over(elapsed: Duration, sent: u64) -> Option<BitsPerSec> {
    (elapsed >= MIN_RATE_WINDOW).then(|| BitsPerSec(sent as f64 * 8.0 / elapsed.as_secs_f64()))
}

/// A migration's rate, reading after reading: over the time since the
/// last reading that measured one ([`rate_over`]), the first from when
/// `migrate` was accepted (0 bytes then); and never more than its source's
/// network namespace transmitted over the same time.
///
/// Why: QEMU's `mbps` at a migration's first reading is its first 100 ms,
/// and QEMU's `transferred` counts what it wrote into its sockets, not what
/// left the host: early in a migration several MB sit in the sockets' send
/// buffers and the NIC's queue. The lab's 32 MiB VMs read 666 Mbit/s by
/// `mbps`, and 501 Mbit/s by `transferred` since the start, on a 400 Mbit/s
/// WAN; `deadline` took that for the WAN's peak and started a second
/// migration on a full WAN where the simulator (whose rates are what
/// crosses the WAN) starts none (`crates/lab/tests/decisions.rs`). What the
/// source host transmitted bounds what the migration sent; with several
/// migrations on a host it bounds each one loosely.
#[derive(Debug, Default, Clone, Copy)]
pub struct RateMeter {
    /// When the rate was last measured (or the migration started), with
    /// `transferred` and the host's transmitted bytes (if known) then.
    reference: Option<(tokio::time::Instant, u64, Option<u64>)>,
    last: Option<BitsPerSec>,
}

impl RateMeter {
    /// The rate at a reading of `transferred` and of the source host's
    /// transmitted bytes `host_tx` at `now`; `started`: when `migrate` was
    /// accepted and the host's bytes then, if known (not for an adopted
    /// migration); `qemu`: QEMU's own `mbps`, used only when nothing else
    /// tells.
    pub fn read(
        &mut self,
        now: tokio::time::Instant,
        transferred: u64,
        host_tx: Option<u64>,
        started: Option<(tokio::time::Instant, Option<u64>)>,
        qemu: BitsPerSec,
    ) -> BitsPerSec {
        let Some((at, bytes, host_then)) = self.reference.or(started.map(|(at, host)| (at, 0, host))) else {
            // Adopted: nothing to measure from yet.
            self.reference = Some((now, transferred, host_tx));
            return qemu;
        };
        let elapsed = now.saturating_duration_since(at);
        let mut sent = transferred.saturating_sub(bytes);
        if let (Some(then), Some(host_now)) = (host_then, host_tx) {
            sent = sent.min(host_now.saturating_sub(then));
        }
        match rate_over(elapsed, sent) {
            Some(rate) => {
                self.reference = Some((now, transferred, host_tx));
                self.last = Some(rate);
                rate
            }
            None => self.last.unwrap_or_else(|| {
                // A first reading soon after the start: its average so far.
                if elapsed.is_zero() {
                    BitsPerSec(0.0)
                } else {
                    BitsPerSec(sent as f64 * 8.0 / elapsed.as_secs_f64())
                }
            }),
        }
    }
}

impl QemuMigration {
    /// A request to the attempt's task; one that has ended reports its
    /// result at the next observation, so a closed channel is no error.
    fn send(&self, request: Control) -> Result<(), String> {
        let _ = self.control.send(request);
        Ok(())
    }
}

impl evac_run::Migration for QemuMigration {
    type Landed = Landed;

    async fn observe(&mut self) -> Result<Observed<Landed>, String> {
        match self.result.try_recv() {
            Ok(AttemptResult::Completed {
                info,
                dst_pid,
                dst_qmp,
            }) => {
                let ram = info.ram.unwrap_or_default();
                return Ok(Observed::Completed(Completion {
                    bytes_sent: Bytes(ram.transferred),
                    rounds: ram.dirty_sync_count as u32,
                    downtime: info.downtime.map(std::time::Duration::from_millis),
                    landed: Landed {
                        host: self.host.clone(),
                        qmp: dst_qmp,
                        pid: dst_pid,
                    },
                }));
            }
            Ok(AttemptResult::Failed { reason, transferred }) => {
                return Ok(Observed::Failed(Failure {
                    reason,
                    bytes_sent: Bytes(transferred),
                }))
            }
            Err(oneshot::error::TryRecvError::Closed) => {
                return Ok(Observed::Failed(Failure {
                    reason: "the migration task ended without a result".into(),
                    bytes_sent: Bytes::ZERO,
                }))
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let (migrating, paused, since) = {
            let p = self.progress.lock().unwrap();
            (p.migrating(), p.paused_by_us(), p.migrating_since())
        };
        // Without a namespace's counter at both ends, no bound.
        let since = since.map(|(at, host)| (at, host.filter(|_| self.source_netns)));
        if !migrating {
            return Ok(Observed::Starting);
        }
        let Some(src) = &self.src else {
            return Ok(Observed::Starting);
        };
        let info = src
            .query_migrate()
            .await
            .map_err(|e| format!("query-migrate: {e}"))?;
        let ram = info.ram.unwrap_or_default();
        let host_tx = if self.source_netns {
            src.peer_pid().and_then(crate::netns_tx_bytes)
        } else {
            None
        };
        let rate = self.rate.read(
            tokio::time::Instant::now(),
            ram.transferred,
            host_tx,
            since,
            BitsPerSec(ram.mbps * 1e6),
        );
        let rate = self
            .max_bandwidth
            .map_or(rate, |cap| BitsPerSec(rate.0.min(cap.0)));
        let phase = if matches!(
            info.status,
            Some(
                MigrationStatus::PostcopyActive
                    | MigrationStatus::PostcopyPaused
                    | MigrationStatus::PostcopyRecover
            )
        ) {
            Phase::Postcopy
        } else if matches!(
            info.status,
            Some(MigrationStatus::Device | MigrationStatus::PreSwitchover)
        ) {
            Phase::StopAndCopy
        } else if paused {
            Phase::Offline
        } else {
            Phase::Precopy
        };
        Ok(Observed::Running(Progress {
            phase,
            round: (ram.dirty_sync_count as u32).max(1),
            bytes_sent: Bytes(ram.transferred),
            bytes_remaining: Bytes(ram.remaining),
            rate,
            dirty_rate: BytesPerSec((ram.dirty_pages_rate * ram.page_size) as f64),
        }))
    }

    async fn retune(&mut self, change: Retune) -> Result<(), String> {
        if let Retune::MaxBandwidth(cap) = change {
            self.max_bandwidth = cap;
        }
        self.send(Control::Retune(change))
    }

    async fn switch_to_offline(&mut self) -> Result<(), String> {
        self.send(Control::Offline)
    }

    /// Refused at once when the attempt is not ready for postcopy (see
    /// `crate::postcopy`); else `migrate-start-postcopy` by its task.
    async fn switch_to_postcopy(&mut self) -> Result<(), String> {
        let ready = self.progress.lock().unwrap().postcopy();
        match ready {
            attempt::PostcopyReady::Refused(why) => Err(why),
            attempt::PostcopyReady::Pending => Err("the migration has not begun; it stays in precopy".into()),
            attempt::PostcopyReady::Ready => self.send(Control::Postcopy),
        }
    }

    async fn cancel(&mut self) -> Result<(), String> {
        self.send(Control::Cancel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_measured_over_the_time_between_two_readings() {
        // 1 000 000 bytes in half a second: 16 Mbit/s.
        assert_eq!(
            rate_over(Duration::from_millis(500), 1_000_000),
            Some(BitsPerSec(16e6))
        );
        // Too short a time to tell.
        assert_eq!(rate_over(Duration::from_millis(100), 1_000_000), None);
        assert_eq!(rate_over(Duration::ZERO, 0), None);
    }

    #[test]
    fn a_first_reading_is_measured_from_the_start_not_by_qemu() {
        let start = tokio::time::Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let qemu = BitsPerSec(666e6);
        let mut meter = RateMeter::default();
        // 5 000 000 bytes in the first 400 ms: 100 Mbit/s, whatever QEMU says.
        let started = Some((start, None));
        assert_eq!(
            meter.read(at(400), 5_000_000, None, started, qemu),
            BitsPerSec(100e6)
        );
        // 50 ms later: too short to tell; the last rate stands.
        assert_eq!(
            meter.read(at(450), 9_000_000, None, started, qemu),
            BitsPerSec(100e6)
        );
        // From the last measured reading (400 ms): 5 000 000 more in 500 ms.
        assert_eq!(
            meter.read(at(900), 10_000_000, None, started, qemu),
            BitsPerSec(80e6)
        );
    }

    #[test]
    fn a_first_reading_soon_after_the_start_is_the_average_so_far() {
        let start = tokio::time::Instant::now();
        let mut meter = RateMeter::default();
        let rate = meter.read(
            start + Duration::from_millis(100),
            500_000,
            None,
            Some((start, None)),
            BitsPerSec(1e9),
        );
        assert_eq!(rate, BitsPerSec(40e6));
    }

    #[test]
    fn an_adopted_migration_reads_qemu_until_it_can_measure() {
        let start = tokio::time::Instant::now();
        let mut meter = RateMeter::default();
        assert_eq!(
            meter.read(start, 7_000_000, None, None, BitsPerSec(3e6)),
            BitsPerSec(3e6)
        );
        // 1 000 000 bytes in the 250 ms since: 32 Mbit/s.
        let later = start + Duration::from_millis(250);
        assert_eq!(
            meter.read(later, 8_000_000, None, None, BitsPerSec(3e6)),
            BitsPerSec(32e6)
        );
    }

    #[test]
    fn a_rate_is_no_more_than_its_host_transmitted() {
        let start = tokio::time::Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // The host had sent 10 000 000 bytes when the migration started.
        let started = Some((start, Some(10_000_000)));
        let mut meter = RateMeter::default();
        // QEMU wrote 6 000 000 bytes in 500 ms (96 Mbit/s) but the host
        // sent 2 500 000 (40 Mbit/s): the rest waits in its buffers.
        let rate = meter.read(at(500), 6_000_000, Some(12_500_000), started, BitsPerSec(1e9));
        assert_eq!(rate, BitsPerSec(40e6));
        // The next 500 ms: 2 000 000 written, the host 3 000 000 (it sent
        // the buffers out, or another migration sent too): 32 Mbit/s.
        let rate = meter.read(at(1000), 8_000_000, Some(15_500_000), started, BitsPerSec(1e9));
        assert_eq!(rate, BitsPerSec(32e6));
    }
}
