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

use std::fmt;
use std::time::Duration;

use crate::memory::{MAX_COMPRESSION_RATIO, MAX_DIRTY_CURVE_POINTS};
use crate::units::MAX_DURATION;
use crate::{BitsPerSec, Bytes, BytesPerSec, Fleet, Host, HostId, MigrationParams, Mode, Network, Site, Vm};

/// One step into a document: a key of a table or an index into an array.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// The path of a value in a document, e.g. `vm[3].memory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(pub Vec<Step>);

impl FieldPath {
    /// The document as a whole.
    pub fn root() -> Self {
        FieldPath::default()
    }

    /// A key of the top-level table.
    pub fn top(key: &str) -> Self {
        FieldPath::default().key(key)
    }

    /// The `index`th entry of a top-level array of tables such as `[[vm]]`.
    pub fn entry(array: &str, index: usize) -> Self {
        FieldPath::top(array).index(index)
    }

    pub fn key(mut self, key: &str) -> Self {
        self.0.push(Step::Key(key.to_owned()));
        self
    }

    pub fn index(mut self, index: usize) -> Self {
        self.0.push(Step::Index(index));
        self
    }

    pub fn steps(&self) -> &[Step] {
        &self.0
    }

    /// `Some(i)` when the path is in the `i`th entry of top-level `array`.
    pub fn entry_index(&self, array: &str) -> Option<usize> {
        match self.0.as_slice() {
            [Step::Key(key), Step::Index(index), ..] if key == array => Some(*index),
            _ => None,
        }
    }

    /// The steps after the first `n`.
    pub fn tail(&self, n: usize) -> FieldPath {
        FieldPath(self.0.get(n..).unwrap_or_default().to_vec())
    }

    /// This path with `rest`'s steps appended.
    pub fn join(mut self, rest: &FieldPath) -> FieldPath {
        self.0.extend(rest.0.iter().cloned());
        self
    }
}

/// `wan_trace[1].at`: steps as TOML's dotted keys would write them.
impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(key) if i == 0 => f.write_str(key)?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A value the model refuses: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.0.is_empty() { String::new() } else { format!("field `{path}`: ") })]
pub struct Invalid {
    /// Empty when the refusal is about the whole (no source host, the
    /// fleet's memory beyond all rooms).
    pub path: FieldPath,
    pub message: String,
}

impl Invalid {
    pub fn new(path: FieldPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
        }
    }

    /// The refusal for a fleet with no file behind it (found by a backend,
    /// sized by QEMU): the entry named by its name, e.g.
    /// ``vm `web`: field `memory`: a VM needs memory above zero``.
    pub fn named(&self, fleet: &Fleet) -> String {
        let name = |array: &str, i: usize| match array {
            "host" => fleet.hosts.get(i).map(|h| h.name.as_str()),
            _ => fleet.vms.get(i).map(|v| v.name.as_str()),
        };
        for array in ["host", "vm"] {
            if let Some(i) = self.path.entry_index(array) {
                let rest = self.path.tail(2);
                let who = format!("{array} `{}`", name(array, i).unwrap_or("?"));
                return if rest.0.is_empty() {
                    format!("{who}: {}", self.message)
                } else {
                    format!("{who}: field `{rest}`: {}", self.message)
                };
            }
        }
        self.to_string()
    }

    /// This refusal with `prefix` put before its path (a sub-table's
    /// refusal, placed in its document).
    pub fn under(mut self, prefix: FieldPath) -> Self {
        self.path = prefix.join(&self.path);
        self
    }
}

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

