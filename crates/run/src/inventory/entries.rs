//! The `[[host]]` and `[[vm]]` entries every backend's inventory shares, as
//! two macros: each backend declares its entry types with [`host_spec!`](crate::host_spec!)
//! and [`vm_spec!`](crate::vm_spec!), listing only its own fields; the common fields, their
//! documentation and defaults, and what is made of them (the model's
//! [`evac_model::Host`], a VM's stated memory profile, the views the common
//! checks take) are written once, here.
//!
//! Macros rather than a shared struct under `#[serde(flatten)]`: a
//! flattened struct loses `deny_unknown_fields` (a mistyped key would be
//! silently ignored) and the place of a bad value (its error would point at
//! the table, not the field).

/// The default `priority` of a `[[vm]]`.
pub fn default_priority() -> u32 {
    1
}

/// Declares a backend's `[[host]]` entry: the fields every inventory's
/// hosts have (`name`, `site`, `nic`, `memory`, `power_off_at`, `ups`,
/// `ups_margin`, `migration_cpus`, `migration_address`, `tls_name`), then
/// the backend's own, with `model` (the model's host), `view` (what the
/// common checks see) and `power` (what a run makes of its power).
///
/// ```ignore
/// evac_run::host_spec! {
///     /// A host of my backend.
///     pub struct HostSpec {
///         /// How evac reaches it.
///         pub uri: String,
///     }
/// }
/// ```
#[macro_export]
macro_rules! host_spec {
    ($(#[$meta:meta])* pub struct $name:ident $own:tt) => {
        $crate::entry_struct! {
            $(#[$meta])* pub struct $name $own
            pub name: String,
            pub site: evac_model::Site,
            pub nic: evac_model::BitsPerSec,
            #[serde(default)]
            pub memory: Option<evac_model::Bytes>,
            /// A duration from the run's start, or a time with its zone.
            #[serde(default)]
            pub power_off_at: Option<evac_model::wall_clock::PowerOffAt>,
            /// Source hosts: the NUT UPS that tells the host's power-off
            /// during a run (`ups1@10.0.0.5:3493`): on line power none, on
            /// battery now + `battery.runtime` - `ups_margin`, on low
            /// battery now. Until it first answers, `power_off_at` holds.
            #[serde(default)]
            pub ups: Option<evac_nut::UpsAddress>,
            /// Taken off the UPS's battery runtime (default 0 s): the time
            /// the host needs to shut down, or what the estimate is not
            /// trusted for.
            #[serde(default, with = "evac_model::units::human_duration::option")]
            pub ups_margin: Option<std::time::Duration>,
            /// Source hosts: the cores it can give migrations for
            /// compression (absent: one per connection of each migration).
            #[serde(default)]
            pub migration_cpus: Option<f64>,
            /// Destination hosts: the address incoming migrations listen on
            /// (where the migration stream goes).
            #[serde(default)]
            pub migration_address: Option<String>,
            /// Destination hosts: the name the sender checks the host's TLS
            /// certificate against, when it is not `migration_address`.
            #[serde(default)]
            pub tls_name: Option<String>,
        }

        impl $name {
            /// The model's host, its power-off counted from `start`.
            pub fn model(&self, start: evac_model::wall_clock::Timestamp) -> evac_model::Host {
                evac_model::Host {
                    migration_cpus: self.migration_cpus,
                    name: self.name.clone(),
                    site: self.site,
                    nic: self.nic,
                    memory: self.memory,
                    power_off_at: self.power_off_at.map(|at| at.resolve(start)),
                    power_trace: Vec::new(),
                }
            }

            /// The host as the common checks see it.
            pub fn view(&self) -> $crate::inventory::HostView<'_> {
                $crate::inventory::HostView::new(
                    &self.name,
                    self.site,
                    self.migration_address.as_deref(),
                    self.power_off_at,
                )
                .with_ups(self.ups.is_some(), self.ups_margin.is_some())
            }

            /// The host's power as the inventory states it.
            pub fn power(&self) -> $crate::inventory::PowerView<'_> {
                $crate::inventory::PowerView {
                    name: &self.name,
                    site: self.site,
                    power_off_at: self.power_off_at,
                    ups: self.ups.as_ref(),
                    ups_margin: self.ups_margin,
                }
            }
        }
    };
}

/// Declares a backend's `[[vm]]` entry: the fields every inventory's VMs
/// have (`name`, `priority`, `destination`, `zero_fraction`,
/// `compression_ratio`, `dirty_curve`), then the backend's own, with
/// `stated_profile` (what the entry says of the VM's memory) and `view`
/// (what the common checks see).
#[macro_export]
macro_rules! vm_spec {
    ($(#[$meta:meta])* pub struct $name:ident $own:tt) => {
        $crate::entry_struct! {
            $(#[$meta])* pub struct $name $own
            /// The VM's (or domain's) name.
            pub name: String,
            #[serde(default = "evac_run::inventory::entries::default_priority")]
            pub priority: u32,
            /// A destination host pinned by the operator.
            #[serde(default)]
            pub destination: Option<String>,
            /// The share of its pages that are zero (absent: what `evac
            /// plan` measures, else 0).
            #[serde(default)]
            pub zero_fraction: Option<f64>,
            /// The zstd ratio of its non-zero pages (absent: measured, else 1).
            #[serde(default)]
            pub compression_ratio: Option<f64>,
            /// Memory dirtied at least once within each duration (absent:
            /// measured).
            #[serde(default)]
            pub dirty_curve: Option<Vec<evac_model::DirtyPoint>>,
        }

        impl $name {
            /// Sets on `vm` what the entry states of its memory
            /// ([`evac_run::inventory::stated_profile`]).
            pub fn stated_profile(&self, vm: &mut evac_model::Vm) {
                $crate::inventory::stated_profile(
                    vm,
                    self.zero_fraction,
                    self.compression_ratio,
                    self.dirty_curve.as_deref(),
                );
            }

            /// The entry as the common checks see it, naming its source
            /// host `host` (for backends whose entries name one).
            pub fn view<'a>(&'a self, host: Option<&'a str>) -> $crate::inventory::VmView<'a> {
                $crate::inventory::VmView {
                    name: &self.name,
                    host,
                    destination: self.destination.as_deref(),
                }
            }
        }
    };
}

/// The struct of [`host_spec!`](crate::host_spec!) and [`vm_spec!`](crate::vm_spec!): the backend's fields
/// (`$own`) after the common ones, every key refused unless declared.
#[doc(hidden)]
#[macro_export]
macro_rules! entry_struct {
    (
        $(#[$meta:meta])* pub struct $name:ident {
            $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)*
        }
        $($common:tt)*
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($common)*
            $($(#[$fmeta])* pub $field: $ty,)*
        }
    };
}
