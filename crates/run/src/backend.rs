//! The backend trait: what the run loop needs of a virtualization platform.
//!
//! ## The model
//!
//! A backend knows a [`Fleet`] (hosts and VMs, VM memory as the platform
//! reports it; [`VmId`] and [`HostId`] index its vectors) and can start a
//! live migration of one VM to one destination host. The run loop owns
//! everything else: the clock, the controller, attempts and retries,
//! power-off deadlines, shutdown, progress and the result. A backend holds
//! no policy and makes no decision.
//!
//! The loop calls, once per control period (and whenever a backend
//! [`Wake`]s it):
//!
//! 1. [`Migration::observe`] on every migration in flight, **all at once**
//!    (concurrently), each bounded by [`crate::OBSERVE_TIMEOUT`]: a call that
//!    does not answer in time counts as "no news" (the last observation is
//!    reused) and the tick goes on. Never block a thread in these futures:
//!    put blocking client calls on `tokio::task::spawn_blocking`.
//! 2. [`Backend::host_tx`], bounded the same way.
//! 3. The controller; then, for each of its actions, [`Backend::start`],
//!    [`Migration::retune`], [`Migration::switch_to_offline`],
//!    [`Migration::switch_to_postcopy`] or [`Migration::cancel`], each
//!    bounded by [`crate::ACTION_TIMEOUT`].
//!
//! ## A migration's life
//!
//! [`Backend::start`] is synchronous and must return at once: it hands the
//! work (prepare the destination, set parameters, begin sending) to a task
//! of its own and returns the [`Migration`] handle. Until the platform is
//! sending, `observe` says [`Observed::Starting`]; then
//! [`Observed::Running`] with the progress; and exactly one terminal answer:
//! [`Observed::Completed`] (the VM runs at the destination, the source is
//! gone) or [`Observed::Failed`] (the VM still runs on its source, unpaused:
//! **a failed or cancelled migration leaves the VM running where it was**).
//! After a terminal answer the loop drops the handle. A start that fails
//! at once (a destination that cannot be reached) is an `Observed::Failed`
//! on the first `observe`, not an error of `start`.
//!
//! `cancel` asks for the end of the migration; the handle later reports
//! `Failed` (reason "cancelled"), or `Completed` if it finished first. A
//! cancel, retune or switch to offline is a request: return once it is
//! delivered (or refused, as `Err` with a short reason the loop logs).
//!
//! Completion may also be pushed: call [`Wake::wake`] (a clone of the one
//! in the [`StartRequest`]) when a migration ends, so the loop observes
//! without waiting for the next period.
//!
//! ## Restarts
//!
//! Before each start the loop journals [`Backend::reconnect_info`]; after a
//! crash of evac, `--resume` calls [`Backend::adopt`] with it for every
//! attempt that was started and had not ended. The migrations themselves
//! must outlive evac (a destination process in its own process group or
//! session, a libvirt job that goes on without its client).
//!
//! ## Network usage
//!
//! [`Backend::host_tx`] gives, per host, the cumulative bytes its NIC has
//! sent if the backend can measure it (migrations plus the guests' own
//! traffic, which is what the controller must share the link with; the
//! QEMU backend leaves out TCP retransmissions, which did not get through),
//! or `None`, and the loop then counts the host's migrations' bytes alone.
//! Counters may restart (a different process is read): the loop never lets
//! a host's count go down.
//!
//! ## Capabilities
//!
//! [`Backend::capabilities`] declares what of the controller's actions and
//! the migration parameters the platform can carry out (postcopy,
//! auto-converge mid-flight, compression). The run fits the parameters to
//! it before the controller is built ([`Capabilities::fit`]): what cannot be
//! done at all is refused with the setting named, what a policy might only
//! count on (postcopy allowed) is dropped with a line to the operator, so
//! no plan relies on an action the backend would drop.
//!
//! ## A third backend
//!
//! A new platform (Proxmox's API, KubeVirt) is one crate beside
//! `evac-qemu` and `evac-libvirt`: its inventory (the common part is
//! [`crate::inventory`]: `[[host]]` and `[[vm]]` entries declared with
//! [`crate::host_spec!`] and [`crate::vm_spec!`] listing only the
//! platform's own fields, the checks and the conversion to the model, the
//! power-offs and the network through [`crate::editable_inventory!`]), a
//! [`Backend`] and a [`Migration`]. This crate knows no backend by name:
//! the CLI picks one by the inventory's `backend` key (its `BackendKind`,
//! one variant per backend) and holds the inventory in its `Inventory`,
//! whose one match (`common`) hands out the inventory as a
//! [`crate::inventory::RunInventory`] (what the run takes of it: period,
//! power-offs, UPSes, an edited file read again). A sketch:
//!
//! ```ignore
//! pub struct ProxmoxBackend { fleet: Fleet, api: proxmox::Client }
//!
//! impl evac_run::Backend for ProxmoxBackend {
//!     type Migration = ProxmoxMigration;
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities { postcopy: false, auto_converge_in_flight: false, compression: false }
//!     }
//!     fn name(&self) -> &'static str { "Proxmox" }
//!     fn fleet(&self) -> &Fleet { &self.fleet }
//!     fn network(&self) -> Network { /* the inventory's [network] */ }
//!     fn start(&mut self, request: StartRequest) -> ProxmoxMigration {
//!         // POST /nodes/{node}/qemu/{vmid}/migrate on a task of its own
//!         // (`AttemptTask::spawn`, crate::attempt) that polls Proxmox's
//!         // task status into the progress its handle reads.
//!     }
//!     async fn host_tx(&mut self) -> Vec<Option<Bytes>> { /* node rrddata, or None */ }
//! }
//!
//! impl evac_run::Migration for ProxmoxMigration {
//!     type Landed = String;
//!     async fn observe(&mut self) -> Result<Observed<String>, String> { /* task status */ }
//!     async fn retune(&mut self, change: Retune) -> Result<(), String> { /* migrate_set_speed */ }
//!     async fn switch_to_offline(&mut self) -> Result<(), String> { /* suspend the guest */ }
//!     async fn cancel(&mut self) -> Result<(), String> { /* DELETE the task */ }
//! }
//! ```
//!
//! and in `crates/cli/src/run.rs`, a `BackendKind::Proxmox` named
//! `"proxmox"`, an `Inventory::Proxmox` with its arm in `common`, its
//! loader's arm in `load` and the run's:
//!
//! ```ignore
//! Inventory::Proxmox(inv) => evac_proxmox::run_with_options(inv, options, shutdown).await,
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use evac_controller::{Phase, Retune};
use evac_model::{
    BitsPerSec, Bytes, BytesPerSec, Compression, Fleet, HostId, MigrationParams, Mode, Network, VmId,
};

