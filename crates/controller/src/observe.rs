//! Events in: what a driver measured and tells the controller at each tick.

use std::time::Duration;

use evac_model::{BitsPerSec, Bytes, BytesPerSec, HostId, MigrationParams, VmId};
use serde::Serialize;

/// What a driver measured, handed to the controller at every tick.
///
/// A driver fills this as a real deployment can: from its own counters, with
/// no access to the true capacity of the network.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Time since the evacuation started.
    pub now: Duration,
    /// Migrations that ended since the previous tick.
    pub ended: Vec<Ended>,
    /// Every migration in flight (may be empty for a controller whose
    /// [`Controller::needs_progress`](crate::Controller::needs_progress) is false).
    pub migrations: Vec<MigrationObs>,
    /// Cumulative bytes each host's NIC has sent, indexed by [`HostId`].
    pub host_tx: Vec<Bytes>,
    /// Cumulative bytes carried across the WAN.
    pub wan_bytes: Bytes,
    /// The hosts whose `host_tx` may have changed since the previous
    /// observation, if the driver knows (the simulator does); `None`: any
    /// may have. With tens of thousands of hosts and a handful sending, this
    /// keeps the per-period throughput measurement O(hosts sending).
    pub tx_changed: Option<Vec<HostId>>,
    /// This is one of the driver's periodic ticks (not one a migration's
    /// end caused). The controller measures the period's throughput at
    /// such a tick even if it comes a little less than a period after the
    /// last measurement: a real driver stamps an observation with the time
    /// its counters were read, which moves with how long the reading took
    /// (the run loop's QMP queries: a few ms either way), so two periodic
    /// ticks can be 0.4957 s apart with a 0.5 s period, and a measurement
    /// skipped for that made an AIMD window move a period late in the lab
    /// where the simulation moved it on time. The simulator's ticks are
    /// exact and leave it `false` (the period's length decides).
    pub periodic: bool,
    /// Power-offs announced since the last tick: as of now, this host loses
    /// power at this time from the start (`None`: not at all). The only way
    /// the controller learns of a change (the simulator announces a
    /// scenario's `power_trace`; a real run, an edited inventory or a UPS).
    /// A driver lists each change once.
    pub power_changes: Vec<(HostId, Option<Duration>)>,
}

/// A migration that ended, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub vm: VmId,
    pub outcome: EndOutcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EndOutcome {
    /// The VM runs at its destination.
    Completed,
    /// The migration failed or was cancelled; the VM still runs on its
    /// source and may be tried again.
    Failed { reason: String },
    /// The source host lost power: the VM is gone.
    Lost,
}

/// Where a migration is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Live precopy rounds while the guest runs.
    Precopy,
    /// The guest is paused and the last dirty bytes are sent.
    StopAndCopy,
    /// Offline migration: paused from the start.
    Offline,
    /// Postcopy: the guest runs at the destination and its remaining pages
    /// follow; a failure now loses the VM.
    Postcopy,
}

/// The progress of one migration in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationObs {
    pub vm: VmId,
    /// The host it leaves (the VM's host in the fleet, carried here so a
    /// policy reading every migration at every consultation need not look
    /// each VM up).
    pub source: HostId,
    pub destination: HostId,
    pub phase: Phase,
    /// Precopy round, starting at 1.
    pub round: u32,
    pub started_at: Duration,
    /// Bytes sent so far, all rounds together.
    pub bytes_sent: Bytes,
    /// Bytes left in the current round (QEMU's `ram.remaining`).
    pub bytes_remaining: Bytes,
    /// The rate the migration runs at now.
    pub rate: BitsPerSec,
    /// How fast the guest dirties memory, as measured.
    pub dirty_rate: BytesPerSec,
    pub params: MigrationParams,
}
