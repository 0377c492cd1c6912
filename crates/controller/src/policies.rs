//! How many migrations run at once.
//!
//! | policy | rule |
//! |---|---|
//! | `sequential` | one at a time across the whole site |
//! | `parallel` | everything at once |
//! | `static` | at most `max_in_flight` across the site and `max_in_flight_per_host` per source host |
//! | `aimd-local` | one AIMD window per source host, fed by that host's NIC throughput only |
//! | `aimd-global` | one AIMD window for the site, fed by the aggregate throughput, its slots spread over hosts |
//! | `deadline` | evac's own: the global AIMD window, plus the power-off deadlines (see [`Deadline`]) |
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

use crate::{Action, Admission, ControllerConfig, Order, PerHost, Phase, Policy, View, Wakeup};

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

    /// The policy, configured from the `[controller]` table.
    pub fn build(self, fleet: &Fleet, config: &ControllerConfig) -> Box<dyn Policy + Send> {
        match self {
            PolicyKind::Sequential => Box::new(Fixed(Admission {
                total: 1,
                per_host: PerHost::Unlimited,
                spread_over_hosts: false,
                expected_rate: None,
            })),
            PolicyKind::Parallel => Box::new(Fixed(Admission {
                total: usize::MAX,
                per_host: PerHost::Unlimited,
                spread_over_hosts: false,
                expected_rate: None,
            })),
            PolicyKind::Static => Box::new(Fixed(Admission {
                total: config.max_in_flight,
                per_host: PerHost::Each(config.max_in_flight_per_host),
                spread_over_hosts: false,
                expected_rate: None,
            })),
            PolicyKind::AimdLocal => Box::new(AimdLocal::new(fleet, config.aimd)),
            PolicyKind::AimdGlobal => Box::new(AimdGlobal::new(config.aimd)),
            PolicyKind::Deadline => Box::new(Deadline::new(config.aimd, config.period)),
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
            format!("unknown policy `{text}`; expected one of {}", names.join(", "))
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
    after_useless_probe: Reprobe,
}

/// What a window does after a probe that bought nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reprobe {
    /// Probe again later, waiting twice as long each time.
    Backoff,
    /// Probe again only once the throughput moves by itself: the link was
    /// full with fewer migrations, and stays so until its capacity changes,
    /// which a migration that is not held back by its connections shows as
    /// a rise or a fall.
    OnChange,
}

impl Window {
    fn new() -> Self {
        Self::with_reprobe(Reprobe::Backoff)
    }

    fn with_reprobe(after_useless_probe: Reprobe) -> Self {
        Self {
            size: 1,
            last_throughput: None,
            probing: false,
            quiet: 0,
            reprobe_after: REPROBE_AFTER_PERIODS,
            after_useless_probe,
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
            self.reprobe_after = match self.after_useless_probe {
                Reprobe::Backoff => (self.reprobe_after * 2).min(MAX_REPROBE_AFTER_PERIODS),
                Reprobe::OnChange => u32::MAX,
            };
        } else {
            self.quiet += 1;
            if self.quiet >= self.reprobe_after && in_use {
                self.grow(params);
            }
        }
        false
    }

    /// Halves the window when each migration can carry twice as much.
    fn halve(&mut self) {
        self.size = (self.size / 2).max(1);
        self.probing = false;
        self.quiet = 0;
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
        Admission {
            total: usize::MAX,
            per_host: PerHost::ByHost(self.windows.iter().map(|w| w.size).collect()),
            spread_over_hosts: false,
            expected_rate: None,
        }
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
        Admission {
            total: self.window.size,
            per_host: PerHost::Unlimited,
            spread_over_hosts: true,
            expected_rate: None,
        }
    }

    fn next_wakeup(&self, view: &View<'_>) -> Wakeup {
        aimd_wakeup(view)
    }
}

/// evac's own policy: the global AIMD window, aware of power-off deadlines.
///
/// The published controllers treat every VM alike until its host goes dark.
/// This one plans against the deadlines it is given:
///
/// - VMs start earliest power-off first ([`Order::Deadline`]), then by
///   priority, then smallest first, and in that order across the site
///   (slots are not spread over hosts: the host about to die comes first);
/// - a VM that could not move before its host dies, even at the best
///   aggregate throughput of the last [`RECENT_PERIODS`] periods, is given up
///   rather than started, so it takes no bandwidth from VMs that can make it;
/// - a migration in flight whose precopy would not converge before its host
///   dies is switched to offline (the guest pauses and the rest goes in one
///   copy, with no more dirtying) at the last safe moment, since the WAN may
///   recover before; one that could not finish even so is cancelled, and its
///   share goes to the others.
///
/// The window is the AIMD window of `aimd-global`, with one more lever:
/// when a probe pays off, the migrations in flight were not filling the
/// link on their own (their TCP windows over a long RTT, or their caps,
/// held them back), so the next ones start with twice the parallel
/// connections (up to [`MAX_CHANNELS`]) and the window halves: half as many
/// migrations, each twice as fast, carry the same, and each VM's own
/// migration time halves. This is the paper's finding that sequential
/// migration with parallel connections approaches both bounds, found at run
/// time instead of configured. And a probe that bought nothing is not
/// repeated blindly: the link was full with fewer migrations and stays so
/// until its capacity changes, which shows as a rise or a fall of the
/// throughput (see `Reprobe::OnChange`); each useless probe is a migration
/// that runs to its end sharing the link, so this keeps VMs' own times short.
pub struct Deadline {
    params: AimdParams,
    /// The control period, seconds: how late an action can come.
    period: f64,
    window: Window,
    /// What the next migrations' connections are multiplied by.
    channel_factor: u32,
    /// Aggregate throughput of the last periods, newest last.
    recent: std::collections::VecDeque<f64>,
}

