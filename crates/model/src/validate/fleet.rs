//! The checks of the fleet: each host and VM on its own, then the fleet as
//! a whole (sites, unique names, pinned VMs, room at the destinations).
//! Apart from the settings (`super::network`): these are per entry, and
//! their paths name the entry (`host[2]`, `vm[0]`).

use super::{check_bit_rate, check_count, check_duration, check_name, check_trace_time, FieldPath, Invalid};
use super::{MAX_BYTE_RATE, MAX_HOSTS, MAX_MIGRATION_CPUS, MAX_SIZE, MAX_TRACE_POINTS, MAX_VMS};
use crate::memory::{MAX_COMPRESSION_RATIO, MAX_DIRTY_CURVE_POINTS};
use crate::units::MAX_DURATION;
use crate::{Bytes, BytesPerSec, Fleet, Host, HostId, Site, Vm};

impl Host {
    /// Checks one host on its own; paths are its fields (`nic`, ...).
    pub fn validate(&self) -> Result<(), Invalid> {
        let at = |key: &str| FieldPath::top(key);
        check_name(&self.name).map_err(|m| Invalid::new(at("name"), m))?;
        check_bit_rate(self.nic, "a NIC").map_err(|m| Invalid::new(at("nic"), m))?;
        match self.site {
            Site::Source if self.memory.is_some() => {
                return Err(Invalid::new(
                    at("memory"),
                    "`memory` is a destination host's room for incoming VMs; \
                     a source host receives none",
                ));
            }
            Site::Destination if self.power_off_at.is_some() => {
                return Err(Invalid::new(
                    at("power_off_at"),
                    "only source hosts lose power in this model; a destination host stays up",
                ));
            }
            Site::Destination if self.memory == Some(Bytes::ZERO) => {
                return Err(Invalid::new(
                    at("memory"),
                    "a destination host with 0 B of room can take no VM; give it memory \
                     above zero, or leave `memory` out for unbounded room",
                ));
            }
            Site::Source | Site::Destination => {}
        }
        if let Some(room) = self.memory {
            if room.0 > MAX_SIZE {
                return Err(Invalid::new(at("memory"), format!("{room} is beyond 1 PiB")));
            }
        }
        if let Some(t) = self.power_off_at {
            check_duration(t, MAX_DURATION, "a power-off time")
                .map_err(|m| Invalid::new(at("power_off_at"), m))?;
        }
        if let Some(cpus) = self.migration_cpus {
            if !(cpus.is_finite() && cpus > 0.0 && cpus <= MAX_MIGRATION_CPUS) {
                return Err(Invalid::new(
                    at("migration_cpus"),
                    format!(
                        "{cpus} cores is not within 0 < cores ..= {MAX_MIGRATION_CPUS}; give the cores the \
                         host can spare for compressing migrations, like 2 or 0.5"
                    ),
                ));
            }
        }
        if self.site == Site::Destination && !self.power_trace.is_empty() {
            return Err(Invalid::new(
                at("power_trace"),
                "only source hosts lose power in this model; a destination host stays up",
            ));
        }
        let changes = self.power_trace.len();
        check_count(at("power_trace"), changes, MAX_TRACE_POINTS, "changes", "a trace")?;
        for (index, change) in self.power_trace.iter().enumerate() {
            let path = at("power_trace").index(index);
            let previous = index.checked_sub(1).map(|i| self.power_trace[i].at);
            check_trace_time(path.clone(), change.at, previous, "change", "power_trace")?;
            if let Some(t) = change.power_off_at {
                check_duration(t, MAX_DURATION, "a power-off time")
                    .map_err(|m| Invalid::new(path.key("power_off_at"), m))?;
            }
        }
        Ok(())
    }
}

impl Vm {
    /// Checks one VM's own values (not its hosts); paths are its fields.
    pub fn validate(&self) -> Result<(), Invalid> {
        let at = |key: &str| FieldPath::top(key);
        check_name(&self.name).map_err(|m| Invalid::new(at("name"), m))?;
        if self.memory == Bytes::ZERO {
            return Err(Invalid::new(at("memory"), "a VM needs memory above zero"));
        }
        if self.memory.0 > MAX_SIZE {
            return Err(Invalid::new(
                at("memory"),
                format!("{} is beyond 1 PiB", self.memory),
            ));
        }
        // First: a curve's last point is the working set, refused in the
        // curve's own words.
        self.validate_profile()?;
        if self.working_set > self.memory {
            return Err(Invalid::new(
                at("working_set"),
                format!(
                    "a working set of {} is more than the VM's {} of memory; \
                     a guest cannot keep writing to more memory than it has",
                    self.working_set, self.memory
                ),
            ));
        }
        if self.disk.0 > MAX_SIZE {
            return Err(Invalid::new(at("disk"), format!("{} is beyond 1 PiB", self.disk)));
        }
        let BytesPerSec(rate) = self.dirty_rate;
        if !rate.is_finite() || !(0.0..=MAX_BYTE_RATE).contains(&rate) {
            return Err(Invalid::new(
                at("dirty_rate"),
                format!("a dirty rate of {rate} B/s is not within 0 ..= 125000 GB/s"),
            ));
        }
        Ok(())
    }

