//! # evac-model
//!
//! The vocabulary every other evac crate speaks: quantities with units, and
//! the things an evacuation is made of.
//!
//! - [`units`]: [`Bytes`], [`BitsPerSec`], [`BytesPerSec`] and human-readable
//!   durations, parsed from and printed as `"4 GiB"`, `"1 Gbps"`, `"300 ms"`.
//! - [`Fleet`]: the [`Host`]s of the source and destination sites and the
//!   [`Vm`]s to evacuate, addressed by dense [`HostId`] and [`VmId`] indices.
//! - [`Network`]: the wide-area bottleneck between the sites, with its RTT,
//!   TCP window and optional piecewise-constant bandwidth trace.
//! - [`MigrationParams`]: the knobs of one precopy migration, as QEMU has them
//!   (downtime limit, bandwidth cap, parallel connections, live or offline).
//!
//! - [`memory`]: what a VM's memory holds and how its guest rewrites it
//!   ([`MemoryProfile`]), and the bytes that costs on the wire: the one
//!   byte model of the simulator, the planner and the bounds.
//! - [`validate`]: `validate()` on each of these types, the one wall every
//!   loader calls (see its page for the bounds).
//! - [`suggest`]: "did you mean" for a mistyped unit, policy or field.
//! - [`wall_clock`]: power-offs written as a time of day with its zone,
//!   resolved against the evacuation's start.
//!
//! This crate does no I/O and knows nothing of TOML, QEMU or the simulator.

mod connections;
pub mod memory;
pub mod suggest;
pub mod units;
pub mod validate;
pub mod wall_clock;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use connections::Connections;
pub use memory::{Compression, DirtyPoint, MemoryProfile};
pub use units::{format_duration, parse_duration, BitsPerSec, Bytes, BytesPerSec, ParseError};
pub use validate::{FieldPath, Invalid};

/// Index of a host in [`Fleet::hosts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub usize);

/// Index of a VM in [`Fleet::vms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmId(pub usize);

/// Which side of the evacuation a host is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Site {
    /// The data center being evacuated.
    Source,
    /// The safe site receiving VMs.
    Destination,
}

/// A physical machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub site: Site,
    /// The host's network interface; every migration from or to it shares it.
    pub nic: BitsPerSec,
    /// Room for incoming VMs (destination hosts); `None` is unbounded.
    pub memory: Option<Bytes>,
    /// When the host loses power, counted from the evacuation's start; every
    /// VM still on it (or still migrating away from it) is lost then.
    pub power_off_at: Option<Duration>,
    /// Source hosts: the CPU cores it can give migrations for compression,
    /// shared by its compressing migrations (see [`memory`]); `None`: each
    /// gets one core per connection.
    pub migration_cpus: Option<f64>,
    /// Announced changes of `power_off_at`, in order of `at` (empty: it
    /// never changes). Until the first change's `at`, `power_off_at` holds.
    pub power_trace: Vec<PowerChange>,
}

/// An announced change of a host's power-off: at `at` (from the
/// evacuation's start) the controller learns that the host now loses power
/// at `power_off_at` (also from the start; `None`: not at all, as when a
/// generator starts). A power-off at or before `at` means "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerChange {
    pub at: Duration,
    pub power_off_at: Option<Duration>,
}

/// A virtual machine to evacuate.
#[derive(Debug, Clone, PartialEq)]
pub struct Vm {
    pub name: String,
    /// The source host it runs on.
    pub host: HostId,
    pub memory: Bytes,
    /// How fast the guest writes to its memory.
    pub dirty_rate: BytesPerSec,
    /// The memory the guest keeps writing to; the most a round can dirty.
    pub working_set: Bytes,
    /// Weight of the VM in "how much was saved"; larger matters more.
    pub priority: u32,
    /// A destination pinned by the operator, if any.
    pub destination: Option<HostId>,
    /// Local disk bytes copied with the migration, ahead of the memory
    /// (libvirt's non-shared-disk migration); 0 when storage is shared.
    pub disk: Bytes,
    /// Its zero pages, how its other pages compress, and its dirty curve
    /// (see [`memory`]); the default is the model of `memory`,
    /// `dirty_rate` and `working_set` alone.
    pub profile: MemoryProfile,
}