/// The most parallel connections `deadline` gives one migration: each costs
/// the source a share of a core for multifd.
pub const MAX_CHANNELS: u32 = 8;

/// How many periods of throughput the deadline estimates look back on.
pub const RECENT_PERIODS: usize = 30;

impl Deadline {
    fn new(params: AimdParams, period: std::time::Duration) -> Self {
        Self {
            params,
            period: period.as_secs_f64(),
            window: Window::with_reprobe(Reprobe::OnChange),
            channel_factor: 1,
            recent: std::collections::VecDeque::with_capacity(RECENT_PERIODS),
        }
    }

    /// The best aggregate rate recently seen, bytes per second.
    fn best_recent(&self) -> Option<f64> {
        self.recent.iter().copied().reduce(f64::max).filter(|&r| r > 0.0)
    }
}

impl Policy for Deadline {
    fn admit(&mut self, view: &View<'_>) -> Admission {
        if let Some(BitsPerSec(total)) = view.period_source_throughput() {
            let probe_paid = self
                .window
                .update(BitsPerSec(total), view.total_in_flight(), &self.params);
            if probe_paid && self.channel_factor < MAX_CHANNELS {
                self.channel_factor *= 2;
                self.window.halve();
            }
            if self.recent.len() == RECENT_PERIODS {
                self.recent.pop_front();
            }
            self.recent.push_back(total / 8.0);
        }
        Admission {
            total: self.window.size,
            per_host: PerHost::Unlimited,
            spread_over_hosts: false,
            expected_rate: self.best_recent().map(|r| BitsPerSec(r * 8.0)),
        }
    }

    fn needs_progress(&self) -> bool {
        true
    }

    fn start_params(&mut self, base: MigrationParams) -> MigrationParams {
        MigrationParams {
            multifd_channels: (base.multifd_channels * self.channel_factor)
                .min(MAX_CHANNELS.max(base.multifd_channels)),
            ..base
        }
    }

    fn tune(&mut self, view: &View<'_>) -> Vec<Action> {
        let Some(best) = self.best_recent() else {
            return Vec::new();
        };
        let now = view.now.as_secs_f64();
        let period = self.period;
        let mut actions = Vec::new();
        for migration in &view.observations.migrations {
            let host = view.fleet.vm(migration.vm).host;
            let Some(deadline) = view.fleet.host(host).power_off_at else {
                continue;
            };
            let left = deadline.as_secs_f64() - now;
            let remaining = migration.bytes_remaining.as_f64();
            if remaining / best > left {
                actions.push(Action::Cancel { vm: migration.vm });
                continue;
            }
            if migration.phase != Phase::Precopy {
                continue;
            }
            let rate = migration.rate.to_bytes_per_sec().0;
            if rate <= 0.0 {
                continue;
            }
            // Precopy ends when the dirty bytes shrink to the downtime
            // limit, or else after `max_rounds`, each round resending about
            // the working set.
            let gaining = rate - migration.dirty_rate.0;
            let working_set = view.fleet.vm(migration.vm).working_set.as_f64();
            let precopy_left = if gaining > 0.0 {
                remaining / gaining
            } else {
                let rounds_left = migration.params.max_rounds.saturating_sub(migration.round);
                (remaining + f64::from(rounds_left) * working_set) / rate
            };
            // The paused copy sends what is left of the round and, at most,
            // the working set dirtied since. Pausing costs downtime, so it
            // waits for the last safe moment (with half again as margin, and
            // two periods for the decision to act): the WAN may recover.
            let offline = (remaining + working_set) / rate;
            let last_safe_moment = 1.5 * offline + 2.0 * period;
            if precopy_left > left && left <= last_safe_moment {
                actions.push(Action::SwitchToOffline { vm: migration.vm });
            }
        }
        actions
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
            let mut quiet = 0;
            while w.size == 1 {
                w.update(BitsPerSec(100.0), 1, &params);
                quiet += 1;
            }
            waits.push(quiet);
        }
        assert_eq!(waits, [10, 20, 40, 80, 120, 120]);
        // Capacity came back: this probe pays, and after the next useless
        // one the wait is the base one, doubled once.
        w.update(BitsPerSec(400.0), 2, &params);
        assert_eq!(w.size, 3, "the probe bought bandwidth: keep it, add one");
        w.update(BitsPerSec(400.0), 3, &params);
        assert_eq!(w.size, 2, "this one did not");
        let mut quiet = 0;
        while w.size == 2 {
            w.update(BitsPerSec(400.0), 2, &params);
            quiet += 1;
        }
        assert_eq!(
            quiet,
            2 * REPROBE_AFTER_PERIODS,
            "reset to the base, doubled once"
        );
    }

    #[test]
    fn a_window_that_reprobes_on_change_waits_for_the_throughput_to_move() {
        let params = AimdParams::default();
        let mut w = Window::with_reprobe(Reprobe::OnChange);
        w.update(BitsPerSec(100.0), 1, &params);
        assert_eq!(w.size, 2, "the first measurement probes");
        w.update(BitsPerSec(100.0), 2, &params);
        assert_eq!(w.size, 1, "the probe bought nothing");
        for _ in 0..1000 {
            w.update(BitsPerSec(101.0), 1, &params);
        }
        assert_eq!(w.size, 1, "no blind probe however long it is quiet");
        w.update(BitsPerSec(150.0), 1, &params);
        assert_eq!(w.size, 2, "the capacity rose: probe");
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
