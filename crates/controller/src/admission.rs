//! How many migrations to run, where, and with how many connections: as
//! few as fill the path.
//!
//! Each migration can carry at most its connections' cap (`connections ×
//! window / RTT`) and, with the others on its host, its NIC. [`fill`] walks
//! the VMs in the plan's order and starts the next one only while what is
//! in flight cannot fill the target (the WAN's peak, with a margin): a
//! migration's connections are sized to fill the target alone (`ceil(target
//! / per connection)`, within its NIC, at least the scenario's count, at
//! most [`MAX_CONNECTIONS`]), not only the room the others leave, since
//! they end first and it then runs alone;
//! so one migration fills a WAN its NIC can fill, and a NIC that is already
//! full gets no second migration: it would only split the NIC, lengthening
//! both migrations for no more throughput.
//!
//! Until the WAN's capacity has been seen (every migration so far ran at its
//! own cap), `deadline` aims at twice the floor it measured, as TCP's slow
//! start does: each step starts only because the migrations in flight were
//! all held by their own caps, never blindly.

use evac_model::{Connections, HostId, VmId};

/// The most parallel connections one migration gets: each costs the source
/// a share of a core for multifd.
pub const MAX_CONNECTIONS: Connections = match Connections::new(8) {
    Some(c) => c,
    None => panic!("8 is a number of connections"),
};

/// How far above the WAN's peak the migrations in flight are sized: enough
/// that a capacity back at its peak shows at once as a rise.
pub const FILL_MARGIN: f64 = 0.10;

/// A NIC within this fraction of its capacity is full.
pub const NIC_FULL: f64 = 0.97;

/// The most queued VMs one call looks at: the rest wait for the next call.
pub const MAX_SCAN: usize = 10_000;

/// A migration in flight, as admission sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Running {
    pub host: HostId,
    /// The most it carries on its own, bytes per second.
    pub cap: f64,
}

/// The knobs of one call to [`fill`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// The aggregate rate that fills the path (the WAN's peak), bytes per
    /// second (infinite: unknown). Migrations start until what is in
    /// flight can carry it; their connections are sized to it with
    /// [`FILL_MARGIN`] more.
    pub rate: f64,
    /// The most migrations to start in this call.
    pub max_new: usize,
    /// The scenario's connections per migration: the fewest given.
    pub base_connections: Connections,
    /// The most one connection carries, bytes per second, if known.
    pub per_connection: Option<f64>,
}

/// What the migrations in flight ask of each source host, bytes per
/// second: a table by host, reused from one call of [`fill`] to the next
/// (a call per consultation, a million at a million VMs), and cleared by
/// walking only the hosts it touched.
#[derive(Debug, Clone, Default)]
pub struct HostLoads {
    /// Per host: the load, and whether it is listed in `touched`.
    load: Vec<(f64, bool)>,
    touched: Vec<HostId>,
}

impl HostLoads {
    /// A table for hosts `0..hosts` (it grows if a larger id comes).
    pub fn new(hosts: usize) -> Self {
        Self {
            load: vec![(0.0, false); hosts],
            touched: Vec::new(),
        }
    }

    fn get(&self, host: HostId) -> f64 {
        self.load.get(host.0).map_or(0.0, |&(load, _)| load)
    }

    fn add(&mut self, host: HostId, cap: f64) {
        if host.0 >= self.load.len() {
            self.load.resize(host.0 + 1, (0.0, false));
        }
        let (load, listed) = &mut self.load[host.0];
        if !std::mem::replace(listed, true) {
            self.touched.push(host);
        }
        *load += cap;
    }

    fn clear(&mut self) {
        for host in self.touched.drain(..) {
            self.load[host.0] = (0.0, false);
        }
    }
}

