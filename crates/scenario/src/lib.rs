//! # evac-scenario
//!
//! Reads a scenario file: the hosts and VMs of an evacuation, the WAN
//! between the two sites, how each migration is run, and how the controller
//! decides. A scenario is checked in full before anything runs: a bad file
//! is refused with its path, the line, the field and what was expected:
//!
//! ```text
//! scenarios/x.toml:12: field `memory` of [[vm]] "web-1": `4 GB/s` is not a size like "4 GiB" (units: B KB MB GB TB KiB MiB GiB TiB)
//! ```
//!
//! [`Scenario::from_path`] reads a file, [`Scenario::from_toml_str`] a text,
//! and [`Scenario::embedded_default`] is an evacuation worth looking at
//! that ships inside the binary (`scenarios/default.toml`).
//!
//! ## The format
//!
//! ```toml
//! name = "two-site evacuation"     # default: the file's name
//! seed = 42                        # drives generated VMs; default 0 (at most 2^63 - 1, TOML's largest integer)
//! start = "2026-12-06T13:50:00Z"   # optional: the evacuation's start on the wall clock, against which
//!                                  # power-offs given as times count; default: when the file is read
//!
//! [network]
//! wan_bandwidth = "1 Gbps"         # source site -> destination site bottleneck (required)
//! wan_rtt = "50 ms"                # default 1 ms
//! tcp_window = "4 MiB"             # default 4 MiB; one TCP connection carries at most tcp_window / wan_rtt
//! wan_trace = [ { at = "0 s", bandwidth = "1 Gbps" }, { at = "120 s", bandwidth = "400 Mbps" } ]
//!                                  # optional, piecewise constant, `at` strictly increasing;
//!                                  # before the first point the WAN has wan_bandwidth
//!
//! [migration]                      # optional, as is each field; the values shown are the defaults
//! mode = "live"                    # live (precopy) | offline | postcopy
//! downtime_limit = "300 ms"
//! max_rounds = 30                  # then forced stop-and-copy
//! connections = 1                  # parallel TCP connections per migration
//! max_bandwidth = "unlimited"      # per-migration cap, like QEMU's max-bandwidth
//! auto_converge = false
//! allow_postcopy = false           # a policy (deadline) may switch a late precopy to postcopy
//! setup_time = "0 s"               # fixed cost of each migration before its first byte (model only;
//!                                  # calibrated in the lab at 30 ms: docs/lab.md)
//! ramp_rtts = 0                    # WAN round trips each migration loses to TCP ramp-up, added to
//!                                  # its setup (model only; calibrated in the lab at 12: docs/lab.md)
//! join_rtts = 0                    # round trips more for a migration that starts while the WAN is
//!                                  # full: joining connections take their share slowly (model only)
//! compression = "none"             # none | zstd | auto (per VM, whichever sends it faster)
//! zstd_rate_per_core = "250 MB/s"  # memory one core compresses per second
//!
//! [controller]                     # optional, as is each field (see evac_controller::ControllerConfig);
//!                                  # the values shown are the defaults
//! policy = "sequential"            # sequential | parallel | static | aimd-local | aimd-global | deadline
//! period = "1 s"                   # 1 ms ..= 1 h, and at most 10,000,000 periods in the horizon
//! horizon = "168 h"                # simulated time after which the run ends, the VMs not yet
//!                                  # migrated `not-migrated` ("horizon reached"); default a week
//!
//! [[host]]
//! name = "src-1"
//! site = "source"                  # source | destination
//! nic = "10 Gbps"
//! power_off_at = "15 min"          # optional, source hosts only: VMs still there then are lost;
//!                                  # a duration from the start, or a time with its zone (RFC 3339,
//!                                  # quoted or bare): "2026-12-06T14:30:00+01:00"; a time already
//!                                  # past at the start means now
//! power_trace = [                  # optional, source hosts only: the power-off changes during the
//!   { at = "5 min", power_off_at = "12 min" },   # evacuation; at `at` (from the start) the
//!   { at = "9 min", power_off_at = "none" },     # controller learns the new power-off (a duration
//! ]                                # or a time, as above; "none" or absent: no power-off any more);
//!                                  # `at` strictly increasing
//! migration_cpus = 2               # optional: cores for compressing migrations (default: one per connection)
//!
//! [[host]]
//! name = "dst-1"
//! site = "destination"
//! nic = "10 Gbps"
//! memory = "512 GiB"               # destination hosts only: room for incoming VMs (default unbounded)
//!
//! [[vm]]
//! name = "web-1"
//! host = "src-1"                   # a source host
//! memory = "4 GiB"
//! dirty_rate = "20 MB/s"           # default 0
//! working_set = "512 MiB"          # default = memory; at most memory
//! priority = 1                     # default 1; larger matters more
//! destination = "dst-1"            # optional pin to a destination host
//! disk = "20 GiB"                  # default 0: local disks copied ahead of the memory (at most 1 PiB)
//! zero_fraction = 0.6              # default 0: share of zero pages (a 9-byte header each on the wire)
//! compression_ratio = 2            # default 1 (>= 1): zstd ratio of the other pages
//! # dirty_curve = [{ after = "1 s", dirtied = "0.46 GiB" }, { after = "10 s", dirtied = "1.75 GiB" }]
//! #                                # instead of dirty_rate + working_set (evac_model::memory)
//!
//! [[vm_group]]                     # many VMs at once, named <prefix>-1 ... <prefix>-<count>
//! prefix = "batch"
//! count = 100
//! host = "round-robin"             # or one source host's name; round-robin goes over
//!                                  # the source hosts in file order: batch-1 on the first
//! memory = { dist = "uniform", min = "1 GiB", max = "8 GiB" }
//! dirty_rate = "10 MB/s"           # default 0
//! working_set = "256 MiB"          # default = memory; clipped to each VM's memory
//! priority = 1
//! destination = "dst-1"            # optional, as for [[vm]]
//! ```
//!
//! The fleet lists the hosts in file order, then the VMs of the `[[vm]]`
//! and `[[vm_group]]` entries in file order. Names of hosts must be unique,
//! and so must those of VMs, generated ones included.
//!
//! ### Units
//!
//! | quantity | units |
//! |---|---|
//! | size | `B KB MB GB TB` (powers of 1000), `KiB MiB GiB TiB` (powers of 1024) |
//! | bit rate | `bps Kbps Mbps Gbps Tbps` (powers of 1000) |
//! | byte rate | `B/s KB/s MB/s GB/s` (powers of 1000), `KiB/s MiB/s GiB/s` (powers of 1024) |
//! | duration | `us ms s min h` |
//!
//! Networks are quoted in bits, memory and dirty rates in bytes; writing one
//! for the other is an error, not a silent factor of eight.
//!
//! Every quantity is 0 or within a sane range (a typo is likelier than
//! anything outside it): sizes 1 B ..= 1 PiB, bit rates 1 bps ..= 1000 Tbps,
//! byte rates 1 B/s ..= 125000 GB/s, durations 1 us ..= 87660 h (10 years).
//! The `weights` of a `choice` are finite, at least 0, with a finite sum.
//!
//! ### Distributions
//!
//! The `memory`, `dirty_rate`, `working_set`, `disk`, `zero_fraction` and
//! `compression_ratio` of a `[[vm_group]]` are a
//! fixed quantity or a distribution each VM draws from:
//!
//! ```toml
//! memory = { dist = "uniform", min = "1 GiB", max = "8 GiB" }
//! memory = { dist = "lognormal", median = "2 GiB", sigma = 0.8 }               # optional min, max clamps
//! memory = { dist = "choice", values = ["1 GiB", "4 GiB"], weights = [3, 1] }  # weights optional
//! ```
//!
//! Drawn sizes are rounded to whole MiB and drawn rates to whole B/s (then
//! kept within `min` and `max`); a `choice` yields its values as written.
//! Draws come from ChaCha8 keyed by `seed`, with a stream of its own for
//! each group and quantity: the same file and seed always give the same
//! fleet, and adding a group or a distribution leaves every other draw as
//! it was.
//!
//! ### What is refused
//!
//! Every value goes through the model's one wall, `validate()` on the
//! model's types (see `evac_model::validate` for the bounds: names of
//! `A-Z a-z 0-9 . _ -` only, a TCP window of 1 KiB ..= 1 GiB, an RTT of at
//! most 1 min, at most 255 connections and 10,000 rounds, ...), which
//! sweeps and inventories call too. Besides malformed TOML, unknown keys (in every table), missing required
//! fields and values of the wrong type or unit: no source or no destination
//! host; duplicate host or VM names; a VM or group on an unknown host or a
//! destination host; a pinned destination that is unknown or a source host;
//! `power_off_at` on a destination host (only source hosts lose power in
//! this model) or `memory` on a source host; a zero NIC, WAN bandwidth, TCP
//! window, trace bandwidth, bandwidth cap, VM memory or destination memory;
//! a trace whose `at` values are out of order; a `[[vm]]` whose working set
//! exceeds its memory; a group of `count = 0` (or over a million); `connections = 0`;
//! `max_rounds = 0` in live mode; a controller period or in-flight limit of
//! 0; a VM larger than every destination's room (or than its pinned
//! destination's), VMs pinned to a destination beyond its room, and VMs
//! whose memory in all exceeds that of the destinations when every
//! destination's room is bounded.

