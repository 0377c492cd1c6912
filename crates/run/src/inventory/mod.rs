//! What every backend's inventory file shares: reading it (bounded),
//! parsing its TOML with the place of every error (file, line, column and
//! the field's path, e.g. `host[1].nic`), and the checks of its hosts and
//! VMs that do not depend on the backend; the `[[host]]` and `[[vm]]`
//! fields they share ([`entries`]). Each backend's inventory module keeps
//! its own fields and the checks only it needs.

pub mod entries;
mod extend;

pub use evac_scenario::locate::place;
pub use extend::extended;

use std::path::{Path, PathBuf};
use std::time::Duration;

use evac_model::wall_clock::PowerOffAt;
use evac_model::{BitsPerSec, Bytes, DirtyPoint, Network, Site, Vm};
use evac_scenario::locate::line_column;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Why an inventory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The TOML does not fit the format: a syntax error, an unknown key, a
    /// value of the wrong type or unit.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The file parses but cannot be used; `line` is the entry's (0 when
    /// the problem is the file as a whole).
    #[error("{}", located(path, *line, message))]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

fn located(path: &Path, line: usize, message: &str) -> String {
    if line == 0 {
        format!("{}: {message}", path.display())
    } else {
        format!("{}:{line}: {message}", path.display())
    }
}

/// Inventories larger than this are refused: they are hand-written lists
/// of hosts and VMs, and a larger file is not one.
pub const MAX_INVENTORY_BYTES: u64 = 16 << 20;

/// The text of the inventory at `path`, at most [`MAX_INVENTORY_BYTES`].
pub fn read(path: &Path) -> Result<String, InventoryError> {
    let error = |source| InventoryError::Read {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(error)?.len();
    if len > MAX_INVENTORY_BYTES {
        return Err(error(std::io::Error::other(format!(
            "{len} bytes: an inventory is at most {MAX_INVENTORY_BYTES} bytes"
        ))));
    }
    std::fs::read_to_string(path).map_err(error)
}

/// Parses `text` (the file at `path`) as `T`; an error says where, and
/// which field (the line alone does not say which of several `[[host]]`
/// tables' `nic` it is).
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, InventoryError> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        let field = e.path().to_string();
        let e = e.into_inner();
        let (line, column) = e.span().map_or((0, 0), |s| line_column(text, s.start));
        InventoryError::Parse {
            path: path.to_owned(),
            line,
            column,
            message: if field == "." {
                evac_model::suggest::serde_message(e.message())
            } else {
                format!(
                    "field `{field}`: {}",
                    evac_model::suggest::serde_message(e.message())
                )
            },
        }
    })
}

/// Where a refusal points: an entry (by its `name`) or a top-level key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// The `[[host]]` or `[[vm]]` whose `name` is this.
    Entry(String),
    /// A top-level key such as `backend`.
    Key(&'static str),
    /// The file as a whole.
    File,
}

/// A refusal by a check: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub at: At,
    pub message: String,
}

impl Refusal {
    pub fn new(at: At, message: impl Into<String>) -> Self {
        Refusal {
            at,
            message: message.into(),
        }
    }

    /// The error for `path`, whose `text` gives the line.
    pub fn into_error(self, text: &str, path: &Path) -> InventoryError {
        InventoryError::Invalid {
            path: path.to_owned(),
            line: line_of(text, &self.at),
            message: self.message,
        }
    }
}

/// The line of `at` in `text` (its first `name = "<entry>"` or `<key> =`),
/// 0 if none.
pub fn line_of(text: &str, at: &At) -> usize {
    let found = text.lines().position(|l| {
        let l = l.trim_start();
        match at {
            At::Entry(name) => {
                let Some(rest) = l.strip_prefix("name") else {
                    return false;
                };
                let value = rest.trim_start().strip_prefix('=').map(str::trim);
                value.is_some_and(|v| v.trim_matches(|c| c == '"' || c == '\'') == name)
            }
            At::Key(key) => l
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('=')),
            At::File => false,
        }
    });
    found.map_or(0, |i| i + 1)
}

/// An inventory's `[network]`: the WAN as the operator knows it (the
/// scenario format's fields, no trace). `evac plan` simulates over it and a
/// run's lower bounds use it, whatever the backend.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub wan_bandwidth: BitsPerSec,
    #[serde(default = "default_rtt", with = "evac_model::units::human_duration")]
    pub wan_rtt: Duration,
    #[serde(default = "default_tcp_window")]
    pub tcp_window: Bytes,
}

