//! What `evac plan` reads from a live fleet, the same whatever the
//! backend: the inventory is read by its backend's own loader and the
//! domains found by its backend's own discovery (the code `evac run` uses),
//! so nothing of either is repeated here.

use std::time::Duration;

use anyhow::Result;
use evac_controller::ControllerConfig;
use evac_model::{Bytes, Fleet, MigrationParams, Network};

use crate::{measure, scenario, setup};

/// A live fleet, measured, and the inventory's settings.
#[derive(Debug, Clone)]
pub struct Live {
    /// The inventory's `name`.
    pub name: String,
    /// Hosts, and VMs with their measured memory, dirty rate and working set.
    pub fleet: Fleet,
    pub network: Network,
    /// Whether the inventory has a `[network]` (else the WAN is taken as the
    /// fastest source NIC).
    pub network_stated: bool,
    pub migration: MigrationParams,
    pub controller: ControllerConfig,
    /// What was measured of each VM (in the fleet's order).
    pub measured: Vec<measure::Measured>,
    /// The setup time per migration counted in `migration`, and whence.
    pub setup: setup::Setup,
}

/// How long and how much `evac plan` reads of each VM.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// The dirty-rate sample, and the longer one for the working set.
    pub sample: Duration,
    pub long: Duration,
    /// Runs of 64 KiB of its RAM read for its content (0: none).
    pub runs: usize,
    /// Probe migrations for the setup time, where the backend has them
    /// (0: none).
    pub setup_probes: usize,
    /// The inventory states `[migration] setup_time`: taken as it is,
    /// nothing probed.
    pub setup_stated: bool,
}

/// How long one probe migration may take, from its start to its end.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the measurement takes: the rate's sample and, after it, the
/// working set's; for a guest whose dirtying is a curve, also the curve's
/// periods ([`measure::curve_periods`]), in parentheses when they make it
/// longer ("18 s (31 s for a guest whose dirtying is a curve)").
pub fn measuring_time(sample: Duration, long: Duration) -> String {
    let (seconds, long) = measure::sample_seconds(sample, long);
    if long > seconds {
        let line = seconds + long;
        let curve = line + measure::curve_periods(seconds, long).iter().sum::<u64>();
        if curve > line {
            return format!("{line} s ({curve} s for a guest whose dirtying is a curve)");
        }
        format!("{line} s")
    } else {
        format!("{seconds} s")
    }
}

