//! One attempt as the run loop sees it ([`QemuMigration`], evac-run's
//! `Migration`): launching its task (through evac-run's [`AttemptTask`],
//! the skeleton the backends share), sending it the controller's requests,
//! and observing it (the source's `query-migrate`, its rate, its end).
//! Apart from the backend (`super`), which only connects the fleet and
//! hands out these handles.

use std::path::PathBuf;

use evac_controller::{Phase, Retune};
use evac_model::{BitsPerSec, Bytes, BytesPerSec};
use evac_qmp::{MigrationStatus, Qmp};
use evac_run::{AttemptTask, Completion, Failure, Observed, Progress, StartRequest};

use super::{Landed, QemuBackend, RateMeter};
use crate::attempt::{self, AttemptResult, Control};

impl QemuBackend {
    /// Starts an attempt's task: a fresh one, or (`adopt`: its destination's
    /// QMP socket) one a previous evac started.
    pub(super) fn launch(&mut self, request: StartRequest, adopt: Option<PathBuf>) -> QemuMigration {
        let vm = request.vm.0;
        let host = self.inventory.hosts[request.destination.0].name.clone();
        // As `host_tx`: a source's counters tell its migrations' bytes only
        // in a namespace of its own (in the root one a migration over `lo`,
        // as in tests, is not counted).
        let source_netns = self.fleet.vms[vm].host.0;
        let source_netns = self.inventory.hosts[source_netns].netns.is_some();
        let wake = request.wake.clone();
        let src = self.sources[vm].clone();
        let task = match &src {
            // No source: resumed after it completed, or it is gone.
            None => AttemptTask::spawn(wake, |_, _| async move {
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
                AttemptTask::spawn(wake, |control, progress| async move {
                    match adopt {
                        Some(sock) => attempt::adopt_attempt(ctx, sock, control, progress).await,
                        None => attempt::run_attempt(ctx, control, progress).await,
                    }
                })
            }
        };
        QemuMigration {
            src,
            host,
            task,
            rate: RateMeter::default(),
            source_netns,
            max_bandwidth: request.params.max_bandwidth,
        }
    }
}

/// One attempt in flight: its task's requests, progress and result.
pub struct QemuMigration {
    src: Option<Qmp>,
    host: String,
    task: AttemptTask<Control, attempt::Progress, AttemptResult>,
    rate: RateMeter,
    /// Its source host is a network namespace of its own, whose
    /// transmitted bytes bound the migration's (see [`RateMeter`]).
    source_netns: bool,
    /// Its `max-bandwidth`, as last set: QEMU holds the migration to it, so
    /// a rate read above it is bytes still in the sockets' buffers (a
    /// migration's first seconds), not what crossed the wire.
    max_bandwidth: Option<BitsPerSec>,
}

impl QemuMigration {
    /// A request to the attempt's task; one that has ended reports its
    /// result at the next observation, so a closed channel is no error.
    fn send(&self, request: Control) -> Result<(), String> {
        self.task.send(request);
        Ok(())
    }
}

impl evac_run::Migration for QemuMigration {
    type Landed = Landed;

    async fn observe(&mut self) -> Result<Observed<Landed>, String> {
        match self.task.ended() {
            Some(Ok(AttemptResult::Completed {
                info,
                dst_pid,
                dst_qmp,
            })) => {
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
            Some(Ok(AttemptResult::Failed { reason, transferred })) => {
                return Ok(Observed::Failed(Failure {
                    reason,
                    bytes_sent: Bytes(transferred),
                }))
            }
            Some(Err(reason)) => {
                return Ok(Observed::Failed(Failure {
                    reason,
                    bytes_sent: Bytes::ZERO,
                }))
            }
            None => {}
        }
        let (migrating, paused, since) = self
            .task
            .read(|p| (p.migrating(), p.paused_by_us(), p.migrating_since()));
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
        let ready = self.task.read(attempt::Progress::postcopy);
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