/// As in a scenario: a LAN-like round trip that limits nothing.
fn default_rtt() -> Duration {
    Duration::from_millis(1)
}

fn default_tcp_window() -> Bytes {
    Network::DEFAULT_TCP_WINDOW
}

/// The WAN as far as a real run knows it: the inventory's `[network]`,
/// else the fastest of the source hosts' NICs (`source_nics`), with no
/// round trip and a 4 MiB window.
pub fn network(spec: Option<&NetworkSpec>, source_nics: impl IntoIterator<Item = BitsPerSec>) -> Network {
    match spec {
        Some(net) => Network {
            wan_bandwidth: net.wan_bandwidth,
            wan_rtt: net.wan_rtt,
            tcp_window: net.tcp_window,
            wan_trace: Vec::new(),
        },
        None => Network {
            wan_bandwidth: BitsPerSec(source_nics.into_iter().map(|n| n.0).fold(0.0, f64::max)),
            wan_rtt: Duration::ZERO,
            tcp_window: Network::DEFAULT_TCP_WINDOW,
            wan_trace: Vec::new(),
        },
    }
}

/// Sets what an inventory's `[[vm]]` states of its memory on `vm`: the
/// share of zero pages, the compression ratio of the others and the dirty
/// curve (each absent: the model's default, or what `evac plan` measures).
/// The model's wall checks them with the rest of the VM.
pub fn stated_profile(
    vm: &mut Vm,
    zero_fraction: Option<f64>,
    compression_ratio: Option<f64>,
    dirty_curve: Option<&[DirtyPoint]>,
) {
    if let Some(zero) = zero_fraction {
        vm.profile.zero_fraction = zero;
    }
    if let Some(ratio) = compression_ratio {
        vm.profile.compression_ratio = ratio;
    }
    if let Some(curve) = dirty_curve {
        vm.set_dirty_curve(curve.to_vec());
    }
}

/// A host as the common checks see it.
#[derive(Debug, Clone, Copy)]
pub struct HostView<'a> {
    pub name: &'a str,
    pub site: Site,
    pub migration_address: Option<&'a str>,
    pub power_off_at: Option<PowerOffAt>,
    /// Whether it names a UPS (`ups`), and a margin for it (`ups_margin`).
    pub ups: bool,
    pub ups_margin: bool,
}

impl<'a> HostView<'a> {
    pub fn new(
        name: &'a str,
        site: Site,
        migration_address: Option<&'a str>,
        power_off_at: Option<PowerOffAt>,
    ) -> Self {
        HostView {
            name,
            site,
            migration_address,
            power_off_at,
            ups: false,
            ups_margin: false,
        }
    }

    /// With `ups` and `ups_margin` given or not.
    pub fn with_ups(self, ups: bool, ups_margin: bool) -> Self {
        HostView {
            ups,
            ups_margin,
            ..self
        }
    }
}

/// A VM entry as the common checks see it.
#[derive(Debug, Clone, Copy)]
pub struct VmView<'a> {
    pub name: &'a str,
    /// The source host it names, for backends whose entries name one.
    pub host: Option<&'a str>,
    pub destination: Option<&'a str>,
}

