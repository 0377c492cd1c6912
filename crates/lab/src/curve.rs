//! A dirtying guest whose dirtying follows a curve, and its truth.
//!
//! A real guest's pages dirtied at least once grow fast, then slowly (a
//! small hot set rewritten all the time, a large cold one touched now and
//! then), and a migration's convergence is decided by that shape. The lab's
//! dirtying guest (`guest/dirty.S`) writes each of up to
//! [`MAX_DIRTY_REGIONS`] regions page after page at the region's own rate,
//! wrapping around. A region of `p` pages written at `r` pages per second
//! dirties `min(p, r t)` distinct pages within any window of `t` seconds,
//! and the regions are disjoint, so the memory dirtied at least once within
//! `t` is their sum ([`dirtied_within`]): a concave curve known from the
//! parameters alone, the truth a measurement is judged against.
//!
//! The guest increments the first dword of every page it writes, and the
//! lab's RAM is a file shared with QEMU: [`WriteCounters`] reads those
//! words back, so a test can also count the pages each region really got
//! (a guest starved of CPU falls behind its parameters), independently of
//! QEMU's dirty log.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use evac_model::BytesPerSec;

use crate::vm::DIRTY_WORKING_SET_START;

/// At most this many regions (region 0 and the 3 extra ones `p_extra` of
/// `guest/dirty.S` has room for).
pub const MAX_DIRTY_REGIONS: usize = 4;

/// One region of the dirtying guest: `mib` MiB written page after page at
/// `rate` (rounded to whole 4 KiB pages per second, at least one when
/// above 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirtyRegion {
    pub rate: BytesPerSec,
    pub mib: u64,
}

impl DirtyRegion {
    /// The pages per second the guest is told.
    pub fn pages_per_sec(&self) -> Result<u32, String> {
        let pages = match self.rate.0 {
            rate if rate.is_nan() => return Err(format!("dirty rate {} is not a number", self.rate)),
            rate if rate <= 0.0 => 0,
            rate => ((rate / 4096.0).round() as u64).max(1),
        };
        u32::try_from(pages).map_err(|_| format!("dirty rate {} is too high", self.rate))
    }

    /// Its pages.
    pub fn pages(&self) -> u64 {
        self.mib * 256
    }
}

/// Where each of `regions` starts (guest-physical, and in the RAM file):
/// one after another from [`DIRTY_WORKING_SET_START`].
pub fn region_starts(regions: &[DirtyRegion]) -> Vec<u64> {
    regions
        .iter()
        .scan(DIRTY_WORKING_SET_START, |start, r| {
            let here = *start;
            *start += r.mib << 20;
            Some(here)
        })
        .collect()
}

/// The bytes the guest of `regions` dirties at least once within `seconds`
/// (the truth of its dirty curve): per region `min(pages, pages_per_sec ×
/// seconds)` pages of 4096 bytes, summed. A region's rate that cannot be
/// told to the guest counts as idle (the lab refuses to start it anyway).
pub fn dirtied_within(regions: &[DirtyRegion], seconds: f64) -> f64 {
    regions
        .iter()
        .map(|r| {
            let rate = f64::from(r.pages_per_sec().unwrap_or(0));
            (rate * seconds.max(0.0)).min(r.pages() as f64) * 4096.0
        })
        .sum()
}

/// The first dword of every page of each region, read from a lab VM's RAM
/// file: each counts the times the guest wrote that page (from whatever
/// the random bytes held).
#[derive(Debug, Clone)]
pub struct WriteCounters(Vec<Vec<u32>>);

impl WriteCounters {
    /// Reads the counters of `regions` from the RAM file `ram`.
    pub fn read(ram: &Path, regions: &[DirtyRegion]) -> std::io::Result<WriteCounters> {
        let mut file = std::fs::File::open(ram)?;
        let mut word = [0u8; 4];
        let mut all = Vec::with_capacity(regions.len());
        for (region, start) in regions.iter().zip(region_starts(regions)) {
            let mut counters = Vec::with_capacity(region.pages() as usize);
            for page in 0..region.pages() {
                file.seek(SeekFrom::Start(start + page * 4096))?;
                file.read_exact(&mut word)?;
                counters.push(u32::from_le_bytes(word));
            }
            all.push(counters);
        }
        Ok(WriteCounters(all))
    }

