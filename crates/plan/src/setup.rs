//! A migration's setup time: what each migration costs on these hosts
//! beyond its bytes, and where the plan's figure comes from.
//!
//! Why: the simulator counts bytes; a real migration also waits for its
//! hosts (a libvirt migration: the daemons' handshake, the destination's
//! QEMU starting, the finish and confirm; seconds each on the lab,
//! docs/libvirt.md). Per VM that is `[migration] setup_time`. When the
//! inventory states it, the plan takes it as it is; otherwise the backend
//! may measure it with probe migrations (libvirt:
//! `evac_libvirt::backend::probe`), and a probe's setup is its measured
//! time less what the simulator gives the same migration without setup
//! (its bytes over the same hosts and WAN): the median over the probes is
//! the plan's `setup_time`.

use std::time::Duration;

use evac_controller::{ControllerConfig, PolicyKind};
use evac_model::{Bytes, Fleet, HostId, MemoryProfile, MigrationParams, Network, Vm};
use serde::Serialize;

/// One probe migration, as a backend measured it.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub source: String,
    pub destination: String,
    /// From its start to its end, as the run loop times a migration.
    pub elapsed: Duration,
    /// What crossed the wire.
    pub bytes: Bytes,
    /// The backend's stages, seconds from the start (name, seconds).
    pub stages: Vec<(&'static str, f64)>,
    /// A warm-up (the first into its destination): shown, not counted.
    pub warm_up: bool,
}

/// A probe in the plan's JSON: what was measured and what it gave.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeJson {
    pub source: String,
    pub destination: String,
    pub elapsed_s: f64,
    pub bytes: u64,
    /// The simulator's time for the same migration with no setup.
    pub without_setup_s: f64,
    /// `elapsed_s - without_setup_s`.
    pub setup_s: f64,
    /// The backend's stages (seconds from the start), e.g. `returned_s`.
    pub stages: std::collections::BTreeMap<String, f64>,
    /// A warm-up: not counted in the median.
    pub warm_up: bool,
}

/// Where the plan's `setup_time` comes from.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SetupSource {
    /// The inventory's `[migration] setup_time`.
    Inventory,
    /// The median of the probes.
    Measured,
    /// Neither: the inventory's default (0 s) stands.
    NotMeasured,
}

/// The plan's `setup` in its JSON, and the line its text prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Setup {
    pub source: SetupSource,
    /// The setup time the plan counts per migration.
    pub setup_time_s: f64,
    /// The probes that completed (warm-ups too, marked).
    pub probes: Vec<ProbeJson>,
    /// The smallest and largest probe setup (seconds), when any completed.
    pub spread_s: Option<[f64; 2]>,
    /// Probes that failed (where and why), and why nothing was measured.
    pub notes: Vec<String>,
}

impl Setup {
    /// The inventory states it: taken as it is, nothing probed.
    pub fn stated(params: &MigrationParams) -> Setup {
        Setup {
            source: SetupSource::Inventory,
            setup_time_s: params.setup_time.as_secs_f64(),
            probes: Vec::new(),
            spread_s: None,
            notes: Vec::new(),
        }
    }

    /// Not measured, and why.
    pub fn not_measured(params: &MigrationParams, why: impl Into<String>) -> Setup {
        Setup {
            source: SetupSource::NotMeasured,
            setup_time_s: params.setup_time.as_secs_f64(),
            probes: Vec::new(),
            spread_s: None,
            notes: vec![why.into()],
        }
    }