impl Network {
    /// Checks the WAN; paths are under `network`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let at = |key: &str| FieldPath::top("network").key(key);
        check_bit_rate(self.wan_bandwidth, "a WAN").map_err(|m| Invalid::new(at("wan_bandwidth"), m))?;
        check_duration(self.wan_rtt, MAX_RTT, "a round trip").map_err(|m| Invalid::new(at("wan_rtt"), m))?;
        if self.tcp_window == Bytes::ZERO {
            return Err(Invalid::new(
                at("tcp_window"),
                "a TCP window of 0 B lets nothing through; give a size above zero",
            ));
        }
        if self.tcp_window < MIN_TCP_WINDOW || self.tcp_window > MAX_TCP_WINDOW {
            return Err(Invalid::new(
                at("tcp_window"),
                format!(
                    "a TCP window of {} is not within {MIN_TCP_WINDOW} ..= {MAX_TCP_WINDOW}",
                    self.tcp_window
                ),
            ));
        }
        if self.wan_trace.len() > MAX_TRACE_POINTS {
            return Err(Invalid::new(
                at("wan_trace"),
                format!(
                    "{} points are more than the {MAX_TRACE_POINTS} a trace may have",
                    self.wan_trace.len()
                ),
            ));
        }
        for (index, point) in self.wan_trace.iter().enumerate() {
            let path = at("wan_trace").index(index);
            // A trace point of 0 is an outage: the WAN carries nothing
            // until the next point (a WAN's constant capacity stays above 0).
            if point.bandwidth.0 != 0.0 {
                check_bit_rate(point.bandwidth, "a WAN")
                    .map_err(|m| Invalid::new(path.clone().key("bandwidth"), m))?;
            }
            check_duration(point.at, MAX_DURATION, "a time")
                .map_err(|m| Invalid::new(path.clone().key("at"), m))?;
            let previous = index.checked_sub(1).map(|i| self.wan_trace[i].at);
            check_in_order(path, point.at, previous, "point", "wan_trace")?;
        }
        Ok(())
    }
}

/// Refuses the entry at `path` of the trace `trace` (its `at` key) unless
/// its time `at` comes strictly after the `previous` entry's: a trace's
/// entries (each a `what`: "point", "change") are in increasing time.
fn check_in_order(
    path: FieldPath,
    at: Duration,
    previous: Option<Duration>,
    what: &str,
    trace: &str,
) -> Result<(), Invalid> {
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

impl MigrationParams {
    /// Checks the migration parameters; paths are under `migration`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let at = |key: &str| FieldPath::top("migration").key(key);
        if self.mode != Mode::Offline && self.max_rounds == 0 {
            return Err(Invalid::new(
                at("max_rounds"),
                "live migration needs at least 1 precopy round; \
                 to copy everything in one stop, use mode = \"offline\"",
            ));
        }
        if self.max_rounds > MAX_ROUNDS {
            return Err(Invalid::new(
                at("max_rounds"),
                format!(
                    "{} rounds are more than the {MAX_ROUNDS} a migration may have; \
                     a guest that has not converged by then will not",
                    self.max_rounds
                ),
            ));
        }
        check_duration(self.downtime_limit, MAX_DOWNTIME, "a downtime limit")
            .map_err(|m| Invalid::new(at("downtime_limit"), m))?;
        check_duration(self.setup_time, MAX_SETUP_TIME, "a setup time")
            .map_err(|m| Invalid::new(at("setup_time"), m))?;
        check_rtts(self.ramp_rtts, "ramp-up").map_err(|m| Invalid::new(at("ramp_rtts"), m))?;
        check_rtts(self.join_rtts, "joining").map_err(|m| Invalid::new(at("join_rtts"), m))?;
        if let Some(cap) = self.max_bandwidth {
            if cap.0 == 0.0 {
                return Err(Invalid::new(
                    at("max_bandwidth"),
                    format!("a cap of {cap} lets nothing through; give a rate above zero, or \"unlimited\""),
                ));
            }
            check_bit_rate(cap, "a cap").map_err(|m| Invalid::new(at("max_bandwidth"), m))?;
        }
        let BytesPerSec(rate) = self.zstd_rate_per_core;
        if !(rate.is_finite() && rate > 0.0 && rate <= MAX_BYTE_RATE) {
            return Err(Invalid::new(
                at("zstd_rate_per_core"),
                format!(
                    "{rate} B/s per core is not within 1 B/s ..= 125000 GB/s; give a rate like \"250 MB/s\""
                ),
            ));
        }
        Ok(())
    }
}