    /// The pages written into each region since `earlier` (a page's counter
    /// wraps around at 2^32 like the guest's `incl`).
    pub fn written_since(&self, earlier: &WriteCounters) -> Vec<u64> {
        self.0
            .iter()
            .zip(&earlier.0)
            .map(|(now, then)| {
                now.iter()
                    .zip(then)
                    .map(|(n, t)| u64::from(n.wrapping_sub(*t)))
                    .sum()
            })
            .collect()
    }

    /// The pages of each region written at least once since `earlier`.
    pub fn touched_since(&self, earlier: &WriteCounters) -> Vec<u64> {
        self.0
            .iter()
            .zip(&earlier.0)
            .map(|(now, then)| now.iter().zip(then).filter(|(n, t)| n != t).count() as u64)
            .collect()
    }
}

/// The regions whose guest dirties along `curve` (a VM's `dirty_curve`:
/// memory dirtied at least once within each time, linear in between from
/// 0 B at 0 s, flat after the last point). A concave curve of `n` points
/// with slopes `s_1 >= ... >= s_n` (and `s_(n+1) = 0`) is the sum of `n`
/// rings, ring `k` written at `s_k - s_(k+1)` and full after `t_k`, of size
/// `(s_k - s_(k+1)) × t_k`: each ring adds its rate until it is full, which
/// is where the curve bends. Sizes are rounded to whole MiB, rates to whole
/// pages per second; a ring that would round to nothing is left out.
/// `Err` says why the guest cannot follow the curve: more than
/// [`MAX_DIRTY_REGIONS`] points, or a slope that grows (not concave).
pub fn regions_for_curve(curve: &[evac_model::DirtyPoint]) -> Result<Vec<DirtyRegion>, String> {
    if curve.len() > MAX_DIRTY_REGIONS {
        return Err(format!(
            "{} points: the lab's dirtying guest follows at most {MAX_DIRTY_REGIONS}",
            curve.len()
        ));
    }
    let mut slopes = Vec::with_capacity(curve.len() + 1);
    let (mut t0, mut d0) = (0.0, 0.0);
    for p in curve {
        let (t1, d1) = (p.after.as_secs_f64(), p.dirtied.as_f64());
        slopes.push((d1 - d0) / (t1 - t0));
        (t0, d0) = (t1, d1);
    }
    if let Some(i) = slopes.windows(2).position(|w| w[1] > w[0] * (1.0 + 1e-9)) {
        return Err(format!(
            "its slope grows after point {} ({:.0} B/s, then {:.0} B/s): the lab's dirtying guest follows only \
             curves that grow fast, then slowly",
            i + 1,
            slopes[i],
            slopes[i + 1]
        ));
    }
    slopes.push(0.0);
    Ok(curve
        .iter()
        .enumerate()
        .filter_map(|(k, p)| {
            let rate = slopes[k] - slopes[k + 1];
            let mib = (rate * p.after.as_secs_f64() / 1_048_576.0).round() as u64;
            (rate > 0.0 && mib > 0).then_some(DirtyRegion {
                rate: evac_model::BytesPerSec(rate),
                mib,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The curve of the three regions below, given as points at their
    /// bends, gives them back: slopes 22, 6, 2 MiB/s up to 1, 8, 96 s, so
    /// rings at 16, 4, 2 MiB/s of 16, 32, 192 MiB.
    #[test]
    fn a_concave_curve_is_rings_by_hand() {
        let point = |s: u64, mib: u64| evac_model::DirtyPoint {
            after: std::time::Duration::from_secs(s),
            dirtied: evac_model::Bytes(mib << 20),
        };
        let curve = [point(1, 22), point(8, 64), point(96, 240)];
        let regions = regions_for_curve(&curve).unwrap();
        let got: Vec<(f64, u64)> = regions.iter().map(|r| (r.rate.0 / 1_048_576.0, r.mib)).collect();
        assert_eq!(got, vec![(16.0, 16), (4.0, 32), (2.0, 192)]);
        // A plateau after the last point adds no ring of its own.
        let flat = [point(4, 40), point(8, 40)];
        let got: Vec<(f64, u64)> = regions_for_curve(&flat)
            .unwrap()
            .iter()
            .map(|r| (r.rate.0 / 1_048_576.0, r.mib))
            .collect();
        assert_eq!(got, vec![(10.0, 40)]);
        let convex = [point(1, 2), point(2, 10)];
        let err = regions_for_curve(&convex).unwrap_err();
        assert!(err.contains("slope grows after point 1"), "{err}");
        let many = [point(1, 1), point(2, 2), point(3, 3), point(4, 4), point(5, 5)];
        assert!(regions_for_curve(&many).unwrap_err().contains("5 points"));
    }

    /// The curve of a hot, a warm and a cold region, by hand: 16 MiB at
    /// 16 MiB/s (full after 1 s), 32 MiB at 4 MiB/s (8 s), 192 MiB at
    /// 2 MiB/s (96 s).
    #[test]
    fn three_regions_by_hand() {
        let mib = 1_048_576.0;
        let regions = [
            DirtyRegion {
                rate: BytesPerSec(16.0 * mib),
                mib: 16,
            },
            DirtyRegion {
                rate: BytesPerSec(4.0 * mib),
                mib: 32,
            },
            DirtyRegion {
                rate: BytesPerSec(2.0 * mib),
                mib: 192,
            },
        ];
        // 0.5 s: 8 + 2 + 1 MiB; 1 s: 16 + 4 + 2; 4 s: 16 + 16 + 8;
        // 10 s: 16 + 32 + 20; 100 s: everything.
        for (t, expected) in [
            (0.5, 11.0),
            (1.0, 22.0),
            (4.0, 40.0),
            (10.0, 68.0),
            (100.0, 240.0),
        ] {
            assert_eq!(dirtied_within(&regions, t), expected * mib, "at {t} s");
        }
        assert_eq!(dirtied_within(&regions, -1.0), 0.0);
        assert_eq!(region_starts(&regions), vec![16 << 20, 32 << 20, 64 << 20]);
    }

    #[test]
    fn rates_round_to_whole_pages() {
        let r = |rate: f64| DirtyRegion {
            rate: BytesPerSec(rate),
            mib: 1,
        };
        assert_eq!(r(0.0).pages_per_sec(), Ok(0));
        assert_eq!(r(1.0).pages_per_sec(), Ok(1));
        assert_eq!(r(6143.0).pages_per_sec(), Ok(1));
        assert_eq!(r(6145.0).pages_per_sec(), Ok(2));
        assert!(r(1e20).pages_per_sec().is_err());
        assert!(r(f64::NAN).pages_per_sec().is_err());
    }

    #[test]
    fn counters_count_writes_and_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let ram = dir.path().join("vm.mem");
        let regions = [
            DirtyRegion {
                rate: BytesPerSec(4096.0),
                mib: 1,
            },
            DirtyRegion {
                rate: BytesPerSec(4096.0),
                mib: 1,
            },
        ];
        let mut bytes = vec![0u8; 18 << 20];
        // Region 1's first page starts at u32::MAX: one write wraps it.
        bytes[17 << 20..(17 << 20) + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&ram, &bytes).unwrap();
        let before = WriteCounters::read(&ram, &regions).unwrap();
        // Region 0: page 3 written twice, page 9 once; region 1: page 0 once.
        bytes[(16 << 20) + 3 * 4096] = 2;
        bytes[(16 << 20) + 9 * 4096] = 1;
        bytes[17 << 20..(17 << 20) + 4].copy_from_slice(&0u32.to_le_bytes());
        std::fs::write(&ram, &bytes).unwrap();
        let after = WriteCounters::read(&ram, &regions).unwrap();
        assert_eq!(after.written_since(&before), vec![3, 1]);
        assert_eq!(after.touched_since(&before), vec![2, 1]);
    }
}
