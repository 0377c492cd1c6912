//! What the `deadline` planner knows of its bottlenecks: the WAN's capacity,
//! each source host's NIC, and the most one TCP connection carries.
//!
//! Only the NICs' speeds are configuration (a host knows its own link); the
//! WAN's capacity is measured, from the rates of the migrations in flight.
//! A sample tells the capacity only when the path was full: when some
//! migration ran below its own connections' cap, its source NIC's share and
//! its destination NIC's share, something further on held it back, and the
//! sum of the rates is the WAN's capacity; or when the destinations' NICs
//! together were full, so that nothing more could cross whatever the WAN.
//! When every migration ran at its own cap, the sum is only a floor: the
//! WAN may carry more. (A migration held by its destination's NIC once
//! counted as held by the WAN: behind two destinations of 1 Gbit/s each,
//! one migration at 1 Gbit/s said "the WAN carries 1 Gbit/s", and the
//! planner moved one VM at a time, the other destination idle, for the
//! whole evacuation: docs/planner.md.)
//!
//! Two figures come out, each for its own use:
//!
//! - **`peak`**, the most the WAN carried over the last [`HORIZON_S`]: what
//!   the migrations in flight are sized to fill. Sized to the peak, they
//!   already ask for more than the WAN gives in a low phase, so the moment
//!   the capacity comes back it shows in the throughput: no probe is needed
//!   to find it, and none is irrevocably started on a transient rise.
//! - **`mean`**, the time-weighted mean of the capacity over the same
//!   horizon: what the plan counts on to deliver before each deadline. On a
//!   WAN that alternates between two levels it is their average, which is
//!   what a deadline minutes away will get, where the last sample (high or
//!   low) would swing the plan with every change.

use std::collections::VecDeque;

use evac_model::{Connections, Fleet, HostId, MigrationParams};

use crate::MigrationObs;

/// How far back the estimates look, seconds: several phases of a WAN whose
/// capacity changes every 30 to 90 s.
pub const HORIZON_S: f64 = 300.0;

/// A migration within this fraction of a cap is held by that cap.
const AT_CAP: f64 = 0.97;

/// The bottlenecks as measured.
#[derive(Debug, Clone)]
pub struct Estimator {
    /// Per host: its NIC's capacity, bytes per second.
    nic: Vec<f64>,
    /// Per host: its NIC's capacity if it is a destination (infinite for a
    /// source), bytes per second.
    destination_nic: Vec<f64>,
    /// The destinations' NICs together, bytes per second: the most that
    /// can cross, whatever the WAN.
    into_destinations: f64,
    /// The fastest destination's NIC, bytes per second: the most one
    /// migration can carry, whatever the WAN.
    fastest_destination: f64,
    /// The most one connection carries, bytes per second: from the RTT and
    /// window if the operator gave them, raised by any faster connection
    /// seen.
    per_connection: Option<f64>,
    /// `(time, capacity estimate, only a floor)`, oldest first, over
    /// [`HORIZON_S`]: a floor is a sample where every migration ran at its
    /// own cap, above what any measured capacity said.
    history: VecDeque<(f64, f64, bool)>,
    /// The latest capacity estimate, bytes per second.
    current: Option<f64>,
    /// When a sample first found the path full, if one has.
    first_saturated_at: Option<f64>,
    /// What the history says, worked out when it changes (once per
    /// sample) rather than at every consultation: see [`Summary`].
    summary: Summary,
    /// How long a migration runs before its rate says anything of the WAN,
    /// seconds (see [`Estimator::settling`]).
    settle_s: f64,
    /// See [`Estimator::floor_at_caps`].
    at_caps: bool,
}

/// The figures the planner reads at every consultation, each a pass over
/// the history: kept from one sample to the next, so that a consultation
/// (one per migration that ends, a million at a million VMs) reads them in
/// O(1).
#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    peak: Option<f64>,
    peak_is_floor: bool,
    /// `Σ c_i × (t_{i+1} - t_i)` over the history's closed intervals, in
    /// history order (so [`Estimator::mean`] adds the same terms in the same
    /// order as a pass over the history would).
    settled: f64,
}

/// What one sample showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The sum of the migrations' rates, bytes per second.
    pub throughput: f64,
    /// Whether the path was full (the throughput is the WAN's capacity).
    pub saturated: bool,
}

