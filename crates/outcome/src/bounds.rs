//! The lower bounds no policy can beat ([`LowerBounds`]): when the WAN
//! could have carried every byte, and each VM's own fastest migration. Apart
//! from the summary because the planner and the benchmarks read them too.

use std::time::Duration;

use evac_model::{BitsPerSec, Bytes, Fleet, Network, Site};

use crate::stats::mean;

/// Times no policy can beat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowerBounds {
    /// The earliest instant by which the WAN, at full capacity all along,
    /// could have carried every VM's memory and local disks (the fewest
    /// bytes a migration of each can send: [`evac_model::Vm::least_wire_bytes`]).
    pub total: Duration,
    /// The mean over VMs of (memory + disk) / the best rate one migration could ever
    /// get: the least of the WAN's peak capacity, its source NIC and the
    /// fastest destination NIC it may go to.
    pub mean_migration: Duration,
}

/// The bounds over every VM of the fleet.
pub fn lower_bounds(fleet: &Fleet, network: &Network) -> LowerBounds {
    lower_bounds_of(fleet, network, |_| true)
}

/// The bounds over the VMs (by index in the fleet) that `counts`.
pub fn lower_bounds_of(fleet: &Fleet, network: &Network, counts: impl Fn(usize) -> bool) -> LowerBounds {
    // The fewest bytes each migration can send (zero pages as their header,
    // the others compressed when that is less: evac_model::memory).
    let bytes: f64 = fleet
        .vms
        .iter()
        .enumerate()
        .filter(|&(i, _)| counts(i))
        .map(|(_, vm)| vm.least_wire_bytes())
        .sum();
    let total = time_to_carry(network, Bytes::from_f64(bytes));
    let destinations: Vec<BitsPerSec> = fleet
        .hosts
        .iter()
        .filter(|h| h.site == Site::Destination)
        .map(|h| h.nic)
        .collect();
    let fastest_destination = destinations.iter().map(|r| r.0).fold(0.0, f64::max);
    let peak = network.peak_capacity().0;
    let per_vm: Vec<f64> = fleet
        .vms
        .iter()
        .enumerate()
        .filter(|&(i, _)| counts(i))
        .map(|(_, vm)| {
            let destination = vm
                .destination
                .map_or(fastest_destination, |d| fleet.host(d).nic.0);
            let best = peak.min(fleet.host(vm.host).nic.0).min(destination);
            vm.least_wire_bytes() * 8.0 / best
        })
        .collect();
    LowerBounds {
        total,
        mean_migration: evac_model::units::seconds_saturating(mean(&per_vm).unwrap_or(0.0)),
    }
}

/// Integrates the WAN's piecewise-constant capacity until it reaches `bytes`.
fn time_to_carry(network: &Network, bytes: Bytes) -> Duration {
    let mut left = bytes.as_f64() * 8.0;
    let mut t = 0.0;
    let mut rate = network.capacity_at(Duration::ZERO).0;
    for point in network.wan_trace.iter().filter(|p| !p.at.is_zero()) {
        let span = point.at.as_secs_f64() - t;
        if rate * span >= left {
            break;
        }
        left -= rate * span;
        t = point.at.as_secs_f64();
        rate = point.bandwidth.0;
    }
    if left <= 0.0 {
        Duration::from_secs_f64(t)
    } else if rate <= 0.0 {
        Duration::MAX
    } else {
        evac_model::units::seconds_saturating(t + left / rate)
    }
}
