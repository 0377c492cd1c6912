//! `evac plan INVENTORY`: measure the live fleet (QEMU or libvirt, as the
//! inventory's `backend` says), simulate every policy, print the triage
//! for the recommended one.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use evac_plan::triage::PlanJson;
use evac_plan::Live;
use evac_report::readable::{hms, seconds};

pub fn plan(
    inventory: &Path,
    how: &evac_plan::live::Reading,
    scenario_out: Option<&Path>,
    json: Option<&Path>,
) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let say = |line: &str| crate::output::say(line);
    let live = runtime.block_on(async {
        match crate::run::load(inventory)? {
            crate::run::Inventory::Qemu(inventory) => evac_plan::live::qemu(&inventory, how, &say).await,
            #[cfg(feature = "libvirt")]
            crate::run::Inventory::Libvirt(inventory) => {
                evac_plan::live::libvirt(&inventory, how, &say).await
            }
        }
    })?;
    let Live {
        name,
        fleet,
        network,
        network_stated,
        migration,
        controller,
        measured,
    } = live;
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
    let result = plan.recommended_result();
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
        let text = evac_plan::scenario::to_toml(&name, &fleet, &network, &plan.migration, &plan.controller)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        crate::output::say(&format!(
            "wrote {} (evac simulate {} predicts the same)",
            path.display(),
            path.display()
        ));
    }
    if let Some(path) = json {
        let doc = serde_json::to_string_pretty(&PlanJson::new(&plan, &fleet, &measured))
            .context("serializing the plan")?;
        std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))?;
        crate::output::say(&format!("wrote {}", path.display()));
    }
    Ok(())
}
