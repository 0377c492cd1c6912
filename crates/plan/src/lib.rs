//! # evac-plan
//!
//! `evac plan INVENTORY`: before the disaster, "can we make it, and what
//! would we lose?". It reads the live fleet without migrating anything,
//! turns it into the scenario the simulator takes, simulates the
//! evacuation with every policy, and recommends one.
//!
//! 1. [`live`], [`measure`]: the fleet as its backend finds it (a QEMU
//!    inventory lists its VMs; a libvirt inventory's domains are discovered
//!    on its source hosts as `evac run` discovers them), each VM's memory
//!    (QEMU: `query-memory-size-summary`, unless the inventory states it;
//!    libvirt: the domain's) and its dirty rate measured by QEMU itself
//!    (`calc-dirty-rate` in `dirty-bitmap` mode over QMP, or libvirt's
//!    `virDomainStartDirtyRateCalc`, which asks QEMU the same), all VMs at
//!    once, each exchange bounded by a timeout. The bitmap mode
//!    counts every page written during the sample, where page sampling
//!    would estimate it from a few hundred hashed pages (±30 % on a small
//!    guest). QEMU reports whole MiB/s: rates below a few MiB/s are coarse.
//!    The setup time of a migration (what it costs beyond its bytes):
//!    the inventory's `[migration] setup_time` when stated, else, on
//!    libvirt, measured by probe migrations of a paused domain ([`setup`]).
//! 2. [`scenario`]: the fleet, the WAN (the inventory's `[network]`, else
//!    its fastest source NIC), its `[migration]` and `[controller]`
//!    settings, as a scenario file `evac simulate` reads back.
//! 3. [`triage()`]: every policy simulated over that scenario; the
//!    recommended one saves the most priority, then the most VMs, then
//!    finishes first. Its result gives the ETA per host and for the site,
//!    and every VM it would not move with the reason.
//!
//!    A second, longer sample estimates the working set: when the pages
//!    dirtied at least once over it are clearly fewer than the rate allows
//!    (below 80 %), the guest went over the same pages again and those
//!    pages are its working set; otherwise it is taken as the whole memory.
//!    A working set means a curve rather than a line: the guest is then
//!    also sampled at every power of two seconds below the long sample
//!    ([`measure::curve_periods`]), and the samples, raised to the least
//!    concave curve above them ([`Measured::dirty_curve`] says why), are
//!    the VM's dirty curve.
//!
//! The dirty rate of a guest is a sample of a few seconds: a guest whose
//! load changes will dirty at another rate during the evacuation.

pub mod curve;
pub mod live;
pub mod measure;
pub mod sample;
pub mod scenario;
pub mod setup;
pub mod triage;

pub use live::Live;
pub use measure::Measured;
pub use triage::{triage, Plan};
