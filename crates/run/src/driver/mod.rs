//! The loop itself: one VM's state is a [`State`], its transitions are in
//! [`Driver::observe`] (a migration ends), [`Driver::act`] (one starts) and
//! [`Driver::power_offs`].
//!
//! This file holds the state and the tick (`drive`); `observe` the tick's
//! observations and a migration's end, `actions` the controller's actions
//! carried out, `power` power that changes, `journaling` the journal
//! written and read back.

mod actions;
mod journaling;
mod observe;
mod power;

use std::future::Future;
use std::time::Duration;

use evac_controller::{Controller, ControllerConfig, Ended, MigrationObs, Phase};
use evac_model::wall_clock::Timestamp;
use evac_model::{BitsPerSec, Bytes, BytesPerSec, HostId, MigrationParams, Site, VmId};
use evac_outcome::{reason, FailedAttempt, Outcome, RunResult, TimelinePoint, VmRecord};
use tokio::time::Instant;

use crate::backend::{Backend, Migration, Wake};
use crate::journal::{Entry, Journal};
use crate::power::PowerUpdate;
use crate::{
    log_to_stderr, FlightProgress, HostProgress, Landed, Log, RunOptions, RunOutput, RunProgress,
    STALL_PERIODS,
};
use power::next_update;

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
    /// When its bytes last moved (from its first progress report on).
    moved_at: Option<Duration>,
    /// Cancelled because its bytes stood still this long.
    stalled: Option<Duration>,
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
    /// A migration whose bytes stand still this long is cancelled (and
    /// retried by the controller).
    stall_after: Duration,
    vms: Vec<VmRun<B::Migration>>,
    host_tx: Vec<u64>,
    /// Attempts that failed or were cancelled, in the order they ended.
    failed_attempts: Vec<FailedAttempt>,
    /// Every decision, flushed before it is carried out.
    journal: Option<Journal>,
    /// A journal write failed: the run stops as on Ctrl-C.
    journal_failed: bool,
    /// Ends to report at the first tick (a resumed VM that could not be adopted).
    backlog: Vec<Ended>,
    /// Failures told to the controller only once their backoff has passed,
    /// so that its retry waits that long.
    delayed: Vec<(Duration, Ended)>,
    /// Each host's power-off as the run knows it now (from the start):
    /// the inventory's, then as changed during the run.
    deadlines: Vec<Option<Duration>>,
    /// Changes of power-offs, from the CLI (an edited inventory, a UPS).
    power_feed: Option<tokio::sync::mpsc::Receiver<PowerUpdate>>,
    /// Changes applied and not yet told to the controller.
    announce: Vec<(HostId, Option<Duration>)>,
    /// Each applied change, for the decisions of the host's VMs.
    power_notes: Vec<(HostId, evac_outcome::Decision)>,
    start: Instant,
    /// The same start on the wall clock (the result says it, so that a
    /// summary can print times of day).
    wall_start: Timestamp,
    wake: Wake,
    progress: Option<tokio::sync::watch::Sender<RunProgress>>,
    log: Log,
}