impl Estimator {
    /// `connection_cap` in bytes per second, if known.
    pub fn new(fleet: &Fleet, connection_cap: Option<f64>) -> Self {
        let destination_nic: Vec<f64> = fleet
            .hosts
            .iter()
            .map(|h| match h.site {
                evac_model::Site::Destination => h.nic.to_bytes_per_sec().0,
                evac_model::Site::Source => f64::INFINITY,
            })
            .collect();
        let destinations = || destination_nic.iter().copied().filter(|c| c.is_finite());
        Self {
            nic: fleet.hosts.iter().map(|h| h.nic.to_bytes_per_sec().0).collect(),
            into_destinations: destinations().sum(),
            fastest_destination: destinations().fold(0.0, f64::max),
            destination_nic,
            per_connection: connection_cap.filter(|c| c.is_finite() && *c > 0.0),
            history: VecDeque::new(),
            current: None,
            first_saturated_at: None,
            summary: Summary::default(),
            settle_s: 0.0,
            at_caps: false,
        }
    }

    /// Takes a migration's rate as a measure of the WAN only once it has
    /// run `seconds` (a driver's first reading of a migration covers its
    /// setup and TCP's ramp).
    pub fn settling(self, seconds: f64) -> Self {
        Self {
            settle_s: seconds,
            ..self
        }
    }

    pub fn nic(&self, host: HostId) -> f64 {
        self.nic[host.0]
    }

    /// What a migration into `host` can carry at most, its NIC shared by
    /// no other, bytes per second (infinite if `host` is no destination).
    pub fn destination_nic(&self, host: HostId) -> f64 {
        self.destination_nic.get(host.0).copied().unwrap_or(f64::INFINITY)
    }

    /// The most one migration can carry into the fastest destination,
    /// bytes per second (infinite with no destination in the fleet).
    pub fn fastest_destination(&self) -> f64 {
        if self.fastest_destination > 0.0 {
            self.fastest_destination
        } else {
            f64::INFINITY
        }
    }

    /// The most one connection carries, bytes per second, if known.
    pub fn per_connection(&self) -> Option<f64> {
        self.per_connection
    }

    /// The most a migration with `connections` connections carries on its
    /// own, bytes per second (unbounded if the connections' cap is unknown).
    pub fn migration_cap(&self, connections: Connections) -> f64 {
        self.per_connection
            .map_or(f64::INFINITY, |c| c * connections.as_f64())
    }

    /// The most a migration with these parameters carries on its own:
    /// its connections' cap and its bandwidth cap, bytes per second.
    pub fn own_cap(&self, params: &MigrationParams) -> f64 {
        let connections = self.migration_cap(params.connections);
        // A branch, not `map_or`: the compiler would otherwise convert the
        // payload of a `None` too, whatever bits lie there, and a denormal
        // among them costs a microcode assist per migration per call.
        match params.max_bandwidth {
            Some(cap) => connections.min(cap.to_bytes_per_sec().0),
            None => connections,
        }
    }

