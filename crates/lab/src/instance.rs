//! A lab built from a scenario file: its hosts become namespaces, its WAN
//! the [`Topology`], its VMs real QEMU VMs (RAM of random bytes; a VM with
//! a `dirty_rate` runs the dirtying guest over its `working_set`, one with
//! a `dirty_curve` the guest that follows it, [`crate::curve`]), and an
//! inventory for `evac run` is written beside them.
//!
//! Everything of a lab lives under the names [`lab_prefix`] gives: the
//! namespaces `evlab-<name>-<pid>-*` and the directory
//! `/run/evac-lab/<name>-<pid>` (inventory, QMP sockets, RAM files, logs),
//! where `<pid>` is the process that built it and owns it. Dropping the
//! [`LabInstance`] removes all of it; [`crate::cleanup`] removes what a
//! killed process left.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use evac_model::{Bytes, Site};
use evac_qemu::Inventory;
use evac_scenario::Scenario;

use crate::capacity::{self, raise_fd_limit, Machine, Needs};
use crate::curve::{regions_for_curve, DirtyRegion};
use crate::topology::{Topology, TraceFollower};
use crate::vm::VmSpec;
use crate::{destination_args, Lab, DIRTY_WORKING_SET_START};

/// Where labs keep their files.
pub const LABS_DIR: &str = "/run/evac-lab";

/// The lab's name as it appears in namespace and directory names: ASCII
/// letters, digits and `_` kept, anything else `_`, at most 24 characters.
pub fn sanitize_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    if s.is_empty() {
        "lab".to_owned()
    } else {
        s
    }
}

/// `evlab-<name>-<pid>`: the prefix of the lab's namespaces.
pub fn lab_prefix(name: &str, pid: u32) -> String {
    format!("evlab-{}-{pid}", sanitize_name(name))
}

/// A built lab; dropping it stops its VMs (sources and destinations), the
/// delay line, and removes its namespaces and directory.
pub struct LabInstance {
    pub scenario: Scenario,
    pub dir: PathBuf,
    pub inventory_path: PathBuf,
    pub inventory: Inventory,
    vms: Option<Lab>,
    topology: Option<Topology>,
    trace: Option<TraceFollower>,
}

/// What can be checked of a lab file before anything is built.
fn check(scenario: &Scenario, origin: &str) -> Result<()> {
    let fleet = &scenario.fleet;
    for vm in &fleet.vms {
        let mib = vm.memory.0 >> 20;
        if vm.memory.0 % (1 << 20) != 0 || mib < 32 {
            bail!(
                "{origin}: field `memory` of VM \"{}\": the lab needs whole MiB, at least 32 MiB (got {})",
                vm.name,
                vm.memory
            );
        }
        if !vm.profile.dirty_curve.is_empty() {
            let start = DIRTY_WORKING_SET_START >> 20;
            let regions = regions_for_curve(&vm.profile.dirty_curve).map_err(|why| {
                anyhow::anyhow!("{origin}: field `dirty_curve` of VM \"{}\": {why}", vm.name)
            })?;
            let total: u64 = regions.iter().map(|r| r.mib).sum();
            if start + total > mib.min(2048) {
                bail!(
                    "{origin}: field `dirty_curve` of VM \"{}\": the lab's dirtying guest writes from {start} MiB on, \
                     so the curve's last point must be at most memory - {start} MiB ({} MiB here; got {total} MiB)",
                    vm.name,
                    mib.min(2048).saturating_sub(start),
                );
            }
        } else if vm.dirty_rate.0 > 0.0 {
            let start = DIRTY_WORKING_SET_START >> 20;
            let ws = vm.working_set.0 >> 20;
            if vm.working_set.0 % (1 << 20) != 0 || ws == 0 || start + ws > mib.min(2048) {
                bail!(
                    "{origin}: field `working_set` of VM \"{}\": the lab's dirtying guest writes from {start} MiB on, \
                     so its working set must be whole MiB and at most memory - {start} MiB ({} MiB here; got {})",
                    vm.name,
                    mib.min(2048).saturating_sub(start),
                    vm.working_set
                );
            }
        }
    }
    Ok(())
}

/// Whether this machine holds the lab ([`crate::capacity`]), with the
/// soft limit of open files raised to the hard one first.
fn fits_here(scenario: &Scenario, origin: &str) -> Result<()> {
    raise_fd_limit().context("raising the limit of open files")?;
    let needs = Needs {
        vms: scenario.fleet.vms.len(),
        hosts: scenario.fleet.hosts.len(),
        vm_memory: Bytes(scenario.fleet.vms.iter().map(|v| v.memory.0).sum()),
    };
    let machine = Machine::here(Path::new(LABS_DIR)).context("reading this machine's limits")?;
    capacity::check(&needs, &machine).map_err(|e| anyhow::anyhow!("{origin}: {e}"))
}

