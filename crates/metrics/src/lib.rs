//! # evac-metrics
//!
//! `evac run --metrics ADDR`: the run's state as Prometheus metrics at
//! `http://ADDR/metrics`, for the dashboards and alerts an operations team
//! already has. Names and labels follow KubeVirt's
//! `kubevirt_vmi_migration_*` (one series per migration, labelled `vm`),
//! with units in the names:
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `evac_migrations_in_flight` | | migrations running now |
//! | `evac_vms` | `outcome` = `migrated` \| `not-migrated` \| `lost` \| `pending` \| `in-flight` | VMs by where they stand |
//! | `evac_controller_window` | | migrations the controller allows at once (absent when the policy has no window) |
//! | `evac_wan_throughput_bits_per_second` | | bytes carried over the WAN in the last period, as a rate |
//! | `evac_run_elapsed_seconds` | | since the run began |
//! | `evac_migration_data_processed_bytes` | `vm` | sent by the current attempt |
//! | `evac_migration_data_remaining_bytes` | `vm` | still to send in the current round |
//! | `evac_migration_dirty_rate_bytes_per_second` | `vm` | how fast the guest dirties memory |
//! | `evac_migration_transfer_rate_bytes_per_second` | `vm` | the migration's own rate |
//! | `evac_migration_round` | `vm` | precopy round (1 = the first pass) |
//! | `evac_migration_attempt` | `vm` | 1 for the first attempt |
//! | `evac_migration_phase` | `vm`, `phase` | 1 for the phase the migration is in |
//! | `evac_host_power_off_seconds` | `host` | seconds left before the source host loses power (0 once past; absent for a host without a power-off) |
//! | `evac_host_vms_remaining` | `host` | the source host's VMs still waiting or in flight |
//! | `evac_host_remaining_bytes` | `host` | what is left to send from it: its waiting VMs' memory plus the current round's rest of each migration in flight |
//!
//! With the WAN's throughput, the per-host series give each host's margin:
//! `evac_host_power_off_seconds - evac_host_remaining_bytes * 8 / on()
//! group_left() evac_wan_throughput_bits_per_second`, the seconds to spare
//! if the whole WAN carried that host's rest from now on (an optimistic
//! bound: a negative margin means VMs will be lost). The run loop knows no
//! planned finish per host, so evac serves the parts and the alert rules
//! (`deploy/prometheus/evac-alerts.yml`) combine them.
//!
//! Per-migration series exist while the migration is in flight and vanish
//! when it ends (as KubeVirt's do), so a dashboard shows what runs now.
//!
//! The run loop publishes a snapshot on a watch channel every period;
//! [`Metrics::update`] copies a [`Snapshot`] into the registry, and
//! [`serve`] answers scrapes from it. The server is deliberately small: it
//! reads at most 8 KiB of request head within 5 s, answers `GET /metrics`
//! (anything else: 404 or 405) and closes the connection, with at most 32
//! connections at once, so a scraper, a port scanner or a stuck client
//! cannot hold the run's memory or tasks.

mod server;

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use server::serve;

/// One migration in flight, as the metrics see it.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationSnapshot {
    pub vm: String,
    /// e.g. `precopy`, `stop-and-copy`, `offline`.
    pub phase: String,
    pub round: u32,
    pub attempt: u32,
    pub processed_bytes: u64,
    pub remaining_bytes: u64,
    /// `None` where the backend does not measure it.
    pub dirty_rate_bytes_per_second: Option<f64>,
    pub transfer_rate_bytes_per_second: f64,
}

/// A source host, as the metrics see it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSnapshot {
    pub host: String,
    /// Until its power-off (0 once past); `None` when it has none.
    pub power_off_seconds: Option<f64>,
    pub vms_remaining: usize,
    pub remaining_bytes: u64,
}

