//! The per-migration cost measured on a built lab's own hosts, at run
//! start, and given to the simulator and the run's controller alike.
//!
//! Why: what a migration costs whatever its size (the destination QEMU's
//! start, the QMP handshakes, the switchover) depends on the machine's
//! load at the time, and for small VMs it is a large part of their time:
//! a 32 MiB VM crosses an 800 Mbit/s WAN in 0.34 s of payload, so 50 ms
//! more per migration is 10 % more, and 48 of them one after the other
//! add up. The lab files carry a `setup_time` calibrated once on a quiet
//! machine (`examples/calibrate.rs`); [`calibrate`] measures it again on
//! the lab as it stands: a few probe VMs of the fleet's smallest size,
//! each migrated alone by the real run loop to a destination of the lab,
//! their times set against the simulator's for the same migration with no
//! setup time; the median difference is the setup time.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use evac_controller::PolicyKind;
use evac_model::{HostId, Site};

use crate::instance::LabInstance;

/// One probe migration.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub vm: String,
    pub source: String,
    pub destination: String,
    /// Seconds, by the real run loop.
    pub measured_s: f64,
    /// Seconds, simulated with no setup time.
    pub without_setup_s: f64,
}

/// What [`calibrate`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub probes: Vec<Probe>,
    /// The lab file's setup time, which it replaces.
    pub configured: Duration,
    /// The median of the probes' `measured - without_setup` (at least 0).
    pub setup_time: Duration,
}

impl Calibration {
    /// One line per probe and the result, for a log.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for p in &self.probes {
            out += &format!(
                "probe {} ({} -> {}): {:.3} s measured, {:.3} s simulated without setup\n",
                p.vm, p.source, p.destination, p.measured_s, p.without_setup_s
            );
        }
        out += &format!(
            "setup_time measured at run start: {} ms (the lab file says {} ms)",
            self.setup_time.as_millis(),
            self.configured.as_millis()
        );
        out
    }
}

/// The setup time the probes say: the median of their measured minus
/// simulated-without-setup times, never below 0.
pub fn setup_time_of(probes: &[Probe]) -> Option<Duration> {
    let setups: Vec<f64> = probes.iter().map(|p| p.measured_s - p.without_setup_s).collect();
    evac_outcome::median(&setups).map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// Migrates `count` probe VMs (the fleet's smallest size, idle, on the
/// source hosts in turn, each to the destinations in turn), one at a time
/// by the real run loop, and sets the lab's `setup_time` (its scenario's,
/// which the prediction uses, and its inventory's, which the run's
/// controller uses) to what they measured. The probes stay at their
/// destinations until the lab is torn down; the WAN trace has not started.
pub async fn calibrate(lab: &mut LabInstance, count: usize) -> Result<Calibration> {
    let fleet = lab.scenario.fleet.clone();
    let sources: Vec<HostId> = fleet.source_hosts().collect();
    let destinations: Vec<HostId> = fleet
        .host_ids()
        .filter(|&h| fleet.hosts[h.0].site == Site::Destination)
        .collect();
    let Some(template) = fleet.vms.iter().min_by_key(|v| v.memory.0) else {
        bail!("a lab with no VM has nothing to calibrate with");
    };
    if sources.is_empty() || destinations.is_empty() || count == 0 {
        bail!("calibrating needs a source host, a destination host and a probe");
    }
    let mib = template.memory.0 >> 20;
    let plan: Vec<(String, HostId, HostId)> = (0..count)
        .map(|i| {
            (
                format!("probe{i}"),
                sources[i % sources.len()],
                destinations[i % destinations.len()],
            )
        })
        .collect();
    let extra: Vec<(String, HostId, u64)> = plan.iter().map(|(n, s, _)| (n.clone(), *s, mib)).collect();
    // Blocking (RAM files, QEMU boots), before anything else runs.
    lab.start_extra_vms(&extra)?;

    let mut without_setup = lab.scenario.migration;
    without_setup.setup_time = Duration::ZERO;
    let mut controller = lab.scenario.controller.clone();
    controller.policy = PolicyKind::Sequential;
    let inventory_vm = lab
        .inventory
        .vms
        .iter()
        .find(|v| v.name == template.name)
        .context("the smallest VM is not in the lab's inventory")?
        .clone();
    let mut probes = Vec::new();
    for (name, source, destination) in &plan {
        let (source_name, destination_name) = (&fleet.hosts[source.0].name, &fleet.hosts[destination.0].name);
        // The real run of this probe alone: the lab's inventory with it as
        // its only VM, sent to this destination.
        let mut inventory = lab.inventory.clone();
        inventory.vms = vec![evac_qemu::inventory::VmSpec {
            name: name.clone(),
            host: source_name.clone(),
            qmp: lab.dir.join(format!("{name}.qmp")).display().to_string(),
            destination: Some(destination_name.clone()),
            ..inventory_vm.clone()
        }];
        inventory.controller = controller.clone();
        inventory.start = evac_model::wall_clock::Timestamp::now();
        let options = evac_qemu::RunOptions {
            policy: Some(PolicyKind::Sequential),
            log: Some(std::sync::Arc::new(|_: &str| {})),
            ..Default::default()
        };
        let output = evac_qemu::run_with_options(inventory, options, std::future::pending())
            .await
            .with_context(|| format!("probe {name}"))?;
        let Some(measured_s) = output.result.vms.first().and_then(|v| v.migration_time_s) else {
            bail!(
                "probe {name} did not migrate: {:?}",
                output.result.vms.first().map(|v| &v.reason)
            );
        };
        // The same migration, simulated with no setup time.
        let mut alone = fleet.clone();
        alone.vms = vec![evac_model::Vm {
            name: name.clone(),
            host: *source,
            destination: Some(*destination),
            ..template.clone()
        }];
        let predicted =
            evac_sim::simulate_evacuation(&alone, &lab.scenario.network, without_setup, &controller);
        let Some(without_setup_s) = predicted.vms.first().and_then(|v| v.migration_time_s) else {
            bail!("the simulator did not migrate probe {name}");
        };
        probes.push(Probe {
            vm: name.clone(),
            source: source_name.clone(),
            destination: destination_name.clone(),
            measured_s,
            without_setup_s,
        });
    }
    let setup_time = setup_time_of(&probes).expect("at least one probe");
    let calibration = Calibration {
        configured: lab.scenario.migration.setup_time,
        probes,
        setup_time,
    };
    lab.scenario.migration.setup_time = setup_time;
    lab.inventory.migration.params.setup_time = setup_time;
    Ok(calibration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(measured_s: f64, without_setup_s: f64) -> Probe {
        Probe {
            vm: "p".into(),
            source: "s".into(),
            destination: "d".into(),
            measured_s,
            without_setup_s,
        }
    }

    #[test]
    fn the_setup_time_is_the_median_excess_over_the_model() {
        // Excesses 0.05, 0.20 (a probe slowed by something else), 0.07:
        // the median, 70 ms, not the mean.
        let probes = [probe(0.50, 0.45), probe(0.65, 0.45), probe(0.52, 0.45)];
        let setup = setup_time_of(&probes).unwrap();
        assert!((setup.as_secs_f64() - 0.07).abs() < 1e-9, "{setup:?}");
    }

    #[test]
    fn a_lab_faster_than_the_model_has_no_setup_time() {
        assert_eq!(setup_time_of(&[probe(0.40, 0.45)]), Some(Duration::ZERO));
        assert_eq!(setup_time_of(&[]), None);
    }
}
