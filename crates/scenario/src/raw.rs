//! The scenario file exactly as written: read by serde, not yet checked.
//!
//! Every table refuses keys it does not know, so that a misspelt field is an
//! error rather than a silently ignored default.

use std::time::Duration;

use evac_controller::ControllerConfig;
use evac_model::units::human_duration;
use evac_model::wall_clock::{PowerOffAt, Timestamp};
use evac_model::{BitsPerSec, Bytes, BytesPerSec, DirtyPoint, MigrationParams, Site};
use serde::Deserialize;

use crate::spec::{Ratio, Share, Spec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScenario {
    pub name: Option<String>,
    #[serde(default)]
    pub seed: u64,
    /// The evacuation's start on the wall clock, against which power-offs
    /// given as times resolve; absent: when the file is read.
    #[serde(default, with = "evac_model::wall_clock::instant")]
    pub start: Option<Timestamp>,
    pub network: RawNetwork,
    #[serde(default)]
    pub migration: MigrationParams,
    #[serde(default)]
    pub controller: ControllerConfig,
    #[serde(default)]
    pub host: Vec<RawHost>,
    #[serde(default)]
    pub vm: Vec<RawVm>,
    #[serde(default)]
    pub vm_group: Vec<RawGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetwork {
    pub wan_bandwidth: BitsPerSec,
    #[serde(default = "evac_model::Network::default_rtt", with = "human_duration")]
    pub wan_rtt: Duration,
    #[serde(default = "evac_model::Network::default_tcp_window")]
    pub tcp_window: Bytes,
    #[serde(default)]
    pub wan_trace: Vec<RawTracePoint>,
}

/// [`evac_model::TracePoint`] does not refuse unknown keys; this does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTracePoint {
    #[serde(with = "human_duration")]
    pub at: Duration,
    pub bandwidth: BitsPerSec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHost {
    pub name: String,
    pub site: Site,
    pub nic: BitsPerSec,
    #[serde(default)]
    pub memory: Option<Bytes>,
    #[serde(default)]
    pub power_off_at: Option<PowerOffAt>,
    pub migration_cpus: Option<f64>,
    #[serde(default)]
    pub power_trace: Vec<RawPowerChange>,
}

/// One announced change of a host's power-off: at `at` the power-off is
/// now `power_off_at` (`"none"` or absent: no power-off any more).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPowerChange {
    #[serde(with = "human_duration")]
    pub at: Duration,
    #[serde(default, with = "evac_model::wall_clock::or_none")]
    pub power_off_at: Option<PowerOffAt>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVm {
    pub name: String,
    pub host: String,
    pub memory: Bytes,
    pub dirty_rate: Option<BytesPerSec>,
    pub working_set: Option<Bytes>,
    #[serde(default = "default_priority")]
    pub priority: u32,
    pub destination: Option<String>,
    /// Local disk bytes copied ahead of the memory.
    #[serde(default)]
    pub disk: Bytes,
    pub dirty_curve: Option<Vec<DirtyPoint>>,
    pub zero_fraction: Option<f64>,
    pub compression_ratio: Option<f64>,
}

/// One `[[vm]]` table read on its own (`crate::split`): a document whose
/// `vm` array has that one entry.
#[derive(Debug, Deserialize)]
pub(crate) struct RawVmTable {
    pub vm: Vec<RawVm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    pub prefix: String,
    pub count: u32,
    /// A source host's name, or [`ROUND_ROBIN`].
    pub host: String,
    pub memory: Spec<Bytes>,
    pub dirty_rate: Option<Spec<BytesPerSec>>,
    pub working_set: Option<Spec<Bytes>>,
    #[serde(default = "default_priority")]
    pub priority: u32,
    pub destination: Option<String>,
    /// Local disk bytes of each VM, copied ahead of its memory.
    #[serde(default = "no_disk")]
    pub disk: Spec<Bytes>,
    /// The same curve for every VM of the group.
    pub dirty_curve: Option<Vec<DirtyPoint>>,
    pub zero_fraction: Option<Spec<Share>>,
    pub compression_ratio: Option<Spec<Ratio>>,
}

/// `host = "round-robin"` in a `[[vm_group]]`: spread the VMs over the
/// source hosts in file order.
pub(crate) const ROUND_ROBIN: &str = "round-robin";

fn default_priority() -> u32 {
    1
}

fn no_disk() -> Spec<Bytes> {
    Spec::Fixed(Bytes::ZERO)
}
