//! A migration in flight ([`Flow`]) and what the simulator keeps of each VM
//! ([`VmProgress`]); the event a round's end is in the queue ([`RoundEnd`]).

use std::time::Duration;

use evac_controller::Phase;
use evac_model::{BytesPerSec, HostId, MigrationParams, Mode, VmId};

use crate::fair_share::Demand;
use crate::fluid::Clock;

/// A migration in flight.
#[derive(Debug, Clone)]
pub(crate) struct Flow {
    pub(crate) vm: VmId,
    pub(crate) source: HostId,
    pub(crate) destination: HostId,
    pub(crate) params: MigrationParams,
    pub(crate) phase: Phase,
    /// Precopy rounds started so far.
    pub(crate) round: u32,
    pub(crate) started_at: f64,
    /// `started_at` as the controller is told it, made once: converted at
    /// every consultation it was 2 % of a million-VM run.
    pub(crate) started: Duration,
    pub(crate) round_started_at: f64,
    /// Bytes this round (or the stop-and-copy) sends.
    pub(crate) round_bytes: f64,
    /// Bytes of this round sent by `as_of`.
    pub(crate) round_sent: f64,
    /// Bytes of earlier rounds.
    pub(crate) earlier_rounds: f64,
    pub(crate) as_of: f64,
    /// Current rate, bytes per second (unless `fluid`).
    pub(crate) rate: f64,
    /// Progress kept in virtual time: `weight × (V - v_as_of)` more bytes
    /// since `v_as_of`, the round's end in the virtual heap.
    pub(crate) fluid: bool,
    pub(crate) v_as_of: f64,
    /// Rounds run as one event: see [`Chain`].
    pub(crate) chain: Option<Chain>,
    /// The rebalance epoch in which it started sending: until the next
    /// rebalance it has no rate yet, as in a full solve.
    pub(crate) joined: u64,
    pub(crate) demand: Demand,
    /// Bumped whenever the round's end time changes, to spot stale events.
    pub(crate) generation: u64,
    pub(crate) paused_at: Option<f64>,
    /// What it sends now: see [`Stage`].
    pub(crate) stage: Stage,
    /// The wire bytes of the VM's memory in one pass and its dirty rate,
    /// copied from the fleet: every consultation reports them for every
    /// flow, and the fleet's records of a million VMs are a cache miss
    /// each.
    pub(crate) memory: f64,
    pub(crate) dirty_rate: BytesPerSec,
    /// Its non-zero pages go compressed (zstd), decided at its start
    /// ([`evac_model::memory::compresses`]); postcopy's pages never are.
    pub(crate) compressed: bool,
    /// Wire bytes per byte of memory in the first pass, and per byte of
    /// dirtied memory re-sent ([`evac_model::MemoryProfile`]).
    pub(crate) first_wire: f64,
    pub(crate) resend_wire: f64,
}

impl Flow {
    /// Brings the round's progress up to `now`, when the virtual clock reads
    /// `v`.
    pub(crate) fn catch_up(&mut self, now: f64, v: f64) {
        self.round_sent = self.round_sent_at(now, v);
        self.as_of = now;
        self.v_as_of = v;
    }

    pub(crate) fn round_sent_at(&self, now: f64, v: f64) -> f64 {
        let more = if self.fluid {
            self.demand.weight * (v - self.v_as_of)
        } else {
            self.rate * (now - self.as_of)
        };
        (self.round_sent + more).min(self.round_bytes)
    }

    pub(crate) fn rate_at(&self, clock: &Clock, epoch: u64) -> f64 {
        if self.fluid && self.joined != epoch {
            self.demand.weight * clock.lambda
        } else {
            self.rate
        }
    }

    /// In its setup time a flow sends nothing, and is no weight on a link.
    pub(crate) fn sending(&self) -> bool {
        !matches!(self.stage, Stage::SettingUp { .. })
    }

    /// Where the virtual clock will read when the round ends.
    pub(crate) fn virtual_end(&self) -> f64 {
        self.v_as_of + (self.round_bytes - self.round_sent).max(0.0) / self.demand.weight
    }

    pub(crate) fn round_ends_at(&self) -> f64 {
        if let Stage::SettingUp { ready_at, .. } = self.stage {
            return ready_at;
        }
        let left = self.round_bytes - self.round_sent;
        if left <= 0.0 {
            self.as_of
        } else if self.rate > 0.0 {
            self.as_of + left / self.rate
        } else {
            f64::INFINITY
        }
    }

    /// Whether its host's CPU limits it now: compressing memory (not the
    /// disk, which goes as it is), sending.
    pub(crate) fn compressing(&self) -> bool {
        self.compressed && self.stage == Stage::Memory
    }

