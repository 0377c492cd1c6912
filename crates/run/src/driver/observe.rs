//! A tick's observations: every migration in flight observed at once, the
//! hosts' counters, and a migration's end (completed, or failed with its
//! backoff).

use std::time::Duration;

use evac_controller::{EndOutcome, Ended, MigrationObs, Observations, Phase};
use evac_model::{BitsPerSec, Bytes, BytesPerSec, Mode, VmId};
use evac_outcome::{reason, FailedAttempt, Outcome, VmRecord};
use tokio::time::timeout;

use crate::backend::{Backend, Migration, Observed};
use crate::journal::Entry;
use crate::{Landed, OBSERVE_TIMEOUT};

use super::{Driver, State};

impl<B: Backend> Driver<B> {
    /// Observes every migration in flight at once, ends those that ended,
    /// and reads the hosts' counters.
    pub(super) async fn observe(&mut self, now: Duration, periodic: bool) -> Observations {
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
    pub(super) fn complete(&mut self, vm: usize, done: crate::Completion<Landed<B>>, now: Duration) -> Ended {
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
    pub(super) fn backoff(&self, vm: usize) -> Option<Duration> {
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
    pub(super) fn fail(&mut self, vm: usize, failure: crate::Failure, now: Duration) -> Ended {
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