/// What a backend is asked to start.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub vm: VmId,
    /// 1 for the first attempt of this VM, counting every earlier one.
    pub attempt: u32,
    pub destination: HostId,
    /// The controller's parameters for this migration.
    pub params: MigrationParams,
    /// Wakes the loop (e.g. when the migration ends).
    pub wake: Wake,
}

/// Wakes the run loop between periods: it then observes every migration.
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<tokio::sync::Notify>);

impl Wake {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.0.notified().await;
    }
}

/// A migration in flight, as of one observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    /// Precopy round (pass over memory), starting at 1.
    pub round: u32,
    /// Sent by this attempt so far, all rounds together.
    pub bytes_sent: Bytes,
    /// Still to send in the current round.
    pub bytes_remaining: Bytes,
    /// The transfer rate as the platform measures it.
    pub rate: BitsPerSec,
    /// How fast the guest dirties memory, as measured.
    pub dirty_rate: BytesPerSec,
}

/// A migration that completed: the VM runs at its destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion<L> {
    /// Sent by this attempt.
    pub bytes_sent: Bytes,
    /// Precopy rounds.
    pub rounds: u32,
    /// How long the guest did not run, if the platform knows.
    pub downtime: Option<Duration>,
    /// Where it runs now, in the backend's terms (e.g. a process and its socket).
    pub landed: L,
}

