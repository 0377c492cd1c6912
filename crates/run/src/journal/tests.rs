//! Tests of the journal: replaying entries by hand-written runs, and lines
//! written to disk read back (a torn last line ignored, a garbage one named).

use super::*;
use evac_outcome::Outcome;
use std::io::Write;
use std::time::Duration;

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
