//! The stage machine against a table written out here: every stage, every
//! event, allowed or refused.

use super::*;
use std::time::Instant;

use Happened as H;
use Stage as S;

fn every_event() -> Vec<Happened> {
    let at = Instant::now();
    vec![
        H::SlotsHeld,
        H::TurnCame { adopting: true },
        H::TurnCame { adopting: false },
        H::Paused { at },
        H::Called,
        H::Postcopy,
        H::CancelAsked,
        H::Returned,
        H::Found,
        H::Landed,
        H::Failed,
    ]
}

/// How each stage is reached from a new attempt.
fn path_to(stage: Stage) -> Vec<Happened> {
    let at = Instant::now();
    let starting = vec![H::SlotsHeld, H::TurnCame { adopting: false }];
    let precopy = [starting.clone(), vec![H::Called]].concat();
    match stage {
        S::WaitingForSlots => vec![],
        S::Staggered => vec![H::SlotsHeld],
        S::Adopting => vec![H::SlotsHeld, H::TurnCame { adopting: true }],
        S::Starting => starting,
        S::Precopy => precopy,
        S::Offline => [precopy, vec![H::Paused { at }]].concat(),
        S::Postcopy => [precopy, vec![H::Postcopy]].concat(),
        S::Cancelling => [precopy, vec![H::CancelAsked]].concat(),
        S::Landed => [precopy, vec![H::Landed]].concat(),
        S::Failed => vec![H::Failed],
    }
}

fn after(events: &[Happened]) -> Progress {
    let mut p = Progress::default();
    p.begin(Instant::now());
    for e in events {
        p.on(*e);
    }
    p
}

/// The allowed transitions, (from, event by name, to); any other event
/// leaves the stage as it is.
const ALLOWED: &[(Stage, &str, Stage)] = &[
    (S::WaitingForSlots, "SlotsHeld", S::Staggered),
    (S::WaitingForSlots, "CancelAsked", S::Failed),
    (S::WaitingForSlots, "Failed", S::Failed),
    (S::Staggered, "TurnCame(adopting)", S::Adopting),
    (S::Staggered, "TurnCame(starting)", S::Starting),
    (S::Staggered, "Failed", S::Failed),
    (S::Adopting, "Called", S::Precopy),
    (S::Adopting, "Landed", S::Landed),
    (S::Adopting, "Failed", S::Failed),
    (S::Starting, "Called", S::Precopy),
    (S::Starting, "Landed", S::Landed),
    (S::Starting, "Failed", S::Failed),
    (S::Precopy, "Paused", S::Offline),
    (S::Precopy, "Postcopy", S::Postcopy),
    (S::Precopy, "CancelAsked", S::Cancelling),
    (S::Precopy, "Landed", S::Landed),
    (S::Precopy, "Failed", S::Failed),
    (S::Offline, "Postcopy", S::Postcopy),
    (S::Offline, "CancelAsked", S::Cancelling),
    (S::Offline, "Landed", S::Landed),
    (S::Offline, "Failed", S::Failed),
    (S::Postcopy, "Landed", S::Landed),
    (S::Postcopy, "Failed", S::Failed),
    (S::Cancelling, "Postcopy", S::Postcopy),
    (S::Cancelling, "Landed", S::Landed),
    (S::Cancelling, "Failed", S::Failed),
];

fn name(event: &Happened) -> &'static str {
    match event {
        H::SlotsHeld => "SlotsHeld",
        H::TurnCame { adopting: true } => "TurnCame(adopting)",
        H::TurnCame { adopting: false } => "TurnCame(starting)",
        H::Paused { .. } => "Paused",
        H::Called => "Called",
        H::Postcopy => "Postcopy",
        H::CancelAsked => "CancelAsked",
        H::Returned => "Returned",
        H::Found => "Found",
        H::Landed => "Landed",
        H::Failed => "Failed",
    }
}

