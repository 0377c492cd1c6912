//! Planning by simulation: when to roll out the candidate plans, rolling
//! them out, and following the fixed plan they chose.

use evac_model::{BytesPerSec, TracePoint, VmId};

use super::{Deadline, REPLAN_CHANGE, ROLLOUT_EVERY_S};

use crate::rollout::{self, Candidate, FixedPlan, Forecast, Situation, Verdict};
use crate::{Admission, PerHost, View};

/// Steps of the replayed WAN within this (relative) of the one before are
/// one step: a rollout's cost grows with the WAN's changes.
const REPLAY_MERGE: f64 = 0.10;
/// The least history worth replaying, seconds.
const REPLAY_MIN_SPAN_S: f64 = 60.0;
/// How far ahead the replay reaches at most, seconds.
const REPLAY_UNTIL_S: f64 = 36_000.0;
/// The most steps in one replayed forecast.
const REPLAY_MAX_STEPS: usize = 4_096;

impl Deadline {
    /// Whether the rollouts' choice is due: never made, older than
    /// [`ROLLOUT_EVERY_S`], or made at a mean capacity that has since moved
    /// by [`REPLAN_CHANGE`].
    pub(super) fn needs_rollout(&self, now: f64) -> bool {
        let Some(mean) = self.estimator.mean(now) else {
            return false;
        };
        match self.rolled_out {
            None => true,
            Some((at, then)) => now - at >= ROLLOUT_EVERY_S || (mean - then).abs() > REPLAN_CHANGE * then,
        }
    }

    /// Simulates the candidate plans from now under a likely, a pessimistic
    /// and an optimistic WAN, each constant, and the WAN's last minutes
    /// replayed, as many as the compute budget allows, and
    /// follows the one that saves the most.
    pub(super) fn roll_out(&mut self, view: &View<'_>) {
        let Some(rollout) = self.rollout.clone() else {
            return;
        };
        // Until a rollout chooses again, the planner's own plan; the plan
        // followed so far is weighed again first among the others.
        let incumbent = std::mem::replace(&mut self.follow, Candidate::Planner);
        let now = view.now.as_secs_f64();
        let (Some(mean), Some(peak)) = (self.estimator.mean(now), self.estimator.peak()) else {
            return;
        };
        self.rolled_out = Some((now, mean));
        // Forecasts need the WAN seen full: a capacity measured only as the
        // sum of migrations held by their own caps is a floor, and a plan
        // chosen for a WAN that small would start too few to ever show it
        // larger (the planner's own admission probes above a floor).
        if !self.estimator.wan_known() || self.estimator.peak_is_floor() {
            return;
        }
        let waiting: Vec<VmId> = self.waiting(now);
        if waiting.is_empty() {
            return;
        }
        // Likely first: it breaks ties on time.
        let trough = self.estimator.trough().unwrap_or(mean).min(mean);
        let mut forecasts = vec![mean];
        for wan in [trough, peak] {
            if forecasts.iter().all(|&f| (f - wan).abs() > 0.01 * f) {
                forecasts.push(wan);
            }
        }
        let mut forecasts: Vec<Forecast> = forecasts
            .into_iter()
            .map(|bytes_per_sec| Forecast {
                wan: BytesPerSec(bytes_per_sec).to_bits_per_sec(),
                trace: Vec::new(),
            })
            .collect();
        // And the last minutes again and again: the constant WANs miss a
        // stall or a dip that comes back, through which live precopy
        // re-sends what the guests dirty while offline sends each page
        // once (docs/planner.md, "The WAN's last minutes replayed").
        forecasts.extend(self.replay(now));
        let vms = waiting.len() + view.observations.migrations.len();
        let candidates = rollout::within_budget(
            rollout::candidates(self.base.connections, self.base.mode),
            forecasts.len(),
            vms,
            self.rollouts,
            incumbent,
        );
        self.rollouts += 1;
        if candidates.len() < 2 {
            self.follow = Candidate::Planner;
            return;
        }
        let situation = Situation {
            now,
            fleet: view.fleet,
            waiting: &waiting,
            in_flight: &view.observations.migrations,
            committed: view.committed,
        };
        let verdicts: Vec<Vec<Verdict>> = candidates
            .iter()
            .map(|&c| {
                forecasts
                    .iter()
                    .map(|f| rollout.evaluate(&situation, c, f))
                    .collect()
            })
            .collect();
        self.follow = candidates[rollout::best(&candidates, &verdicts)];
    }

    /// The WAN's last [`crate::estimate::HORIZON_S`] again and again, to the
    /// last power-off: a forecast that expects the dips, stalls and saws
    /// just seen to come back, where the trough's forecast expects the
    /// worst of them to last. `None` if the WAN did not vary.
    pub(super) fn replay(&self, now: f64) -> Option<Forecast> {
        let (steps, span) = self.estimator.replay(now, REPLAY_MERGE)?;
        if steps.len() < 2 || span < REPLAY_MIN_SPAN_S {
            return None;
        }
        let until = self
            .fleet_deadline
            .iter()
            .flatten()
            .fold(0.0_f64, |a, &d| a.max(d - now))
            .min(REPLAY_UNTIL_S);
        let bps = |bytes_per_sec: f64| BytesPerSec(bytes_per_sec).to_bits_per_sec();
        let mut trace = Vec::new();
        let mut base = 0.0;
        'cycles: while base < until {
            for &(at, c) in &steps {
                let t = base + at;
                if t >= until || trace.len() >= REPLAY_MAX_STEPS {
                    break 'cycles;
                }
                // A cycle that ends where the next begins is one step.
                if trace.last().is_some_and(|p: &TracePoint| p.bandwidth == bps(c)) {
                    continue;
                }
                trace.push(TracePoint {
                    at: std::time::Duration::from_secs_f64(t),
                    bandwidth: bps(c),
                });
            }
            base += span;
        }
        Some(Forecast {
            wan: bps(steps[0].1),
            trace,
        })
    }

    /// The admission of a fixed plan the rollouts chose: the VMs waiting
    /// in its order, within its limits.
    pub(super) fn follow_fixed(&mut self, view: &View<'_>, plan: FixedPlan) -> Admission {
        let now = view.now.as_secs_f64();
        let mut picks: Vec<VmId> = self.waiting(now);
        plan.order.sort(view.fleet, &mut picks);
        Admission {
            total: plan.window,
            per_host: PerHost::Each(plan.per_host),
            spread_over_hosts: false,
            picks: Some(picks),
        }
    }
}