    /// Takes in the migrations in flight at `now`.
    pub fn observe(&mut self, now: f64, migrations: &[MigrationObs]) -> Option<Sample> {
        if migrations.is_empty() {
            return None;
        }
        let mut per_host: std::collections::HashMap<usize, f64> = std::collections::HashMap::new();
        let mut per_destination: std::collections::HashMap<usize, f64> = std::collections::HashMap::new();
        let mut throughput = 0.0;
        for m in migrations {
            let rate = m.rate.to_bytes_per_sec().0;
            let connections = m.params.connections.as_f64();
            if rate > 0.0 && m.params.max_bandwidth.is_none() {
                let per = rate / connections;
                self.per_connection = Some(self.per_connection.map_or(per, |c| c.max(per)));
            }
            throughput += rate;
            *per_host.entry(m.source.0).or_default() += rate;
            *per_destination.entry(m.destination.0).or_default() += rate;
        }
        // A migration held by neither its connections, its bandwidth cap
        // nor its NIC was held by the WAN.
        // One that began within the last two periods is no evidence: it
        // spent part of the period setting up and ramping its TCP window
        // (a real run measures its rate over the whole period), so it runs
        // below its caps with a WAN that has room. Taken as the WAN's
        // measure, such rates made a real fleet of 96 small VMs look like
        // a link of a few Mbit/s.
        // Held by its own cap (connections, bandwidth cap) or its NICs'
        // shares (source and destination); otherwise something further on
        // held it: the WAN.
        let held_by_own_caps = |m: &MigrationObs| {
            let rate = m.rate.to_bytes_per_sec().0;
            let (host, destination) = (m.source.0, m.destination.0);
            rate >= AT_CAP * self.own_cap(&m.params)
                || per_host[&host] >= AT_CAP * self.nic[host]
                || per_destination[&destination] >= AT_CAP * self.destination_nic(m.destination)
        };
        let saturated = migrations
            .iter()
            .filter(|m| {
                // A microsecond's slack: `now` and `started_at` come from
                // different float paths and must not flip the test at
                // exactly the settling time.
                now - m.started_at.as_secs_f64() >= self.settle_s - 1e-6
            })
            .any(|m| !held_by_own_caps(m))
            // The destinations full: the path carries no more, whatever
            // the WAN could.
            || (self.into_destinations > 0.0 && throughput >= AT_CAP * self.into_destinations);
        // Every migration held by its own caps, young or not: the WAN may
        // carry more, and nothing says it does not. A sample where some
        // migration ran below its caps but none had settled says neither:
        // its floor is no reason to start more.
        self.at_caps = !saturated && migrations.iter().all(held_by_own_caps);
        let (estimate, floor) = if saturated {
            self.first_saturated_at.get_or_insert(now);
            (throughput, false)
        } else {
            // A floor: the capacity is at least this, and no sign it fell.
            match self.current {
                Some(c) if c > throughput => (c, false),
                _ => (throughput, true),
            }
        };
        if throughput <= 0.0 && !saturated {
            return Some(Sample {
                throughput,
                saturated,
            });
        }
        self.current = Some(estimate);
        self.history.push_back((now, estimate, floor));
        while self.history.front().is_some_and(|&(t, _, _)| t < now - HORIZON_S) {
            self.history.pop_front();
        }
        self.summarize();
        Some(Sample {
            throughput,
            saturated,
        })
    }

    /// Whether the WAN's capacity has been seen (some sample found the path
    /// full); until then [`Estimator::peak`] is only a floor.
    pub fn wan_known(&self) -> bool {
        self.first_saturated_at.is_some()
    }

    /// How long the WAN has been watched at `now`, seconds: the time since
    /// a sample first found the path full (0 before one has). A decision
    /// that bets the WAN stays as measured (a cancel) weighs this against
    /// the time the bet covers.
    pub fn watched_for(&self, now: f64) -> f64 {
        self.first_saturated_at.map_or(0.0, |at| (now - at).max(0.0))
    }

    /// Whether the latest sample that did not find the path full had every
    /// migration held by its own cap or its NIC: the path has room beyond
    /// them, so it is worth probing above the floor. `false` when a
    /// migration still settling ran below its caps: its rate (setup and
    /// TCP's ramp in a real run's first reading, 0.5-0.7 of the WAN for the
    /// lab's 32 MiB VMs) says nothing either way, and probing on it started
    /// a second migration beside each one in flight on a full WAN where
    /// the simulation, reading the same migration at the WAN's rate,
    /// started none.
    pub fn floor_at_caps(&self) -> bool {
        self.at_caps
    }

    /// The latest estimate, bytes per second.
    #[cfg(test)]
    pub fn current(&self) -> Option<f64> {
        self.current
    }

    /// The most the WAN carried over the horizon, bytes per second.
    pub fn peak(&self) -> Option<f64> {
        self.summary.peak
    }

    /// The lowest capacity measured over the last [`HORIZON_S`] (floors
    /// left out: they only bound it from below), if any: the pessimistic
    /// forecast.
    pub fn trough(&self) -> Option<f64> {
        self.history
            .iter()
            .filter(|&&(_, _, floor)| !floor)
            .map(|&(_, c, _)| c)
            .reduce(f64::min)
    }

    /// The WAN's last [`HORIZON_S`] as steps, each `(seconds since the
    /// first, bytes per second)`, a floor counted as the peak (its
    /// migrations were held by their own caps, not by the WAN), and steps
    /// within `merge` (relative) of the one before folded into it; with the
    /// span they cover (to `now`). `None` before two samples.
    pub fn replay(&self, now: f64, merge: f64) -> Option<(Vec<(f64, f64)>, f64)> {
        let &(first, _, _) = self.history.front()?;
        let peak = self.summary.peak?;
        let span = now - first;
        if self.history.len() < 2 || span <= 0.0 {
            return None;
        }
        let mut steps: Vec<(f64, f64)> = Vec::new();
        for &(t, c, floor) in &self.history {
            let c = if floor { peak.max(c) } else { c };
            match steps.last() {
                Some(&(_, before)) if (c - before).abs() <= merge * before => {}
                _ => steps.push((t - first, c)),
            }
        }
        Some((steps, span))
    }

