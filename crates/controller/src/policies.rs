//! How many migrations run at once.
//!
//! | policy | rule |
//! |---|---|
//! | `sequential` | one at a time across the whole site |
//! | `parallel` | everything at once |
//! | `static` | at most `max_in_flight` across the site and `max_in_flight_per_host` per source host |
//! | `aimd-local` | one AIMD window per source host, fed by that host's NIC throughput only |
//! | `aimd-global` | one AIMD window for the site, fed by the aggregate throughput, its slots spread over hosts |
//!
//! AIMD borrows TCP's congestion avoidance: a window `w` of migrations in
//! flight starts at 1. At the end of every control period the measured
//! throughput is compared with the previous period's. If it rose by more
//! than `increase_margin`, the last migration added still bought bandwidth,
//! so `w += 1`; if it fell by more than `decrease_margin`, the network got
//! worse or is oversubscribed, so `w = max(1, w / 2)`; otherwise `w` holds.

use std::fmt;

use evac_model::{BitsPerSec, Fleet, HostId};
use serde::{Deserialize, Serialize};

use crate::{Admission, ControllerConfig, PerHost, Policy, View};

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
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 5] = [
        PolicyKind::Sequential,
        PolicyKind::Parallel,
        PolicyKind::Static,
        PolicyKind::AimdLocal,
        PolicyKind::AimdGlobal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Sequential => "sequential",
            PolicyKind::Parallel => "parallel",
            PolicyKind::Static => "static",
            PolicyKind::AimdLocal => "aimd-local",
            PolicyKind::AimdGlobal => "aimd-global",
        }
    }

    /// The policy, configured from the `[controller]` table.
    pub fn build(self, fleet: &Fleet, config: &ControllerConfig) -> Box<dyn Policy + Send> {
        match self {
            PolicyKind::Sequential => Box::new(Fixed(Admission {
                total: 1,
                per_host: PerHost::Unlimited,
                spread_over_hosts: false,
            })),
            PolicyKind::Parallel => Box::new(Fixed(Admission {
                total: usize::MAX,
                per_host: PerHost::Unlimited,
                spread_over_hosts: false,
            })),
            PolicyKind::Static => Box::new(Fixed(Admission {
                total: config.max_in_flight,
                per_host: PerHost::Each(config.max_in_flight_per_host),
                spread_over_hosts: false,
            })),
            PolicyKind::AimdLocal => Box::new(AimdLocal::new(fleet, config.aimd)),
            PolicyKind::AimdGlobal => Box::new(AimdGlobal::new(config.aimd)),
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
}

/// One AIMD window.
#[derive(Debug, Clone)]
struct Window {
    size: usize,
    last_throughput: Option<BitsPerSec>,
}

impl Window {
    fn new() -> Self {
        Self {
            size: 1,
            last_throughput: None,
        }
    }

    /// Moves the window after a period with `throughput`, during which
    /// `in_flight` migrations ran.
    fn update(&mut self, throughput: BitsPerSec, in_flight: usize, params: &AimdParams) {
        if let Some(last) = self.last_throughput {
            if throughput.0 > last.0 * (1.0 + params.increase_margin) {
                // Grow only a window that is in use: a window with free
                // slots learns nothing from a rise.
                if in_flight >= self.size {
                    self.size = (self.size + 1).min(params.max_window);
                }
            } else if throughput.0 < last.0 * (1.0 - params.decrease_margin) {
                self.size = (self.size / 2).max(1);
            }
        }
        self.last_throughput = Some(throughput);
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
        }
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
        if let Some(throughput) = view.period_throughput {
            let total = view.fleet.source_hosts().map(|h| throughput[h.0].0).sum();
            self.window.update(BitsPerSec(total), view.total_in_flight(), &self.params);
        }
        Admission {
            total: self.window.size,
            per_host: PerHost::Unlimited,
            spread_over_hosts: true,
        }
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
        assert_eq!(w.size, 1, "the first sample has nothing to compare with");
        w.update(BitsPerSec(200.0), 1, &params);
        assert_eq!(w.size, 2);
        w.update(BitsPerSec(300.0), 2, &params);
        assert_eq!(w.size, 3);
        w.update(BitsPerSec(303.0), 3, &params);
        assert_eq!(w.size, 3, "1 % is noise");
        w.update(BitsPerSec(400.0), 1, &params);
        assert_eq!(w.size, 3, "a window with free slots does not grow");
        w.update(BitsPerSec(100.0), 3, &params);
        assert_eq!(w.size, 1, "floor(3 / 2) = 1");
        w.update(BitsPerSec(10.0), 1, &params);
        assert_eq!(w.size, 1, "never below one");
    }

    #[test]
    fn policy_names_round_trip() {
        for kind in PolicyKind::ALL {
            assert_eq!(kind.as_str().parse::<PolicyKind>(), Ok(kind));
        }
        assert!("aimd".parse::<PolicyKind>().unwrap_err().contains("aimd-global"));
    }
}