    fn validate_profile(&self) -> Result<(), Invalid> {
        let at = |key: &str| FieldPath::top(key);
        let p = &self.profile;
        if !(0.0..=1.0).contains(&p.zero_fraction) {
            return Err(Invalid::new(
                at("zero_fraction"),
                format!(
                    "{} is not a share of pages; give one within 0 ..= 1, like 0.6",
                    p.zero_fraction
                ),
            ));
        }
        if !(1.0..=MAX_COMPRESSION_RATIO).contains(&p.compression_ratio) {
            return Err(Invalid::new(
                at("compression_ratio"),
                format!(
                    "{} is not a compression ratio (bytes over compressed bytes); give one within \
                     1 ..= {MAX_COMPRESSION_RATIO}, 1 for memory that does not compress",
                    p.compression_ratio
                ),
            ));
        }
        let curve = &p.dirty_curve;
        if curve.len() > MAX_DIRTY_CURVE_POINTS {
            return Err(Invalid::new(
                at("dirty_curve"),
                format!(
                    "{} points are more than the {MAX_DIRTY_CURVE_POINTS} a dirty curve may have",
                    curve.len()
                ),
            ));
        }
        let point = |i: usize, key: &str| at("dirty_curve").index(i).key(key);
        for (i, pt) in curve.iter().enumerate() {
            if pt.after.is_zero() {
                return Err(Invalid::new(
                    point(i, "after"),
                    "a point after 0 s says nothing (nothing is dirtied in no time); start after it, like \"1 s\"",
                ));
            }
            check_duration(pt.after, MAX_DURATION, "a time")
                .map_err(|m| Invalid::new(point(i, "after"), m))?;
            if i > 0 && pt.after <= curve[i - 1].after {
                return Err(Invalid::new(
                    point(i, "after"),
                    format!(
                        "{} is not after the point before ({}); points go in increasing `after`",
                        crate::format_duration(pt.after),
                        crate::format_duration(curve[i - 1].after)
                    ),
                ));
            }
            if i > 0 && pt.dirtied < curve[i - 1].dirtied {
                return Err(Invalid::new(
                    point(i, "dirtied"),
                    format!(
                        "{} is less than the point before ({}); memory dirtied at least once within a \
                         longer time is never less",
                        pt.dirtied,
                        curve[i - 1].dirtied
                    ),
                ));
            }
            if pt.dirtied > self.memory {
                return Err(Invalid::new(
                    point(i, "dirtied"),
                    format!("{} is more than the VM's {} of memory", pt.dirtied, self.memory),
                ));
            }
        }
        Ok(())
    }
}

