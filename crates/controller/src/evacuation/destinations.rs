//! Where a VM goes: the destinations' free memory and the start of a
//! migration.

use std::cmp::Reverse;

use evac_model::{Bytes, Compression, HostId, MigrationParams, VmId};

use super::{Evacuation, VmState};
use crate::Action;

impl Evacuation {
    pub(super) fn free(&self, host: HostId) -> u64 {
        self.fleet
            .host(host)
            .memory
            .map_or(u64::MAX, |room| room.0.saturating_sub(self.committed[host.0].0))
    }

    pub(super) fn file_destination(&mut self, host: HostId) {
        let key = (self.free(host), Reverse(self.name_rank[host.0]), host);
        self.roomiest.insert(key);
    }

    pub(super) fn unfile_destination(&mut self, host: HostId) {
        let key = (self.free(host), Reverse(self.name_rank[host.0]), host);
        self.roomiest.remove(&key);
    }

    pub(super) fn commit(&mut self, destination: HostId, memory: Bytes, add: bool) {
        self.unfile_destination(destination);
        let committed = &mut self.committed[destination.0];
        *committed = if add {
            *committed + memory
        } else {
            *committed - memory
        };
        self.file_destination(destination);
    }

    /// The destination host with the most free memory that fits `vm`.
    pub(super) fn destination_for(&self, vm: VmId) -> Option<HostId> {
        let vm = self.fleet.vm(vm);
        if let Some(pinned) = vm.destination {
            return (self.free(pinned) >= vm.memory.0).then_some(pinned);
        }
        // The roomiest fits, or none does.
        self.roomiest
            .last()
            .filter(|&&(free, _, _)| free >= vm.memory.0)
            .map(|&(_, _, host)| host)
    }

    pub(super) fn start(&mut self, vm: VmId, destination: HostId) -> Action {
        let VmState::Queued { attempts } = self.state[vm.0] else {
            unreachable!("only queued VMs start");
        };
        let host = self.fleet.vm(vm).host;
        self.state[vm.0] = VmState::InFlight {
            destination,
            attempts: attempts + 1,
        };
        self.add_in_flight(host, true);
        self.commit(destination, self.fleet.vm(vm).memory, true);
        let mut params = self.policy.start_params(vm, self.params);
        params.compression = self.compression_for(vm, &params);
        Action::Start {
            vm,
            destination,
            params,
        }
    }

    /// `compression = "auto"` made `zstd` or `none` for `vm` as it starts
    /// (counted in flight already), by the byte model's rule
    /// ([`evac_model::memory::compresses`], the simulator's): its share of
    /// the link is the least of its NIC shared by its host's migrations,
    /// the WAN's capacity shared by all (when known) and its own caps; its
    /// host's CPU is shared as if every migration from it compressed. Any
    /// other setting is kept.
    pub(super) fn compression_for(&self, vm: VmId, params: &MigrationParams) -> Compression {
        if params.compression != Compression::Auto {
            return params.compression;
        }
        let spec = self.fleet.vm(vm);
        let host = self.fleet.host(spec.host);
        let on_host = self.in_flight[spec.host.0].max(1);
        let mut link = host.nic.to_bytes_per_sec().0 / on_host as f64;
        if let Some((wan, connection)) = self.wan {
            link = link
                .min(wan / self.in_flight_total.max(1) as f64)
                .min(connection * f64::from(params.connections.get()));
        }
        if let Some(cap) = params.max_bandwidth {
            link = link.min(cap.to_bytes_per_sec().0);
        }
        let cpu = evac_model::memory::cpu_share(host, params, on_host);
        if evac_model::memory::compresses(Compression::Auto, &spec.profile, link, cpu) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}
