//! How many migrations run at once.
//!
//! | policy | rule |
//! |---|---|
//! | `sequential` | one at a time across the whole site |
//! | `parallel` | everything at once |
//! | `static` | at most `max_in_flight` across the site and `max_in_flight_per_host` per source host |
//! | `aimd-local` | one AIMD window per source host, fed by that host's NIC throughput only |
//! | `aimd-global` | one AIMD window for the site, fed by the aggregate throughput, its slots spread over hosts |
//! | `deadline` | evac's own planner: plans against the power-off deadlines per bottleneck (see [`Deadline`]) |
//!
//! AIMD borrows TCP's congestion avoidance: a window `w` of migrations in
//! flight starts at 1. At the end of every control period the measured
//! throughput is compared with the previous period's. If it rose by more
//! than `increase_margin`, the last migration added still bought bandwidth,
//! so `w += 1`; if it fell by more than `decrease_margin`, the network got
//! worse or is oversubscribed, so `w = max(1, w / 2)`; otherwise `w` holds.
//!
//! Throughput only rises when something changed, so the window has to try:
//! every `w += 1` is a *probe* whose worth the next period measures. A probe
//! that bought more than `increase_margin` is kept and followed by another;
//! one that did not is undone (the window holds at the last size that
//! helped); after [`REPROBE_AFTER_PERIODS`] quiet periods the window probes
//! again, which is how it finds capacity that came back. Without probing a
//! window would never leave 1 on a steady link (the first version compared
//! periods with nothing added between them and stayed at 1), and holding at
//! a useless probe instead of undoing it would ratchet the window up by one
//! per re-probe on a saturated link.
//!
//! The two AIMD policies differ only in what they see. `aimd-local` runs one
//! window per source host on that host's NIC counter: a probe that takes
//! bandwidth from other hosts' migrations on the shared WAN looks like a
//! gain to its host, so the hosts keep outbidding each other and the site
//! oversubscribes the WAN (each VM's migration gets long). `aimd-global`
//! runs one window on the sum of every host's counter, where such a probe
//! gains nothing, and hands its slots to the hosts with the fewest in flight
//! so that no host idles while another has a queue.

use std::fmt;

use evac_model::{BitsPerSec, Fleet, HostId, MigrationParams};
use serde::{Deserialize, Serialize};

pub use crate::admission::MAX_CONNECTIONS;
pub use crate::deadline::Deadline;
use crate::{Admission, ControllerConfig, Order, PerHost, Policy, View, Wakeup};

/// The policies a scenario or the CLI can name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    #[default]
    Sequential,
    Parallel,
    Static,
    AimdLocal,
    AimdGlobal,
    Deadline,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 6] = [
        PolicyKind::Sequential,
        PolicyKind::Parallel,
        PolicyKind::Static,
        PolicyKind::AimdLocal,
        PolicyKind::AimdGlobal,
        PolicyKind::Deadline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Sequential => "sequential",
            PolicyKind::Parallel => "parallel",
            PolicyKind::Static => "static",
            PolicyKind::AimdLocal => "aimd-local",
            PolicyKind::AimdGlobal => "aimd-global",
            PolicyKind::Deadline => "deadline",
        }
    }

    /// The order a policy starts VMs in when the configuration names none:
    /// the scenario's for the published policies, earliest power-off first
    /// for `deadline`.
    pub fn natural_order(self) -> Order {
        match self {
            PolicyKind::Deadline => Order::Deadline,
            _ => Order::AsListed,
        }
    }

    /// The policy, configured from the `[controller]` table, for
    /// migrations with `params`; `connection_cap` is the most one TCP
    /// connection carries (window / RTT), if the operator knows it.
    pub fn build(
        self,
        fleet: &Fleet,
        config: &ControllerConfig,
        params: MigrationParams,
        connection_cap: Option<BitsPerSec>,
    ) -> Box<dyn Policy + Send> {
        match self {
            PolicyKind::Sequential => Box::new(Fixed(Admission::limits(1, PerHost::Unlimited, false))),
            PolicyKind::Parallel => Box::new(Fixed(Admission::limits(usize::MAX, PerHost::Unlimited, false))),
            PolicyKind::Static => Box::new(Fixed(Admission::limits(
                config.max_in_flight,
                PerHost::Each(config.max_in_flight_per_host),
                false,
            ))),
            PolicyKind::AimdLocal => Box::new(AimdLocal::new(fleet, config.aimd)),
            PolicyKind::AimdGlobal => Box::new(AimdGlobal::new(config.aimd)),
            PolicyKind::Deadline => Box::new(Deadline::new(fleet, params, config.period, connection_cap)),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|p| p.as_str() == text).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|p| p.as_str()).collect();
            format!(
                "unknown policy `{text}`; expected one of {}{}",
                names.join(", "),
                evac_model::suggest::did_you_mean(text, names.iter().copied())
            )
        })
    }
}

