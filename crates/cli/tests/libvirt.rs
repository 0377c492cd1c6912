//! `evac run` on a libvirt inventory, against a real two-host libvirt lab:
//! the inventory (with the lab's addresses), encrypted.

use std::process::Command;
use std::time::Duration;

use evac_lab::libvirt::{self as lab, Lab, LabOptions};

mod common;
use common::{evac_command, text};

/// The names of the VMs a result (`--json`) reports, sorted.
fn reported_names(result: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = result["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn evac_run_evacuates_every_domain_of_a_to_b_over_tls() {
    let Some(lab) = Lab::unless_missing(
        &[lab::libvirt_lab_available, lab::certtool_available],
        &LabOptions::pair(true),
    ) else {
        return;
    };
    let mut names = lab.start_domains("cli", 3, 32);
    names.sort();
    let inventory = lab.pair_inventory_file("tls = true", "policy = \"aimd-global\"\nperiod = \"500 ms\"");
    let json = lab.dir.join("result.json");
    let out = evac_command()
        .args(["run", "--quiet", "--json"])
        .arg(&json)
        .arg(&inventory)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(result["migrated"], 3, "{result}");
    assert_eq!(result["lost"], 0, "{result}");
    assert_eq!(reported_names(&result), names);
    assert!(lab.running_domains(0).unwrap().is_empty());
    assert_eq!(lab.running_domains(1).unwrap(), names);
}

/// `evac run` SIGKILLed mid-run, then `evac run --resume`: the fleet is
/// rebuilt by discovery (the domains already moved are no longer on A), yet
/// the journal's VMs are matched by name: nothing migrated twice, nothing
/// lost, one JSON covering every VM.
#[test]
fn evac_killed_mid_run_and_resumed_moves_each_domain_once_and_reports_all() {
    let Some(lab) = Lab::unless_missing(&[lab::libvirt_lab_available], &LabOptions::pair(false)) else {
        return;
    };
    let mut names = lab.start_domains("res", 4, 64);
    names.sort();
    // One at a time at 8 MiB/s: about 8 s per domain.
    let inventory = lab.pair_inventory_file(
        "max_bandwidth = \"64 Mbps\"",
        "policy = \"sequential\"\nperiod = \"500 ms\"",
    );
    let evac = |extra: &[&str], json: &str| {
        let mut cmd = evac_command();
        cmd.args(["run", "--quiet"])
            .args(extra)
            .arg("--json")
            .arg(lab.dir.join(json))
            .arg(&inventory);
        cmd
    };
    let mut first = evac(&[], "first.json")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once a domain has left A and the next one's migration runs.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let started = std::time::Instant::now();
    let in_flight: Vec<String> = loop {
        let doms = runtime
            .block_on(async {
                let conn =
                    evac_libvirt::client::connect(&lab.hosts[0].uri(), Duration::from_secs(30)).await?;
                evac_libvirt::client::running_domains(&conn, &[], Duration::from_secs(30)).await
            })
            .unwrap();
        let jobs: Vec<String> = doms
            .iter()
            .filter(|d| d.job_running)
            .map(|d| d.name.clone())
            .collect();
        if !jobs.is_empty() && doms.len() < names.len() {
            break jobs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never one moved and one moving"
        );
        assert!(first.try_wait().unwrap().is_none(), "evac ended early");
        std::thread::sleep(Duration::from_millis(200));
    };
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let out = evac(&["--resume"], "resumed.json").output().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.dir.join("resumed.json")).unwrap()).unwrap();
    assert_eq!(
        (result["migrated"].as_u64(), result["lost"].as_u64()),
        (Some(4), Some(0)),
        "{result}"
    );
    assert_eq!(reported_names(&result), names, "{result}");
    assert!(lab.running_domains(0).unwrap().is_empty());
    assert_eq!(lab.running_domains(1).unwrap(), names);
    // The journal: no domain in flight at the kill started again after the
    // `resume`, and each domain migrated once.
    let journal = std::fs::read_to_string(lab.dir.join("run/journal.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let resumed = entries
        .iter()
        .position(|e| e["event"] == "resume")
        .expect("a resume entry");
    for domain in &in_flight {
        assert!(
            !entries[resumed..]
                .iter()
                .any(|e| e["event"] == "start" && e["vm"] == domain.as_str()),
            "{domain} started again: {journal}"
        );
    }
    for name in &names {
        let migrated = entries
            .iter()
            .filter(|e| {
                e["event"] == "end" && e["vm"] == name.as_str() && e["record"]["outcome"] == "migrated"
            })
            .count();
        assert_eq!(migrated, 1, "{name}: {journal}");
    }
}

/// Every domain, running or only defined, on host `i` of the lab.
fn all_domains(lab: &Lab, i: usize) -> Vec<String> {
    let uri = lab.hosts[i].uri();
    evac_libvirt::client::blocking(Duration::from_secs(10), move || {
        let conn = evac_libvirt::client::Conn::open_blocking(&uri)?;
        let doms = conn.0.list_all_domains(0)?;
        doms.iter().map(|d| d.get_name()).collect::<Result<Vec<_>, _>>()
    })
    .unwrap()
}

/// `evac plan` on a libvirt inventory (the lab's, with a `[network]`): the
/// domains are found on the source host as `evac run` finds them and
/// measured through libvirt's dirty-rate calculation; the output is the
/// QEMU plan's (same lines, same JSON), its setup time per migration
/// measured by probe migrations that leave no domain behind, and a real
/// run right after takes each domain within 20 % of the plan's time.
#[test]
fn evac_plan_measures_a_libvirt_fleet_as_a_qemu_one() {
    let Some(lab) = Lab::unless_missing(&[lab::libvirt_lab_available], &LabOptions::pair(false)) else {
        return;
    };
    // Sizes a wrong unit (KiB for bytes, MB for MiB) would show. The
    // second's RAM: 60 % zero pages, half the rest text-like (its pages
    // written here, so the truth is known page by page).
    let sizes = [("plan0", 48u64), ("plan1", 80)];
    let mix = evac_lab::Mix { zero: 0.6, text: 0.2 };
    let mut names = Vec::new();
    for (name, mib) in sizes {
        let ram = lab.ram_file(name, mib, None).unwrap();
        if name == "plan1" {
            let mut bytes = Vec::with_capacity((mib << 20) as usize);
            let mut page = [0u8; 4096];
            for index in 0..mib * 256 {
                mix.page(index, &mut page);
                bytes.extend_from_slice(&page);
            }
            std::fs::write(&ram, bytes).unwrap();
        }
        names.push(lab.start_domain(0, name, mib, &ram).unwrap());
    }
    let inventory = lab.dir.join("fleet.toml");
    let inventory_text = lab.pair_inventory("", "policy = \"sequential\"\nperiod = \"500 ms\"")
        // The lab's link: tbf at 400 Mbit/s (`LabOptions::pair`).
        + "[network]\nwan_bandwidth = \"400 Mbps\"\nwan_rtt = \"2 ms\"\n";
    std::fs::write(&inventory, &inventory_text).unwrap();
    let (json, scenario) = (lab.dir.join("plan.json"), lab.dir.join("plan.toml"));
    let (stdout, stderr) = plan(
        evac_command()
            .arg("plan")
            .arg(&inventory)
            .args(["--sample", "1s", "--working-set-sample", "1s", "--json"])
            .arg(&json)
            .arg("--scenario-out")
            .arg(&scenario),
    );
    assert!(
        stderr.contains("measuring 2 domains for 1 s (libvirt dirty-rate calculation"),
        "{stderr}"
    );
    assert!(
        stderr.contains("probing the setup time: a warm-up then 3 migrations"),
        "{stderr}"
    );
    // The probes left nothing on either host: only the fleet's domains.
    for host in 0..2 {
        let left: Vec<String> = all_domains(&lab, host)
            .into_iter()
            .filter(|d| d.starts_with("evac-probe-"))
            .collect();
        assert!(left.is_empty(), "host {host}: {left:?}");
    }
    assert_eq!(lab.running_domains(0).unwrap(), names);
    // The QEMU plan's lines: the fleet over the stated WAN, what was
    // measured, the table, the pick and its ETA.
    let first = stdout.lines().next().unwrap();
    assert!(
        first.contains(": 2 VMs (128 MiB) on 2 hosts, WAN 400 Mbps / 2 ms RTT"),
        "{first}"
    );
    for line in [
        "measured:",
        "setup per migration: ",
        "| policy | migrated | priority | total |",
        "recommended: ",
        "site ETA: ",
        "every VM would move",
    ] {
        assert!(stdout.contains(line), "`{line}` missing:\n{stdout}");
    }
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let keys: Vec<&str> = plan.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "hosts",
            "measured",
            "policies",
            "recommended_policy",
            "settings",
            "setup",
            "total_time_s",
            "vms"
        ]
    );
    let measured = plan["measured"].as_array().unwrap();
    assert_eq!(measured.len(), 2);
    for (vm, ((_, mib), name)) in measured.iter().zip(sizes.iter().zip(&names)) {
        assert_eq!(vm["name"], name.as_str());
        assert_eq!(vm["memory_bytes"], mib << 20, "{vm}");
        // An idle guest (qboot finds nothing to boot): QEMU counts at most
        // a few pages of its own, well under 1 MiB/s.
        assert!(
            vm["dirty_rate_bytes_per_second"].as_f64().unwrap() < 1_048_576.0,
            "{vm}"
        );
    }
    // The mixed domain's zero share within 5 points of the truth, read
    // through virDomainMemoryPeek; the random one has none.
    let truth = mix.zero_pages(80 * 256) as f64 / (80.0 * 256.0);
    let mixed = &measured[1]["content_sample"];
    let zero = mixed["zero_fraction"].as_f64().unwrap();
    eprintln!(
        "plan1 (libvirt): zero share sampled {zero:.4} (± {:.4}, {} pages) against {truth:.4} written; ratio {:.3}",
        mixed["zero_fraction_stderr"].as_f64().unwrap(),
        mixed["pages_sampled"],
        mixed["compression_ratio"].as_f64().unwrap()
    );
    assert!((zero - truth).abs() <= 0.05, "{mixed}");
    assert!(measured[0]["content_sample"]["zero_fraction"].as_f64().unwrap() < 0.02);
    assert_eq!(plan["policies"].as_array().unwrap().len(), 6);
    assert_eq!(plan["hosts"][0]["vms_not_moved"], 0);
    // The setup time: measured by a warm-up and three probes (none
    // failed), each its time less its bytes' at 400 Mbps, the median of
    // the three the plan's.
    let setup = &plan["setup"];
    assert_eq!(setup["source"], "measured", "{setup}");
    let probes = setup["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 4, "{setup}");
    assert_eq!(probes[0]["warm_up"], true, "{setup}");
    let mut by_hand: Vec<f64> = probes[1..]
        .iter()
        .map(|p| p["elapsed_s"].as_f64().unwrap() - p["bytes"].as_f64().unwrap() * 8.0 / 400e6)
        .collect();
    by_hand.sort_by(f64::total_cmp);
    let setup_s = setup["setup_time_s"].as_f64().unwrap();
    assert!((setup_s - by_hand[1]).abs() < 0.05, "{setup_s} vs {by_hand:?}");
    assert!(setup_s > 0.0, "{setup}");
    eprintln!(
        "setup measured: {setup_s:.2} s (probes {:.2}, {:.2}, {:.2} s; warm-up {:.2} s; bytes {:?})",
        by_hand[0],
        by_hand[1],
        by_hand[2],
        probes[0]["elapsed_s"].as_f64().unwrap(),
        probes
            .iter()
            .map(|p| p["bytes"].as_u64().unwrap())
            .collect::<Vec<_>>()
    );
    let predicted = plan["total_time_s"].as_f64().unwrap();
    // By hand, `sequential`: 48 MiB of random bytes and 80 MiB of which
    // about 60 % are zero pages (9 B each): about 80 MiB on the wire at
    // 400 Mbps, 1.7 s; idle guests re-send nothing; one after the other,
    // each after its setup. Counting every byte and no setup: 2.68 s.
    let wire = ((48u64 << 20) as f64 + (80u64 << 20) as f64 * (1.0 - truth)) * 8.0 / 400e6;
    let expected = wire + 2.0 * setup_s;
    let sequential = plan["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == "sequential")
        .and_then(|p| p["total_time_s"].as_f64())
        .unwrap();
    assert!(
        (sequential - expected).abs() < 0.1 * expected,
        "{sequential} vs {expected}"
    );
    // The scenario written reads back (`evac simulate` predicts the same).
    let resim = evac_command()
        .arg("simulate")
        .arg(&scenario)
        .args(["--policy", plan["recommended_policy"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(resim.status.success(), "{}", text(&resim.stderr));

    // A real run right after.
    let real = lab.dir.join("real.json");
    let out = evac_command()
        .args([
            "run",
            "--quiet",
            "--policy",
            plan["recommended_policy"].as_str().unwrap(),
        ])
        .arg("--json")
        .arg(&real)
        .arg(&inventory)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let real: serde_json::Value = serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    assert_eq!(real["migrated"], 2, "{real}");
    // Each domain's time, planned against real. The target, 10 %
    // median and 20 % worst, is judged from the figures docs/plan.md
    // quotes over several runs; this test fails beyond 35 %, as plan_lab
    // does, so that one run on a loaded machine does not turn it red (a
    // CI run beside a benchmark read -21 % once, the two domains migrating
    // side by side with their handshakes contending).
    let time_of = |doc: &serde_json::Value, name: &str| {
        doc["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["migration_time_s"].as_f64())
            .unwrap_or_else(|| panic!("{name} has no migration time: {doc}"))
    };
    let mut errors = Vec::new();
    for name in &names {
        let (p, r) = (time_of(&plan, name), time_of(&real, name));
        eprintln!(
            "{name}: plan {p:.2} s, real {r:.2} s ({:+.1} %)",
            100.0 * (p - r) / r
        );
        errors.push(((p - r) / r).abs());
    }
    errors.sort_by(f64::total_cmp);
    assert!(
        errors.iter().all(|e| *e <= 0.35),
        "a domain's planned time is more than 35 % off its real one: {errors:?}"
    );
    // What the plan's scenario sends, simulated again with its JSON.
    let resim_json = lab.dir.join("resim.json");
    let out = evac_command()
        .arg("simulate")
        .arg(&scenario)
        .args(["--policy", plan["recommended_policy"].as_str().unwrap(), "--json"])
        .arg(&resim_json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let resim: serde_json::Value = serde_json::from_slice(&std::fs::read(&resim_json).unwrap()).unwrap();
    let plan_bytes = resim["bytes_sent"].clone();
    eprintln!(
        "plan {predicted:.2} s, real {:.2} s (libvirt, 128 MiB idle, 400 Mbps); bytes plan {}, libvirt {}",
        real["total_time_s"].as_f64().unwrap(),
        plan_bytes,
        real["bytes_sent"],
    );
    // The bytes: the plan's (its scenario simulated) against libvirt's
    // record of the migrations (the target is 5 %, docs/plan.md).
    let (p, r) = (plan_bytes.as_f64().unwrap(), real["bytes_sent"].as_f64().unwrap());
    assert!((p - r).abs() <= 0.1 * r, "plan {p} B, libvirt {r} B");
}

/// A setup probe that fails (the destination daemon cannot be reached
/// from the source: its `peer_uri` names a socket that does not exist)
/// leaves no probe domain behind, and the plan still comes out, saying the
/// setup time is not measured and why.
#[test]
fn a_failed_setup_probe_leaves_nothing_and_the_plan_says_so() {
    let Some(lab) = Lab::unless_missing(&[lab::libvirt_lab_available], &LabOptions::pair(false)) else {
        return;
    };
    let ram = lab.ram_file("fail", 32, None).unwrap();
    let names = vec![lab.start_domain(0, "fail0", 32, &ram).unwrap()];
    let good = format!("peer_uri = \"{}\"", lab.hosts[1].peer_uri());
    let inventory_text = lab.pair_inventory("", "policy = \"sequential\"");
    assert!(inventory_text.contains(&good), "{inventory_text}");
    let inventory_text = inventory_text.replace(
        &good,
        "peer_uri = \"qemu+unix:///system?socket=/nonexistent/evac-probe-test.sock\"",
    );
    let inventory = lab.dir.join("fleet.toml");
    std::fs::write(&inventory, &inventory_text).unwrap();
    // Two probe domains as an earlier plan of this machine would have left
    // them: one of a process that is gone (removed), one of this live
    // process (left alone). Names as evac makes them: the machine's name
    // (not alphanumerics as `_`), the pid, a number.
    let machine: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let stale = format!("evac-probe-{machine}-{gone_pid}-0");
    let alive = format!("evac-probe-{machine}-{}-9", std::process::id());
    for name in [&stale, &alive] {
        let xml = lab.dir.join(format!("{name}.xml"));
        std::fs::write(
            &xml,
            format!(
                "<domain type='kvm'><name>{name}</name><memory unit='MiB'>16</memory><vcpu>1</vcpu>\
                 <os><type arch='x86_64' machine='q35'>hvm</type></os><devices>\
                 <controller type='usb' model='none'/><memballoon model='none'/></devices></domain>"
            ),
        )
        .unwrap();
        let made = Command::new("virsh")
            .args(["-c", &lab.hosts[0].uri(), "create", "--paused"])
            .arg(&xml)
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", text(&made.stderr));
    }
    let json = lab.dir.join("plan.json");
    let (stdout, stderr) = plan(
        evac_command()
            .arg("plan")
            .arg(&inventory)
            .args([
                "--sample",
                "1s",
                "--working-set-sample",
                "1s",
                "--memory-sample",
                "16",
                "--setup-probes",
                "1",
                "--json",
            ])
            .arg(&json),
    );
    assert!(
        stdout.contains("setup per migration: not measured; 0.00 s counted"),
        "{stdout}"
    );
    assert!(stdout.contains("  warm-up probe "), "{stdout}");
    // The probe domains were removed without a complaint.
    assert!(!stdout.contains("could not be removed"), "{stdout}");
    assert!(stdout.contains("no probe completed"), "{stdout}");
    assert!(stdout.contains("site ETA: "), "{stdout}");
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(plan["setup"]["source"], "not_measured", "{}", plan["setup"]);
    assert_eq!(plan["setup"]["probes"].as_array().unwrap().len(), 0);
    // The warm-up and the probe failed: two notes and the conclusion.
    assert_eq!(
        plan["setup"]["notes"].as_array().unwrap().len(),
        3,
        "{}",
        plan["setup"]
    );
    // The dead process's probe removed (and said so), the live one's
    // kept; nothing of this plan's own probes left.
    assert!(
        stderr.contains(&format!("removed probe domain `{stale}`")),
        "{stderr}"
    );
    assert!(!stderr.contains(&alive), "{stderr}");
    for host in 0..2 {
        let left: Vec<String> = all_domains(&lab, host)
            .into_iter()
            .filter(|d| d.starts_with("evac-probe-"))
            .collect();
        let expected = if host == 0 {
            vec![alive.clone()]
        } else {
            Vec::new()
        };
        assert_eq!(left, expected, "host {host}");
    }
    let _ = Command::new("virsh")
        .args(["-c", &lab.hosts[0].uri(), "destroy", &alive])
        .output();
    // The fleet's domain never moved.
    assert_eq!(lab.running_domains(0).unwrap(), names);
    assert!(lab.running_domains(1).unwrap().is_empty());
}

/// `evac plan` as `command` has it, which must succeed: its stdout (echoed
/// for the test's log) and stderr.
fn plan(command: &mut Command) -> (String, String) {
    let out = command.output().unwrap();
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    eprintln!("{stdout}");
    (stdout, stderr)
}
