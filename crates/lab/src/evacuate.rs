//! Evacuates a built lab with the real run loop and predicts the same
//! evacuation with the simulator, VM by VM.

use std::fmt::Write as _;
use std::future::Future;

use anyhow::{Context, Result};
use evac_controller::PolicyKind;
use evac_report::RunResult;

use crate::instance::LabInstance;

/// The policies an experiment runs: those named, comma-separated, in the
/// environment variable `var` (e.g. `FIDELITY_POLICIES=sequential,parallel`),
/// else `default`. A name that is no policy is an error naming `var`.
pub fn policies_from_env(var: &str, default: &[PolicyKind]) -> Result<Vec<PolicyKind>> {
    let Ok(only) = std::env::var(var) else {
        return Ok(default.to_vec());
    };
    only.split(',')
        .map(|p| p.trim().parse::<PolicyKind>().map_err(anyhow::Error::msg))
        .collect::<Result<_>>()
        .with_context(|| var.to_owned())
}

/// A lab evacuation: what happened and what the simulator predicted.
#[derive(Debug, Clone)]
pub struct LabRun {
    pub measured: RunResult,
    pub prediction: RunResult,
}

/// [`evacuate`] under `policy` to its end, its log discarded: what the
/// experiments and tests that set a run beside its prediction want.
pub async fn evacuate_quietly(lab: &mut LabInstance, policy: PolicyKind) -> Result<LabRun> {
    evacuate(
        lab,
        Some(policy),
        Some(std::sync::Arc::new(|_: &str| {})),
        std::future::pending(),
    )
    .await
}

/// Runs the lab's evacuation (its `[controller]` policy, or `policy`)
/// through `evac-qemu`'s run loop, following the WAN trace from its start;
/// `shutdown` cancels it as Ctrl-C cancels `evac run`. The simulator's
/// prediction is of the lab's scenario with the same policy.
pub async fn evacuate(
    lab: &mut LabInstance,
    policy: Option<PolicyKind>,
    log: Option<evac_qemu::Log>,
    shutdown: impl Future<Output = ()>,
) -> Result<LabRun> {
    let mut controller = lab.scenario.controller.clone();
    if let Some(policy) = policy {
        controller.policy = policy;
    }
    let prediction = evac_sim::simulate_evacuation(
        &lab.scenario.fleet,
        &lab.scenario.network,
        lab.scenario.migration,
        &controller,
    );
    let options = evac_qemu::RunOptions {
        policy: Some(controller.policy),
        log,
        // `deadline` plans by simulation, as `evac run` and the prediction
        // do: without it the lab's deadline was another planner than the
        // one it was compared with (`decisions`).
        plan_with: Some(std::sync::Arc::new(|network, params, config| {
            std::sync::Arc::new(evac_sim::rollout::SimRollout::new(network, params, config))
        })),
        ..Default::default()
    };
    lab.start_trace();
    let output = evac_qemu::run_with_options(lab.inventory.clone(), options, shutdown).await?;
    Ok(LabRun {
        measured: output.result,
        prediction,
    })
}

/// `(measured - predicted) / measured`, as a percentage.
pub fn relative_error(measured: f64, predicted: f64) -> Option<f64> {
    (measured != 0.0 && measured.is_finite() && predicted.is_finite())
        .then(|| (predicted - measured) / measured * 100.0)
}

fn cell(measured: Option<f64>, predicted: Option<f64>, unit: &str, digits: usize) -> String {
    let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    let error = match (measured, predicted) {
        (Some(m), Some(p)) => relative_error(m, p).map_or(String::new(), |e| format!(" ({e:+.0} %)")),
        _ => String::new(),
    };
    format!("{} / {}{unit}{error}", show(measured), show(predicted))
}

/// Start times side by side: an absolute error, not a relative one (a
/// start at 0 s has none), so a policy's decisions that diverge from the
/// prediction's show apart from the model's error in the times.
fn starts(measured: Option<f64>, predicted: Option<f64>) -> String {
    let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    match (measured, predicted) {
        (Some(m), Some(p)) => format!("{} / {} ({:+.2} s)", show(measured), show(predicted), p - m),
        _ => format!("{} / {}", show(measured), show(predicted)),
    }
}

