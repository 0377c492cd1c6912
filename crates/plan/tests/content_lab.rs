//! `evac plan` reads what real guests' memory holds, then a real run of
//! them: lab VMs whose RAM is 60 % zero pages, half the rest text-like and
//! half random ([`evac_lab::Mix`]), and one of random bytes. The zero share
//! measured from a sample against the truth page by page, the ratio
//! against the whole RAM compressed, and the bytes the plan predicts
//! against QEMU's own count (`ram.transferred`) in a real run right after.

use std::path::Path;
use std::time::Duration;

use evac_lab::{self as lab, Guest, Mix, Shaping};
use evac_plan::live::Reading;
use evac_qemu::{run_detailed, Inventory};

const RATE_BPS: u64 = 300_000_000;
/// The WAN: the lab's shaped link.
const WAN: Shaping = Shaping {
    rate_bps: RATE_BPS,
    burst_bytes: 128 * 1024,
    latency: Duration::from_millis(5),
};
/// The guest: 60 % zero pages, half the rest compressible.
const MIX: Mix = Mix { zero: 0.6, text: 0.2 };
/// (name, MiB, mix or random).
const VMS: [(&str, u64, Option<Mix>); 2] = [("mixed", 256, Some(MIX)), ("random", 96, None)];

/// How these tests measure a guest: short dirty-rate samples (1 s each)
/// and 256 runs of its pages for its content, no setup probe.
fn content_reading() -> Reading {
    Reading {
        sample: Duration::from_secs(1),
        long: Duration::from_secs(1),
        runs: 256,
        setup_probes: 0,
        setup_stated: false,
    }
}

