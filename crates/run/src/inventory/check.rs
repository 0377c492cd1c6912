//! The checks every inventory passes whatever its backend (unique names,
//! addresses of destinations, power-offs and VMs on the right site), over
//! views of its hosts and VMs ([`HostView`], [`VmView`]) that each backend
//! makes of its own entries.

use evac_model::wall_clock::PowerOffAt;
use evac_model::Site;

use super::{At, Refusal};

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
    // A refusal placed at the entry named `name`.
    let refuse = |name: &str, message: String| Err(Refusal::new(At::Entry(name.to_owned()), message));
    for (i, host) in hosts.iter().enumerate() {
        if hosts[..i].iter().any(|h| h.name == host.name) {
            return refuse(host.name, format!("host `{}` is listed twice", host.name));
        }
        if host.site == Site::Destination {
            let wrong = if host.migration_address.is_none() {
                Some("field `migration_address` is missing")
            } else if host.ups {
                Some("field `ups`: only a source host's UPS tells a power-off")
            } else if host.power_off_at.is_some() {
                Some("field `power_off_at`: only a source host has a deadline")
            } else {
                None
            };
            if let Some(wrong) = wrong {
                return refuse(host.name, format!("destination host `{}`: {wrong}", host.name));
            }
        }
    }
    if let Some(host) = hosts.iter().find(|h| h.ups_margin && !h.ups) {
        return refuse(
            host.name,
            format!(
                "host `{}`: field `ups_margin` without `ups`: the margin is taken off a UPS's battery runtime",
                host.name
            ),
        );
    }
    let site_of = |name: &str| hosts.iter().find(|h| h.name == name).map(|h| h.site);
    for (i, vm) in vms.iter().enumerate() {
        if vms[..i].iter().any(|v| v.name == vm.name) {
            return refuse(vm.name, format!("vm `{}` is listed twice", vm.name));
        }
        if let Some(host) = vm.host {
            match site_of(host) {
                Some(Site::Source) => {}
                Some(Site::Destination) => {
                    return refuse(
                        vm.name,
                        format!("vm `{}`: field `host`: `{host}` is not a source host", vm.name),
                    )
                }
                None => {
                    return refuse(
                        vm.name,
                        format!("vm `{}`: field `host`: no host is named `{host}`", vm.name),
                    )
                }
            }
        }
        if let Some(d) = vm.destination {
            if site_of(d) != Some(Site::Destination) {
                return refuse(
                    vm.name,
                    format!("vm `{}`: field `destination`: no destination host `{d}`", vm.name),
                );
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
