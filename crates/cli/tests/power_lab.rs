//! Power that changes during a real `evac run` (real `evac` binaries over
//! real QEMU VMs on this machine): the operator edits the inventory's
//! `power_off_at` mid-run (and sends SIGHUP), or the host's UPS, a real
//! NUT `upsd` (evac_lab::upsd), goes on battery mid-run. evac acts on the
//! news within one control period plus one poll, saves the high-priority
//! VM, and after a SIGKILL and `--resume` keeps the news and moves nothing
//! twice. Skipped, saying why, without QEMU (or NUT, or root); failed under
//! EVAC_REQUIRE_LAB=1.
//!
//! The fleet: four idle 64 MiB VMs on one source host (a network
//! namespace), the WAN to the destination's a veth shaped to 40 Mbps that
//! they share (64 MiB = 536,870,912 bits: 13.4 s at 40 Mbps; the four take
//! 54 s); `pw*-4` has priority 10, the others 1. The news moves the
//! power-off to 30 s after it is given: time for the migration under way
//! and one more. Which VM goes first before the news is the planner's
//! business (with an hour left, every order saves all); after it, the
//! high-priority VM must be the next to start.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evac_lab::{self as lab, Lab, LabNetwork, LabVm, Shaping};
use evac_model::wall_clock::{self, Timestamp};
use serde_json::Value;

mod common;
use common::{arg, read_json, KillOnDrop};

/// The loop's period in the lab inventories, and the poll of the file and
/// the UPS (both every period).
const PERIOD: Duration = Duration::from_millis(500);

/// How late a change may be acted on: the target is one period
/// plus one poll; the slack is a loaded machine's (four developers build
/// on two cores).
const ACT_WITHIN: Duration = Duration::from_secs(2);

use common::journal_lines;

