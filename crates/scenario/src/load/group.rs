//! A `[[vm_group]]` expanded into its VMs: each quantity drawn from a
//! seeded stream of its own, so that a file gives the same fleet on every
//! machine and an edit to one group or quantity leaves the others' draws as
//! they were. Apart from the other checks (`super::check`) because it is
//! the loader's one part that draws.

use evac_model::{Bytes, BytesPerSec, HostId, MemoryProfile, Site, Vm};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::check::{Checker, Hosts};
use crate::error::ScenarioError;
use crate::locate::FieldPath;
use crate::raw::{RawGroup, ROUND_ROBIN};

/// The most VMs one group may generate: far beyond any data center's rack,
/// and low enough that a stray digit is refused rather than exhausting
/// memory.
pub(super) const MAX_GROUP_COUNT: u32 = 1_000_000;

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

impl Checker<'_> {
    /// The VMs `<prefix>-1` to `<prefix>-<count>`, drawn from the group's
    /// distributions, added to `vms`.
    pub(super) fn group(
        &self,
        hosts: &Hosts,
        entry: &FieldPath,
        index: usize,
        raw: &RawGroup,
        seed: u64,
        vms: &mut Vec<Vm>,
    ) -> Result<(), ScenarioError> {
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
        Ok(())
    }
}
