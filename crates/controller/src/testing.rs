//! Builders for the unit tests of the policies: hosts, idle VMs and a
//! migration in its first round, with only what a test varies as
//! arguments.

use std::time::Duration;

use evac_model::{
    BitsPerSec, Bytes, BytesPerSec, Connections, Host, HostId, MigrationParams, Site, Vm, VmId,
};

use crate::{MigrationObs, Phase};

/// A host with a NIC of `nic_bps` bits per second and no memory limit.
pub fn host(name: &str, site: Site, nic_bps: f64, power_off_at: Option<Duration>) -> Host {
    Host {
        nic: BitsPerSec(nic_bps),
        power_off_at,
        ..evac_testkit::host(name, site)
    }
}

/// An idle VM of 1 GiB on `host`, priority 1, its working set 0.
pub fn idle_vm(name: &str, host: usize) -> Vm {
    Vm {
        working_set: Bytes::ZERO,
        ..evac_testkit::vm(name, host, Bytes::gib(1))
    }
}

/// `vm` in its first precopy round from `source` to `destination`, at
/// `rate_bps` bits per second over `connections` connections, 1 GiB to go.
pub fn first_round(
    vm: VmId,
    source: HostId,
    destination: HostId,
    rate_bps: f64,
    connections: u32,
) -> MigrationObs {
    MigrationObs {
        vm,
        source,
        destination,
        phase: Phase::Precopy,
        round: 1,
        started_at: Duration::ZERO,
        bytes_sent: Bytes::ZERO,
        bytes_remaining: Bytes::gib(1),
        rate: BitsPerSec(rate_bps),
        dirty_rate: BytesPerSec::ZERO,
        params: MigrationParams {
            connections: Connections::new(connections).expect("1 ..= 255"),
            ..MigrationParams::default()
        },
    }
}
