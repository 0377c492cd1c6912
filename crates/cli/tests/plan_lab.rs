//! `evac plan` on a real lab fleet, then a real evacuation of it: QEMU's
//! measured dirty rates against the rates the dirtying guests were told,
//! and the plan's total time against the real run's.

mod browser;
mod common;

use std::path::Path;
use std::time::Duration;

use evac_lab::{self as lab, Shaping};
use evac_model::BytesPerSec;
use evac_qemu::{run_detailed, Inventory};
use serde_json::Value;

use common::{arg, evac_command, read_json};

const RATE_BPS: u64 = 300_000_000;
/// The WAN: the lab's shaped link, with 20 ms of queue.
const WAN: Shaping = Shaping {
    rate_bps: RATE_BPS,
    burst_bytes: 128 * 1024,
    latency: Duration::from_millis(20),
};
/// Memory (MiB), dirty rate (bytes/s), working set (MiB). The working set
/// is larger than the rate times the 2 s rate sample, so that sample sees
/// the rate, and well below the rate times the 16 s working-set sample, so
/// that one sees the working set. 20 MB/s: QEMU reports whole MiB/s, a
/// truncation of up to 1 MiB/s (5 %). One dirtying guest: a guest starved of
/// CPU (two of them migrating at once on two cores) dirties less than it
/// was told.
const VMS: [(u64, f64, u64); 3] = [(256, 20e6, 96), (128, 0.0, 0), (96, 0.0, 0)];

/// The pages the dirtying guest has written so far, read from its RAM file
/// (shared with QEMU): the guest increments the first word of each page of
/// its working set in turn, so the words' sum grows by one per page
/// written. A second measurement, independent of QEMU's dirty log.
fn pages_written(ram: &Path, working_set_mib: u64) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(ram).unwrap();
    let mut page = [0u8; 4];
    (0..working_set_mib * 256)
        .map(|i| {
            file.seek(SeekFrom::Start(lab::DIRTY_WORKING_SET_START + i * 4096))
                .unwrap();
            file.read_exact(&mut page).unwrap();
            u64::from(u32::from_le_bytes(page))
        })
        .sum()
}

