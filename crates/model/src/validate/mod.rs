//! The one wall of validation.
//!
//! Every loader (a scenario file, a sweep's combination after its levels
//! are applied, a QEMU or libvirt inventory, `evac plan`'s scenario) builds
//! the model's types and calls their `validate()`: a value refused in one
//! place is refused everywhere, with the same words. A refusal is an
//! [`Invalid`]: the [`FieldPath`] of the value at fault, in the vocabulary
//! of evac's TOML formats (`host[2].nic`, `vm[0].memory`,
//! `network.wan_trace[1].at`, `migration.max_rounds`), and what is wrong.
//! The loader maps the path to its file, line and entry; a `vm[i]` path
//! counts the fleet's VMs, which a scenario's `[[vm_group]]`s expand.
//!
//! ## The bounds
//!
//! Parsing already keeps every quantity at 0 or within a sane range
//! (sizes 1 B ..= 1 PiB, bit rates 1 bps ..= 1000 Tbps, byte rates
//! 1 B/s ..= 125000 GB/s, durations 1 us ..= 87660 h); `validate()` checks
//! them again (values made by code, such as a sweep's scaled trace, never
//! went through a parser) and adds what each field needs:
//!
//! | field | refused |
//! |---|---|
//! | names of hosts and VMs | empty, longer than [`MAX_NAME_LEN`], or any character outside `A-Z a-z 0-9 . _ -` ([`NAME_CHARSET`]), or starting with `.` or `-` (a name becomes part of paths, QEMU option strings and libvirt calls: no `/`, `,`, spaces or control characters) |
//! | `wan_bandwidth`, a host's `nic`, `max_bandwidth` | 0, not finite, outside 1 bps ..= 1000 Tbps |
//! | a trace point's `bandwidth` | not finite, outside 1 bps ..= 1000 Tbps (0, an outage, is allowed) |
//! | `wan_rtt` | beyond [`MAX_RTT`] (1 min) |
//! | `tcp_window` | outside [`MIN_TCP_WINDOW`] (1 KiB) ..= [`MAX_TCP_WINDOW`] (1 GiB, Linux's largest scaled window) |
//! | `wan_trace` | more than [`MAX_TRACE_POINTS`] points; `at` not strictly increasing or beyond 87660 h; a point's `bandwidth` of 0 is an outage, allowed |
//! | a host's `power_trace` | on a destination host; more than [`MAX_TRACE_POINTS`] changes; `at` not strictly increasing; a time beyond 87660 h |
//! | `connections` (or `multifd_channels`) | 0, more than 255 (QEMU's limit): refused as it is read, by [`crate::Connections`] |
//! | `max_rounds` | 0 for live or postcopy, more than [`MAX_ROUNDS`] |
//! | `downtime_limit` | beyond [`MAX_DOWNTIME`] (2000 s, QEMU's limit) |
//! | `setup_time` | beyond [`MAX_SETUP_TIME`] (1 h) |
//! | `ramp_rtts`, `join_rtts` | not finite, below 0, beyond [`MAX_RAMP_RTTS`] |
//! | a VM's `memory` | 0, beyond 1 PiB; more than every destination's room; VMs pinned beyond a destination's room; VMs beyond all destinations' room when every room is bounded |
//! | a VM's `working_set` | more than its memory |
//! | a VM's `dirty_rate` | not finite, beyond 125000 GB/s |
//! | a VM's `zero_fraction` | not within 0 ..= 1 |
//! | a VM's `compression_ratio` | not within 1 ..= [`MAX_COMPRESSION_RATIO`](crate::memory::MAX_COMPRESSION_RATIO) |
//! | a VM's `dirty_curve` | more than [`MAX_DIRTY_CURVE_POINTS`](crate::memory::MAX_DIRTY_CURVE_POINTS) points; `after` 0, not strictly increasing or beyond 87660 h; `dirtied` decreasing or more than its memory |
//! | a host's `migration_cpus` | not finite, 0 or less, more than [`MAX_MIGRATION_CPUS`] |
//! | `zstd_rate_per_core` | 0, not finite, beyond 125000 GB/s |
//! | a host's `memory` | on a source host; 0 on a destination |
//! | a host's `power_off_at` | on a destination host; beyond 87660 h |
//! | the fleet | no source or no destination host; more than [`MAX_VMS`] VMs or [`MAX_HOSTS`] hosts; duplicate names; a VM on a destination host or pinned to a source host |
//!
//! Sums (the memory of a fleet, of the VMs pinned to a host) are taken in
//! `u128`, so no fleet overflows them.

use std::time::Duration;

use crate::units::MAX_DURATION;
use crate::{BitsPerSec, Bytes};

mod fleet;
mod invalid;
mod network;

pub use invalid::{FieldPath, Invalid, Step};

