//! The simulator's convergence decisions and times for a large guest
//! described by its zero share and dirty curve, against a second method:
//! QEMU 7.2's own precopy algorithm replayed page by page on a guest built
//! to have exactly that curve.
//!
//! The guest is the measured one evac's byte model was written for: 32 GiB,
//! 61 % of its pages zero, dirtying 0.06 GiB within 125 ms, 0.46 GiB within
//! 1 s, 1.75 GiB within 10 s and 5.8 GiB within 60 s.
//!
//! The replay (`Replay`) is written from QEMU's `migration/ram.c` and
//! `migration/migration.c` (7.2), not from the simulator:
//! - The migration bitmap starts full; pages are sent in address order, a
//!   zero page as its 8-byte header and one byte, another as its header and
//!   its 4096 bytes, at the link's rate.
//! - The guest's writes go to the dirty log (KVM's), which reaches the
//!   bitmap only at a sync. `ram_save_pending` syncs only when the pages
//!   left in the bitmap, counted as 4 KiB each (zero or not), are below the
//!   threshold: the bandwidth measured over the last 100 ms times the
//!   downtime limit.
//! - The migration stops the guest when, right after a sync, the pages left
//!   are still below the threshold; the downtime is what those pages cost
//!   on the link. QEMU has no round limit: a guest that never gets there
//!   never converges.
//!
//! The guest is a set of regions, each rewritten page after page at its
//! own rate: the memory written at least once within `t` is then
//! `sum(min(rate × t, size))`, which is the dirty curve exactly when the
//! regions are solved from its slopes (`regions_for`). So the two methods
//! share the description (zero share, curve) and nothing else: one is a
//! fluid model of rounds, the other moves pages.

use std::time::Duration;

use evac_controller::PolicyKind;
use evac_scenario::Scenario;

mod common;

const PAGE: u64 = 4096;
const GIB: f64 = 1073741824.0;
/// The 32 GiB guest's pages.
const PAGES: usize = (32 * 1024 * 1024 * 1024 / PAGE) as usize;
const ZERO_FRACTION: f64 = 0.61;
/// The dirty curve: (seconds, GiB dirtied at least once within them).
const CURVE: [(f64, f64); 4] = [(0.125, 0.06), (1.0, 0.46), (10.0, 1.75), (60.0, 5.8)];
/// A zero page on the wire (`save_zero_page`: header and one byte).
const ZERO_WIRE: f64 = 9.0;
/// A normal page on the wire (`save_normal_page`: header and contents).
const NORMAL_WIRE: f64 = 8.0 + 4096.0;

/// A fixed-size set of page numbers.
struct Bits(Vec<u64>);

impl Bits {
    fn new(full: bool) -> Self {
        let mut words = vec![if full { u64::MAX } else { 0 }; PAGES.div_ceil(64)];
        if full && !PAGES.is_multiple_of(64) {
            *words.last_mut().unwrap() = (1 << (PAGES % 64)) - 1;
        }
        Bits(words)
    }
    fn get(&self, p: usize) -> bool {
        self.0[p / 64] >> (p % 64) & 1 == 1
    }
    fn set(&mut self, p: usize) {
        self.0[p / 64] |= 1 << (p % 64);
    }
    fn clear(&mut self, p: usize) {
        self.0[p / 64] &= !(1 << (p % 64));
    }
    /// The first set page at or after `from`, then from 0 (QEMU's bitmap
    /// walk wraps round).
    fn next_from(&self, from: usize) -> Option<usize> {
        let scan = |start: usize, end: usize| -> Option<usize> {
            let mut w = start / 64;
            let mut word = self.0.get(w)? & (u64::MAX << (start % 64));
            loop {
                if word != 0 {
                    let p = w * 64 + word.trailing_zeros() as usize;
                    return (p < end).then_some(p);
                }
                w += 1;
                if w * 64 >= end {
                    return None;
                }
                word = self.0[w];
            }
        };
        scan(from.min(PAGES), PAGES).or_else(|| scan(0, from.min(PAGES)))
    }
}

/// A deterministic mix of a page number (splitmix64), for a layout that is
/// neither sorted nor random from run to run.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One region of the guest: `pages` rewritten one after another, round and
/// round, at `rate` pages a second.
struct Region {
    pages: Vec<usize>,
    rate: f64,
    next: usize,
    owed: f64,
}

/// The regions whose writes have `curve` as their "dirtied at least once
/// within t": with the curve's slopes s_1 > s_2 > ... (0 after the last
/// point), region k is rewritten at s_k - s_{k+1} and holds that rate
/// times the k-th point's time, so it stops adding new pages exactly there.
/// As (bytes per second, bytes).
fn regions_for(curve: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut slopes = Vec::new();
    let mut before = (0.0, 0.0);
    for &(t, gib) in curve {
        slopes.push((gib - before.1) * GIB / (t - before.0));
        before = (t, gib);
    }
    slopes.push(0.0);
    curve
        .iter()
        .enumerate()
        .map(|(k, &(t, _))| {
            let rate = slopes[k] - slopes[k + 1];
            assert!(rate > 0.0, "the curve is concave");
            (rate, rate * t)
        })
        .collect()
}

