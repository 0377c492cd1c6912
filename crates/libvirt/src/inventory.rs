//! The libvirt inventory: hosts reached by libvirt URIs, domains found on
//! them.

use std::path::PathBuf;

use evac_controller::ControllerConfig;
use evac_model::wall_clock::Timestamp;
use evac_model::{Bytes, BytesPerSec, FieldPath, Fleet, HostId, Invalid, MigrationParams, Vm};
use serde::Deserialize;

/// An inventory: see the crate documentation for the format.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub name: String,
    /// Must be `libvirt`.
    pub backend: String,
    /// Where the journal goes; default `evac_run::default_run_dir(name)`:
    /// stable across restarts, so `--resume` finds it.
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    #[serde(default)]
    pub controller: ControllerConfig,
    #[serde(default)]
    pub migration: MigrationSettings,
    /// The WAN as the operator knows it (`evac plan` simulates over it; a
    /// run's lower bounds use it); absent, the fastest source NIC.
    #[serde(default)]
    pub network: Option<NetworkSpec>,
    #[serde(rename = "host", default)]
    pub hosts: Vec<HostSpec>,
    /// Optional: restrict the run to these domains, or tune them.
    #[serde(rename = "vm", default)]
    pub vms: Vec<VmSpec>,
    /// Not in the file: the evacuation's start on the wall clock, which
    /// power-offs given as times count from. When the file was read, until
    /// a run sets its own (`evac_run::RunOptions::start`).
    #[serde(skip, default = "Timestamp::now")]
    pub start: Timestamp,
}

/// `[migration]`: the controller's starting parameters plus what only a
/// libvirt migration has (read by [`evac_run::inventory::extended`]: a bad
/// value is placed at its own line).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MigrationSettings {
    pub params: MigrationParams,
    /// Encrypt the migration stream (libvirt's `VIR_MIGRATE_TLS`).
    pub tls: bool,
    /// Copy local disks with the migration (non-shared-disk migration);
    /// without it a domain with a local disk is refused.
    pub copy_storage: bool,
    /// Path prefixes every host mounts from shared storage (e.g. an NFS
    /// export): disks under them are not local.
    pub shared_storage: Vec<String>,
}

/// The keys of [`MigrationSettings`] the model's parameters do not have.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LibvirtOwn {
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    copy_storage: bool,
    #[serde(default)]
    shared_storage: Vec<String>,
}

impl<'de> Deserialize<'de> for MigrationSettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (params, own): (MigrationParams, LibvirtOwn) =
            evac_run::inventory::extended(deserializer, &["tls", "copy_storage", "shared_storage"])?;
        Ok(MigrationSettings {
            params,
            tls: own.tls,
            copy_storage: own.copy_storage,
            shared_storage: own.shared_storage,
        })
    }
}

evac_run::host_spec! {
    /// A `[[host]]`: the common fields, then libvirt's own.
    pub struct HostSpec {
        /// How evac reaches the host's libvirtd, e.g. `qemu+tcp://10.77.0.1/system`.
        pub uri: String,
        /// How the source hosts' daemons reach this one (peer-to-peer
        /// migration); default `uri`. Differs when evac uses a management
        /// network or a local socket.
        #[serde(default)]
        pub peer_uri: Option<String>,
        /// The daemon's `max_workers` (libvirtd.conf). evac reads it through
        /// libvirt's admin API where it can (a daemon on this machine); for a
        /// remote host it takes this, else libvirt's default (20). Each
        /// migration out of the host holds one of its workers throughout.
        #[serde(default)]
        pub max_workers: Option<u32>,
        /// Destination hosts: the daemon's migration ports, `"MIN-MAX"`
        /// (qemu.conf's `migration_port_min` and `migration_port_max`; default
        /// libvirt's `"49152-49215"`). Each incoming migration holds one, two
        /// with `copy_storage` (the disks' NBD server).
        #[serde(default)]
        pub migration_ports: Option<String>,
        /// Hosts reached by `qemu+ssh://`: sshd's `MaxStartups` (its first
        /// number; default sshd's 10): how many connections it lets wait for
        /// authentication at once.
        #[serde(default)]
        pub ssh_max_startups: Option<u32>,
    }
}

/// libvirt's default migration ports (qemu.conf).
pub const DEFAULT_MIGRATION_PORTS: (u16, u16) = (49152, 49215);