/// The checks every inventory passes, whatever its backend: host and VM
/// names unique; every destination host has a `migration_address`; a
/// power-off deadline only on a source host (a destination that loses
/// power is not a destination); a VM's host a source host and its pinned
/// destination a destination host; at least one host on each site.
pub fn check_hosts_and_vms(hosts: &[HostView<'_>], vms: &[VmView<'_>]) -> Result<(), Refusal> {
    let entry = |name: &str| At::Entry(name.to_owned());
    for (i, host) in hosts.iter().enumerate() {
        if hosts[..i].iter().any(|h| h.name == host.name) {
            return Err(Refusal::new(
                entry(host.name),
                format!("host `{}` is listed twice", host.name),
            ));
        }
        if host.site == Site::Destination {
            if host.migration_address.is_none() {
                return Err(Refusal::new(
                    entry(host.name),
                    format!(
                        "destination host `{}`: field `migration_address` is missing",
                        host.name
                    ),
                ));
            }
            if host.ups {
                return Err(Refusal::new(
                    entry(host.name),
                    format!(
                        "destination host `{}`: field `ups`: only a source host's UPS tells a power-off",
                        host.name
                    ),
                ));
            }
            if host.power_off_at.is_some() {
                return Err(Refusal::new(
                    entry(host.name),
                    format!(
                        "destination host `{}`: field `power_off_at`: only a source host has a deadline",
                        host.name
                    ),
                ));
            }
        }
    }
    if let Some(host) = hosts.iter().find(|h| h.ups_margin && !h.ups) {
        return Err(Refusal::new(
            entry(host.name),
            format!(
                "host `{}`: field `ups_margin` without `ups`: the margin is taken off a UPS's battery runtime",
                host.name
            ),
        ));
    }
    let site_of = |name: &str| hosts.iter().find(|h| h.name == name).map(|h| h.site);
    for (i, vm) in vms.iter().enumerate() {
        if vms[..i].iter().any(|v| v.name == vm.name) {
            return Err(Refusal::new(
                entry(vm.name),
                format!("vm `{}` is listed twice", vm.name),
            ));
        }
        if let Some(host) = vm.host {
            match site_of(host) {
                Some(Site::Source) => {}
                Some(Site::Destination) => {
                    return Err(Refusal::new(
                        entry(vm.name),
                        format!("vm `{}`: field `host`: `{host}` is not a source host", vm.name),
                    ))
                }
                None => {
                    return Err(Refusal::new(
                        entry(vm.name),
                        format!("vm `{}`: field `host`: no host is named `{host}`", vm.name),
                    ))
                }
            }
        }
        if let Some(d) = vm.destination {
            if site_of(d) != Some(Site::Destination) {
                return Err(Refusal::new(
                    entry(vm.name),
                    format!("vm `{}`: field `destination`: no destination host `{d}`", vm.name),
                ));
            }
        }
    }
    for (site, word) in [(Site::Source, "source"), (Site::Destination, "destination")] {
        if !hosts.iter().any(|h| h.site == site) {
            return Err(Refusal::new(At::File, format!("no host has site = \"{word}\"")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, site: Site) -> HostView<'_> {
        HostView {
            name,
            site,
            migration_address: (site == Site::Destination).then_some("10.0.0.2"),
            power_off_at: None,
            ups: false,
            ups_margin: false,
        }
    }

    fn refused(hosts: &[HostView<'_>], vms: &[VmView<'_>]) -> Refusal {
        check_hosts_and_vms(hosts, vms).unwrap_err()
    }

    #[test]
    fn each_common_refusal_points_at_its_entry() {
        let (a, b) = (host("a", Site::Source), host("b", Site::Destination));
        assert!(check_hosts_and_vms(&[a, b], &[]).is_ok());
        let r = refused(&[a, b, host("a", Site::Destination)], &[]);
        assert_eq!(r.at, At::Entry("a".into()));
        assert!(r.message.contains("listed twice"), "{r:?}");
        let r = refused(
            &[
                a,
                HostView {
                    migration_address: None,
                    ..b
                },
            ],
            &[],
        );
        assert!(r.message.contains("migration_address"), "{r:?}");
        let late = HostView {
            power_off_at: Some(PowerOffAt::FromStart(std::time::Duration::from_secs(60))),
            ..b
        };
        assert!(refused(&[a, late], &[]).message.contains("power_off_at"));
        let vm = |host, destination| VmView {
            name: "v",
            host,
            destination,
        };
        assert!(refused(&[a, b], &[vm(Some("b"), None)])
            .message
            .contains("not a source host"));
        assert!(refused(&[a, b], &[vm(Some("z"), None)])
            .message
            .contains("no host is named `z`"));
        assert!(refused(&[a, b], &[vm(None, Some("a"))])
            .message
            .contains("no destination host `a`"));
        let r = refused(&[a, b], &[vm(None, None), vm(None, None)]);
        assert_eq!(r.at, At::Entry("v".into()));
        assert_eq!(refused(&[a], &[]).at, At::File);
        assert!(refused(&[b], &[]).message.contains("\"source\""));
    }

    #[test]
    fn lines_are_found_by_entry_name_or_key() {
        let text = "name = \"run\"\nbackend = \"x\"\n[[host]]\nname = \"a1\"\n[[host]]\nname = \"a\"\n";
        assert_eq!(line_of(text, &At::Entry("a".into())), 6);
        assert_eq!(line_of(text, &At::Entry("a1".into())), 4);
        assert_eq!(line_of(text, &At::Key("backend")), 2);
        assert_eq!(line_of(text, &At::Entry("zz".into())), 0);
        assert_eq!(line_of(text, &At::File), 0);
        let e = Refusal::new(At::Entry("a".into()), "bad").into_error(text, Path::new("f.toml"));
        assert_eq!(e.to_string(), "f.toml:6: bad");
        let e = Refusal::new(At::File, "bad").into_error(text, Path::new("f.toml"));
        assert_eq!(e.to_string(), "f.toml: bad");
    }

    #[test]
    fn parse_errors_name_line_column_and_field() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            host: Vec<H>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct H {
            nic: evac_model::BitsPerSec,
        }
        let text = "[[host]]\nnic = \"1 Gbps\"\n[[host]]\nnic = \"1 GiB\"\n";
        let e = parse::<T>(text, Path::new("f.toml")).unwrap_err().to_string();
        assert!(e.starts_with("f.toml:4:7: field `host[1].nic`"), "{e}");
    }
}

/// A host's power as an inventory states it: what a run makes of it,
/// whatever the backend ([`power_offs`], [`ups_hosts`]).
#[derive(Debug, Clone, Copy)]
pub struct PowerView<'a> {
    pub name: &'a str,
    pub site: Site,
    pub power_off_at: Option<PowerOffAt>,
    pub ups: Option<&'a evac_nut::UpsAddress>,
    pub ups_margin: Option<Duration>,
}

