//! What the main loop reads of a running attempt: its stage, an enum whose
//! transitions are all in [`Progress::on`] (as smoltcp's sockets keep
//! theirs), whether we paused the source, and whether it may go to
//! postcopy.

/// Whether an attempt can switch to postcopy.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum PostcopyReady {
    /// Not known yet: the attempt has not reached `migrate`.
    #[default]
    Pending,
    /// `postcopy-ram` is on at both ends.
    Ready,
    /// It cannot, and why.
    Refused(String),
}

/// Where an attempt stands, as the main loop sees it. One state at a time;
/// every change goes through [`Progress::on`], the one place the
/// transitions are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Setting up both ends: the source's `query-migrate` is not this
    /// attempt's yet.
    #[default]
    Preparing,
    /// `migrate` was accepted (or a migration under way was taken up after
    /// a restart of evac): the source's `query-migrate` is this attempt's.
    Precopy,
    /// `migrate-start-postcopy` was accepted: the guest runs (or is about
    /// to) at the destination; no cancel, no resuming the source.
    Postcopy,
    /// A cancel was asked for in precopy: however it ends short of
    /// completion, it was cancelled.
    Cancelling,
    /// It failed and the source is recovered: nothing of it to observe.
    Failed,
}

/// What happens to an attempt, for [`Progress::on`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Happened {
    /// We paused the source (offline mode or a switch to offline).
    Paused,
    /// `migrate` was accepted, ready for postcopy or not; `since`: when,
    /// and the source's network namespace's transmitted bytes then.
    Migrating {
        postcopy: PostcopyReady,
        since: (tokio::time::Instant, Option<u64>),
    },
    /// A migration under way was taken up after a restart of evac.
    Adopted,
    /// The source went to postcopy.
    Postcopy,
    /// A cancel was asked for.
    CancelAsked,
    /// The attempt failed.
    Failed,
}

/// What the main loop may read of an attempt while it runs.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    stage: Stage,
    /// We paused the source: it stays paused whatever the stage, and a
    /// failed attempt resumes it.
    paused_by_us: bool,
    /// Whether a switch to postcopy is possible.
    postcopy: PostcopyReady,
    /// When this attempt's `migrate` was accepted, and its source's
    /// network namespace's transmitted bytes then (`None` for an adopted
    /// one): its first rate is measured from there (see `RateMeter`).
    migrating_since: Option<(tokio::time::Instant, Option<u64>)>,
}

impl Progress {
    /// The transitions: a stage changes here only. An event that does not
    /// apply to the stage leaves it (a cancel in postcopy, a second switch).
    pub fn on(&mut self, happened: Happened) {
        use Stage::*;
        self.stage = match (self.stage, happened) {
            (_, Happened::Paused) => {
                self.paused_by_us = true;
                self.stage
            }
            (Preparing, Happened::Migrating { postcopy, since }) => {
                self.postcopy = postcopy;
                self.migrating_since = Some(since);
                Precopy
            }
            (Preparing, Happened::Adopted) => Precopy,
            (Precopy | Cancelling, Happened::Postcopy) => Postcopy,
            (Precopy, Happened::CancelAsked) => Cancelling,
            (_, Happened::Failed) => Failed,
            (stage, _) => stage,
        };
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// `query-migrate` on the source is this attempt's.
    pub fn migrating(&self) -> bool {
        matches!(self.stage, Stage::Precopy | Stage::Postcopy | Stage::Cancelling)
    }

    pub fn paused_by_us(&self) -> bool {
        self.paused_by_us
    }

    pub fn postcopy(&self) -> PostcopyReady {
        self.postcopy.clone()
    }

    pub fn migrating_since(&self) -> Option<(tokio::time::Instant, Option<u64>)> {
        self.migrating_since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(events: &[Happened]) -> Progress {
        let mut p = Progress::default();
        for e in events {
            p.on(e.clone());
        }
        p
    }

    #[test]
    fn an_attempt_goes_through_its_stages_in_order_only() {
        let since = (tokio::time::Instant::now(), Some(7));
        let started = [Happened::Migrating {
            postcopy: PostcopyReady::Ready,
            since,
        }];
        assert_eq!(after(&[]).stage(), Stage::Preparing);
        assert!(!after(&[]).migrating());
        let p = after(&started);
        assert_eq!((p.stage(), p.postcopy()), (Stage::Precopy, PostcopyReady::Ready));
        assert_eq!(p.migrating_since(), Some(since));
        assert!(p.migrating());
        // A cancel before `migrate` or in postcopy changes nothing.
        assert_eq!(after(&[Happened::CancelAsked]).stage(), Stage::Preparing);
        let post = [started[0].clone(), Happened::Postcopy, Happened::CancelAsked];
        assert_eq!(after(&post).stage(), Stage::Postcopy);
        let cancelled = [started[0].clone(), Happened::CancelAsked];
        assert_eq!(after(&cancelled).stage(), Stage::Cancelling);
        assert!(after(&cancelled).migrating());
        // Taken up after a restart: migrating, postcopy unknown.
        let p = after(&[Happened::Adopted]);
        assert_eq!(
            (p.stage(), p.postcopy()),
            (Stage::Precopy, PostcopyReady::Pending)
        );
        // A pause is kept whatever the stage; a failure ends it all.
        let p = after(&[Happened::Paused, started[0].clone(), Happened::Failed]);
        assert!(p.paused_by_us());
        assert_eq!(p.stage(), Stage::Failed);
        assert!(!p.migrating());
        assert!(!after(&started).paused_by_us());
    }
}
