//! A [`Lab`] in a fresh temporary directory: how a test starts one. It
//! checks the test's prerequisites first ([`crate::skip_without`]: a skip
//! says why, and under `EVAC_REQUIRE_LAB` is a failure), and removes the
//! directory only after the lab has killed its processes.

use std::ops::{Deref, DerefMut};

use crate::{skip_without, Lab, Prerequisite};

/// A [`Lab`] whose directory is removed when it is dropped, after its
/// processes are killed. Derefs to the [`Lab`].
pub struct TempLab {
    // Declared first: dropped (its processes killed) before the directory
    // they use is removed.
    lab: Lab,
    _dir: tempfile::TempDir,
}

impl TempLab {
    /// A lab in a new temporary directory, or `None` (with the reason on
    /// stderr) when one of `checks` fails: see [`skip_without`].
    ///
    /// # Panics
    ///
    /// When a check fails under `EVAC_REQUIRE_LAB`, or no temporary
    /// directory can be made.
    pub fn unless_missing(checks: &[Prerequisite]) -> Option<TempLab> {
        if skip_without(checks) {
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary directory for the lab");
        Some(TempLab {
            lab: Lab::new(dir.path()),
            _dir: dir,
        })
    }
}

impl Deref for TempLab {
    type Target = Lab;

    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl DerefMut for TempLab {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }
}

/// A [`TempLab`] for a test, or a return from the test (with the reason on
/// stderr) when one of the prerequisites given is missing:
/// `let mut lab = evac_lab::lab_or_skip!(&[evac_lab::qemu_available]);`.
/// Under `EVAC_REQUIRE_LAB` a missing prerequisite fails the test instead
/// ([`crate::skip_without`]).
#[macro_export]
macro_rules! lab_or_skip {
    ($needs:expr) => {
        match $crate::TempLab::unless_missing($needs) {
            Some(lab) => lab,
            None => return,
        }
    };
}
