//! What the run loop's handle reads of a running attempt: its [`Stage`],
//! an enum whose transitions are all in [`Progress::on`] (as smoltcp's
//! sockets keep theirs), when we paused the guest, the job's last reading
//! and when the attempt passed each of its [`Stages`].

use std::time::{Duration, Instant};

use evac_controller::Phase;
use evac_model::BitsPerSec;

use crate::client::JobProgress;

/// Where an attempt stands. One stage at a time; every change goes
/// through [`Progress::on`], the one place the transitions are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(in crate::backend) enum Stage {
    /// Waiting for its hosts' slots (a migration out of its source, one
    /// into its destination, an ssh set-up to each where ssh is in the
    /// way): reported as starting, so never taken for stalled.
    #[default]
    WaitingForSlots,
    /// Its slots held, waiting for its turn: starts are [`STAGGER`] apart.
    ///
    /// [`STAGGER`]: crate::backend::STAGGER
    Staggered,
    /// After a restart of evac: looking for the migration an earlier evac
    /// started (landed, or still running on the source); never starts one.
    Adopting,
    /// Checking whether the domain may go to postcopy and making the
    /// migrate call.
    Starting,
    /// The migrate call made (or a running job adopted): precopy rounds,
    /// the guest running on its source.
    Precopy,
    /// The guest paused by us: the rest goes in one stop-and-copy, and it
    /// is resumed wherever the attempt ends.
    Offline,
    /// Switched to postcopy: the guest runs at its destination; no cancel,
    /// no going back.
    Postcopy,
    /// A cancel was asked for (the job aborted): however it ends short of
    /// completion, it was cancelled.
    Cancelling,
    /// The domain runs at a destination (resumed there if we paused it):
    /// the attempt's end.
    Landed,
    /// It failed or was cancelled; the domain runs on its source (resumed
    /// if we paused it): the attempt's end.
    Failed,
}

impl Stage {
    /// Whether the attempt has ended (its result follows at once).
    pub(in crate::backend) fn is_over(self) -> bool {
        matches!(self, Stage::Landed | Stage::Failed)
    }
}

/// What happens to an attempt, for [`Progress::on`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(in crate::backend) enum Happened {
    /// Every slot it waited for is held.
    SlotsHeld,
    /// Its turn to start came; `adopting`: it takes up an earlier evac's
    /// migration rather than starting one.
    TurnCame { adopting: bool },
    /// We paused the guest (mode offline, or a switch to offline), or it
    /// will be paused as its migration starts (asked while waiting).
    Paused { at: Instant },
    /// The migrate call was made, or a running job adopted.
    Called,
    /// libvirt accepted the switch to postcopy.
    Postcopy,
    /// A cancel was asked for (or the handle dropped).
    CancelAsked,
    /// The migrate call returned (or the adopted job ended).
    Returned,
    /// The domain was found running at its destination.
    Found,
    /// The attempt ended with the domain at a destination.
    Landed,
    /// The attempt ended with the domain on its source.
    Failed,
}

/// When an attempt passed each of its stages, from its task's start: what
/// a migration's time is made of beyond its bytes (docs/libvirt.md, "Where
/// a migration's time goes"). Logged per attempt with
/// `EVAC_LIBVIRT_STAGES=1`; the setup probe reports them. Each is written
/// once, by [`Progress::on`] (or [`Progress::measured`] for the first bytes).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Stages {
    /// The migrate call made (connected to the source, the domain looked
    /// up, its speed and downtime limit set): [`Stage::Precopy`] entered.
    pub called: Option<Duration>,
    /// The first poll (every 500 ms) that saw bytes to send: the
    /// destination's QEMU runs and the stream is up.
    pub bytes_seen: Option<Duration>,
    /// The migrate call returned (the destination's finish and the
    /// source's confirm done).
    pub returned: Option<Duration>,
    /// The domain found running at its destination.
    pub found: Option<Duration>,
}

impl Stages {
    /// One line: each stage's time from the attempt's start.
    pub fn describe(&self) -> String {
        let at =
            |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
        format!(
            "migrate call made at {}, bytes seen at {}, call returned at {}, found at its destination at {}",
            at(self.called),
            at(self.bytes_seen),
            at(self.returned),
            at(self.found)
        )
    }
}

