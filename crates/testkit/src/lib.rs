//! # evac-testkit
//!
//! The fixtures evac's tests share, so that a test says only what it is
//! about: a fleet of idle VMs between two sites, a WAN that is the only
//! bottleneck, and one field changed by struct update where the test needs
//! it (`Vm { dirty_rate, ..vm("a", 0, Bytes::gib(1)) }`).
//!
//! The defaults are the ideal model the hand-checked tests reason with:
//! hosts with 10 Gbps NICs (never the bottleneck behind a WAN of a few
//! Gbps), unbounded destinations, no power-off; idle VMs (no dirtying, no
//! disk, priority 1, no pinned destination); a WAN with a 1 ms round trip
//! and a window of 1 GiB, so one connection is never window-limited.
//!
//! A dev-dependency only: nothing here is part of evac.

use std::time::Duration;

use evac_model::{BitsPerSec, Bytes, BytesPerSec, Fleet, Host, HostId, Network, Site, Vm};

/// A host on `site` with a 10 Gbps NIC, unbounded room, no power-off.
pub fn host(name: &str, site: Site) -> Host {
    Host {
        migration_cpus: None,
        name: name.into(),
        site,
        nic: BitsPerSec::gbps(10.0),
        memory: None,
        power_off_at: None,
        power_trace: Vec::new(),
    }
}

/// [`host`] on the site being evacuated.
pub fn source(name: &str) -> Host {
    host(name, Site::Source)
}

/// [`host`] on the safe site.
pub fn destination(name: &str) -> Host {
    host(name, Site::Destination)
}

/// [`source`] losing power `after` the evacuation's start.
pub fn source_dying(name: &str, after: Duration) -> Host {
    Host {
        power_off_at: Some(after),
        ..source(name)
    }
}

/// An idle VM of `memory` on host number `host`: nothing dirtied, its whole
/// memory its working set, no disk, priority 1, no pinned destination.
pub fn vm(name: &str, host: usize, memory: Bytes) -> Vm {
    Vm {
        profile: evac_model::MemoryProfile::default(),
        name: name.into(),
        host: HostId(host),
        memory,
        dirty_rate: BytesPerSec::ZERO,
        working_set: memory,
        disk: Bytes::ZERO,
        priority: 1,
        destination: None,
    }
}

/// [`vm`] dirtying `dirty_rate` of its whole memory.
pub fn busy_vm(name: &str, host: usize, memory: Bytes, dirty_rate: BytesPerSec) -> Vm {
    Vm {
        dirty_rate,
        ..vm(name, host, memory)
    }
}

/// `vms` (on host 0) moving from `src` (host 0) to `dst` (host 1).
pub fn two_sites(vms: Vec<Vm>) -> Fleet {
    Fleet {
        hosts: vec![source("src"), destination("dst")],
        vms,
    }
}

/// [`two_sites`] whose source loses power at `power_off_at` (`None`: never).
pub fn two_sites_until(power_off_at: Option<Duration>, vms: Vec<Vm>) -> Fleet {
    Fleet {
        hosts: vec![
            Host {
                power_off_at,
                ..source("src")
            },
            destination("dst"),
        ],
        vms,
    }
}

/// A WAN of `bandwidth` that is the only bottleneck: 1 ms round trip, a
/// 1 GiB window, constant.
pub fn wan(bandwidth: BitsPerSec) -> Network {
    wan_with(bandwidth, Duration::from_millis(1), Bytes::gib(1))
}

/// A constant WAN of `bandwidth` with this round trip and TCP window.
pub fn wan_with(bandwidth: BitsPerSec, rtt: Duration, window: Bytes) -> Network {
    Network {
        wan_bandwidth: bandwidth,
        wan_rtt: rtt,
        tcp_window: window,
        wan_trace: Vec::new(),
    }
}

/// The scenario-file text of [`two_sites`]'s fleet: `[[host]]` `s` (the
/// source) and `d` (the destination), 10 Gbps NICs, and a `[[vm]]` on `s`
/// for each `(name, memory)`, e.g. `("v", "64 MiB")`. For tests that go
/// through the file format (a `[migration]` or `[network]` of their own).
pub fn two_sites_toml(vms: &[(&str, &str)]) -> String {
    let mut text = host_toml("s", "source", "10 Gbps") + &host_toml("d", "destination", "10 Gbps");
    for (name, memory) in vms {
        text.push_str(&format!(
            "[[vm]]\nname = \"{name}\"\nhost = \"s\"\nmemory = \"{memory}\"\n"
        ));
    }
    text
}