/// The tuning of the AIMD policies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AimdParams {
    /// Relative rise of throughput over one period that counts as "adding a
    /// migration still helped". 5 %: well above the few-percent jitter of a
    /// real NIC counter sampled every second, well below the 1/w gain one
    /// more migration brings to a window of up to 20 when the link has room.
    pub increase_margin: f64,
    /// Relative fall of throughput over one period that counts as the
    /// network getting worse. 20 %: a migration ending and the next one
    /// ramping up dips a period's throughput by less; a capacity drop or an
    /// oversubscribed link by more.
    pub decrease_margin: f64,
    /// The largest window: beyond a few tens of migrations per site, each
    /// one's time grows with no gain in total time.
    pub max_window: usize,
}

impl Default for AimdParams {
    fn default() -> Self {
        Self {
            increase_margin: 0.05,
            decrease_margin: 0.20,
            max_window: 32,
        }
    }
}

/// A policy whose limits never change.
struct Fixed(Admission);

impl Policy for Fixed {
    fn admit(&mut self, _: &View<'_>) -> Admission {
        self.0.clone()
    }

    /// Fixed limits read no throughput.
    fn reads_throughput(&self) -> bool {
        false
    }

    /// Fixed limits change with nothing but the migrations' ends.
    fn next_wakeup(&self, _: &View<'_>) -> Wakeup {
        Wakeup::OnEvent
    }
}

/// An AIMD window moves every period while there is something left to
/// start; once the queue is empty its size decides nothing.
fn aimd_wakeup(view: &View<'_>) -> Wakeup {
    if view.queued > 0 {
        Wakeup::NextPeriod
    } else {
        Wakeup::OnEvent
    }
}

/// Quiet periods (throughput neither rose nor fell by a margin, and the
/// window did not move) after which a window in use probes again with one
/// more migration. A window that never probed would never learn that the
/// WAN got its capacity back: connections capped by their TCP window do not
/// speed up by themselves. Five periods keep the cost of a useless probe
/// (one extra migration for one period, then undone) to a fifth of the time,
/// and recover a halved window within a few tens of periods.
///
/// A probe's migration cannot be taken back once started: it runs to its
/// end, sharing the link, however useless. So every probe that buys nothing
/// doubles the wait before the next (up to [`MAX_REPROBE_AFTER_PERIODS`]), and
/// any sign that the network changed resets it, much as TCP backs off its
/// retransmission timer.
pub const REPROBE_AFTER_PERIODS: u32 = 5;

/// The longest wait between two probes: two minutes at the default period.
pub const MAX_REPROBE_AFTER_PERIODS: u32 = 120;

/// One AIMD window.
///
/// Each control period it compares the period's throughput with the
/// previous period's:
///
/// - fell by more than `decrease_margin`: `w = max(1, floor(w / 2))`;
/// - the last period added a migration (a probe) and throughput rose by more
///   than `increase_margin`: that migration bought bandwidth, so keep it and
///   add another, `w += 1`;
/// - the probe bought nothing: hold at the size before it (the probe is
///   undone), as TCP holds below the rate that lost;
/// - throughput rose by more than `increase_margin` with no probe (the
///   network got better): probe at once;
/// - otherwise hold, and after [`REPROBE_AFTER_PERIODS`] quiet periods probe
///   (twice as long after each useless probe).
///
/// Only a window in use (as many migrations in flight as it allows) grows: a
/// window with free slots learns nothing from a rise.
#[derive(Debug, Clone)]
struct Window {
    size: usize,
    last_throughput: Option<BitsPerSec>,
    /// The last change was `w += 1`, whose worth this period measures.
    probing: bool,
    /// Quiet periods since the window last moved.
    quiet: u32,
    /// Quiet periods before the next probe.
    reprobe_after: u32,
}