impl Host {
    /// Checks one host on its own; paths are its fields (`nic`, ...).
    pub fn validate(&self) -> Result<(), Invalid> {
        let at = |key: &str| FieldPath::top(key);
        check_name(&self.name).map_err(|m| Invalid::new(at("name"), m))?;
        check_bit_rate(self.nic, "a NIC").map_err(|m| Invalid::new(at("nic"), m))?;
        match self.site {
            Site::Source if self.memory.is_some() => {
                return Err(Invalid::new(
                    at("memory"),
                    "`memory` is a destination host's room for incoming VMs; \
                     a source host receives none",
                ));
            }
            Site::Destination if self.power_off_at.is_some() => {
                return Err(Invalid::new(
                    at("power_off_at"),
                    "only source hosts lose power in this model; a destination host stays up",
                ));
            }
            Site::Destination if self.memory == Some(Bytes::ZERO) => {
                return Err(Invalid::new(
                    at("memory"),
                    "a destination host with 0 B of room can take no VM; give it memory \
                     above zero, or leave `memory` out for unbounded room",
                ));
            }
            Site::Source | Site::Destination => {}
        }
        if let Some(room) = self.memory {
            if room.0 > MAX_SIZE {
                return Err(Invalid::new(at("memory"), format!("{room} is beyond 1 PiB")));
            }
        }
        if let Some(t) = self.power_off_at {
            check_duration(t, MAX_DURATION, "a power-off time")
                .map_err(|m| Invalid::new(at("power_off_at"), m))?;
        }
        if let Some(cpus) = self.migration_cpus {
            if !(cpus.is_finite() && cpus > 0.0 && cpus <= MAX_MIGRATION_CPUS) {
                return Err(Invalid::new(
                    at("migration_cpus"),
                    format!(
                        "{cpus} cores is not within 0 < cores ..= {MAX_MIGRATION_CPUS}; give the cores the \
                         host can spare for compressing migrations, like 2 or 0.5"
                    ),
                ));
            }
        }
        if self.site == Site::Destination && !self.power_trace.is_empty() {
            return Err(Invalid::new(
                at("power_trace"),
                "only source hosts lose power in this model; a destination host stays up",
            ));
        }
        if self.power_trace.len() > MAX_TRACE_POINTS {
            return Err(Invalid::new(
                at("power_trace"),
                format!(
                    "{} changes are more than the {MAX_TRACE_POINTS} a trace may have",
                    self.power_trace.len()
                ),
            ));
        }
        for (index, change) in self.power_trace.iter().enumerate() {
            let path = at("power_trace").index(index);
            check_duration(change.at, MAX_DURATION, "a time")
                .map_err(|m| Invalid::new(path.clone().key("at"), m))?;
            if let Some(t) = change.power_off_at {
                check_duration(t, MAX_DURATION, "a power-off time")
                    .map_err(|m| Invalid::new(path.clone().key("power_off_at"), m))?;
            }
            let previous = index.checked_sub(1).map(|i| self.power_trace[i].at);
            check_in_order(path, change.at, previous, "change", "power_trace")?;
        }
        Ok(())
    }
}

impl Vm {
    /// Checks one VM's own values (not its hosts); paths are its fields.
    pub fn validate(&self) -> Result<(), Invalid> {
        let at = |key: &str| FieldPath::top(key);
        check_name(&self.name).map_err(|m| Invalid::new(at("name"), m))?;
        if self.memory == Bytes::ZERO {
            return Err(Invalid::new(at("memory"), "a VM needs memory above zero"));
        }
        if self.memory.0 > MAX_SIZE {
            return Err(Invalid::new(
                at("memory"),
                format!("{} is beyond 1 PiB", self.memory),
            ));
        }
        // First: a curve's last point is the working set, refused in the
        // curve's own words.
        self.validate_profile()?;
        if self.working_set > self.memory {
            return Err(Invalid::new(
                at("working_set"),
                format!(
                    "a working set of {} is more than the VM's {} of memory; \
                     a guest cannot keep writing to more memory than it has",
                    self.working_set, self.memory
                ),
            ));
        }
        if self.disk.0 > MAX_SIZE {
            return Err(Invalid::new(at("disk"), format!("{} is beyond 1 PiB", self.disk)));
        }
        let BytesPerSec(rate) = self.dirty_rate;
        if !rate.is_finite() || !(0.0..=MAX_BYTE_RATE).contains(&rate) {
            return Err(Invalid::new(
                at("dirty_rate"),
                format!("a dirty rate of {rate} B/s is not within 0 ..= 125000 GB/s"),
            ));
        }
        Ok(())
    }