    /// Whether the [`Estimator::peak`] is only a floor: no sample within
    /// the horizon measured the WAN at (within 3 % of) it; the samples that
    /// reached it had every migration at its own cap (e.g. each at its
    /// NIC), so the WAN may carry more than the peak says, and sizing what
    /// is in flight to the peak alone would never find out. One measured
    /// sample at the peak settles it for the horizon: a WAN exactly as fast
    /// as the NICs in use is probed once per horizon, not at every chance.
    pub fn peak_is_floor(&self) -> bool {
        self.summary.peak_is_floor
    }

    /// The time-weighted mean capacity over the horizon up to `now`, bytes
    /// per second: each estimate holds until the next.
    pub fn mean(&self, now: f64) -> Option<f64> {
        let &(first, _, _) = self.history.front()?;
        let &(last_at, last, _) = self.history.back()?;
        let span = now - first;
        if span <= 0.0 {
            return Some(last);
        }
        Some((self.summary.settled + last * (now - last_at)) / span)
    }

    /// Works the [`Summary`] out from the history, after it changed.
    fn summarize(&mut self) {
        let peak = self.history.iter().map(|&(_, c, _)| c).reduce(f64::max);
        let peak_is_floor = peak.is_some_and(|peak| {
            !self
                .history
                .iter()
                .any(|&(_, c, floor)| !floor && c >= AT_CAP * peak)
        });
        let mut settled = 0.0;
        for (&(t0, c, _), &(t1, _, _)) in self.history.iter().zip(self.history.iter().skip(1)) {
            settled += c * (t1 - t0);
        }
        self.summary = Summary {
            peak,
            peak_is_floor,
            settled,
        };
    }
}

#[cfg(test)]
mod tests {
    use evac_model::{Site, VmId};

    use super::*;
    use crate::testing::{first_round, host, idle_vm};

    fn fleet() -> Fleet {
        Fleet {
            // NICs of 100 and 50 bytes/s, a destination of 1000.
            hosts: vec![
                host("a", Site::Source, 800.0, None),
                host("b", Site::Source, 400.0, None),
                host("d", Site::Destination, 8000.0, None),
            ],
            vms: vec![idle_vm("x", 0), idle_vm("y", 1), idle_vm("z", 0)],
        }
    }

    /// VM `vm` of `fleet` in its first round at `rate` bytes per second.
    fn obs(fleet: &Fleet, vm: usize, rate: f64, connections: u32) -> MigrationObs {
        first_round(VmId(vm), fleet.vms[vm].host, HostId(2), rate * 8.0, connections)
    }

    #[test]
    fn a_migration_below_its_caps_measures_the_wan() {
        let fleet = fleet();
        // Connections carry 20 B/s each; 4 of them could carry 80, the NIC
        // 100: running at 30, the WAN held it.
        let mut e = Estimator::new(&fleet, Some(20.0));
        let s = e.observe(1.0, &[obs(&fleet, 0, 30.0, 4)]).unwrap();
        assert_eq!(
            s,
            Sample {
                throughput: 30.0,
                saturated: true
            }
        );
        assert_eq!(e.current(), Some(30.0));
        assert!(e.wan_known());
    }

