//! The state a journal's entries leave ([`State`], [`Replay`]): per VM its
//! record, its attempts, whether it is done and the attempt that may be under
//! way; the failed attempts and each host's last power-off. What `--resume`
//! starts from.

use std::time::Duration;

use evac_model::{Bytes, MigrationParams};
use evac_outcome::{FailedAttempt, VmRecord};

use super::{unix_ms, Entry};

/// What a run dir's journal says.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// No journal.
    None,
    /// The last run finished.
    Finished,
    /// A run that did not finish: what it did, to resume from.
    Unfinished(Replay),
}

/// An unfinished run, replayed from its journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub started_unix_ms: u64,
    pub vms: Vec<String>,
    pub memory: Vec<Bytes>,
    /// Per VM, in order.
    pub states: Vec<VmReplay>,
    pub failed_attempts: Vec<FailedAttempt>,
    /// Each source host's power-off as last changed during the run, in
    /// the order of the changes.
    pub power: Vec<PowerChanged>,
}

/// A `power` entry: at `t_s`, `by` said that `host` loses power at
/// `power_off_at` from the start (`None`: not at all).
#[derive(Debug, Clone, PartialEq)]
pub struct PowerChanged {
    pub t_s: f64,
    pub host: String,
    pub power_off_at: Option<Duration>,
    pub by: String,
}

impl Replay {
    /// Time since the run first started.
    pub fn elapsed(&self) -> Duration {
        Duration::from_millis(unix_ms().saturating_sub(self.started_unix_ms))
    }

    /// When the run first started, on the wall clock.
    pub fn start(&self) -> evac_model::wall_clock::Timestamp {
        let ms = i64::try_from(self.started_unix_ms).unwrap_or(i64::MAX);
        evac_model::wall_clock::Timestamp::from_millisecond(ms)
            .unwrap_or(evac_model::wall_clock::Timestamp::MAX)
    }
}

/// One VM, as the journal leaves it.
#[derive(Debug, Clone, PartialEq)]
pub struct VmReplay {
    /// Its record as of its last `end` (or unmoved).
    pub record: Option<VmRecord>,
    /// Attempts made, the one in flight included.
    pub attempts: u32,
    /// No attempt will follow (migrated, lost, given up).
    pub done: bool,
    /// An attempt started and not ended: it may be under way.
    pub in_flight: Option<InFlight>,
}

/// An attempt the journal shows started and not ended.
#[derive(Debug, Clone, PartialEq)]
pub struct InFlight {
    pub attempt: u32,
    pub destination: String,
    pub started_s: f64,
    pub params: MigrationParams,
    pub backend: serde_json::Value,
}

/// The state `entries` leave.
pub fn replay(entries: &[Entry]) -> Result<State, String> {
    let Some(first) = entries.first() else {
        return Ok(State::None);
    };
    if matches!(entries.last(), Some(Entry::Finish { .. })) {
        return Ok(State::Finished);
    }
    let Entry::Run {
        started_unix_ms,
        vms,
        memory,
        ..
    } = first
    else {
        return Err("line 1: expected the `run` entry".into());
    };
    let mut states = vec![
        VmReplay {
            record: None,
            attempts: 0,
            done: false,
            in_flight: None,
        };
        vms.len()
    ];
    let mut failed_attempts = Vec::new();
    let mut power: Vec<PowerChanged> = Vec::new();
    let index = |name: &str, line: usize| {
        vms.iter()
            .position(|v| v == name)
            .ok_or_else(|| format!("line {line}: no VM `{name}` in this run"))
    };
    for (i, entry) in entries.iter().enumerate().skip(1) {
        let line = i + 1;
        match entry {
            Entry::Run { .. } => return Err(format!("line {line}: a second `run` entry")),
            Entry::Resume { .. } | Entry::Finish { .. } => {}
            Entry::Start {
                t_s,
                vm,
                destination,
                attempt,
                params,
                backend,
            } => {
                let state = &mut states[index(vm, line)?];
                state.attempts = *attempt;
                state.in_flight = Some(InFlight {
                    attempt: *attempt,
                    destination: destination.clone(),
                    started_s: *t_s,
                    params: *params,
                    backend: backend.clone(),
                });
            }
            Entry::Retune {
                vm, attempt, params, ..
            } => {
                if let Some(flight) = &mut states[index(vm, line)?].in_flight {
                    if flight.attempt == *attempt {
                        flight.params = *params;
                    }
                }
            }
            Entry::Offline { vm, attempt, .. } => {
                if let Some(flight) = &mut states[index(vm, line)?].in_flight {
                    if flight.attempt == *attempt {
                        flight.params.mode = evac_model::Mode::Offline;
                    }
                }
            }
            Entry::Postcopy { vm, attempt, .. } => {
                if let Some(flight) = &mut states[index(vm, line)?].in_flight {
                    if flight.attempt == *attempt {
                        flight.params.mode = evac_model::Mode::Postcopy;
                    }
                }
            }
            Entry::Cancel { .. } => {}
            Entry::End {
                vm,
                attempt,
                record,
                done,
                failed,
                ..
            } => {
                let state = &mut states[index(vm, line)?];
                if state.in_flight.as_ref().is_some_and(|f| f.attempt == *attempt) {
                    state.in_flight = None;
                }
                state.record = Some(record.clone());
                state.done = *done;
                failed_attempts.extend(failed.clone());
            }
            Entry::Power {
                t_s,
                host,
                power_off_s,
                by,
            } => {
                let at = power_off_s
                    .map(|s| {
                        Duration::try_from_secs_f64(s)
                            .map_err(|_| format!("line {line}: `power_off_s` {s} is not a time"))
                    })
                    .transpose()?;
                power.retain(|p| p.host != *host);
                power.push(PowerChanged {
                    t_s: *t_s,
                    host: host.clone(),
                    power_off_at: at,
                    by: by.clone(),
                });
            }
            Entry::Lost { vm, record, .. } => {
                let state = &mut states[index(vm, line)?];
                state.record = Some(record.clone());
                state.done = true;
            }
        }
    }
    Ok(State::Unfinished(Replay {
        started_unix_ms: *started_unix_ms,
        vms: vms.clone(),
        memory: memory.clone(),
        states,
        failed_attempts,
        power,
    }))
}
