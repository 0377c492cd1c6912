//! The planner's account of itself: per VM, each decision it took and why.
//!
//! Only decisions are recorded (started, deferred, switched, cancelled,
//! given up), each once, so the record stays a few lines per VM however
//! long the evacuation runs.

use serde::Serialize;

use evac_model::VmId;

/// One decision about one VM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// Seconds from the evacuation's start.
    pub at_s: f64,
    /// What was decided: `start`, `defer`, `offline`, `postcopy`,
    /// `cancel` or `give-up`.
    pub decision: &'static str,
    /// Why, in words and figures.
    pub why: String,
}

/// The decisions per VM.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    entries: Vec<Vec<Explanation>>,
}

/// The most entries one VM keeps: a VM retried or re-deferred many times
/// keeps its first decisions and its last.
const MAX_PER_VM: usize = 16;

impl Journal {
    pub fn new(vms: usize) -> Self {
        Self {
            entries: vec![Vec::new(); vms],
        }
    }

    pub fn record(&mut self, vm: VmId, at_s: f64, decision: &'static str, why: String) {
        let list = &mut self.entries[vm.0];
        // The same decision again (a VM deferred at every replan) says
        // nothing new.
        if list.last().is_some_and(|e| e.decision == decision) {
            return;
        }
        if list.len() == MAX_PER_VM {
            list.remove(MAX_PER_VM / 2);
        }
        list.push(Explanation { at_s, decision, why });
    }

    pub fn of(&self, vm: VmId) -> Vec<Explanation> {
        self.entries.get(vm.0).cloned().unwrap_or_default()
    }
}

/// Bytes as GiB with one decimal, for the explanations.
pub fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / f64::from(1u32 << 30))
}

/// A rate in bytes per second as Mbps, for the explanations.
pub fn mbps(bytes_per_sec: f64) -> String {
    format!("{:.0} Mbps", bytes_per_sec * 8.0 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_decision_is_kept_once_and_the_list_is_bounded() {
        let mut j = Journal::new(1);
        j.record(VmId(0), 1.0, "defer", "a".into());
        j.record(VmId(0), 2.0, "defer", "b".into());
        assert_eq!(j.of(VmId(0)).len(), 1);
        for i in 0..40 {
            j.record(
                VmId(0),
                f64::from(i),
                if i % 2 == 0 { "start" } else { "cancel" },
                String::new(),
            );
        }
        let list = j.of(VmId(0));
        assert_eq!(list.len(), MAX_PER_VM);
        assert_eq!(list[0].why, "a", "the first decision stays");
        assert_eq!(list[MAX_PER_VM - 1].at_s, 39.0, "and the last");
        assert_eq!(gib(1.5 * f64::from(1u32 << 30)), "1.5 GiB");
        assert_eq!(mbps(125e6), "1000 Mbps");
    }
}