impl<B: Backend> Driver<B> {
    pub(crate) fn new(
        backend: B,
        policy: &str,
        config: &ControllerConfig,
        mut options: RunOptions,
    ) -> anyhow::Result<Self> {
        let replay = options.replay.take();
        let journal_path = options.journal.take();
        let wall_start = options.start.unwrap_or_else(Timestamp::now);
        // The loop's clock counts from the wall-clock start the backend
        // resolved the deadlines against, not from now: connecting to the
        // VMs took time already.
        let start = Instant::now()
            .checked_sub(evac_model::wall_clock::until(wall_start, Timestamp::now()))
            .unwrap_or_else(Instant::now);
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
        let mut driver = Driver {
            deadlines: fleet.hosts.iter().map(|h| h.power_off_at).collect(),
            power_feed: options.power.take(),
            announce: Vec::new(),
            power_notes: Vec::new(),
            host_tx: vec![0; fleet.hosts.len()],
            failed_attempts: Vec::new(),
            journal: None,
            journal_failed: false,
            backlog: Vec::new(),
            delayed: Vec::new(),
            vms,
            period: config.period.max(Duration::from_millis(10)),
            stall_after: options
                .stall_after
                .unwrap_or(config.period.max(Duration::from_millis(10)) * crate::STALL_AFTER_PERIODS),
            max_attempts: config.max_attempts,
            backend,
            start,
            wall_start,
            wake: Wake::default(),
            progress: options.progress,
            log: options.log.unwrap_or_else(log_to_stderr),
        };
        match (journal_path, replay) {
            (Some(path), Some(replay)) => {
                driver.journal = Some(Journal::open(&path)?);
                driver.resume(replay)?;
                let t_s = driver.t_s();
                driver.record(Entry::Resume { t_s });
            }
            (Some(path), None) => {
                driver.journal = Some(Journal::create(&path)?);
                let fleet = driver.backend.fleet();
                let header = Entry::Run {
                    started_unix_ms: u64::try_from(driver.wall_start.as_millisecond()).unwrap_or(0),
                    policy: policy.to_owned(),
                    vms: fleet.vms.iter().map(|v| v.name.clone()).collect(),
                    memory: fleet.vms.iter().map(|v| v.memory).collect(),
                };
                driver.record(header);
            }
            (None, Some(_)) => anyhow::bail!("resuming needs the run's journal"),
            (None, None) => {}
        }
        if driver.journal_failed {
            anyhow::bail!("cannot write the journal");
        }
        Ok(driver)
    }