mod error;
mod load;
pub mod locate;
mod raw;
mod spec;
mod split;

use std::path::Path;

use evac_controller::ControllerConfig;
use evac_model::{Fleet, Invalid, MigrationParams, Network};

pub use error::{Location, ScenarioError};

/// The text of the embedded default scenario, `scenarios/default.toml`.
pub const DEFAULT_SCENARIO_TOML: &str = include_str!("../../../scenarios/default.toml");

/// How error messages name the embedded default scenario.
const EMBEDDED_ORIGIN: &str = "<embedded default>";

/// Everything an evacuation run needs to know, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// Drives the generated VMs (and any other randomness of a run).
    pub seed: u64,
    pub network: Network,
    pub migration: MigrationParams,
    pub controller: ControllerConfig,
    /// Hosts in file order, then VMs: `[[vm]]` entries and `[[vm_group]]`
    /// expansions in file order.
    pub fleet: Fleet,
}

impl Scenario {
    /// Reads and checks the scenario file at `path`.
    pub fn from_path(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Reads and checks a scenario from its text. `origin` names the text in
    /// error messages (a file path, or `"<embedded default>"`).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        load::load(text, origin)
    }

    /// [`Scenario::from_toml_str`], a file without its own `start` taken
    /// to start at `start` (power-offs given as times count from it): a
    /// sweep reads its base once per seed, and each must mean the same
    /// deadlines.
    pub fn from_toml_str_at(
        text: &str,
        origin: &str,
        start: evac_model::wall_clock::Timestamp,
    ) -> Result<Scenario, ScenarioError> {
        load::load_at(text, origin, start)
    }

    /// Checks every value through the model's one wall
    /// ([`evac_model::validate`]): the network, the migration parameters,
    /// the controller and the fleet. Loading a file does this; a scenario
    /// changed in code (a sweep's combination, `evac plan`'s measured one)
    /// calls it again. The path of a refusal is the model's (`vm[i]` counts
    /// the fleet's VMs).
    pub fn validate(&self) -> Result<(), Invalid> {
        self.network.validate()?;
        self.migration.validate()?;
        self.controller.validate()?;
        self.fleet.validate()
    }

    /// The embedded default scenario: [`DEFAULT_SCENARIO_TOML`].
    pub fn embedded_default() -> Scenario {
        Self::from_toml_str(DEFAULT_SCENARIO_TOML, EMBEDDED_ORIGIN)
            .unwrap_or_else(|error| panic!("the embedded default scenario is valid: {error}"))
    }
}
