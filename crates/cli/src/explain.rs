//! `evac simulate --explain`: the controller's own account, per VM, of why
//! it started each VM when it did and with what, switched its mode, or gave
//! it up (the `deadline` planner explains itself; the published policies
//! have nothing to say).

use std::fmt::Write as _;

use evac_controller::Controller;
use evac_report::RunResult;
use evac_scenario::Scenario;

/// Simulates `scenario` and returns its result with the explanations as
/// text, one block per VM.
pub fn simulate(scenario: &Scenario) -> (RunResult, String) {
    let mut controller = evac_sim::evacuation(
        &scenario.fleet,
        &scenario.network,
        scenario.migration,
        &scenario.controller,
    );
    let result = evac_sim::simulate(
        &scenario.fleet,
        &scenario.network,
        scenario.controller.period,
        &mut controller,
    );
    let mut text = String::new();
    // A policy that explains nothing (every published one) says so once,
    // not once per VM.
    let explains = scenario
        .fleet
        .vm_ids()
        .any(|id| !controller.explain(id).is_empty());
    if !explains {
        let _ = writeln!(text, "the {} policy records no decisions", controller.name());
    }
    for (id, record) in scenario.fleet.vm_ids().zip(&result.vms) {
        let outcome = match record.outcome {
            evac_report::Outcome::Migrated => "migrated",
            evac_report::Outcome::NotMigrated => "not migrated",
            evac_report::Outcome::Lost => "lost",
        };
        let _ = writeln!(text, "{} ({}): {outcome}", record.name, record.host);
        let decisions = controller.explain(id);
        if explains && decisions.is_empty() {
            let _ = writeln!(text, "  (no decision recorded)");
        }
        for e in decisions {
            let _ = writeln!(text, "  {:>7.1} s  {:<8} {}", e.at_s, e.decision, e.why);
        }
    }
    (result, text)
}
