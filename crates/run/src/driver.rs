//! The loop itself: one VM's state is a [`State`], its transitions are in
//! [`Driver::observe`] (a migration ends), [`Driver::act`] (one starts) and
//! [`Driver::power_offs`].

use std::future::Future;
use std::time::Duration;

use evac_controller::{
    Action, Controller, ControllerConfig, EndOutcome, Ended, MigrationObs, Observations, Phase,
};
use evac_model::wall_clock::Timestamp;
use evac_model::{BitsPerSec, Bytes, BytesPerSec, HostId, MigrationParams, Mode, Site, VmId};
use evac_outcome::{reason, FailedAttempt, Outcome, RunResult, TimelinePoint, VmRecord};
use tokio::time::{timeout, Instant};

use crate::backend::{Backend, Migration, Observed, StartRequest, Wake};
use crate::journal::{Entry, Journal, Replay};
use crate::power::PowerUpdate;
use crate::{
    log_to_stderr, FlightProgress, HostProgress, Landed, Log, RunOptions, RunOutput, RunProgress,
    ACTION_TIMEOUT, OBSERVE_TIMEOUT, STALL_PERIODS,
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

    /// Appends to the journal, if any; on failure logs, marks the run to
    /// stop, and returns false (the action must not be carried out).
    /// Journals a switch of VM `vm`'s migration in flight (`entry` built
    /// from the time, the VM's name and the attempt); false when no
    /// migration is in flight or the journal refused it: the switch is not
    /// to be made.
    fn journal_switch(&mut self, vm: usize, entry: fn(f64, String, u32) -> Entry) -> bool {
        let Some(flight) = self.vms[vm].flight() else {
            return false;
        };
        let entry = entry(self.t_s(), self.vms[vm].record.name.clone(), flight.attempt);
        self.record(entry)
    }

    fn record(&mut self, entry: Entry) -> bool {
        let Some(journal) = &mut self.journal else {
            return true;
        };
        match journal.append(&entry) {
            Ok(()) => true,
            Err(e) => {
                if !self.journal_failed {
                    self.log(format!("{e:#}; stopping the run"));
                }
                self.journal_failed = true;
                false
            }
        }
    }

    /// Takes up an unfinished run where its journal leaves it: the clock
    /// goes on from its start, finished VMs keep their records, attempts
    /// in flight are adopted (never started again).
    fn resume(&mut self, replay: Replay) -> anyhow::Result<()> {
        self.start = Instant::now()
            .checked_sub(replay.elapsed())
            .unwrap_or_else(Instant::now);
        self.wall_start = replay.start();
        // The power-offs as last changed: the controller hears of them at
        // the first tick, as any news.
        for change in &replay.power {
            let by = format!("{} (before the restart)", change.by);
            let at = Duration::try_from_secs_f64(change.t_s).unwrap_or_default();
            self.change_power(&change.host, change.power_off_at, &by, at, false);
        }
        self.failed_attempts = replay.failed_attempts.clone();
        for vm in 0..self.vms.len() {
            let name = self.vms[vm].record.name.clone();
            let Some(at) = replay.vms.iter().position(|n| n == &name) else {
                anyhow::bail!("vm `{name}` is not in the run being resumed: the inventory changed");
            };
            let state = &replay.states[at];
            let run = &mut self.vms[vm];
            if let Some(record) = &state.record {
                run.record = record.clone();
                run.bytes_before = record.bytes_sent.unwrap_or(0);
            }
            run.attempts = state.attempts;
            if state.done {
                run.state = State::Done;
                continue;
            }
            let Some(flight) = &state.in_flight else {
                continue;
            };
            let fleet = self.backend.fleet();
            let Some(destination) = fleet.hosts.iter().position(|h| h.name == flight.destination) else {
                anyhow::bail!(
                    "vm `{name}` was migrating to `{}`, not in the inventory any more",
                    flight.destination
                );
            };
            let destination = HostId(destination);
            let request = StartRequest {
                vm: VmId(vm),
                attempt: flight.attempt,
                destination,
                params: flight.params,
                wake: self.wake.clone(),
            };
            match self.backend.adopt(request, &flight.backend) {
                Some(handle) => {
                    self.log(format!(
                        "{name}: taking up attempt {} to {} again",
                        flight.attempt, flight.destination
                    ));
                    self.vms[vm].state = State::Flying(Box::new(Flight {
                        handle,
                        attempt: flight.attempt,
                        destination,
                        started_at: Duration::from_secs_f64(flight.started_s.max(0.0)),
                        params: flight.params,
                        sent: 0,
                        last_obs: None,
                        lost: false,
                        moved_at: None,
                        stalled: None,
                    }));
                }
                None => {
                    self.log(format!(
                        "{name}: the backend cannot take up its attempt in flight; left alone"
                    ));
                    self.vms[vm].state = State::Done;
                    self.vms[vm].record.left(
                        Outcome::NotMigrated,
                        "its attempt in flight could not be taken up after a restart",
                    );
                    self.backlog.push(Ended {
                        vm: VmId(vm),
                        outcome: EndOutcome::Lost,
                    });
                }
            }
        }
        Ok(())
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

    /// VMs whose source host lost power: lost, left alone (a migration in
    /// flight is cancelled).
    async fn power_offs(&mut self, now: Duration) {
        for vm in 0..self.vms.len() {
            let fleet = self.backend.fleet();
            let Some(at) = self.deadlines[fleet.vms[vm].host.0] else {
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
                    run.record.left(Outcome::Lost, reason::POWER_OFF);
                    let entry = Entry::Lost {
                        t_s: now.as_secs_f64(),
                        vm: run.record.name.clone(),
                        record: run.record.clone(),
                    };
                    self.record(entry);
                }
            }
        }
    }

    /// Applies news of `host`'s power (`power_off_at` from the start, `by`
    /// whom), at `now`: journaled when `journal` (a resumed run's replayed
    /// news is in the journal already), logged, and told to the controller
    /// at the next tick. Ignored when it changes nothing, when the host is
    /// unknown or not a source, and when it has lost power already (a
    /// change after the fact saves nothing: the controller does the same).
    fn change_power(
        &mut self,
        host: &str,
        power_off_at: Option<Duration>,
        by: &str,
        now: Duration,
        journal: bool,
    ) {
        let fleet = self.backend.fleet();
        let Some(id) = fleet.hosts.iter().position(|h| h.name == host) else {
            self.log(format!(
                "power news for `{host}` from {by}: no such host; ignored"
            ));
            return;
        };
        if fleet.hosts[id].site != Site::Source {
            self.log(format!(
                "power news for `{host}` from {by}: not a source host; ignored"
            ));
            return;
        }
        let was = self.deadlines[id];
        if was == power_off_at {
            return;
        }
        if was.is_some_and(|t| t <= now) && journal {
            self.log(format!(
                "{host}: power-off moved by {by}, but it lost power already at {}; ignored",
                hms(was.unwrap_or_default())
            ));
            return;
        }
        let t_s = now.as_secs_f64();
        if journal {
            let entry = Entry::Power {
                t_s,
                host: host.to_owned(),
                power_off_s: power_off_at.map(|d| d.as_secs_f64()),
                by: by.to_owned(),
            };
            if !self.record(entry) {
                return;
            }
        }
        let describe = |at: Option<Duration>| match at {
            Some(at) => format!("{} ({:.1} s)", hms(at), at.as_secs_f64()),
            None => "none".to_owned(),
        };
        let why = format!(
            "{host}'s power-off is now {} (was {}), from {by}",
            describe(power_off_at),
            describe(was)
        );
        self.log(&why);
        self.deadlines[id] = power_off_at;
        self.announce.retain(|(h, _)| h.0 != id);
        self.announce.push((HostId(id), power_off_at));
        self.power_notes.push((
            HostId(id),
            evac_outcome::Decision {
                at_s: t_s,
                decision: "power".to_owned(),
                why,
            },
        ));
    }

    /// Migrations whose bytes have not moved for `stall_after` (a hung
    /// destination, a dead path) are cancelled, so the controller retries
    /// them on a fresh destination rather than wait for ever.
    async fn cancel_stalled(&mut self, now: Duration) {
        for vm in 0..self.vms.len() {
            let Some(flight) = self.vms[vm].flight_mut() else {
                continue;
            };
            let Some(moved_at) = flight.moved_at else {
                continue;
            };
            let still = now.saturating_sub(moved_at);
            if flight.stalled.is_some() || flight.lost || still < self.stall_after {
                continue;
            }
            flight.stalled = Some(still);
            let attempt = flight.attempt;
            self.log(format!(
                "{}: attempt {attempt} stalled: no bytes moved for {:.1} s; cancelling it to retry",
                self.vms[vm].record.name,
                still.as_secs_f64()
            ));
            self.cancel(vm).await;
        }
    }

    /// Asks the backend to cancel `vm`'s migration, if it has one.
    async fn cancel(&mut self, vm: usize) {
        let Some(flight) = self.vms[vm].flight() else {
            return;
        };
        let entry = Entry::Cancel {
            t_s: self.t_s(),
            vm: self.vms[vm].record.name.clone(),
            attempt: flight.attempt,
        };
        // Cancelling is always safe: done even if the journal fails.
        self.record(entry);
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
                let t_s = self.t_s();
                let name = self.vms[vm.0].record.name.clone();
                let Some(flight) = self.vms[vm.0].flight_mut() else {
                    return;
                };
                change.apply(&mut flight.params);
                let entry = Entry::Retune {
                    t_s,
                    vm: name,
                    attempt: flight.attempt,
                    change: format!("{change:?}"),
                    params: flight.params,
                };
                if !self.record(entry) {
                    return;
                }
                let Some(flight) = self.vms[vm.0].flight_mut() else {
                    return;
                };
                let outcome = timeout(ACTION_TIMEOUT, flight.handle.retune(change)).await;
                self.report_action(vm.0, &format!("retune {change:?}"), outcome);
            }
            Action::SwitchToOffline { vm } => {
                if !self.journal_switch(vm.0, |t_s, vm, attempt| Entry::Offline { t_s, vm, attempt }) {
                    return;
                }
                self.vms[vm.0].record.mode = Some(Mode::Offline);
                let Some(flight) = self.vms[vm.0].flight_mut() else {
                    return;
                };
                flight.params.mode = Mode::Offline;
                let outcome = timeout(ACTION_TIMEOUT, flight.handle.switch_to_offline()).await;
                self.report_action(vm.0, "switch to offline", outcome);
            }
            Action::SwitchToPostcopy { vm } => {
                if !self.journal_switch(vm.0, |t_s, vm, attempt| Entry::Postcopy { t_s, vm, attempt }) {
                    return;
                }
                let Some(flight) = self.vms[vm.0].flight_mut() else {
                    return;
                };
                let outcome = timeout(ACTION_TIMEOUT, flight.handle.switch_to_postcopy()).await;
                // Only a switch the backend took makes it postcopy; a
                // refused one stays in precopy (the controller sees so).
                if matches!(outcome, Ok(Ok(()))) {
                    flight.params.mode = Mode::Postcopy;
                    self.vms[vm.0].record.mode = Some(Mode::Postcopy);
                }
                self.report_action(vm.0, "switch to postcopy", outcome);
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
        let request = StartRequest {
            vm,
            attempt,
            destination,
            params,
            wake: self.wake.clone(),
        };
        let entry = Entry::Start {
            t_s: now.as_secs_f64(),
            vm: run.record.name.clone(),
            destination: host.name.clone(),
            attempt,
            params,
            backend: self.backend.reconnect_info(&request),
        };
        if !self.record(entry) {
            return;
        }
        let handle = self.backend.start(request);
        let run = &mut self.vms[vm.0];
        run.attempts = attempt;
        run.record.mode = Some(params.mode);
        run.record.connections = Some(params.connections.get());
        run.record.compression = Some(params.compression);
        run.state = State::Flying(Box::new(Flight {
            handle,
            attempt,
            destination,
            started_at: now,
            params,
            sent: 0,
            last_obs: None,
            lost: false,
            moved_at: None,
            stalled: None,
        }));
    }

    /// Observes every migration in flight at once, ends those that ended,
    /// and reads the hosts' counters.
    async fn observe(&mut self, now: Duration, periodic: bool) -> Observations {
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
        let mut ended = std::mem::take(&mut self.backlog);
        let seen_now = self.start.elapsed().max(now);
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(at, _)| *at <= seen_now);
        self.delayed = later;
        ended.extend(due.into_iter().map(|(_, end)| end));
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
            let (memory, source) = {
                let vm = &self.backend.fleet().vms[index];
                (vm.memory, vm.host)
            };
            match answer {
                Some(Observed::Completed(done)) => ended.push(self.complete(index, done, seen)),
                Some(Observed::Failed(failure)) => {
                    let end = self.fail(index, failure, seen);
                    match self.backoff(index) {
                        Some(delay) => self.delayed.push((seen + delay, end)),
                        None => ended.push(end),
                    }
                }
                answer => {
                    let flight = self.vms[index].flight_mut().expect("in flight");
                    let obs = match answer {
                        Some(Observed::Running(p)) => {
                            if flight.moved_at.is_none() || p.bytes_sent.0 > flight.sent {
                                flight.moved_at = Some(seen);
                            }
                            flight.sent = flight.sent.max(p.bytes_sent.0);
                            MigrationObs {
                                vm: VmId(index),
                                source,
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
                                source,
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
            periodic,
            // Announced by the run loop (an edited inventory, a UPS): none
            // yet.
            power_changes: Vec::new(),
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
            reason: None,
            ..run.record.clone()
        };
        run.landed = Some(done.landed);
        let entry = Entry::End {
            t_s: end,
            vm: run.record.name.clone(),
            attempt: flight.attempt,
            record: run.record.clone(),
            done: true,
            failed: None,
        };
        self.record(entry);
        // Even a VM "lost" to a power-off that completed first is saved.
        Ended {
            vm: VmId(vm),
            outcome: EndOutcome::Completed,
        }
    }

    /// How long a VM whose attempt just failed waits before the controller
    /// may retry it: doubling with each failure, capped; `None` when it
    /// will not be retried.
    fn backoff(&self, vm: usize) -> Option<Duration> {
        let run = &self.vms[vm];
        if !matches!(run.state, State::Waiting) {
            return None;
        }
        let doublings = run.attempts.saturating_sub(1).min(16);
        let delay = (crate::RETRY_BACKOFF * 2u32.pow(doublings)).min(crate::RETRY_BACKOFF_CAP);
        self.log(format!(
            "{}: retrying in {:.0} s (attempt {} failed)",
            run.record.name,
            delay.as_secs_f64(),
            run.attempts
        ));
        Some(delay)
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
        let mut failure = failure;
        if let Some(still) = flight.stalled {
            failure.reason = format!("stalled: no bytes moved for {:.1} s", still.as_secs_f64());
        }
        let failed = FailedAttempt {
            vm: run.record.name.clone(),
            destination,
            start_s: flight.started_at.as_secs_f64(),
            end_s: now.as_secs_f64(),
            reason: failure.reason.clone(),
        };
        self.failed_attempts.push(failed.clone());
        // A cancelled migration may no longer know what it sent: keep the
        // most it was seen to send.
        run.bytes_before += failure.bytes_sent.0.max(flight.sent);
        run.record.bytes_sent = Some(run.bytes_before);
        let name = run.record.name.clone();
        let outcome = if flight.lost {
            run.state = State::Done;
            run.record.left(Outcome::Lost, reason::POWER_OFF);
            EndOutcome::Lost
        } else {
            if run.attempts >= max_attempts {
                run.state = State::Done;
                run.record.left(
                    Outcome::NotMigrated,
                    &format!("{}: {}", reason::ATTEMPTS_EXHAUSTED, failure.reason),
                );
                self.log(format!("{name}: giving up after {max_attempts} attempts"));
            }
            EndOutcome::Failed {
                reason: failure.reason,
            }
        };
        let run = &self.vms[vm];
        let entry = Entry::End {
            t_s: now.as_secs_f64(),
            vm: run.record.name.clone(),
            attempt: flight.attempt,
            record: run.record.clone(),
            done: matches!(run.state, State::Done),
            failed: Some(failed),
        };
        self.record(entry);
        Ended {
            vm: VmId(vm),
            outcome,
        }
    }
}

/// The next change of the feed; pending for ever without one (or once it
/// is closed), so that the loop's `select!` waits on the rest.
async fn next_update(feed: &mut Option<tokio::sync::mpsc::Receiver<PowerUpdate>>) -> Option<PowerUpdate> {
    match feed {
        Some(rx) => match rx.recv().await {
            Some(update) => Some(update),
            None => {
                *feed = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// `h:mm:ss`.
fn hms(t: Duration) -> String {
    let s = t.as_secs_f64().round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
