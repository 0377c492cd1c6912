//! Planning by simulation: when to roll out the candidate plans, rolling
//! them out, and following the fixed plan they chose.

use evac_model::VmId;

use super::{Deadline, REPLAN_CHANGE, ROLLOUT_EVERY_S};
use crate::rollout::{self, Candidate, FixedPlan, Forecast, Situation, Verdict};
use crate::{Admission, PerHost, View};

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

    /// Simulates the candidate plans from now under a pessimistic, a likely
    /// and an optimistic WAN, as many as the compute budget allows, and
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
        let forecasts: Vec<Forecast> = forecasts
            .into_iter()
            .map(|bytes_per_sec| Forecast {
                wan: evac_model::BitsPerSec(bytes_per_sec * 8.0),
            })
            .collect();
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
        };
        let verdicts: Vec<Vec<Verdict>> = candidates
            .iter()
            .map(|&c| {
                forecasts
                    .iter()
                    .map(|&f| rollout.evaluate(&situation, c, f))
                    .collect()
            })
            .collect();
        self.follow = candidates[rollout::best(&candidates, &verdicts)];
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
