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
//!   as stop-and-copy; the guest is resumed at the destination), postcopy
//!   and cancel (`virDomainAbortJob`: the domain keeps running on its
//!   source). Starts are staggered 200 ms apart. Every libvirt call runs
//!   on a blocking thread bounded by a timeout. The task's state is one
//!   stage (waiting for slots, staggered, starting or adopting, precopy,
//!   offline, postcopy, cancelling, landed, failed) whose transitions are
//!   written in one place (`backend::attempt`, docs/libvirt.md "An
//!   attempt's stages").
//! - **Postcopy.** With `allow_postcopy` or mode `postcopy` the domain's
//!   definition is checked first: memory backed by a file or shared is
//!   refused (mode postcopy: the attempt fails, the domain stays on its
//!   source; `allow_postcopy`: started without it, a later switch is
//!   refused), as QEMU 7.2 cannot postcopy it and its discard would punch
//!   holes in the file. Otherwise the migration starts with
//!   `VIR_MIGRATE_POSTCOPY`; `SwitchToPostcopy` is
//!   `virDomainMigrateStartPostCopy`; mode postcopy switches by itself once
//!   the first pass over memory is done. From the switch on it is observed
//!   as phase postcopy and a cancel is refused.
//! - **Hosts' limits.** Each host's `max_workers`, migration ports and ssh
//!   `MaxStartups` cap how many migrations run out of and into it
//!   ([`limits`]); one beyond a cap waits, reported as starting.
//! - **End.** Success is checked where it matters: the domain must run on
//!   a destination; bytes, rounds and downtime come from the destination's
//!   record of the completed job. A failure leaves the domain running on
//!   its source (resumed if evac had paused it).
//! - **Setup probe.** `evac plan` measures what a migration costs beyond
//!   its bytes by migrating paused 16 MiB probe domains through the same
//!   attempt code, then destroying them (`backend::probe`): no fleet
//!   domain moves.
//! - **Network usage.** Per source host: its migrations' bytes plus its
//!   guests' own transmitted bytes (their interfaces' counters), so the
//!   controller sees what busy guests leave for migrations.
//! - **Stalls.** A migration whose bytes stand still for `stall_after` is
//!   cancelled and retried; for libvirt at least `backend::MIN_STALL_AFTER`
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
//! ## The `native` feature: libvirt only where asked for
//!
//! Everything that calls libvirt (`client`, `backend`) is
//! behind the cargo feature `native`, off by default; the inventory format
//! ([`inventory`]) is always built. So `evac` builds with a Rust toolchain
//! alone (no libvirt-dev, no pkg-config, no `libvirt.so` linked) and still
//! reads and checks libvirt inventories; a build without the feature refuses
//! to run one, in one line that says how to get support (`evac-cli`'s
//! feature `libvirt`, which turns this one on).
//!
//! Why a build-time feature rather than loading `libvirt.so` at run time
//! (`dlopen`): the `virt` crate links libvirt when it is built and has no
//! run-time loading, so `dlopen` would mean declaring every libvirt function
//! and struct we call by hand, unchecked: a mismatch with the installed
//! libvirt would crash a migration instead of failing a build. With the
//! feature, the compiler checks every call against libvirt's own headers
//! (through `virt-sys`), and a package of evac that supports libvirt turns
//! the feature on and depends on the libvirt library package, as packages do
//! for other optional system libraries. It also keeps the LGPL-2.1 `virt`
//! crate and libvirt out of every build that does not use them. The cost: a
//! binary built without the feature cannot gain libvirt support later;
//! it has to be rebuilt (`cargo install --path crates/cli --features
//! libvirt`, which needs libvirt-dev and pkg-config).
//!
//! ## Modules
//!
//! [`inventory`] (the file format, file:line:field errors; always built),
//! and with `native`: `client` (the libvirt calls, each bounded),
//! `backend` (the [`evac_run::Backend`]), `limits` (the hosts' own
//! limits). The few raw `virt::sys` calls
//! are in one private module. The lab its tests run on (N libvirt daemons
//! on one machine as N hosts) is `evac-lab`'s `libvirt` module, a
//! dev-dependency: test code stays out of the backend.

#[cfg(feature = "native")]
pub mod backend;
#[cfg(feature = "native")]
pub mod client;
pub mod inventory;
#[cfg(feature = "native")]
pub mod limits;
#[cfg(feature = "native")]
mod raw;
#[cfg(feature = "native")]
mod xml;

#[cfg(feature = "native")]
pub use backend::{run_with_options, Landed, LibvirtBackend};
pub use inventory::Inventory;
#[cfg(feature = "native")]
pub use xml::LocalDisk;