    #[test]
    fn a_migration_held_by_its_destination_nic_is_a_floor_until_the_destinations_are_full() {
        // Sources of 800 B/s, destinations of 10 and 20 B/s (30 together),
        // connections of 100 B/s: nothing but the destinations holds these.
        let fleet = Fleet {
            hosts: vec![
                host("a", Site::Source, 6400.0, None),
                host("b", Site::Source, 6400.0, None),
                host("d1", Site::Destination, 80.0, None),
                host("d2", Site::Destination, 160.0, None),
            ],
            vms: vec![idle_vm("x", 0), idle_vm("y", 1)],
        };
        let into = |vm: usize, destination: usize, rate: f64| {
            first_round(VmId(vm), fleet.vms[vm].host, HostId(destination), rate * 8.0, 1)
        };
        let mut e = Estimator::new(&fleet, Some(100.0));
        assert_eq!(e.fastest_destination(), 20.0);
        assert_eq!(e.destination_nic(HostId(0)), f64::INFINITY);
        // One migration at d1's 10 B/s: held by d1, not the WAN: a floor.
        let s = e.observe(10.0, &[into(0, 2, 10.0)]).unwrap();
        assert!(!s.saturated);
        assert!(e.peak_is_floor() && !e.wan_known());
        // Two into d2 sharing its 20 B/s (10 each): still d2's.
        let s = e.observe(20.0, &[into(0, 3, 10.0), into(1, 3, 10.0)]).unwrap();
        assert!(!s.saturated);
        // 10 into d1 and 19.5 into d2: 29.5 of the 30 both take in (97 %
        // is 29.1): the path is full, whatever the WAN: 29.5 is measured.
        let s = e.observe(30.0, &[into(0, 2, 10.0), into(1, 3, 19.5)]).unwrap();
        assert!(s.saturated);
        assert!(e.wan_known());
        assert_eq!(e.current(), Some(29.5));
        // 5 into d1 and 12 into d2: neither full, the WAN held them.
        let s = e.observe(40.0, &[into(0, 2, 5.0), into(1, 3, 12.0)]).unwrap();
        assert!(s.saturated);
        assert_eq!(e.current(), Some(17.0));
    }

    #[test]
    fn the_replay_is_the_history_as_steps_with_floors_at_the_peak() {
        let fleet = fleet();
        let mut e = Estimator::new(&fleet, Some(20.0));
        assert_eq!(e.replay(1.0, 0.1), None);
        // Measured 30 at 1 s, 31 at 2 s (within 10 %: the same step), 10 at
        // 3 s; at 4 s x runs at its 2 connections' cap of 40: a floor, and
        // the highest sample, so the peak: replayed as 40. Then 12 at 5 s.
        e.observe(1.0, &[obs(&fleet, 0, 30.0, 4)]);
        e.observe(2.0, &[obs(&fleet, 0, 31.0, 4)]);
        e.observe(3.0, &[obs(&fleet, 0, 10.0, 4)]);
        e.observe(4.0, &[obs(&fleet, 0, 40.0, 2)]);
        e.observe(5.0, &[obs(&fleet, 0, 12.0, 4)]);
        assert_eq!(e.peak(), Some(40.0));
        let (steps, span) = e.replay(6.0, 0.1).unwrap();
        assert_eq!(steps, [(0.0, 30.0), (2.0, 10.0), (3.0, 40.0), (4.0, 12.0)]);
        assert_eq!(span, 5.0);
    }

    #[test]
    fn migrations_at_their_caps_give_only_a_floor() {
        let fleet = fleet();
        let mut e = Estimator::new(&fleet, Some(20.0));
        // x at its 2 connections' 40, y at its NIC's 50: nothing held by the
        // WAN, which carries at least 90.
        let s = e
            .observe(1.0, &[obs(&fleet, 0, 40.0, 2), obs(&fleet, 1, 50.0, 8)])
            .unwrap();
        assert!(!s.saturated);
        assert_eq!(e.current(), Some(90.0));
        assert!(!e.wan_known());
        // A lower floor later does not lower the estimate.
        e.observe(2.0, &[obs(&fleet, 0, 40.0, 2)]);
        assert_eq!(e.current(), Some(90.0));
    }

    /// With a settling time of 1 s, samples at 0.5 s: a migration below its
    /// caps is no measure of the WAN yet, nor a sign that the WAN has room
    /// (`floor_at_caps` false); one at its connections' cap is (true); once
    /// settled, the one below its caps measures the WAN.
    #[test]
    fn a_settling_migration_below_its_caps_is_no_reason_to_probe() {
        let fleet = fleet();
        let mut e = Estimator::new(&fleet, Some(20.0)).settling(1.0);
        // 4 connections carry 80, the NIC 100: at 30, below both.
        let s = e.observe(0.5, &[obs(&fleet, 0, 30.0, 4)]).unwrap();
        assert!(!s.saturated);
        assert!(!e.floor_at_caps());
        assert!(!e.wan_known());
        // At its 2 connections' 40 (within 3 %: 39): held by its own cap.
        let mut e = Estimator::new(&fleet, Some(20.0)).settling(1.0);
        e.observe(0.5, &[obs(&fleet, 0, 39.0, 2)]);
        assert!(e.floor_at_caps());
        // Beside a second one still settling below its caps: no longer.
        e.observe(0.5, &[obs(&fleet, 0, 40.0, 2), obs(&fleet, 1, 10.0, 2)]);
        assert!(!e.floor_at_caps());
        // Settled (started at 0, seen at 1 s), the one at 30 measures it.
        let mut e = Estimator::new(&fleet, Some(20.0)).settling(1.0);
        let s = e.observe(1.0, &[obs(&fleet, 0, 30.0, 4)]).unwrap();
        assert!(s.saturated);
        assert!(e.wan_known());
    }