    /// The setup the probes say: each probe's measured time less the
    /// simulator's time for its bytes between its hosts with no setup
    /// (`fleet`'s hosts, `network`, `params`); the median (at least 0)
    /// over the probes that completed, warm-ups left out. `failures` say which did not; with
    /// none completed, nothing is measured.
    pub fn from_probes(
        probes: &[Probe],
        failures: Vec<String>,
        fleet: &Fleet,
        network: &Network,
        params: &MigrationParams,
    ) -> Setup {
        let mut json = Vec::new();
        let mut notes = failures;
        for probe in probes {
            match without_setup(probe, fleet, network, params) {
                Some(without) => {
                    let elapsed = probe.elapsed.as_secs_f64();
                    json.push(ProbeJson {
                        source: probe.source.clone(),
                        destination: probe.destination.clone(),
                        elapsed_s: elapsed,
                        bytes: probe.bytes.0,
                        without_setup_s: without,
                        setup_s: elapsed - without,
                        warm_up: probe.warm_up,
                        stages: probe
                            .stages
                            .iter()
                            .map(|(name, s)| (format!("{name}_s"), *s))
                            .collect(),
                    });
                }
                None => notes.push(format!(
                    "probe {} -> {}: the simulator could not move its {} (hosts not in the fleet?)",
                    probe.source, probe.destination, probe.bytes
                )),
            }
        }
        let setups: Vec<f64> = json.iter().filter(|p| !p.warm_up).map(|p| p.setup_s).collect();
        let Some(median) = evac_outcome::median(&setups) else {
            notes.push("no probe completed: the setup time is not measured".into());
            return Setup {
                source: SetupSource::NotMeasured,
                setup_time_s: params.setup_time.as_secs_f64(),
                probes: json,
                spread_s: None,
                notes,
            };
        };
        let spread = setups
            .iter()
            .fold([f64::INFINITY, f64::NEG_INFINITY], |[lo, hi], &s| {
                [lo.min(s), hi.max(s)]
            });
        Setup {
            source: SetupSource::Measured,
            setup_time_s: median.max(0.0),
            probes: json,
            spread_s: Some(spread),
            notes,
        }
    }

    /// The setup time to simulate with.
    pub fn setup_time(&self) -> Duration {
        Duration::from_secs_f64(self.setup_time_s.max(0.0))
    }

    /// The plan's line about it (then one per note).
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![match self.source {
            SetupSource::Inventory => format!(
                "setup per migration: {:.2} s, the inventory's [migration] setup_time (not probed)",
                self.setup_time_s
            ),
            SetupSource::Measured => {
                let each: Vec<String> = self
                    .probes
                    .iter()
                    .map(|p| {
                        format!(
                            "{}{} -> {} {:.2} s of {:.2} s",
                            if p.warm_up { "warm-up, not counted: " } else { "" },
                            p.source,
                            p.destination,
                            p.setup_s,
                            p.elapsed_s
                        )
                    })
                    .collect();
                format!(
                    "setup per migration: {:.2} s measured, the median of {} probe migrations ({})",
                    self.setup_time_s,
                    self.probes.iter().filter(|p| !p.warm_up).count(),
                    each.join("; ")
                )
            }
            SetupSource::NotMeasured => format!(
                "setup per migration: not measured; {:.2} s counted (the inventory's default)",
                self.setup_time_s
            ),
        }];
        lines.extend(self.notes.iter().map(|n| format!("  {n}")));
        lines
    }
}

/// The simulator's time for `probe`'s bytes between its two hosts, with
/// no setup, alone on the WAN.
fn without_setup(probe: &Probe, fleet: &Fleet, network: &Network, params: &MigrationParams) -> Option<f64> {
    let host = |name: &str| fleet.hosts.iter().position(|h| h.name == name).map(HostId);
    let (source, destination) = (host(&probe.source)?, host(&probe.destination)?);
    let mut alone = Fleet {
        hosts: fleet.hosts.clone(),
        vms: vec![Vm {
            name: "probe".into(),
            host: source,
            memory: probe.bytes.max(Bytes(1)),
            dirty_rate: evac_model::BytesPerSec(0.0),
            working_set: Bytes::ZERO,
            priority: 1,
            destination: Some(destination),
            disk: Bytes::ZERO,
            profile: MemoryProfile::default(),
        }],
    };
    for h in &mut alone.hosts {
        h.power_off_at = None;
    }
    let mut params = *params;
    params.setup_time = Duration::ZERO;
    params.mode = evac_model::Mode::Live;
    let config = ControllerConfig {
        policy: PolicyKind::Sequential,
        ..ControllerConfig::default()
    };
    let result = evac_sim::simulate_evacuation(&alone, network, params, &config);
    result.vms.first()?.migration_time_s
}

