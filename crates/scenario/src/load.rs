//! From text to a checked [`Scenario`]: read the TOML, expand the groups,
//! resolve host names, and refuse anything that could not run, all before
//! anything runs.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use evac_model::validate::Step;
use evac_model::wall_clock::Timestamp;
use evac_model::{
    Bytes, BytesPerSec, DirtyPoint, Fleet, Host, HostId, Invalid, MemoryProfile, Network, PowerChange, Site,
    TracePoint, Vm,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Location, ScenarioError};
use crate::locate::{check_syntax, line_at, FieldPath, Locator};
use crate::raw::{RawGroup, RawHost, RawNetwork, RawScenario, RawVm, RawVmTable, ROUND_ROBIN};
use crate::split::{self, Split, SPLIT_ARRAY};
use crate::Scenario;

pub(crate) fn load(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
    load_at(text, origin, Timestamp::now())
}

/// Loads `text`; a file without its own `start` starts at `start`.
pub(crate) fn load_at(text: &str, origin: &str, start: Timestamp) -> Result<Scenario, ScenarioError> {
    load_with(text, origin, split::split(text), start)
}

/// Loads `text`, with its `[[vm]]` tables cut out by `split` if given.
fn load_with(
    text: &str,
    origin: &str,
    split: Option<Split>,
    start: Timestamp,
) -> Result<Scenario, ScenarioError> {
    let (locator, raw) = match split {
        Some(split) => read_apart(text, origin, split)?,
        None => read_whole(text, origin)?,
    };
    Checker {
        locator: &locator,
        origin,
        start,
    }
    .scenario(raw)
}

/// Reads `text` as one document.
fn read_whole<'t>(text: &'t str, origin: &str) -> Result<(Locator<'t>, RawScenario), ScenarioError> {
    let locator = Locator::parse(text).map_err(|error| syntax_error(text, origin, &error, 0))?;
    let raw = serde_path_to_error::deserialize(toml::Deserializer::new(text))
        .map_err(|error| data_error(text, origin, &locator, error, 0, None))?;
    Ok((locator, raw))
}

/// Reads `text` with its `[[vm]]` tables cut out (`crate::split`): the rest
/// as one document, then each table on its own, kept only as its
/// [`RawVm`]. A refusal is the one reading the whole text would give: the
/// file's first syntax error, else the first value serde would meet.
fn read_apart<'t>(
    text: &'t str,
    origin: &str,
    split: Split,
) -> Result<(Locator<'t>, RawScenario), ScenarioError> {
    let Split { rest, tables } = split;
    let first_table = tables.first().map_or(0, |table| table.start);
    // The file's first syntax error, by (stage, offset): see `NotToml`.
    let mut not_toml: Option<NotToml> = None;
    let mut note = |found: NotToml| {
        if not_toml
            .as_ref()
            .map_or(true, |first| found.rank() < first.rank())
        {
            not_toml = Some(found);
        }
    };
    let (locator, tables) = match Locator::parse_apart(text, &rest, SPLIT_ARRAY, tables) {
        Ok(locator) => (Some(locator), Vec::new()),
        Err((error, tables)) => {
            note(NotToml::of(&rest, error, 0));
            (None, tables)
        }
    };
    let rest_read: Option<Result<RawScenario, _>> = locator
        .as_ref()
        .map(|_| serde_path_to_error::deserialize(toml::Deserializer::new(rest.as_str())));
    drop(rest);
    // Serde meets the document's keys in the order they first appear: the
    // rest's refusal comes first when its key appears before `[[vm]]`.
    let rest_refused_first = match (&rest_read, &locator) {
        (Some(Err(error)), Some(locator)) => match error.path().iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) => locator
                .offset(&FieldPath::top(key))
                .is_some_and(|at| at < first_table),
            // A refusal of the document itself (a missing table) comes
            // once every key has been read.
            _ => false,
        },
        _ => false,
    };
    let tables = locator
        .as_ref()
        .map_or(&tables[..], |locator| locator.tables_apart());
    let mut vms = Vec::with_capacity(tables.len());
    let mut vm_refused = None;
    for (index, table) in tables.iter().enumerate() {
        let table_text = &text[table.clone()];
        match serde_path_to_error::deserialize::<_, RawVmTable>(toml::Deserializer::new(table_text)) {
            Ok(read) => {
                if vm_refused.is_none() {
                    vms.extend(read.vm);
                }
            }
            Err(error) => {
                if let Err(syntax) = check_syntax(table_text) {
                    note(NotToml::of(table_text, syntax, table.start));
                } else if vm_refused.is_none() && !rest_refused_first {
                    vm_refused = Some((error, table.start, index));
                }
            }
        }
    }
    if let Some(not_toml) = not_toml {
        return Err(syntax_error(text, origin, &not_toml.error, not_toml.base));
    }
    let (Some(locator), Some(rest_read)) = (locator, rest_read) else {
        unreachable!("the rest was read unless it was not TOML");
    };
    let refused = |(error, base, index)| data_error(text, origin, &locator, error, base, Some(index));
    let mut raw = match (rest_read, vm_refused) {
        (Err(error), _) if rest_refused_first => {
            return Err(data_error(text, origin, &locator, error, 0, None))
        }
        (_, Some(vm)) => return Err(refused(vm)),
        (Err(error), None) => return Err(data_error(text, origin, &locator, error, 0, None)),
        (Ok(raw), None) => raw,
    };
    raw.vm = vms;
    Ok((locator, raw))
}

