//! The dirtying guest's firmware image: the binary `build.rs` assembles
//! from `guest/dirty.S`, and the image of it a lab VM boots with its
//! parameters (rate, working set, regions of a curve) written in. Apart from
//! starting VMs (`super`) because the libvirt lab boots the same image.

use std::path::Path;

use evac_model::BytesPerSec;

use super::QBOOT;
use crate::curve::{DirtyRegion, MAX_DIRTY_REGIONS};

/// The dirtying guest, a 64 KiB x86 firmware image assembled from
/// `guest/dirty.S` by `build.rs`; empty when it could not be built (see
/// [`dirty_guest_available`]).
///
/// The CPU starts in it at the reset vector; it enters 32-bit protected mode
/// (flat segments, no paging), measures the TSC's rate against PIT channel 2
/// for 50 ms, then writes into the working set's pages one after another,
/// each when the TSC says it is due, sleeping (`hlt`) in between until the
/// local APIC's timer (about 1 kHz) wakes it. Its parameters are a
/// block at offset 0: the magic [`DIRTY_GUEST_MAGIC`], then u32s
/// (little-endian) pages per second, working-set start address, working-set
/// pages, TSC kHz (0: calibrate), fill end (0: no fill); at offset 64, up
/// to three more regions (pages per second, start, pages) written from the
/// same wake-ups, for a guest whose dirtying follows a curve
/// ([`crate::curve`]).
pub const DIRTY_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dirty-guest.bin"));

/// Why [`DIRTY_GUEST`] is empty, or "".
const DIRTY_GUEST_ERROR: &str = include_str!(concat!(env!("OUT_DIR"), "/dirty-guest.err"));

/// The first 16 bytes of [`DIRTY_GUEST`].
pub const DIRTY_GUEST_MAGIC: &[u8; 16] = b"EVACDIRTYGUEST01";

/// Where the dirtying guest's working set starts (guest-physical).
pub const DIRTY_WORKING_SET_START: u64 = 16 << 20;

/// The dword [`Guest::FilledDirtying`](super::Guest::FilledDirtying)'s
/// guest writes at the start of each page of its RAM from 1 MiB up at boot
/// (`FILL` in `guest/dirty.S`).
pub const DIRTY_FILL_PATTERN: u32 = 0x5a17_e5ac;

/// Where [`Guest::FilledDirtying`](super::Guest::FilledDirtying)'s
/// fill starts (guest-physical).
pub const DIRTY_FILL_START: u64 = 1 << 20;

/// `Err(reason)` when the dirtying guest was not built.
pub fn dirty_guest_available() -> Result<(), String> {
    if DIRTY_GUEST.len() == 65536 && DIRTY_GUEST.starts_with(DIRTY_GUEST_MAGIC) {
        Ok(())
    } else if DIRTY_GUEST_ERROR.is_empty() {
        Err("the dirtying guest image is malformed".into())
    } else {
        Err(format!("the dirtying guest was not built: {DIRTY_GUEST_ERROR}"))
    }
}

/// The size of the firmware a destination gets from [`destination_args`]:
/// the dirtying guest's image must match it (same RAM block layout).
fn default_bios_size() -> std::io::Result<u64> {
    if Path::new(QBOOT).exists() {
        Ok(std::fs::metadata(QBOOT)?.len())
    } else {
        // QEMU's default for q35: SeaBIOS's bios-256k.bin.
        Ok(256 << 10)
    }
}

/// [`DIRTY_GUEST`] with its parameters set, padded at the front (the image
/// sits at the top of the 4 GiB space) to the default firmware's size: one
/// region of `working_set_mib` at `dirty_rate` (the one-rate guest).
// The libvirt lab's domains boot it; without that feature nothing does.
#[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
pub(crate) fn dirty_guest_image(
    mib: u64,
    dirty_rate: BytesPerSec,
    working_set_mib: u64,
    fill: bool,
) -> std::io::Result<Vec<u8>> {
    let region = DirtyRegion {
        rate: dirty_rate,
        mib: working_set_mib,
    };
    dirty_regions_image(mib, &[region], fill)
}

/// [`dirty_guest_image`] for a guest dirtying `regions` (at most
/// [`MAX_DIRTY_REGIONS`]), laid one after another from
/// [`DIRTY_WORKING_SET_START`]; the first must dirty (a rate above 0) for
/// any to.
pub(crate) fn dirty_regions_image(mib: u64, regions: &[DirtyRegion], fill: bool) -> std::io::Result<Vec<u8>> {
    dirty_guest_available().map_err(std::io::Error::other)?;
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
    if regions.is_empty() || regions.len() > MAX_DIRTY_REGIONS {
        return Err(invalid(format!(
            "{} dirtying regions: 1 to {MAX_DIRTY_REGIONS} expected",
            regions.len()
        )));
    }
    let start_mib = DIRTY_WORKING_SET_START >> 20;
    let total_mib: u64 = regions.iter().map(|r| r.mib).sum();
    // The guest addresses 32 bits, without paging; q35 maps at least the
    // first 2 GiB of RAM below 4 GiB.
    if regions.iter().any(|r| r.mib == 0) || start_mib + total_mib > mib.min(2048) {
        let sizes: Vec<String> = regions.iter().map(|r| format!("{} MiB", r.mib)).collect();
        return Err(invalid(format!(
            "a working set of {} from {start_mib} MiB does not fit in {} MiB (each region at least 1 MiB)",
            sizes.join(" + "),
            mib.min(2048)
        )));
    }
    let mut words = Vec::with_capacity(4 + 3 * MAX_DIRTY_REGIONS);
    let mut start = DIRTY_WORKING_SET_START;
    for (i, region) in regions.iter().enumerate() {
        let pages_per_sec = region.pages_per_sec().map_err(|e| invalid(e.to_string()))?;
        if i > 0 && pages_per_sec > 0 && words[0] == 0 {
            return Err(invalid(
                "the first dirtying region is idle: the others would be too".into(),
            ));
        }
        words.extend([pages_per_sec, start as u32, (region.mib * 256) as u32]);
        start += region.mib << 20;
        if i == 0 {
            // TSC kHz (0: calibrate), then the fill's end (set below).
            words.extend([0, 0]);
        }
    }
    let size = default_bios_size()? as usize;
    if size < DIRTY_GUEST.len() || (size & 0xffff) != 0 {
        return Err(std::io::Error::other(format!(
            "the default firmware is {size} bytes: no room for the dirtying guest"
        )));
    }
    let mut image = vec![0u8; size - DIRTY_GUEST.len()];
    image.extend_from_slice(DIRTY_GUEST);
    let base = size - DIRTY_GUEST.len();
    // The fill ends at the top of the RAM the guest addresses (below 2 GiB).
    words[4] = if fill { (mib.min(2048) << 20) as u32 } else { 0 };
    // Region 0 and the firmware's words at 16, the extra regions at 64
    // (`p_extra` in guest/dirty.S).
    let (first, extra) = words.split_at(5);
    for (offset, block) in [(16, first), (64, extra)] {
        for (i, word) in block.iter().enumerate() {
            let at = base + offset + 4 * i;
            image[at..at + 4].copy_from_slice(&word.to_le_bytes());
        }
    }
    Ok(image)
}
