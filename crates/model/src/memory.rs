//! What a VM's memory holds and how its guest rewrites it, and what that
//! costs on the wire: the one byte model the simulator, the planner and the
//! lower bounds share.
//!
//! Why: a migration does not send `memory` bytes. QEMU sends a zero page as
//! a header of a few bytes, a non-zero page as its 4 KiB (or, compressed
//! with multifd `zstd`, as its compressed bytes plus a per-page header),
//! and re-sends what the guest dirtied meanwhile, which grows fast and
//! then slowly (a curve, not one rate up to a working set). A model that
//! sends every byte of memory predicts a 61 %-zero guest three times too
//! slow, and one rate fits a measured dirty curve badly at either end.
//!
//! ## The model
//!
//! - **First pass.** Every page once: a share [`MemoryProfile::zero_fraction`]
//!   of them costs [`ZERO_PAGE_WIRE_BYTES`] each, the others
//!   [`PAGE_BYTES`] (uncompressed) or `PAGE_BYTES / compression_ratio +`
//!   [`PAGE_HEADER_BYTES`] (compressed).
//! - **Re-sent pages.** A page the guest dirtied holds what the guest wrote
//!   there: it is counted non-zero, compressible by the same ratio.
//! - **Dirtying.** [`Vm::dirtied_within`]: the memory dirtied at least once
//!   within a time, the VM's [`MemoryProfile::dirty_curve`] interpolated
//!   linearly from (0 s, 0 B) through its points and flat after the last;
//!   without a curve, the short form `min(working_set, dirty_rate × t)`,
//!   which is the curve of one point `{ after = working_set / dirty_rate,
//!   dirtied = working_set }`.
//! - **CPU.** Compressing costs the source host's CPU: a migration
//!   compresses in one thread per connection (QEMU's multifd channels),
//!   each a core compressing [`MigrationParams::zstd_rate_per_core`] of
//!   non-zero memory per second (zero pages are found before compression
//!   and cost none), and a host that states [`Host::migration_cpus`] shares
//!   those cores evenly among its compressing migrations. See
//!   [`cpu_share`] and [`cpu_capped_wire_rate`].
//!
//! An uncompressed non-zero page is counted as its 4096 bytes, without its
//! 8-byte header (0.2 %): so a profile left at its defaults (no zero pages,
//! ratio 1, no compression) sends exactly `memory`, as evac always modelled.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::human_duration;
use crate::{Bytes, BytesPerSec, Host, MigrationParams, Vm};

/// A guest page (x86-64's base page, QEMU's target page).
pub const PAGE_BYTES: f64 = 4096.0;

/// What QEMU sends with each page besides its contents: the 64-bit word of
/// its offset and flags (`save_page_header` in QEMU's `migration/ram.c`;
/// in a multifd packet, its 64-bit offset).
pub const PAGE_HEADER_BYTES: f64 = 8.0;

/// A zero page on the wire: its header and the one byte it is filled with
/// (QEMU's `RAM_SAVE_FLAG_ZERO`).
pub const ZERO_PAGE_WIRE_BYTES: f64 = PAGE_HEADER_BYTES + 1.0;

/// The largest compression ratio a profile may state: a page of one
/// repeated byte compresses to a few dozen bytes with zstd.
pub const MAX_COMPRESSION_RATIO: f64 = 1000.0;

/// The most points of a dirty curve.
pub const MAX_DIRTY_CURVE_POINTS: usize = 1000;

/// One point of a dirty curve: `dirtied` bytes of memory were written at
/// least once within `after` of any instant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirtyPoint {
    #[serde(with = "human_duration")]
    pub after: Duration,
    pub dirtied: Bytes,
}

/// A VM's memory as a migration meets it; the default is evac's model
/// before it had one: no zero pages, nothing compresses, dirtying by
/// `dirty_rate` up to `working_set`.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryProfile {
    /// The share of its pages that are zero (0 ..= 1).
    pub zero_fraction: f64,
    /// The zstd ratio of its non-zero pages: their bytes over their
    /// compressed bytes (1 ..= [`MAX_COMPRESSION_RATIO`]).
    pub compression_ratio: f64,
    /// The memory dirtied at least once within each duration, `after`
    /// strictly increasing and `dirtied` not decreasing; empty: the short
    /// form (`dirty_rate`, `working_set`). With a curve, the VM's
    /// `dirty_rate` is its first segment's slope and its `working_set` its
    /// last point ([`Vm::set_dirty_curve`]), what the estimates that know
    /// only the short form use.
    pub dirty_curve: Vec<DirtyPoint>,
}

impl Default for MemoryProfile {
    fn default() -> Self {
        MemoryProfile {
            zero_fraction: 0.0,
            compression_ratio: 1.0,
            dirty_curve: Vec::new(),
        }
    }
}

/// `[migration] compression`: how a migration's pages are sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// As they are (zero pages as their header).
    #[default]
    None,
    /// Non-zero pages compressed with zstd (QEMU's `multifd-compression`).
    Zstd,
    /// Per VM: zstd when it sends the VM faster than none would, given its
    /// share of the network and its host's CPU ([`compresses`]).
    Auto,
}

impl MemoryProfile {
    /// Wire bytes per byte of memory in the first pass.
    pub fn first_pass_wire_per_byte(&self, compressed: bool) -> f64 {
        let zero = self.zero_fraction * ZERO_PAGE_WIRE_BYTES / PAGE_BYTES;
        zero + (1.0 - self.zero_fraction) * self.resend_wire_per_byte(compressed)
    }