/// A part of the text that is not TOML as the [`Locator`] reads it.
/// Reading the whole text, the TOML parser stops at the file's first error;
/// read apart, each part's first error is ranked by where it is in the
/// file. Should the locator ever refuse what the parser accepts, the
/// parser's refusals still come first, as they would reading it whole.
struct NotToml {
    error: toml::de::Error,
    /// Where the part starts in the text.
    base: usize,
    /// Whether the TOML parser refused it (rather than the locator).
    parser: bool,
}

impl NotToml {
    fn of(part: &str, error: toml::de::Error, base: usize) -> Self {
        let parser = toml::from_str::<toml::Table>(part).is_err();
        Self { error, base, parser }
    }

    fn rank(&self) -> (bool, usize) {
        let at = self
            .error
            .span()
            .map_or(usize::MAX, |span| self.base + span.start);
        (!self.parser, at)
    }
}

/// `text` (or a table of it starting at `base`) is not TOML.
fn syntax_error(text: &str, origin: &str, error: &toml::de::Error, base: usize) -> ScenarioError {
    ScenarioError::Syntax {
        at: Location {
            origin: origin.to_owned(),
            line: error.span().map(|span| line_at(text, base + span.start)),
        },
        message: one_line(error.message()),
    }
}

/// Serde's refusal of a value of `text` (or of the `[[vm]]` table number
/// `vm`, read on its own from `base`).
fn data_error(
    text: &str,
    origin: &str,
    locator: &Locator,
    error: serde_path_to_error::Error<toml::de::Error>,
    base: usize,
    vm: Option<usize>,
) -> ScenarioError {
    let mut path = crate::locate::path_from_serde(error.path());
    if let (Some(index), Some(step @ Step::Index(0))) = (vm, path.0.get_mut(1)) {
        *step = Step::Index(index);
    }
    let error = error.into_inner();
    ScenarioError::Invalid {
        at: Location {
            origin: origin.to_owned(),
            line: error.span().map(|span| line_at(text, base + span.start)),
        },
        field: locator.describe(&path),
        message: evac_model::suggest::serde_message(&one_line(error.message())),
    }
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
        GroupQuantity::ZeroFraction => 2 * LATER_STREAMS + group as u64,
        GroupQuantity::CompressionRatio => 3 * LATER_STREAMS + group as u64,
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
    ZeroFraction,
    CompressionRatio,
}

impl GroupQuantity {
    const COUNT: u64 = 3;
}

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
struct Hosts<'h> {
    list: &'h [Host],
    by_name: HashMap<&'h str, HostId>,
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
struct Checker<'a> {
    locator: &'a Locator<'a>,
    origin: &'a str,
    /// The evacuation's start when the file gives none.
    start: Timestamp,
}

