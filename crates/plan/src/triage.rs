//! Every policy simulated over the live fleet, one recommended, and what
//! it predicts per host and per VM.

use evac_controller::{ControllerConfig, PolicyKind};
use evac_model::{Fleet, MigrationParams, Network, Site};
use evac_outcome::{Outcome, RunResult};
use serde::Serialize;

/// The simulated evacuation under every policy, and the pick.
#[derive(Debug, Clone)]
pub struct Plan {
    /// One result per policy, in [`PolicyKind::ALL`] order.
    pub results: Vec<(PolicyKind, RunResult)>,
    /// The index in `results` of the recommended policy.
    pub recommended: usize,
    /// The settings the recommended result ran with.
    pub controller: ControllerConfig,
    pub migration: MigrationParams,
}

impl Plan {
    pub fn recommended_policy(&self) -> PolicyKind {
        self.results[self.recommended].0
    }
    pub fn recommended_result(&self) -> &RunResult {
        &self.results[self.recommended].1
    }
}

/// Simulates every policy with the inventory's other settings and picks the
/// one that saves the most priority, then the most VMs, then finishes first.
pub fn triage(
    fleet: &Fleet,
    network: &Network,
    migration: MigrationParams,
    controller: &ControllerConfig,
) -> Plan {
    let results: Vec<(PolicyKind, RunResult)> = PolicyKind::ALL
        .iter()
        .map(|&policy| {
            let config = ControllerConfig {
                policy,
                ..controller.clone()
            };
            (
                policy,
                evac_sim::simulate_evacuation(fleet, network, migration, &config),
            )
        })
        .collect();
    let key = |r: &RunResult| {
        (
            r.priority_saved,
            r.migrated,
            // Earlier is better: negate, NaN-free (a run with no migration
            // has no total and ranks last among equals).
            -r.total_time_s.unwrap_or(f64::INFINITY),
        )
    };
    let recommended = (0..results.len())
        .max_by(|&a, &b| {
            let (ka, kb) = (key(&results[a].1), key(&results[b].1));
            ka.0.cmp(&kb.0)
                .then(ka.1.cmp(&kb.1))
                .then(ka.2.total_cmp(&kb.2))
                // Among equals the earlier in ALL order (simpler policy) wins.
                .then(b.cmp(&a))
        })
        .unwrap_or(0);
    Plan {
        controller: ControllerConfig {
            policy: results[recommended].0,
            ..controller.clone()
        },
        results,
        recommended,
        migration,
    }
}

/// The `--json` document of a plan.
#[derive(Debug, Serialize)]
pub struct PlanJson {
    pub recommended_policy: String,
    /// The site's ETA under the recommended policy: its last VM's end.
    pub total_time_s: Option<f64>,
    pub policies: Vec<PolicyRow>,
    pub hosts: Vec<HostEta>,
    pub vms: Vec<VmPrediction>,
    pub measured: Vec<MeasuredVm>,
    /// The setup time per migration the plan counts: whence (`source`:
    /// `inventory`, `measured`, `not_measured`), the probes and their
    /// spread ([`crate::setup::Setup`]).
    pub setup: crate::setup::Setup,
    /// The settings recommended: the inventory's, with the policy set.
    pub settings: Settings,
}