    /// Wire bytes per byte of dirtied memory re-sent (every such page
    /// non-zero).
    pub fn resend_wire_per_byte(&self, compressed: bool) -> f64 {
        if compressed {
            1.0 / self.compression_ratio + PAGE_HEADER_BYTES / PAGE_BYTES
        } else {
            1.0
        }
    }

    /// The share of the first pass's memory a compressor reads (its
    /// non-zero pages).
    pub fn first_pass_compressed_share(&self) -> f64 {
        1.0 - self.zero_fraction
    }
}

/// The most wire bytes per second a compressing migration sends when its
/// host's CPU lets it compress `cpu` bytes of non-zero memory per second:
/// for each byte of memory it sends `wire_per_byte` and compresses
/// `compressed_share`. Unbounded when nothing is compressed.
pub fn cpu_capped_wire_rate(cpu: BytesPerSec, wire_per_byte: f64, compressed_share: f64) -> f64 {
    if compressed_share <= 0.0 {
        f64::INFINITY
    } else {
        cpu.0 / compressed_share * wire_per_byte
    }
}

/// The compressing rate of one of `sharing` compressing migrations from
/// `host`: QEMU compresses in one thread per multifd channel, so at most
/// `params`' connections in cores, and at most an even share of the host's
/// `migration_cpus` when it states them; each core at `params`' rate per
/// core.
pub fn cpu_share(host: &Host, params: &MigrationParams, sharing: usize) -> BytesPerSec {
    let threads = f64::from(params.connections.get());
    let cores = match host.migration_cpus {
        Some(cpus) => (cpus / sharing.max(1) as f64).min(threads),
        None => threads,
    };
    BytesPerSec(cores * params.zstd_rate_per_core.0)
}

/// Whether a migration of `profile` compresses under `mode`, when it would
/// get `link` wire bytes per second from the network and `cpu` bytes per
/// second of compression from its host: always under zstd, never under
/// none, and under auto when it moves the first pass's memory faster
/// compressed (at the lesser of the link and the CPU) than not.
pub fn compresses(mode: Compression, profile: &MemoryProfile, link: f64, cpu: BytesPerSec) -> bool {
    match mode {
        Compression::None => false,
        Compression::Zstd => true,
        Compression::Auto => {
            let plain = link / profile.first_pass_wire_per_byte(false);
            let wire = profile.first_pass_wire_per_byte(true);
            let capped = link.min(cpu_capped_wire_rate(
                cpu,
                wire,
                profile.first_pass_compressed_share(),
            ));
            capped / wire > plain
        }
    }
}

impl Vm {
    /// The memory the guest dirties at least once within `elapsed` seconds
    /// (see the module doc), in bytes, at most its memory.
    pub fn dirtied_within(&self, elapsed: f64) -> f64 {
        if elapsed.is_nan() || elapsed <= 0.0 {
            return 0.0;
        }
        let curve = &self.profile.dirty_curve;
        let dirtied = if curve.is_empty() {
            (self.dirty_rate.0 * elapsed).min(self.working_set.as_f64())
        } else {
            let (mut t0, mut d0) = (0.0, 0.0);
            let mut at = None;
            for p in curve {
                let (t1, d1) = (p.after.as_secs_f64(), p.dirtied.as_f64());
                if elapsed <= t1 {
                    at = Some(d0 + (d1 - d0) * (elapsed - t0) / (t1 - t0));
                    break;
                }
                (t0, d0) = (t1, d1);
            }
            at.unwrap_or(d0)
        };
        dirtied.min(self.memory.as_f64())
    }

    /// The fewest bytes any migration of the VM puts on the wire: its
    /// local disks and one pass of its memory, compressed or not,
    /// whichever is less (what lower bounds count; the CPU's cap, which
    /// only slows compression, is left out).
    pub fn least_wire_bytes(&self) -> f64 {
        let per_byte = self
            .profile
            .first_pass_wire_per_byte(false)
            .min(self.profile.first_pass_wire_per_byte(true));
        self.disk.as_f64() + self.memory.as_f64() * per_byte
    }

    /// After how many seconds [`Vm::dirtied_within`] reaches its most (the
    /// working set): a round at least this long dirties all of it.
    pub fn saturated_after(&self) -> f64 {
        match self.profile.dirty_curve.last() {
            Some(last) => last.after.as_secs_f64(),
            None if self.dirty_rate.0 > 0.0 => self.working_set.as_f64() / self.dirty_rate.0,
            None => 0.0,
        }
    }

    /// Describes the VM's dirtying by `curve` (empty: keeps the short
    /// form): its `dirty_rate` becomes the first segment's slope and its
    /// `working_set` the last point's memory, the short form the estimates
    /// that know nothing of curves use.
    pub fn set_dirty_curve(&mut self, curve: Vec<DirtyPoint>) {
        if let (Some(first), Some(last)) = (curve.first(), curve.last()) {
            let after = first.after.as_secs_f64();
            self.dirty_rate = BytesPerSec(if after > 0.0 {
                first.dirtied.as_f64() / after
            } else {
                0.0
            });
            self.working_set = last.dirtied;
        }
        self.profile.dirty_curve = curve;
    }
}