/// The prerequisites of a lab: root, `ip`/`tc`, QEMU, and the dirtying
/// guest when `dirtying`.
pub fn prerequisites(dirtying: bool) -> Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab needs root (it creates network namespaces, TUN devices and qdiscs): run it with sudo");
    }
    crate::netns_available().map_err(anyhow::Error::msg)?;
    crate::qemu_available().map_err(anyhow::Error::msg)?;
    if dirtying {
        crate::dirty_guest_available().map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

impl LabInstance {
    /// Builds the lab described by the scenario text `text` (`origin` names
    /// it in errors).
    pub fn build(text: &str, origin: &str) -> Result<LabInstance> {
        let scenario = Scenario::from_toml_str(text, origin)?;
        check(&scenario, origin)?;
        prerequisites(scenario.fleet.vms.iter().any(|v| v.dirty_rate.0 > 0.0))?;
        fits_here(&scenario, origin)?;
        let raw: toml::Table = text.parse().with_context(|| format!("{origin}: not TOML"))?;
        let pid = std::process::id();
        let prefix = lab_prefix(&scenario.name, pid);
        let dir = Path::new(LABS_DIR).join(format!("{}-{pid}", sanitize_name(&scenario.name)));
        if dir.exists() {
            bail!(
                "{}: exists already (`evac lab down` removes leftovers)",
                dir.display()
            );
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut lab = LabInstance {
            scenario,
            inventory_path: dir.join("inventory.toml"),
            dir,
            inventory: Inventory {
                name: String::new(),
                backend: Default::default(),
                stall_after: None,
                controller: Default::default(),
                migration: Default::default(),
                run_dir: None,
                network: None,
                hosts: Vec::new(),
                vms: Vec::new(),
                start: evac_model::wall_clock::Timestamp::now(),
            },
            vms: None,
            topology: None,
            trace: None,
        };
        // From here on, Drop tears down whatever was made.
        let topology = Topology::build(&prefix, &lab.scenario.fleet, &lab.scenario.network)
            .context("building the lab's network")?;
        lab.topology = Some(topology);
        lab.vms = Some(Lab::new(&lab.dir));
        lab.start_vms()?;
        let text = lab.inventory_text(&raw)?;
        std::fs::write(&lab.inventory_path, &text)
            .with_context(|| format!("writing {}", lab.inventory_path.display()))?;
        lab.inventory = Inventory::from_str_at(&text, &lab.inventory_path)?;
        Ok(lab)
    }

    fn topology(&self) -> &Topology {
        self.topology.as_ref().expect("built")
    }

    /// Starts the fleet's VMs in their hosts' namespaces, in parallel
    /// ([`Lab::start_fleet`]): as many RAM files written at once as there
    /// are cores, QEMUs started in waves.
    fn start_vms(&mut self) -> Result<()> {
        let topology = self.topology.as_ref().expect("built");
        let specs: Vec<VmSpec> = self
            .scenario
            .fleet
            .vms
            .iter()
            .map(|vm| VmSpec {
                name: vm.name.clone(),
                mib: vm.memory.0 >> 20,
                netns: Some(topology.host_netns[vm.host.0].clone()),
                dirty: if vm.profile.dirty_curve.is_empty() {
                    (vm.dirty_rate.0 > 0.0)
                        .then_some(DirtyRegion {
                            rate: vm.dirty_rate,
                            mib: vm.working_set.0 >> 20,
                        })
                        .into_iter()
                        .collect()
                } else {
                    // Checked when the lab file was read.
                    regions_for_curve(&vm.profile.dirty_curve).unwrap_or_default()
                },
            })
            .collect();
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let vms = self.vms.as_mut().expect("built");
        vms.start_fleet(&specs, parallel)
            .context("starting the lab's VMs")?;
        Ok(())
    }

    /// Starts VMs beside the fleet's (`calibrate`'s probes): not in the
    /// scenario nor the inventory, torn down with the lab. Their QMP
    /// sockets are `<dir>/<name>.qmp`.
    pub(crate) fn start_extra_vms(&mut self, vms: &[(String, evac_model::HostId, u64)]) -> Result<()> {
        let topology = self.topology.as_ref().expect("built");
        let specs: Vec<VmSpec> = vms
            .iter()
            .map(|(name, host, mib)| VmSpec {
                name: name.clone(),
                mib: *mib,
                netns: Some(topology.host_netns[host.0].clone()),
                dirty: Vec::new(),
            })
            .collect();
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        self.vms
            .as_mut()
            .expect("built")
            .start_fleet(&specs, parallel)
            .context("starting the probe VMs")?;
        Ok(())
    }

    /// The inventory: the lab file's `[controller]` and `[migration]` as
    /// written, its hosts with their namespaces, and its VMs' QMP sockets.
    fn inventory_text(&self, raw: &toml::Table) -> Result<String> {
        let topology = self.topology();
        let fleet = &self.scenario.fleet;
        let mut text = format!(
            "# Written by evac lab for {:?}; removed with the lab.\nname = {:?}\nrun_dir = {:?}\n",
            self.scenario.name,
            self.scenario.name,
            self.dir.display().to_string()
        );
        for table in ["controller", "migration"] {
            if let Some(value) = raw.get(table) {
                let mut wrapper = toml::Table::new();
                wrapper.insert(table.to_owned(), value.clone());
                text += &toml::to_string(&wrapper).context("re-writing the lab file's tables")?;
            }
        }
        // The WAN the lab builds, so `evac plan` on this inventory sees it.
        let network = &self.scenario.network;
        let _ = write!(
            text,
            "[network]\nwan_bandwidth = \"{} bps\"\nwan_rtt = \"{} us\"\ntcp_window = \"{} B\"\n",
            network.wan_bandwidth.0.round() as u64,
            network.wan_rtt.as_micros(),
            network.tcp_window.0
        );
        for (i, host) in fleet.hosts.iter().enumerate() {
            let _ = write!(
                text,
                "[[host]]\nname = {:?}\nsite = \"{}\"\nnic = \"{} bps\"\nnetns = {:?}\n",
                host.name,
                match host.site {
                    Site::Source => "source",
                    Site::Destination => "destination",
                },
                host.nic.0.round() as u64,
                topology.host_netns[i]
            );
            if let Some(memory) = host.memory {
                let _ = writeln!(text, "memory = \"{} B\"", memory.0);
            }
            if let Some(at) = host.power_off_at {
                let _ = writeln!(text, "power_off_at = \"{} ms\"", at.as_millis());
            }
            if host.site == Site::Destination {
                let _ = write!(
                    text,
                    "migration_address = {:?}\nincoming_command = \"ip netns exec {{netns}} qemu-system-x86_64\"\n",
                    topology.host_address[i]
                );
            }
        }
        for vm in &fleet.vms {
            let args: Vec<String> = destination_args(vm.memory.0 >> 20)
                .iter()
                .map(|a| format!("{a:?}"))
                .collect();
            let _ = write!(
                text,
                "[[vm]]\nname = {:?}\nhost = {:?}\nqmp = {:?}\nmemory = \"{} MiB\"\npriority = {}\nqemu_args = [{}]\n",
                vm.name,
                fleet.hosts[vm.host.0].name,
                self.dir.join(format!("{}.qmp", vm.name)).display().to_string(),
                vm.memory.0 >> 20,
                vm.priority,
                args.join(", ")
            );
            if let Some(d) = vm.destination {
                let _ = writeln!(text, "destination = {:?}", fleet.hosts[d.0].name);
            }
        }
        Ok(text)
    }

    /// Starts following the scenario's WAN trace (its `at` counted from
    /// now) until the lab is dropped.
    pub fn start_trace(&mut self) {
        self.trace = Some(self.topology().follow_trace(&self.scenario.network.wan_trace));
    }

    /// Bytes the delay line carried from the source site to the destination.
    pub fn wan_bytes(&self) -> u64 {
        self.topology().wan_bytes()
    }
}

impl Drop for LabInstance {
    fn drop(&mut self) {
        self.trace = None;
        // The source VMs, then every process left in the namespaces
        // (destination QEMUs), the delay line and the namespaces.
        self.vms = None;
        self.topology = None;
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("lab: removing {}: {e}", self.dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_file(curve: &str) -> Scenario {
        let text = format!(
            r#"[network]
wan_bandwidth = "300 Mbps"
{hosts}
[[vm]]
name = "db"
host = "src"
memory = "128 MiB"
dirty_curve = {curve}
"#,
            hosts = evac_testkit::src_dst_toml("1 Gbps")
        );
        Scenario::from_toml_str(&text, "lab.toml").unwrap()
    }

    #[test]
    fn a_dirty_curve_runs_the_curve_guest_or_says_why_not() {
        let fits =
            lab_file(r#"[{ after = "1 s", dirtied = "22 MiB" }, { after = "8 s", dirtied = "64 MiB" }]"#);
        check(&fits, "lab.toml").unwrap();
        let convex =
            lab_file(r#"[{ after = "1 s", dirtied = "2 MiB" }, { after = "2 s", dirtied = "10 MiB" }]"#);
        let err = check(&convex, "lab.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("lab.toml: field `dirty_curve` of VM \"db\": its slope grows"),
            "{err}"
        );
        // 16 MiB + 120 MiB of rings in 128 MiB.
        let big = lab_file(r#"[{ after = "1 s", dirtied = "120 MiB" }]"#);
        let err = check(&big, "lab.toml").unwrap_err().to_string();
        assert!(
            err.contains("at most memory - 16 MiB (112 MiB here; got 120 MiB)"),
            "{err}"
        );
    }
}