    fn validate_profile(&self) -> Result<(), Invalid> {
        let at = |key: &str| FieldPath::top(key);
        let p = &self.profile;
        if !(0.0..=1.0).contains(&p.zero_fraction) {
            return Err(Invalid::new(
                at("zero_fraction"),
                format!(
                    "{} is not a share of pages; give one within 0 ..= 1, like 0.6",
                    p.zero_fraction
                ),
            ));
        }
        if !(1.0..=MAX_COMPRESSION_RATIO).contains(&p.compression_ratio) {
            return Err(Invalid::new(
                at("compression_ratio"),
                format!(
                    "{} is not a compression ratio (bytes over compressed bytes); give one within \
                     1 ..= {MAX_COMPRESSION_RATIO}, 1 for memory that does not compress",
                    p.compression_ratio
                ),
            ));
        }
        let curve = &p.dirty_curve;
        if curve.len() > MAX_DIRTY_CURVE_POINTS {
            return Err(Invalid::new(
                at("dirty_curve"),
                format!(
                    "{} points are more than the {MAX_DIRTY_CURVE_POINTS} a dirty curve may have",
                    curve.len()
                ),
            ));
        }
        let point = |i: usize, key: &str| at("dirty_curve").index(i).key(key);
        for (i, pt) in curve.iter().enumerate() {
            if pt.after.is_zero() {
                return Err(Invalid::new(
                    point(i, "after"),
                    "a point after 0 s says nothing (nothing is dirtied in no time); start after it, like \"1 s\"",
                ));
            }
            check_duration(pt.after, MAX_DURATION, "a time")
                .map_err(|m| Invalid::new(point(i, "after"), m))?;
            if i > 0 && pt.after <= curve[i - 1].after {
                return Err(Invalid::new(
                    point(i, "after"),
                    format!(
                        "{} is not after the point before ({}); points go in increasing `after`",
                        crate::format_duration(pt.after),
                        crate::format_duration(curve[i - 1].after)
                    ),
                ));
            }
            if i > 0 && pt.dirtied < curve[i - 1].dirtied {
                return Err(Invalid::new(
                    point(i, "dirtied"),
                    format!(
                        "{} is less than the point before ({}); memory dirtied at least once within a \
                         longer time is never less",
                        pt.dirtied,
                        curve[i - 1].dirtied
                    ),
                ));
            }
            if pt.dirtied > self.memory {
                return Err(Invalid::new(
                    point(i, "dirtied"),
                    format!("{} is more than the VM's {} of memory", pt.dirtied, self.memory),
                ));
            }
        }
        Ok(())
    }
}

