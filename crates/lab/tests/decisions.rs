//! A real lab fleet decides what the simulation of the same fleet decides,
//! VM by VM: `labs/fleet24.toml` (24 idle VMs of 32 MiB on 6 sources, 3
//! destinations, a 400 Mbit/s WAN of 10 ms) evacuated by the real run loop
//! under `deadline`, and compared with the simulator's prediction by
//! `evac_lab::decisions`: every VM started in the same order, with the
//! same connections and mode, each within a control period of its
//! simulated start (plus the drift of the end before it). The setup time
//! both use is measured first on the lab by 3 probe migrations
//! (`evac_lab::calibration`), as `evac lab run --calibrate 3` does. Needs
//! root and QEMU; about half a minute.
//!
//! That the comparison can fail is checked on the same run: against the
//! simulation of `aimd-global` (another policy, so other decisions) it
//! must find differences. Before the QEMU backend bounded a migration's
//! rate by what its host sent, this test failed on the lab's own
//! `deadline` too: a first reading of 501-666 Mbit/s on the 400 Mbit/s WAN
//! made it start a second migration on a full WAN (docs/lab.md).

use evac_controller::PolicyKind;
use evac_lab::decisions::Comparison;
use evac_lab::evacuate::evacuate_quietly;
use evac_lab::instance::LabInstance;
use evac_lab::{self as lab};
use evac_report::Outcome;

const FLEET24: &str = include_str!("../labs/fleet24.toml");

#[test]
fn deadline_decides_in_the_lab_as_in_the_simulation() {
    lab::skip_without!(&[lab::netns_available, lab::qemu_available]);
    // Named per process: parallel test runs never share a lab.
    let name = format!("f24dec{}", std::process::id());
    let text = FLEET24.replace("name = \"fleet24\"", &format!("name = \"{name}\""));
    let mut built = LabInstance::build(&text, "labs/fleet24.toml").unwrap();
    let period = built.scenario.controller.period.as_secs_f64();
    let runtime = evac_lab::runtime();
    let calibration = runtime
        .block_on(evac_lab::calibration::calibrate(&mut built, 3))
        .unwrap();
    eprintln!("{}", calibration.summary());
    // Each probe moved, measured against its own simulation.
    assert_eq!(calibration.probes.len(), 3);
    assert_eq!(built.scenario.migration.setup_time, calibration.setup_time);
    assert_eq!(
        built.inventory.migration.params.setup_time,
        calibration.setup_time
    );
    let run = runtime
        .block_on(evacuate_quietly(&mut built, PolicyKind::Deadline))
        .unwrap();
    let (scenario, dir) = (built.scenario.clone(), built.dir.clone());
    drop(built);
    assert!(!dir.exists(), "{} left behind", dir.display());

    let comparison = Comparison::new(&run.measured.vms, &run.prediction.vms, period);
    let table = comparison.table();
    eprintln!("{table}");
    let moved = run
        .measured
        .vms
        .iter()
        .filter(|vm| vm.outcome == Outcome::Migrated)
        .count();
    assert_eq!((moved, run.prediction.migrated), (24, 24), "{table}");
    let differences: Vec<String> = comparison.mismatches().iter().map(|m| m.to_string()).collect();
    assert!(
        differences.is_empty(),
        "the lab's decisions differ from the simulation's:\n{}\n{table}",
        differences.join("\n")
    );

    // The same run against another policy's simulation: other decisions,
    // which the comparison must see.
    let mut aimd = scenario.controller.clone();
    aimd.policy = PolicyKind::AimdGlobal;
    let other = evac_sim::simulate_evacuation(&scenario.fleet, &scenario.network, scenario.migration, &aimd);
    let against_aimd = Comparison::new(&run.measured.vms, &other.vms, period).mismatches();
    assert!(
        !against_aimd.is_empty(),
        "deadline's run matched aimd-global's simulation: the comparison tells nothing\n{}",
        Comparison::new(&run.measured.vms, &other.vms, period).table()
    );
}