#[derive(Debug, Serialize)]
pub struct PolicyRow {
    pub policy: String,
    pub migrated: usize,
    pub not_moved: usize,
    pub priority_saved: u64,
    pub priority_total: u64,
    pub total_time_s: Option<f64>,
    pub score: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct HostEta {
    pub name: String,
    /// When its last VM would have left (null if some would not).
    pub eta_s: Option<f64>,
    pub power_off_s: Option<f64>,
    /// Power-off minus ETA: the safety margin.
    pub margin_s: Option<f64>,
    pub vms_not_moved: usize,
}

#[derive(Debug, Serialize)]
pub struct VmPrediction {
    pub name: String,
    pub host: String,
    pub outcome: Outcome,
    /// When it would arrive.
    pub end_s: Option<f64>,
    pub migration_time_s: Option<f64>,
    /// Why it would not move; null when it would.
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MeasuredVm {
    pub name: String,
    pub memory_bytes: u64,
    /// What the plan used (measured, or the inventory's word): the short
    /// form's rate and working set (with a curve, its first slope and its
    /// last point), the curve, the zero share and compression ratio.
    pub dirty_rate_bytes_per_second: f64,
    pub working_set_bytes: u64,
    pub dirty_curve: Vec<CurvePoint>,
    pub zero_fraction: f64,
    pub compression_ratio: f64,
    /// Each dirty-rate sample: its length, the memory dirtied within it
    /// and how far above that the truth may be.
    pub dirty_samples: Vec<crate::measure::DirtySample>,
    /// The sample of its pages: its size, the zero share and compression
    /// ratio it found and their standard errors; null when none was read.
    pub content_sample: Option<crate::sample::Content>,
}

#[derive(Debug, Serialize)]
pub struct CurvePoint {
    pub after_s: f64,
    pub dirtied_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub controller: ControllerConfig,
    pub migration: MigrationParams,
}

impl PlanJson {
    /// `measured`: what was measured of each VM of `fleet`, in its order
    /// (may be empty).
    pub fn new(
        plan: &Plan,
        fleet: &Fleet,
        measured: &[crate::Measured],
        setup: &crate::setup::Setup,
    ) -> Self {
        let result = plan.recommended_result();
        let hosts = fleet
            .hosts
            .iter()
            .filter(|h| h.site == Site::Source)
            .map(|h| {
                let vms: Vec<_> = result.vms.iter().filter(|v| v.host == h.name).collect();
                let left = vms.iter().filter(|v| v.outcome != Outcome::Migrated).count();
                let eta = (left == 0).then(|| vms.iter().filter_map(|v| v.end_s).fold(0.0, f64::max));
                let power_off = h.power_off_at.map(|t| t.as_secs_f64());
                HostEta {
                    name: h.name.clone(),
                    eta_s: eta,
                    power_off_s: power_off,
                    margin_s: eta.zip(power_off).map(|(e, p)| p - e),
                    vms_not_moved: left,
                }
            })
            .collect();
        let vms = result
            .vms
            .iter()
            .map(|v| VmPrediction {
                name: v.name.clone(),
                host: v.host.clone(),
                outcome: v.outcome,
                end_s: v.end_s,
                migration_time_s: v.migration_time_s,
                reason: evac_report::summary::reason(result, v),
            })
            .collect();
        PlanJson {
            recommended_policy: plan.recommended_policy().as_str().to_owned(),
            total_time_s: result.total_time_s,
            policies: plan
                .results
                .iter()
                .map(|(p, r)| PolicyRow {
                    policy: p.as_str().to_owned(),
                    migrated: r.migrated,
                    not_moved: r.vms.len() - r.migrated,
                    priority_saved: r.priority_saved,
                    priority_total: r.priority_total,
                    total_time_s: r.total_time_s,
                    score: r.score,
                })
                .collect(),
            hosts,
            vms,
            measured: fleet
                .vms
                .iter()
                .enumerate()
                .map(|(i, v)| MeasuredVm {
                    name: v.name.clone(),
                    memory_bytes: v.memory.0,
                    dirty_rate_bytes_per_second: v.dirty_rate.0,
                    working_set_bytes: v.working_set.0,
                    dirty_curve: v
                        .profile
                        .dirty_curve
                        .iter()
                        .map(|p| CurvePoint {
                            after_s: p.after.as_secs_f64(),
                            dirtied_bytes: p.dirtied.0,
                        })
                        .collect(),
                    zero_fraction: v.profile.zero_fraction,
                    compression_ratio: v.profile.compression_ratio,
                    dirty_samples: measured.get(i).map(|m| m.dirtied.clone()).unwrap_or_default(),
                    content_sample: measured.get(i).and_then(|m| m.content),
                })
                .collect(),
            setup: setup.clone(),
            settings: Settings {
                controller: plan.controller.clone(),
                migration: plan.migration,
            },
        }
    }
}
