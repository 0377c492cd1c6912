//! The loop itself: one VM's state is a [`State`], its transitions are in
//! [`Driver::observe`] (a migration ends), [`Driver::act`] (one starts) and
//! [`Driver::power_offs`].

use std::future::Future;
use std::time::Duration;

use evac_controller::{
    Action, Controller, ControllerConfig, EndOutcome, Ended, MigrationObs, Observations, Phase, Retune,
};
use evac_model::{BitsPerSec, Bytes, BytesPerSec, HostId, MigrationParams, Mode, Site, VmId};
use evac_outcome::{FailedAttempt, Outcome, RunResult, TimelinePoint, VmRecord};
use tokio::time::{timeout, Instant};

use crate::backend::{Backend, Migration, Observed, StartRequest, Wake};
use crate::{
    log_to_stderr, FlightProgress, Landed, Log, RunOptions, RunOutput, RunProgress, ACTION_TIMEOUT,
    OBSERVE_TIMEOUT, STALL_PERIODS,
};

/// One migration attempt in flight.
struct Flight<M> {
    handle: M,
    attempt: u32,
    destination: HostId,
    started_at: Duration,
    params: MigrationParams,
    /// The most this attempt was seen to have sent.
    sent: u64,
    last_obs: Option<MigrationObs>,
    /// Its source host lost power: whatever happens, the VM is lost.
    lost: bool,
}

enum State<M> {
    /// On its source, to be started (again) by the controller.
    Waiting,
    Flying(Box<Flight<M>>),
    /// Migrated, lost, or given up: `record.outcome` says which.
    Done,
}

struct VmRun<M: Migration> {
    attempts: u32,
    /// Bytes sent by finished attempts.
    bytes_before: u64,
    state: State<M>,
    record: VmRecord,
    landed: Option<M::Landed>,
}

impl<M: Migration> VmRun<M> {
    fn flight(&self) -> Option<&Flight<M>> {
        match &self.state {
            State::Flying(f) => Some(f),
            _ => None,
        }
    }

    fn flight_mut(&mut self) -> Option<&mut Flight<M>> {
        match &mut self.state {
            State::Flying(f) => Some(f),
            _ => None,
        }
    }
}

pub(crate) struct Driver<B: Backend> {
    backend: B,
    period: Duration,
    max_attempts: u32,
    vms: Vec<VmRun<B::Migration>>,
    host_tx: Vec<u64>,
    /// Attempts that failed or were cancelled, in the order they ended.
    failed_attempts: Vec<FailedAttempt>,
    start: Instant,
    wake: Wake,
    progress: Option<tokio::sync::watch::Sender<RunProgress>>,
    log: Log,
}

impl<B: Backend> Driver<B> {
    pub(crate) fn new(backend: B, config: &ControllerConfig, options: RunOptions) -> Self {
        let fleet = backend.fleet();
        let vms = fleet
            .vms
            .iter()
            .map(|vm| VmRun {
                attempts: 0,
                bytes_before: 0,
                state: State::Waiting,
                record: VmRecord::unmoved(vm.name.clone(), fleet.host(vm.host).name.clone()),
                landed: None,
            })
            .collect();
        Driver {
            host_tx: vec![0; fleet.hosts.len()],
            failed_attempts: Vec::new(),
            vms,
            period: config.period.max(Duration::from_millis(10)),
            max_attempts: config.max_attempts,
            backend,
            start: Instant::now(),
            wake: Wake::default(),
            progress: options.progress,
            log: options.log.unwrap_or_else(log_to_stderr),
        }
    }

    fn log(&self, line: impl AsRef<str>) {
        (self.log)(&format!("evac: {}", line.as_ref()));
    }

