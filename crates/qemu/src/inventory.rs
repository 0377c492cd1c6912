//! The inventory file: the real hosts and VMs of an evacuation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use evac_controller::ControllerConfig;
use evac_model::wall_clock::Timestamp;
use evac_model::{Bytes, BytesPerSec, FieldPath, Fleet, HostId, Invalid, MigrationParams, Site, Vm};
use serde::Deserialize;

/// An inventory: see the crate documentation for the format.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub name: String,
    /// Always `qemu` here (the CLI dispatches on it; absent means `qemu`).
    #[serde(default = "qemu")]
    pub backend: String,
    #[serde(default)]
    pub controller: ControllerConfig,
    #[serde(default)]
    pub migration: MigrationSettings,
    /// Where the journal, destination QMP sockets and logs go; default
    /// `evac_run::default_run_dir(name)` (`$EVAC_STATE_DIR/<name>`, else
    /// `$XDG_STATE_HOME/evac/<name>`, else `~/.local/state/evac/<name>`):
    /// stable across restarts, so `--resume` finds the journal. It is not
    /// removed: migrated VMs' QMP sockets live there.
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    /// The WAN as the operator knows it (`evac plan` simulates over it; a
    /// run's lower bounds use it); absent, the fastest source NIC.
    #[serde(default)]
    pub network: Option<NetworkSpec>,
    /// A migration whose bytes do not move this long is cancelled and
    /// retried (default: 5 control periods).
    #[serde(default, with = "evac_model::units::human_duration::option")]
    pub stall_after: Option<Duration>,
    #[serde(rename = "host", default)]
    pub hosts: Vec<HostSpec>,
    #[serde(rename = "vm", default)]
    pub vms: Vec<VmSpec>,
    /// Not in the file: the evacuation's start on the wall clock, which
    /// power-offs given as times count from in [`Inventory::fleet`]. When
    /// the file was read, until a run sets its own (`evac_run::RunOptions::start`).
    #[serde(skip, default = "Timestamp::now")]
    pub start: Timestamp,
}

/// `[migration]`: the controller's starting parameters plus what only a
/// QEMU migration has (read by [`evac_run::inventory::extended`]: a bad
/// value is placed at its own line).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MigrationSettings {
    pub params: MigrationParams,
    /// Every migration stream is TLS, QEMU's `tls-creds-x509` on both ends
    /// with each host's `tls_dir`.
    pub tls: bool,
}

/// The key of [`MigrationSettings`] the model's parameters do not have.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QemuOwn {
    #[serde(default)]
    tls: bool,
}

impl<'de> Deserialize<'de> for MigrationSettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (params, own): (MigrationParams, QemuOwn) =
            evac_run::inventory::extended(deserializer, &["tls"])?;
        Ok(MigrationSettings { params, tls: own.tls })
    }
}

pub use evac_run::inventory::NetworkSpec;

/// The `backend` of an inventory that leaves it out.
fn qemu() -> String {
    "qemu".to_owned()
}

evac_run::host_spec! {
    /// A `[[host]]`: the common fields, then QEMU's own.
    pub struct HostSpec {
        /// Destination hosts: the command that starts QEMU there, split on
        /// whitespace, with `{host}`, `{netns}`, `{address}` and `{vm}` replaced.
        #[serde(default = "default_incoming_command")]
        pub incoming_command: String,
        /// The host's network namespace, if it is one on this machine.
        #[serde(default)]
        pub netns: Option<String>,
        /// With `[migration] tls = true`: the directory, as this host's QEMU
        /// sees it, of its certificates (`ca-cert.pem`, `server-cert.pem` and
        /// `server-key.pem` to receive, `client-cert.pem` and `client-key.pem`
        /// to send). Default [`DEFAULT_TLS_DIR`], where libvirt keeps them;
        /// `tls_name` is QEMU's `tls-hostname`.
        #[serde(default)]
        pub tls_dir: Option<PathBuf>,
    }
}

/// Where a host's migration certificates are when `tls_dir` is not given:
/// libvirt's default (`migrate_tls_x509_cert_dir` in qemu.conf).
pub const DEFAULT_TLS_DIR: &str = "/etc/pki/qemu";

impl HostSpec {
    /// The host's certificate directory ([`HostSpec::tls_dir`]).
    pub fn tls_dir(&self) -> &Path {
        self.tls_dir.as_deref().unwrap_or(Path::new(DEFAULT_TLS_DIR))
    }
}

fn default_incoming_command() -> String {
    "qemu-system-x86_64".to_owned()
}

evac_run::vm_spec! {
    /// A `[[vm]]`: the common fields, then QEMU's own.
    pub struct VmSpec {
        /// The source host it runs on.
        pub host: String,
        /// Its QMP socket: a unix path or `host:port`.
        pub qmp: String,
        /// Queried from QEMU when absent.
        #[serde(default)]
        pub memory: Option<Bytes>,
        /// The arguments a destination QEMU needs to receive it (same machine
        /// type, devices and RAM block layout as the source).
        pub qemu_args: Vec<String>,
    }
}

use evac_run::inventory::{At, HostView, Refusal, VmView};
pub use evac_run::inventory::{InventoryError, MAX_INVENTORY_BYTES};