impl Window {
    fn new() -> Self {
        Self {
            size: 1,
            last_throughput: None,
            probing: false,
            quiet: 0,
            reprobe_after: REPROBE_AFTER_PERIODS,
        }
    }

    fn grow(&mut self, params: &AimdParams) {
        self.quiet = 0;
        if self.size < params.max_window {
            self.size += 1;
            self.probing = true;
        }
    }

    /// Moves the window after a period with `throughput`, at whose end
    /// `in_flight` migrations run.
    /// Returns whether a probe paid off: the migration added last period
    /// raised the throughput.
    fn update(&mut self, throughput: BitsPerSec, in_flight: usize, params: &AimdParams) -> bool {
        let in_use = in_flight >= self.size;
        let probing = std::mem::replace(&mut self.probing, false);
        let Some(last) = self.last_throughput.replace(throughput) else {
            // The first measurement: nothing to compare with yet, so probe.
            if in_use {
                self.grow(params);
            }
            return false;
        };
        let rose = throughput.0 > last.0 * (1.0 + params.increase_margin);
        let fell = throughput.0 < last.0 * (1.0 - params.decrease_margin);
        if fell {
            self.size = (self.size / 2).max(1);
            self.quiet = 0;
            self.reprobe_after = REPROBE_AFTER_PERIODS;
        } else if rose && in_use {
            self.reprobe_after = REPROBE_AFTER_PERIODS;
            self.grow(params);
            return probing;
        } else if probing {
            self.size = (self.size - 1).max(1);
            self.quiet = 0;
            self.reprobe_after = (self.reprobe_after * 2).min(MAX_REPROBE_AFTER_PERIODS);
        } else {
            self.quiet += 1;
            if self.quiet >= self.reprobe_after && in_use {
                self.grow(params);
            }
        }
        false
    }
}

/// One window per source host, each blind to the others.
struct AimdLocal {
    params: AimdParams,
    windows: Vec<Window>,
}

impl AimdLocal {
    fn new(fleet: &Fleet, params: AimdParams) -> Self {
        Self {
            params,
            windows: vec![Window::new(); fleet.hosts.len()],
        }
    }
}

impl Policy for AimdLocal {
    fn admit(&mut self, view: &View<'_>) -> Admission {
        if let Some(throughput) = view.period_throughput {
            for host in view.fleet.source_hosts() {
                let HostId(h) = host;
                self.windows[h].update(throughput[h], view.in_flight[h], &self.params);
            }
        }
        Admission::limits(
            usize::MAX,
            PerHost::ByHost(self.windows.iter().map(|w| w.size).collect()),
            false,
        )
    }

    fn next_wakeup(&self, view: &View<'_>) -> Wakeup {
        aimd_wakeup(view)
    }
}

/// One window for the whole site, fed by the sum of every host's throughput.
struct AimdGlobal {
    params: AimdParams,
    window: Window,
}

impl AimdGlobal {
    fn new(params: AimdParams) -> Self {
        Self {
            params,
            window: Window::new(),
        }
    }
}

impl Policy for AimdGlobal {
    fn admit(&mut self, view: &View<'_>) -> Admission {
        if let Some(total) = view.period_source_throughput() {
            self.window.update(total, view.total_in_flight(), &self.params);
        }
        Admission::limits(self.window.size, PerHost::Unlimited, true)
    }