impl Vm {
    /// Everything one migration of the VM must carry at least once: its
    /// local disks and its memory.
    pub fn bytes_to_move(&self) -> Bytes {
        self.disk + self.memory
    }
}

/// Both sites: every host and every VM to move.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fleet {
    pub hosts: Vec<Host>,
    pub vms: Vec<Vm>,
}

impl Fleet {
    pub fn host(&self, id: HostId) -> &Host {
        &self.hosts[id.0]
    }

    pub fn vm(&self, id: VmId) -> &Vm {
        &self.vms[id.0]
    }

    pub fn host_ids(&self) -> impl Iterator<Item = HostId> + '_ {
        (0..self.hosts.len()).map(HostId)
    }

    pub fn vm_ids(&self) -> impl Iterator<Item = VmId> + '_ {
        (0..self.vms.len()).map(VmId)
    }

    pub fn source_hosts(&self) -> impl Iterator<Item = HostId> + '_ {
        self.host_ids().filter(|&id| self.host(id).site == Site::Source)
    }

    pub fn destination_hosts(&self) -> impl Iterator<Item = HostId> + '_ {
        self.host_ids()
            .filter(|&id| self.host(id).site == Site::Destination)
    }

    pub fn total_memory(&self) -> Bytes {
        self.vms.iter().map(|vm| vm.memory).sum()
    }

    /// What the whole evacuation carries at least: every VM's disks and
    /// memory.
    pub fn total_bytes_to_move(&self) -> Bytes {
        self.vms.iter().map(Vm::bytes_to_move).sum()
    }
}

/// One step of a piecewise-constant bandwidth trace.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TracePoint {
    #[serde(with = "units::human_duration")]
    pub at: Duration,
    pub bandwidth: BitsPerSec,
}

/// The wide-area link between the sites.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub wan_bandwidth: BitsPerSec,
    pub wan_rtt: Duration,
    /// The largest TCP window a connection reaches; with the RTT it caps
    /// one connection at `tcp_window / wan_rtt`.
    pub tcp_window: Bytes,
    /// Capacity changes over time, sorted by `at`; before the first point
    /// (and with no trace) the capacity is `wan_bandwidth`.
    pub wan_trace: Vec<TracePoint>,
}

impl Network {
    /// The TCP window when none is given: roughly what Linux advertises at
    /// its default `net.ipv4.tcp_rmem` maximum (6 MiB of buffer, less the
    /// kernel's overhead).
    pub const DEFAULT_TCP_WINDOW: Bytes = Bytes(4 << 20);

    /// The round trip of a `[network]` table that gives none (a scenario's,
    /// an inventory's): LAN-like, so the window then limits nothing a WAN
    /// scenario would notice, and forgetting `wan_rtt` does not invent a
    /// bottleneck.
    pub const DEFAULT_RTT: Duration = Duration::from_millis(1);

    /// [`Network::DEFAULT_RTT`], for the formats' `#[serde(default = ..)]`.
    pub fn default_rtt() -> Duration {
        Self::DEFAULT_RTT
    }

    /// [`Network::DEFAULT_TCP_WINDOW`], for the formats' `#[serde(default = ..)]`.
    pub fn default_tcp_window() -> Bytes {
        Self::DEFAULT_TCP_WINDOW
    }

    /// The WAN's capacity at `t` from the evacuation's start.
    pub fn capacity_at(&self, t: Duration) -> BitsPerSec {
        self.wan_trace
            .iter()
            .take_while(|p| p.at <= t)
            .last()
            .map_or(self.wan_bandwidth, |p| p.bandwidth)
    }

    /// The highest capacity the WAN ever has.
    pub fn peak_capacity(&self) -> BitsPerSec {
        let mut peak = if self.wan_trace.first().is_some_and(|p| p.at.is_zero()) {
            BitsPerSec(0.0)
        } else {
            self.wan_bandwidth
        };
        for point in &self.wan_trace {
            peak = BitsPerSec(peak.0.max(point.bandwidth.0));
        }
        peak
    }

    /// The most one TCP connection carries: its window once per round trip.
    /// Unbounded when the RTT is zero.
    pub fn connection_cap(&self) -> BitsPerSec {
        if self.wan_rtt.is_zero() {
            BitsPerSec(f64::INFINITY)
        } else {
            BitsPerSec(self.tcp_window.as_f64() * 8.0 / self.wan_rtt.as_secs_f64())
        }
    }
}