#[cfg(test)]
mod tests {
    use super::*;
    use evac_model::{BitsPerSec, Host, Site};

    fn fleet() -> Fleet {
        let host = |name: &str, site| Host {
            nic: BitsPerSec(1e9),
            ..evac_testkit::host(name, site)
        };
        Fleet {
            hosts: vec![host("a", Site::Source), host("b", Site::Destination)],
            vms: Vec::new(),
        }
    }

    fn probe(elapsed: f64, bytes: u64) -> Probe {
        Probe {
            warm_up: false,
            source: "a".into(),
            destination: "b".into(),
            elapsed: Duration::from_secs_f64(elapsed),
            bytes: Bytes(bytes),
            stages: vec![("returned", elapsed - 0.01)],
        }
    }

    fn network(mbps: f64) -> Network {
        Network {
            wan_bandwidth: BitsPerSec(mbps * 1e6),
            wan_rtt: Duration::ZERO,
            tcp_window: Network::DEFAULT_TCP_WINDOW,
            wan_trace: Vec::new(),
        }
    }

    #[test]
    fn the_setup_is_the_median_of_time_less_bytes() {
        // 100 Mbit/s WAN, no RTT: 1.25 MB take 0.1 s by hand.
        let network = network(100.0);
        let params = MigrationParams::default();
        // A slow warm-up, shown and not counted.
        let warm_up = Probe {
            warm_up: true,
            ..probe(6.1, 1_250_000)
        };
        let probes = [
            warm_up,
            probe(2.1, 1_250_000),
            probe(3.1, 1_250_000),
            probe(2.6, 1_250_000),
        ];
        let setup = Setup::from_probes(
            &probes,
            vec!["probe a -> b: refused".into()],
            &fleet(),
            &network,
            &params,
        );
        assert_eq!(setup.source, SetupSource::Measured);
        assert!((setup.setup_time_s - 2.5).abs() < 1e-6, "{setup:?}");
        let [lo, hi] = setup.spread_s.unwrap();
        assert!((lo - 2.0).abs() < 1e-6 && (hi - 3.0).abs() < 1e-6, "{setup:?}");
        assert!((setup.probes[1].without_setup_s - 0.1).abs() < 1e-6);
        assert!((setup.probes[1].stages["returned_s"] - 2.09).abs() < 1e-9);
        assert_eq!(setup.notes, ["probe a -> b: refused"]);
        let text = setup.lines().join("\n");
        assert!(text.starts_with("setup per migration: 2.50 s measured, the median of 3 probe migrations (warm-up, not counted: a -> b 6.00 s of 6.10 s; a -> b 2.00 s of 2.10 s"), "{text}");
        assert!(text.ends_with("\n  probe a -> b: refused"), "{text}");
    }

    #[test]
    fn without_a_completed_probe_nothing_is_measured() {
        let params = MigrationParams {
            setup_time: Duration::from_millis(30),
            ..MigrationParams::default()
        };
        let setup = Setup::from_probes(
            &[],
            vec!["probe a -> b: timed out".into()],
            &fleet(),
            &network(100.0),
            &params,
        );
        assert_eq!(setup.source, SetupSource::NotMeasured);
        assert_eq!(setup.setup_time(), Duration::from_millis(30));
        assert!(
            setup.lines()[0].starts_with("setup per migration: not measured"),
            "{:?}",
            setup.lines()
        );
        // A probe between hosts the fleet does not have is not counted.
        let mut lost = probe(1.0, 1000);
        lost.destination = "z".into();
        let setup = Setup::from_probes(&[lost], Vec::new(), &fleet(), &network(100.0), &params);
        assert_eq!(setup.source, SetupSource::NotMeasured);
        assert_eq!(setup.notes.len(), 2, "{:?}", setup.notes);
    }
}
