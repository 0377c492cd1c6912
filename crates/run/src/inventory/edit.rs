//! What a run takes from an inventory whatever its backend, and from an
//! edit of it during the run: the power-offs and UPSes of its hosts
//! ([`PowerView`]), what else an edit changed (refused), and the one-line
//! macro ([`editable_inventory!`](crate::editable_inventory!)) by which a
//! backend's inventory gets all of it.

use std::path::Path;
use std::time::Duration;

use evac_model::wall_clock::PowerOffAt;
use evac_model::Site;

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
/// that serde reads whole, whose fields have the common names (`hosts`,
/// `vms`, `start`, `network`) and whose host type is declared by
/// [`crate::host_spec!`]: `from_path` and `from_str_at` (reading, parsing
/// and checking, errors placed in its text by the scenario format's
/// locator), the [`Editable`] an inventory edited during a run needs, its
/// `power_offs`, `ups_hosts`, `changed_beyond_power`, its
/// [`RunInventory`] and `network` (the WAN a real run knows): one line in
/// each backend's inventory module, which writes `check` (its own
/// refusals) and `validate` (the model's wall over what it states).
#[macro_export]
macro_rules! editable_inventory {
    ($inventory:ty, $host:ty) => {
        impl $inventory {
            /// Reads and checks an inventory file.
            pub fn from_path(path: &std::path::Path) -> Result<Self, $crate::inventory::InventoryError> {
                let text = $crate::inventory::read(path)?;
                Self::from_str_at(&text, path)
            }

            /// Parses inventory text, then `check` and `validate` it; `path`
            /// names it in errors, which name the line.
            pub fn from_str_at(
                text: &str,
                path: &std::path::Path,
            ) -> Result<Self, $crate::inventory::InventoryError> {
                let inventory: Self = $crate::inventory::parse(text, path)?;
                inventory.check().map_err(|r| r.into_error(text, path))?;
                inventory.validate().map_err(|invalid| {
                    let (line, message) = $crate::inventory::place(text, &invalid);
                    $crate::inventory::InventoryError::Invalid {
                        path: path.to_owned(),
                        line,
                        message,
                    }
                })?;
                Ok(inventory)
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
