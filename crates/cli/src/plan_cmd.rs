//! `evac plan INVENTORY`: measure the live fleet (QEMU or libvirt, as the
//! inventory's `backend` says), simulate every policy, print the triage
//! for the recommended one.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use evac_plan::triage::PlanJson;
use evac_plan::Live;
use evac_report::readable::{hms, seconds};

/// `t` seconds into the plan as a time of day ("14:30:00 CET").
fn time_of_day(result: &evac_report::RunResult, t: f64) -> String {
    result
        .started_at
        .as_deref()
        .and_then(|start| evac_report::readable::time_of_day(start, t))
        .unwrap_or_else(|| hms(t))
}

pub fn plan(
    inventory: &Path,
    how: &evac_plan::live::Reading,
    scenario_out: Option<&Path>,
    json: Option<&Path>,
) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let say = |line: &str| crate::output::say(line);
    let path = inventory;
    let inventory = crate::run::load(path)?;
    // Whether `[migration] setup_time` is written in the file (a default
    // of 0 is not a statement): then it is the plan's, and nothing is
    // probed. The file parsed above, so it reads again.
    let how = &evac_plan::live::Reading {
        setup_stated: std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .is_some_and(|t| t.get("migration").and_then(|m| m.get("setup_time")).is_some()),
        ..*how
    };
    // Power-offs given as times count from when the inventory was read.
    let (ups_hosts, start) = (inventory.common().ups_hosts(), inventory.common().start());
    let live = runtime.block_on(async {
        match inventory {
            crate::run::Inventory::Qemu(inventory) => evac_plan::live::qemu(&inventory, how, &say).await,
            #[cfg(feature = "libvirt")]
            crate::run::Inventory::Libvirt(inventory) => {
                evac_plan::live::libvirt(&inventory, how, &say).await
            }
        }
    })?;
    let Live {
        name,
        mut fleet,
        network,
        network_stated,
        migration,
        controller,
        measured,
        setup,
    } = live;
    // Hosts that name a UPS: its word now, as a run would hear it first.
    for ups_host in ups_hosts {
        let Some(host) = fleet.hosts.iter_mut().find(|h| h.name == ups_host.host) else {
            continue;
        };
        let now = evac_model::wall_clock::until(start, evac_model::wall_clock::Timestamp::now());
        match runtime.block_on(evac_nut::read(&ups_host.ups, std::time::Duration::from_secs(2))) {
            Ok(reading) => {
                host.power_off_at = match reading.power_off(now, ups_host.margin) {
                    evac_nut::PowerOff::None => None,
                    evac_nut::PowerOff::At(at) => Some(at),
                    evac_nut::PowerOff::Unknown => host.power_off_at,
                };
                crate::output::say(&format!(
                    "{}: UPS {} says {}{}",
                    host.name,
                    ups_host.ups,
                    reading.power,
                    reading
                        .runtime
                        .map_or_else(String::new, |r| format!(", {:.0} s left", r.as_secs_f64()))
                ));
            }
            Err(e) => crate::output::say(&format!("warning: {}: {e}; its power_off_at stands", host.name)),
        }
    }
    // The measured fleet through the same wall as any scenario's.
    network
        .validate()
        .and_then(|()| fleet.validate())
        .map_err(|invalid| anyhow::anyhow!("the measured fleet: {}", invalid.named(&fleet)))?;
    let plan = evac_plan::triage(&fleet, &network, migration, &controller);

    // Printed in one go, a closed stdout (`| head`) ending it quietly.
    let mut text = String::new();
    macro_rules! out {
        ($($arg:tt)*) => {
            let _ = writeln!(text, $($arg)*);
        };
    }
    out!(
        "{}: {} VMs ({}) on {} hosts, WAN {} / {} RTT{}",
        name,
        fleet.vms.len(),
        fleet.total_memory(),
        fleet.hosts.len(),
        network.wan_bandwidth,
        evac_model::format_duration(network.wan_rtt),
        if !network_stated {
            " (no [network] in the inventory: the fastest source NIC)"
        } else {
            ""
        }
    );
    out!("measured:");
    for (i, vm) in fleet.vms.iter().enumerate() {
        let content = match measured.get(i).and_then(|m| m.content) {
            Some(c) => format!(
                "; {:.1} % zero pages (± {:.1}), the rest compressing {:.2}:1 (± {:.2}), from {} pages",
                100.0 * c.zero_fraction,
                100.0 * c.zero_fraction_stderr,
                c.compression_ratio,
                c.compression_ratio_stderr,
                c.pages_sampled
            ),
            None => String::new(),
        };
        let dirtying = if vm.profile.dirty_curve.is_empty() {
            format!("dirtying {} of a {} working set", vm.dirty_rate, vm.working_set)
        } else {
            let points: Vec<String> = vm
                .profile
                .dirty_curve
                .iter()
                .map(|p| format!("{} within {}", p.dirtied, evac_model::format_duration(p.after)))
                .collect();
            format!("dirtying {}", points.join(", "))
        };
        out!("  {}: {} memory, {dirtying}{content}", vm.name, vm.memory);
    }
    for line in setup.lines() {
        out!("{line}");
    }
    out!("\n| policy | migrated | priority | total |");
    out!("|---|---:|---:|---:|");
    for (policy, r) in &plan.results {
        out!(
            "| {policy} | {} of {} | {} of {} | {} |",
            r.migrated,
            r.vms.len(),
            r.priority_saved,
            r.priority_total,
            r.total_time_s.map_or_else(|| "-".to_owned(), seconds)
        );
    }
    // Its times of day count from when the inventory was read, as its
    // power-offs given as times did.
    let mut result = plan.recommended_result().clone();
    result.started_at = Some(start.to_string());
    let result = &result;
    out!(
        "\nrecommended: {} (saves priority {} of {}, {} of {} VMs)",
        plan.recommended_policy(),
        result.priority_saved,
        result.priority_total,
        result.migrated,
        result.vms.len()
    );
    match result.total_time_s {
        Some(t) => {
            out!("site ETA: {} ({t:.1} s)", hms(t));
        }
        None => {
            out!("site ETA: none (no VM would move)");
        }
    }
    let deadlines: Vec<_> = fleet
        .hosts
        .iter()
        .filter_map(|h| Some((&h.name, h.power_off_at?)))
        .collect();
    if !deadlines.is_empty() {
        out!(
            "power-offs (time left counted from {}):",
            time_of_day(result, 0.0)
        );
        for (name, at) in deadlines {
            out!(
                "  {name}: at {}, {} left",
                time_of_day(result, at.as_secs_f64()),
                hms(at.as_secs_f64())
            );
        }
    }
    let summary = evac_report::summary::describe(result);
    out!("hosts:");
    for line in &summary.hosts {
        out!("  {line}");
    }
    if summary.not_moved.is_empty() {
        out!("every VM would move");
    } else {
        out!("would not move:");
        for line in &summary.not_moved {
            out!("  {line}");
        }
    }
    for line in &summary.warnings {
        out!("WARNING: {line}");
    }
    for line in evac_plan::curve::too_short(&fleet, &measured, result) {
        out!("note: {line}");
    }
    out!("recommended settings (the inventory's, with this policy):");
    #[derive(serde::Serialize)]
    struct Settings<'a> {
        controller: &'a evac_controller::ControllerConfig,
        migration: &'a evac_model::MigrationParams,
    }
    let settings = toml::to_string(&Settings {
        controller: &plan.controller,
        migration: &plan.migration,
    })
    .context("writing the settings")?;
    for line in settings.lines().filter(|l| !l.is_empty()) {
        out!("  {line}");
    }
    crate::output::Console::stdout().line(text.trim_end())?;

    if let Some(path) = scenario_out {
        let text = evac_plan::scenario::to_toml(&name, &fleet, &network, &plan.migration, &plan.controller)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        crate::output::say(&format!(
            "wrote {} (evac simulate {} predicts the same)",
            path.display(),
            path.display()
        ));
    }
    if let Some(path) = json {
        let doc = serde_json::to_string_pretty(&PlanJson::new(&plan, &fleet, &measured, &setup))
            .context("serializing the plan")?;
        std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))?;
        crate::output::say(&format!("wrote {}", path.display()));
    }
    Ok(())
}
