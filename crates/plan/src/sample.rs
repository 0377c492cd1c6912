//! What a guest's memory holds, from a random sample of it: the share of
//! zero pages and the zstd ratio of the others, each with its sample size
//! and standard error.
//!
//! The sample is runs of [`RUN_PAGES`] contiguous pages (64 KiB: the most
//! one `virDomainMemoryPeek` reads) at places drawn uniformly over the
//! guest's RAM. Runs, not single pages, because QEMU's multifd `zstd`
//! compresses a stream of many pages, which finds more to share than one
//! page alone; so each run's non-zero pages are compressed together, at
//! QEMU's default level (1). The run is also the statistical unit: the
//! standard errors are those of a cluster sample (pages of one run are
//! alike more often than pages far apart).

use rand::seq::index;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// A guest page.
pub const PAGE: usize = 4096;

/// Pages read at once.
pub const RUN_PAGES: usize = 16;

/// Bytes read at once: 64 KiB.
pub const RUN_BYTES: usize = PAGE * RUN_PAGES;

/// The zstd level QEMU's multifd uses by default (`multifd-zstd-level`).
pub const ZSTD_LEVEL: i32 = 1;

/// Guest-physical ranges `[start, end)` that are RAM, and nothing that is a
/// device or ROM: where a sample may be read.
pub type RamRanges = Vec<(u64, u64)>;

/// The legacy hole below 1 MiB (VGA, option ROMs, BIOS): not sampled.
const LEGACY_HOLE: (u64, u64) = (0xa_0000, 0x10_0000);

/// Where QEMU maps `memory` bytes of RAM of an x86 machine (`q35` or the
/// older `pc`) when it cannot be asked: below 4 GiB up to the machine's
/// split, the rest from 4 GiB (QEMU's `pc_q35_init` and `pc_init1`).
pub fn x86_ram_ranges(memory: u64, q35: bool) -> RamRanges {
    const GIB: u64 = 1 << 30;
    let low = if q35 {
        if memory >= 0xb000_0000 {
            2 * GIB
        } else {
            memory
        }
    } else if memory >= 0xe000_0000 {
        3 * GIB
    } else {
        memory
    };
    let mut ranges = vec![(0, low)];
    if memory > low {
        ranges.push((4 * GIB, 4 * GIB + memory - low));
    }
    ranges
}

/// The RAM ranges of `info mtree` (HMP): the guest-physical ranges of the
/// aliases `ram-below-4g` and `ram-above-4g`, the same on `pc` and `q35`.
/// `None` when it names neither.
pub fn mtree_ram_ranges(mtree: &str) -> Option<RamRanges> {
    let mut ranges = RamRanges::new();
    for alias in ["alias ram-below-4g ", "alias ram-above-4g "] {
        let Some(line) = mtree.lines().find(|l| l.contains(alias)) else {
            continue;
        };
        let range = line.split_whitespace().next()?;
        let (start, end) = range.split_once('-')?;
        let start = u64::from_str_radix(start, 16).ok()?;
        let end = u64::from_str_radix(end, 16).ok()?;
        if end > start {
            ranges.push((start, end + 1));
        }
    }
    (!ranges.is_empty()).then_some(ranges)
}