/// A migration that failed or was cancelled: the VM runs on its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: String,
    /// Sent by this attempt before it ended (0 if unknown).
    pub bytes_sent: Bytes,
}

/// The answer of [`Migration::observe`].
#[derive(Debug, Clone, PartialEq)]
pub enum Observed<L> {
    /// Accepted, not yet sending (the destination is being prepared).
    Starting,
    Running(Progress),
    Completed(Completion<L>),
    Failed(Failure),
}

/// What a backend can carry out of the controller's actions and the
/// migration parameters, declared before anything starts: the run fits the
/// parameters to it ([`Capabilities::fit`]) before the controller plans, so
/// that no policy counts on an action the backend would drop (as
/// cloud-hypervisor's backends declare their features).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// [`Migration::switch_to_postcopy`] (and mode postcopy) works, on
    /// guests whose RAM allows it.
    pub postcopy: bool,
    /// [`Retune::AutoConverge`] takes effect on a migration in flight (else
    /// only as a migration starts).
    pub auto_converge_in_flight: bool,
    /// `[migration] compression` other than `none`.
    pub compression: bool,
}

impl Capabilities {
    /// A backend that declares nothing: plain precopy, offline switches,
    /// retunes of bandwidth and downtime.
    pub const NONE: Capabilities = Capabilities {
        postcopy: false,
        auto_converge_in_flight: false,
        compression: false,
    };

    /// `params` as this backend can carry them out, and a line for the
    /// operator per change: postcopy allowed is dropped where the backend
    /// cannot switch; what cannot be carried out at all (mode postcopy,
    /// compression) is refused, naming the setting.
    pub fn fit(
        self,
        backend: &str,
        mut params: MigrationParams,
    ) -> Result<(MigrationParams, Vec<String>), String> {
        let mut notes = Vec::new();
        if !self.postcopy {
            if params.mode == Mode::Postcopy {
                return Err(format!(
                    "[migration] mode = \"postcopy\": the {backend} backend cannot migrate by postcopy; \
                     use mode = \"live\" or \"offline\""
                ));
            }
            if params.allow_postcopy {
                params.allow_postcopy = false;
                notes.push(format!(
                    "[migration] allow_postcopy: the {backend} backend cannot switch to postcopy; \
                     a migration that cannot finish in time is switched offline instead"
                ));
            }
        }
        if !self.compression && params.compression != Compression::None {
            return Err(format!(
                "[migration] compression = \"{}\": the {backend} backend does not compress migrations; \
                 set compression = \"none\"",
                match params.compression {
                    Compression::Zstd => "zstd",
                    _ => "auto",
                }
            ));
        }
        Ok((params, notes))
    }
}

/// A virtualization platform the run loop can evacuate.
pub trait Backend {
    type Migration: Migration;