/// Each source host's power-off as written, in file order, but those of
/// hosts that name a UPS: during a run, theirs is the UPS's to tell.
pub fn power_offs<'a>(hosts: impl IntoIterator<Item = PowerView<'a>>) -> Vec<(String, Option<PowerOffAt>)> {
    hosts
        .into_iter()
        .filter(|h| h.site == Site::Source && h.ups.is_none())
        .map(|h| (h.name.to_owned(), h.power_off_at))
        .collect()
}

/// The hosts that name a UPS, for [`crate::power::poll_ups`].
pub fn ups_hosts<'a>(hosts: impl IntoIterator<Item = PowerView<'a>>) -> Vec<crate::power::UpsHost> {
    hosts
        .into_iter()
        .filter_map(|h| {
            Some(crate::power::UpsHost {
                host: h.name.to_owned(),
                ups: h.ups?.clone(),
                margin: h.ups_margin.unwrap_or_default(),
            })
        })
        .collect()
}

/// An inventory that may be edited during a run: only its power-offs are
/// taken ([`changed_beyond_power`] says what else changed).
pub trait Editable: Clone + PartialEq {
    type Host: PartialEq;
    fn hosts(&self) -> &[Self::Host];
    fn host_name(host: &Self::Host) -> &str;
    /// Whether the VM entries are the same.
    fn same_vms(&self, other: &Self) -> bool;
    /// This inventory without what a run takes from an edit: every host's
    /// power-off gone, and `like`'s time of reading.
    fn without_power(&self, like: &Self) -> Self;
}

/// What `newer` (`old` edited during a run) changes besides its
/// power-offs, in one line; `None` when only power-offs changed.
pub fn changed_beyond_power<I: Editable>(old: &I, newer: &I) -> Option<String> {
    let (old, new) = (old.without_power(old), newer.without_power(old));
    if old == new {
        return None;
    }
    let (a, b) = (old.hosts(), new.hosts());
    let what = if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| I::host_name(x) != I::host_name(y)) {
        "its list of hosts".to_owned()
    } else if let Some((_, y)) = a.iter().zip(b).find(|(x, y)| x != y) {
        format!("host `{}`", I::host_name(y))
    } else if !old.same_vms(&new) {
        "its VMs".to_owned()
    } else {
        "its settings".to_owned()
    };
    Some(format!(
        "changes to {what} are not applied during a run (only `power_off_at` values are)"
    ))
}

/// What a run takes from an inventory whatever its backend, for the program
/// that holds one of several backends' (the CLI): implemented by
/// [`crate::editable_inventory!`], so a new backend's inventory has it by
/// that one line.
pub trait RunInventory {
    /// The controller's period: how often an edited file is read again.
    fn period(&self) -> Duration;
    /// When it was read: power-offs given as times count from it until a
    /// run sets its own start.
    fn start(&self) -> evac_model::wall_clock::Timestamp;
    /// Each source host's power-off as written, but those a UPS tells.
    fn power_offs(&self) -> Vec<(String, Option<PowerOffAt>)>;
    /// The source hosts that name a UPS.
    fn ups_hosts(&self) -> Vec<crate::power::UpsHost>;
    /// The file at `path` as edited during a run (`text`): its power-offs,
    /// and the refusal of whatever else changed since `self`.
    fn reread(&self, text: &str, path: &Path) -> Result<crate::power::Reread, String>;
}

