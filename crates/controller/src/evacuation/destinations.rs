//! Where a VM goes: the destinations' free memory and the start of a
//! migration.

use std::cmp::Reverse;

use evac_model::{Bytes, HostId, VmId};

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
        Action::Start {
            vm,
            destination,
            params: self.policy.start_params(vm, self.params),
        }
    }
}