/// Parses `"MIN-MAX"`, a range of TCP ports.
pub fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("`{text}` is not a port range like \"49152-49215\"");
    let (min, max) = text.split_once('-').ok_or_else(bad)?;
    let min: u16 = min.trim().parse().map_err(|_| bad())?;
    let max: u16 = max.trim().parse().map_err(|_| bad())?;
    if min == 0 || min > max {
        return Err(format!(
            "`{text}`: the first port must be at least 1 and at most the last"
        ));
    }
    Ok((min, max))
}

impl HostSpec {
    /// The URI source daemons use for this host.
    pub fn peer_uri(&self) -> &str {
        self.peer_uri.as_deref().unwrap_or(&self.uri)
    }
}

evac_run::vm_spec! {
    /// A `[[vm]]` (a domain, by its name): the common fields only.
    pub struct VmSpec {}
}

/// A running domain found on a source host.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundDomain {
    pub host: HostId,
    pub name: String,
    pub memory: Bytes,
    /// The allocation of its local disks when they are copied with the
    /// migration (`copy_storage`), else 0.
    pub disk: Bytes,
}

use evac_run::inventory::{At, HostView, Refusal, VmView};
pub use evac_run::inventory::{InventoryError, NetworkSpec, MAX_INVENTORY_BYTES};

impl Inventory {
    /// The model's one wall over what the inventory states, as a scenario's
    /// values are checked: its name, the migration and controller tables,
    /// the hosts. The domains are checked once found ([`Inventory::fleet`]).
    pub fn validate(&self) -> Result<(), Invalid> {
        // The name may become a directory: a safe name cannot climb out.
        evac_model::validate::check_dir_name(&self.name)
            .map_err(|m| Invalid::new(FieldPath::top("name"), m))?;
        self.migration.params.validate()?;
        self.controller.validate()?;
        if self.network.is_some() {
            self.network().validate()?;
        }
        for (i, host) in self.hosts.iter().enumerate() {
            host.model(self.start)
                .validate()
                .map_err(|e| e.under(FieldPath::entry("host", i)))?;
        }
        for (i, spec) in self.vms.iter().enumerate() {
            // The domain's own memory is known once found: the most a VM
            // may have stands in for it, so that what the entry states is
            // refused here, at its line.
            let mut vm = Vm {
                name: spec.name.clone(),
                host: HostId(0),
                memory: Bytes(1 << 50),
                dirty_rate: BytesPerSec::ZERO,
                working_set: Bytes::ZERO,
                priority: spec.priority,
                destination: None,
                disk: Bytes::ZERO,
                profile: evac_model::MemoryProfile::default(),
            };
            spec.stated_profile(&mut vm);
            vm.validate().map_err(|e| e.under(FieldPath::entry("vm", i)))?;
        }
        Ok(())
    }

    /// Checks what serde cannot: what only a libvirt inventory has here,
    /// the rest in [`evac_run::inventory::check_hosts_and_vms`].
    fn check(&self) -> Result<(), Refusal> {
        if self.backend != "libvirt" {
            return Err(Refusal::new(
                At::Key("backend"),
                format!("field `backend`: expected \"libvirt\", not \"{}\"", self.backend),
            ));
        }
        for host in &self.hosts {
            if !host.uri.contains("://") {
                return Err(Refusal::new(
                    At::Entry(host.name.clone()),
                    format!(
                        "host `{}`: field `uri`: `{}` is not a libvirt URI like qemu+tcp://10.0.0.1/system",
                        host.name, host.uri
                    ),
                ));
            }
            let refuse = |field: &str, why: String| {
                Refusal::new(
                    At::Entry(host.name.clone()),
                    format!("host `{}`: field `{field}`: {why}", host.name),
                )
            };
            if host.max_workers == Some(0) {
                return Err(refuse(
                    "max_workers",
                    "expected at least 1 (libvirtd's own minimum)".into(),
                ));
            }
            if host.ssh_max_startups == Some(0) {
                return Err(refuse("ssh_max_startups", "expected at least 1".into()));
            }
            if let Some(ports) = &host.migration_ports {
                parse_port_range(ports).map_err(|why| refuse("migration_ports", why))?;
            }
        }
        let hosts: Vec<HostView<'_>> = self.hosts.iter().map(HostSpec::view).collect();
        let vms: Vec<VmView<'_>> = self.vms.iter().map(|v| v.view(None)).collect();
        evac_run::inventory::check_hosts_and_vms(&hosts, &vms)
    }

    /// The index of host `name`.
    pub fn host_id(&self, name: &str) -> Option<HostId> {
        self.hosts.iter().position(|h| h.name == name).map(HostId)
    }