/// What the handle may read of an attempt while it runs; written by the
/// attempt's task only.
#[derive(Debug, Default, Clone, Copy)]
pub(in crate::backend) struct Progress {
    stage: Stage,
    /// When we paused the guest: it is down from then until it runs at its
    /// destination (libvirt counts only the final switch), and it is
    /// resumed wherever the attempt ends. Kept whatever the stage.
    paused_at: Option<Instant>,
    /// The job's last reading (the handle reports it once it has bytes to
    /// send), and the rate since the one before.
    job: Option<JobProgress>,
    rate: BitsPerSec,
    /// When the attempt's task started, and its stages since.
    begun: Option<Instant>,
    stages: Stages,
}

impl Progress {
    /// The attempt's task starts: the stages' times count from `at`.
    pub(in crate::backend) fn begin(&mut self, at: Instant) {
        self.begun = Some(at);
    }

    /// The transitions: a stage changes here only. An event that does not
    /// apply to the stage leaves it (a cancel in postcopy, a second
    /// switch); an ended attempt stays ended.
    pub(in crate::backend) fn on(&mut self, happened: Happened) {
        use Stage::*;
        self.stage = match (self.stage, happened) {
            (stage, _) if stage.is_over() => stage,
            (stage, Happened::Paused { at }) => {
                self.paused_at = Some(at);
                match stage {
                    Precopy => Offline,
                    stage => stage,
                }
            }
            (WaitingForSlots, Happened::SlotsHeld) => Staggered,
            (Staggered, Happened::TurnCame { adopting: true }) => Adopting,
            (Staggered, Happened::TurnCame { adopting: false }) => Starting,
            (Adopting | Starting, Happened::Called) => {
                self.mark(|s| &mut s.called);
                if self.paused_at.is_some() {
                    Offline
                } else {
                    Precopy
                }
            }
            (Precopy | Offline | Cancelling, Happened::Postcopy) => Postcopy,
            (Precopy | Offline, Happened::CancelAsked) => Cancelling,
            // Nothing runs yet: a cancel ends it.
            (WaitingForSlots, Happened::CancelAsked) => Failed,
            (stage @ (Precopy | Offline | Postcopy | Cancelling), Happened::Returned) => {
                self.mark(|s| &mut s.returned);
                stage
            }
            (stage @ (Adopting | Starting | Precopy | Offline | Postcopy | Cancelling), Happened::Found) => {
                self.mark(|s| &mut s.found);
                stage
            }
            (Adopting | Starting | Precopy | Offline | Postcopy | Cancelling, Happened::Landed) => Landed,
            (_, Happened::Failed) => Failed,
            (stage, _) => stage,
        };
    }

    /// A reading of the job (while it runs) and the rate since the last.
    pub(in crate::backend) fn measured(&mut self, job: JobProgress, rate: BitsPerSec) {
        if job.total.0 > 0 {
            self.mark(|s| &mut s.bytes_seen);
        }
        self.job = Some(job);
        self.rate = rate;
    }

    /// Writes `stage`'s time once.
    fn mark(&mut self, stage: fn(&mut Stages) -> &mut Option<Duration>) {
        if let Some(begun) = self.begun {
            let slot = stage(&mut self.stages);
            if slot.is_none() {
                *slot = Some(begun.elapsed());
            }
        }
    }

    pub(in crate::backend) fn stage(&self) -> Stage {
        self.stage
    }

    pub(in crate::backend) fn paused_at(&self) -> Option<Instant> {
        self.paused_at
    }

    /// The job's last reading, if any.
    pub(in crate::backend) fn job(&self) -> Option<JobProgress> {
        self.job
    }

    pub(in crate::backend) fn rate(&self) -> BitsPerSec {
        self.rate
    }

    pub(in crate::backend) fn stages(&self) -> Stages {
        self.stages
    }

    /// The controller's phase: postcopy once switched, offline while the
    /// guest is paused by us, else precopy.
    pub(in crate::backend) fn phase(&self) -> Phase {
        match self.stage {
            Stage::Postcopy => Phase::Postcopy,
            _ if self.paused_at.is_some() => Phase::Offline,
            _ => Phase::Precopy,
        }
    }
}

#[cfg(test)]
mod tests;