    #[test]
    fn an_unknown_connection_cap_is_learnt_from_the_fastest_connection() {
        let fleet = fleet();
        let mut e = Estimator::new(&fleet, None);
        assert_eq!(e.migration_cap(Connections::new(2).unwrap()), f64::INFINITY);
        e.observe(1.0, &[obs(&fleet, 0, 60.0, 3)]);
        assert_eq!(e.per_connection(), Some(20.0));
        assert_eq!(e.migration_cap(Connections::new(4).unwrap()), 80.0);
    }

    #[test]
    fn the_mean_weights_each_level_by_how_long_it_held_and_the_peak_is_the_max() {
        let fleet = fleet();
        let mut e = Estimator::new(&fleet, Some(1000.0));
        // 100 B/s for 60 s, then 40 B/s for 30 s, seen at t = 0, 60, 90.
        e.observe(0.0, &[obs(&fleet, 0, 100.0 * 0.9, 8)]);
        e.observe(60.0, &[obs(&fleet, 0, 40.0, 8)]);
        // (90 × 60 + 40 × 30) / 90 = (5400 + 1200) / 90 = 73.33...
        let mean = e.mean(90.0).unwrap();
        assert!((mean - 6600.0 / 90.0).abs() < 1e-9, "{mean}");
        assert_eq!(e.peak(), Some(90.0));
        // 400 s later only the 40 B/s level is within the horizon.
        e.observe(400.0, &[obs(&fleet, 0, 40.0, 8)]);
        assert_eq!(e.peak(), Some(40.0));
        assert_eq!(e.mean(410.0), Some(40.0));
    }

    /// Six migrations each at its NIC's 10 B/s under a WAN that carries
    /// more: 60 is a floor, and the peak it sets is one; a later sample
    /// where migrations ran below their caps measures the WAN at 55, under
    /// 97 % of the peak (58.2): still a floor; once a sample measures 59
    /// (above 58.2), the peak is settled for the horizon, and 300 s after
    /// that sample it is a floor again.
    #[test]
    fn a_peak_set_by_migrations_at_their_caps_is_a_floor() {
        let fleet = Fleet {
            hosts: (0..7)
                .map(|i| host(&format!("h{i}"), Site::Source, 80.0, None))
                .collect(),
            vms: (0..7).map(|i| idle_vm(&format!("v{i}"), i)).collect(),
        };
        let mut e = Estimator::new(&fleet, Some(100.0));
        let at_nic: Vec<MigrationObs> = (0..6).map(|i| obs(&fleet, i, 10.0, 1)).collect();
        e.observe(0.0, &at_nic);
        assert_eq!(e.peak(), Some(60.0));
        assert!(e.peak_is_floor());
        // 5 × 9 + 10 = 55: the first five held by the WAN.
        let mut held: Vec<MigrationObs> = (0..5).map(|i| obs(&fleet, i, 9.0, 1)).collect();
        held.push(obs(&fleet, 5, 10.0, 1));
        e.observe(10.0, &held);
        assert_eq!(e.peak(), Some(60.0));
        assert!(e.peak_is_floor());
        // 6 × 9 + 5 = 59 on seven hosts, every one below its NIC: the WAN
        // measured at 59.
        let mut measured: Vec<MigrationObs> = (0..6).map(|i| obs(&fleet, i, 9.0, 1)).collect();
        measured.push(obs(&fleet, 6, 5.0, 1));
        e.observe(20.0, &measured);
        assert_eq!(e.peak(), Some(60.0));
        assert!(!e.peak_is_floor());
        // Floors of 60 go on; the measured 59 leaves the horizon at 320 s.
        e.observe(310.0, &at_nic);
        assert!(!e.peak_is_floor());
        e.observe(330.0, &at_nic);
        assert!(e.peak_is_floor());
    }
}