impl Fleet {
    /// Checks every host and VM and how they fit together; paths are
    /// `host[i]...` and `vm[i]...` (indices into [`Fleet::hosts`] and
    /// [`Fleet::vms`]), or empty for the fleet as a whole.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.hosts.len() > MAX_HOSTS {
            return Err(Invalid::new(
                FieldPath::top("host"),
                format!(
                    "{} hosts are more than the {MAX_HOSTS} a fleet may have",
                    self.hosts.len()
                ),
            ));
        }
        if self.vms.len() > MAX_VMS {
            return Err(Invalid::new(
                FieldPath::top("vm"),
                format!(
                    "{} VMs are more than the {MAX_VMS} a fleet may have",
                    self.vms.len()
                ),
            ));
        }
        let mut names = std::collections::HashMap::with_capacity(self.hosts.len());
        for (i, host) in self.hosts.iter().enumerate() {
            host.validate()
                .map_err(|e| e.under(FieldPath::entry("host", i)))?;
            if let Some(first) = names.insert(host.name.as_str(), i) {
                return Err(Invalid::new(
                    FieldPath::entry("host", i).key("name"),
                    format!(
                        "duplicate host name `{}`: host #{} has it already",
                        host.name,
                        first + 1
                    ),
                ));
            }
        }
        if !self.hosts.iter().any(|h| h.site == Site::Source) {
            return Err(Invalid::new(
                FieldPath::root(),
                "no [[host]] has site = \"source\": there is nothing to evacuate from",
            ));
        }
        if !self.hosts.iter().any(|h| h.site == Site::Destination) {
            return Err(Invalid::new(
                FieldPath::root(),
                "no [[host]] has site = \"destination\": there is nowhere to evacuate to",
            ));
        }
        let site = |id: HostId| self.hosts.get(id.0).map(|h| h.site);
        let mut names = std::collections::HashMap::with_capacity(self.vms.len());
        for (i, vm) in self.vms.iter().enumerate() {
            let at = FieldPath::entry("vm", i);
            vm.validate().map_err(|e| e.under(at.clone()))?;
            if let Some(first) = names.insert(vm.name.as_str(), i) {
                return Err(Invalid::new(
                    at.key("name"),
                    format!(
                        "duplicate VM name `{}`: VM #{} has it already",
                        vm.name,
                        first + 1
                    ),
                ));
            }
            if site(vm.host) != Some(Site::Source) {
                return Err(Invalid::new(
                    at.key("host"),
                    "a VM to evacuate runs on a source host",
                ));
            }
            if let Some(d) = vm.destination {
                if site(d) != Some(Site::Destination) {
                    return Err(Invalid::new(
                        at.key("destination"),
                        "a VM can be pinned to a destination host only",
                    ));
                }
            }
        }
        self.validate_room()
    }

    /// Refuses VMs no destination has room for: alone, pinned together, or
    /// all together when every destination's room is bounded. (Whether they
    /// pack into the rooms is the controller's affair.)
    fn validate_room(&self) -> Result<(), Invalid> {
        let destinations: Vec<HostId> = self.destination_hosts().collect();
        let room = |id: HostId| self.hosts[id.0].memory;
        // The destination with the most room; unbounded beats any bound.
        let roomiest = destinations
            .iter()
            .copied()
            .max_by_key(|&id| room(id).map_or(u64::MAX, |bytes| bytes.0));
        for (i, vm) in self.vms.iter().enumerate() {
            let Some(target) = vm.destination.or(roomiest) else {
                continue;
            };
            let target_name = &self.hosts[target.0].name;
            let whom = match vm.destination {
                Some(_) => format!("its pinned destination `{target_name}`"),
                None => format!("the destination with the most room, `{target_name}`,"),
            };
            if let Some(room) = room(target) {
                if vm.memory > room {
                    return Err(Invalid::new(
                        FieldPath::entry("vm", i).key("memory"),
                        format!(
                            "VM `{}` needs {} but {whom} has room for {room} only: \
                             there is no destination with room for it",
                            vm.name, vm.memory
                        ),
                    ));
                }
            }
        }
        // One pass over the VMs, not one per destination. In u128: a fleet
        // of huge VMs does not wrap.
        let mut pinned_to = vec![0u128; self.hosts.len()];
        for vm in &self.vms {
            if let Some(destination) = vm.destination {
                pinned_to[destination.0] += u128::from(vm.memory.0);
            }
        }
        let show = |bytes: u128| Bytes(u64::try_from(bytes).unwrap_or(u64::MAX)).to_string();
        for &destination in &destinations {
            let Some(room) = room(destination) else {
                continue;
            };
            let pinned = pinned_to[destination.0];
            if pinned > u128::from(room.0) {
                return Err(Invalid::new(
                    FieldPath::entry("host", destination.0).key("memory"),
                    format!(
                        "the VMs pinned to `{}` need {} in all, more than its room of {room}",
                        self.hosts[destination.0].name,
                        show(pinned)
                    ),
                ));
            }
        }
        let needed: u128 = self.vms.iter().map(|vm| u128::from(vm.memory.0)).sum();
        if needed > u128::from(u64::MAX) {
            return Err(Invalid::new(
                FieldPath::root(),
                format!(
                    "the VMs need {needed} B of memory in all, more than 16 EiB: \
                     no data center holds that much"
                ),
            ));
        }
        let rooms: Option<Vec<Bytes>> = destinations.iter().map(|&id| room(id)).collect();
        if let Some(rooms) = rooms {
            let total_room: u128 = rooms.iter().map(|r| u128::from(r.0)).sum();
            if needed > total_room {
                return Err(Invalid::new(
                    FieldPath::root(),
                    format!(
                        "the VMs need {} of memory in all, but the destination hosts have room \
                         for {} in all: some VM would be left without a destination with room",
                        show(needed),
                        show(total_room)
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, site: Site) -> Host {
        Host {
            migration_cpus: None,
            name: name.into(),
            site,
            nic: BitsPerSec::gbps(10.0),
            memory: None,
            power_off_at: None,
            power_trace: Vec::new(),
        }
    }

    fn vm(name: &str, memory: Bytes) -> Vm {
        Vm {
            profile: crate::MemoryProfile::default(),
            name: name.into(),
            host: HostId(0),
            memory,
            dirty_rate: BytesPerSec::ZERO,
            working_set: memory,
            priority: 1,
            destination: None,
            disk: Bytes::ZERO,
        }
    }

    fn fleet() -> Fleet {
        Fleet {
            hosts: vec![host("src", Site::Source), host("dst", Site::Destination)],
            vms: vec![vm("a", Bytes::gib(1))],
        }
    }

    #[test]
    fn names_are_limited_to_a_safe_set() {
        for good in ["web-1", "db_2", "a.b", "X9"] {
            check_name(good).unwrap();
        }
        for bad in [
            "",
            "a/b",
            "a,b",
            "a b",
            "x/../../escaped",
            "..",
            ".hidden",
            "-x",
            "tab\t",
            "é",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name(&"a".repeat(65)).is_err());
        check_name(&"a".repeat(64)).unwrap();
        check_dir_name("dc \"one\" (test)").unwrap();
        for bad in ["x/../../escaped", "..", ".x", "a,b", "a\nb", "", "a\\b"] {
            assert!(check_dir_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn paths_name_the_entry_and_field() {
        let mut f = fleet();
        f.hosts[1].nic = BitsPerSec(0.0);
        let e = f.validate().unwrap_err();
        assert_eq!(e.path.to_string(), "host[1].nic");
        assert_eq!(
            e.to_string(),
            "field `host[1].nic`: a NIC of 0 bps carries nothing; give a rate above zero"
        );
        let mut f = fleet();
        f.vms[0].name = "a,b".into();
        assert_eq!(f.validate().unwrap_err().path.to_string(), "vm[0].name");
    }

    #[test]
    fn power_traces_are_in_order_and_on_sources_only() {
        let change = |at: u64, off: Option<u64>| crate::PowerChange {
            at: Duration::from_secs(at),
            power_off_at: off.map(Duration::from_secs),
        };
        let mut f = fleet();
        let source = f.hosts.iter().position(|h| h.site == Site::Source).unwrap();
        let destination = f.hosts.iter().position(|h| h.site == Site::Destination).unwrap();
        f.hosts[source].power_trace = vec![change(60, Some(600)), change(120, None)];
        f.validate().unwrap();
        f.hosts[source].power_trace = vec![change(120, Some(600)), change(60, None)];
        let e = f.validate().unwrap_err();
        assert_eq!(e.path.to_string(), format!("host[{source}].power_trace[1].at"));
        assert!(e.message.contains("out of order"), "{e}");
        let mut f = fleet();
        f.hosts[destination].power_trace = vec![change(60, Some(600))];
        let e = f.validate().unwrap_err();
        assert_eq!(e.path.to_string(), format!("host[{destination}].power_trace"));
    }

    #[test]
    fn memory_sums_do_not_wrap() {
        // 2^14 VMs of 1 PiB = 2^64 B: one more byte than u64 holds.
        let mut f = fleet();
        f.vms = (0..1 << 14)
            .map(|i| vm(&format!("v{i}"), Bytes(1 << 50)))
            .collect();
        let e = f.validate().unwrap_err();
        assert!(
            e.path.0.is_empty() && e.message.contains("18446744073709551616 B"),
            "{e}"
        );
        f.vms.pop();
        f.validate().unwrap();
    }

    #[test]
    fn network_bounds() {
        let net = Network {
            wan_bandwidth: BitsPerSec::gbps(1.0),
            wan_rtt: Duration::from_millis(50),
            tcp_window: Bytes::mib(4),
            wan_trace: Vec::new(),
        };
        net.validate().unwrap();
        let mut bad = net.clone();
        bad.tcp_window = Bytes(1);
        assert_eq!(bad.validate().unwrap_err().path.to_string(), "network.tcp_window");
        let mut bad = net.clone();
        bad.wan_rtt = Duration::from_secs(61);
        assert_eq!(bad.validate().unwrap_err().path.to_string(), "network.wan_rtt");
        let mut bad = net;
        bad.wan_bandwidth = BitsPerSec(f64::INFINITY);
        assert_eq!(
            bad.validate().unwrap_err().path.to_string(),
            "network.wan_bandwidth"
        );
    }
}