    /// The fleet of `domains` found running: every one when the inventory
    /// lists no `[[vm]]`, else only those it lists, with their priority and
    /// pinned destination.
    pub fn fleet(&self, domains: &[FoundDomain]) -> Result<Fleet, String> {
        let hosts = self.hosts.iter().map(|h| h.model(self.start)).collect();
        let mut vms = Vec::new();
        for FoundDomain {
            host,
            name,
            memory,
            disk,
        } in domains
        {
            let spec = self.vms.iter().find(|v| &v.name == name);
            if spec.is_none() && !self.vms.is_empty() {
                continue;
            }
            if vms.iter().any(|v: &Vm| &v.name == name) {
                return Err(format!(
                    "domain `{name}` runs on two source hosts ({} and {}): evac cannot tell which to move",
                    self.hosts[vms.iter().find(|v: &&Vm| &v.name == name).expect("found").host.0].name,
                    self.hosts[host.0].name
                ));
            }
            let mut vm = Vm {
                profile: evac_model::MemoryProfile::default(),
                name: name.clone(),
                host: *host,
                memory: *memory,
                dirty_rate: BytesPerSec::ZERO,
                working_set: *memory,
                disk: *disk,
                priority: spec.map_or(1, |s| s.priority),
                destination: spec
                    .and_then(|s| s.destination.as_deref())
                    .and_then(|d| self.host_id(d)),
            };
            if let Some(spec) = spec {
                spec.stated_profile(&mut vm);
            }
            vms.push(vm);
        }
        for spec in &self.vms {
            if !vms.iter().any(|v| v.name == spec.name) {
                return Err(format!(
                    "vm `{}`: no source host runs a domain of that name",
                    spec.name
                ));
            }
        }
        let fleet = Fleet { hosts, vms };
        // The domains found, through the same wall as an inventory's values
        // (a domain name with a `/`, memory beyond every destination's room).
        fleet.validate().map_err(|invalid| invalid.named(&fleet))?;
        Ok(fleet)
    }
}

evac_run::editable_inventory!(Inventory, HostSpec);

#[cfg(test)]
mod tests {
    use super::*;
    use evac_model::BitsPerSec;
    use std::path::Path;
    use std::time::Duration;

    /// The issue's example, verbatim.
    const ISSUE: &str = r#"name = "dc1-to-dc2"
backend = "libvirt"
[migration]
tls = true
[[host]]
name = "a1"
site = "source"
nic = "10 Gbps"
uri = "qemu+tcp://10.77.0.1/system"
[[host]]
name = "b1"
site = "destination"
nic = "10 Gbps"
uri = "qemu+tcp://10.77.0.2/system"
migration_address = "10.77.0.2"
"#;

    fn found(name: &str, memory: Bytes) -> FoundDomain {
        FoundDomain {
            host: HostId(0),
            name: name.into(),
            memory,
            disk: Bytes::ZERO,
        }
    }

    /// Asserts that `error` starts with `at` (the file, a line) and says
    /// `says`.
    #[track_caller]
    fn assert_at(error: &str, at: &str, says: &str) {
        assert!(error.starts_with(at) && error.contains(says), "{error}");
    }

    /// Asserts that `error` says each of `words`.
    #[track_caller]
    fn assert_says(error: &str, words: &[&str]) {
        for word in words {
            assert!(error.contains(word), "{error}\ndoes not say {word:?}");
        }
    }

