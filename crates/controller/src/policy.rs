//! What a policy sees ([`View`]), what it answers ([`Admission`]), and the
//! [`Policy`] trait every policy implements.

use std::time::Duration;

use evac_model::{BitsPerSec, Fleet, HostId, MigrationParams, VmId};

use crate::{rollout, Action, Explanation, Observations, Wakeup};

/// What a [`Policy`] sees when deciding how many migrations may run.
#[derive(Debug)]
pub struct View<'a> {
    pub now: Duration,
    pub fleet: &'a Fleet,
    pub observations: &'a Observations,
    /// Migrations in flight per host, indexed by [`HostId`].
    pub in_flight: &'a [usize],
    /// The sum of `in_flight`, kept as migrations start and end.
    pub in_flight_total: usize,
    /// VMs still waiting to start.
    pub queued: usize,
    /// Memory promised to each host as a destination (VMs there or on
    /// their way), indexed by [`HostId`]; empty: none.
    pub committed: &'a [evac_model::Bytes],
    /// `Some` on the tick that closes a control period: each source host's
    /// NIC throughput over that period, indexed by [`HostId`].
    pub period_throughput: Option<&'a [BitsPerSec]>,
    /// The hosts whose `period_throughput` may be non-zero, ascending (the
    /// others' is exactly zero); `None`: any host's may be.
    pub sending_hosts: Option<&'a [HostId]>,
}

impl View<'_> {
    pub fn total_in_flight(&self) -> usize {
        self.in_flight_total
    }

    /// `Some` on the tick that closes a control period: the sum of every
    /// source host's NIC throughput over it. Summed in host order over the
    /// hosts that sent (adding the others' exact zeros changes nothing), so
    /// it costs O(hosts sending), not O(hosts).
    pub fn period_source_throughput(&self) -> Option<BitsPerSec> {
        let throughput = self.period_throughput?;
        let is_source = |h: &HostId| self.fleet.host(*h).site == evac_model::Site::Source;
        let total = match self.sending_hosts {
            Some(hosts) => hosts
                .iter()
                .filter(|h| is_source(h))
                .fold(0.0, |sum, h| sum + throughput[h.0].0),
            None => self
                .fleet
                .source_hosts()
                .fold(0.0, |sum, h| sum + throughput[h.0].0),
        };
        Some(BitsPerSec(total))
    }
}

/// How many migrations a policy lets run at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// The most in flight across the whole site.
    pub total: usize,
    /// The most in flight per source host, indexed by [`HostId`].
    pub per_host: PerHost,
    /// Fill free slots host by host (the least busy host first) instead of
    /// strictly in queue order, so that no host idles while another has a
    /// queue.
    pub spread_over_hosts: bool,
    /// `Some`: the VMs to start, in this order, as far as the limits above
    /// and the destinations' room allow, instead of the queue's order.
    pub picks: Option<Vec<VmId>>,
}

impl Admission {
    /// Limits only: the queue's order, nobody given up.
    pub fn limits(total: usize, per_host: PerHost, spread_over_hosts: bool) -> Self {
        Self {
            total,
            per_host,
            spread_over_hosts,
            picks: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PerHost {
    Unlimited,
    Each(usize),
    ByHost(Vec<usize>),
}

impl PerHost {
    pub(crate) fn limit(&self, host: HostId) -> usize {
        match self {
            PerHost::Unlimited => usize::MAX,
            PerHost::Each(n) => *n,
            PerHost::ByHost(limits) => limits[host.0],
        }
    }
}

/// Decides how many migrations run at once.
pub trait Policy {
    fn admit(&mut self, view: &View<'_>) -> Admission;

    /// The parameters of `vm`'s migration about to start, from the
    /// scenario's.
    fn start_params(&mut self, _vm: VmId, base: MigrationParams) -> MigrationParams {
        base
    }

    /// See [`Controller::explain`](crate::Controller::explain).
    fn explain(&self, _vm: VmId) -> Vec<Explanation> {
        Vec::new()
    }

    /// Whether the policy reads the migrations' progress; see
    /// [`Controller::needs_progress`](crate::Controller::needs_progress).
    fn needs_progress(&self) -> bool {
        false
    }

    /// Whether the policy reads [`View::period_throughput`]: if not, the
    /// controller measures none (and reads no host counters).
    fn reads_throughput(&self) -> bool {
        true
    }

    /// Changes to migrations in flight (none for the published policies).
    fn tune(&mut self, _view: &View<'_>) -> Vec<Action> {
        Vec::new()
    }

    /// When the policy next needs a tick if nothing happens, asked after
    /// every tick with the state the tick left (see [`Wakeup`]). The default,
    /// every period, is always correct; a policy returns
    /// [`Wakeup::OnEvent`] when time alone changes none of its decisions
    /// (the fixed limits; AIMD once nothing is left to start), or
    /// [`Wakeup::At`] when it knows the next instant it must act (a plan's
    /// next step, a deadline's last safe moment), so that a simulation of a
    /// long evacuation costs its events, not its seconds.
    fn next_wakeup(&self, _view: &View<'_>) -> Wakeup {
        Wakeup::NextPeriod
    }

    /// A simulator to plan with (see [`rollout`]); policies that do not
    /// plan ignore it.
    fn plan_with(&mut self, _rollout: std::sync::Arc<dyn rollout::Rollout>) {}

    /// Some hosts' power-offs changed: `fleet` has the new ones. A policy
    /// that plans against them plans again; the others (the published
    /// policies, blind to deadlines by design) ignore it.
    fn power_changed(&mut self, _fleet: &Fleet) {}
}
