//! The journal's side of the loop: each decision written before it is
//! carried out, and a resumed run's state read back from it.

use std::time::Duration;

use evac_controller::{EndOutcome, Ended};
use evac_model::{HostId, VmId};
use evac_outcome::Outcome;
use tokio::time::Instant;

use crate::backend::{Backend, StartRequest};
use crate::journal::{Entry, Replay};

use super::{Driver, Flight, State};

impl<B: Backend> Driver<B> {
    /// Appends to the journal, if any; on failure logs, marks the run to
    /// stop, and returns false (the action must not be carried out).
    /// Journals a switch of VM `vm`'s migration in flight (`entry` built
    /// from the time, the VM's name and the attempt); false when no
    /// migration is in flight or the journal refused it: the switch is not
    /// to be made.
    pub(super) fn journal_switch(&mut self, vm: usize, entry: fn(f64, String, u32) -> Entry) -> bool {
        let Some(flight) = self.vms[vm].flight() else {
            return false;
        };
        let entry = entry(self.t_s(), self.vms[vm].record.name.clone(), flight.attempt);
        self.record(entry)
    }

    pub(super) fn record(&mut self, entry: Entry) -> bool {
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
    pub(super) fn resume(&mut self, replay: Replay) -> anyhow::Result<()> {
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
}