impl Checker<'_> {
    fn scenario(&self, raw: RawScenario) -> Result<Scenario, ScenarioError> {
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
        let singles = raw.vm.iter().enumerate().map(|(i, vm)| {
            let at = self.locator.entry_offset("vm", i);
            (at, Entry::Single(i, vm))
        });
        let groups = raw.vm_group.iter().enumerate().map(|(i, group)| {
            let at = self.locator.entry_offset("vm_group", i);
            (at, Entry::Group(i, group))
        });
        let mut entries: Vec<_> = singles.chain(groups).collect();
        // Every entry that parsed has a position; the stable sort keeps
        // [[vm]] before [[vm_group]] should one ever lack it.
        entries.sort_by_key(|(at, _)| at.unwrap_or(usize::MAX));

        let mut vms = Vec::with_capacity(raw.vm.len());
        let mut vm_entries = VmEntries::default();
        // Where each VM name was first defined: its entry. A `[[vm]]`'s
        // name is borrowed from the raw scenario, a group's made here.
        let mut defined: HashMap<Cow<'_, str>, u32> = HashMap::with_capacity(raw.vm.len());
        for (_, entry) in entries {
            let (this, made) = match entry {
                Entry::Single(index, vm) => {
                    let this = VmEntry {
                        index: entry_index(index),
                        group: false,
                    };
                    (
                        this,
                        vec![(self.single(hosts, &this.path(), vm)?, Some(&*vm.name))],
                    )
                }
                Entry::Group(index, group) => {
                    let this = VmEntry {
                        index: entry_index(index),
                        group: true,
                    };
                    let made = self.group(hosts, &this.path(), index, group, raw.seed)?;
                    (this, made.into_iter().map(|vm| (vm, None)).collect())
                }
            };
            let index = entry_index(vm_entries.entries.len());
            vm_entries.entries.push(this);
            for (vm, raw_name) in made {
                let name = raw_name.map_or_else(|| Cow::Owned(vm.name.clone()), Cow::Borrowed);
                if let Some(&first) = defined.get(&name) {
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
                defined.insert(name, index);
                vm_entries.of_vm.push(index);
                vms.push(vm);
            }
        }
        Ok((vms, vm_entries))
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
    fn profile(
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
        hosts: &Hosts,
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
                .list
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
        let mut zero_rng = group_rng(seed, index, GroupQuantity::ZeroFraction);
        let mut ratio_rng = group_rng(seed, index, GroupQuantity::CompressionRatio);
        let short_form = raw.dirty_rate.is_some() || raw.working_set.is_some();
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
            let dirty_rate = raw
                .dirty_rate
                .as_ref()
                .map_or(BytesPerSec::ZERO, |spec| spec.sample(&mut dirty_rng));
            // A guest cannot keep writing to more memory than it has.
            let working_set = raw
                .working_set
                .as_ref()
                .map_or(memory, |spec| spec.sample(&mut working_set_rng).min(memory));
            let disk = raw.disk.sample(&mut disk_rng);
            self.check_disk(disk, &name, entry)?;
            let mut vm = Vm {
                name,
                host: on[(n - 1) % on.len()],
                memory,
                dirty_rate,
                working_set,
                priority: raw.priority,
                destination,
                disk,
                profile: MemoryProfile::default(),
            };
            let shares = (
                raw.zero_fraction
                    .as_ref()
                    .map(|spec| spec.sample(&mut zero_rng).0),
                raw.compression_ratio
                    .as_ref()
                    .map(|spec| spec.sample(&mut ratio_rng).0),
            );
            self.profile(entry, &mut vm, shares, raw.dirty_curve.as_ref(), short_form)?;
            vms.push(vm);
        }
        Ok(vms)
    }

    /// The source host a VM runs on.
    fn source_host(&self, hosts: &Hosts, name: &str, field: &FieldPath) -> Result<HostId, ScenarioError> {
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

#[cfg(test)]
mod tests {
    //! Reading the `[[vm]]` tables apart is an optimisation: whatever the
    //! text, it must give what reading the whole document gives, the same
    //! scenario or the same refusal, word for word.

    use std::path::Path;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Both ways, when the text can be split at all; `None` when it cannot.
    fn both(text: &str) -> Option<(String, String)> {
        let split = split::split(text)?;
        let show = |result: Result<Scenario, ScenarioError>| match result {
            Ok(scenario) => format!("{scenario:?}"),
            Err(error) => format!("refused: {error}"),
        };
        Some((
            show(load_with(text, "x.toml", Some(split), Timestamp::now())),
            show(load_with(text, "x.toml", None, Timestamp::now())),
        ))
    }

    /// Every scenario of the repo that has `[[vm]]` tables.
    fn seeds() -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut texts = Vec::new();
        for dir in ["scenarios", "crates/fuzz/corpus", "crates/lab/labs", "examples"] {
            let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
                .unwrap_or_else(|e| panic!("{dir}: {e}"))
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
                .collect();
            paths.sort();
            for path in paths {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.contains("[[vm]]") {
                    texts.push(text);
                }
            }
        }
        assert!(
            texts.len() >= 8,
            "only {} scenarios with [[vm]] found",
            texts.len()
        );
        texts
    }

    /// Lines that make TOML (and the splitter) work: headers, strings,
    /// brackets, keys named `vm`, bad values.
    const PIECES: &[&str] = &[
        "[[vm]]",
        "[[vm]]\nname = \"z\"\nhost = \"src-1\"\nmemory = \"1 GiB\"",
        "[[ vm ]] # a comment",
        "[vm]",
        "[vm.disk]",
        "vm = 1",
        "vm.x = 2",
        "\"vm\" = 3",
        "[[vm_group]]",
        "[[host]]",
        "[network]",
        "[controller]",
        "[migration]",
        "\"\"\"",
        "'''",
        "x = \"\"\"",
        "x = [",
        "]",
        "[1, 2],",
        "name = \"dup\"",
        "name = \"web-1\"",
        "memory = \"4 GB/s\"",
        "memory = 4",
        "colour = \"blue\"",
        "host = \"nowhere\"",
        "priority = -1",
        "seed = 1",
        "name = = 1",
        "# [[vm]]",
        "wan_bandwidth = \"1 Gbps\"",
        "s = \"\\\"[[vm]]\"",
        "",
    ];

    fn mutate(text: &str, rng: &mut ChaCha8Rng) -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for _ in 0..rng.gen_range(1..=3) {
            let at = rng.gen_range(0..=lines.len());
            match rng.gen_range(0..5) {
                0 | 1 => lines.insert(at, PIECES[rng.gen_range(0..PIECES.len())].to_owned()),
                2 if at < lines.len() => {
                    lines.remove(at);
                }
                3 if at < lines.len() => {
                    let line = lines[at].clone();
                    lines.insert(rng.gen_range(0..=lines.len()), line);
                }
                _ if at < lines.len() => {
                    // A character put into a line.
                    let line = &mut lines[at];
                    let cut = rng.gen_range(0..=line.len());
                    if line.is_char_boundary(cut) {
                        let c = ['"', '[', ']', '=', '#', '\'', 'x', '0'][rng.gen_range(0..8)];
                        line.insert(cut, c);
                    }
                }
                _ => {}
            }
        }
        lines.join("\n") + "\n"
    }

    #[test]
    fn a_sub_table_before_its_table_is_read() {
        // Refused as "not valid TOML" before the locator read toml_edit's
        // spans itself.
        let text = "[controller.aimd]\nmax_window = 3\n[controller]\npolicy = \"aimd-global\"\n\
                    [network]\nwan_bandwidth = \"1 Gbps\"\n\
                    [[host]]\nname = \"s\"\nsite = \"source\"\nnic = \"1 Gbps\"\n\
                    [[host]]\nname = \"d\"\nsite = \"destination\"\nnic = \"1 Gbps\"\n";
        let scenario = load(text, "x.toml").expect("a valid scenario");
        assert_eq!(scenario.controller.aimd.max_window, 3);
        let error = load(&text.replace("max_window = 3", "max_window = 0"), "x.toml").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("x.toml:2: field `aimd.max_window` of [controller]: "),
            "{error}"
        );
    }

    /// Mutations per scenario; `EVAC_SPLIT_MUTATIONS` for a longer run.
    fn mutations() -> usize {
        std::env::var("EVAC_SPLIT_MUTATIONS").map_or(250, |n| n.parse().expect("a count"))
    }

    #[test]
    fn reading_apart_gives_what_reading_whole_gives() {
        let mutations = mutations();
        let mut rng = ChaCha8Rng::seed_from_u64(18);
        let (mut compared, mut refused) = (0, 0);
        for seed in seeds() {
            let (apart, whole) = both(&seed).expect("a scenario with [[vm]] tables splits");
            assert_eq!(apart, whole);
            for _ in 0..mutations {
                let text = mutate(&seed, &mut rng);
                if let Some((apart, whole)) = both(&text) {
                    assert_eq!(apart, whole, "on:\n{text}");
                    compared += 1;
                    refused += usize::from(whole.starts_with("refused"));
                }
            }
        }
        // Both kinds of outcome were compared, many times.
        eprintln!("{compared} compared, {refused} refused");
        assert!(
            compared > 2000 && refused > 1000 && compared - refused > 300,
            "{compared} compared, {refused} refused"
        );
    }
}