impl LabRun {
    /// A markdown table, one row per VM and one for the whole evacuation:
    /// measured / predicted, and the prediction's error relative to the
    /// measured value.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| VM | outcome lab / sim | start (s) lab / sim | migration time (s) lab / sim | sent (MiB) lab / sim | downtime (ms) lab / sim |\n\
             |---|---|---:|---:|---:|---:|\n",
        );
        for (m, p) in self.measured.vms.iter().zip(&self.prediction.vms) {
            let mib = |v: Option<u64>| v.map(|b| b as f64 / (1u64 << 20) as f64);
            let ms = |v: Option<f64>| v.map(|s| s * 1e3);
            let _ = writeln!(
                out,
                "| {} | {:?} / {:?} | {} | {} | {} | {} |",
                m.name,
                m.outcome,
                p.outcome,
                starts(m.start_s, p.start_s),
                cell(m.migration_time_s, p.migration_time_s, "", 2),
                cell(mib(m.bytes_sent), mib(p.bytes_sent), "", 0),
                cell(ms(m.downtime_s), ms(p.downtime_s), "", 0),
            );
        }
        let mib = |b: u64| Some(b as f64 / (1u64 << 20) as f64);
        let _ = writeln!(
            out,
            "| total | {} migrated / {} | | {} | {} | |",
            self.measured.migrated,
            self.prediction.migrated,
            cell(self.measured.total_time_s, self.prediction.total_time_s, "", 2),
            cell(
                mib(self.measured.bytes_sent),
                mib(self.prediction.bytes_sent),
                "",
                0
            ),
        );
        out
    }

    /// The measured run in `evac run`'s JSON format, plus `prediction`: the
    /// simulator's result for the same lab.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(&self.measured).expect("a RunResult serializes");
        value["prediction"] = serde_json::to_value(&self.prediction).expect("a RunResult serializes");
        serde_json::to_string_pretty(&value).expect("JSON serializes")
    }
}

/// How far a prediction is from the measurement: absolute relative errors
/// (percent of the measured value) over the VMs that migrated in both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fidelity {
    pub time_median: f64,
    pub time_worst: f64,
    pub bytes_median: f64,
    pub bytes_worst: f64,
    pub total: f64,
}

fn median_and_worst(mut errors: Vec<f64>) -> (f64, f64) {
    if errors.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    errors.sort_by(f64::total_cmp);
    let n = errors.len();
    let median = if n % 2 == 1 {
        errors[n / 2]
    } else {
        (errors[n / 2 - 1] + errors[n / 2]) / 2.0
    };
    (median, errors[n - 1])
}

impl LabRun {
    /// The prediction's errors, VM by VM and in total.
    pub fn fidelity(&self) -> Fidelity {
        let pairs = || self.measured.vms.iter().zip(&self.prediction.vms);
        let abs = |m: Option<f64>, p: Option<f64>| match (m, p) {
            (Some(m), Some(p)) => relative_error(m, p).map(f64::abs),
            _ => None,
        };
        let time = pairs()
            .filter_map(|(m, p)| abs(m.migration_time_s, p.migration_time_s))
            .collect();
        let bytes = pairs()
            .filter_map(|(m, p)| abs(m.bytes_sent.map(|b| b as f64), p.bytes_sent.map(|b| b as f64)))
            .collect();
        let (time_median, time_worst) = median_and_worst(time);
        let (bytes_median, bytes_worst) = median_and_worst(bytes);
        Fidelity {
            time_median,
            time_worst,
            bytes_median,
            bytes_worst,
            total: abs(self.measured.total_time_s, self.prediction.total_time_s).unwrap_or(f64::NAN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_relative_to_the_measured_value() {
        assert_eq!(relative_error(10.0, 12.0), Some(20.0));
        assert_eq!(relative_error(10.0, 8.0), Some(-20.0));
        assert_eq!(relative_error(0.0, 1.0), None);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median_and_worst(vec![4.0, 1.0, 3.0, 2.0]), (2.5, 4.0));
        assert_eq!(median_and_worst(vec![5.0, 1.0, 3.0]), (3.0, 5.0));
    }
}
