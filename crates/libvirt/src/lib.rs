//! # evac-libvirt
//!
//! The libvirt backend of evac: it evacuates the running domains of real
//! hosts run by libvirt daemons (`qemu+tcp://`, `qemu+tls://`,
//! `qemu+ssh://`, or a local socket) through the same run loop
//! ([`evac_run`]) and controller as every other backend, and reports the
//! same result.
//!
//! ## The model
//!
//! - **Fleet.** At start evac connects to every host of the inventory and
//!   lists the running domains of the source hosts: all of them, or only
//!   those `[[vm]]` names (with their priority and pinned destination).
//!   Memory comes from the domain. A domain with a local disk is refused,
//!   named, unless `[migration] copy_storage = true` (libvirt's
//!   non-shared-disk migration copies it); disks that are network disks or
//!   lie under a `[migration] shared_storage` prefix are shared. With
//!   `copy_storage` the VM's `disk` is its local disks' allocation
//!   (`virDomainGetBlockInfo`), which the plan and the simulator send ahead
//!   of the memory.
//! - **Migration.** Peer-to-peer live migration: the source daemon drives
//!   it and talks to the destination daemon itself (at the host's
//!   `peer_uri`, default its `uri`), the stream goes to
//!   `tcp://<migration_address>`. The controller's parameters map to
//!   libvirt's: bandwidth (`bandwidth`, MiB/s), parallel connections
//!   (`VIR_MIGRATE_PARALLEL`), auto-converge, downtime limit
//!   (`virDomainMigrateSetMaxDowntime`), TLS (`VIR_MIGRATE_TLS`). The domain
//!   is persisted at the destination and undefined at the source
//!   (`PERSIST_DEST | UNDEFINE_SOURCE`).
//! - **In flight.** Each migration has its own connection (one connection
//!   serves only 5 calls at once and a p2p migrate call holds one for its
//!   whole length) and its own task, which reads the job's progress
//!   (processed, remaining, dirty rate, iteration) every 500 ms and carries
//!   out retunes (max speed, max downtime), offline (suspend: precopy ends
//!   as stop-and-copy; the guest is resumed at the destination) and cancel
//!   (`virDomainAbortJob`: the domain keeps running on its source). Starts
//!   are staggered 200 ms apart. Every libvirt call runs on a blocking
//!   thread bounded by a timeout.
//! - **End.** Success is checked where it matters: the domain must run on
//!   a destination; bytes, rounds and downtime come from the destination's
//!   record of the completed job. A failure leaves the domain running on
//!   its source (resumed if evac had paused it).
//! - **Network usage.** Per source host: its migrations' bytes plus its
//!   guests' own transmitted bytes (their interfaces' counters), so the
//!   controller sees what busy guests leave for migrations.
//! - **Stalls.** A migration whose bytes stand still for `stall_after` is
//!   cancelled and retried; for libvirt at least [`backend::MIN_STALL_AFTER`]
//!   (15 s), as the destination's finish and the source's confirm move no
//!   bytes for seconds after the last one.
//! - **Restart safety.** libvirt finishes a p2p migration whose client
//!   died. A domain found with a migration job already running is adopted
//!   (followed to its end) instead of migrated a second time. Every run
//!   journals to its run dir (`run_dir`, default as for QEMU); `--resume`
//!   takes the journal up. The fleet is rebuilt by discovery, so the
//!   journal's VMs are matched by name and source host, never by position:
//!   the domains the crashed run had moved (no longer on a source) are
//!   kept in the fleet with their records, attempts in flight are adopted,
//!   and the result covers every VM of the run.
//!
//! ## Modules
//!
//! [`inventory`] (the file format, file:line:field errors), [`client`] (the
//! libvirt calls, each bounded), [`backend`] (the [`evac_run::Backend`]),
//! [`lab`] (N libvirt daemons on one machine as N hosts, for tests and the
//! figures example). The few raw `virt::sys` calls are in one private module.

pub mod backend;
pub mod client;
pub mod inventory;
pub mod lab;
mod raw;
mod xml;

pub use backend::{run_with_options, Landed, LibvirtBackend};
pub use inventory::Inventory;
pub use xml::LocalDisk;
