//! Live progress: a snapshot of the run published on a watch channel.

use std::time::Duration;

use evac_controller::Phase;
use evac_model::{BitsPerSec, Bytes, BytesPerSec};

/// A snapshot of a run, published every control period and once at the end
/// through [`crate::RunOptions::progress`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunProgress {
    /// Since the run started driving migrations.
    pub elapsed: Duration,
    /// VMs in the fleet.
    pub total: usize,
    pub migrated: usize,
    /// Lost for good: their host powered off, or they failed `max_attempts` times.
    pub lost: usize,
    pub in_flight: usize,
    /// Neither done nor in flight.
    pub waiting: usize,
    /// Still on their source for good (given up, attempts exhausted), as
    /// opposed to `lost` with their host.
    pub not_migrated: usize,
    /// The WAN throughput measured over the last period.
    pub wan_throughput: BitsPerSec,
    /// The controller's limit on migrations at once ([`evac_controller::Controller::window`]).
    pub window: Option<usize>,
    /// One per migration in flight, in fleet order.
    pub migrations: Vec<FlightProgress>,
    /// One per source host, in fleet order: what is left on it and how long
    /// before it loses power.
    pub hosts: Vec<HostProgress>,
    /// Shutdown was asked for: the migrations in flight are being cancelled.
    pub stopping: bool,
    /// The last snapshot: the run is over and the counts are its result's
    /// (VMs that never migrated count as lost, nothing waits).
    pub finished: bool,
}

/// One migration in flight, as of its last observation.
#[derive(Debug, Clone, PartialEq)]
pub struct FlightProgress {
    pub vm: String,
    pub destination: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub phase: Phase,
    /// Precopy round, at least 1.
    pub round: u32,
    /// Sent by this attempt so far (rounds after the first send pages again,
    /// so this can exceed `memory`).
    pub bytes_sent: Bytes,
    /// Still to send in the current round.
    pub bytes_remaining: Bytes,
    /// The VM's memory.
    pub memory: Bytes,
    /// This migration's transfer rate as the backend measures it.
    pub rate: BitsPerSec,
    /// How fast the guest dirties memory, as the backend measures it.
    pub dirty_rate: BytesPerSec,
}

/// A source host: what is still on it and its time to power-off.
#[derive(Debug, Clone, PartialEq)]
pub struct HostProgress {
    pub name: String,
    /// Until its power-off (zero once past it); `None` when it has none.
    pub power_off_in: Option<Duration>,
    /// Its VMs waiting or in flight.
    pub vms_left: usize,
    /// The memory of its waiting VMs plus what the current round of each of
    /// its migrations in flight still has to send.
    pub bytes_left: Bytes,
}