/// The state of a run at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub elapsed_seconds: f64,
    pub migrated: usize,
    pub not_migrated: usize,
    pub lost: usize,
    pub pending: usize,
    pub in_flight: usize,
    pub window: Option<usize>,
    pub wan_throughput_bits_per_second: f64,
    pub migrations: Vec<MigrationSnapshot>,
    pub hosts: Vec<HostSnapshot>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VmLabel {
    vm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    vm: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Each series a run exports: `(field, name, help)`, registered under its
/// name by [`Metrics::new`].
macro_rules! series {
    ($($field:ident: $ty:ty => $name:literal, $help:literal;)*) => {
        /// The series' handles.
        #[derive(Default)]
        struct Series {
            $($field: $ty,)*
        }

        impl Series {
            fn register(&self, registry: &mut Registry) {
                $(registry.register($name, $help, self.$field.clone());)*
            }
        }
    };
}

series! {
    in_flight: Gauge => "migrations_in_flight", "Migrations running now";
    vms: Family<OutcomeLabel, Gauge> => "vms", "VMs by where they stand";
    window: Family<Vec<(String, String)>, Gauge> =>
        "controller_window", "Migrations the controller allows at once";
    wan: FloatGauge =>
        "wan_throughput_bits_per_second", "Bytes carried over the WAN in the last period, as a rate";
    elapsed: FloatGauge => "run_elapsed_seconds", "Since the run began";
    processed: Family<VmLabel, Gauge> =>
        "migration_data_processed_bytes", "Bytes sent by the migration's current attempt";
    remaining: Family<VmLabel, Gauge> =>
        "migration_data_remaining_bytes", "Bytes still to send in the current precopy round";
    dirty_rate: Family<VmLabel, FloatGauge> =>
        "migration_dirty_rate_bytes_per_second", "How fast the guest dirties its memory";
    transfer_rate: Family<VmLabel, FloatGauge> =>
        "migration_transfer_rate_bytes_per_second", "The migration's transfer rate";
    round: Family<VmLabel, Gauge> => "migration_round", "Precopy round, 1 for the first pass";
    attempt: Family<VmLabel, Gauge> => "migration_attempt", "Attempt, 1 for the first";
    phase: Family<PhaseLabels, Gauge> => "migration_phase", "1 for the phase the migration is in";
    power_off: Family<HostLabel, FloatGauge> =>
        "host_power_off_seconds", "Seconds left before the source host loses power";
    host_vms: Family<HostLabel, Gauge> =>
        "host_vms_remaining", "The source host's VMs still waiting or in flight";
    host_bytes: Family<HostLabel, Gauge> => "host_remaining_bytes", "Bytes left to send from the source host";
}

/// The `outcome` label's values, in the order [`Metrics::update`] counts them.
const OUTCOMES: [&str; 5] = ["migrated", "not-migrated", "lost", "pending", "in-flight"];

/// The registry and its metrics.
pub struct Metrics {
    registry: Registry,
    /// Serializes updates, so a scrape never sees a half-applied snapshot's
    /// per-VM series cleared and not yet refilled.
    lock: Mutex<()>,
    series: Series,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("evac");
        let series = Series::default();
        series.register(&mut registry);
        // Every outcome from the start, at 0: a scrape before the run's
        // first snapshot sees the same series as every later one (as
        // `evac_migrations_in_flight`, which is 0 until set), never a
        // series that appears only later.
        for outcome in OUTCOMES {
            series.vms.get_or_create(&OutcomeLabel { outcome }).set(0);
        }
        Metrics {
            registry,
            lock: Mutex::new(()),
            series,
        }
    }

    /// Copies `snapshot` into the metrics.
    pub fn update(&self, snapshot: &Snapshot) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let series = &self.series;
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        series.in_flight.set(count(snapshot.in_flight));
        let counts = [
            snapshot.migrated,
            snapshot.not_migrated,
            snapshot.lost,
            snapshot.pending,
            snapshot.in_flight,
        ];
        for (outcome, n) in OUTCOMES.into_iter().zip(counts) {
            series.vms.get_or_create(&OutcomeLabel { outcome }).set(count(n));
        }
        series.window.clear();
        if let Some(w) = snapshot.window {
            series.window.get_or_create(&Vec::new()).set(count(w));
        }
        series.wan.set(snapshot.wan_throughput_bits_per_second);
        series.elapsed.set(snapshot.elapsed_seconds);
        series.processed.clear();
        series.remaining.clear();
        series.dirty_rate.clear();
        series.transfer_rate.clear();
        series.round.clear();
        series.attempt.clear();
        series.phase.clear();
        let bytes = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
        series.power_off.clear();
        series.host_vms.clear();
        series.host_bytes.clear();
        for h in &snapshot.hosts {
            let host = HostLabel { host: h.host.clone() };
            if let Some(seconds) = h.power_off_seconds {
                series.power_off.get_or_create(&host).set(seconds);
            }
            series.host_vms.get_or_create(&host).set(count(h.vms_remaining));
            series
                .host_bytes
                .get_or_create(&host)
                .set(bytes(h.remaining_bytes));
        }
        for m in &snapshot.migrations {
            let vm = VmLabel { vm: m.vm.clone() };
            series.processed.get_or_create(&vm).set(bytes(m.processed_bytes));
            series.remaining.get_or_create(&vm).set(bytes(m.remaining_bytes));
            if let Some(rate) = m.dirty_rate_bytes_per_second {
                series.dirty_rate.get_or_create(&vm).set(rate);
            }
            series
                .transfer_rate
                .get_or_create(&vm)
                .set(m.transfer_rate_bytes_per_second);
            series.round.get_or_create(&vm).set(i64::from(m.round));
            series.attempt.get_or_create(&vm).set(i64::from(m.attempt));
            series
                .phase
                .get_or_create(&PhaseLabels {
                    vm: m.vm.clone(),
                    phase: m.phase.clone(),
                })
                .set(1);
        }
    }

    /// The metrics in the OpenMetrics text format (which Prometheus reads).
    pub fn encode(&self) -> String {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            elapsed_seconds: 12.5,
            migrated: 3,
            not_migrated: 1,
            lost: 2,
            pending: 4,
            in_flight: 1,
            window: Some(2),
            wan_throughput_bits_per_second: 2.5e8,
            migrations: vec![MigrationSnapshot {
                vm: "db \"1\"".into(),
                phase: "precopy".into(),
                round: 3,
                attempt: 2,
                processed_bytes: 1 << 30,
                remaining_bytes: 5 << 20,
                dirty_rate_bytes_per_second: Some(2e7),
                transfer_rate_bytes_per_second: 3.125e7,
            }],
            hosts: vec![
                HostSnapshot {
                    host: "rack-1".into(),
                    power_off_seconds: Some(90.5),
                    vms_remaining: 3,
                    remaining_bytes: 3 << 30,
                },
                HostSnapshot {
                    host: "rack-2".into(),
                    power_off_seconds: None,
                    vms_remaining: 0,
                    remaining_bytes: 0,
                },
            ],
        }
    }

    #[test]
    fn a_snapshot_reads_back_as_text() {
        let metrics = Metrics::new();
        metrics.update(&snapshot());
        let text = metrics.encode();
        for line in [
            "evac_migrations_in_flight 1",
            "evac_vms{outcome=\"migrated\"} 3",
            "evac_vms{outcome=\"not-migrated\"} 1",
            "evac_vms{outcome=\"lost\"} 2",
            "evac_vms{outcome=\"pending\"} 4",
            "evac_vms{outcome=\"in-flight\"} 1",
            "evac_controller_window 2",
            "evac_wan_throughput_bits_per_second 250000000.0",
            // 1 GiB = 1073741824 bytes; 5 MiB = 5242880.
            "evac_migration_data_processed_bytes{vm=\"db \\\"1\\\"\"} 1073741824",
            "evac_migration_data_remaining_bytes{vm=\"db \\\"1\\\"\"} 5242880",
            "evac_migration_dirty_rate_bytes_per_second{vm=\"db \\\"1\\\"\"} 20000000.0",
            "evac_migration_transfer_rate_bytes_per_second{vm=\"db \\\"1\\\"\"} 31250000.0",
            "evac_migration_round{vm=\"db \\\"1\\\"\"} 3",
            "evac_migration_attempt{vm=\"db \\\"1\\\"\"} 2",
            "evac_migration_phase{vm=\"db \\\"1\\\"\",phase=\"precopy\"} 1",
            "evac_host_power_off_seconds{host=\"rack-1\"} 90.5",
            "evac_host_vms_remaining{host=\"rack-1\"} 3",
            // 3 GiB = 3221225472 bytes.
            "evac_host_remaining_bytes{host=\"rack-1\"} 3221225472",
            "evac_host_vms_remaining{host=\"rack-2\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no line `{line}` in\n{text}");
        }
    }

    #[test]
    fn every_outcome_is_served_before_the_first_snapshot() {
        let text = Metrics::new().encode();
        for outcome in ["migrated", "not-migrated", "lost", "pending", "in-flight"] {
            let line = format!("evac_vms{{outcome=\"{outcome}\"}} 0");
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
    }

    #[test]
    fn a_host_without_a_power_off_has_no_countdown() {
        let metrics = Metrics::new();
        metrics.update(&snapshot());
        let text = metrics.encode();
        assert!(
            !text.contains("evac_host_power_off_seconds{host=\"rack-2\"}"),
            "{text}"
        );
    }

    #[test]
    fn ended_migrations_leave_no_series() {
        let metrics = Metrics::new();
        metrics.update(&snapshot());
        metrics.update(&Snapshot {
            migrated: 4,
            window: None,
            ..Snapshot::default()
        });
        let text = metrics.encode();
        assert!(!text.contains("db"), "{text}");
        assert!(!text.contains("rack-"), "{text}");
        assert!(
            !text.lines().any(|l| l.starts_with("evac_controller_window ")),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l == "evac_vms{outcome=\"migrated\"} 4"),
            "{text}"
        );
    }
}
