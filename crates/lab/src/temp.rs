//! A [`Lab`] in a fresh temporary directory: how a test starts one. It
//! checks the test's prerequisites first ([`crate::skip_without()`]: a skip
//! says why, and under `EVAC_REQUIRE_LAB` is a failure), and removes the
//! directory only after the lab has killed its processes. A
//! [`ShapedLab`] puts such a lab behind a shaped [`LabNetwork`], for the
//! tests that migrate over a WAN bottleneck.

use std::ops::{Deref, DerefMut};

use crate::{skip_without, Lab, LabNetwork, LabVm, Prerequisite, Shaping};

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
    /// stderr) when one of `checks` fails: see [`skip_without()`].
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
/// ([`crate::skip_without()`]).
#[macro_export]
macro_rules! lab_or_skip {
    ($needs:expr) => {
        match $crate::TempLab::unless_missing($needs) {
            Some(lab) => lab,
            None => return,
        }
    };
}

/// A [`TempLab`] whose VMs run in the source namespace of a shaped
/// [`LabNetwork`] (`lab.start_vm_in(name, mib, Some(&net.src))`): the
/// fields are public so that both can be borrowed at once.
pub struct ShapedLab {
    // Declared first: the lab's processes are killed before the
    // namespaces they run in are deleted.
    pub lab: TempLab,
    pub net: LabNetwork,
}

impl ShapedLab {
    /// A lab behind a new network shaped by `shaping`, or `None` (with the
    /// reason on stderr) when one of `checks` fails, as
    /// [`TempLab::unless_missing`].
    ///
    /// # Panics
    ///
    /// As [`TempLab::unless_missing`], and when the network cannot be made.
    pub fn unless_missing(checks: &[Prerequisite], shaping: Shaping) -> Option<ShapedLab> {
        let lab = TempLab::unless_missing(checks)?;
        let net = LabNetwork::new(shaping).expect("the lab network");
        Some(ShapedLab { lab, net })
    }

    /// The inventory of `vms` ([`Lab::inventory_in`]) with a `[network]`
    /// whose WAN is the shaped link's rate, at a round trip of `wan_rtt`
    /// (e.g. `"1 ms"`).
    pub fn inventory(&self, policy: &str, vms: &[LabVm], extra_migration: &str, wan_rtt: &str) -> String {
        self.lab.inventory_in(&self.net, policy, vms, extra_migration)
            + &format!(
                "[network]\nwan_bandwidth = \"{} bps\"\nwan_rtt = \"{wan_rtt}\"\n",
                self.net.shaping.rate_bps
            )
    }
}

/// A [`ShapedLab`] for a test, or a return from the test, as
/// [`lab_or_skip!`]: `evac_lab::shaped_lab_or_skip!(&[...], shaping)`.
#[macro_export]
macro_rules! shaped_lab_or_skip {
    ($needs:expr, $shaping:expr) => {
        match $crate::temp::ShapedLab::unless_missing($needs, $shaping) {
            Some(lab) => lab,
            None => return,
        }
    };
}
