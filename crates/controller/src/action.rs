//! Actions out: what the controller asks a driver to do, and when it next
//! wants to be consulted (its clock, as smoltcp's `PollAt`).

use std::time::Duration;

use evac_model::{BitsPerSec, HostId, MigrationParams, VmId};

/// What the controller asks a driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Start {
        vm: VmId,
        destination: HostId,
        params: MigrationParams,
    },
    /// Change a parameter of a migration in flight.
    Retune { vm: VmId, change: Retune },
    /// Pause the guest and send the rest of its memory in one go.
    SwitchToOffline { vm: VmId },
    /// Resume the guest at the destination after one short pause, its
    /// remaining pages following (QEMU's `migrate-start-postcopy`); only for
    /// a migration started ready for it: with [`evac_model::Mode::Postcopy`],
    /// or live with `allow_postcopy`.
    SwitchToPostcopy { vm: VmId },
    /// Abandon the migration; the VM keeps running on its source.
    Cancel { vm: VmId },
}

/// A parameter a migration in flight can have changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retune {
    MaxBandwidth(Option<BitsPerSec>),
    DowntimeLimit(Duration),
    AutoConverge(bool),
}

impl Retune {
    /// The migration's parameters with this change: the one place a retune
    /// is applied (the simulator's flows and the run loop's attempts both
    /// keep their parameters by it).
    pub fn apply(self, params: &mut MigrationParams) {
        match self {
            Retune::MaxBandwidth(cap) => params.max_bandwidth = cap,
            Retune::DowntimeLimit(limit) => params.downtime_limit = limit,
            Retune::AutoConverge(on) => params.auto_converge = on,
        }
    }
}

/// When a controller next needs to be consulted if nothing happens in the
/// meantime (no migration ends, no host loses power): its own clock, as
/// quinn-proto's `poll_timeout` is a connection's.
///
/// A driver consults the controller whenever a migration ends (or is lost)
/// whatever this says; the wakeup only decides the ticks in between. A
/// driver that ticks more often than asked (the QEMU backend ticks every
/// period) is still correct: the controller only wastes a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wakeup {
    /// At the next instant of the driver's periodic grid (0, period,
    /// 2 × period, ...): today's periodic controller, the default.
    #[default]
    NextPeriod,
    /// At this instant (from the evacuation's start), or at once if past.
    At(Duration),
    /// Only when something happens: nothing changes for this controller
    /// with time alone.
    OnEvent,
}
