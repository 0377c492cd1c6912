//! Power that changes during a run: power-offs reached, and the news of
//! an edited inventory or a UPS applied (journaled, logged, told to the
//! controller).

use std::time::Duration;

use evac_model::{HostId, Site};
use evac_outcome::{reason, Outcome};

use crate::backend::Backend;
use crate::journal::Entry;
use crate::power::PowerUpdate;

use super::{Driver, State};

impl<B: Backend> Driver<B> {
    /// VMs whose source host lost power: lost, left alone (a migration in
    /// flight is cancelled).
    pub(super) async fn power_offs(&mut self, now: Duration) {
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
    pub(super) fn change_power(
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
}

/// The next change of the feed; pending for ever without one (or once it
/// is closed), so that the loop's `select!` waits on the rest.
pub(super) async fn next_update(
    feed: &mut Option<tokio::sync::mpsc::Receiver<PowerUpdate>>,
) -> Option<PowerUpdate> {
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
pub(super) fn hms(t: Duration) -> String {
    let s = t.as_secs_f64().round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
