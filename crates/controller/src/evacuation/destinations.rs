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

    /// Its key in [`Evacuation::least_busy`]: whether nothing flows into
    /// it yet, then the share of its NIC (bits per second, whole) a
    /// migration more would get, then its free memory, then its name.
    ///
    /// Idle first: a migration into an idle destination adds its whole NIC
    /// to what crosses, one into a busy one mostly splits what already
    /// does. By share alone, a second VM went to a busy 1 Gbit/s
    /// destination (half of it) rather than an idle 500 Mbit/s one (all of
    /// it), and the two carried 1 Gbit/s where they could have carried 1.5.
    fn busy_key(&self, host: HostId) -> (bool, u64, u64, Reverse<usize>, HostId) {
        let inbound = self.inbound[host.0];
        let share = self.fleet.host(host).nic.0 / (inbound + 1) as f64;
        (
            inbound == 0,
            share as u64,
            self.free(host),
            Reverse(self.name_rank[host.0]),
            host,
        )
    }

    pub(super) fn file_destination(&mut self, host: HostId) {
        let key = (self.free(host), Reverse(self.name_rank[host.0]), host);
        self.roomiest.insert(key);
        self.least_busy.insert(self.busy_key(host));
    }

    pub(super) fn unfile_destination(&mut self, host: HostId) {
        let key = (self.free(host), Reverse(self.name_rank[host.0]), host);
        self.roomiest.remove(&key);
        self.least_busy.remove(&self.busy_key(host));
    }

    /// A migration into `destination` starts (`add`) or ends.
    pub(super) fn inbound(&mut self, destination: HostId, add: bool) {
        self.unfile_destination(destination);
        let inbound = &mut self.inbound[destination.0];
        *inbound = if add {
            *inbound + 1
        } else {
            inbound.saturating_sub(1)
        };
        self.file_destination(destination);
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
        let (roomiest, _, _) = *self.roomiest.last()?;
        if roomiest < vm.memory.0 {
            return None;
        }
        // Of those that fit, an idle one, else the one whose NIC a
        // migration more would get the most of: behind destinations with
        // no memory limit (all equally roomy) every VM went to the first
        // by name, and the others' NICs idled (docs/planner.md). The walk
        // ends at the roomiest at the latest.
        self.least_busy
            .iter()
            .rev()
            .find(|&&(_, _, free, _, _)| free >= vm.memory.0)
            .map(|&(_, _, _, _, host)| host)
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
        self.inbound(destination, true);
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
