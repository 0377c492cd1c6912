//! What the simulator's tests share: one simulation of a fleet under a
//! policy, and the comparison of two results but for float rounding.

#![allow(dead_code)] // each test file uses some of these

use evac_controller::{ControllerConfig, PolicyKind};
use evac_model::{Fleet, MigrationParams, Network};
use evac_outcome::RunResult;
use serde_json::Value;

/// One random evacuation of the property tests.
#[derive(Debug, Clone)]
pub struct Case {
    pub fleet: Fleet,
    pub network: Network,
    pub params: MigrationParams,
    pub policy: PolicyKind,
}

/// A WAN trace from `(seconds since the previous point, Mbps)` steps.
pub fn trace_of(steps: impl IntoIterator<Item = (u64, f64)>) -> Vec<evac_model::TracePoint> {
    let mut at = 0;
    steps
        .into_iter()
        .map(|(step, mbps)| {
            at += step;
            evac_model::TracePoint {
                at: std::time::Duration::from_secs(at),
                bandwidth: evac_model::BitsPerSec::mbps(mbps),
            }
        })
        .collect()
}

/// `fleet` evacuated over `network` with `params` under `policy`, the
/// controller's other settings their defaults.
pub fn simulate(fleet: &Fleet, network: &Network, params: MigrationParams, policy: PolicyKind) -> RunResult {
    let config = ControllerConfig {
        policy,
        ..ControllerConfig::default()
    };
    evac_sim::simulate_evacuation(fleet, network, params, &config)
}

/// Equal but for float rounding: numbers within 1e-9 relative (byte counts,
/// rounded to whole bytes, within one byte more; the run's total, a sum of
/// the VMs' rounded counts, within one byte per VM the cases hold, 64),
/// everything else exactly.
pub fn same(path: &str, a: &Value, b: &Value) -> Result<(), String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            let slack = if path == "result.bytes_sent" {
                64.0
            } else if path.contains("bytes") {
                1.0
            } else {
                1e-9
            };
            if (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) + slack {
                Ok(())
            } else {
                Err(format!("{path}: left {x} right {y}"))
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Err(format!("{path}: {} entries against {}", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .try_for_each(|(i, (x, y))| same(&format!("{path}[{i}]"), x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return Err(format!("{path}: fields differ"));
            }
            x.iter().try_for_each(|(k, v)| match y.get(k) {
                Some(w) => same(&format!("{path}.{k}"), v, w),
                None => Err(format!("{path}.{k} missing")),
            })
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{path}: left {a} right {b}")),
    }
}
