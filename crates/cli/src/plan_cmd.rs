//! `evac plan INVENTORY`: measure the live fleet, simulate every policy,
//! print the triage for the recommended one.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use evac_plan::triage::PlanJson;
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
    sample: Duration,
    long: Duration,
    scenario_out: Option<&Path>,
    json: Option<&Path>,
) -> Result<()> {
    let inventory = evac_qemu::Inventory::from_path(inventory)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    crate::output::say(&format!(
        "measuring {} VMs for {} s (QEMU calc-dirty-rate, dirty-bitmap mode); nothing is migrated",
        inventory.vms.len(),
        sample.as_secs().max(1) + long.as_secs()
    ));
    let measured = runtime.block_on(evac_plan::measure(&inventory, sample, long))?;
    let mut fleet = evac_plan::scenario::fleet(&inventory, &measured);
    // Hosts that name a UPS: its word now, as a run would hear it first.
    for ups_host in inventory.ups_hosts() {
        let Some(host) = fleet.hosts.iter_mut().find(|h| h.name == ups_host.host) else {
            continue;
        };
        let now = evac_model::wall_clock::until(inventory.start, evac_model::wall_clock::Timestamp::now());
        match runtime.block_on(evac_nut::read(&ups_host.ups, Duration::from_secs(2))) {
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
    let network = inventory.network();
    // The measured fleet through the same wall as any scenario's.
    network
        .validate()
        .and_then(|()| fleet.validate())
        .map_err(|invalid| anyhow::anyhow!("the measured fleet: {}", invalid.named(&fleet)))?;
    let plan = evac_plan::triage(&fleet, &network, inventory.migration, &inventory.controller);

    // Printed in one go, a closed stdout (`| head`) ending it quietly.
    let mut text = String::new();
    macro_rules! out {
        ($($arg:tt)*) => {
            let _ = writeln!(text, $($arg)*);
        };
    }
    out!(
        "{}: {} VMs ({}) on {} hosts, WAN {} / {} RTT{}",
        inventory.name,
        fleet.vms.len(),
        fleet.total_memory(),
        fleet.hosts.len(),
        network.wan_bandwidth,
        evac_model::format_duration(network.wan_rtt),
        if inventory.network.is_none() {
            " (no [network] in the inventory: the fastest source NIC)"
        } else {
            ""
        }
    );
    out!("measured:");
    for vm in &fleet.vms {
        out!(
            "  {}: {} memory, dirtying {} of a {} working set",
            vm.name,
            vm.memory,
            vm.dirty_rate,
            vm.working_set
        );
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
    result.started_at = Some(inventory.start.to_string());
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
        let text = evac_plan::scenario::to_toml(
            &inventory.name,
            &fleet,
            &network,
            &plan.migration,
            &plan.controller,
        )?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        crate::output::say(&format!(
            "wrote {} (evac simulate {} predicts the same)",
            path.display(),
            path.display()
        ));
    }
    if let Some(path) = json {
        let doc =
            serde_json::to_string_pretty(&PlanJson::new(&plan, &fleet)).context("serializing the plan")?;
        std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))?;
        crate::output::say(&format!("wrote {}", path.display()));
    }
    Ok(())
}