/// QEMU 7.2's precopy of the guest over a link of `link` bytes a second
/// with `downtime_limit`.
struct Replay {
    zero: Bits,
    regions: Vec<Region>,
    /// KVM's dirty log, and the pages in it (so a sync reads only those).
    log: Bits,
    logged: Vec<usize>,
}

/// How a replay ended.
#[derive(Debug, Clone, Copy)]
enum Ended {
    /// Stopped, copied and done: the migration's time and its downtime.
    Converged { total_s: f64, downtime_s: f64 },
    /// Still above the threshold after `horizon_s`.
    NotConverged,
}

impl Replay {
    fn new() -> Self {
        let mut zero = Bits::new(false);
        let mut nonzero = Vec::new();
        for p in 0..PAGES {
            if (mix(p as u64) >> 11) as f64 / (1u64 << 53) as f64 <= ZERO_FRACTION {
                zero.set(p);
            } else {
                nonzero.push(p);
            }
        }
        // The dirtied pages are among the non-zero ones, spread over the
        // whole memory in no order.
        nonzero.sort_by_key(|&p| mix(p as u64 ^ 0x5eed));
        let mut taken = 0;
        let regions = regions_for(&CURVE)
            .into_iter()
            .map(|(rate, size)| {
                let n = (size / PAGE as f64).round() as usize;
                let pages = nonzero[taken..taken + n].to_vec();
                taken += n;
                Region {
                    pages,
                    rate: rate / PAGE as f64,
                    next: 0,
                    owed: 0.0,
                }
            })
            .collect();
        Replay {
            zero,
            regions,
            log: Bits::new(false),
            logged: Vec::new(),
        }
    }

    /// The guest runs for `dt`.
    fn guest(&mut self, dt: f64) {
        for r in &mut self.regions {
            r.owed += r.rate * dt;
            while r.owed >= 1.0 {
                r.owed -= 1.0;
                let p = r.pages[r.next];
                r.next = (r.next + 1) % r.pages.len();
                self.zero.clear(p);
                if !self.log.get(p) {
                    self.log.set(p);
                    self.logged.push(p);
                }
            }
        }
    }

    fn wire(&self, p: usize) -> f64 {
        if self.zero.get(p) {
            ZERO_WIRE
        } else {
            NORMAL_WIRE
        }
    }

    fn run(mut self, link: f64, downtime_limit: f64, horizon_s: f64) -> Ended {
        // QEMU's migration thread: an iteration sends for up to 50 ms;
        // 10 ms steps resolve it finer.
        const DT: f64 = 0.01;
        let mut bitmap = Bits::new(true);
        let mut dirty = PAGES;
        let mut cursor = 0;
        let mut budget = 0.0;
        let mut threshold = 0.0;
        let (mut window_sent, mut window_start) = (0.0, 0.0);
        let mut t = 0.0;
        while t < horizon_s {
            self.guest(DT);
            // `migration_update_counters`: every 100 ms, the threshold
            // from the bandwidth measured meanwhile.
            if t - window_start >= 0.1 - 1e-9 {
                threshold = window_sent / (t - window_start) * downtime_limit;
                (window_sent, window_start) = (0.0, t);
            }
            // `ram_save_pending`: a sync only below the threshold, the
            // pages left counted at 4 KiB each.
            if ((dirty as u64 * PAGE) as f64) < threshold {
                for p in self.logged.drain(..) {
                    self.log.clear(p);
                    if !bitmap.get(p) {
                        bitmap.set(p);
                        dirty += 1;
                    }
                }
                if ((dirty as u64 * PAGE) as f64) < threshold {
                    // `migration_completion`: the guest stops; what is
                    // left (nothing more is dirtied) crosses the link.
                    let mut left = 0.0;
                    let mut p = 0;
                    while let Some(q) = bitmap.next_from(p).filter(|&q| q >= p) {
                        left += self.wire(q);
                        p = q + 1;
                    }
                    let downtime_s = left / link;
                    return Ended::Converged {
                        total_s: t + downtime_s,
                        downtime_s,
                    };
                }
            }
            // `ram_save_iterate`: pages in address order for this step.
            budget += link * DT;
            let mut sent = 0.0;
            while let Some(p) = bitmap.next_from(cursor) {
                let cost = self.wire(p);
                if cost > budget {
                    break;
                }
                budget -= cost;
                sent += cost;
                bitmap.clear(p);
                dirty -= 1;
                cursor = p + 1;
            }
            if dirty == 0 {
                budget = 0.0; // an idle link saves nothing up
            }
            window_sent += sent;
            t += DT;
        }
        Ended::NotConverged
    }
}