/// How a VM's memory moves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Precopy: rounds while the guest runs, then a short stop-and-copy.
    #[default]
    Live,
    /// Pause, copy everything, resume at the destination.
    Offline,
    /// One precopy round, then one short pause after which the guest runs
    /// at the destination while its remaining pages follow. Nothing is
    /// re-sent, so it always converges; but from the switch until the last
    /// page arrives the guest's memory is split between the two hosts: a
    /// link or host failure in that window loses the VM.
    Postcopy,
}

/// The parameters of one migration, as QEMU's migration parameters have them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationParams {
    pub mode: Mode,
    /// The longest pause precopy aims for: stop-and-copy starts once the
    /// dirty bytes left can be sent within it.
    #[serde(with = "units::human_duration")]
    pub downtime_limit: Duration,
    /// After this many precopy rounds, stop-and-copy is forced.
    pub max_rounds: u32,
    /// Parallel TCP connections of the migration (QEMU's multifd channels,
    /// libvirt's parallel connections). `multifd_channels`, its name in
    /// scenarios before, is read too.
    #[serde(alias = "multifd_channels")]
    pub connections: Connections,
    /// Cap on the migration's rate; `None` is unlimited.
    #[serde(with = "max_bandwidth")]
    pub max_bandwidth: Option<BitsPerSec>,
    /// Throttle the guest's CPU when precopy does not converge (QEMU's
    /// auto-converge); used by the real backend.
    pub auto_converge: bool,
    /// Whether a policy may move a VM by postcopy ([`Mode::Postcopy`]) when
    /// precopy cannot converge in time. Off by default: postcopy risks the
    /// VM on a failure, and cannot run on file-backed shared guest RAM.
    pub allow_postcopy: bool,
    /// A fixed cost of every migration before its first byte moves: the
    /// destination QEMU starting, the QMP handshakes, the first dirty-bitmap
    /// sync. The model's, not the backend's (QEMU takes what it takes); 0 is
    /// the ideal model, the lab calibrated 30 ms together with `ramp_rtts` =
    /// 12 (docs/lab.md).
    #[serde(with = "units::human_duration")]
    pub setup_time: Duration,
    /// Round trips of the WAN every migration loses while its TCP
    /// connections ramp up (slow start, the receivers' buffers autotuning
    /// up to `tcp_window`): the model adds `ramp_rtts × wan_rtt` to the
    /// migration's setup, a cost that grows with the RTT. Model only, like
    /// `setup_time`; 0 is the ideal model, the lab calibrated 12
    /// (docs/lab.md, `examples/calibrate.rs`).
    pub ramp_rtts: f64,
    /// Round trips of the WAN a migration loses more when it starts while
    /// the WAN is full: its connections' slow start ends at the first loss
    /// from the standing queue, then they grow to their share over many
    /// round trips while the connections already there keep more than
    /// theirs. The model adds `join_rtts × wan_rtt` to such a migration's
    /// setup (a migration that starts on a WAN with room, or with others at
    /// the same instant, pays nothing), cut short once the WAN has room
    /// again. Model only; 0 is the ideal model.
    #[serde(default)]
    pub join_rtts: f64,
    /// How pages are sent: as they are, compressed with zstd, or per VM
    /// whichever is faster ([`Compression`]).
    pub compression: Compression,
    /// How much non-zero memory one core compresses per second with zstd
    /// (QEMU's multifd zstd at its default level 1); with a host's
    /// `migration_cpus`, what caps a compressing migration.
    pub zstd_rate_per_core: BytesPerSec,
}

impl Default for MigrationParams {
    fn default() -> Self {
        Self {
            mode: Mode::Live,
            downtime_limit: Duration::from_millis(300),
            max_rounds: 30,
            connections: Connections::ONE,
            max_bandwidth: None,
            auto_converge: false,
            allow_postcopy: false,
            setup_time: Duration::ZERO,
            ramp_rtts: 0.0,
            join_rtts: 0.0,
            compression: Compression::None,
            zstd_rate_per_core: DEFAULT_ZSTD_RATE_PER_CORE,
        }
    }
}

/// The compression rate per core when none is given: 250 MB/s of memory,
/// the "one core per about 1 Gbit/s of output" at a ratio of 2.
pub const DEFAULT_ZSTD_RATE_PER_CORE: BytesPerSec = BytesPerSec(250e6);