/// `runs` places of [`RUN_BYTES`] each (guest-physical, run-aligned, in
/// increasing order), drawn without replacement from the runs that lie
/// whole in `ram` and outside the legacy hole; fewer when RAM has fewer.
/// The same `seed` draws the same places.
pub fn places(ram: &[(u64, u64)], runs: usize, seed: u64) -> Vec<u64> {
    let run = RUN_BYTES as u64;
    // Every whole run of every range, as (first run's address, count).
    let blocks: Vec<(u64, u64)> = ram
        .iter()
        .map(|&(start, end)| {
            let first = start.div_ceil(run) * run;
            (first, end.saturating_sub(first) / run)
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    let total: u64 = blocks.iter().map(|b| b.1).sum();
    let address = |mut i: u64| {
        for &(first, n) in &blocks {
            if i < n {
                return first + i * run;
            }
            i -= n;
        }
        unreachable!("index within the total")
    };
    let in_hole = |a: u64| a < LEGACY_HOLE.1 && a + run > LEGACY_HOLE.0;
    let usable: Vec<u64> = if total <= (runs as u64) * 4 {
        // Small guests: every run, then a draw from them.
        (0..total).map(address).filter(|&a| !in_hole(a)).collect()
    } else {
        Vec::new()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut picked: Vec<u64> = if usable.is_empty() {
        // Large guests: draw a few more than needed and drop the hole's.
        let draw = (runs + 8).min(total as usize);
        index::sample(&mut rng, total as usize, draw)
            .into_iter()
            .map(|i| address(i as u64))
            .filter(|&a| !in_hole(a))
            .take(runs)
            .collect()
    } else {
        index::sample(&mut rng, usable.len(), runs.min(usable.len()))
            .into_iter()
            .map(|i| usable[i])
            .collect()
    };
    picked.sort_unstable();
    picked
}

/// What the sampled runs say of the guest's memory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Content {
    /// Pages read, and the runs they came in.
    pub pages_sampled: u64,
    pub runs_sampled: u64,
    /// The share of zero pages, and its standard error.
    pub zero_fraction: f64,
    pub zero_fraction_stderr: f64,
    /// The zstd ratio of the non-zero pages (their bytes over their
    /// compressed bytes, each run's compressed together; 1 when none was
    /// read), and its standard error.
    pub compression_ratio: f64,
    pub compression_ratio_stderr: f64,
}

/// Counts and compresses `runs` (each [`RUN_BYTES`] long; a shorter one is
/// taken as it is).
pub fn content(runs: &[Vec<u8>]) -> Content {
    let mut tally = Tally::default();
    for run in runs {
        tally.add(run);
    }
    tally.content()
}

/// [`content`] one run at a time: what a run says is kept (a few numbers),
/// not the run, so a sample of any size costs one run of memory.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Per run: its share of zero pages, its non-zero bytes and those
    /// compressed.
    zero_shares: Vec<f64>,
    sizes: Vec<(f64, f64)>,
    pages: u64,
    zero_pages: u64,
}

impl Tally {
    pub fn add(&mut self, run: &[u8]) {
        let mut nonzero = Vec::with_capacity(run.len());
        let (mut zero, mut count) = (0u64, 0u64);
        for page in run.chunks(PAGE) {
            count += 1;
            if page.iter().all(|&b| b == 0) {
                zero += 1;
            } else {
                nonzero.extend_from_slice(page);
            }
        }
        self.pages += count;
        self.zero_pages += zero;
        self.zero_shares.push(zero as f64 / count.max(1) as f64);
        let compressed = if nonzero.is_empty() {
            0
        } else {
            zstd::bulk::compress(&nonzero, ZSTD_LEVEL).map_or(nonzero.len(), |c| c.len())
        };
        self.sizes.push((nonzero.len() as f64, compressed as f64));
    }

    pub fn content(&self) -> Content {
        let zero_fraction = if self.pages == 0 {
            0.0
        } else {
            self.zero_pages as f64 / self.pages as f64
        };
        let (bytes, packed) = self
            .sizes
            .iter()
            .fold((0.0, 0.0), |(b, c), &(x, y)| (b + x, c + y));
        let ratio = if packed > 0.0 {
            (bytes / packed).max(1.0)
        } else {
            1.0
        };
        Content {
            pages_sampled: self.pages,
            runs_sampled: self.zero_shares.len() as u64,
            zero_fraction,
            zero_fraction_stderr: stderr_of_mean(&self.zero_shares),
            compression_ratio: ratio,
            compression_ratio_stderr: ratio_stderr(&self.sizes, ratio),
        }
    }
}

/// The standard error of the mean of `x` (0 with fewer than two).
fn stderr_of_mean(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    if x.len() < 2 {
        return 0.0;
    }
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (var / n).sqrt()
}

/// The standard error of the ratio estimator `R = Σ b / Σ c` over runs
/// `(b, c)`, by linearization: `sqrt(Σ (b - R c)² / (n (n - 1))) × n / Σ c`.
fn ratio_stderr(sizes: &[(f64, f64)], ratio: f64) -> f64 {
    let used: Vec<_> = sizes.iter().filter(|s| s.0 > 0.0).collect();
    let n = used.len() as f64;
    let packed: f64 = used.iter().map(|s| s.1).sum();
    if used.len() < 2 || packed <= 0.0 {
        return 0.0;
    }
    let residuals: f64 = used.iter().map(|s| (s.0 - ratio * s.1).powi(2)).sum();
    (residuals / (n * (n - 1.0))).sqrt() * n / packed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machines_split_ram_as_qemu_does() {
        const GIB: u64 = 1 << 30;
        assert_eq!(x86_ram_ranges(GIB, true), vec![(0, GIB)]);
        // q35 splits at 2 GiB from 2.75 GiB of RAM on; pc at 3 GiB from 3.5.
        assert_eq!(
            x86_ram_ranges(4 * GIB, true),
            vec![(0, 2 * GIB), (4 * GIB, 6 * GIB)]
        );
        assert_eq!(x86_ram_ranges(3 * GIB, false), vec![(0, 3 * GIB)]);
        assert_eq!(
            x86_ram_ranges(4 * GIB, false),
            vec![(0, 3 * GIB), (4 * GIB, 5 * GIB)]
        );
    }

    #[test]
    fn mtree_gives_the_ram_aliases() {
        let mtree = "memory-region: system\n  0000000000000000-ffffffffffffffff (prio 0, i/o): system\n    \
            0000000000000000-000000007fffffff (prio 0, ram): alias ram-below-4g @mem 0000000000000000-000000007fffffff\n    \
            00000000000c0000-00000000000c3fff (prio 1, ram): alias pam-rom @mem 00000000000c0000-00000000000c3fff\n    \
            0000000100000000-000000017fffffff (prio 0, ram): alias ram-above-4g @mem 0000000080000000-00000000ffffffff\n";
        assert_eq!(
            mtree_ram_ranges(mtree),
            Some(vec![(0, 0x8000_0000), (0x1_0000_0000, 0x1_8000_0000)])
        );
        assert_eq!(mtree_ram_ranges("nothing here"), None);
    }

    #[test]
    fn places_are_whole_runs_in_ram_outside_the_hole() {
        let ram = vec![(0, 64 << 20), (4 << 30, (4 << 30) + (8 << 20))];
        let p = places(&ram, 300, 7);
        assert_eq!(p.len(), 300);
        assert!(p.windows(2).all(|w| w[0] < w[1]), "sorted, no run twice");
        let run = RUN_BYTES as u64;
        for &a in &p {
            assert_eq!(a % run, 0);
            let inside = ram.iter().any(|&(s, e)| a >= s && a + run <= e);
            assert!(inside, "{a:#x}");
            assert!(a + run <= 0xa_0000 || a >= 0x10_0000, "{a:#x} in the legacy hole");
        }
        assert_eq!(places(&ram, 300, 7), p, "the same seed, the same places");
        // A small guest gives what it has: 1 MiB is 16 runs, the 6 from
        // 0xa0000 up in the hole.
        let small = places(&[(0, 1 << 20)], 100, 1);
        assert_eq!(small.len(), 16 - 6, "{small:x?}");
    }

    #[test]
    fn counts_and_ratios_by_hand() {
        // Two runs: one all zero; one with 4 zero pages, 6 pages of one
        // repeated line of text and 6 of random bytes.
        let mut random = vec![0u8; 6 * PAGE];
        let mut x = 0x1234_5678_u32;
        for b in random.iter_mut() {
            // xorshift: bytes zstd cannot shrink.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog\n"
            .iter()
            .copied()
            .cycle()
            .take(6 * PAGE)
            .collect();
        let mut mixed = vec![0u8; 4 * PAGE];
        mixed.extend_from_slice(&text);
        mixed.extend_from_slice(&random);
        let c = content(&[vec![0u8; RUN_BYTES], mixed]);
        assert_eq!((c.pages_sampled, c.runs_sampled), (32, 2));
        // 20 of 32 pages zero; the runs' shares 1 and 0.25: standard error
        // sd / sqrt(2) = 0.5303 / 1.414 = 0.375.
        assert_eq!(c.zero_fraction, 20.0 / 32.0);
        assert!((c.zero_fraction_stderr - 0.375).abs() < 1e-12);
        // 12 pages in, a little over the 6 random pages out (the text
        // almost vanishes): a ratio just under 2.
        assert!(c.compression_ratio > 1.9 && c.compression_ratio < 2.0, "{c:?}");
        assert_eq!(c.compression_ratio_stderr, 0.0, "one run with data");
        let none = content(&[]);
        assert_eq!((none.zero_fraction, none.compression_ratio), (0.0, 1.0));
    }
}
