//! The controller's actions carried out: starts, retunes, switches and
//! cancels, each bounded by `ACTION_TIMEOUT`, and stalled migrations
//! cancelled.

use std::time::Duration;

use evac_controller::Action;
use evac_model::{HostId, MigrationParams, Mode, Site, VmId};
use tokio::time::timeout;

use crate::backend::{Backend, Migration, StartRequest};
use crate::journal::Entry;
use crate::ACTION_TIMEOUT;

use super::{Driver, Flight, State};

impl<B: Backend> Driver<B> {
    /// Migrations whose bytes have not moved for `stall_after` (a hung
    /// destination, a dead path) are cancelled, so the controller retries
    /// them on a fresh destination rather than wait for ever.
    pub(super) async fn cancel_stalled(&mut self, now: Duration) {
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
    pub(super) async fn cancel(&mut self, vm: usize) {
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

    pub(super) fn report_action(
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

    pub(super) async fn act(&mut self, action: Action, now: Duration) {
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

    pub(super) fn start_migration(
        &mut self,
        vm: VmId,
        destination: HostId,
        params: MigrationParams,
        now: Duration,
    ) {
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
}
