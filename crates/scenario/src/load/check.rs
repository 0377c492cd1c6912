//! From the raw scenario to the model: the checks that need the whole file
//! (unique names, hosts on the right site, a VM's memory profile), each
//! refusal pointed at its `[[host]]`, `[[vm]]` or `[[vm_group]]` in the
//! text. Apart from the reading (`super`) because it works on parsed
//! values only, and apart from the groups (`super::group`), which draw.

use std::collections::HashMap;
use std::path::Path;

use evac_model::validate::Step;
use evac_model::wall_clock::Timestamp;
use evac_model::{
    Bytes, BytesPerSec, DirtyPoint, Fleet, Host, HostId, Invalid, MemoryProfile, Network, PowerChange, Site,
    TracePoint, Vm,
};

use crate::error::{Location, ScenarioError};
use crate::locate::{FieldPath, Locator};
use crate::raw::{RawGroup, RawHost, RawNetwork, RawScenario, RawVm, ROUND_ROBIN};
use crate::Scenario;

use super::group::MAX_GROUP_COUNT;

/// The name a scenario without `name` goes by: its file's stem.
fn default_name(origin: &str) -> String {
    Path::new(origin)
        .file_stem()
        .map_or_else(|| origin.to_owned(), |stem| stem.to_string_lossy().into_owned())
}

/// The largest local disk a VM may have: 1 PiB, far beyond a real VM's and
/// low enough that a stray digit is refused.
const MAX_DISK: Bytes = Bytes(1 << 50);

/// The most VMs room is made for before the fleet is read: four million
/// (512 MB of VMs, 128 bytes each); a larger fleet grows as it is read.
const MAX_RESERVED_VMS: usize = 1 << 22;

/// The entry of the file a VM of the fleet came from: the index of a
/// `[[vm]]` or of a `[[vm_group]]`.
#[derive(Clone, Copy)]
struct VmEntry {
    index: u32,
    /// A `[[vm_group]]`'s VM, named after its `prefix`.
    group: bool,
}

impl VmEntry {
    fn path(self) -> FieldPath {
        let array = if self.group { "vm_group" } else { "vm" };
        FieldPath::entry(array, self.index as usize)
    }
}

/// Which entry each VM of the fleet came from: the entries once each, and
/// per VM an index into them (a group of a million VMs is one entry, not a
/// million copies of its path).
#[derive(Default)]
struct VmEntries {
    entries: Vec<VmEntry>,
    of_vm: Vec<u32>,
}

impl VmEntries {
    fn get(&self, vm: usize) -> Option<VmEntry> {
        self.of_vm.get(vm).map(|&e| self.entries[e as usize])
    }
}

/// An index of an entry (a `[[vm]]`, a `[[vm_group]]`, or either): there are
/// fewer than VMs, and a fleet's VMs are counted in `u32` (the loader holds
/// each in memory).
fn entry_index(index: usize) -> u32 {
    u32::try_from(index).expect("fewer than 2^32 entries: each is at least a line of text")
}

/// A `[[vm]]` or a `[[vm_group]]`, in the order of the file.
enum Entry<'r> {
    Single(usize, &'r RawVm),
    Group(usize, &'r RawGroup),
}

/// The hosts, and each by its name (the names are unique by then).
pub(super) struct Hosts<'h> {
    pub(super) list: &'h [Host],
    pub(super) by_name: HashMap<&'h str, HostId>,
}

impl<'h> Hosts<'h> {
    fn new(list: &'h [Host]) -> Self {
        let by_name = list
            .iter()
            .enumerate()
            .map(|(i, host)| (host.name.as_str(), HostId(i)))
            .collect();
        Self { list, by_name }
    }
}

/// Checks the raw scenario, pointing every refusal at its place in the text.
pub(super) struct Checker<'a> {
    pub(super) locator: &'a Locator<'a>,
    pub(super) origin: &'a str,
    /// The evacuation's start when the file gives none.
    pub(super) start: Timestamp,
}