    fn next_wakeup(&self, view: &View<'_>) -> Wakeup {
        aimd_wakeup(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_grows_by_one_holds_and_halves() {
        let params = AimdParams::default();
        let mut w = Window::new();
        w.update(BitsPerSec(100.0), 1, &params);
        assert_eq!(w.size, 2, "the first measurement probes");
        w.update(BitsPerSec(200.0), 2, &params);
        assert_eq!(w.size, 3, "the probe doubled throughput: keep it, add one");
        w.update(BitsPerSec(300.0), 3, &params);
        assert_eq!(w.size, 4);
        w.update(BitsPerSec(303.0), 4, &params);
        assert_eq!(w.size, 3, "1 % is noise: the probe is undone, the window holds");
        // The useless probe doubled the wait before the next one.
        for quiet in 1..2 * REPROBE_AFTER_PERIODS {
            w.update(BitsPerSec(303.0), 3, &params);
            assert_eq!(w.size, 3, "quiet period {quiet} holds");
        }
        w.update(BitsPerSec(290.0), 3, &params);
        assert_eq!(
            w.size, 4,
            "a 4 % fall is quiet too; the tenth quiet period probes"
        );
        w.update(BitsPerSec(100.0), 4, &params);
        assert_eq!(w.size, 2, "a fall by two thirds halves the window");
        w.update(BitsPerSec(400.0), 1, &params);
        assert_eq!(w.size, 2, "a window with free slots does not grow");
        w.update(BitsPerSec(800.0), 2, &params);
        assert_eq!(w.size, 3, "a rise with no probe (capacity came back) probes");
        w.update(BitsPerSec(100.0), 3, &params);
        assert_eq!(w.size, 1, "floor(3 / 2) = 1");
        w.update(BitsPerSec(10.0), 1, &params);
        assert_eq!(w.size, 1, "never below one");
    }

    /// How many periods the window waits at its size, the throughput
    /// staying `throughput` and every slot used, before it probes one more.
    fn periods_until_probe(w: &mut Window, throughput: BitsPerSec, params: &AimdParams) -> u32 {
        let size = w.size;
        let mut quiet = 0;
        while w.size == size {
            w.update(throughput, size, params);
            quiet += 1;
        }
        quiet
    }

    #[test]
    fn useless_probes_back_off_and_a_change_resets_the_wait() {
        let params = AimdParams::default();
        let mut w = Window::new();
        w.update(BitsPerSec(100.0), 1, &params);
        // Probes at 2 that buy nothing: waits of 10, 20, 40, 80, 120, 120.
        let mut waits = Vec::new();
        for _ in 0..6 {
            w.update(BitsPerSec(100.0), 2, &params);
            assert_eq!(w.size, 1, "the probe is undone");
            waits.push(periods_until_probe(&mut w, BitsPerSec(100.0), &params));
        }
        assert_eq!(waits, [10, 20, 40, 80, 120, 120]);
        // Capacity came back: this probe pays, and after the next useless
        // one the wait is the base one, doubled once.
        w.update(BitsPerSec(400.0), 2, &params);
        assert_eq!(w.size, 3, "the probe bought bandwidth: keep it, add one");
        w.update(BitsPerSec(400.0), 3, &params);
        assert_eq!(w.size, 2, "this one did not");
        assert_eq!(
            periods_until_probe(&mut w, BitsPerSec(400.0), &params),
            2 * REPROBE_AFTER_PERIODS,
            "reset to the base, doubled once"
        );
    }

    #[test]
    fn window_stops_at_the_ceiling() {
        let params = AimdParams {
            max_window: 3,
            ..AimdParams::default()
        };
        let mut w = Window::new();
        for (i, rate) in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].into_iter().enumerate() {
            w.update(BitsPerSec(rate), w.size, &params);
            assert!(w.size <= 3, "period {i}: {}", w.size);
        }
        assert_eq!(w.size, 3);
    }

    #[test]
    fn policy_names_round_trip() {
        for kind in PolicyKind::ALL {
            assert_eq!(kind.as_str().parse::<PolicyKind>(), Ok(kind));
        }
        assert!("aimd".parse::<PolicyKind>().unwrap_err().contains("aimd-global"));
    }
}