/// A QEMU fleet: every VM of the inventory, measured over QMP.
pub async fn qemu(
    inventory: &evac_qemu::Inventory,
    how: &Reading,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Live> {
    say(&format!(
        "measuring {} VMs for {} (QEMU calc-dirty-rate, dirty-bitmap mode) and reading {} of each one's \
         memory (pmemsave); nothing is migrated",
        inventory.vms.len(),
        measuring_time(how.sample, how.long),
        Bytes((how.runs * crate::sample::RUN_BYTES) as u64)
    ));
    let measured = measure::qemu(inventory, how).await?;
    let sizes: Vec<Bytes> = measured.iter().map(|m| m.memory).collect();
    let stated: Vec<scenario::Stated> = inventory
        .vms
        .iter()
        .map(|v| scenario::Stated {
            zero_fraction: v.zero_fraction.is_some(),
            compression_ratio: v.compression_ratio.is_some(),
        })
        .collect();
    let setup = if how.setup_stated {
        setup::Setup::stated(&inventory.migration.params)
    } else {
        setup::Setup::not_measured(
            &inventory.migration.params,
            "the QEMU backend has no setup probe yet: state [migration] setup_time in the inventory",
        )
    };
    Ok(Live {
        name: inventory.name.clone(),
        fleet: scenario::with_measured(inventory.fleet(&sizes), &measured, &stated),
        network: inventory.network(),
        network_stated: inventory.network.is_some(),
        migration: inventory.migration.params,
        controller: inventory.controller.clone(),
        measured,
        setup,
    })
}

/// A libvirt fleet: the running domains of its source hosts (all, or those
/// the inventory lists), found as `evac run` finds them, measured through
/// libvirt's dirty-rate calculation.
#[cfg(feature = "libvirt")]
pub async fn libvirt(
    inventory: &evac_libvirt::Inventory,
    how: &Reading,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Live> {
    use evac_run::Backend as _;
    // Discovery's notes (a domain with a migration running) go where the
    // plan's own do.
    let log: evac_run::Log = std::sync::Arc::new(|line: &str| {
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    });
    let mut backend = evac_libvirt::LibvirtBackend::connect(inventory.clone(), log, None).await?;
    say(&format!(
        "measuring {} domains for {} (libvirt dirty-rate calculation, dirty-bitmap mode) and reading {} of \
         each one's memory (virDomainMemoryPeek); nothing is migrated",
        backend.fleet().vms.len(),
        measuring_time(how.sample, how.long),
        Bytes((how.runs * crate::sample::RUN_BYTES) as u64)
    ));
    let measured = measure::libvirt(&backend, how).await?;
    let stated: Vec<scenario::Stated> = backend
        .fleet()
        .vms
        .iter()
        .map(|vm| {
            let spec = inventory.vms.iter().find(|v| v.name == vm.name);
            scenario::Stated {
                zero_fraction: spec.is_some_and(|v| v.zero_fraction.is_some()),
                compression_ratio: spec.is_some_and(|v| v.compression_ratio.is_some()),
            }
        })
        .collect();
    let params = inventory.migration.params;
    let setup = if how.setup_stated {
        setup::Setup::stated(&params)
    } else if how.setup_probes == 0 {
        setup::Setup::not_measured(&params, "no probe migration asked for (--setup-probes 0)")
    } else {
        probe_libvirt(&mut backend, inventory, how.setup_probes, say).await
    };
    let mut migration = params;
    migration.setup_time = setup.setup_time();
    Ok(Live {
        name: inventory.name.clone(),
        fleet: scenario::with_measured(backend.fleet().clone(), &measured, &stated),
        network: inventory.network(),
        network_stated: inventory.network.is_some(),
        migration,
        controller: inventory.controller.clone(),
        measured,
        setup,
    })
}

/// The setup time of a libvirt fleet, measured by `count` probe
/// migrations (`evac_libvirt::backend::probe`); a probe that fails is a
/// note, and with none completed the plan goes on unmeasured.
#[cfg(feature = "libvirt")]
async fn probe_libvirt(
    backend: &mut evac_libvirt::LibvirtBackend,
    inventory: &evac_libvirt::Inventory,
    count: usize,
    say: &(dyn Fn(&str) + Sync),
) -> setup::Setup {
    use evac_run::Backend as _;
    for name in backend.remove_stale_probes().await {
        say(&format!(
            "removed probe domain `{name}`, left by an evac that no longer runs"
        ));
    }
    say(&format!(
        "probing the setup time: a warm-up then {count} migrations of a paused {} MiB domain ({}...) with the fleet's flags, \
         destroyed after; no fleet domain moves",
        evac_libvirt::backend::PROBE_MEMORY_MIB,
        evac_libvirt::backend::PROBE_PREFIX
    ));
    let mut probes = Vec::new();
    let mut failures = Vec::new();
    for run in backend.probe_setup(count, PROBE_TIMEOUT).await {
        match run {
            Ok(run) => probes.push(setup::Probe {
                warm_up: run.warm_up,
                source: run.source,
                destination: run.destination,
                elapsed: run.elapsed,
                bytes: run.bytes,
                stages: [
                    ("called", run.stages.called),
                    ("bytes_seen", run.stages.bytes_seen),
                    ("returned", run.stages.returned),
                    ("found", run.stages.found),
                ]
                .into_iter()
                .filter_map(|(name, at)| Some((name, at?.as_secs_f64())))
                .collect(),
            }),
            Err(f) => failures.push(format!(
                "{} {} -> {}: {}",
                if f.warm_up { "warm-up probe" } else { "probe" },
                f.source,
                f.destination,
                f.reason
            )),
        }
    }
    setup::Setup::from_probes(
        &probes,
        failures,
        backend.fleet(),
        &inventory.network(),
        &inventory.migration.params,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measuring_time_says_what_a_curve_adds() {
        let s = Duration::from_secs;
        // 2 + 16 s, and 1 + 4 + 8 s more for a curve.
        assert_eq!(
            measuring_time(s(2), s(16)),
            "18 s (31 s for a guest whose dirtying is a curve)"
        );
        assert_eq!(measuring_time(s(1), s(1)), "1 s");
        // 1 + 2 s: no power of two below 2 s but the rate's own 1 s.
        assert_eq!(measuring_time(s(1), s(2)), "3 s");
        assert_eq!(
            measuring_time(s(2), s(8)),
            "10 s (15 s for a guest whose dirtying is a curve)"
        );
    }
}
