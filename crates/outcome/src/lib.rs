//! # evac-outcome
//!
//! What an evacuation achieved, in one format whether it was simulated
//! (`evac simulate`) or real (`evac run`), so the two compare field by field.
//! Plain data only: the rendering (tables, CSV, SVG) lives in `evac-report`,
//! so the simulator and the sweep do not link the plotting and table code.
//!
//! A driver records one [`VmRecord`] per VM and [`TimelinePoint`]s (the
//! simulator whenever the state changes, a real run every period); [`RunResult::summarize`] derives the metrics:
//!
//! - `total_time_s`: the last VM's completion, from the evacuation's start;
//! - mean, 95th percentile (nearest rank) and max of the VMs' own migration
//!   times, and their mean completion time; all over the VMs that migrated;
//! - two lower bounds no policy can beat ([`lower_bounds`]): the earliest
//!   time the WAN could carry all the memory (and local disks), and the mean
//!   over VMs of memory plus disk divided by the best rate one migration
//!   could ever get;
//! - `score = sqrt((total / bound) * (mean migration / bound))`: 1.0 is the
//!   physical limit, and it weighs the evacuation's total time and each VM's
//!   own time together, as the published metric does.
//!
//! [`RunResult`] serializes to the JSON documented in the README.

use std::time::Duration;

use evac_model::{BitsPerSec, Bytes, Fleet, Network, Site};
use serde::{Deserialize, Serialize};

/// How a VM's evacuation ended (JSON `migrated`, `not-migrated`, `lost`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It runs at a destination.
    Migrated,
    /// It still runs on its source host: given up, attempts exhausted, the
    /// horizon reached, the run interrupted. An operator can still move it.
    NotMigrated,
    /// Its source host lost power with it still there (or mid-migration).
    Lost,
}

/// The `reason` of a VM that did not migrate, as drivers write it; a driver
/// may append details after a colon (`"attempts exhausted: <last error>"`).
pub mod reason {
    /// [`Outcome::Lost`](super::Outcome::Lost): its source host powered off.
    pub const POWER_OFF: &str = "its source host lost power";
    /// [`Outcome::Lost`](super::Outcome::Lost): the evacuation ended with it
    /// on a source host whose power-off was still to come.
    pub const LEFT_TO_POWER_OFF: &str = "left on a host that loses power";
    /// The controller left it (hopeless, or nothing could start it) and
    /// the evacuation ended with it on its source.
    pub const GIVEN_UP: &str = "given up";
    /// Every attempt the controller allows failed.
    pub const ATTEMPTS_EXHAUSTED: &str = "attempts exhausted";
    /// The simulated-time horizon came before its migration ended.
    pub const HORIZON: &str = "horizon reached";
    /// The run was interrupted (Ctrl-C, SIGTERM) before it migrated.
    pub const INTERRUPTED: &str = "interrupted";
}

/// One VM's evacuation; `None` (JSON `null`) where a VM that did not
/// migrate has no value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    pub name: String,
    pub host: String,
    pub destination: Option<String>,
    /// When its (last) migration started, from the evacuation's start.
    pub start_s: Option<f64>,
    /// When its stop-and-copy ended.
    pub end_s: Option<f64>,
    pub migration_time_s: Option<f64>,
    pub downtime_s: Option<f64>,
    /// Precopy rounds before stop-and-copy.
    pub rounds: Option<u32>,
    /// Bytes sent for it, stop-and-copy included.
    pub bytes_sent: Option<u64>,
    pub outcome: Outcome,
    /// Why it did not migrate (see [`reason`]); `None` (absent from the
    /// JSON) for a migrated VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How its last migration moved it: live, offline or postcopy (as
    /// switched mid-flight); absent if it was never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<evac_model::Mode>,
    /// The TCP connections of its last migration; absent if never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// Whether its last migration compressed its pages (`zstd`) or not
    /// (`none`), as chosen for it (`auto` resolved); absent if never
    /// started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<evac_model::Compression>,
    /// The controller's account of it, oldest first: when and why it was
    /// started and with what, deferred, switched, cancelled or given up
    /// (the `deadline` planner's; absent for a policy that does not
    /// explain itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<Decision>,
}

/// One decision a controller took about a VM, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Seconds from the evacuation's start.
    pub at_s: f64,
    /// `start`, `plan`, `defer`, `offline`, `postcopy`, `cancel` or
    /// `give-up`.
    pub decision: String,
    /// Why, in words and figures.
    pub why: String,
}