/// What an inventory type shares whatever its backend, for inventories
/// whose fields have the common names (`hosts`, `vms`, `start`, `network`)
/// and whose host type is declared by [`crate::host_spec!`]: the
/// [`Editable`] an inventory edited during a run needs, its `power_offs`,
/// `ups_hosts`, `changed_beyond_power`, its [`RunInventory`], `network` (the WAN a real run
/// knows) and `checked` (the checks of a parsed inventory, their errors
/// placed in its text by the scenario format's locator): one line in each backend's
/// inventory module, which writes `check` (its own refusals) and
/// `validate` (the model's wall over what it states).
#[macro_export]
macro_rules! editable_inventory {
    ($inventory:ty, $host:ty) => {
        impl $inventory {
            /// This inventory, parsed from `text` (the file at `path`), once
            /// `check` and `validate` pass; their errors name the line.
            fn checked(
                self,
                text: &str,
                path: &std::path::Path,
            ) -> Result<Self, $crate::inventory::InventoryError> {
                self.check().map_err(|r| r.into_error(text, path))?;
                self.validate().map_err(|invalid| {
                    let (line, message) = $crate::inventory::place(text, &invalid);
                    $crate::inventory::InventoryError::Invalid {
                        path: path.to_owned(),
                        line,
                        message,
                    }
                })?;
                Ok(self)
            }

            /// The WAN as far as a real run knows it: the inventory's
            /// `[network]`, else the fastest source NIC (it feeds the
            /// report's lower bounds and `evac plan`).
            pub fn network(&self) -> evac_model::Network {
                $crate::inventory::network(
                    self.network.as_ref(),
                    self.hosts
                        .iter()
                        .filter(|h| h.site == evac_model::Site::Source)
                        .map(|h| h.nic),
                )
            }

            /// Each source host's power-off as written, in file order, but
            /// those of hosts that name a UPS ([`$crate::inventory::power_offs`]).
            pub fn power_offs(&self) -> Vec<(String, Option<evac_model::wall_clock::PowerOffAt>)> {
                $crate::inventory::power_offs(self.hosts.iter().map(<$host>::power))
            }

            /// The source hosts that name a UPS, for `evac_run::power::poll_ups`.
            pub fn ups_hosts(&self) -> Vec<$crate::power::UpsHost> {
                $crate::inventory::ups_hosts(self.hosts.iter().map(<$host>::power))
            }

            /// What `newer` (this inventory edited during a run) changes
            /// besides its power-offs, in one line; `None` when only
            /// power-offs changed.
            pub fn changed_beyond_power(&self, newer: &Self) -> Option<String> {
                $crate::inventory::changed_beyond_power(self, newer)
            }
        }

        impl $crate::inventory::RunInventory for $inventory {
            fn period(&self) -> std::time::Duration {
                self.controller.period
            }

            fn start(&self) -> evac_model::wall_clock::Timestamp {
                self.start
            }

            fn power_offs(&self) -> Vec<(String, Option<evac_model::wall_clock::PowerOffAt>)> {
                <$inventory>::power_offs(self)
            }

            fn ups_hosts(&self) -> Vec<$crate::power::UpsHost> {
                <$inventory>::ups_hosts(self)
            }

            fn reread(&self, text: &str, path: &std::path::Path) -> Result<$crate::power::Reread, String> {
                let new = <$inventory>::from_str_at(text, path).map_err(|e| e.to_string())?;
                Ok($crate::power::Reread {
                    power_offs: new.power_offs(),
                    refused: self
                        .changed_beyond_power(&new)
                        .map(|r| format!("{}: {r}", path.display())),
                })
            }
        }

        impl $crate::inventory::Editable for $inventory {
            type Host = $host;

            fn hosts(&self) -> &[$host] {
                &self.hosts
            }

            fn host_name(host: &$host) -> &str {
                &host.name
            }

            fn same_vms(&self, other: &Self) -> bool {
                self.vms == other.vms
            }

            fn without_power(&self, like: &Self) -> Self {
                let mut stripped = self.clone();
                stripped.start = like.start;
                for host in &mut stripped.hosts {
                    host.power_off_at = None;
                }
                stripped
            }
        }
    };
}