/// The `[network]` table of a constant WAN of `bandwidth` (e.g.
/// `"1 Gbps"`), with this round trip (`"30 ms"`) and TCP window
/// (`"4 MiB"`).
pub fn wan_toml(bandwidth: &str, rtt: &str, window: &str) -> String {
    format!("[network]\nwan_bandwidth = \"{bandwidth}\"\nwan_rtt = \"{rtt}\"\ntcp_window = \"{window}\"\n")
}

/// The `[[host]]` tables of a scenario (or inventory) whose fleet moves
/// from `src` (the source) to `dst` (the destination), both with a NIC of
/// `nic` (e.g. `"10 Gbps"`): eight lines, `src`'s `nic` the fourth. It ends
/// inside `dst`'s table, so that a caller may add to it (an inventory's
/// `migration_address`). For tests that go through the file format with
/// hosts of their own names.
pub fn src_dst_toml(nic: &str) -> String {
    host_toml("src", "source", nic) + &host_toml("dst", "destination", nic)
}

/// A `[[host]]` table of four lines: `name` on `site` (`"source"` or
/// `"destination"`) with a NIC of `nic` (e.g. `"10 Gbps"`). A caller may
/// add keys after it (a `memory`, a `power_off_at`).
pub fn host_toml(name: &str, site: &str, nic: &str) -> String {
    format!("[[host]]\nname = \"{name}\"\nsite = \"{site}\"\nnic = \"{nic}\"\n")
}

/// A scenario's `[[vm_group]]` table of five lines: `count` VMs named
/// `prefix-1`, `prefix-2`... on `host` (a host's name or `"round-robin"`),
/// with this `memory`, a TOML value: a size in quotes (`r#""1 GiB""#`) or
/// a distribution's inline table. A caller may add keys after it.
pub fn vm_group_toml(prefix: &str, count: u64, host: &str, memory: &str) -> String {
    format!("[[vm_group]]\nprefix = \"{prefix}\"\ncount = {count}\nhost = \"{host}\"\nmemory = {memory}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixtures_are_valid_and_what_the_doc_says() {
        let fleet = two_sites(vec![vm("a", 0, Bytes::gib(1))]);
        fleet.validate().unwrap();
        wan(BitsPerSec::gbps(1.0)).validate().unwrap();
        // One connection carries 1 GiB per 1 ms: never the bottleneck.
        assert!(wan(BitsPerSec::gbps(1.0)).connection_cap().0 > 8e12);
        assert_eq!(fleet.vms[0].working_set, Bytes::gib(1));
        assert_eq!(fleet.hosts[1].site, Site::Destination);
    }

    #[test]
    fn the_toml_fleet_is_written_out_in_full() {
        let text = two_sites_toml(&[("v", "64 MiB")]);
        assert_eq!(
            text,
            "[[host]]\nname = \"s\"\nsite = \"source\"\nnic = \"10 Gbps\"\n[[host]]\nname = \"d\"\n\
             site = \"destination\"\nnic = \"10 Gbps\"\n[[vm]]\nname = \"v\"\nhost = \"s\"\nmemory = \"64 MiB\"\n"
        );
    }

    #[test]
    fn the_src_dst_hosts_are_eight_lines() {
        assert_eq!(
            src_dst_toml("1 Gbps").lines().collect::<Vec<_>>(),
            [
                "[[host]]",
                "name = \"src\"",
                "site = \"source\"",
                "nic = \"1 Gbps\"",
                "[[host]]",
                "name = \"dst\"",
                "site = \"destination\"",
                "nic = \"1 Gbps\"",
            ]
        );
    }

    #[test]
    fn a_group_is_five_lines() {
        assert_eq!(
            vm_group_toml("g", 3, "round-robin", r#""2 GiB""#),
            "[[vm_group]]\nprefix = \"g\"\ncount = 3\nhost = \"round-robin\"\nmemory = \"2 GiB\"\n"
        );
    }

    #[test]
    fn the_wan_table_says_what_it_is_given() {
        assert_eq!(
            wan_toml("400 Mbps", "30 ms", "4 MiB"),
            "[network]\nwan_bandwidth = \"400 Mbps\"\nwan_rtt = \"30 ms\"\ntcp_window = \"4 MiB\"\n"
        );
    }
}
