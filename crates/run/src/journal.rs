//! The journal: every decision of a run, one JSON line each, written and
//! flushed to disk (`fsync`) **before** it is carried out, so that after a
//! crash of evac (even `kill -9`) `--resume` knows what may be under way.
//!
//! ## Format
//!
//! `<run_dir>/journal.jsonl`; each line one object with an `event`:
//!
//! - `run`: the first line: the fleet (VM names and memory, in order),
//!   the policy, and `started_unix_ms`, the wall-clock origin of every
//!   `t_s` (seconds since the run started, across restarts);
//! - `resume`: a restart with `--resume`;
//! - `start`: `vm`, `destination`, `attempt`, `params`, and `backend`,
//!   what the backend needs to reconnect to this attempt (for QEMU the
//!   destination's QMP socket);
//! - `retune`, `offline`, `cancel`: `vm`, `attempt` (and the change);
//! - `end`: `vm`, `attempt`, the VM's `record` after it, `done` (no attempt
//!   will follow) and, for a failed attempt, `failed`;
//! - `lost`: a waiting VM whose host lost power;
//! - `power`: a source host's power-off changed during the run (`host`,
//!   `power_off_s` from the start or null for none, and `by`: the edited
//!   inventory or the UPS that said so); a resumed run keeps the last one
//!   of each host;
//! - `finish`: the run is over (the result was written or returned).
//!
//! A journal whose last line is not `finish` is unfinished: a plain run
//! refuses its run dir and says `--resume`. A torn last line (a crash while
//! writing it) is ignored: it was not flushed, so its action never ran.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use evac_model::{Bytes, MigrationParams};
use evac_outcome::{FailedAttempt, VmRecord};
use serde::{Deserialize, Serialize};

/// The journal's file name in a run dir.
pub const FILE_NAME: &str = "journal.jsonl";

/// The longest line read back: a start's backend blob is small; anything
/// longer is not ours.
const MAX_LINE: usize = 1 << 20;

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Entry {
    Run {
        started_unix_ms: u64,
        policy: String,
        vms: Vec<String>,
        memory: Vec<Bytes>,
    },
    Resume {
        t_s: f64,
    },
    Start {
        t_s: f64,
        vm: String,
        destination: String,
        attempt: u32,
        params: MigrationParams,
        backend: serde_json::Value,
    },
    Retune {
        t_s: f64,
        vm: String,
        attempt: u32,
        change: String,
        params: MigrationParams,
    },
    Offline {
        t_s: f64,
        vm: String,
        attempt: u32,
    },
    /// A switch to postcopy was asked for.
    Postcopy {
        t_s: f64,
        vm: String,
        attempt: u32,
    },
    Cancel {
        t_s: f64,
        vm: String,
        attempt: u32,
    },
    End {
        t_s: f64,
        vm: String,
        attempt: u32,
        record: VmRecord,
        done: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed: Option<FailedAttempt>,
    },
    Lost {
        t_s: f64,
        vm: String,
        record: VmRecord,
    },
    Power {
        t_s: f64,
        host: String,
        power_off_s: Option<f64>,
        by: String,
    },
    Finish {
        t_s: f64,
    },
}

/// An open journal, appended to.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    /// Starts a new journal at `path` (an earlier finished one is kept
    /// beside it as `journal-<unix ms>.jsonl`).
    pub fn create(path: &Path) -> anyhow::Result<Journal> {
        if path.exists() {
            let ms = unix_ms();
            let kept = path.with_file_name(format!("journal-{ms}.jsonl"));
            std::fs::rename(path, &kept)
                .map_err(|e| anyhow::anyhow!("cannot move {} aside: {e}", path.display()))?;
        }
        Self::open(path)
    }

    /// Appends to an existing journal (resuming). A torn last line (a crash
    /// while it was written) is cut off first, or the next entry would be
    /// glued to it.
    pub fn open(path: &Path) -> anyhow::Result<Journal> {
        let cannot = |e: std::io::Error| anyhow::anyhow!("cannot open the journal {}: {e}", path.display());
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(cannot)?;
        let whole = whole_lines_len(&file).map_err(cannot)?;
        if whole < file.metadata().map_err(cannot)?.len() {
            file.set_len(whole).map_err(cannot)?;
            file.sync_data().map_err(cannot)?;
        }
        Ok(Journal {
            file,
            path: path.to_owned(),
        })
    }

    /// Writes `entry` as one line and flushes it to disk.
    pub fn append(&mut self, entry: &Entry) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(entry).expect("journal entries serialize");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| anyhow::anyhow!("cannot write the journal {}: {e}", self.path.display()))
    }
}