    pub(crate) async fn drive<C: Controller>(
        mut self,
        mut controller: C,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<RunOutput<Landed<B>>> {
        let mut interval = tokio::time::interval(self.period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut timeline = Vec::new();
        let mut last_wan: Option<(Duration, u64)> = None;
        let mut wan_rate = BitsPerSec(0.0);
        let mut stopping = false;
        let mut idle_periods = 0usize;
        let wake = self.wake.clone();
        tokio::pin!(shutdown);
        self.start = Instant::now();
        loop {
            let mut periodic = false;
            tokio::select! {
                _ = interval.tick() => periodic = true,
                _ = wake.woken() => {}
                _ = &mut shutdown, if !stopping => {
                    self.log("shutting down: cancelling every migration in flight");
                    stopping = true;
                    for vm in 0..self.vms.len() {
                        self.cancel(vm).await;
                    }
                    self.publish(self.start.elapsed(), wan_rate, stopping);
                }
            }
            let now = self.start.elapsed();
            self.power_offs(now).await;
            let observations = self.observe(now).await;
            if !stopping {
                let actions = controller.on_tick(&observations);
                // Nothing in flight and nothing started for many periods
                // while VMs wait (e.g. none fits any destination): stuck.
                let idle = actions.is_empty() && self.vms.iter().all(|v| v.flight().is_none());
                idle_periods = if idle {
                    idle_periods + usize::from(periodic)
                } else {
                    0
                };
                if idle_periods >= STALL_PERIODS {
                    self.log(format!(
                        "the controller started nothing for {STALL_PERIODS} periods; \
                         giving up on the VMs still waiting (reported lost)"
                    ));
                    break;
                }
                for action in actions {
                    // Carried out after the observations: their time, not the tick's.
                    self.act(action, observations.now).await;
                }
            }
            let in_flight = self.vms.iter().filter(|v| v.flight().is_some()).count();
            if periodic {
                // The counters' own time, not the tick's: reading them can
                // come late (see `observe`).
                let (now, wan) = (observations.now, observations.wan_bytes.0);
                let rate = match last_wan {
                    Some((at, bytes)) if now > at => {
                        (wan.saturating_sub(bytes)) as f64 * 8.0 / (now - at).as_secs_f64()
                    }
                    _ => 0.0,
                };
                last_wan = Some((now, wan));
                timeline.push(TimelinePoint {
                    t_s: now.as_secs_f64(),
                    wan_capacity_bps: None,
                    wan_throughput_bps: rate,
                    in_flight,
                });
                wan_rate = BitsPerSec(rate);
                self.publish(now, wan_rate, stopping);
            }
            let all_done = self.vms.iter().all(|v| matches!(v.state, State::Done));
            if in_flight == 0 && (stopping || all_done) {
                break;
            }
        }
        let records = self.vms.iter().map(|v| v.record.clone()).collect();
        let fleet = self.backend.fleet();
        let mut result = RunResult::summarize(
            controller.name(),
            fleet,
            &self.backend.network(),
            records,
            timeline,
        );
        result.failed_attempts = std::mem::take(&mut self.failed_attempts);
        if let Some(progress) = &self.progress {
            let last = progress.borrow().clone();
            progress.send_replace(RunProgress {
                elapsed: self.start.elapsed(),
                total: self.vms.len(),
                migrated: result.migrated,
                lost: result.lost,
                in_flight: 0,
                waiting: 0,
                migrations: Vec::new(),
                stopping,
                finished: true,
                ..last
            });
        }
        Ok(RunOutput {
            result,
            landed: self.vms.into_iter().map(|v| v.landed).collect(),
        })
    }

    /// Publishes a [`RunProgress`] if anyone asked for it.
    fn publish(&self, now: Duration, wan_throughput: BitsPerSec, stopping: bool) {
        let Some(progress) = &self.progress else {
            return;
        };
        let fleet = self.backend.fleet();
        let mut snapshot = RunProgress {
            elapsed: now,
            total: self.vms.len(),
            wan_throughput,
            stopping,
            ..RunProgress::default()
        };
        for (index, run) in self.vms.iter().enumerate() {
            match &run.state {
                State::Flying(flight) => {
                    snapshot.in_flight += 1;
                    let memory = fleet.vms[index].memory;
                    let obs = flight.last_obs.as_ref();
                    snapshot.migrations.push(FlightProgress {
                        vm: run.record.name.clone(),
                        destination: fleet.host(flight.destination).name.clone(),
                        attempt: flight.attempt,
                        phase: obs.map_or(Phase::Precopy, |o| o.phase),
                        round: obs.map_or(1, |o| o.round),
                        bytes_sent: obs.map_or(Bytes::ZERO, |o| o.bytes_sent),
                        bytes_remaining: obs.map_or(memory, |o| o.bytes_remaining),
                        memory,
                        rate: obs.map_or(BitsPerSec(0.0), |o| o.rate),
                    });
                }
                State::Done if run.record.outcome == Outcome::Migrated => snapshot.migrated += 1,
                State::Done => snapshot.lost += 1,
                State::Waiting => snapshot.waiting += 1,
            }
        }
        progress.send_replace(snapshot);
    }

    /// VMs whose source host lost power: lost, left alone (a migration in
    /// flight is cancelled).
    async fn power_offs(&mut self, now: Duration) {
        for vm in 0..self.vms.len() {
            let fleet = self.backend.fleet();
            let Some(at) = fleet.host(fleet.vms[vm].host).power_off_at else {
                continue;
            };
            if now < at {
                continue;
            }
            let run = &mut self.vms[vm];
            match &mut run.state {
                State::Flying(flight) if !flight.lost => {
                    flight.lost = true;
                    self.cancel(vm).await;
                }
                State::Flying(_) | State::Done => {}
                State::Waiting => {
                    run.state = State::Done;
                    run.record.outcome = Outcome::Lost;
                }
            }
        }
    }

    /// Asks the backend to cancel `vm`'s migration, if it has one.
    async fn cancel(&mut self, vm: usize) {
        let Some(flight) = self.vms[vm].flight_mut() else {
            return;
        };
        let outcome = timeout(ACTION_TIMEOUT, flight.handle.cancel()).await;
        self.report_action(vm, "cancel", outcome);
    }

    fn report_action(
        &self,
        vm: usize,
        what: &str,
        outcome: Result<Result<(), String>, tokio::time::error::Elapsed>,
    ) {
        let name = &self.vms[vm].record.name;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.log(format!("{name}: {what}: {e}")),
            Err(_) => self.log(format!(
                "{name}: {what}: no answer within {} s",
                ACTION_TIMEOUT.as_secs_f64()
            )),
        }
    }

    async fn act(&mut self, action: Action, now: Duration) {
        match action {
            Action::Start {
                vm,
                destination,
                params,
            } => self.start_migration(vm, destination, params, now),
            Action::Retune { vm, change } => {
                let Some(flight) = self.vms[vm.0].flight_mut() else {
                    return;
                };
                match change {
                    Retune::MaxBandwidth(cap) => flight.params.max_bandwidth = cap,
                    Retune::DowntimeLimit(limit) => flight.params.downtime_limit = limit,
                    Retune::AutoConverge(on) => flight.params.auto_converge = on,
                }
                let outcome = timeout(ACTION_TIMEOUT, flight.handle.retune(change)).await;
                self.report_action(vm.0, &format!("retune {change:?}"), outcome);
            }
            Action::SwitchToOffline { vm } => {
                let Some(flight) = self.vms[vm.0].flight_mut() else {
                    return;
                };
                flight.params.mode = Mode::Offline;
                let outcome = timeout(ACTION_TIMEOUT, flight.handle.switch_to_offline()).await;
                self.report_action(vm.0, "switch to offline", outcome);
            }
            Action::Cancel { vm } => self.cancel(vm.0).await,
        }
    }

    fn start_migration(&mut self, vm: VmId, destination: HostId, params: MigrationParams, now: Duration) {
        let fleet = self.backend.fleet();
        let (Some(run), Some(host)) = (self.vms.get(vm.0), fleet.hosts.get(destination.0)) else {
            self.log(format!(
                "start of {vm:?} to {destination:?}: no such VM or host; ignored"
            ));
            return;
        };
        if !matches!(run.state, State::Waiting) {
            self.log(format!(
                "start of {}: already in flight or done; ignored",
                run.record.name
            ));
            return;
        }
        if host.site != Site::Destination {
            self.log(format!(
                "start of {}: {} is not a destination; ignored",
                run.record.name, host.name
            ));
            return;
        }
        let attempt = run.attempts + 1;
        let handle = self.backend.start(StartRequest {
            vm,
            attempt,
            destination,
            params,
            wake: self.wake.clone(),
        });
        let run = &mut self.vms[vm.0];
        run.attempts = attempt;
        run.state = State::Flying(Box::new(Flight {
            handle,
            attempt,
            destination,
            started_at: now,
            params,
            sent: 0,
            last_obs: None,
            lost: false,
        }));
    }

    /// Observes every migration in flight at once, ends those that ended,
    /// and reads the hosts' counters.
    async fn observe(&mut self, now: Duration) -> Observations {
        let answers = futures_util::future::join_all(
            self.vms
                .iter_mut()
                .filter_map(|run| run.flight_mut())
                .map(|flight| timeout(OBSERVE_TIMEOUT, flight.handle.observe())),
        )
        .await;
        // The answers can come late (a source in stop-and-copy answers
        // late): what they say is as of now, not as of the tick, and a rate
        // computed with the tick's time would be skewed.
        let seen = self.start.elapsed().max(now);
        let flying: Vec<usize> = (0..self.vms.len())
            .filter(|&i| self.vms[i].flight().is_some())
            .collect();
        let mut ended = Vec::new();
        let mut migrations = Vec::new();
        for (index, answer) in flying.into_iter().zip(answers) {
            let answer = match answer {
                Ok(Ok(observed)) => Some(observed),
                Ok(Err(e)) => {
                    self.log(format!("{}: observe: {e}", self.vms[index].record.name));
                    None
                }
                Err(_) => None,
            };
            let memory = self.backend.fleet().vms[index].memory;
            match answer {
                Some(Observed::Completed(done)) => ended.push(self.complete(index, done, seen)),
                Some(Observed::Failed(failure)) => ended.push(self.fail(index, failure, seen)),
                answer => {
                    let flight = self.vms[index].flight_mut().expect("in flight");
                    let obs = match answer {
                        Some(Observed::Running(p)) => {
                            flight.sent = flight.sent.max(p.bytes_sent.0);
                            MigrationObs {
                                vm: VmId(index),
                                destination: flight.destination,
                                phase: p.phase,
                                round: p.round.max(1),
                                started_at: flight.started_at,
                                bytes_sent: p.bytes_sent,
                                bytes_remaining: p.bytes_remaining,
                                rate: p.rate,
                                dirty_rate: p.dirty_rate,
                                params: flight.params,
                            }
                        }
                        Some(Observed::Starting) | None => match (&flight.last_obs, answer) {
                            // No news: the last observation stands.
                            (Some(last), None) => MigrationObs {
                                params: flight.params,
                                ..last.clone()
                            },
                            _ => MigrationObs {
                                vm: VmId(index),
                                destination: flight.destination,
                                phase: if flight.params.mode == Mode::Offline {
                                    Phase::Offline
                                } else {
                                    Phase::Precopy
                                },
                                round: 1,
                                started_at: flight.started_at,
                                bytes_sent: Bytes::ZERO,
                                bytes_remaining: memory,
                                rate: BitsPerSec(0.0),
                                dirty_rate: BytesPerSec::ZERO,
                                params: flight.params,
                            },
                        },
                        Some(Observed::Completed(_) | Observed::Failed(_)) => unreachable!("matched above"),
                    };
                    flight.last_obs = Some(obs.clone());
                    migrations.push(obs);
                }
            }
        }
        let measured = timeout(OBSERVE_TIMEOUT, self.backend.host_tx())
            .await
            .unwrap_or_default();
        let now = self.start.elapsed().max(now);
        let fleet = self.backend.fleet();
        for host in fleet.source_hosts() {
            let total = match measured.get(host.0).copied().flatten() {
                Some(bytes) => bytes.0,
                None => fleet
                    .vms
                    .iter()
                    .zip(&self.vms)
                    .filter(|(vm, _)| vm.host == host)
                    .map(|(_, run)| run.bytes_before + run.flight().map_or(0, |f| f.sent))
                    .sum(),
            };
            self.host_tx[host.0] = self.host_tx[host.0].max(total);
        }
        let wan = fleet.source_hosts().map(|h| self.host_tx[h.0]).sum();
        Observations {
            now,
            ended,
            migrations,
            host_tx: self.host_tx.iter().map(|&b| Bytes(b)).collect(),
            wan_bytes: Bytes(wan),
            // Every source host's counter is read every tick.
            tx_changed: None,
        }
    }

    /// `vm`'s migration completed: it runs at its destination.
    fn complete(&mut self, vm: usize, done: crate::Completion<Landed<B>>, now: Duration) -> Ended {
        let dst_name = {
            let run = &self.vms[vm];
            let flight = run.flight().expect("in flight");
            self.backend.fleet().host(flight.destination).name.clone()
        };
        let run = &mut self.vms[vm];
        let State::Flying(flight) = std::mem::replace(&mut run.state, State::Done) else {
            unreachable!("in flight");
        };
        let start = flight.started_at.as_secs_f64();
        let end = now.as_secs_f64();
        run.bytes_before += done.bytes_sent.0.max(flight.sent);
        run.record = VmRecord {
            destination: Some(dst_name),
            start_s: Some(start),
            end_s: Some(end),
            migration_time_s: Some(end - start),
            downtime_s: done.downtime.map(|d| d.as_secs_f64()),
            rounds: Some(done.rounds),
            bytes_sent: Some(run.bytes_before),
            outcome: Outcome::Migrated,
            ..run.record.clone()
        };
        run.landed = Some(done.landed);
        // Even a VM "lost" to a power-off that completed first is saved.
        Ended {
            vm: VmId(vm),
            outcome: EndOutcome::Completed,
        }
    }

    /// `vm`'s migration failed or was cancelled: it runs on its source.
    fn fail(&mut self, vm: usize, failure: crate::Failure, now: Duration) -> Ended {
        let max_attempts = self.max_attempts;
        let destination = self.vms[vm]
            .flight()
            .map(|f| self.backend.fleet().host(f.destination).name.clone());
        let run = &mut self.vms[vm];
        let State::Flying(flight) = std::mem::replace(&mut run.state, State::Waiting) else {
            unreachable!("in flight");
        };
        self.failed_attempts.push(FailedAttempt {
            vm: run.record.name.clone(),
            destination,
            start_s: flight.started_at.as_secs_f64(),
            end_s: now.as_secs_f64(),
            reason: failure.reason.clone(),
        });
        // A cancelled migration may no longer know what it sent: keep the
        // most it was seen to send.
        run.bytes_before += failure.bytes_sent.0.max(flight.sent);
        run.record.bytes_sent = Some(run.bytes_before);
        let name = run.record.name.clone();
        let outcome = if flight.lost {
            run.state = State::Done;
            EndOutcome::Lost
        } else {
            if run.attempts >= max_attempts {
                run.state = State::Done;
                self.log(format!("{name}: giving up after {max_attempts} attempts"));
            }
            EndOutcome::Failed {
                reason: failure.reason,
            }
        };
        Ended {
            vm: VmId(vm),
            outcome,
        }
    }
}