/// The characters a host or VM name may have, as the messages say them.
pub const NAME_CHARSET: &str = "letters A-Z a-z, digits 0-9, `.`, `_` and `-`";
/// The longest name of a host or VM (a libvirt domain name may be longer;
/// a Unix socket path, which VM names become part of, may not).
pub const MAX_NAME_LEN: usize = 64;
/// The longest round trip: the Moon is 2.6 s away.
pub const MAX_RTT: Duration = Duration::from_secs(60);
/// The smallest TCP window: below it a connection is a typo.
pub const MIN_TCP_WINDOW: Bytes = Bytes(1024);
/// The largest TCP window Linux reaches with window scaling.
pub const MAX_TCP_WINDOW: Bytes = Bytes(1 << 30);
/// The most points of a bandwidth trace.
pub const MAX_TRACE_POINTS: usize = 1_000_000;
/// The most precopy rounds: a guest that has not converged after this many
/// will not.
pub const MAX_ROUNDS: u32 = 10_000;
/// QEMU's largest `downtime-limit`.
pub const MAX_DOWNTIME: Duration = Duration::from_secs(2000);
/// The most round trips a migration's connections ramp up for (the lab
/// calibrated 12).
pub const MAX_RAMP_RTTS: f64 = 10_000.0;
/// The longest fixed cost of starting a migration.
pub const MAX_SETUP_TIME: Duration = Duration::from_secs(3600);
/// The most cores a host gives migrations.
pub const MAX_MIGRATION_CPUS: f64 = 100_000.0;
/// The most VMs of a fleet (ten times the largest scale benchmark).
pub const MAX_VMS: usize = 10_000_000;
/// The most hosts of a fleet.
pub const MAX_HOSTS: usize = 1_000_000;

const MAX_BIT_RATE: f64 = 1e15;
const MAX_BYTE_RATE: f64 = 1.25e14;
const MAX_SIZE: u64 = 1 << 50;

/// Checks a host's or VM's name: see [`NAME_CHARSET`].
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name may not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{}...` is {} bytes long; a name has at most {MAX_NAME_LEN}",
            name.chars().take(16).collect::<String>(),
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{:?} has the character {bad:?}; a name has only {NAME_CHARSET}",
            name.chars().take(MAX_NAME_LEN).collect::<String>()
        ));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(format!(
            "`{name}` starts with `{}`; a name starts with a letter, a digit or `_`",
            &name[..1]
        ));
    }
    Ok(())
}

/// Checks a name that becomes one directory of a path (an inventory's
/// `name`, its run dir under the state dir): free text, but one path
/// component that cannot climb out (`/`, a leading `.`) nor end a path in
/// QEMU's option strings (`,`), without control characters, at most 128
/// bytes.
pub fn check_dir_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("a name may not be empty".into());
    }
    if name.len() > 128 {
        return Err(format!("a name of {} bytes is longer than 128", name.len()));
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| matches!(c, '/' | '\\' | ',') || c.is_control())
    {
        return Err(format!(
            "{name:?} has the character {bad:?}; this name becomes a directory, so it has no `/`, `\\`, `,` \
             or control characters"
        ));
    }
    if name.starts_with('.') {
        return Err(format!(
            "`{name}` starts with `.`; this name becomes a directory, which may not be hidden or climb out"
        ));
    }
    Ok(())
}

/// A bit rate that must carry something.
fn check_bit_rate(rate: BitsPerSec, what: &str) -> Result<(), String> {
    if rate.0 == 0.0 {
        return Err(format!(
            "{what} of {rate} carries nothing; give a rate above zero"
        ));
    }
    if !rate.0.is_finite() || !(1.0..=MAX_BIT_RATE).contains(&rate.0) {
        return Err(format!(
            "{what} of {} bps is not within 1 bps ..= 1000 Tbps",
            rate.0
        ));
    }
    Ok(())
}

/// A count of round trips (`ramp_rtts`, `join_rtts`): finite, 0 or more,
/// at most [`MAX_RAMP_RTTS`].
fn check_rtts(rtts: f64, what: &str) -> Result<(), String> {
    if !(rtts.is_finite() && rtts >= 0.0) {
        return Err(format!(
            "{rtts} is not a number of round trips; give 0 or more (e.g. 12)"
        ));
    }
    if rtts > MAX_RAMP_RTTS {
        return Err(format!(
            "{rtts} round trips of {what} are more than {MAX_RAMP_RTTS}"
        ));
    }
    Ok(())
}

fn check_duration(duration: Duration, most: Duration, what: &str) -> Result<(), String> {
    if duration > most {
        return Err(format!(
            "{what} of {} is beyond the most, {}",
            crate::format_duration(duration),
            crate::format_duration(most)
        ));
    }
    Ok(())
}

/// Refuses the list at `path` (a fleet's hosts, a trace's points) if it has
/// more than `most` entries: "`len` `entries` are more than the `most`
/// `whole` may have".
fn check_count(path: FieldPath, len: usize, most: usize, entries: &str, whole: &str) -> Result<(), Invalid> {
    if len > most {
        return Err(Invalid::new(
            path,
            format!("{len} {entries} are more than the {most} {whole} may have"),
        ));
    }
    Ok(())
}

/// Refuses the entry at `path` of the trace `trace` (its `at` key) unless
/// its time `at` is within [`MAX_DURATION`] and comes strictly after the
/// `previous` entry's: a trace's entries (each a `what`: "point",
/// "change") are in increasing time.
fn check_trace_time(
    path: FieldPath,
    at: Duration,
    previous: Option<Duration>,
    what: &str,
    trace: &str,
) -> Result<(), Invalid> {
    check_duration(at, MAX_DURATION, "a time").map_err(|m| Invalid::new(path.clone().key("at"), m))?;
    match previous {
        Some(previous) if at <= previous => Err(Invalid::new(
            path.key("at"),
            format!(
                "`{}` is out of order: it does not come after the previous {what}'s `{}`, \
                 and the {what}s of `{trace}` must be in strictly increasing order of `at`",
                crate::format_duration(at),
                crate::format_duration(previous)
            ),
        )),
        _ => Ok(()),
    }
}
