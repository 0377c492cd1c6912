//! The queue of VMs waiting to start, by source host, and admission: which
//! waiting VM gets each free slot.

use std::ops::Bound;

use evac_model::{HostId, VmId};

use super::{Evacuation, VmState};
use crate::{Action, Admission};

impl Evacuation {
    /// Files `host` under its current key if it waits with a queue.
    pub(super) fn file_host(&mut self, host: HostId) {
        let w = &mut self.waiting;
        if !w.kept {
            return;
        }
        debug_assert!(w.filed[host.0].is_none());
        let Some(&(rank, _)) = self.queues[host.0].front() else {
            return;
        };
        let key = (self.in_flight[host.0], rank, w.arrival[host.0]);
        w.by_rank.insert((key.1, key.2, host));
        w.by_load.insert((key.0, key.1, key.2, host));
        w.filed[host.0] = Some(key);
    }

    /// Takes `host` out of the waiting order before its key changes.
    pub(super) fn unfile_host(&mut self, host: HostId) {
        let w = &mut self.waiting;
        if !w.kept {
            return;
        }
        if let Some(key) = w.filed[host.0].take() {
            w.by_rank.remove(&(key.1, key.2, host));
            w.by_load.remove(&(key.0, key.1, key.2, host));
        }
    }

    /// Keeps the waiting hosts' ordered sets from now on, building them
    /// from the queues, or drops them: see [`Waiting::kept`].
    pub(super) fn keep_waiting_order(&mut self, keep: bool) {
        if self.waiting.kept == keep {
            return;
        }
        let w = &mut self.waiting;
        w.by_rank.clear();
        w.by_load.clear();
        w.filed.iter_mut().for_each(|key| *key = None);
        w.kept = keep;
        if keep {
            for h in 0..self.queues.len() {
                self.file_host(HostId(h));
            }
        }
    }

    /// Takes the head of `host`'s queue.
    pub(super) fn pop_queued(&mut self, host: HostId) {
        self.unfile_host(host);
        self.queues[host.0].pop_front();
        self.queued -= 1;
        if self.queues[host.0].is_empty() {
            self.waiting.ran_dry.push(host);
        }
        self.file_host(host);
    }

    /// Takes `vm` out of its host's queue, wherever it is in it: a policy
    /// that picks VMs itself ([`Admission::picks`]) or gives them up. Costs
    /// the length of that one queue.
    pub(super) fn take_queued(&mut self, vm: VmId) {
        let host = self.fleet.vm(vm).host;
        let Some(at) = self.queues[host.0].iter().position(|&(_, queued)| queued == vm) else {
            return;
        };
        self.unfile_host(host);
        self.queues[host.0].remove(at);
        self.queued -= 1;
        if self.queues[host.0].is_empty() {
            self.waiting.ran_dry.push(host);
        }
        self.file_host(host);
    }

    pub(super) fn add_in_flight(&mut self, host: HostId, add: bool) {
        self.unfile_host(host);
        if add {
            self.in_flight[host.0] += 1;
            self.in_flight_total += 1;
        } else {
            self.in_flight[host.0] -= 1;
            self.in_flight_total -= 1;
        }
        self.file_host(host);
    }

    /// Starts queued VMs while the admission allows: each free slot goes to
    /// the VM first in the evacuation's order among the hosts with room or,
    /// when the policy spreads, to the host with the fewest in flight.
    pub(super) fn admit(&mut self, admission: &Admission) -> Vec<Action> {
        let mut actions = Vec::new();
        // Hosts that ran dry since the last admission stop waiting now.
        for host in std::mem::take(&mut self.waiting.ran_dry) {
            if self.queues[host.0].is_empty() {
                self.waiting.waiting[host.0] = false;
            }
        }
        if let Some(picks) = &admission.picks {
            self.keep_waiting_order(false);
            for &vm in picks {
                if self.in_flight_total >= admission.total {
                    break;
                }
                if !matches!(self.state[vm.0], VmState::Queued { .. }) {
                    continue;
                }
                let host = self.fleet.vm(vm).host;
                if self.in_flight[host.0] >= admission.per_host.limit(host) {
                    continue;
                }
                let Some(destination) = self.destination_for(vm) else {
                    continue;
                };
                self.take_queued(vm);
                actions.push(self.start(vm, destination));
            }
            return actions;
        }
        self.keep_waiting_order(true);
        let spread = admission.spread_over_hosts;
        // Every host before the cursor is out for this admission: at its
        // limit (which only starts raise) or stuck (its next VM fits on no
        // destination, and starts only fill destinations); and a host picked
        // is filed again under a larger key. So each pick resumes where the
        // last stopped, and a whole admission costs O(k log hosts) for k
        // starts plus the hosts it passes once.
        let mut cursor: Bound<(usize, usize, u64, HostId)> = Bound::Unbounded;
        while self.in_flight_total < admission.total {
            let eligible = |&(load, rank, arrival, host): &(usize, usize, u64, HostId)| {
                (load < admission.per_host.limit(host)).then_some((load, rank, arrival, host))
            };
            let pick = if spread {
                self.waiting
                    .by_load
                    .range((cursor, Bound::Unbounded))
                    .find_map(&eligible)
            } else {
                let from = match cursor {
                    Bound::Excluded((_, rank, arrival, host)) => Bound::Excluded((rank, arrival, host)),
                    _ => Bound::Unbounded,
                };
                self.waiting
                    .by_rank
                    .range((from, Bound::Unbounded))
                    .find_map(|&(rank, arrival, host)| {
                        eligible(&(self.in_flight[host.0], rank, arrival, host))
                    })
                    .map(|(_, rank, arrival, host)| (0, rank, arrival, host))
            };
            let Some(key) = pick else { break };
            cursor = Bound::Excluded(key);
            let host = key.3;
            let &(_, vm) = self.queues[host.0].front().expect("a filed host has a queue");
            if let Some(destination) = self.destination_for(vm) {
                self.pop_queued(host);
                actions.push(self.start(vm, destination));
            }
        }
        actions
    }
}