fn within(measured: f64, expected: f64, tolerance: f64) -> bool {
    (measured - expected).abs() <= tolerance * expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reads_zero_pages_and_ratio_and_predicts_the_bytes() {
    let mut shaped = lab::shaped_lab_or_skip!(&[lab::qemu_available, lab::netns_available], WAN);
    let src = Some(shaped.net.src.as_str());
    let mut vms = Vec::new();
    for (name, mib, mix) in VMS {
        vms.push(match mix {
            Some(mix) => shaped.lab.start_guest(name, mib, Guest::Mixed(mix), src).unwrap(),
            None => shaped.lab.start_vm_in(name, mib, src).unwrap(),
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = shaped.inventory("sequential", &vms, "max_bandwidth = \"240 Mbps\"", "1 ms");
    let inventory = Inventory::from_str_at(&text, Path::new("inventory.toml")).unwrap();
    let how = content_reading();
    let live = evac_plan::live::qemu(&inventory, &how, &|line| eprintln!("{line}"))
        .await
        .unwrap();

    // The truth: the mixed guest's pages as written; its whole RAM file
    // compressed in runs as the sample compresses its runs.
    let pages = VMS[0].1 * 256;
    let truth_zero = MIX.zero_pages(pages) as f64 / pages as f64;
    let ram = std::fs::read(shaped.lab.dir.join("mixed.mem")).unwrap();
    let runs: Vec<Vec<u8>> = ram
        .chunks(evac_plan::sample::RUN_BYTES)
        .map(<[u8]>::to_vec)
        .collect();
    let whole = evac_plan::sample::content(&runs);
    let sampled = live.measured[0].content.expect("a sample was read");
    eprintln!(
        "mixed: zero share sampled {:.4} (± {:.4}, {} pages) against {truth_zero:.4} written; \
         ratio sampled {:.3} (± {:.3}) against {:.3} over the whole RAM",
        sampled.zero_fraction,
        sampled.zero_fraction_stderr,
        sampled.pages_sampled,
        sampled.compression_ratio,
        sampled.compression_ratio_stderr,
        whole.compression_ratio
    );
    // The target: within 5 points of the truth.
    assert!((sampled.zero_fraction - truth_zero).abs() <= 0.05);
    assert!(within(sampled.compression_ratio, whole.compression_ratio, 0.1));
    let random = live.measured[1].content.expect("a sample was read");
    eprintln!(
        "random: zero share {:.4}, ratio {:.4}",
        random.zero_fraction, random.compression_ratio
    );
    assert!(
        random.zero_fraction < 0.01 && random.compression_ratio < 1.01,
        "{random:?}"
    );
    assert_eq!(live.fleet.vms[0].profile.zero_fraction, sampled.zero_fraction);

    // The plan's bytes per VM against QEMU's own count in a real run right
    // after, with the policy the plan ran with.
    let plan = evac_plan::triage(&live.fleet, &live.network, live.migration, &live.controller);
    let predicted = plan
        .results
        .iter()
        .find(|(p, _)| p.as_str() == "sequential")
        .map(|(_, r)| r.clone())
        .unwrap();
    let out = run_detailed(inventory, None, std::future::pending())
        .await
        .unwrap();
    shaped.lab.adopt_destinations(&out.placements);
    assert_eq!(out.result.migrated, VMS.len());
    for (planned, real) in predicted.vms.iter().zip(&out.result.vms) {
        let (p, r) = (
            planned.bytes_sent.unwrap() as f64,
            real.bytes_sent.unwrap() as f64,
        );
        let (pt, rt) = (planned.migration_time_s.unwrap(), real.migration_time_s.unwrap());
        eprintln!(
            "{}: bytes plan {p:.0}, QEMU {r:.0} ({:+.1} %); time plan {pt:.2} s, real {rt:.2} s ({:+.1} %)",
            real.name,
            (p - r) / r * 100.0,
            (pt - rt) / rt * 100.0
        );
        // The target is 5 % (docs/plan.md quotes this output); the
        // test fails on a model off by a tenth (every byte of the zero
        // pages counted would be +150 %).
        assert!(within(p, r, 0.10), "{}: plan {p} B, QEMU {r} B", real.name);
    }
}

/// `compression = "auto"` against `"none"` on a compressible guest behind
/// a WAN-bound link (100 Mbit/s, no `max_bandwidth`), each a real run of a
/// fresh VM whose
/// inventory entry states what the plan measured of it; the plan's bytes
/// and time against each run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_compresses_a_compressible_guest_behind_a_thin_wan() {
    const WAN_BPS: u64 = 100_000_000;
    // 30 % zero pages, 60 % text-like, 10 % random.
    let mix = Mix { zero: 0.3, text: 0.6 };
    let mut shaped = lab::shaped_lab_or_skip!(
        &[lab::qemu_available, lab::netns_available],
        Shaping {
            rate_bps: WAN_BPS,
            burst_bytes: 64 * 1024,
            ..WAN
        }
    );
    let src = Some(shaped.net.src.as_str());
    let mut times = Vec::new();
    // The compressible guest without and with `auto`, then a guest of random
    // bytes with `auto` (which must not compress it).
    for (compression, random) in [("none", false), ("auto", false), ("auto", true)] {
        let vm = if random {
            shaped.lab.start_vm_in("random-auto", 128, src).unwrap()
        } else {
            shaped
                .lab
                .start_guest(&format!("text-{compression}"), 128, Guest::Mixed(mix), src)
                .unwrap()
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The shaped link alone limits the migration: QEMU 7.2's
        // `max-bandwidth` does not meter compressed multifd pages as they go
        // on the wire (docs/plan.md), which the model does not follow.
        let text = shaped.inventory(
            "sequential",
            std::slice::from_ref(&vm),
            &format!("compression = \"{compression}\""),
            "10 ms",
        );
        let inventory = Inventory::from_str_at(&text, Path::new("inventory.toml")).unwrap();
        let how = content_reading();
        let live = evac_plan::live::qemu(&inventory, &how, &|_| {}).await.unwrap();
        let plan = evac_plan::triage(&live.fleet, &live.network, live.migration, &live.controller);
        let predicted = plan.results[0].1.vms[0].clone();
        // The run knows what the plan measured (an operator writes it into
        // the inventory's [[vm]], the last table): `auto` decides on it.
        let content = live.measured[0].content.unwrap();
        // (The VM's table ends where `[network]` begins.)
        let text = text.replacen(
            "\n[network]",
            &format!(
                "\nzero_fraction = {:?}\ncompression_ratio = {:?}\n[network]",
                content.zero_fraction, content.compression_ratio
            ),
            1,
        );
        let inventory = Inventory::from_str_at(&text, Path::new("inventory.toml")).unwrap();
        let out = run_detailed(inventory, None, std::future::pending())
            .await
            .unwrap();
        shaped.lab.adopt_destinations(&out.placements);
        let real = &out.result.vms[0];
        assert_eq!(out.result.migrated, 1, "{compression}: {:?}", out.result.vms);
        let (p, r) = (
            predicted.bytes_sent.unwrap() as f64,
            real.bytes_sent.unwrap() as f64,
        );
        let (pt, rt) = (
            predicted.migration_time_s.unwrap(),
            real.migration_time_s.unwrap(),
        );
        eprintln!(
            "{} compression {compression} (chosen: {:?}; sampled zero {:.3}, ratio {:.2}): bytes plan {p:.0}, \
             QEMU {r:.0} ({:+.1} %); time plan {pt:.2} s, real {rt:.2} s ({:+.1} %)",
            if random { "random:" } else { "text:" },
            real.compression,
            content.zero_fraction,
            content.compression_ratio,
            (p - r) / r * 100.0,
            (pt - rt) / rt * 100.0
        );
        let expected = if compression == "auto" && !random {
            evac_model::Compression::Zstd
        } else {
            evac_model::Compression::None
        };
        assert_eq!(real.compression, Some(expected));
        if expected == evac_model::Compression::None && !random {
            assert!(within(p, r, 0.10), "{compression}: plan {p} B, QEMU {r} B");
        }
        // The target is 10 % (median) and 20 % (worst): the test
        // fails beyond a third.
        assert!(within(pt, rt, 0.33), "{compression}: plan {pt} s, real {rt} s");
        // Compressed, QEMU 7.2's `ram.transferred` counts the pages before
        // compression (94 MB where the link carried about 36): no check of
        // the bytes there.
        times.push(rt);
    }
    let gain = 1.0 - times[1] / times[0];
    eprintln!(
        "auto against none: {:.2} s against {:.2} s, {:.0} % faster",
        times[1],
        times[0],
        gain * 100.0
    );
    // The target is 30 % (docs/plan.md quotes this output).
    assert!(gain >= 0.3, "auto {} s, none {} s", times[1], times[0]);
}
