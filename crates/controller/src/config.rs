//! The controller's configuration (`[controller]`): the policy, the order,
//! the period, the limits, and their validation.

use std::time::Duration;

use evac_model::{FieldPath, Fleet, Invalid, VmId};
use serde::{Deserialize, Serialize};

use crate::{AimdParams, PolicyKind};

/// The order in which queued VMs are started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    #[default]
    AsListed,
    SmallestFirst,
    LargestFirst,
    /// Highest priority first; equal priorities smallest first, so that the
    /// most priority is safe soonest.
    Priority,
    /// Earliest power-off first, so the hosts about to die are emptied
    /// first; then as [`Order::Priority`].
    Deadline,
}

impl Order {
    /// Sorts `vms` (of `fleet`) in this order; stable, so equal VMs keep
    /// the order they came in.
    pub fn sort(self, fleet: &Fleet, vms: &mut [VmId]) {
        match self {
            Order::AsListed => {}
            Order::SmallestFirst => vms.sort_by_key(|&id| fleet.vm(id).memory),
            Order::LargestFirst => vms.sort_by_key(|&id| std::cmp::Reverse(fleet.vm(id).memory)),
            Order::Deadline => vms.sort_by_key(|&id| {
                let vm = fleet.vm(id);
                let deadline = fleet.host(vm.host).power_off_at.unwrap_or(Duration::MAX);
                (deadline, std::cmp::Reverse(vm.priority), vm.memory)
            }),
            Order::Priority => vms.sort_by_key(|&id| {
                let vm = fleet.vm(id);
                (std::cmp::Reverse(vm.priority), vm.memory)
            }),
        }
    }
}

impl std::str::FromStr for Order {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "as-listed" => Ok(Order::AsListed),
            "smallest-first" => Ok(Order::SmallestFirst),
            "largest-first" => Ok(Order::LargestFirst),
            "priority" => Ok(Order::Priority),
            "deadline" => Ok(Order::Deadline),
            _ => Err(format!(
                "unknown order `{text}`; expected as-listed, smallest-first, largest-first, priority or deadline{}",
                evac_model::suggest::did_you_mean(
                    text,
                    ["as-listed", "smallest-first", "largest-first", "priority", "deadline"]
                )
            )),
        }
    }
}

/// The `[controller]` table of a scenario or inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    pub policy: PolicyKind,
    /// How often the controller is consulted (it is also consulted whenever
    /// a migration ends).
    #[serde(with = "evac_model::units::human_duration")]
    pub period: Duration,
    /// The order VMs start in; unset, the policy's own
    /// ([`PolicyKind::natural_order`]).
    pub order: Option<Order>,
    /// `static`: the most migrations in flight across the site.
    pub max_in_flight: usize,
    /// `static`: the most migrations in flight from one source host.
    pub max_in_flight_per_host: usize,
    /// How often a failed migration is tried again before the VM is given up.
    pub max_attempts: u32,
    /// `aimd-local` and `aimd-global`: the `[controller.aimd]` table.
    pub aimd: AimdParams,
    /// Simulated time after which a simulated evacuation ends, the VMs not
    /// yet migrated `not-migrated` ("horizon reached"): a typo such as a
    /// `1 Kbps` WAN ends in a result, not in a run of simulated years.
    /// Default a week ([`DEFAULT_HORIZON`]); at most [`MAX_TICKS`] periods.
    #[serde(with = "evac_model::units::human_duration")]
    pub horizon: Duration,
}

/// The default `[controller] horizon`: a week of simulated time.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);
/// The shortest control period: QEMU's counters move in steps of about a
/// millisecond, and a shorter period only costs ticks.
pub const MIN_PERIOD: Duration = Duration::from_millis(1);
/// The longest control period.
pub const MAX_PERIOD: Duration = Duration::from_secs(3600);
/// The most control periods a horizon may hold: with a period of 1 ms the
/// horizon is at most about 2.8 h, with the default 1 s about 116 days.
pub const MAX_TICKS: u64 = 10_000_000;
/// The most failures of one VM before it is given up.
pub const MAX_ATTEMPTS: u32 = 1000;

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            policy: PolicyKind::Sequential,
            period: Duration::from_secs(1),
            order: None,
            max_in_flight: 5,
            max_in_flight_per_host: 2,
            max_attempts: 3,
            aimd: AimdParams::default(),
            horizon: DEFAULT_HORIZON,
        }
    }
}

impl ControllerConfig {
    /// Checks the `[controller]` table (part of the one wall of
    /// `evac_model::validate`); paths are under `controller`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let at = |key: &str| FieldPath::top("controller").key(key);
        let show = evac_model::format_duration;
        if self.period.is_zero() {
            return Err(Invalid::new(
                at("period"),
                "the controller needs a period above zero, like \"1 s\"",
            ));
        }
        if self.period < MIN_PERIOD || self.period > MAX_PERIOD {
            return Err(Invalid::new(
                at("period"),
                format!(
                    "a period of {} is not within {} ..= {}",
                    show(self.period),
                    show(MIN_PERIOD),
                    show(MAX_PERIOD)
                ),
            ));
        }
        // A limit of 0 would start no migration and wait forever. Checked
        // whatever the policy, as the policy may be chosen elsewhere later.
        let never_starts = "a limit of 0 would never start a migration; give at least 1";
        if self.max_in_flight == 0 {
            return Err(Invalid::new(at("max_in_flight"), never_starts));
        }
        if self.max_in_flight_per_host == 0 {
            return Err(Invalid::new(at("max_in_flight_per_host"), never_starts));
        }
        if self.aimd.max_window == 0 {
            return Err(Invalid::new(at("aimd").key("max_window"), never_starts));
        }
        if self.max_attempts == 0 {
            return Err(Invalid::new(
                at("max_attempts"),
                "0 attempts would never start a migration; give at least 1",
            ));
        }
        if self.max_attempts > MAX_ATTEMPTS {
            return Err(Invalid::new(
                at("max_attempts"),
                format!(
                    "{} attempts are more than the {MAX_ATTEMPTS} a VM may have",
                    self.max_attempts
                ),
            ));
        }
        for (key, margin) in [
            ("increase_margin", self.aimd.increase_margin),
            ("decrease_margin", self.aimd.decrease_margin),
        ] {
            if !(0.0..=1.0).contains(&margin) {
                return Err(Invalid::new(
                    at("aimd").key(key),
                    format!("{margin} is not a share within 0 ..= 1"),
                ));
            }
        }
        if self.horizon.is_zero() {
            return Err(Invalid::new(
                at("horizon"),
                "a horizon of 0 s ends the evacuation before it starts; give one above zero",
            ));
        }
        if self.horizon > evac_model::units::MAX_DURATION {
            return Err(Invalid::new(
                at("horizon"),
                format!("a horizon of {} is beyond 87660 h (10 years)", show(self.horizon)),
            ));
        }
        let ticks = self.horizon.as_nanos() / self.period.as_nanos();
        if ticks > u128::from(MAX_TICKS) {
            return Err(Invalid::new(
                at("period"),
                format!(
                    "a period of {} over a horizon of {} is {ticks} periods, more than {MAX_TICKS}; \
                     lengthen the period or shorten `horizon`",
                    show(self.period),
                    show(self.horizon)
                ),
            ));
        }
        Ok(())
    }
}
