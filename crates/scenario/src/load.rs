//! From text to a checked [`Scenario`]: read the TOML, expand the groups,
//! resolve host names, and refuse anything that could not run, all before
//! anything runs.

use std::collections::HashMap;
use std::path::Path;

use evac_model::validate::Step;
use evac_model::{Bytes, Fleet, Host, HostId, Invalid, Network, Site, TracePoint, Vm};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Location, ScenarioError};
use crate::locate::{line_at, FieldPath, Locator};
use crate::raw::{RawGroup, RawHost, RawNetwork, RawScenario, RawVm, ROUND_ROBIN};
use crate::Scenario;

pub(crate) fn load(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
    let locator = Locator::parse(text).map_err(|error| ScenarioError::Syntax {
        at: Location {
            origin: origin.to_owned(),
            line: error.span().map(|span| line_at(text, span.start)),
        },
        message: one_line(error.message()),
    })?;
    let raw: RawScenario =
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|error| {
            let path = crate::locate::path_from_serde(error.path());
            let error = error.into_inner();
            ScenarioError::Invalid {
                at: Location {
                    origin: origin.to_owned(),
                    line: error.span().map(|span| line_at(text, span.start)),
                },
                field: locator.describe(&path),
                message: evac_model::suggest::serde_message(&one_line(error.message())),
            }
        })?;
    Checker {
        locator: &locator,
        origin,
    }
    .scenario(raw)
}

/// The toml crate's messages span lines ("invalid string\nexpected ..."); a
/// refusal reads best on one.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join("; ")
}

/// The name a scenario without `name` goes by: its file's stem.
fn default_name(origin: &str) -> String {
    Path::new(origin)
        .file_stem()
        .map_or_else(|| origin.to_owned(), |stem| stem.to_string_lossy().into_owned())
}

/// The most VMs one group may generate: far beyond any data center's rack,
/// and low enough that a stray digit is refused rather than exhausting
/// memory.
const MAX_GROUP_COUNT: u32 = 1_000_000;

/// Each `[[vm_group]]` draws each of its quantities from a ChaCha8 stream
/// of its own (the seed is the key, the group and the quantity pick the
/// stream), so that adding a group, or turning one quantity into a
/// distribution, leaves every other draw as it was.
fn group_rng(seed: u64, group: usize, quantity: GroupQuantity) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let stream = match quantity {
        // Added later: streams of their own above the first three's, so
        // the draws of files written before `disk` existed are unchanged.
        GroupQuantity::Disk => LATER_STREAMS + group as u64,
        _ => group as u64 * GroupQuantity::COUNT + quantity as u64,
    };
    rng.set_stream(stream);
    rng
}

/// Where the streams of quantities added after the first three start.
const LATER_STREAMS: u64 = 1 << 40;

/// The largest local disk a VM may have: 1 PiB, far beyond a real VM's and
/// low enough that a stray digit is refused.
const MAX_DISK: Bytes = Bytes(1 << 50);

#[derive(Clone, Copy)]
enum GroupQuantity {
    Memory,
    DirtyRate,
    WorkingSet,
    Disk,
}

impl GroupQuantity {
    const COUNT: u64 = 3;
}

/// The entry of the file a VM of the fleet came from.
struct VmEntry {
    path: FieldPath,
    /// A `[[vm_group]]`'s VM, named after its `prefix`.
    group: bool,
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
    fn get(&self, vm: usize) -> Option<&VmEntry> {
        self.of_vm.get(vm).map(|&e| &self.entries[e as usize])
    }
}

/// A `[[vm]]` or a `[[vm_group]]`, in the order of the file.
enum Entry<'r> {
    Single(usize, &'r RawVm),
    Group(usize, &'r RawGroup),
}

/// Checks the raw scenario, pointing every refusal at its place in the text.
struct Checker<'a> {
    locator: &'a Locator<'a>,
    origin: &'a str,
}