fn within(measured: f64, expected: f64, tolerance: f64) -> bool {
    (measured - expected).abs() <= tolerance * expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_measures_the_fleet_and_predicts_the_real_run() {
    let mut shaped = lab::shaped_lab_or_skip!(
        &[
            lab::qemu_available,
            lab::netns_available,
            lab::dirty_guest_available
        ],
        WAN
    );
    let src = Some(shaped.net.src.as_str());
    let mut vms = Vec::new();
    for (i, (mib, rate, working_set)) in VMS.into_iter().enumerate() {
        let name = format!("vm-{}", i + 1);
        vms.push(if rate > 0.0 {
            shaped
                .lab
                .start_dirtying_vm_in(&name, mib, BytesPerSec(rate), working_set, src)
                .unwrap()
        } else {
            shaped.lab.start_vm_in(&name, mib, src).unwrap()
        });
    }
    // A fleet that has been running a while: past the guests' boot, whose
    // own writes (firmware, the RAM file's first touches) are no workload.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Each migration capped below the shaped link by QEMU's max-bandwidth,
    // which counts the payload the simulator counts (the link's own limit
    // also carries TCP/IP headers).
    let text = shaped.inventory("deadline", &vms, "max_bandwidth = \"240 Mbps\"", "1 ms");
    let dir = shaped.lab.dir.clone();
    let inventory_path = dir.join("inventory.toml");
    std::fs::write(&inventory_path, &text).unwrap();
    let json = dir.join("plan.json");
    let scenario = dir.join("plan.toml");

    let ram = dir.join("vm-1.mem");
    let before = (pages_written(&ram, VMS[0].2), std::time::Instant::now());
    let out = evac_command()
        .args(["plan", arg(&inventory_path), "--json", arg(&json)])
        .args(["--scenario-out", arg(&scenario)])
        // Long enough to go round the working set even for a guest starved
        // to half its rate.
        .args(["--working-set-sample", "16s"])
        .output()
        .unwrap();
    // What the guest really wrote while it was measured: on a loaded machine
    // a starved guest falls behind the rate it was told.
    let actual = (pages_written(&ram, VMS[0].2).wrapping_sub(before.0) & 0xffff_ffff) as f64 * 4096.0
        / before.1.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    let plan: Value = read_json(&json);

    // Measured by QEMU against what the guests were told.
    for (vm, (mib, rate, working_set)) in plan["measured"].as_array().unwrap().iter().zip(VMS) {
        let measured = vm["dirty_rate_bytes_per_second"].as_f64().unwrap();
        if rate > 0.0 {
            eprintln!(
                "{}: configured {rate} B/s, written {actual:.0} B/s, measured {measured} B/s",
                vm["name"]
            );
            // The target is 15 %, quoted in docs/plan.md from this
            // test's output; the test fails on gross errors (a unit, a
            // factor of 8), not on a loaded machine's jitter.
            assert!(
                within(measured, actual, 0.25),
                "{vm}: the guest wrote {actual:.0} B/s"
            );
            let ws = vm["working_set_bytes"].as_f64().unwrap();
            assert!(
                within(ws, (working_set << 20) as f64, 0.15),
                "{vm}: working set {working_set} MiB"
            );
        } else {
            assert!(measured < 1.1 * 1_048_576.0, "{vm}: an idle guest");
        }
        assert_eq!(vm["memory_bytes"], mib << 20);
    }
    let policy = plan["recommended_policy"].as_str().unwrap().to_owned();
    let predicted = plan["total_time_s"].as_f64().unwrap();
    assert!(plan["vms"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["reason"].is_null()));
    assert_eq!(plan["policies"].as_array().unwrap().len(), 6);

    // The scenario written is the one simulated: `evac simulate` of it
    // predicts the same total.
    let resim_path = dir.join("resim.json");
    let out = evac_command()
        .args(["simulate", arg(&scenario), "--policy", &policy])
        .args(["--json", arg(&resim_path)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let resim: Value = read_json(&resim_path);
    assert!(
        within(resim["total_time_s"].as_f64().unwrap(), predicted, 1e-6),
        "{} vs {predicted}",
        resim["total_time_s"]
    );

    // The real run, started right after, with the recommended policy.
    let mut inventory = Inventory::from_str_at(&text, Path::new("inventory.toml")).unwrap();
    inventory.controller.policy = policy.parse().unwrap();
    let out = run_detailed(inventory, None, std::future::pending())
        .await
        .unwrap();
    shaped.lab.adopt_destinations(&out.placements);
    let real = out.result.total_time_s.unwrap();
    for (planned, done) in plan["vms"].as_array().unwrap().iter().zip(&out.result.vms) {
        eprintln!(
            "{}: plan ends at {:.2} s, real at {:.2} s",
            done.name,
            planned["end_s"].as_f64().unwrap_or(f64::NAN),
            done.end_s.unwrap_or(f64::NAN)
        );
    }
    eprintln!(
        "{policy}: plan {predicted:.2} s, real {real:.2} s ({:+.1} %)",
        (predicted - real) / real * 100.0
    );
    assert_eq!(out.result.migrated, VMS.len());
    // The target is 15 % (docs/plan.md quotes this output with the load);
    // the simulator does not model a migration's start-up (spawning the
    // destination QEMU), and the machine is shared: the test fails on a
    // plan off by a third, not on that.
    assert!(
        within(predicted, real, 0.35),
        "plan {predicted:.2} s, real run {real:.2} s"
    );

    // The plan (simulated) and the real run of the same evacuation in one
    // report, opened in a real browser.
    let real_json = dir.join("real.json");
    std::fs::write(&real_json, out.result.to_json()).unwrap();
    let html = dir.join("plan-vs-real.html");
    let status = evac_command()
        .args(["report", arg(&resim_path), arg(&real_json)])
        .args(["-o", arg(&html), "--label", "plan", "--label", "real"])
        .status()
        .unwrap();
    assert!(status.success());
    if browser::chromium_available().is_ok() {
        let mut chromium = browser::Browser::launch();
        chromium.open(&html);
        assert_eq!(chromium.errors, Vec::<String>::new());
        let rows = chromium.eval(
            "Array.from(document.querySelectorAll('svg.gantt')).map(s => s.querySelectorAll('g.gantt-row rect.bar.migrated').length)",
        );
        assert_eq!(rows, serde_json::json!([VMS.len(), VMS.len()]));
    } else {
        // The report test proper (report_browser.rs) fails without
        // chromium under EVAC_REQUIRE_LAB; here it is a bonus.
        eprintln!("SKIPPED the browser check: chromium is not installed");
    }
}