/// Pids of the processes whose command line contains `needle`.
fn pids_with(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) && lab::pid_alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits (at most 60 s) until the journal has a line `found` accepts.
fn wait_for(journal: &Path, child: &mut KillOnDrop, stderr: &Path, found: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(line) = journal_lines(journal).into_iter().find(&found) {
            return line;
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!(
                "evac exited ({status}):\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{:?}\n{}",
            journal_lines(journal),
            std::fs::read_to_string(stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lab's WAN: 40 Mbps.
fn wan() -> LabNetwork {
    LabNetwork::new(Shaping {
        rate_bps: 40_000_000,
        burst_bytes: 64 << 10,
        latency: Duration::from_millis(20),
    })
    .unwrap()
}

/// The fleet in `net` and its inventory, `host_extra` added to the source
/// host.
fn fleet(lab: &mut Lab, net: &LabNetwork, prefix: &str, host_extra: &str) -> (Vec<LabVm>, String) {
    let vms: Vec<LabVm> = (1..=4)
        .map(|i| {
            lab.start_vm_in(&format!("{prefix}-{i}"), 64, Some(&net.src))
                .unwrap()
        })
        .collect();
    let text = lab
        .inventory_in(net, "deadline", &vms, "")
        .replacen(
            "[controller]",
            "[network]\nwan_bandwidth = \"40 Mbps\"\n[controller]",
            1,
        )
        .replacen(
            "site = \"source\"\nnic = \"1 Gbps\"\n",
            &format!("site = \"source\"\nnic = \"1 Gbps\"\n{host_extra}"),
            1,
        )
        .replace(
            &format!("name = \"{prefix}-4\"\n"),
            &format!("name = \"{prefix}-4\"\npriority = 10\n"),
        );
    (vms, text)
}

fn spawn(args: &[&str], dir: &Path, tag: &str) -> (KillOnDrop, std::path::PathBuf) {
    let stderr = dir.join(format!("{tag}.stderr"));
    let child = Command::new(env!("CARGO_BIN_EXE_evac"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("evac runs");
    (KillOnDrop(child), stderr)
}

/// The wall-clock instant `t_s` into the run whose journal starts `lines`.
fn instant_of(lines: &[Value], t_s: f64) -> Timestamp {
    let started = lines[0]["started_unix_ms"].as_i64().unwrap();
    let at = Timestamp::from_millisecond(started).unwrap();
    wall_clock::after(at, Duration::from_secs_f64(t_s))
}

/// Checks that the run acted on news (`what`, e.g. "inventory edit") that
/// came at `news` (`since`: "the write") within [`ACT_WITHIN`]: by the
/// journal's `change`, at its time into the run. Prints how long it took.
#[track_caller]
fn assert_acted_within(lines: &[Value], change: &Value, news: Timestamp, what: &str, since: &str) {
    let acted = wall_clock::until(news, instant_of(lines, change["t_s"].as_f64().unwrap()));
    eprintln!(
        "{what} acted on {:.0} ms after {since} (period {} ms)",
        acted.as_secs_f64() * 1e3,
        PERIOD.as_millis()
    );
    assert!(acted <= ACT_WITHIN, "{what} acted on {acted:?} after {since}");
}

/// Checks the end of a run: every VM migrated or lost, none started twice
/// but for retries of failed attempts, the high-priority one migrated, and
/// none lost before the new power-off or started after it.
fn check_result(result: &Value, journal: &[Value], prefix: &str, power_off_s: f64) {
    let host = &result["hosts"].as_array().unwrap()[0];
    assert_eq!(host["name"], "src");
    let recorded = host["power_off_s"].as_f64().unwrap();
    assert!(
        (recorded - power_off_s).abs() < 0.01,
        "{recorded} vs {power_off_s}"
    );
    let vms = result["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 4);
    for vm in vms {
        let name = vm["name"].as_str().unwrap();
        let outcome = vm["outcome"].as_str().unwrap();
        assert!(outcome == "migrated" || outcome == "lost", "{vm}");
        // Each attempt is started once; a VM is retried only after a failure.
        let starts = journal
            .iter()
            .filter(|l| l["event"] == "start" && l["vm"] == name)
            .count();
        let failed = journal
            .iter()
            .filter(|l| l["event"] == "end" && l["vm"] == name && l["failed"].is_object())
            .count();
        assert!(starts <= failed + 1, "{name}: {starts} starts, {failed} failures");
        for start in journal
            .iter()
            .filter(|l| l["event"] == "start" && l["vm"] == name)
        {
            assert!(
                start["t_s"].as_f64().unwrap() < power_off_s,
                "{name} started after the power-off: {start}"
            );
        }
        // The news is among its decisions (it was on the host then).
        assert!(
            vm["decisions"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["decision"] == "power")),
            "{vm}"
        );
    }
    let high = vms
        .iter()
        .find(|v| v["name"] == format!("{prefix}-4").as_str())
        .unwrap();
    // Moved first once the news is in: started before it, or the first
    // VM started after it.
    let news = journal
        .iter()
        .find(|l| l["event"] == "power")
        .and_then(|l| l["t_s"].as_f64())
        .unwrap();
    let starts: Vec<(&str, f64)> = journal
        .iter()
        .filter(|l| l["event"] == "start")
        .map(|l| (l["vm"].as_str().unwrap(), l["t_s"].as_f64().unwrap()))
        .collect();
    let high_name = format!("{prefix}-4");
    let before = starts.iter().any(|&(vm, t)| vm == high_name && t <= news);
    let next = starts.iter().find(|&&(_, t)| t > news).map(|&(vm, _)| vm);
    assert!(
        before || next == Some(high_name.as_str()),
        "starts {starts:?}, news at {news} s"
    );
    assert_eq!(
        high["outcome"], "migrated",
        "the high-priority VM: {high}\n{:#}",
        result["vms"]
    );
    assert!(
        vms.iter().any(|v| v["outcome"] == "lost"),
        "30 s after the news cannot carry every VM: {result}"
    );
}

/// The `--metrics` address evac printed on its stderr (in the file
/// `stderr`), waited for at most 10 s.
fn metrics_address(stderr: &Path) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(stderr).unwrap_or_default();
        if let Some(url) = text.lines().find_map(|l| l.strip_prefix("metrics at http://")) {
            return url.trim_end_matches("/metrics").to_owned();
        }
        assert!(Instant::now() < until, "no metrics address: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the sample `series` (`name{labels}`) in one scrape.
fn scrape(addr: &str, series: &str) -> Option<f64> {
    common::scrape(addr).get(series).copied()
}

/// Stops every destination QEMU of `vms` the run left (the lab kills them
/// when dropped).
fn adopt_destinations(lab: &mut Lab, vms: &[LabVm]) {
    for vm in vms {
        for pid in pids_with(&format!("dst-{}-", vm.name)) {
            lab.adopt(pid);
        }
    }
}

#[test]
fn an_inventory_edited_mid_run_moves_the_deadline_and_survives_a_resume() {
    lab::skip_without!(&[lab::qemu_available, lab::netns_available]);
    // Declared before the lab: dropped after it, once its QEMUs are killed.
    let net = wan();
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::new(dir.path());
    let (vms, text) = fleet(&mut lab, &net, "pwi", "power_off_at = \"1 h\"\n");
    let inventory = dir.path().join("inventory.toml");
    std::fs::write(&inventory, &text).unwrap();
    let journal = dir.path().join("journal.jsonl");
    let (mut first, stderr) = spawn(&["run", "--quiet", arg(&inventory)], dir.path(), "first");

    wait_for(&journal, &mut first, &stderr, |l| l["event"] == "start");
    // The news, as a time of day: 30 s from now.
    let said = Timestamp::now();
    let new_off = wall_clock::after(said, Duration::from_secs(30));
    std::fs::write(
        &inventory,
        text.replace("power_off_at = \"1 h\"", &format!("power_off_at = \"{new_off}\"")),
    )
    .unwrap();
    let change = wait_for(&journal, &mut first, &stderr, |l| l["event"] == "power");
    let lines = journal_lines(&journal);
    assert_acted_within(&lines, &change, said, "inventory edit", "the write");
    assert!(change["by"].as_str().unwrap().contains("inventory"), "{change}");
    let power_off_s = change["power_off_s"].as_f64().unwrap();
    // The time written, counted from the run's journaled start.
    let expected = wall_clock::until(instant_of(&lines, 0.0), new_off).as_secs_f64();
    assert!(
        (power_off_s - expected).abs() < 0.01,
        "{power_off_s} vs {expected}"
    );

    // SIGHUP reads the file again and does not end the run; a change
    // beyond power-offs is refused in one line.
    std::fs::write(
        &inventory,
        text.replace("power_off_at = \"1 h\"", &format!("power_off_at = \"{new_off}\""))
            .replace("downtime_limit = \"300 ms\"", "downtime_limit = \"200 ms\""),
    )
    .unwrap();
    // SAFETY: kill(2) on our own child's pid, not yet reaped.
    unsafe { libc::kill(first.0.id() as i32, libc::SIGHUP) };
    let log_has = |needle: &str| {
        std::fs::read_to_string(&stderr)
            .unwrap_or_default()
            .contains(needle)
    };
    let until = Instant::now() + Duration::from_secs(10);
    while !(log_has("SIGHUP: reading") && log_has("are not applied during a run")) {
        assert!(
            Instant::now() < until,
            "{}",
            std::fs::read_to_string(&stderr).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(first.0.try_wait().unwrap().is_none(), "SIGHUP ended the run");

    // Killed with a migration under way after the news, then resumed with
    // the file put back as it was: the journal's news stands.
    let in_flight = |lines: &[Value]| {
        lines.iter().filter(|l| l["event"] == "start").count()
            > lines.iter().filter(|l| l["event"] == "end").count()
    };
    let until = Instant::now() + Duration::from_secs(30);
    while !in_flight(&journal_lines(&journal)) {
        assert!(Instant::now() < until, "{:?}", journal_lines(&journal));
        std::thread::sleep(Duration::from_millis(50));
    }
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    std::fs::write(&inventory, &text).unwrap();
    let json = dir.path().join("resumed.json");
    let resumed = common::run_resumed(&inventory, &json);
    adopt_destinations(&mut lab, &vms);
    let log = String::from_utf8_lossy(&resumed.stderr);
    let result: Value = read_json(&json);
    // Exit 3: the run ended with VMs lost.
    assert_eq!(
        resumed.status.code(),
        Some(3),
        "{log}\n{result:#}\n{:#?}",
        journal_lines(&journal)
    );
    check_result(&result, &journal_lines(&journal), "pwi", power_off_s);
}

#[test]
fn a_ups_going_on_battery_mid_run_moves_the_deadline() {
    lab::skip_without!(&[
        lab::qemu_available,
        lab::netns_available,
        lab::upsd::nut_available,
    ]);
    let net = wan();
    let dir = tempfile::tempdir().unwrap();
    let mut ups = lab::upsd::LabUps::start(&dir.path().join("nut"), "ups1", "ups.status: OL\n").unwrap();
    let mut lab = Lab::new(dir.path());
    let (vms, text) = fleet(
        &mut lab,
        &net,
        "pwu",
        &format!("ups = \"{}\"\nups_margin = \"5 s\"\n", ups.address()),
    );
    let inventory = dir.path().join("inventory.toml");
    std::fs::write(&inventory, &text).unwrap();
    let journal = dir.path().join("journal.jsonl");
    let json = dir.path().join("run.json");
    let (mut run, stderr) = spawn(
        &[
            "run",
            "--quiet",
            arg(&inventory),
            "--json",
            arg(&json),
            "--metrics",
            "127.0.0.1:0",
        ],
        dir.path(),
        "ups",
    );
    // On line power the UPS says what the inventory says (no power-off):
    // no news, and no power-off in the live metrics.
    wait_for(&journal, &mut run, &stderr, |l| l["event"] == "start");
    let metrics = metrics_address(&stderr);
    let power_off_metric = "evac_host_power_off_seconds{host=\"src\"}";
    assert!(scrape(&metrics, power_off_metric).is_none());
    // On battery, 35 s left less the 5 s margin: the power goes 30 s on.
    ups.set("ups.status: OB\nbattery.runtime: 35\n").unwrap();
    let served = Timestamp::now();
    let change = wait_for(&journal, &mut run, &stderr, |l| {
        l["event"] == "power" && l["by"].as_str().is_some_and(|b| b.contains("on battery"))
    });
    let lines = journal_lines(&journal);
    // The period is also how often the UPS is polled.
    assert_acted_within(&lines, &change, served, "UPS on battery", "upsd served it");
    let power_off_s = change["power_off_s"].as_f64().unwrap();
    // The live metric: the time left, within a period of the news.
    let until = Instant::now() + Duration::from_secs(5);
    let left = loop {
        if let Some(left) = scrape(&metrics, power_off_metric) {
            break left;
        }
        assert!(Instant::now() < until, "no {power_off_metric} after the news");
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = wall_clock::until(instant_of(&lines, 0.0), Timestamp::now()).as_secs_f64();
    assert!(
        (left - (power_off_s - elapsed)).abs() <= 1.5,
        "{left} s left, expected {}",
        power_off_s - elapsed
    );
    let expected = wall_clock::until(instant_of(&lines, 0.0), served).as_secs_f64() + 30.0;
    assert!(
        (power_off_s - expected).abs() <= ACT_WITHIN.as_secs_f64(),
        "{power_off_s} vs {expected}"
    );
    let until = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "still running 2 min on");
        std::thread::sleep(Duration::from_millis(100));
    };
    adopt_destinations(&mut lab, &vms);
    assert_eq!(
        status.code(),
        Some(3),
        "{}",
        std::fs::read_to_string(&stderr).unwrap()
    );
    let result: Value = read_json(&json);
    check_result(&result, &journal_lines(&journal), "pwu", power_off_s);
}

/// `evac plan` asks a host's UPS once: on battery with 600 s left and a
/// 60 s margin, the plan's power-off is 540 s from its start (plus the few
/// seconds of measuring before the UPS is asked), printed as a time of day
/// and the time left.
#[test]
fn plan_takes_the_power_off_from_the_ups() {
    lab::skip_without!(&[lab::qemu_available, lab::upsd::nut_available]);
    let dir = tempfile::tempdir().unwrap();
    let ups = lab::upsd::LabUps::start(
        &dir.path().join("nut"),
        "ups1",
        "ups.status: OB\nbattery.runtime: 600\n",
    )
    .unwrap();
    let mut lab = Lab::new(dir.path());
    let vms = vec![lab.start_vm("pwp-1", 64).unwrap()];
    let text = lab.inventory("deadline", &vms, "").replacen(
        "site = \"source\"\nnic = \"1 Gbps\"\n",
        &format!(
            "site = \"source\"\nnic = \"1 Gbps\"\nups = \"{}\"\nups_margin = \"60 s\"\n",
            ups.address()
        ),
        1,
    );
    let inventory = dir.path().join("inventory.toml");
    std::fs::write(&inventory, &text).unwrap();
    let json = dir.path().join("plan.json");
    let out = Command::new(env!("CARGO_BIN_EXE_evac"))
        .args([
            "plan",
            arg(&inventory),
            "--sample",
            "1s",
            "--working-set-sample",
            "1s",
        ])
        .args(["--json", arg(&json)])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("src: UPS ups1@127.0.0.1:") && stderr.contains("on battery, 600 s left"),
        "{stderr}"
    );
    let plan: Value = read_json(&json);
    let off = plan["hosts"][0]["power_off_s"].as_f64().unwrap();
    // Measuring takes 2 s here (two 1 s samples), connecting a moment more.
    assert!((540.0..560.0).contains(&off), "{off}");
    assert!(stdout.contains("power-offs (time left counted from"), "{stdout}");
    assert!(stdout.contains(" left"), "{stdout}");
    eprintln!("{stderr}{stdout}");
}
