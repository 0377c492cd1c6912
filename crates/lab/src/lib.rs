//! # evac-lab
//!
//! The lab: a data center in miniature on one machine, for tests, examples
//! and `evac lab`. Network namespaces stand in for hosts, a veth pair shaped
//! by `tc tbf` for the WAN ([`LabNetwork`]), small real QEMU VMs for the
//! fleet ([`Lab`]), and a freestanding guest that dirties memory at a chosen
//! rate, or along a curve of several regions at several rates ([`curve`])
//! ([`DIRTY_GUEST`], assembled from `guest/dirty.S` by `build.rs`).
//!
//! It lives apart from `evac-qemu` so that the real backend stays what
//! operators run, and the lab is what exercises it.
//!
//! `evac lab` builds on these modules:
//! - [`topology`]: a namespace per host, a router per site, and the WAN
//!   between them: `tbf` for bandwidth (following the trace), the
//!   [`delay`] line on a [`tun`] pair for latency, the TCP window in the
//!   hosts' socket-buffer sysctls;
//! - [`instance`]: a lab built from a scenario file (namespaces, VMs, an
//!   inventory), torn down when dropped;
//! - [`evacuate`]: its evacuation by the real run loop beside the
//!   simulator's prediction, and the errors between them;
//! - [`cleanup`]: `evac lab down`, which finds labs by name, leftovers of
//!   killed processes included;
//! - [`probe`]: round trips and TCP goodput measured inside the lab;
//! - [`upsd`]: a real NUT `upsd` serving a UPS whose battery drains on a
//!   script, for the power-off deadlines a UPS tells.
//!
//! Every process a [`Lab`] starts or is told about ([`Lab::adopt`]) is killed
//! by its pid when the lab is dropped, so a failing test cleans up too; a
//! test starts its lab as a [`TempLab`], which also removes its directory,
//! or as a [`ShapedLab`] when its VMs migrate over a shaped WAN.

pub mod calibration;
pub mod capacity;
pub mod capture;
pub mod cleanup;
pub mod curve;
pub mod decisions;
pub mod delay;
pub mod evacuate;
pub mod fit;
pub mod instance;
#[cfg(feature = "libvirt")]
pub mod libvirt;
pub mod mix;
pub mod netns;
pub mod pair;
pub mod probe;
pub mod process;
pub mod temp;
pub mod topology;
pub mod tun;
pub mod upsd;
pub mod vm;

pub use curve::{DirtyRegion, WriteCounters};
pub use mix::{Mix, PageKind};
pub use netns::{netns_available, netns_list};
pub use pair::{LabNetwork, Shaping};
pub use process::{find_pid, pid_alive};
pub use temp::{ShapedLab, TempLab};
pub use vm::{
    destination_args, dirty_guest_available, Guest, Lab, LabVm, DIRTY_FILL_PATTERN, DIRTY_FILL_START,
    DIRTY_GUEST, DIRTY_GUEST_MAGIC, DIRTY_WORKING_SET_START, QBOOT,
};

/// The environment variable under which a missing prerequisite fails a
/// test instead of skipping it; `.ci/run` sets it, so CI cannot go green by
/// skipping the real-QEMU tests.
pub const REQUIRE_LAB: &str = "EVAC_REQUIRE_LAB";

/// Whether [`REQUIRE_LAB`] is set to something other than empty or `0`.
pub fn lab_required() -> bool {
    std::env::var_os(REQUIRE_LAB).is_some_and(|v| !v.is_empty() && v != "0")
}

/// A check for something a test needs: `Err(why)` when it is missing here
/// (e.g. [`qemu_available`]).
pub type Prerequisite = fn() -> Result<(), String>;

/// Whether a test must skip for want of what one of `checks` looks for
/// (e.g. [`qemu_available`]); when it must, says why on stderr, so a skip is
/// never silent.
///
/// # Panics
///
/// With the reason, instead of skipping, when [`REQUIRE_LAB`] is set: a
/// machine meant to run the lab tests must not pass them by skipping.
pub fn skip_without(checks: &[Prerequisite]) -> bool {
    match checks.iter().try_for_each(|check| check()) {
        Ok(()) => false,
        Err(why) if lab_required() => {
            panic!("{REQUIRE_LAB} is set but this test cannot run: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            true
        }
    }
}

/// [`skip_without()`] as a test's first line: returns from the test (with the
/// reason on stderr) when one of the prerequisites given is missing, and
/// fails it instead under [`REQUIRE_LAB`]:
/// `evac_lab::skip_without!(&[evac_lab::qemu_available]);`. For a test that
/// needs no [`TempLab`] (which [`lab_or_skip!`] gives).
#[macro_export]
macro_rules! skip_without {
    ($needs:expr) => {
        if $crate::skip_without($needs) {
            return;
        }
    };
}

/// `Err(reason)` when QEMU cannot be run here.
pub fn qemu_available() -> Result<(), String> {
    match process::run("qemu-system-x86_64", &["--version"]) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "qemu-system-x86_64 is not installed ({e}); apt-get install qemu-system-x86"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The runtime a synchronous lab test (or example) drives evac on, for the
/// tests that block on the lab between its async steps: two workers, the
/// cores of the machines the lab runs on.
///
/// # Panics
///
/// When the runtime cannot be built (no threads left).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the lab")
}

/// A number unique in this process.
pub(crate) fn next_id() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    fn never_here() -> Result<(), String> {
        Err("a prerequisite no machine has".into())
    }

    /// Run by `require_lab_turns_a_skip_into_a_failure` in a child process,
    /// so the variable it sets never leaks into tests running beside it.
    #[test]
    #[ignore = "run as a child process by require_lab_turns_a_skip_into_a_failure"]
    fn child_skipping_test() {
        assert!(super::skip_without(&[never_here]));
    }

    fn run_child(require: Option<&str>) -> std::process::Output {
        let mut child = Command::new(std::env::current_exe().unwrap());
        child.args([
            "--exact",
            "tests::child_skipping_test",
            "--ignored",
            "--nocapture",
        ]);
        child.env_remove(super::REQUIRE_LAB);
        if let Some(value) = require {
            child.env(super::REQUIRE_LAB, value);
        }
        child.output().unwrap()
    }

    #[test]
    fn require_lab_turns_a_skip_into_a_failure() {
        let skipped = run_child(None);
        let stderr = String::from_utf8_lossy(&skipped.stderr);
        assert!(skipped.status.success(), "{stderr}");
        assert!(
            stderr.contains("SKIPPED: a prerequisite no machine has"),
            "{stderr}"
        );

        let off = run_child(Some("0"));
        assert!(off.status.success(), "{}", String::from_utf8_lossy(&off.stderr));

        let failed = run_child(Some("1"));
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(!failed.status.success(), "{stderr}");
        assert!(
            stderr
                .contains("EVAC_REQUIRE_LAB is set but this test cannot run: a prerequisite no machine has"),
            "{stderr}"
        );
    }
}