const EVERY_STAGE: [Stage; 10] = [
    S::WaitingForSlots,
    S::Staggered,
    S::Adopting,
    S::Starting,
    S::Precopy,
    S::Offline,
    S::Postcopy,
    S::Cancelling,
    S::Landed,
    S::Failed,
];

#[test]
fn every_stage_takes_the_events_of_the_table_and_no_other() {
    assert_eq!(Progress::default().stage(), S::WaitingForSlots);
    for from in EVERY_STAGE {
        let path = path_to(from);
        assert_eq!(after(&path).stage(), from, "the path to {from:?}");
        for event in every_event() {
            let wanted = ALLOWED
                .iter()
                .find(|(f, e, _)| *f == from && *e == name(&event))
                .map_or(from, |(_, _, to)| *to);
            let mut p = after(&path);
            p.on(event);
            assert_eq!(p.stage(), wanted, "{from:?} on {event:?}");
        }
    }
}

#[test]
fn a_pause_is_kept_whatever_the_stage_and_an_attempt_started_paused_is_offline() {
    let at = Instant::now();
    for from in EVERY_STAGE.into_iter().filter(|s| !s.is_over()) {
        let mut p = after(&path_to(from));
        p.on(H::Paused { at });
        assert_eq!(p.paused_at(), Some(at), "{from:?}");
    }
    // Asked while waiting for slots: the migration starts paused.
    let p = after(&[
        H::Paused { at },
        H::SlotsHeld,
        H::TurnCame { adopting: false },
        H::Called,
    ]);
    assert_eq!((p.stage(), p.phase()), (S::Offline, Phase::Offline));
    // An ended attempt takes no pause.
    let mut p = after(&path_to(S::Failed));
    p.on(H::Paused { at });
    assert_eq!(p.paused_at(), None);
}

#[test]
fn the_phase_is_postcopy_once_switched_offline_while_paused_else_precopy() {
    let at = Instant::now();
    let precopy = path_to(S::Precopy);
    let cases: [(Vec<Happened>, Phase); 5] = [
        (precopy.clone(), Phase::Precopy),
        (path_to(S::Offline), Phase::Offline),
        (path_to(S::Cancelling), Phase::Precopy),
        (
            [path_to(S::Offline), vec![H::CancelAsked]].concat(),
            Phase::Offline,
        ),
        (
            [path_to(S::Offline), vec![H::Postcopy, H::Paused { at }]].concat(),
            Phase::Postcopy,
        ),
    ];
    for (path, phase) in cases {
        assert_eq!(after(&path).phase(), phase, "{path:?}");
    }
}

#[test]
fn each_stage_time_is_written_once_at_its_event() {
    let job = |total: u64| JobProgress {
        active: true,
        total: evac_model::Bytes(total),
        ..JobProgress::default()
    };
    let mut p = after(&path_to(S::Starting));
    assert_eq!(p.stages(), Stages::default());
    p.on(H::Called);
    let called = p.stages().called.expect("marked");
    // No bytes to send yet: not seen.
    p.measured(job(0), BitsPerSec(0.0));
    assert_eq!(p.stages().bytes_seen, None);
    p.measured(job(10), BitsPerSec(8.0));
    let seen = p.stages().bytes_seen.expect("marked");
    assert_eq!(p.rate(), BitsPerSec(8.0));
    std::thread::sleep(Duration::from_millis(5));
    p.measured(job(20), BitsPerSec(8.0));
    p.on(H::Returned);
    p.on(H::Found);
    let found = p.stages().found.expect("marked");
    p.on(H::Found);
    let s = p.stages();
    assert_eq!(
        (s.called, s.bytes_seen, s.found),
        (Some(called), Some(seen), Some(found))
    );
    assert!(s.returned.is_some_and(|r| r >= seen + Duration::from_millis(5)));
    assert_eq!(p.job().map(|j| j.total.0), Some(20));
}