impl Checker<'_> {
    fn scenario(&self, raw: RawScenario) -> Result<Scenario, ScenarioError> {
        let network = self.network(&raw.network);
        let hosts = self.hosts(&raw.host)?;
        let (vms, vm_entries) = self.vms(&hosts, &raw)?;
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
                entry.path.clone().join(&rest)
            }
            None => invalid.path,
        };
        self.refuse(&path, invalid.message)
    }

    /// A refusal about the value at `path`.
    fn refuse(&self, path: &FieldPath, message: impl Into<String>) -> ScenarioError {
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

    fn hosts(&self, raw: &[RawHost]) -> Result<Vec<Host>, ScenarioError> {
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
                power_off_at: host.power_off_at,
            })
            .collect())
    }

    /// The VMs of every `[[vm]]` and `[[vm_group]]` in file order, and for
    /// each the entry it came from.
    fn vms(&self, hosts: &[Host], raw: &RawScenario) -> Result<(Vec<Vm>, VmEntries), ScenarioError> {
        let singles = raw.vm.iter().enumerate().map(|(i, vm)| {
            let at = self.locator.offset(&FieldPath::entry("vm", i));
            (at, Entry::Single(i, vm))
        });
        let groups = raw.vm_group.iter().enumerate().map(|(i, group)| {
            let at = self.locator.offset(&FieldPath::entry("vm_group", i));
            (at, Entry::Group(i, group))
        });
        let mut entries: Vec<_> = singles.chain(groups).collect();
        // Every entry that parsed has a position; the stable sort keeps
        // [[vm]] before [[vm_group]] should one ever lack it.
        entries.sort_by_key(|(at, _)| at.unwrap_or(usize::MAX));

        let mut vms = Vec::new();
        let mut vm_entries = VmEntries::default();
        // Where each VM name was first defined: its entry.
        let mut defined: HashMap<String, u32> = HashMap::new();
        for (_, entry) in entries {
            let (entry_path, name_field, made) = match entry {
                Entry::Single(index, vm) => {
                    let path = FieldPath::entry("vm", index);
                    (
                        path.clone(),
                        path.clone().key("name"),
                        vec![self.single(hosts, &path, vm)?],
                    )
                }
                Entry::Group(index, group) => {
                    let path = FieldPath::entry("vm_group", index);
                    let made = self.group(hosts, &path, index, group, raw.seed)?;
                    (path.clone(), path.key("prefix"), made)
                }
            };
            let index = u32::try_from(vm_entries.entries.len()).expect("fewer entries than VMs");
            vm_entries.entries.push(VmEntry {
                group: entry_path.entry_index("vm_group").is_some(),
                path: entry_path,
            });
            for vm in made {
                if let Some(&first) = defined.get(&vm.name) {
                    return Err(self.refuse(
                        &name_field,
                        format!(
                            "duplicate VM name `{}`: {} has it already",
                            vm.name,
                            self.point_at(&vm_entries.entries[first as usize].path)
                        ),
                    ));
                }
                defined.insert(vm.name.clone(), index);
                vm_entries.of_vm.push(index);
                vms.push(vm);
            }
        }
        Ok((vms, vm_entries))
    }

    fn single(&self, hosts: &[Host], entry: &FieldPath, raw: &RawVm) -> Result<Vm, ScenarioError> {
        if raw.name.trim().is_empty() {
            return Err(self.refuse(&entry.clone().key("name"), "a VM needs a name"));
        }
        let host = self.source_host(hosts, &raw.host, &entry.clone().key("host"))?;
        // Checked by the model, with the rest of the VM's values.
        let working_set = raw.working_set.unwrap_or(raw.memory);
        let destination = self.pinned_destination(hosts, raw.destination.as_deref(), entry)?;
        self.check_disk(raw.disk, &raw.name, entry)?;
        Ok(Vm {
            name: raw.name.clone(),
            host,
            memory: raw.memory,
            dirty_rate: raw.dirty_rate,
            working_set,
            priority: raw.priority,
            destination,
            disk: raw.disk,
        })
    }

    /// A disk within [`MAX_DISK`].
    fn check_disk(&self, disk: Bytes, vm: &str, entry: &FieldPath) -> Result<(), ScenarioError> {
        if disk > MAX_DISK {
            return Err(self.refuse(
                &entry.clone().key("disk"),
                format!("VM `{vm}` has {disk} of local disk, more than the {MAX_DISK} a VM may have"),
            ));
        }
        Ok(())
    }

    /// The VMs `<prefix>-1` to `<prefix>-<count>`, drawn from the group's
    /// distributions.
    fn group(
        &self,
        hosts: &[Host],
        entry: &FieldPath,
        index: usize,
        raw: &RawGroup,
        seed: u64,
    ) -> Result<Vec<Vm>, ScenarioError> {
        if raw.prefix.trim().is_empty() {
            return Err(self.refuse(&entry.clone().key("prefix"), "a group needs a prefix"));
        }
        if raw.count == 0 {
            return Err(self.refuse(
                &entry.clone().key("count"),
                "a group of 0 VMs is empty; give a count of at least 1, or remove the group",
            ));
        }
        if raw.count > MAX_GROUP_COUNT {
            return Err(self.refuse(
                &entry.clone().key("count"),
                format!(
                    "{} VMs is more than the {MAX_GROUP_COUNT} a group may have",
                    raw.count
                ),
            ));
        }
        let on: Vec<HostId> = if raw.host == ROUND_ROBIN {
            hosts
                .iter()
                .enumerate()
                .filter(|(_, host)| host.site == Site::Source)
                .map(|(i, _)| HostId(i))
                .collect()
        } else {
            vec![self.source_host(hosts, &raw.host, &entry.clone().key("host"))?]
        };
        if on.is_empty() {
            return Err(self.refuse(
                &entry.clone().key("host"),
                "round-robin spreads the group over the source hosts, and there are none; add a [[host]] with site = \"source\"",
            ));
        }
        let destination = self.pinned_destination(hosts, raw.destination.as_deref(), entry)?;

        let mut memory_rng = group_rng(seed, index, GroupQuantity::Memory);
        let mut dirty_rng = group_rng(seed, index, GroupQuantity::DirtyRate);
        let mut working_set_rng = group_rng(seed, index, GroupQuantity::WorkingSet);
        let mut disk_rng = group_rng(seed, index, GroupQuantity::Disk);
        let mut vms = Vec::with_capacity(raw.count as usize);
        for n in 1..=raw.count as usize {
            let name = format!("{}-{n}", raw.prefix);
            let memory = raw.memory.sample(&mut memory_rng);
            if memory == Bytes::ZERO {
                return Err(self.refuse(
                    &entry.clone().key("memory"),
                    format!("VM `{name}` drew 0 B of memory, but every VM needs some; raise the lower bound"),
                ));
            }
            let dirty_rate = raw.dirty_rate.sample(&mut dirty_rng);
            // A guest cannot keep writing to more memory than it has.
            let working_set = raw
                .working_set
                .as_ref()
                .map_or(memory, |spec| spec.sample(&mut working_set_rng).min(memory));
            let disk = raw.disk.sample(&mut disk_rng);
            self.check_disk(disk, &name, entry)?;
            vms.push(Vm {
                name,
                host: on[(n - 1) % on.len()],
                memory,
                dirty_rate,
                working_set,
                priority: raw.priority,
                destination,
                disk,
            });
        }
        Ok(vms)
    }

    /// The source host a VM runs on.
    fn source_host(&self, hosts: &[Host], name: &str, field: &FieldPath) -> Result<HostId, ScenarioError> {
        self.host_on(
            hosts,
            name,
            field,
            Site::Source,
            "a VM to evacuate runs on a source host",
        )
    }

    /// The destination host a VM is pinned to, if it is.
    fn pinned_destination(
        &self,
        hosts: &[Host],
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
        hosts: &[Host],
        name: &str,
        field: &FieldPath,
        site: Site,
        rule: &str,
    ) -> Result<HostId, ScenarioError> {
        let site_name = |site: Site| match site {
            Site::Source => "source",
            Site::Destination => "destination",
        };
        let candidates: Vec<String> = hosts
            .iter()
            .filter(|host| host.site == site)
            .map(|host| format!("`{}`", host.name))
            .collect();
        let choices = format!("the {} hosts are {}", site_name(site), candidates.join(", "));
        match hosts.iter().position(|host| host.name == name) {
            None => Err(self.refuse(field, format!("no [[host]] is named `{name}`; {choices}"))),
            Some(index) if hosts[index].site != site => Err(self.refuse(
                field,
                format!(
                    "`{name}` is a {} host, but {rule}; {choices}",
                    site_name(hosts[index].site)
                ),
            )),
            Some(index) => Ok(HostId(index)),
        }
    }
}