impl VmRecord {
    /// A VM that has not moved (yet): not migrated, its reason to be given
    /// by the driver, unless a migration of it completes.
    pub fn unmoved(name: String, host: String) -> Self {
        Self {
            compression: None,
            name,
            host,
            destination: None,
            start_s: None,
            end_s: None,
            migration_time_s: None,
            downtime_s: None,
            rounds: None,
            bytes_sent: None,
            outcome: Outcome::NotMigrated,
            reason: None,
            mode: None,
            connections: None,
            decisions: Vec::new(),
        }
    }

    /// Marks it not migrated (or lost, for [`reason::POWER_OFF`]) for
    /// `reason`, unless it migrated or already has a reason.
    pub fn left(&mut self, outcome: Outcome, reason: &str) {
        if self.outcome != Outcome::Migrated && self.reason.is_none() {
            self.outcome = outcome;
            self.reason = Some(reason.to_owned());
        }
    }
}

/// The state of the evacuation at one instant: a simulation records a point
/// whenever the WAN's capacity, its throughput or the migrations in flight
/// change (and at the start and the end), so the throughput is constant
/// between two points; a real run records one per control period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    pub t_s: f64,
    /// The WAN's true capacity; `None` on a real run, where it is unknown.
    pub wan_capacity_bps: Option<f64>,
    /// Bytes carried over the WAN since the previous point, as a rate.
    pub wan_throughput_bps: f64,
    /// Migrations in flight once the controller has acted.
    pub in_flight: usize,
}

/// The most points a timeline keeps: beyond it, [`thin_timeline`] halves
/// it. A week of AIMD ticks at 1 s is 604,800 points (some 20 MB); a
/// chart shows no more than a few thousand anyway.
pub const MAX_TIMELINE_POINTS: usize = 100_000;

/// Halves a timeline by merging every other point into the next one: the
/// merged point keeps the later state (capacity, migrations in flight) and
/// the time-weighted mean of the two throughputs, so the bytes carried
/// between any two kept points are exactly what they were. The first and
/// last points are kept as they are.
pub fn thin_timeline(points: &mut Vec<TimelinePoint>) {
    if points.len() < 3 {
        return;
    }
    let last = points.len() - 1;
    let mut kept = 1;
    let mut i = 1;
    while i <= last {
        let mut point = points[i];
        if i < last {
            let (before, first, second) = (points[kept - 1].t_s, points[i], points[i + 1]);
            let span = second.t_s - before;
            point = second;
            if span > 0.0 {
                point.wan_throughput_bps = (first.wan_throughput_bps * (first.t_s - before)
                    + second.wan_throughput_bps * (second.t_s - first.t_s))
                    / span;
            }
            i += 2;
        } else {
            i += 1;
        }
        points[kept] = point;
        kept += 1;
    }
    points.truncate(kept);
}

/// A host of the fleet as the run saw it: the report draws a line where it
/// lost power and says how long before that it was emptied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    pub site: Site,
    /// When it loses power, from the evacuation's start; `None` if never.
    pub power_off_s: Option<f64>,
}

/// A migration attempt that failed or was cancelled, leaving the VM on its
/// source (a later attempt may still have moved it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    pub vm: String,
    pub destination: Option<String>,
    pub start_s: f64,
    pub end_s: f64,
    pub reason: String,
}

/// The result of one evacuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The evac that produced it, with its git commit (`"0.1.0 (abc1234)"`);
    /// set by the `evac` binary, `null` from library callers and absent in
    /// results older than the field (read as `null`).
    #[serde(default)]
    pub evac_version: Option<String>,
    /// What was evacuated: the scenario or inventory file as given to
    /// `evac`, `"<stdin>"`, or `"default"` for the embedded default.
    #[serde(default)]
    pub scenario: Option<String>,
    /// The scenario's `seed` (it drives its generated VMs); `null` for a
    /// real run, whose inventory has none.
    #[serde(default)]
    pub seed: Option<u64>,
    pub policy: String,
    pub total_time_s: Option<f64>,
    pub mean_migration_time_s: Option<f64>,
    pub max_migration_time_s: Option<f64>,
    pub p95_migration_time_s: Option<f64>,
    pub mean_completion_time_s: Option<f64>,
    pub mean_downtime_s: Option<f64>,
    pub lower_bound_total_s: f64,
    pub lower_bound_mean_migration_s: f64,
    pub score: Option<f64>,
    pub migrated: usize,
    /// VMs still on their source host at the end ([`Outcome::NotMigrated`]).
    pub not_migrated: usize,
    /// VMs whose source host lost power ([`Outcome::Lost`]).
    pub lost: usize,
    /// Sum of the priorities of the VMs that migrated, and of all VMs.
    pub priority_saved: u64,
    pub priority_total: u64,
    pub bytes_sent: u64,
    pub vms: Vec<VmRecord>,
    pub timeline: Vec<TimelinePoint>,
    /// Every host with its power-off time (absent in results written before
    /// this field existed: read as empty).
    #[serde(default)]
    pub hosts: Vec<HostRecord>,
    /// Attempts that failed or were cancelled, in the order they ended; the
    /// drivers that know them append them after [`RunResult::summarize`].
    #[serde(default)]
    pub failed_attempts: Vec<FailedAttempt>,
    /// A real run's start on the wall clock (RFC 3339, UTC), from which
    /// every `_s` time counts; `None` for a simulation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

