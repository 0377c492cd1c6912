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
    for (id, record) in scenario.fleet.vm_ids().zip(&result.vms) {
        let _ = writeln!(text, "{} ({}): {:?}", record.name, record.host, record.outcome);
        let decisions = controller.explain(id);
        if decisions.is_empty() {
            let _ = writeln!(text, "  (no decision recorded)");
        }
        for e in decisions {
            let _ = writeln!(text, "  {:>7.1} s  {:<8} {}", e.at_s, e.decision, e.why);
        }
    }
    (result, text)
}