    fn parse(text: &str) -> Result<Inventory, String> {
        Inventory::from_str_at(text, Path::new("fleet.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_issue_example_parses() {
        let inv = parse(ISSUE).unwrap();
        assert!(inv.migration.tls && !inv.migration.copy_storage);
        assert_eq!(inv.migration.params, MigrationParams::default());
        assert_eq!(inv.hosts[1].peer_uri(), "qemu+tcp://10.77.0.2/system");
        let fleet = inv
            .fleet(&[found("web", Bytes::mib(512)), found("db", Bytes::gib(2))])
            .unwrap();
        assert_eq!(fleet.vms.len(), 2);
        assert_eq!(fleet.vms[1].memory, Bytes::gib(2));
        assert_eq!(inv.network().wan_bandwidth, BitsPerSec::gbps(10.0));
    }

    /// `[network]` as in a QEMU inventory: the plan simulates over it.
    #[test]
    fn the_network_table_is_the_wan() {
        let inv = parse(&format!(
            "{ISSUE}[network]\nwan_bandwidth = \"1 Gbps\"\nwan_rtt = \"30 ms\"\n"
        ))
        .unwrap();
        let net = inv.network();
        assert_eq!(net.wan_bandwidth, BitsPerSec::gbps(1.0));
        assert_eq!(net.wan_rtt, Duration::from_millis(30));
        assert_eq!(net.tcp_window, Bytes::mib(4));
        // The model's wall, at the table's line (17: ISSUE has 16).
        let err = parse(&format!("{ISSUE}[network]\nwan_bandwidth = \"0 bps\"\n")).unwrap_err();
        assert_eq!(
            err,
            "fleet.toml:17: field `wan_bandwidth` of [network]: a WAN of 0 bps carries nothing; give a rate above zero"
        );
    }

    #[test]
    fn migration_params_sit_beside_the_libvirt_keys() {
        let text = ISSUE.replace(
            "tls = true",
            "tls = true\ndowntime_limit = \"1 s\"\nconnections = 4",
        );
        let inv = parse(&text).unwrap();
        assert_eq!(inv.migration.params.downtime_limit, Duration::from_secs(1));
        assert_eq!(inv.migration.params.connections.get(), 4);
        let err = parse(&ISSUE.replace("tls = true", "tls = true\ndowntime = \"1 s\"")).unwrap_err();
        assert_at(&err, "fleet.toml:", "downtime");
    }

    #[test]
    fn vm_entries_restrict_and_tune() {
        let text = format!("{ISSUE}[[vm]]\nname = \"db\"\npriority = 5\ndestination = \"b1\"\n");
        let inv = parse(&text).unwrap();
        let fleet = inv
            .fleet(&[found("web", Bytes::mib(512)), found("db", Bytes::gib(2))])
            .unwrap();
        assert_eq!(fleet.vms.len(), 1);
        assert_eq!(
            (fleet.vms[0].priority, fleet.vms[0].destination),
            (5, Some(HostId(1)))
        );
        let err = inv.fleet(&[found("web", Bytes::mib(512))]).unwrap_err();
        assert!(err.contains("vm `db`"), "{err}");
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        // Line 13 is b1's nic.
        let err = parse(&ISSUE.replace(
            "nic = \"10 Gbps\"\nuri = \"qemu+tcp://10.77.0.2",
            "nic = \"10 GiB\"\nuri = \"qemu+tcp://10.77.0.2",
        ))
        .unwrap_err();
        assert_at(&err, "fleet.toml:13:", "host[1].nic");
        // b1 (named on line 11) lacks its migration address.
        let err = parse(&ISSUE.replace("migration_address = \"10.77.0.2\"\n", "")).unwrap_err();
        assert_at(&err, "fleet.toml:11:", "migration_address");
        let err = parse(&ISSUE.replace("backend = \"libvirt\"", "backend = \"qemu\"")).unwrap_err();
        assert_at(&err, "fleet.toml:2:", "expected \"libvirt\"");
        let err = parse(&ISSUE.replace("uri = \"qemu+tcp://10.77.0.1/system\"", "uri = \"10.77.0.1\""))
            .unwrap_err();
        assert_at(&err, "fleet.toml:6:", "field `uri`");
        let err = parse(&format!("{ISSUE}[[vm]]\nname = \"x\"\ndestination = \"a1\"\n")).unwrap_err();
        assert_says(&err, &["fleet.toml:17:", "no destination host `a1`"]);
        // A bad value of the model's [migration] parameters, beside the
        // libvirt keys: at its own line (5; the table is on line 3), its
        // column (18) and path, not the table's.
        let err = parse(&ISSUE.replace("tls = true\n", "tls = true\ndowntime_limit = \"3 parsecs\"\n"))
            .unwrap_err();
        assert!(
            err.starts_with("fleet.toml:5:18: field `migration.downtime_limit`"),
            "{err}"
        );
        // A mistyped key of the table is still refused, named.
        let err = parse(&ISSUE.replace("tls = true\n", "tls = true\ncopy_storag = true\n")).unwrap_err();
        assert_says(&err, &["fleet.toml:", "copy_storag"]);
    }

    /// The hosts' limits: read, and refused at the host's line (b1 is
    /// named on line 11) with the field and what was expected.
    #[test]
    fn hosts_limits_are_read_and_checked() {
        let text = ISSUE.replace(
            "migration_address = \"10.77.0.2\"\n",
            "migration_address = \"10.77.0.2\"\nmax_workers = 8\nmigration_ports = \"50000-50009\"\nssh_max_startups = 4\n",
        );
        let inv = Inventory::from_str_at(&text, Path::new("fleet.toml")).unwrap();
        assert_eq!(inv.hosts[1].max_workers, Some(8));
        assert_eq!(inv.hosts[1].migration_ports.as_deref(), Some("50000-50009"));
        assert_eq!(inv.hosts[1].ssh_max_startups, Some(4));
        assert_eq!(inv.hosts[0].max_workers, None);
        for (from, to, expected) in [
            (
                "max_workers = 8",
                "max_workers = 0",
                "host `b1`: field `max_workers`: expected at least 1",
            ),
            (
                "ssh_max_startups = 4",
                "ssh_max_startups = 0",
                "field `ssh_max_startups`: expected at least 1",
            ),
            (
                "\"50000-50009\"",
                "\"50000\"",
                "field `migration_ports`: `50000` is not a port range like \"49152-49215\"",
            ),
            (
                "\"50000-50009\"",
                "\"50009-50000\"",
                "`50009-50000`: the first port must be at least 1 and at most the last",
            ),
        ] {
            let err = parse(&text.replace(from, to)).unwrap_err();
            assert_at(&err, "fleet.toml:11:", expected);
        }
        assert_eq!(parse_port_range("49152-49215"), Ok((49152, 49215)));
    }

    /// The model's refusals, at the inventory's line and field, in the
    /// same words as a scenario's (lines counted by hand in ISSUE).
    #[test]
    fn the_models_wall_refuses_at_file_line_field() {
        let controller = |key: &str| format!("{ISSUE}[controller]\n{key}\n");
        // (the text, the error in full)
        let cases = [
            (
                ISSUE.replacen("nic = \"10 Gbps\"", "nic = \"0 bps\"", 1),
                "fleet.toml:8: field `nic` of [[host]] \"a1\": a NIC of 0 bps carries nothing; give a rate above zero",
            ),
            (
                controller("period = \"0 s\""),
                "fleet.toml:17: field `period` of [controller]: the controller needs a period above zero, like \"1 s\"",
            ),
            (
                controller("max_in_flight = 0"),
                "fleet.toml:17: field `max_in_flight` of [controller]: a limit of 0 would never start a migration; \
                 give at least 1",
            ),
            (
                controller("max_attempts = 0"),
                "fleet.toml:17: field `max_attempts` of [controller]: 0 attempts would never start a migration; \
                 give at least 1",
            ),
            (
                // Read beside the libvirt keys (not flattened with them): at
                // the value's own line (5) and column (15), with its path.
                ISSUE.replace("tls = true", "tls = true\nconnections = 0"),
                "fleet.toml:5:15: field `migration.connections`: a migration needs at least 1 connection",
            ),
            (
                ISSUE.replace("name = \"dc1-to-dc2\"", "name = \"x/../../escaped\""),
                "fleet.toml:1: field `name`: \"x/../../escaped\" has the character '/'; this name becomes a \
                 directory, so it has no `/`, `\\`, `,` or control characters",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(&text).unwrap_err(), expected);
        }
    }

    /// A `[[vm]]`'s memory profile: taken into the fleet, refused at its
    /// line in the scenario's words.
    #[test]
    fn a_stated_memory_profile_is_the_vms() {
        let vm = "[[vm]]\nname = \"db\"\nzero_fraction = 0.5\ncompression_ratio = 3\n\
                  dirty_curve = [{ after = \"1 s\", dirtied = \"64 MiB\" }]\n";
        let inv = parse(&format!("{ISSUE}{vm}")).unwrap();
        let fleet = inv.fleet(&[found("db", Bytes::gib(2))]).unwrap();
        let db = &fleet.vms[0];
        assert_eq!(
            (db.profile.zero_fraction, db.profile.compression_ratio),
            (0.5, 3.0)
        );
        assert_eq!(db.working_set, Bytes::mib(64));
        assert_eq!(db.dirty_rate, BytesPerSec(67_108_864.0));
        // Line 19 is the ratio (ISSUE has 16 lines).
        assert_eq!(
            parse(&format!("{ISSUE}{}", vm.replace("ratio = 3", "ratio = 0.9"))).unwrap_err(),
            "fleet.toml:19: field `compression_ratio` of [[vm]] \"db\": 0.9 is not a compression ratio \
             (bytes over compressed bytes); give one within 1 ..= 1000, 1 for memory that does not compress"
        );
        // A curve beyond the domain's memory is refused once it is found.
        let err = inv.fleet(&[found("db", Bytes::mib(32))]).unwrap_err();
        assert_says(&err, &["dirty_curve[0].dirtied", "32 MiB"]);
    }

    #[test]
    fn domains_found_go_through_the_same_wall() {
        let inv = parse(ISSUE).unwrap();
        let err = inv.fleet(&[found("a/b", Bytes::mib(512))]).unwrap_err();
        assert_eq!(
            err,
            "vm `a/b`: field `name`: \"a/b\" has the character '/'; a name has only letters A-Z a-z, \
             digits 0-9, `.`, `_` and `-`"
        );
    }
}