impl Inventory {
    /// The model's one wall over what the inventory states, as a scenario's
    /// values are checked: names, the migration and controller tables, the
    /// network, hosts and VMs. A VM whose memory the inventory leaves to
    /// QEMU counts as 1 B here; the fleet is checked again once QEMU has
    /// said it (`QemuBackend::connect`).
    pub fn validate(&self) -> Result<(), Invalid> {
        // Without `run_dir`, the name is a directory under the state dir: a
        // safe name cannot climb out of it (`x/../../escaped`).
        if self.run_dir.is_none() {
            evac_model::validate::check_dir_name(&self.name)
                .map_err(|m| Invalid::new(FieldPath::top("name"), m))?;
        }
        if let Some(dir) = &self.run_dir {
            // Pasted into QEMU's `-qmp unix:PATH,server=on` option string.
            if dir.to_string_lossy().contains(',') {
                return Err(Invalid::new(
                    FieldPath::top("run_dir"),
                    format!(
                        "{} has a `,`, which would end the path in QEMU's option strings",
                        dir.display()
                    ),
                ));
            }
        }
        if self.stall_after.is_some_and(|t| t.is_zero()) {
            return Err(Invalid::new(
                FieldPath::top("stall_after"),
                "a stall time of 0 s would cancel every migration at once; give one above zero",
            ));
        }
        self.migration.params.validate()?;
        self.controller.validate()?;
        if self.network.is_some() {
            self.network().validate()?;
        }
        // A stated dirty curve needs at least its last point's memory.
        let stated: Vec<Bytes> = self
            .vms
            .iter()
            .map(|vm| {
                let curve = vm.dirty_curve.as_ref().and_then(|c| c.last()).map(|p| p.dirtied);
                vm.memory.unwrap_or(curve.unwrap_or(Bytes(1)).max(Bytes(1)))
            })
            .collect();
        self.fleet(&stated).validate()
    }

    /// Checks what serde cannot: what only a QEMU inventory has here, the
    /// rest in [`evac_run::inventory::check_hosts_and_vms`].
    fn check(&self) -> Result<(), Refusal> {
        if self.backend != "qemu" {
            return Err(Refusal::new(
                At::Key("backend"),
                format!(
                    "field `backend`: `{}` is not a QEMU inventory (expected \"qemu\")",
                    self.backend
                ),
            ));
        }
        for (i, host) in self.hosts.iter().enumerate() {
            let at = || At::Entry(host.name.clone());
            // A source host's traffic is read from its namespace's counters:
            // two hosts in one namespace would each be credited with both.
            if let (Site::Source, Some(netns)) = (host.site, &host.netns) {
                if let Some(other) = self.hosts[..i]
                    .iter()
                    .find(|h| h.site == Site::Source && h.netns.as_ref() == Some(netns))
                {
                    return Err(Refusal::new(
                        at(),
                        format!(
                            "source hosts `{}` and `{}`: field `netns`: both are `{netns}`; each source \
                             host needs a namespace of its own (its traffic would be counted twice)",
                            other.name, host.name
                        ),
                    ));
                }
            }
            if let Some(dir) = &host.tls_dir {
                // QEMU would read it relative to its own working directory.
                if !dir.is_absolute() {
                    return Err(Refusal::new(
                        at(),
                        format!(
                            "host `{}`: field `tls_dir`: `{}` is not an absolute path",
                            host.name,
                            dir.display()
                        ),
                    ));
                }
            }
            if host.incoming_command.contains("{netns}") && host.netns.is_none() {
                return Err(Refusal::new(
                    at(),
                    format!(
                        "host `{}`: field `incoming_command` uses {{netns}} but the host has no `netns`",
                        host.name
                    ),
                ));
            }
        }
        let hosts: Vec<HostView<'_>> = self.hosts.iter().map(HostSpec::view).collect();
        let vms: Vec<VmView<'_>> = self.vms.iter().map(|v| v.view(Some(&v.host))).collect();
        evac_run::inventory::check_hosts_and_vms(&hosts, &vms)
    }

    /// The fleet, with VM memory from `memory` (in inventory order; missing
    /// sizes are taken from the inventory or must be given), its power-offs
    /// counted from [`Inventory::start`].
    pub fn fleet(&self, memory: &[Bytes]) -> Fleet {
        let hosts = self.hosts.iter().map(|h| h.model(self.start)).collect();
        let host_id = |name: &str| HostId(self.hosts.iter().position(|h| h.name == name).expect("checked"));
        let vms = self
            .vms
            .iter()
            .zip(memory)
            .map(|(spec, &memory)| {
                let mut vm = Vm {
                    profile: evac_model::MemoryProfile::default(),
                    name: spec.name.clone(),
                    host: host_id(&spec.host),
                    memory,
                    dirty_rate: BytesPerSec::ZERO,
                    working_set: memory,
                    disk: Bytes::ZERO,
                    priority: spec.priority,
                    destination: spec.destination.as_deref().map(host_id),
                };
                spec.stated_profile(&mut vm);
                vm
            })
            .collect();
        Fleet { hosts, vms }
    }
}

evac_run::editable_inventory!(Inventory, HostSpec);

#[cfg(test)]
mod tests;