impl RunResult {
    /// Derives the metrics from per-VM records (in the fleet's VM order).
    pub fn summarize(
        policy: &str,
        fleet: &Fleet,
        network: &Network,
        vms: Vec<VmRecord>,
        timeline: Vec<TimelinePoint>,
    ) -> Self {
        let migrated: Vec<&VmRecord> = vms.iter().filter(|v| v.outcome == Outcome::Migrated).collect();
        let migration_times: Vec<f64> = migrated.iter().filter_map(|v| v.migration_time_s).collect();
        let completion_times: Vec<f64> = migrated.iter().filter_map(|v| v.end_s).collect();
        let downtimes: Vec<f64> = migrated.iter().filter_map(|v| v.downtime_s).collect();
        // Records come in the fleet's order (paired by index, O(VMs)); a
        // driver that listed them otherwise is looked up by name, once.
        let in_fleet_order = vms.len() == fleet.vms.len()
            && vms
                .iter()
                .zip(&fleet.vms)
                .all(|(record, vm)| record.name == vm.name);
        let by_name: std::collections::HashMap<&str, usize> = if in_fleet_order {
            Default::default()
        } else {
            fleet
                .vms
                .iter()
                .enumerate()
                .map(|(i, vm)| (vm.name.as_str(), i))
                .collect()
        };
        let index = |i: usize, record: &VmRecord| {
            if in_fleet_order {
                Some(i)
            } else {
                by_name.get(record.name.as_str()).copied()
            }
        };
        let mut moved = vec![false; fleet.vms.len()];
        for (i, record) in vms.iter().enumerate() {
            if record.outcome == Outcome::Migrated {
                if let Some(i) = index(i, record) {
                    moved[i] = true;
                }
            }
        }
        // Over the VMs this run moved: a run that leaves VMs behind is
        // measured against the time its own VMs needed, so no run ends
        // below its bound (the VMs it lost are counted apart).
        let bounds = lower_bounds_of(fleet, network, |vm| moved[vm]);
        let total_time = completion_times.iter().copied().reduce(f64::max);
        let mean_migration = mean(&migration_times);
        let score = match (total_time, mean_migration) {
            (Some(total), Some(mean)) => Some(
                ((total / bounds.total.as_secs_f64()) * (mean / bounds.mean_migration.as_secs_f64())).sqrt(),
            ),
            _ => None,
        };
        let priority_saved: u64 = (0..fleet.vms.len())
            .filter(|&i| moved[i])
            .map(|i| u64::from(fleet.vms[i].priority))
            .sum();
        Self {
            // What only the caller knows (the binary fills them in).
            evac_version: None,
            scenario: None,
            seed: None,
            policy: policy.to_owned(),
            total_time_s: total_time,
            mean_migration_time_s: mean_migration,
            max_migration_time_s: migration_times.iter().copied().reduce(f64::max),
            p95_migration_time_s: percentile(&migration_times, 0.95),
            mean_completion_time_s: mean(&completion_times),
            mean_downtime_s: mean(&downtimes),
            lower_bound_total_s: bounds.total.as_secs_f64(),
            lower_bound_mean_migration_s: bounds.mean_migration.as_secs_f64(),
            score,
            migrated: migrated.len(),
            not_migrated: vms.iter().filter(|v| v.outcome == Outcome::NotMigrated).count(),
            lost: vms.iter().filter(|v| v.outcome == Outcome::Lost).count(),
            priority_saved,
            priority_total: fleet.vms.iter().map(|vm| u64::from(vm.priority)).sum(),
            bytes_sent: vms.iter().filter_map(|v| v.bytes_sent).sum(),
            vms,
            timeline,
            hosts: fleet
                .hosts
                .iter()
                .map(|h| HostRecord {
                    name: h.name.clone(),
                    site: h.site,
                    power_off_s: h.power_off_at.map(|t| t.as_secs_f64()),
                })
                .collect(),
            failed_attempts: Vec::new(),
            started_at: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a RunResult always serializes")
    }

    /// Writes the same JSON as [`RunResult::to_json`] to `out` as it goes,
    /// without building it in memory first (hundreds of MB for a million
    /// VMs). `out` should be buffered.
    pub fn write_json<W: std::io::Write>(&self, out: W) -> std::io::Result<()> {
        serde_json::to_writer_pretty(out, self).map_err(std::io::Error::from)
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The median of `values` (the mean of the middle two for an even count),
/// if any: how evac sums up repeated measurements (probe migrations,
/// benchmark ratios), where one outlier must not move the figure.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    Some(if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    })
}

/// The nearest-rank percentile: the smallest value with at least `q` of the
/// values at or below it.
fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Times no policy can beat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowerBounds {
    /// The earliest instant by which the WAN, at full capacity all along,
    /// could have carried every VM's memory and local disks (the fewest
    /// bytes a migration of each can send: [`evac_model::Vm::least_wire_bytes`]).
    pub total: Duration,
    /// The mean over VMs of (memory + disk) / the best rate one migration could ever
    /// get: the least of the WAN's peak capacity, its source NIC and the
    /// fastest destination NIC it may go to.
    pub mean_migration: Duration,
}

/// The bounds over every VM of the fleet.
pub fn lower_bounds(fleet: &Fleet, network: &Network) -> LowerBounds {
    lower_bounds_of(fleet, network, |_| true)
}

/// The bounds over the VMs (by index in the fleet) that `counts`.
pub fn lower_bounds_of(fleet: &Fleet, network: &Network, counts: impl Fn(usize) -> bool) -> LowerBounds {
    // The fewest bytes each migration can send (zero pages as their header,
    // the others compressed when that is less: evac_model::memory).
    let bytes: f64 = fleet
        .vms
        .iter()
        .enumerate()
        .filter(|&(i, _)| counts(i))
        .map(|(_, vm)| vm.least_wire_bytes())
        .sum();
    let total = time_to_carry(network, Bytes::from_f64(bytes));
    let destinations: Vec<BitsPerSec> = fleet
        .hosts
        .iter()
        .filter(|h| h.site == Site::Destination)
        .map(|h| h.nic)
        .collect();
    let fastest_destination = destinations.iter().map(|r| r.0).fold(0.0, f64::max);
    let peak = network.peak_capacity().0;
    let per_vm: Vec<f64> = fleet
        .vms
        .iter()
        .enumerate()
        .filter(|&(i, _)| counts(i))
        .map(|(_, vm)| {
            let destination = vm
                .destination
                .map_or(fastest_destination, |d| fleet.host(d).nic.0);
            let best = peak.min(fleet.host(vm.host).nic.0).min(destination);
            vm.least_wire_bytes() * 8.0 / best
        })
        .collect();
    LowerBounds {
        total,
        mean_migration: evac_model::units::seconds_saturating(mean(&per_vm).unwrap_or(0.0)),
    }
}

/// Integrates the WAN's piecewise-constant capacity until it reaches `bytes`.
fn time_to_carry(network: &Network, bytes: Bytes) -> Duration {
    let mut left = bytes.as_f64() * 8.0;
    let mut t = 0.0;
    let mut rate = network.capacity_at(Duration::ZERO).0;
    for point in network.wan_trace.iter().filter(|p| !p.at.is_zero()) {
        let span = point.at.as_secs_f64() - t;
        if rate * span >= left {
            break;
        }
        left -= rate * span;
        t = point.at.as_secs_f64();
        rate = point.bandwidth.0;
    }
    if left <= 0.0 {
        Duration::from_secs_f64(t)
    } else if rate <= 0.0 {
        Duration::MAX
    } else {
        evac_model::units::seconds_saturating(t + left / rate)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn thinning_keeps_the_bytes_between_kept_points() {
        let point = |t_s: f64, wan_throughput_bps: f64, in_flight: usize| super::TimelinePoint {
            t_s,
            wan_capacity_bps: Some(100.0 + t_s),
            wan_throughput_bps,
            in_flight,
        };
        let mut points = vec![
            point(0.0, 0.0, 0),
            point(1.0, 10.0, 1),
            point(3.0, 20.0, 2),
            point(4.0, 40.0, 3),
            point(6.0, 0.0, 0),
        ];
        super::thin_timeline(&mut points);
        // By hand: (10 * 1 + 20 * 2) / 3 over 0..3, (40 * 1 + 0 * 2) / 3
        // over 3..6; 90 bits in all before and after.
        assert_eq!(
            points,
            vec![
                point(0.0, 0.0, 0),
                point(3.0, 50.0 / 3.0, 2),
                point(6.0, 40.0 / 3.0, 0)
            ]
        );
        // An even count keeps its last point unmerged.
        let mut points = vec![
            point(0.0, 0.0, 0),
            point(1.0, 8.0, 1),
            point(2.0, 4.0, 1),
            point(5.0, 2.0, 0),
        ];
        super::thin_timeline(&mut points);
        assert_eq!(
            points,
            vec![point(0.0, 0.0, 0), point(2.0, 6.0, 1), point(5.0, 2.0, 0)]
        );
    }

    use super::*;
    use evac_model::{Host, TracePoint, Vm};

    fn network(trace: Vec<TracePoint>) -> Network {
        Network {
            wan_bandwidth: BitsPerSec::gbps(1.0),
            wan_rtt: Duration::from_millis(10),
            tcp_window: Bytes::mib(64),
            wan_trace: trace,
        }
    }

    fn fleet(memories: &[Bytes]) -> Fleet {
        let host = |name: &str, site, nic| Host {
            migration_cpus: None,
            name: name.to_owned(),
            site,
            nic: BitsPerSec::gbps(nic),
            memory: None,
            power_off_at: None,
            power_trace: Vec::new(),
        };
        Fleet {
            hosts: vec![
                host("src", Site::Source, 10.0),
                host("dst", Site::Destination, 0.5),
            ],
            vms: memories
                .iter()
                .enumerate()
                .map(|(i, &memory)| Vm {
                    profile: evac_model::MemoryProfile::default(),
                    name: format!("vm-{i}"),
                    host: evac_model::HostId(0),
                    memory,
                    dirty_rate: Default::default(),
                    working_set: memory,
                    disk: Bytes::ZERO,
                    priority: 1,
                    destination: None,
                })
                .collect(),
        }
    }

    #[test]
    fn total_bound_integrates_the_trace() {
        // 1 Gbps for 10 s carries 1.25e9 bytes, then 0.5 Gbps: the
        // remaining 1.25e9 bytes of 2.5e9 take another 20 s.
        let trace = vec![TracePoint {
            at: Duration::from_secs(10),
            bandwidth: BitsPerSec::mbps(500.0),
        }];
        let bounds = lower_bounds(&fleet(&[Bytes(2_500_000_000)]), &network(trace));
        assert!(
            (bounds.total.as_secs_f64() - 30.0).abs() < 1e-9,
            "{:?}",
            bounds.total
        );
        // The 0.5 Gbps destination NIC is the best one migration gets:
        // 2.5e9 * 8 / 5e8 = 40 s.
        assert!((bounds.mean_migration.as_secs_f64() - 40.0).abs() < 1e-9);
    }

    #[test]
    fn bounds_count_the_fewest_bytes_a_migration_can_send() {
        // 1 GiB, half zero pages, the rest compressing 4:1. Plain: 2^17 x 9
        // + 2^29 = 538,050,560 B; compressed: 2^17 x 9 + 2^17 x (1024 + 8)
        // = 136,445,952 B, the fewer: 1.091567616 s at 1 Gbps, 2.183135232 s
        // at the 0.5 Gbps destination NIC.
        let mut f = fleet(&[Bytes::gib(1)]);
        f.vms[0].profile.zero_fraction = 0.5;
        f.vms[0].profile.compression_ratio = 4.0;
        let bounds = lower_bounds(&f, &network(vec![]));
        assert!(
            (bounds.total.as_secs_f64() - 1.091567616).abs() < 1e-9,
            "{bounds:?}"
        );
        assert!((bounds.mean_migration.as_secs_f64() - 2.183135232).abs() < 1e-9);
        // Nothing compresses: the zero pages alone, 538,050,560 B.
        f.vms[0].profile.compression_ratio = 1.0;
        let bounds = lower_bounds(&f, &network(vec![]));
        assert!(
            (bounds.total.as_secs_f64() - 4.30440448).abs() < 1e-9,
            "{bounds:?}"
        );
    }

    #[test]
    fn metrics_by_hand() {
        let fleet = fleet(&[Bytes(1_000_000_000), Bytes(1_000_000_000), Bytes(500_000_000)]);
        let record = |name: &str, start: f64, end: f64| VmRecord {
            compression: None,
            name: name.to_owned(),
            host: "src".into(),
            destination: Some("dst".into()),
            start_s: Some(start),
            end_s: Some(end),
            migration_time_s: Some(end - start),
            downtime_s: Some(0.1),
            rounds: Some(1),
            bytes_sent: Some(100),
            outcome: Outcome::Migrated,
            reason: None,
            mode: None,
            connections: None,
            decisions: Vec::new(),
        };
        let mut lost = VmRecord::unmoved("vm-2".into(), "src".into());
        lost.left(Outcome::Lost, reason::POWER_OFF);
        let vms = vec![record("vm-0", 0.0, 16.0), record("vm-1", 16.0, 48.0), lost];
        let result = RunResult::summarize("test", &fleet, &network(vec![]), vms, vec![]);
        assert_eq!(result.total_time_s, Some(48.0));
        assert_eq!(result.mean_migration_time_s, Some(24.0));
        assert_eq!(result.max_migration_time_s, Some(32.0));
        assert_eq!(result.p95_migration_time_s, Some(32.0));
        assert_eq!(result.mean_completion_time_s, Some(32.0));
        assert_eq!(
            (
                result.migrated,
                result.not_migrated,
                result.lost,
                result.bytes_sent
            ),
            (2, 0, 1, 200)
        );
        assert_eq!((result.priority_saved, result.priority_total), (2, 3));
        // Bounds over the two VMs moved (the lost one counts apart): 2e9
        // bytes at 1 Gbps = 16 s; mean of memory at the 0.5 Gbps NIC =
        // (16 + 16) / 2 s.
        assert_eq!(result.lower_bound_total_s, 16.0);
        assert_eq!(result.lower_bound_mean_migration_s, 16.0);
        let score = ((48.0_f64 / 16.0) * (24.0 / 16.0)).sqrt();
        assert!((result.score.unwrap() - score).abs() < 1e-9);
        let json: serde_json::Value = serde_json::from_str(&result.to_json()).unwrap();
        assert_eq!(json["vms"][2]["end_s"], serde_json::Value::Null);
        assert_eq!(json["vms"][2]["outcome"], "lost");
        assert_eq!(json["vms"][2]["reason"], "its source host lost power");
        assert!(
            json["vms"][0].get("reason").is_none(),
            "a migrated VM has no reason"
        );
    }

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn not_migrated_is_its_own_outcome_with_a_reason() {
        let fleet = fleet(&[Bytes(1_000_000_000), Bytes(1_000_000_000)]);
        let mut given_up = VmRecord::unmoved("vm-0".into(), "src".into());
        given_up.left(Outcome::NotMigrated, reason::GIVEN_UP);
        // A second reason does not overwrite the first.
        given_up.left(Outcome::Lost, reason::POWER_OFF);
        let mut interrupted = VmRecord::unmoved("vm-1".into(), "src".into());
        interrupted.left(Outcome::NotMigrated, reason::INTERRUPTED);
        let result = RunResult::summarize(
            "test",
            &fleet,
            &network(vec![]),
            vec![given_up, interrupted],
            vec![],
        );
        assert_eq!((result.migrated, result.not_migrated, result.lost), (0, 2, 0));
        let json: serde_json::Value = serde_json::from_str(&result.to_json()).unwrap();
        assert_eq!(json["not_migrated"], 2);
        assert_eq!(json["vms"][0]["outcome"], "not-migrated");
        assert_eq!(json["vms"][0]["reason"], "given up");
        assert_eq!(json["vms"][1]["reason"], "interrupted");
        let back: RunResult = serde_json::from_str(&result.to_json()).unwrap();
        assert_eq!(back, result);
    }

    #[test]
    fn nearest_rank_percentile() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.95), Some(19.0));
        assert_eq!(percentile(&[3.0], 0.95), Some(3.0));
        assert_eq!(percentile(&[], 0.95), None);
    }
}