/// The VMs to start now from `candidates` (in the plan's order), each with
/// its connections. `loads` is scratch space, left empty.
pub fn fill(
    loads: &mut HostLoads,
    candidates: impl IntoIterator<Item = (VmId, HostId)>,
    running: impl IntoIterator<Item = Running>,
    nic: impl Fn(HostId) -> f64,
    target: Target,
) -> Vec<(VmId, Connections)> {
    loads.clear();
    for r in running {
        loads.add(r.host, r.cap);
    }
    let mut demand = 0.0;
    for &h in &loads.touched {
        demand += loads.get(h).min(nic(h));
    }
    let mut picks = Vec::new();
    for (vm, host) in candidates.into_iter().take(MAX_SCAN) {
        if picks.len() >= target.max_new || demand >= target.rate {
            break;
        }
        let nic = nic(host);
        let load = loads.get(host);
        if load >= NIC_FULL * nic {
            continue;
        }
        // Sized to fill the path alone, not just the room the migrations in
        // flight leave: those end first, and a migration sized to their
        // leftovers would then run alone below the path for the rest of
        // its copy (connections cannot be added to a migration in flight),
        // so the next one would start beside it and every VM would share
        // the link, each taking longer, for no more throughput.
        let alone = nic.min(target.rate * (1.0 + FILL_MARGIN));
        let connections = match target.per_connection {
            Some(per) if per > 0.0 && alone.is_finite() => {
                let needed = (alone / per).ceil().clamp(1.0, MAX_CONNECTIONS.as_f64()) as u32;
                Connections::clamped(needed).max(target.base_connections)
            }
            // Unknown: the scenario's count, whose rate then shows what one
            // connection carries.
            Some(_) | None => target.base_connections,
        };
        let cap = target
            .per_connection
            .map_or(f64::INFINITY, |per| per * connections.as_f64());
        let adds = cap.min(nic - load);
        demand += adds;
        loads.add(host, cap);
        picks.push((vm, connections));
    }
    loads.clear();
    picks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(hosts: &[usize]) -> Vec<(VmId, HostId)> {
        hosts
            .iter()
            .enumerate()
            .map(|(i, &h)| (VmId(i), HostId(h)))
            .collect()
    }

    /// The picks of `vms`, each with one connection.
    fn one_connection_each(vms: &[usize]) -> Vec<(VmId, Connections)> {
        vms.iter().map(|&vm| (VmId(vm), Connections::ONE)).collect()
    }

    /// A WAN peak of 100 B/s to fill, as many new migrations as fill it,
    /// each of at least one connection carrying `per_connection` B/s.
    fn wan_peak_100(per_connection: Option<f64>) -> Target {
        Target {
            rate: 100.0,
            max_new: usize::MAX,
            base_connections: Connections::new(1).unwrap(),
            per_connection,
        }
    }

    #[test]
    fn one_migration_with_enough_connections_fills_a_wan_its_nic_can_fill() {
        // WAN peak 100 B/s, sized to 110; connections of 30 B/s: ceil(110 /
        // 30) = 4 connections (120 B/s) on a NIC of 1000. One migration only.
        let target = wan_peak_100(Some(30.0));
        let picks = fill(
            &mut HostLoads::default(),
            candidates(&[0, 0, 1]),
            [],
            |_| 1000.0,
            target,
        );
        assert_eq!(picks, vec![(VmId(0), Connections::new(4).unwrap())]);
    }

    #[test]
    fn a_migration_started_beside_others_is_sized_to_fill_the_path_alone() {
        // WAN peak 100 B/s (sized to 110), connections of 30 B/s. One
        // migration in flight on host 0 carries 60: the room it leaves is
        // 50 (2 connections), but it ends first and the next then runs
        // alone: ceil(110 / 30) = 4 connections. Demand 60 + 120 >= 100:
        // no third. Within its NIC: a NIC of 45 B/s takes ceil(45 / 30) = 2.
        let beside_one = |nic: f64| {
            let target = wan_peak_100(Some(30.0));
            let running = Running {
                host: HostId(0),
                cap: 60.0,
            };
            fill(
                &mut HostLoads::default(),
                candidates(&[1, 2]),
                [running],
                |_| nic,
                target,
            )
        };
        assert_eq!(beside_one(1000.0), vec![(VmId(0), Connections::new(4).unwrap())]);
        assert_eq!(beside_one(45.0)[0], (VmId(0), Connections::new(2).unwrap()));
    }

    #[test]
    fn no_second_migration_on_a_full_nic_and_enough_hosts_to_fill_the_wan() {
        // NICs of 40 B/s, a WAN peak of 100: three hosts' NICs are needed
        // (40 + 40 + 20). Connections of 100 B/s: one each (at least the
        // base of 1). VM 1 is on host 0, whose NIC VM 0 already fills.
        let target = wan_peak_100(Some(100.0));
        let picks = fill(
            &mut HostLoads::default(),
            candidates(&[0, 0, 1, 2, 3]),
            [],
            |_| 40.0,
            target,
        );
        assert_eq!(picks, one_connection_each(&[0, 2, 3]));
        // With host 1's NIC already full from a migration in flight, host 3
        // takes its place.
        let running = [Running {
            host: HostId(1),
            cap: 100.0,
        }];
        let picks = fill(
            &mut HostLoads::default(),
            candidates(&[0, 1, 2, 3]),
            running,
            |_| 40.0,
            target,
        );
        assert_eq!(picks, one_connection_each(&[0, 2]));
    }

    #[test]
    fn an_unknown_wan_gets_one_probe_per_call_with_connections_to_fill_the_nic() {
        let target = Target {
            rate: f64::INFINITY,
            max_new: 1,
            base_connections: Connections::new(2).unwrap(),
            per_connection: Some(10.0),
        };
        // Room is the NIC's 50: ceil(50 / 10) = 5 connections.
        let picks = fill(
            &mut HostLoads::default(),
            candidates(&[0, 1]),
            [],
            |_| 50.0,
            target,
        );
        assert_eq!(picks, vec![(VmId(0), Connections::new(5).unwrap())]);
        // Unknown connections: the scenario's count.
        let picks = fill(
            &mut HostLoads::default(),
            candidates(&[0, 1]),
            [],
            |_| 50.0,
            Target {
                per_connection: None,
                ..target
            },
        );
        assert_eq!(picks, vec![(VmId(0), Connections::new(2).unwrap())]);
        // What a VM on host 1 (NIC 50) gets beside one migration on host
        // 0 carrying `cap`.
        let beside = |cap: f64, target: Target| {
            let running = [Running { host: HostId(0), cap }];
            fill(
                &mut HostLoads::default(),
                candidates(&[1]),
                running,
                |_| 50.0,
                target,
            )
        };
        // Nothing when the target is met already.
        let met = Target { rate: 50.0, ..target };
        assert!(beside(60.0, met).is_empty());
        // A NIC as fast as the WAN's peak fills it alone, though its
        // connections are sized to 10 % more: no second migration.
        let nic_fills = Target {
            rate: 50.0,
            max_new: usize::MAX,
            ..target
        };
        assert!(beside(80.0, nic_fills).is_empty());
    }
}