/// The length of `file` up to and including its last newline.
fn whole_lines_len(file: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(0))?;
    let (mut offset, mut whole) = (0u64, 0u64);
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(whole);
        }
        if let Some(last) = buf.iter().rposition(|&b| b == b'\n') {
            whole = offset + last as u64 + 1;
        }
        let n = buf.len();
        offset += n as u64;
        reader.consume(n);
    }
}

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

/// Before a run: reads the journal at `path` and decides. A plain run
/// (`resume` false) refuses a run dir holding an unfinished run; `--resume`
/// needs one. Returns what to resume, if anything.
pub fn prepare(path: &Path, resume: bool) -> anyhow::Result<Option<Replay>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    match (inspect(path)?, resume) {
        (State::Unfinished(replay), true) => Ok(Some(replay)),
        (State::Unfinished(_), false) => anyhow::bail!(
            "run dir {} holds an unfinished run ({}): evac was stopped before it ended; \
             finish it with `evac run INVENTORY --resume`",
            dir.display(),
            path.display()
        ),
        (State::None | State::Finished, true) => anyhow::bail!(
            "--resume: no unfinished run in {} (no journal, or its run finished)",
            dir.display()
        ),
        (State::None | State::Finished, false) => Ok(None),
    }
}

/// Reads the journal at `path`.
pub fn inspect(path: &Path) -> anyhow::Result<State> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::None),
        Err(e) => anyhow::bail!("cannot read the journal {}: {e}", path.display()),
    };
    let mut reader = BufReader::new(file);
    let mut entries = Vec::new();
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        number += 1;
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| anyhow::anyhow!("cannot read the journal {}: {e}", path.display()))?;
        if read == 0 {
            break;
        }
        if line.len() > MAX_LINE {
            anyhow::bail!("{}:{number}: a line longer than {MAX_LINE} bytes", path.display());
        }
        if line.last() != Some(&b'\n') {
            // Torn by a crash while it was written: never flushed, never acted on.
            break;
        }
        let entry: Entry = serde_json::from_slice(&line)
            .map_err(|e| anyhow::anyhow!("{}:{number}: not a journal entry: {e}", path.display()))?;
        entries.push(entry);
    }
    replay(&entries).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
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

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use evac_outcome::Outcome;

    fn record(name: &str, outcome: Outcome, bytes: u64) -> VmRecord {
        VmRecord {
            outcome,
            bytes_sent: Some(bytes),
            destination: (outcome == Outcome::Migrated).then(|| "dst".to_owned()),
            ..VmRecord::unmoved(name.into(), "src".into())
        }
    }

    fn start(vm: &str, attempt: u32, t_s: f64) -> Entry {
        Entry::Start {
            t_s,
            vm: vm.into(),
            destination: "dst".into(),
            attempt,
            params: MigrationParams::default(),
            backend: serde_json::json!({ "qmp": format!("/run/dst-{vm}-{attempt}.qmp") }),
        }
    }

    fn run_header() -> Entry {
        Entry::Run {
            started_unix_ms: 1_000,
            policy: "sequential".into(),
            vms: vec!["a".into(), "b".into(), "c".into()],
            memory: vec![Bytes::mib(64); 3],
        }
    }

    /// a migrated, b failed once and is in flight again (offline), c waits.
    fn entries() -> Vec<Entry> {
        let failed = FailedAttempt {
            vm: "b".into(),
            destination: Some("dst".into()),
            start_s: 2.0,
            end_s: 3.0,
            reason: "destination QEMU exited".into(),
        };
        vec![
            run_header(),
            start("a", 1, 0.5),
            Entry::End {
                t_s: 1.5,
                vm: "a".into(),
                attempt: 1,
                record: record("a", Outcome::Migrated, 70),
                done: true,
                failed: None,
            },
            start("b", 1, 2.0),
            Entry::End {
                t_s: 3.0,
                vm: "b".into(),
                attempt: 1,
                record: record("b", Outcome::Lost, 10),
                done: false,
                failed: Some(failed),
            },
            start("b", 2, 3.5),
            Entry::Offline {
                t_s: 4.0,
                vm: "b".into(),
                attempt: 2,
            },
        ]
    }

    #[test]
    fn replay_says_what_is_done_in_flight_and_waiting() {
        let State::Unfinished(replay) = replay(&entries()).unwrap() else {
            panic!("unfinished expected")
        };
        assert_eq!(replay.started_unix_ms, 1_000);
        let [a, b, c] = &replay.states[..] else { panic!() };
        assert!(a.done && a.in_flight.is_none());
        assert_eq!(a.record.as_ref().unwrap().outcome, Outcome::Migrated);
        assert!(!b.done);
        assert_eq!(b.attempts, 2);
        let flight = b.in_flight.as_ref().unwrap();
        assert_eq!((flight.attempt, flight.started_s), (2, 3.5));
        assert_eq!(flight.params.mode, evac_model::Mode::Offline);
        assert_eq!(flight.backend["qmp"], "/run/dst-b-2.qmp");
        assert_eq!(b.record.as_ref().unwrap().bytes_sent, Some(10));
        assert_eq!(
            *c,
            VmReplay {
                record: None,
                attempts: 0,
                done: false,
                in_flight: None
            }
        );
        assert_eq!(replay.failed_attempts.len(), 1);
    }

    /// Each host keeps its last change, in the order of the last changes;
    /// null is "no power-off any more".
    #[test]
    fn replay_keeps_each_hosts_last_power_off() {
        let power = |t_s: f64, host: &str, power_off_s: Option<f64>| Entry::Power {
            t_s,
            host: host.into(),
            power_off_s,
            by: "inventory".into(),
        };
        let mut entries = entries();
        entries.push(power(4.0, "s1", Some(600.0)));
        entries.push(power(5.0, "s2", Some(60.0)));
        entries.push(power(6.0, "s1", None));
        let State::Unfinished(replayed) = replay(&entries).unwrap() else {
            panic!("unfinished expected")
        };
        let last: Vec<_> = replayed
            .power
            .iter()
            .map(|p| (p.host.as_str(), p.power_off_at, p.t_s))
            .collect();
        assert_eq!(
            last,
            vec![("s2", Some(Duration::from_secs(60)), 5.0), ("s1", None, 6.0)]
        );
        entries.push(power(7.0, "s1", Some(-1.0)));
        assert!(replay(&entries).unwrap_err().contains("power_off_s"));
    }

    #[test]
    fn a_finished_journal_or_none_resumes_nothing() {
        let mut done = entries();
        done.push(Entry::Finish { t_s: 9.0 });
        assert_eq!(replay(&done).unwrap(), State::Finished);
        assert_eq!(replay(&[]).unwrap(), State::None);
        let err = replay(&entries()[1..]).unwrap_err();
        assert!(err.contains("line 1") && err.contains("`run`"), "{err}");
    }

    #[test]
    fn written_lines_read_back_and_a_torn_last_line_is_ignored() {
        let dir = std::env::temp_dir().join(format!("evac-journal-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        let mut journal = Journal::create(&path).unwrap();
        for entry in entries() {
            journal.append(&entry).unwrap();
        }
        // A crash while writing: half a line, never flushed as a whole.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"event":"end","t_s":5.0,"vm":"b""#)
            .unwrap();
        let State::Unfinished(replayed) = inspect(&path).unwrap() else {
            panic!("unfinished expected")
        };
        assert!(replayed.states[1].in_flight.is_some());
        // A plain run refuses; --resume takes it up.
        let err = prepare(&path, false).unwrap_err().to_string();
        assert!(err.contains("--resume"), "{err}");
        assert!(prepare(&path, true).unwrap().is_some());
        // A finished journal is moved aside by the next run.
        let mut journal = Journal::open(&path).unwrap();
        journal.append(&Entry::Finish { t_s: 9.0 }).unwrap();
        let err = prepare(&path, true).unwrap_err().to_string();
        assert!(err.contains("no unfinished run"), "{err}");
        assert!(prepare(&path, false).unwrap().is_none());
        Journal::create(&path).unwrap();
        assert_eq!(inspect(&path).unwrap(), State::None);
        let kept = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(kept, 2, "the new journal and the finished one kept aside");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_garbage_line_names_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("evac-journal-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        let mut text = serde_json::to_string(&run_header()).unwrap();
        text += "\nnot json\n";
        std::fs::write(&path, text).unwrap();
        let err = inspect(&path).unwrap_err().to_string();
        assert!(err.contains("journal.jsonl:2:"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
