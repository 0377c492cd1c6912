//! The live fleet as a scenario: what the simulator takes, and a file
//! `evac simulate` reads back.

use std::fmt::Write;

use anyhow::{Context, Result};
use evac_controller::ControllerConfig;
use evac_model::{Bytes, Fleet, MigrationParams, Network, Site};

use crate::Measured;

/// What an inventory states of a VM's memory itself (it wins over what
/// `evac plan` measures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stated {
    pub zero_fraction: bool,
    pub compression_ratio: bool,
}

/// `fleet` with each VM's measured memory, dirtying (a dirty curve when the
/// samples found a working set, else the short form) and content
/// (`measured` in the fleet's VM order); what the inventory states
/// (`stated`, and a stated dirty curve) is kept: the operator's word over a
/// sample of seconds.
pub fn with_measured(mut fleet: Fleet, measured: &[Measured], stated: &[Stated]) -> Fleet {
    for (i, (vm, m)) in fleet.vms.iter_mut().zip(measured).enumerate() {
        let stated = stated.get(i).copied().unwrap_or_default();
        vm.memory = m.memory;
        if vm.profile.dirty_curve.is_empty() {
            match m.dirty_curve() {
                Some(curve) => vm.set_dirty_curve(curve),
                None => {
                    vm.dirty_rate = m.dirty_rate;
                    vm.working_set = m.working_set;
                }
            }
        }
        if let Some(content) = &m.content {
            if !stated.zero_fraction {
                vm.profile.zero_fraction = content.zero_fraction;
            }
            if !stated.compression_ratio {
                vm.profile.compression_ratio = content.compression_ratio;
            }
        }
    }
    fleet
}

/// A scenario file for `fleet` over `network`, with the inventory's own
/// `[migration]` and `[controller]` (the policy set to `controller`'s).
/// Quantities are written exactly (bytes, bits per second, milliseconds).
pub fn to_toml(
    name: &str,
    fleet: &Fleet,
    network: &Network,
    migration: &MigrationParams,
    controller: &ControllerConfig,
) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by `evac plan` from the live fleet: memory and dirty rates as QEMU measured them."
    );
    let _ = writeln!(out, "name = {}", toml_string(name));
    let _ = writeln!(out, "\n[network]");
    let _ = writeln!(out, "wan_bandwidth = \"{:.0} bps\"", network.wan_bandwidth.0);
    let _ = writeln!(out, "wan_rtt = \"{} ms\"", millis(network.wan_rtt));
    let _ = writeln!(out, "tcp_window = \"{} B\"", network.tcp_window.0);
    // Through one document so nested tables get their full names
    // (`[controller.aimd]`).
    #[derive(serde::Serialize)]
    struct Settings<'a> {
        migration: &'a MigrationParams,
        controller: &'a ControllerConfig,
    }
    out.push('\n');
    out += &toml::to_string(&Settings {
        migration,
        controller,
    })
    .context("writing the settings")?;
    for host in &fleet.hosts {
        let _ = writeln!(out, "\n[[host]]");
        let _ = writeln!(out, "name = {}", toml_string(&host.name));
        let site = match host.site {
            Site::Source => "source",
            Site::Destination => "destination",
        };
        let _ = writeln!(out, "site = \"{site}\"");
        let _ = writeln!(out, "nic = \"{:.0} bps\"", host.nic.0);
        if let Some(memory) = host.memory {
            let _ = writeln!(out, "memory = \"{} B\"", memory.0);
        }
        if let Some(off) = host.power_off_at {
            let _ = writeln!(out, "power_off_at = \"{} ms\"", millis(off));
        }
        if let Some(cpus) = host.migration_cpus {
            let _ = writeln!(out, "migration_cpus = {cpus:?}");
        }
    }
    for vm in &fleet.vms {
        let _ = writeln!(out, "\n[[vm]]");
        let _ = writeln!(out, "name = {}", toml_string(&vm.name));
        let _ = writeln!(out, "host = {}", toml_string(&fleet.host(vm.host).name));
        let _ = writeln!(out, "memory = \"{} B\"", vm.memory.0);
        if vm.profile.dirty_curve.is_empty() {
            let _ = writeln!(out, "dirty_rate = \"{:.0} B/s\"", vm.dirty_rate.0);
            let _ = writeln!(out, "working_set = \"{} B\"", vm.working_set.0);
        } else {
            let points: Vec<String> = vm
                .profile
                .dirty_curve
                .iter()
                .map(|p| {
                    format!(
                        "{{ after = \"{} ms\", dirtied = \"{} B\" }}",
                        millis(p.after),
                        p.dirtied.0
                    )
                })
                .collect();
            let _ = writeln!(out, "dirty_curve = [{}]", points.join(", "));
        }
        // Exactly: `{:?}` writes the shortest text that reads back as the
        // same f64.
        let _ = writeln!(out, "zero_fraction = {:?}", vm.profile.zero_fraction);
        let _ = writeln!(out, "compression_ratio = {:?}", vm.profile.compression_ratio);
        let _ = writeln!(out, "priority = {}", vm.priority);
        if vm.disk > Bytes::ZERO {
            let _ = writeln!(out, "disk = \"{} B\"", vm.disk.0);
        }
        if let Some(d) = vm.destination {
            let _ = writeln!(out, "destination = {}", toml_string(&fleet.host(d).name));
        }
    }
    Ok(out)
}

fn millis(d: std::time::Duration) -> String {
    let text = format!("{:.3}", d.as_secs_f64() * 1e3);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A TOML basic string (escapes quotes, backslashes and control characters).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}
