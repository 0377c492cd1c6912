//! `evac plan` on a real guest whose dirtying follows a curve, then a real
//! run right after: the dirty curve QEMU measured (`calc-dirty-rate` at
//! several periods) against the truth from the guest's parameters and
//! against its writes counted from its RAM file, and the planned migration
//! time against the real one.
//!
//! The guest ([`evac_lab::curve`]) dirties a hot 16 MiB at 16 MiB/s (all of
//! it within 1 s), a warm 32 MiB at 4 MiB/s (8 s) and a cold 192 MiB at
//! 2 MiB/s (96 s): 22 MiB within 1 s, 28 within 2, 40 within 4, 64 within
//! 8, 80 within 16. Its 384 MiB go in a first round of about 13 s at the
//! migration's cap (240 Mbit/s, 28.6 MiB/s), then in rounds that shrink
//! slowly: the guest's first-second slope, 22 MiB/s, is three quarters of
//! the link, so the last rounds (well under 2 s each) decide when it
//! converges. By hand, the truth needs 19.65 s (seven rounds, then 0.28 s
//! stopped); a plan that knew only the rate of a 2 s sample and no working
//! set would say 26.1 s, one from the 2 s and 16 s samples alone (what
//! `evac plan` measured before the curve's periods) 17.7 s.

use std::path::Path;
use std::time::{Duration, Instant};

use evac_lab::{self as lab, DirtyRegion, Guest, Shaping, WriteCounters};
use evac_model::{Bytes, BytesPerSec, DirtyPoint, Fleet};
use evac_plan::live::Reading;
use evac_qemu::{run_detailed, Inventory};

const RATE_BPS: u64 = 300_000_000;
/// The WAN: the lab's shaped link.
const WAN: Shaping = Shaping {
    rate_bps: RATE_BPS,
    burst_bytes: 128 * 1024,
    latency: Duration::from_millis(5),
};
const MIB: f64 = 1_048_576.0;
const MEMORY_MIB: u64 = 384;

fn regions() -> [DirtyRegion; 3] {
    let region = |mib_per_s: f64, mib: u64| DirtyRegion {
        rate: BytesPerSec(mib_per_s * MIB),
        mib,
    };
    [region(16.0, 16), region(4.0, 32), region(2.0, 192)]
}

fn within(measured: f64, expected: f64, tolerance: f64) -> bool {
    (measured - expected).abs() <= tolerance * expected
}

