//! The handle the run loop holds for one attempt ([`LibvirtMigration`],
//! evac-run's `Migration`) and the spawning of its task (through evac-run's
//! [`AttemptTask`], the skeleton the backends share): what the run loop
//! asks goes to the task as a [`Control`], what the task measured comes back
//! through [`Progress`]. Apart from the task (`super::task`) so that the
//! contract with the run loop reads on its own.

use crate::client::MigrateRequest;
use evac_controller::Retune;
use evac_model::{BitsPerSec, Bytes, Site};
use evac_model::{HostId, MigrationParams};
use evac_run::{AttemptTask, Completion, Failure, Observed, StartRequest, Wake};
use std::time::Duration;
use tokio::sync::oneshot;

use super::task::run_attempt;
use super::{AttemptCtx, AttemptResult, Control, Progress, Stage, Stages};
use crate::backend::{Landed, LibvirtBackend, Source, CALL_TIMEOUT, POLL};

/// One attempt in flight: its task's requests, progress and result.
pub struct LibvirtMigration {
    task: AttemptTask<Control, Progress, AttemptResult>,
}

impl LibvirtMigration {
    /// Waits at most `timeout` for the attempt's end, with its stages;
    /// `None` past it (the handle is dropped: its task aborts the
    /// migration, as when the run loop drops one).
    pub(in crate::backend) async fn finish_within(
        mut self,
        timeout: Duration,
    ) -> Option<(AttemptResult, Stages)> {
        let result = self.task.result_within(timeout).await?.ok()?;
        Some((result, self.task.read(Progress::stages)))
    }

    fn progress(&self) -> Progress {
        self.task.read(|p| *p)
    }
}

/// The run loop's answer for an attempt's result (`Err`: its task ended
/// without one, and why).
fn observed(result: Result<AttemptResult, String>) -> Observed<Landed> {
    match result {
        Ok(AttemptResult::Completed {
            landed,
            bytes,
            rounds,
            downtime,
        }) => Observed::Completed(Completion {
            bytes_sent: bytes,
            rounds: rounds.max(1),
            downtime,
            landed,
        }),
        Ok(AttemptResult::Failed { reason, bytes }) => Observed::Failed(Failure {
            reason,
            bytes_sent: bytes,
        }),
        Err(reason) => Observed::Failed(Failure {
            reason,
            bytes_sent: Bytes::ZERO,
        }),
    }
}

impl evac_run::Migration for LibvirtMigration {
    type Landed = Landed;

    async fn observe(&mut self) -> Result<Observed<Landed>, String> {
        if let Some(result) = self.task.ended() {
            return Ok(observed(result));
        }
        let p = self.progress();
        if p.stage().is_over() {
            // Its task sends the result right after its last stage.
            return match self.task.result_within(evac_run::OBSERVE_TIMEOUT).await {
                Some(result) => Ok(observed(result)),
                None => Err("ended, its result not there yet".into()),
            };
        }
        let Some(job) = p.job().filter(|j| j.total.0 > 0) else {
            return Ok(Observed::Starting);
        };
        Ok(Observed::Running(evac_run::Progress {
            phase: p.phase(),
            round: (job.iteration as u32).max(1),
            bytes_sent: job.processed,
            bytes_remaining: job.remaining,
            rate: p.rate(),
            dirty_rate: job.dirty_rate,
        }))
    }

    async fn retune(&mut self, change: Retune) -> Result<(), String> {
        self.task.send(Control::Retune(change));
        Ok(())
    }

    async fn switch_to_offline(&mut self) -> Result<(), String> {
        self.task.send(Control::Offline);
        Ok(())
    }

    async fn switch_to_postcopy(&mut self) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.task.send(Control::Postcopy(reply));
        match tokio::time::timeout(CALL_TIMEOUT + POLL, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the migration ended before it could switch".into()),
            Err(_) => Err(format!("no answer within {} s", (CALL_TIMEOUT + POLL).as_secs())),
        }
    }

    async fn cancel(&mut self) -> Result<(), String> {
        if self.progress().stage() == Stage::Postcopy {
            return Err("in postcopy: the guest runs at its destination and cannot go back".into());
        }
        self.task.send(Control::Cancel);
        Ok(())
    }
}

impl LibvirtBackend {
    /// Starts an attempt's task; `adopt_only`: follow a migration already
    /// started, never start one.
    pub(in crate::backend) fn spawn(&mut self, request: StartRequest, adopt_only: bool) -> LibvirtMigration {
        let source = self.sources[request.vm.0].clone();
        self.spawn_for(
            source,
            request.destination,
            request.params,
            request.wake,
            adopt_only,
        )
    }

    /// Starts an attempt's task for `source`'s domain, a fleet VM's or a
    /// probe's ([`super::probe`]): the same request, flags and limits.
    pub(in crate::backend) fn spawn_for(
        &mut self,
        source: Source,
        destination: HostId,
        params: MigrationParams,
        wake: Wake,
        adopt_only: bool,
    ) -> LibvirtMigration {
        let src_host = &self.inventory.hosts[source.host.0];
        let dst_host = &self.inventory.hosts[destination.0];
        let migrate = MigrateRequest {
            domain: source.domain.clone(),
            destination_uri: dst_host.peer_uri().to_owned(),
            migration_uri: dst_host.migration_address.as_ref().map(|a| format!("tcp://{a}")),
            max_bandwidth: params.max_bandwidth.map(BitsPerSec::to_bytes_per_sec),
            parallel_connections: params.connections.get(),
            auto_converge: params.auto_converge,
            downtime_limit: params.downtime_limit,
            tls: self.inventory.migration.tls,
            tls_destination: dst_host.tls_name.clone(),
            copy_storage: self.inventory.migration.copy_storage,
            offline: params.mode == evac_model::Mode::Offline,
            postcopy: params.allow_postcopy || params.mode == evac_model::Mode::Postcopy,
        };
        let destinations = self
            .inventory
            .hosts
            .iter()
            .filter(|h| h.site == Site::Destination)
            .map(|h| (h.name.clone(), h.uri.clone()))
            .collect();
        let ctx = AttemptCtx {
            source_gate: self.gates[source.host.0].clone(),
            destination_gate: self.gates[destination.0].clone(),
            source_spec: src_host.clone(),
            destination_spec: dst_host.clone(),
            source_uri: src_host.uri.clone(),
            source_host: source.host.0,
            destinations,
            request: migrate,
            migrated: self.migrated.clone(),
            next_start: self.next_start.clone(),
            log: self.log.clone(),
            adopt_only,
            auto_postcopy: params.mode == evac_model::Mode::Postcopy,
        };
        LibvirtMigration {
            task: AttemptTask::spawn(wake, |control, progress| run_attempt(ctx, control, progress)),
        }
    }
}