    /// What it can carry out; the default, [`Capabilities::NONE`].
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    /// Its name in messages (`QEMU`, `libvirt`).
    fn name(&self) -> &'static str {
        "this"
    }

    /// The hosts and VMs; constant for the run.
    fn fleet(&self) -> &Fleet;

    /// The WAN as far as the backend knows it (it feeds only the report's
    /// lower bounds).
    fn network(&self) -> Network;

    /// Starts migrating a VM; returns at once (see the module doc).
    fn start(&mut self, request: StartRequest) -> Self::Migration;

    /// Per host (indexed by [`HostId`]), the cumulative bytes its NIC sent,
    /// if measurable.
    fn host_tx(&mut self) -> impl Future<Output = Vec<Option<Bytes>>> + Send;

    /// What the backend needs to find the attempt `request` is about to
    /// start again after evac itself was restarted (for QEMU the
    /// destination's QMP socket): the run loop writes it to its journal,
    /// flushed, before it calls [`Backend::start`]. Keep it small (it is
    /// read back with a 1 MiB line limit). The default: nothing, and
    /// [`Backend::adopt`] will not be able to reconnect.
    fn reconnect_info(&self, request: &StartRequest) -> serde_json::Value {
        let _ = request;
        serde_json::Value::Null
    }

    /// After a restart (`--resume`): reconnects to an attempt a previous
    /// evac started and the journal shows unfinished; `info` is what
    /// [`Backend::reconnect_info`] returned for it. The migration may be
    /// under way, finished (the VM runs at the destination, perhaps with its
    /// source still there), or never begun (the destination never
    /// started): the handle finds out and reports it like any other, and
    /// must never start a second migration of the VM. Returns at once like
    /// `start`. `None`: this backend cannot adopt; the loop then leaves the
    /// VM alone (reported not migrated) rather than risk migrating it twice.
    fn adopt(&mut self, request: StartRequest, info: &serde_json::Value) -> Option<Self::Migration> {
        let _ = (request, info);
        None
    }
}

/// One migration attempt in flight.
pub trait Migration: Send {
    /// Where a migrated VM runs, in the backend's terms.
    type Landed: Clone + Debug + Send;

    /// Its state now. `Err` (a short reason) when it cannot be known this
    /// time; the loop reuses the last observation.
    fn observe(&mut self) -> impl Future<Output = Result<Observed<Self::Landed>, String>> + Send;

    /// Changes a parameter mid-flight.
    fn retune(&mut self, change: Retune) -> impl Future<Output = Result<(), String>> + Send;

    /// Pauses the guest so the rest is sent in one go.
    fn switch_to_offline(&mut self) -> impl Future<Output = Result<(), String>> + Send;

    /// Resumes the guest at the destination after one short pause, its
    /// remaining pages following (QEMU's `migrate-start-postcopy`). Only
    /// possible where the migration was started ready for it (the
    /// parameters' `allow_postcopy`, or mode postcopy) and the guest's RAM
    /// allows it; `Err` with the reason otherwise. The default: not
    /// supported. Once switched, the migration cannot be cancelled: the
    /// guest runs at the destination and its memory is split between the
    /// hosts until the last page arrives.
    fn switch_to_postcopy(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        std::future::ready(Err(
            "postcopy is not supported by this backend; it stays in precopy".to_owned(),
        ))
    }

    /// Abandons the migration; the VM keeps running on its source.
    fn cancel(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

#[cfg(test)]
mod capability_tests {
    use super::*;

    #[test]
    fn parameters_are_fitted_to_what_the_backend_can_do() {
        let all = Capabilities {
            postcopy: true,
            auto_converge_in_flight: true,
            compression: true,
        };
        let asked = MigrationParams {
            allow_postcopy: true,
            compression: Compression::Auto,
            ..MigrationParams::default()
        };
        // A backend that can do it all changes nothing.
        assert_eq!(all.fit("x", asked).unwrap(), (asked, Vec::new()));
        // One that cannot switch to postcopy: the planner may not count on
        // it (offline instead), and the operator is told once.
        let plain = MigrationParams {
            compression: Compression::None,
            ..asked
        };
        let (fitted, notes) = Capabilities::NONE.fit("x", plain).unwrap();
        assert!(!fitted.allow_postcopy);
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("allow_postcopy") && notes[0].contains("offline"),
            "{notes:?}"
        );
        // What cannot be carried out at all is refused, naming the setting.
        let postcopy = MigrationParams {
            mode: Mode::Postcopy,
            ..plain
        };
        let why = Capabilities::NONE.fit("x", postcopy).unwrap_err();
        assert!(
            why.contains("mode = \"postcopy\"") && why.contains("the x backend"),
            "{why}"
        );
        let why = Capabilities::NONE.fit("x", asked).unwrap_err();
        assert!(why.contains("compression = \"auto\""), "{why}");
    }
}