    /// Whether the bytes in flight are the first pass of the memory (its
    /// zero pages among them), or dirtied pages re-sent.
    pub(crate) fn first_pass(&self) -> bool {
        self.round <= 1 && matches!(self.phase, Phase::Precopy | Phase::Offline)
    }

    pub(crate) fn sent(&self) -> f64 {
        self.earlier_rounds + self.round_sent
    }

    /// The bytes after this round that are certain to go: the memory's
    /// first pass while the disk is being copied.
    pub(crate) fn queued_after_round(&self) -> f64 {
        if self.disk_pending() {
            self.memory
        } else {
            0.0
        }
    }
}

/// What a migration sends, in the order it goes through these: the
/// stage changes only in [`Flow::stage_done`] (and a switch to offline
/// while the disks go, which sends them with the memory in one copy).
/// Within [`Stage::Memory`], `Flow::phase` says how (rounds, the paused
/// copy, offline, postcopy).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Stage {
    /// Its `setup_time` (and TCP ramp), until `ready_at`: no rate, no round
    /// yet; then the disks if `disk_first`, else the memory. The last
    /// `joining` seconds of it are the cost of joining a full WAN
    /// (`join_rtts`), which ends as soon as the WAN has room (see
    /// `Simulation::end_joins`).
    SettingUp {
        ready_at: f64,
        disk_first: bool,
        joining: f64,
    },
    /// The local disks (`round_bytes` is the disk), before round 1 of
    /// memory; their writes are mirrored from then on.
    CopyingDisk,
    /// The memory.
    Memory,
}

impl Flow {
    /// The stage under way is over: the next one begins.
    pub(crate) fn stage_done(&mut self) {
        self.stage = match self.stage {
            Stage::SettingUp { disk_first: true, .. } => Stage::CopyingDisk,
            Stage::SettingUp { .. } | Stage::CopyingDisk | Stage::Memory => Stage::Memory,
        };
    }

    /// Whether the disks are still to go before the memory (being copied,
    /// or to be once the setup is over).
    pub(crate) fn disk_pending(&self) -> bool {
        matches!(
            self.stage,
            Stage::CopyingDisk | Stage::SettingUp { disk_first: true, .. }
        )
    }

    /// The disks go with the memory, in one copy (a switch to offline):
    /// no disk stage any more, a setup under way goes on.
    pub(crate) fn skip_disk(&mut self) {
        self.stage = match self.stage {
            Stage::SettingUp {
                ready_at, joining, ..
            } => Stage::SettingUp {
                ready_at,
                disk_first: false,
                joining,
            },
            Stage::CopyingDisk | Stage::Memory => Stage::Memory,
        };
    }
}

/// Precopy rounds of a flow in the fluid model that are certain to go the
/// same way, run as one event: once the guest has dirtied its whole working
/// set `ws` during a round, every next round sends `ws` bytes (`ws / weight`
/// of virtual time) and, while `λ` stays at most `limit`, lasts long enough
/// for the guest to dirty `ws` again and too long to converge
/// (`ws / rate > downtime_limit`), up to `max_rounds`. So rounds
/// `round ..= max_rounds` end at one virtual instant, `start_v + rounds × ws
/// / weight`, with the stop-and-copy of `ws` to follow, and nothing in
/// between can be observed by a controller that reads no progress. If `λ`
/// rises above `limit` (or the controller acts on the flow, or the fluid
/// model ends), the chain is cut where the clock is: the rounds done are
/// counted and the one under way runs on as any other.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chain {
    /// `V` when the chain's first round began.
    pub(crate) start_v: f64,
    pub(crate) rounds: u32,
    pub(crate) limit: f64,
}

/// A round's end, in the event queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RoundEnd {
    pub(crate) at: f64,
    pub(crate) vm: VmId,
    pub(crate) generation: u64,
}

impl Eq for RoundEnd {}
impl PartialOrd for RoundEnd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for RoundEnd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.total_cmp(&other.at).then(self.vm.cmp(&other.vm))
    }
}

/// What became of a VM so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct VmProgress {
    pub(crate) destination: Option<HostId>,
    pub(crate) start: Option<f64>,
    pub(crate) end: Option<f64>,
    pub(crate) downtime: Option<f64>,
    pub(crate) rounds: Option<u32>,
    /// Its last attempt's mode (as switched) and connections.
    pub(crate) mode: Option<Mode>,
    pub(crate) connections: Option<u32>,
    /// Whether its last attempt compressed.
    pub(crate) compressed: Option<bool>,
    /// Bytes sent over all attempts.
    pub(crate) sent: f64,
    pub(crate) migrated: bool,
    pub(crate) lost: bool,
}