/// `max_bandwidth = "unlimited"` or a bit rate.
mod max_bandwidth {
    use super::BitsPerSec;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(cap: &Option<BitsPerSec>, s: S) -> Result<S::Ok, S::Error> {
        match cap {
            Some(rate) => s.collect_str(rate),
            None => s.serialize_str("unlimited"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BitsPerSec>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim() == "unlimited" {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|e| D::Error::custom(format!("{e}; or \"unlimited\"")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_units_of_the_scenario_format() {
        assert_eq!("4 GiB".parse::<Bytes>().unwrap(), Bytes(4 << 30));
        assert_eq!("512MiB".parse::<Bytes>().unwrap(), Bytes(512 << 20));
        assert_eq!("1.5 KB".parse::<Bytes>().unwrap(), Bytes(1500));
        assert_eq!("1 Gbps".parse::<BitsPerSec>().unwrap(), BitsPerSec(1e9));
        assert_eq!("400 Mbps".parse::<BitsPerSec>().unwrap(), BitsPerSec(4e8));
        assert_eq!("20 MB/s".parse::<BytesPerSec>().unwrap(), BytesPerSec(2e7));
        assert_eq!("1 MiB/s".parse::<BytesPerSec>().unwrap(), BytesPerSec(1048576.0));
        assert_eq!(parse_duration("300 ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("15 min").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1.5 h").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn refuses_wrong_units_and_negative_values() {
        assert!("4 Gbps".parse::<Bytes>().is_err());
        assert!("1 GB".parse::<BitsPerSec>().is_err());
        assert!("1 Gbps".parse::<BytesPerSec>().is_err());
        assert!("-1 GiB".parse::<Bytes>().is_err());
        assert!(parse_duration("3").is_err());
        let message = "4 GB/s".parse::<Bytes>().unwrap_err().to_string();
        assert!(message.contains("4 GB/s") && message.contains("GiB"), "{message}");
    }

    #[test]
    fn bits_and_bytes_convert_by_eight() {
        assert_eq!(BitsPerSec(8e9).to_bytes_per_sec(), BytesPerSec(1e9));
        assert_eq!(BytesPerSec(1e6).to_bits_per_sec(), BitsPerSec(8e6));
        assert_eq!(Bytes(1_000_000) / BytesPerSec(500_000.0), Duration::from_secs(2));
    }

    #[test]
    fn display_round_trips() {
        for text in ["4 GiB", "1.5 MiB", "1 Gbps", "400 Mbps", "20 MB/s"] {
            let bytes = text.parse::<Bytes>().map(|b| b.to_string());
            let bits = text.parse::<BitsPerSec>().map(|b| b.to_string());
            let rate = text.parse::<BytesPerSec>().map(|b| b.to_string());
            let printed = bytes.or(bits).or(rate).unwrap();
            assert_eq!(printed, text);
        }
        assert_eq!(format_duration(Duration::from_millis(300)), "300 ms");
        assert_eq!(format_duration(Duration::from_secs(900)), "15 min");
    }

    #[test]
    fn trace_lookup_is_piecewise_constant() {
        let network = Network {
            wan_bandwidth: BitsPerSec::gbps(1.0),
            wan_rtt: Duration::from_millis(50),
            tcp_window: Bytes::mib(4),
            wan_trace: vec![TracePoint {
                at: Duration::from_secs(120),
                bandwidth: BitsPerSec::mbps(400.0),
            }],
        };
        assert_eq!(
            network.capacity_at(Duration::from_secs(119)),
            BitsPerSec::gbps(1.0)
        );
        assert_eq!(
            network.capacity_at(Duration::from_secs(120)),
            BitsPerSec::mbps(400.0)
        );
        assert_eq!(network.peak_capacity(), BitsPerSec::gbps(1.0));
        // 4 MiB per 50 ms = 4 * 1048576 * 8 / 0.05 bits/s.
        assert_eq!(network.connection_cap(), BitsPerSec(671_088_640.0));
    }

    proptest::proptest! {
        #[test]
        fn any_whole_size_in_bytes_parses_back(n in 0u64..1 << 50) {
            proptest::prop_assert_eq!(format!("{n} B").parse::<Bytes>().unwrap(), Bytes(n));
        }
    }
}