impl Checker<'_> {
    pub(super) fn scenario(&self, raw: RawScenario) -> Result<Scenario, ScenarioError> {
        let network = self.network(&raw.network);
        let start = raw.start.unwrap_or(self.start);
        let hosts = self.hosts(&raw.host, start)?;
        let (vms, vm_entries) = self.vms(&Hosts::new(&hosts), &raw)?;
        let scenario = Scenario {
            name: raw.name.unwrap_or_else(|| default_name(self.origin)),
            seed: raw.seed,
            network,
            migration: raw.migration,
            controller: raw.controller,
            fleet: Fleet { hosts, vms },
        };
        // The one wall (evac_model::validate): every value is checked there,
        // as it is for sweeps and inventories; only where it is in this
        // file is the loader's.
        scenario
            .validate()
            .map_err(|invalid| self.refuse_invalid(invalid, &vm_entries))?;
        Ok(scenario)
    }

    /// The model's refusal, pointed at the file: `vm[i]` is the `[[vm]]`
    /// or `[[vm_group]]` entry the fleet's `i`th VM came from.
    fn refuse_invalid(&self, invalid: Invalid, vm_entries: &VmEntries) -> ScenarioError {
        if invalid.path.0.is_empty() {
            return self.refuse_whole(invalid.message);
        }
        let path = match invalid.path.entry_index("vm").and_then(|i| vm_entries.get(i)) {
            Some(entry) => {
                let rest = invalid.path.tail(2);
                let rest = match (entry.group, rest.0.first()) {
                    // A group's VMs are named after its prefix.
                    (true, Some(Step::Key(key))) if key == "name" => FieldPath::top("prefix"),
                    _ => rest,
                };
                entry.path().join(&rest)
            }
            None => invalid.path,
        };
        self.refuse(&path, invalid.message)
    }

    /// A refusal about the value at `path`.
    pub(super) fn refuse(&self, path: &FieldPath, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            at: Location {
                origin: self.origin.to_owned(),
                line: self.locator.line(path),
            },
            field: self.locator.describe(path),
            message: message.into(),
        }
    }

    /// A refusal about the scenario as a whole.
    fn refuse_whole(&self, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            at: Location {
                origin: self.origin.to_owned(),
                line: None,
            },
            field: None,
            message: message.into(),
        }
    }

    /// `[[vm]] "web-1" at line 20`, to point at an earlier definition.
    fn point_at(&self, path: &FieldPath) -> String {
        let what = self.locator.describe(path).unwrap_or_default();
        match self.locator.line(path) {
            Some(line) => format!("{what} at line {line}"),
            None => what,
        }
    }

    fn network(&self, raw: &RawNetwork) -> Network {
        Network {
            wan_bandwidth: raw.wan_bandwidth,
            wan_rtt: raw.wan_rtt,
            tcp_window: raw.tcp_window,
            wan_trace: raw
                .wan_trace
                .iter()
                .map(|point| TracePoint {
                    at: point.at,
                    bandwidth: point.bandwidth,
                })
                .collect(),
        }
    }

    /// The hosts, their power-offs counted from `start`.
    fn hosts(&self, raw: &[RawHost], start: Timestamp) -> Result<Vec<Host>, ScenarioError> {
        let mut first_named: HashMap<&str, usize> = HashMap::new();
        for (index, host) in raw.iter().enumerate() {
            let entry = FieldPath::entry("host", index);
            let name = entry.clone().key("name");
            if host.name.trim().is_empty() {
                return Err(self.refuse(&name, "a host needs a name"));
            }
            if host.name == ROUND_ROBIN {
                return Err(self.refuse(
                    &name,
                    "`round-robin` is reserved: in a [[vm_group]], host = \"round-robin\" \
                     spreads the VMs over the source hosts",
                ));
            }
            if let Some(&first) = first_named.get(host.name.as_str()) {
                return Err(self.refuse(
                    &name,
                    format!(
                        "duplicate host name `{}`: {} has it already",
                        host.name,
                        self.point_at(&FieldPath::entry("host", first))
                    ),
                ));
            }
            first_named.insert(&host.name, index);
        }
        Ok(raw
            .iter()
            .map(|host| Host {
                name: host.name.clone(),
                site: host.site,
                nic: host.nic,
                memory: host.memory,
                power_off_at: host.power_off_at.map(|at| at.resolve(start)),
                migration_cpus: host.migration_cpus,
                power_trace: host
                    .power_trace
                    .iter()
                    .map(|change| PowerChange {
                        at: change.at,
                        power_off_at: change.power_off_at.map(|at| at.resolve(start)),
                    })
                    .collect(),
            })
            .collect())
    }

    /// The VMs of every `[[vm]]` and `[[vm_group]]` in file order, and for
    /// each the entry it came from.
    fn vms(&self, hosts: &Hosts, raw: &RawScenario) -> Result<(Vec<Vm>, VmEntries), ScenarioError> {
        // A file of one kind is in order already, and its positions are not
        // read; a file of both is put in order by where each entry starts.
        let mixed = !raw.vm.is_empty() && !raw.vm_group.is_empty();
        let at = |array: &str, i: usize| mixed.then(|| self.locator.entry_offset(array, i)).flatten();
        let singles = raw
            .vm
            .iter()
            .enumerate()
            .map(|(i, vm)| (at("vm", i), Entry::Single(i, vm)));
        let groups = raw
            .vm_group
            .iter()
            .enumerate()
            .map(|(i, group)| (at("vm_group", i), Entry::Group(i, group)));
        let mut entries: Vec<_> = singles.chain(groups).collect();
        // Every entry that parsed has a position; the stable sort keeps
        // [[vm]] before [[vm_group]] should one ever lack it.
        if mixed {
            entries.sort_by_key(|(at, _)| at.unwrap_or(usize::MAX));
        }

        // Room for every VM at once: a fleet of a million grew by doubling
        // (and a group's VMs were copied twice on their way in), which cost
        // more in page faults than making the VMs. A hint only: a file of
        // many large groups grows past it rather than reserving it all.
        let count = raw.vm.len()
            + raw
                .vm_group
                .iter()
                .map(|group| group.count.min(MAX_GROUP_COUNT) as usize)
                .sum::<usize>();
        let mut vms = Vec::with_capacity(count.min(MAX_RESERVED_VMS));
        let mut vm_entries = VmEntries::default();
        vm_entries.of_vm.reserve(count.min(MAX_RESERVED_VMS));
        for (_, entry) in entries {
            let entry_at = entry_index(vm_entries.entries.len());
            let first = vms.len();
            let (this, made) = match entry {
                Entry::Single(index, vm) => {
                    let this = VmEntry {
                        index: entry_index(index),
                        group: false,
                    };
                    (this, self.single(hosts, &this.path(), vm).map(|vm| vms.push(vm)))
                }
                Entry::Group(index, group) => {
                    let this = VmEntry {
                        index: entry_index(index),
                        group: true,
                    };
                    (
                        this,
                        self.group(hosts, &this.path(), index, group, raw.seed, &mut vms),
                    )
                }
            };
            if let Err(error) = made {
                // A name defined twice in the entries before this one is
                // refused first, as the file is read in order.
                vms.truncate(first);
                self.unique_names(&vms, &vm_entries)?;
                return Err(error);
            }
            vm_entries.entries.push(this);
            vm_entries.of_vm.resize(vms.len(), entry_at);
        }
        self.unique_names(&vms, &vm_entries)?;
        Ok((vms, vm_entries))
    }

    /// Refuses the first VM, in file order, whose name an earlier one has.
    fn unique_names(&self, vms: &[Vm], vm_entries: &VmEntries) -> Result<(), ScenarioError> {
        // Where each VM name was first defined: its entry.
        let mut defined: HashMap<&str, u32> = HashMap::with_capacity(vms.len());
        for (vm, &entry) in vms.iter().zip(&vm_entries.of_vm) {
            if let Some(&first) = defined.get(vm.name.as_str()) {
                let this = vm_entries.entries[entry as usize];
                let name_field = this.path().key(if this.group { "prefix" } else { "name" });
                return Err(self.refuse(
                    &name_field,
                    format!(
                        "duplicate VM name `{}`: {} has it already",
                        vm.name,
                        self.point_at(&vm_entries.entries[first as usize].path())
                    ),
                ));
            }
            defined.insert(&vm.name, entry);
        }
        Ok(())
    }

    fn single(&self, hosts: &Hosts, entry: &FieldPath, raw: &RawVm) -> Result<Vm, ScenarioError> {
        if raw.name.trim().is_empty() {
            return Err(self.refuse(&entry.clone().key("name"), "a VM needs a name"));
        }
        let host = self.source_host(hosts, &raw.host, &entry.clone().key("host"))?;
        // Checked by the model, with the rest of the VM's values.
        let working_set = raw.working_set.unwrap_or(raw.memory);
        let destination = self.pinned_destination(hosts, raw.destination.as_deref(), entry)?;
        self.check_disk(raw.disk, &raw.name, entry)?;
        let mut vm = Vm {
            name: raw.name.clone(),
            host,
            memory: raw.memory,
            dirty_rate: raw.dirty_rate.unwrap_or(BytesPerSec::ZERO),
            working_set,
            priority: raw.priority,
            destination,
            disk: raw.disk,
            profile: MemoryProfile::default(),
        };
        let short_form = raw.dirty_rate.is_some() || raw.working_set.is_some();
        self.profile(
            entry,
            &mut vm,
            (raw.zero_fraction, raw.compression_ratio),
            raw.dirty_curve.as_ref(),
            short_form,
        )?;
        Ok(vm)
    }

    /// Sets `vm`'s memory profile from its entry's `zero_fraction` and
    /// `compression_ratio` (`shares`, absent: the defaults) and
    /// `dirty_curve`; a curve and the short form (`short_form`: the entry
    /// gives `dirty_rate` or `working_set`) are one or the other.
    pub(super) fn profile(
        &self,
        entry: &FieldPath,
        vm: &mut Vm,
        shares: (Option<f64>, Option<f64>),
        curve: Option<&Vec<DirtyPoint>>,
        short_form: bool,
    ) -> Result<(), ScenarioError> {
        let default = MemoryProfile::default();
        vm.profile.zero_fraction = shares.0.unwrap_or(default.zero_fraction);
        vm.profile.compression_ratio = shares.1.unwrap_or(default.compression_ratio);
        if let Some(curve) = curve {
            if short_form {
                return Err(self.refuse(
                    &entry.clone().key("dirty_curve"),
                    "a dirty curve says what `dirty_rate` and `working_set` would: give the curve, or \
                     those two, not both",
                ));
            }
            if curve.is_empty() {
                return Err(self.refuse(
                    &entry.clone().key("dirty_curve"),
                    "an empty dirty curve says nothing; give points like { after = \"1 s\", dirtied = \"512 MiB\" }, \
                     or leave it out for an idle guest",
                ));
            }
            vm.set_dirty_curve(curve.clone());
        }
        Ok(())
    }

    /// A disk within [`MAX_DISK`].
    pub(super) fn check_disk(&self, disk: Bytes, vm: &str, entry: &FieldPath) -> Result<(), ScenarioError> {
        if disk > MAX_DISK {
            return Err(self.refuse(
                &entry.clone().key("disk"),
                format!("VM `{vm}` has {disk} of local disk, more than the {MAX_DISK} a VM may have"),
            ));
        }
        Ok(())
    }

    /// The source host a VM runs on.
    pub(super) fn source_host(
        &self,
        hosts: &Hosts,
        name: &str,
        field: &FieldPath,
    ) -> Result<HostId, ScenarioError> {
        self.host_on(
            hosts,
            name,
            field,
            Site::Source,
            "a VM to evacuate runs on a source host",
        )
    }

    /// The destination host a VM is pinned to, if it is.
    pub(super) fn pinned_destination(
        &self,
        hosts: &Hosts,
        name: Option<&str>,
        entry: &FieldPath,
    ) -> Result<Option<HostId>, ScenarioError> {
        name.map(|name| {
            let field = entry.clone().key("destination");
            self.host_on(
                hosts,
                name,
                &field,
                Site::Destination,
                "a VM can be pinned to a destination host only",
            )
        })
        .transpose()
    }

    fn host_on(
        &self,
        hosts: &Hosts,
        name: &str,
        field: &FieldPath,
        site: Site,
        rule: &str,
    ) -> Result<HostId, ScenarioError> {
        let site_name = |site: Site| match site {
            Site::Source => "source",
            Site::Destination => "destination",
        };
        // Only for a refusal: a fleet of a million VMs on thousands of
        // hosts does not list them a million times.
        let choices = || {
            let candidates: Vec<String> = hosts
                .list
                .iter()
                .filter(|host| host.site == site)
                .map(|host| format!("`{}`", host.name))
                .collect();
            format!("the {} hosts are {}", site_name(site), candidates.join(", "))
        };
        match hosts.by_name.get(name) {
            None => Err(self.refuse(field, format!("no [[host]] is named `{name}`; {}", choices()))),
            Some(&id) if hosts.list[id.0].site != site => Err(self.refuse(
                field,
                format!(
                    "`{name}` is a {} host, but {rule}; {}",
                    site_name(hosts.list[id.0].site),
                    choices()
                ),
            )),
            Some(&id) => Ok(id),
        }
    }
}