/// The simulator's migration of the same guest, alone, with
/// `downtime_limit`: (its time, its downtime, its rounds).
fn simulated(gbps: f64, downtime_limit: Duration) -> (f64, f64, u32) {
    let text = format!(
        r#"[network]
wan_bandwidth = "{gbps} Gbps"
wan_rtt = "1 ms"
tcp_window = "1 GiB"

[migration]
downtime_limit = "{} ms"

[[host]]
name = "src"
site = "source"
nic = "100 Gbps"

[[host]]
name = "dst"
site = "destination"
nic = "100 Gbps"

[[vm]]
name = "db"
host = "src"
memory = "32 GiB"
zero_fraction = {ZERO_FRACTION}
dirty_curve = [{{ after = "125 ms", dirtied = "0.06 GiB" }}, {{ after = "1 s", dirtied = "0.46 GiB" }},
               {{ after = "10 s", dirtied = "1.75 GiB" }}, {{ after = "60 s", dirtied = "5.8 GiB" }}]
"#,
        downtime_limit.as_millis()
    );
    let s = Scenario::from_toml_str(&text, "db.toml").unwrap();
    let r = common::simulate(&s.fleet, &s.network, s.migration, PolicyKind::Sequential);
    let vm = &r.vms[0];
    (
        vm.migration_time_s.unwrap(),
        vm.downtime_s.unwrap(),
        vm.rounds.unwrap(),
    )
}

#[test]
fn the_regions_have_the_curve() {
    // Sum(min(rate × t, size)) at each point and between two, by hand from
    // the curve's points.
    let regions = regions_for(&CURVE);
    let within = |t: f64| regions.iter().map(|&(r, w)| (r * t).min(w)).sum::<f64>() / GIB;
    for (t, gib) in CURVE {
        assert!((within(t) - gib).abs() < 1e-9, "{t} s: {} GiB", within(t));
    }
    assert!((within(5.5) - (0.46 + 1.75) / 2.0).abs() < 1e-9);
    assert!((within(600.0) - 5.8).abs() < 1e-9);
}

/// Within 15 %, the issue's target for convergence times.
#[track_caller]
fn within_15_percent(sim: f64, qemu: f64, case: &str) {
    let off = sim / qemu - 1.0;
    eprintln!(
        "{case}: simulator {sim:.2} s, QEMU's algorithm page by page {qemu:.2} s ({:+.1} %)",
        off * 100.0
    );
    assert!(
        off.abs() <= 0.15,
        "{case}: simulator {sim:.2} s against {qemu:.2} s"
    );
}

#[test]
fn a_fast_link_converges_in_the_time_qemus_algorithm_takes() {
    // 10 Gbit/s, a 1 s downtime limit. By hand: the first pass sends the
    // 39 % non-zero pages (13.4 GB, 10.7 s) and the zero pages' headers;
    // the 1.8 GiB dirtied meanwhile take 1.6 s more, the 0.5 GiB dirtied
    // in those fit in the 1 s: about 12.8 s in all (not the 30 s of every
    // byte of memory).
    for (gbps, limit_ms) in [(10.0, 1000), (25.0, 300), (5.0, 1000)] {
        let limit = Duration::from_millis(limit_ms);
        let case = format!("{gbps} Gbit/s, downtime limit {limit_ms} ms");
        let Ended::Converged { total_s, downtime_s } =
            Replay::new().run(gbps * 1e9 / 8.0, limit.as_secs_f64(), 300.0)
        else {
            panic!("{case}: QEMU's algorithm did not converge");
        };
        let (sim, sim_downtime, rounds) = simulated(gbps, limit);
        eprintln!(
            "{case}: downtime simulator {sim_downtime:.3} s ({rounds} rounds), QEMU's {downtime_s:.3} s"
        );
        within_15_percent(sim, total_s, &case);
        assert!(
            sim_downtime <= limit.as_secs_f64() + 1e-9,
            "{case}: forced after {rounds} rounds"
        );
    }
}

#[test]
fn a_slow_link_converges_neither_here_nor_in_qemu() {
    // 2.5 Gbit/s, 1 s: the guest dirties 0.48 GiB/s at first, faster than
    // the link sends (0.29 GiB/s), so what is left never fits in 1 s: the
    // fixed point of "what is dirtied while it is sent" is 0.62 GiB, 2.1 s
    // of link (by hand on the curve's 1-10 s segment). QEMU iterates
    // forever; the simulator forces stop-and-copy at its round limit, with
    // a downtime beyond the limit.
    let limit = Duration::from_secs(1);
    assert!(matches!(
        Replay::new().run(2.5e9 / 8.0, 1.0, 300.0),
        Ended::NotConverged
    ));
    let (sim, downtime, rounds) = simulated(2.5, limit);
    eprintln!(
        "2.5 Gbit/s, 1 s: simulator forced after {rounds} rounds, {sim:.1} s, downtime {downtime:.2} s"
    );
    assert!(downtime > 1.0 && downtime < 2.6, "downtime {downtime} s");
    // With 3 s allowed, both converge, and in about the same time.
    let Ended::Converged { total_s, .. } = Replay::new().run(2.5e9 / 8.0, 3.0, 300.0) else {
        panic!("QEMU's algorithm did not converge with 3 s");
    };
    let (sim, downtime, _) = simulated(2.5, Duration::from_secs(3));
    assert!(downtime <= 3.0, "{downtime}");
    within_15_percent(sim, total_s, "2.5 Gbit/s, downtime limit 3 s");
}
