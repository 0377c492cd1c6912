//! The planner's account of itself: per VM, each decision it took and why.
//!
//! Only decisions are recorded (started, deferred, switched, cancelled,
//! given up), each once, so the record stays a few lines per VM however
//! long the evacuation runs.

use std::fmt;

use serde::Serialize;

use evac_model::{Connections, Mode, VmId};

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

/// Why a decision was taken, as recorded: in words at once, or, for a
/// start (one per VM, a million at a million VMs), as its figures, put in
/// words only when asked ([`Journal::of`]), so that the journal holds no
/// text for VMs nobody asks about.
#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    Said(String),
    Start(Start),
}

impl From<String> for Why {
    fn from(text: String) -> Self {
        Why::Said(text)
    }
}

impl From<Start> for Why {
    fn from(start: Start) -> Self {
        Why::Start(start)
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Said(text) => f.write_str(text),
            Why::Start(start) => start.fmt(f),
        }
    }
}

/// A VM started by the planner: with what, and what it saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Start {
    pub mode: Mode,
    pub connections: Connections,
    /// The most one connection carries, bytes per second, if known.
    pub per_connection: Option<f64>,
    /// Its host's power-off, seconds from the start.
    pub deadline: Option<f64>,
    pub priority: u32,
    /// Migrations in flight before it.
    pub in_flight: usize,
    /// The WAN's peak, bytes per second, if measured.
    pub peak: Option<f64>,
    /// Started on room no VM able to make it wanted (the plan found it
    /// cannot make its power-off; trying costs nothing).
    pub scavenger: bool,
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} with {} connection(s) (", self.mode, self.connections)?;
        match self.per_connection {
            Some(c) => write!(f, "{} each", Mbps(c))?,
            None => f.write_str("connection cap unknown")?,
        }
        f.write_str(if self.scavenger {
            "): the plan finds it cannot make its power-off, but no VM that can wanted the room ("
        } else {
            "): next in the plan ("
        })?;
        match self.deadline {
            Some(d) => write!(f, "power-off at {d:.0} s")?,
            None => f.write_str("no power-off")?,
        }
        write!(
            f,
            ", priority {}), and the {} in flight did not fill the WAN (peak ",
            self.priority, self.in_flight
        )?;
        match self.peak {
            Some(peak) => write!(f, "{}", Mbps(peak))?,
            None => f.write_str("not yet measured")?,
        }
        f.write_str(") nor its NIC")
    }
}

/// One decision as the journal keeps it.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    at_s: f64,
    decision: &'static str,
    why: Why,
}

/// The decisions per VM.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    entries: Vec<Vec<Entry>>,
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

    pub fn record(&mut self, vm: VmId, at_s: f64, decision: &'static str, why: impl Into<Why>) {
        // The same decision again (a VM deferred at every replan) says
        // nothing new.
        if self.entries[vm.0].last().is_some_and(|e| e.decision == decision) {
            return;
        }
        self.record_anew(vm, at_s, decision, why);
    }

    /// Records a decision even when it repeats the last one: for a
    /// decision whose substance changed under the same name (a plan that
    /// moves a VM from offline to postcopy).
    pub fn record_anew(&mut self, vm: VmId, at_s: f64, decision: &'static str, why: impl Into<Why>) {
        let list = &mut self.entries[vm.0];
        if list.len() == MAX_PER_VM {
            list.remove(MAX_PER_VM / 2);
        }
        // Most VMs get one decision: room for exactly that many, not the
        // four a first push reserves (a million VMs' journals).
        list.reserve_exact(1);
        list.push(Entry {
            at_s,
            decision,
            why: why.into(),
        });
    }

    pub fn of(&self, vm: VmId) -> Vec<Explanation> {
        self.entries
            .get(vm.0)
            .map(|list| {
                list.iter()
                    .map(|e| Explanation {
                        at_s: e.at_s,
                        decision: e.decision,
                        why: e.why.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Bytes as GiB with one decimal, for the explanations.
pub fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / f64::from(1u32 << 30))
}

/// A rate in bytes per second as Mbps, for the explanations.
pub fn mbps(bytes_per_sec: f64) -> String {
    Mbps(bytes_per_sec).to_string()
}

/// A rate in bytes per second, shown as Mbps.
struct Mbps(f64);

impl fmt::Display for Mbps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.0} Mbps", self.0 * 8.0 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_decision_is_kept_once_and_the_list_is_bounded() {
        let mut j = Journal::new(1);
        j.record(VmId(0), 1.0, "defer", String::from("a"));
        j.record(VmId(0), 2.0, "defer", String::from("b"));
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

    #[test]
    fn a_plan_that_changes_the_mode_is_kept_beside_the_last() {
        let mut j = Journal::new(1);
        j.record(VmId(0), 1.0, "plan", String::from("Offline planned"));
        j.record_anew(VmId(0), 2.0, "plan", String::from("Postcopy planned"));
        j.record(VmId(0), 3.0, "plan", String::from("Postcopy planned"));
        let whys: Vec<String> = j.of(VmId(0)).into_iter().map(|e| e.why).collect();
        assert_eq!(whys, ["Offline planned", "Postcopy planned"]);
    }

    #[test]
    fn a_start_is_put_in_words_when_asked() {
        let start = Start {
            mode: Mode::Live,
            connections: Connections::new(3).unwrap(),
            per_connection: Some(10e6),
            deadline: Some(899.6),
            priority: 5,
            in_flight: 2,
            peak: Some(100e6),
            scavenger: false,
        };
        let mut j = Journal::new(2);
        j.record(VmId(1), 4.0, "start", start);
        let said = j.of(VmId(1));
        assert_eq!(said.len(), 1);
        assert_eq!((said[0].at_s, said[0].decision), (4.0, "start"));
        // 10 MB/s is 80 Mbps; 100 MB/s 800 Mbps; 899.6 s shown as 900 s.
        assert_eq!(
            said[0].why,
            "Live with 3 connection(s) (80 Mbps each): next in the plan (power-off at 900 s, priority 5), \
             and the 2 in flight did not fill the WAN (peak 800 Mbps) nor its NIC"
        );
        let unknown = Start {
            per_connection: None,
            deadline: None,
            peak: None,
            mode: Mode::Offline,
            ..start
        };
        assert_eq!(
            Why::from(unknown).to_string(),
            "Offline with 3 connection(s) (connection cap unknown): next in the plan (no power-off, priority 5), \
             and the 2 in flight did not fill the WAN (peak not yet measured) nor its NIC"
        );
        assert!(j.of(VmId(0)).is_empty());
    }
}