impl Fleet {
    /// Checks every host and VM and how they fit together; paths are
    /// `host[i]...` and `vm[i]...` (indices into [`Fleet::hosts`] and
    /// [`Fleet::vms`]), or empty for the fleet as a whole.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_count(
            FieldPath::top("host"),
            self.hosts.len(),
            MAX_HOSTS,
            "hosts",
            "a fleet",
        )?;
        check_count(FieldPath::top("vm"), self.vms.len(), MAX_VMS, "VMs", "a fleet")?;
        let mut names = std::collections::HashMap::with_capacity(self.hosts.len());
        for (i, host) in self.hosts.iter().enumerate() {
            host.validate()
                .map_err(|e| e.under(FieldPath::entry("host", i)))?;
            if let Some(first) = names.insert(host.name.as_str(), i) {
                return Err(Invalid::new(
                    FieldPath::entry("host", i).key("name"),
                    format!(
                        "duplicate host name `{}`: host #{} has it already",
                        host.name,
                        first + 1
                    ),
                ));
            }
        }
        if !self.hosts.iter().any(|h| h.site == Site::Source) {
            return Err(Invalid::new(
                FieldPath::root(),
                "no [[host]] has site = \"source\": there is nothing to evacuate from",
            ));
        }
        if !self.hosts.iter().any(|h| h.site == Site::Destination) {
            return Err(Invalid::new(
                FieldPath::root(),
                "no [[host]] has site = \"destination\": there is nowhere to evacuate to",
            ));
        }
        let site = |id: HostId| self.hosts.get(id.0).map(|h| h.site);
        let mut names = std::collections::HashMap::with_capacity(self.vms.len());
        for (i, vm) in self.vms.iter().enumerate() {
            // Made only for a refusal: one per VM was 1 % of a million-VM run.
            let at = || FieldPath::entry("vm", i);
            vm.validate().map_err(|e| e.under(at()))?;
            if let Some(first) = names.insert(vm.name.as_str(), i) {
                return Err(Invalid::new(
                    at().key("name"),
                    format!(
                        "duplicate VM name `{}`: VM #{} has it already",
                        vm.name,
                        first + 1
                    ),
                ));
            }
            if site(vm.host) != Some(Site::Source) {
                return Err(Invalid::new(
                    at().key("host"),
                    "a VM to evacuate runs on a source host",
                ));
            }
            if let Some(d) = vm.destination {
                if site(d) != Some(Site::Destination) {
                    return Err(Invalid::new(
                        at().key("destination"),
                        "a VM can be pinned to a destination host only",
                    ));
                }
            }
        }
        self.validate_room()
    }

    /// Refuses VMs no destination has room for: alone, pinned together, or
    /// all together when every destination's room is bounded. (Whether they
    /// pack into the rooms is the controller's affair.)
    fn validate_room(&self) -> Result<(), Invalid> {
        let destinations: Vec<HostId> = self.destination_hosts().collect();
        let room = |id: HostId| self.hosts[id.0].memory;
        // The destination with the most room; unbounded beats any bound.
        let roomiest = destinations
            .iter()
            .copied()
            .max_by_key(|&id| room(id).map_or(u64::MAX, |bytes| bytes.0));
        for (i, vm) in self.vms.iter().enumerate() {
            let Some(target) = vm.destination.or(roomiest) else {
                continue;
            };
            let target_name = &self.hosts[target.0].name;
            let whom = match vm.destination {
                Some(_) => format!("its pinned destination `{target_name}`"),
                None => format!("the destination with the most room, `{target_name}`,"),
            };
            if let Some(room) = room(target) {
                if vm.memory > room {
                    return Err(Invalid::new(
                        FieldPath::entry("vm", i).key("memory"),
                        format!(
                            "VM `{}` needs {} but {whom} has room for {room} only: \
                             there is no destination with room for it",
                            vm.name, vm.memory
                        ),
                    ));
                }
            }
        }
        // One pass over the VMs, not one per destination. In u128: a fleet
        // of huge VMs does not wrap.
        let mut pinned_to = vec![0u128; self.hosts.len()];
        for vm in &self.vms {
            if let Some(destination) = vm.destination {
                pinned_to[destination.0] += u128::from(vm.memory.0);
            }
        }
        let show = |bytes: u128| Bytes(u64::try_from(bytes).unwrap_or(u64::MAX)).to_string();
        for &destination in &destinations {
            let Some(room) = room(destination) else {
                continue;
            };
            let pinned = pinned_to[destination.0];
            if pinned > u128::from(room.0) {
                return Err(Invalid::new(
                    FieldPath::entry("host", destination.0).key("memory"),
                    format!(
                        "the VMs pinned to `{}` need {} in all, more than its room of {room}",
                        self.hosts[destination.0].name,
                        show(pinned)
                    ),
                ));
            }
        }
        let needed: u128 = self.vms.iter().map(|vm| u128::from(vm.memory.0)).sum();
        if needed > u128::from(u64::MAX) {
            return Err(Invalid::new(
                FieldPath::root(),
                format!(
                    "the VMs need {needed} B of memory in all, more than 16 EiB: \
                     no data center holds that much"
                ),
            ));
        }
        let rooms: Option<Vec<Bytes>> = destinations.iter().map(|&id| room(id)).collect();
        if let Some(rooms) = rooms {
            let total_room: u128 = rooms.iter().map(|r| u128::from(r.0)).sum();
            if needed > total_room {
                return Err(Invalid::new(
                    FieldPath::root(),
                    format!(
                        "the VMs need {} of memory in all, but the destination hosts have room \
                         for {} in all: some VM would be left without a destination with room",
                        show(needed),
                        show(total_room)
                    ),
                ));
            }
        }
        Ok(())
    }
}
