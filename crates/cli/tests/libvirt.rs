//! `evac run` on a libvirt inventory, against a real two-host libvirt lab:
//! the inventory (with the lab's addresses), encrypted.

use std::process::Command;

use evac_libvirt::lab::{self, Lab, LabOptions};

#[test]
fn evac_run_evacuates_every_domain_of_a_to_b_over_tls() {
    if evac_lab::skip_without(&[lab::libvirt_lab_available, lab::certtool_available]) {
        return;
    }
    let lab = Lab::start(&LabOptions {
        hosts: 2,
        rate_mbit: Some(400),
        tls: true,
    })
    .unwrap();
    let ram = lab.ram_file("cli", 32, None).unwrap();
    let mut names: Vec<String> = (0..3)
        .map(|i| lab.start_domain(0, &format!("cli{i}"), 32, &ram).unwrap())
        .collect();
    names.sort();
    let inventory = lab.dir.join("fleet.toml");
    std::fs::write(
        &inventory,
        lab.inventory(
            &[0],
            &[1],
            "400 Mbps",
            "tls = true",
            "policy = \"aimd-global\"\nperiod = \"500 ms\"",
        ),
    )
    .unwrap();
    let json = lab.dir.join("result.json");
    let out = Command::new(env!("CARGO_BIN_EXE_evac"))
        .args(["run", "--quiet", "--json"])
        .arg(&json)
        .arg(&inventory)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(result["migrated"], 3, "{result}");
    assert_eq!(result["lost"], 0, "{result}");
    let mut moved: Vec<String> = result["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    moved.sort();
    assert_eq!(moved, names);
    assert!(lab.running_domains(0).unwrap().is_empty());
    assert_eq!(lab.running_domains(1).unwrap(), names);
}