    /// Seconds since the run (first) started.
    fn t_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
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
        let mut power_feed = self.power_feed.take();
        tokio::pin!(shutdown);
        loop {
            let mut periodic = false;
            tokio::select! {
                _ = interval.tick() => periodic = true,
                _ = wake.woken() => {}
                // News of the power is acted on at once, not at the next tick.
                Some(update) = next_update(&mut power_feed) => {
                    let now = self.start.elapsed();
                    let at = update.power_off_at.map(|at| at.resolve(self.wall_start));
                    self.change_power(&update.host, at, &update.by, now, true);
                }
                _ = &mut shutdown, if !stopping => {
                    self.log("shutting down: cancelling every migration in flight");
                    stopping = true;
                    for vm in 0..self.vms.len() {
                        self.cancel(vm).await;
                    }
                    self.publish(self.start.elapsed(), wan_rate, stopping, controller.window());
                }
            }
            if self.journal_failed && !stopping {
                // Decisions that cannot be journaled cannot be resumed: stop
                // as on Ctrl-C.
                stopping = true;
                for vm in 0..self.vms.len() {
                    self.cancel(vm).await;
                }
            }
            let now = self.start.elapsed();
            // Whatever else came in meanwhile.
            while let Some(update) = power_feed.as_mut().and_then(|feed| feed.try_recv().ok()) {
                let at = update.power_off_at.map(|at| at.resolve(self.wall_start));
                self.change_power(&update.host, at, &update.by, now, true);
            }
            self.power_offs(now).await;
            let mut observations = self.observe(now, periodic).await;
            observations.power_changes = std::mem::take(&mut self.announce);
            if !stopping {
                self.cancel_stalled(observations.now).await;
                let actions = controller.on_tick(&observations);
                // Nothing in flight and nothing started for many periods
                // while VMs wait (e.g. none fits any destination): stuck.
                let idle = actions.is_empty()
                    && self.delayed.is_empty()
                    && self.vms.iter().all(|v| v.flight().is_none());
                idle_periods = if idle {
                    idle_periods + usize::from(periodic)
                } else {
                    0
                };
                if idle_periods >= STALL_PERIODS {
                    self.log(format!(
                        "the controller started nothing for {STALL_PERIODS} periods; \
                         giving up on the VMs still waiting (reported not-migrated)"
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
                self.publish(now, wan_rate, stopping, controller.window());
            }
            let all_done = self.vms.iter().all(|v| matches!(v.state, State::Done));
            if in_flight == 0 && (stopping || all_done) {
                break;
            }
        }
        // Every VM still on its source says why: the run was interrupted,
        // or the controller left it.
        let why = if stopping {
            reason::INTERRUPTED
        } else {
            reason::GIVEN_UP
        };
        let fleet = self.backend.fleet();
        for (index, run) in self.vms.iter_mut().enumerate() {
            run.record.left(Outcome::NotMigrated, why);
            run.record.decisions = controller
                .explain(VmId(index))
                .into_iter()
                .map(|e| evac_outcome::Decision {
                    at_s: e.at_s,
                    decision: e.decision.to_owned(),
                    why: e.why,
                })
                .collect();
            // The news of its host's power while it was there.
            let host = fleet.vms[index].host;
            let until = run.record.end_s.unwrap_or(f64::INFINITY);
            let notes = self
                .power_notes
                .iter()
                .filter(|(h, note)| *h == host && note.at_s <= until)
                .map(|(_, note)| note.clone());
            run.record.decisions.extend(notes);
            run.record.decisions.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
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
        result.started_at = Some(self.wall_start.to_string());
        // The power-offs as they were in the end, changes included.
        for (record, deadline) in result.hosts.iter_mut().zip(&self.deadlines) {
            record.power_off_s = deadline.map(|d| d.as_secs_f64());
        }
        let t_s = self.t_s();
        self.record(Entry::Finish { t_s });
        if let Some(progress) = &self.progress {
            let last = progress.borrow().clone();
            progress.send_replace(RunProgress {
                elapsed: self.start.elapsed(),
                total: self.vms.len(),
                migrated: result.migrated,
                lost: result.vms.iter().filter(|v| v.outcome == Outcome::Lost).count(),
                not_migrated: result.vms.len()
                    - result.migrated
                    - result.vms.iter().filter(|v| v.outcome == Outcome::Lost).count(),
                in_flight: 0,
                waiting: 0,
                migrations: Vec::new(),
                // Nothing waits or flies any more.
                hosts: last
                    .hosts
                    .iter()
                    .map(|host| HostProgress {
                        vms_left: 0,
                        bytes_left: Bytes::ZERO,
                        ..host.clone()
                    })
                    .collect(),
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
    fn publish(&self, now: Duration, wan_throughput: BitsPerSec, stopping: bool, window: Option<usize>) {
        let Some(progress) = &self.progress else {
            return;
        };
        let fleet = self.backend.fleet();
        let mut snapshot = RunProgress {
            elapsed: now,
            total: self.vms.len(),
            wan_throughput,
            window,
            stopping,
            ..RunProgress::default()
        };
        // Source hosts by fleet index, for the per-host figures.
        let mut host_at: Vec<Option<usize>> = vec![None; fleet.hosts.len()];
        for (index, host) in fleet.hosts.iter().enumerate() {
            if host.site == Site::Source {
                host_at[index] = Some(snapshot.hosts.len());
                snapshot.hosts.push(HostProgress {
                    name: host.name.clone(),
                    power_off_in: self.deadlines[index].map(|at| at.saturating_sub(now)),
                    vms_left: 0,
                    bytes_left: Bytes::ZERO,
                });
            }
        }
        for (index, run) in self.vms.iter().enumerate() {
            let left = match &run.state {
                State::Flying(flight) => Some(
                    flight
                        .last_obs
                        .as_ref()
                        .map_or(fleet.vms[index].memory, |o| o.bytes_remaining),
                ),
                State::Waiting => Some(fleet.vms[index].memory),
                State::Done => None,
            };
            if let (Some(left), Some(host)) = (left, host_at[fleet.vms[index].host.0]) {
                let host = &mut snapshot.hosts[host];
                host.vms_left += 1;
                host.bytes_left = Bytes(host.bytes_left.0.saturating_add(left.0));
            }
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
                        dirty_rate: obs.map_or(BytesPerSec::ZERO, |o| o.dirty_rate),
                    });
                }
                State::Done if run.record.outcome == Outcome::Migrated => snapshot.migrated += 1,
                State::Done if run.record.outcome == Outcome::Lost => snapshot.lost += 1,
                State::Done => snapshot.not_migrated += 1,
                State::Waiting => snapshot.waiting += 1,
            }
        }
        progress.send_replace(snapshot);
    }
}