/// The sequential plan's migration time of the fleet's only VM, and its
/// rounds.
fn planned(live: &evac_plan::Live, fleet: &Fleet) -> (f64, u32) {
    let plan = evac_plan::triage(fleet, &live.network, live.migration, &live.controller);
    let (_, result) = plan
        .results
        .iter()
        .find(|(p, _)| p.as_str() == "sequential")
        .expect("the sequential policy is planned");
    let vm = &result.vms[0];
    (
        vm.migration_time_s.expect("the plan migrates the VM"),
        vm.rounds.unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_measures_a_dirty_curve_and_predicts_the_real_run() {
    let regions = regions();
    let mut shaped = lab::shaped_lab_or_skip!(
        &[
            lab::qemu_available,
            lab::netns_available,
            lab::dirty_guest_available
        ],
        WAN
    );
    let vm = shaped
        .lab
        .start_guest(
            "curve",
            MEMORY_MIB,
            Guest::Dirtying(&regions),
            Some(&shaped.net.src),
        )
        .unwrap();
    // Past the boot and the guest's calibration.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Migrations capped below the shaped link, as plan_lab does: QEMU's
    // max-bandwidth counts the payload the simulator counts.
    let text = shaped.inventory("sequential", &[vm], "max_bandwidth = \"240 Mbps\"", "1 ms");
    let inventory = Inventory::from_str_at(&text, Path::new("inventory.toml")).unwrap();

    // The measurement: a 2 s sample for the rate, 16 s (longer than the
    // first round) for the working set, then the curve's periods.
    let ram = shaped.lab.dir.join("curve.mem");
    let (before, started) = (WriteCounters::read(&ram, &regions).unwrap(), Instant::now());
    let how = Reading {
        sample: Duration::from_secs(2),
        long: Duration::from_secs(16),
        runs: 0,
        setup_probes: 0,
        setup_stated: false,
    };
    let live = evac_plan::live::qemu(&inventory, &how, &|line| eprintln!("{line}"))
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let written = WriteCounters::read(&ram, &regions)
        .unwrap()
        .written_since(&before);

    // The truth: from the parameters, and from the rates the guest really
    // wrote at while it was measured (a guest short of CPU falls behind).
    let actual: Vec<DirtyRegion> = regions
        .iter()
        .zip(&written)
        .map(|(r, &pages)| DirtyRegion {
            rate: BytesPerSec(pages as f64 * 4096.0 / seconds),
            mib: r.mib,
        })
        .collect();
    for (r, a) in regions.iter().zip(&actual) {
        eprintln!(
            "region of {} MiB: told {:.2} MiB/s, wrote {:.2} MiB/s",
            r.mib,
            r.rate.0 / MIB,
            a.rate.0 / MIB
        );
    }
    let measured = &live.measured[0];
    let periods: Vec<u64> = measured.dirtied.iter().map(|d| d.seconds).collect();
    assert_eq!(periods, vec![1, 2, 4, 8, 16], "the curve's periods");
    for d in &measured.dirtied {
        let t = d.seconds as f64;
        let (told, wrote) = (
            lab::curve::dirtied_within(&regions, t),
            lab::curve::dirtied_within(&actual, t),
        );
        let got = d.dirtied_bytes as f64;
        eprintln!(
            "after {t:>2} s: measured {:6.1} MiB (+ up to {:.0}), truth {:6.1} MiB (parameters), {:6.1} MiB (writes counted)",
            got / MIB,
            d.uncertainty_bytes as f64 / MIB,
            told / MIB,
            wrote / MIB
        );
        // QEMU truncates to whole MiB/s (the uncertainty); beyond it, the
        // test fails on a gross error (a unit, a missed region), not on
        // a loaded machine's jitter.
        let slack = d.uncertainty_bytes as f64 + 0.15 * wrote;
        assert!(
            (got - wrote).abs() <= slack,
            "after {t} s: measured {got} B, the guest's writes say {wrote} B"
        );
    }

    let used: Vec<String> = live.fleet.vms[0]
        .profile
        .dirty_curve
        .iter()
        .map(|p| format!("{:.1}", p.dirtied.as_f64() / MIB))
        .collect();
    eprintln!("the plan's curve (MiB at the same periods): {}", used.join(", "));

    // The plan, from the measured curve; and, for comparison, from what the
    // measurement gave before the curve's periods (the 2 s and 16 s
    // samples) and from the 2 s sample's rate alone (one rate, no working
    // set: what a guest writing new pages all along would be planned as).
    let (plan, plan_rounds) = planned(&live, &live.fleet);
    // The 16 s sample outlasts the first round (13.4 s): no note that the
    // curve is too short.
    let triage = evac_plan::triage(&live.fleet, &live.network, live.migration, &live.controller);
    let sequential = &triage
        .results
        .iter()
        .find(|(p, _)| p.as_str() == "sequential")
        .unwrap()
        .1;
    assert_eq!(
        evac_plan::curve::too_short(&live.fleet, &live.measured, sequential),
        Vec::<String>::new()
    );
    let two_points = {
        let mut fleet = live.fleet.clone();
        let curve: Vec<DirtyPoint> = measured
            .dirtied
            .iter()
            .filter(|d| d.seconds == 2 || d.seconds == 16)
            .map(|d| DirtyPoint {
                after: Duration::from_secs(d.seconds),
                dirtied: Bytes(d.dirtied_bytes),
            })
            .collect();
        fleet.vms[0].set_dirty_curve(curve);
        planned(&live, &fleet).0
    };
    let one_rate = {
        let mut fleet = live.fleet.clone();
        let vm = &mut fleet.vms[0];
        vm.profile.dirty_curve.clear();
        vm.dirty_rate = measured.dirty_rate;
        vm.working_set = vm.memory;
        planned(&live, &fleet).0
    };

    // The real run, right after.
    let out = run_detailed(inventory, None, std::future::pending())
        .await
        .unwrap();
    shaped.lab.adopt_destinations(&out.placements);
    assert_eq!(out.result.migrated, 1);
    let done = &out.result.vms[0];
    let real = done.migration_time_s.unwrap();
    let off = |p: f64| (p - real) / real * 100.0;
    eprintln!(
        "curve: plan {plan:.2} s ({:+.1} %) in {plan_rounds} rounds, real {real:.2} s in {} rounds, {} bytes; \
         from the 2 s and 16 s samples alone {two_points:.2} s ({:+.1} %); one rate {one_rate:.2} s ({:+.1} %)",
        off(plan),
        done.rounds.map_or("?".into(), |r| r.to_string()),
        done.bytes_sent.unwrap_or(0),
        off(two_points),
        off(one_rate)
    );
    // The issue's target: 10 % median, 20 % worst.
    assert!(within(plan, real, 0.20), "plan {plan:.2} s, real {real:.2} s");
}

/// The same guest planned from its true curve (the samples QEMU would give
/// with no truncation), no lab needed: the plan's migration times against
/// the rounds worked out by hand at 240 Mbit/s (28.61 MiB/s) with a 300 ms
/// downtime limit.
///
/// - The curve (1 s 22 MiB, 2 s 28, 4 s 40, 8 s 64, 16 s 80): the first
///   round 13.42 s dirties 48 + 2 × 13.42 = 74.84 MiB (between the 8 s and
///   16 s points), then rounds of 2.616 s (31.70 MiB), 1.108 s (22.65),
///   0.792 s (17.42), 0.609 s (13.39), 0.468 s (10.30), 0.360 s (7.92 MiB,
///   0.277 s at the link: within the limit), stopped 0.277 s: 19.65 s.
/// - The 2 s and 16 s points alone: 13.42 s (70.4 MiB), 2.46 s (29.7),
///   1.04 s (14.5), 0.51 s (7.1), 0.25 s stopped: 17.68 s.
/// - The 2 s sample's rate, 14 MiB/s, up to the whole memory: 13.42,
///   6.57, 3.21, 1.573, 0.770, 0.377 s, 0.184 s stopped: 26.10 s.
#[test]
fn the_true_curve_plans_the_rounds_worked_by_hand() {
    let text = format!(
        r#"name = "by hand"
[network]
wan_bandwidth = "300 Mbps"
wan_rtt = "1 ms"
[controller]
policy = "sequential"
[migration]
max_bandwidth = "240 Mbps"
{hosts}
migration_address = "127.0.0.1"
[[vm]]
name = "curve"
host = "src"
qmp = "/nonexistent/curve.qmp"
qemu_args = []
"#,
        hosts = evac_testkit::src_dst_toml("1 Gbps")
    );
    let inventory = Inventory::from_str_at(&text, Path::new("inventory.toml")).unwrap();
    let sample = |seconds: u64, mib: u64| evac_plan::measure::DirtySample {
        seconds,
        dirtied_bytes: mib << 20,
        uncertainty_bytes: 0,
    };
    let measured = evac_plan::Measured {
        memory: Bytes(MEMORY_MIB << 20),
        dirty_rate: BytesPerSec(14.0 * MIB),
        working_set: Bytes(80 << 20),
        dirtied: vec![
            sample(1, 22),
            sample(2, 28),
            sample(4, 40),
            sample(8, 64),
            sample(16, 80),
        ],
        content: None,
    };
    // The samples are the truth of the lab's guest at those periods.
    for d in &measured.dirtied {
        assert_eq!(
            lab::curve::dirtied_within(&regions(), d.seconds as f64),
            d.dirtied_bytes as f64
        );
    }
    let fleet = evac_plan::scenario::with_measured(inventory.fleet(&[Bytes(1)]), &[measured], &[]);
    let live = evac_plan::Live {
        name: "by hand".into(),
        network: inventory.network(),
        network_stated: true,
        migration: inventory.migration.params,
        controller: inventory.controller.clone(),
        measured: Vec::new(),
        fleet,
        setup: evac_plan::setup::Setup::stated(&inventory.migration.params),
    };
    let (curve, rounds) = planned(&live, &live.fleet);
    let mut fleet = live.fleet.clone();
    let points: Vec<DirtyPoint> = [(2, 28), (16, 80)]
        .iter()
        .map(|&(s, mib)| DirtyPoint {
            after: Duration::from_secs(s),
            dirtied: Bytes(mib << 20),
        })
        .collect();
    fleet.vms[0].set_dirty_curve(points);
    let (two_points, _) = planned(&live, &fleet);
    let vm = &mut fleet.vms[0];
    vm.profile.dirty_curve.clear();
    vm.dirty_rate = BytesPerSec(14.0 * MIB);
    vm.working_set = vm.memory;
    let (one_rate, _) = planned(&live, &fleet);
    eprintln!(
        "curve {curve:.3} s in {rounds} rounds, two points {two_points:.3} s, one rate {one_rate:.3} s"
    );
    // The hand's figures are rounded to the millisecond per round.
    assert!(within(curve, 19.65, 0.005), "{curve}");
    assert_eq!(rounds, 7, "seven live rounds (the stopped copy is not one)");
    assert!(within(two_points, 17.68, 0.005), "{two_points}");
    assert!(within(one_rate, 26.10, 0.005), "{one_rate}");
}
