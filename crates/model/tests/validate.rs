//! Tests of the wall: names, entry paths, power traces, memory sums and
//! the WAN's bounds, each refusal checked by its words and path.

use std::time::Duration;

use evac_model::validate::{check_dir_name, check_name};
use evac_model::{BitsPerSec, Bytes, Fleet, Network, Site};
use evac_testkit::{two_sites, vm};

/// Two sites (`src`, `dst`) and one idle VM of 1 GiB.
fn fleet() -> Fleet {
    two_sites(vec![vm("a", 0, Bytes::gib(1))])
}

#[test]
fn names_are_limited_to_a_safe_set() {
    for good in ["web-1", "db_2", "a.b", "X9"] {
        check_name(good).unwrap();
    }
    for bad in [
        "",
        "a/b",
        "a,b",
        "a b",
        "x/../../escaped",
        "..",
        ".hidden",
        "-x",
        "tab\t",
        "é",
    ] {
        assert!(check_name(bad).is_err(), "{bad:?} accepted");
    }
    assert!(check_name(&"a".repeat(65)).is_err());
    check_name(&"a".repeat(64)).unwrap();
    check_dir_name("dc \"one\" (test)").unwrap();
    for bad in ["x/../../escaped", "..", ".x", "a,b", "a\nb", "", "a\\b"] {
        assert!(check_dir_name(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn paths_name_the_entry_and_field() {
    let mut f = fleet();
    f.hosts[1].nic = BitsPerSec(0.0);
    let e = f.validate().unwrap_err();
    assert_eq!(e.path.to_string(), "host[1].nic");
    assert_eq!(
        e.to_string(),
        "field `host[1].nic`: a NIC of 0 bps carries nothing; give a rate above zero"
    );
    let mut f = fleet();
    f.vms[0].name = "a,b".into();
    assert_eq!(f.validate().unwrap_err().path.to_string(), "vm[0].name");
}

#[test]
fn power_traces_are_in_order_and_on_sources_only() {
    let change = |at: u64, off: Option<u64>| evac_model::PowerChange {
        at: Duration::from_secs(at),
        power_off_at: off.map(Duration::from_secs),
    };
    let mut f = fleet();
    let source = f.hosts.iter().position(|h| h.site == Site::Source).unwrap();
    let destination = f.hosts.iter().position(|h| h.site == Site::Destination).unwrap();
    f.hosts[source].power_trace = vec![change(60, Some(600)), change(120, None)];
    f.validate().unwrap();
    f.hosts[source].power_trace = vec![change(120, Some(600)), change(60, None)];
    let e = f.validate().unwrap_err();
    assert_eq!(e.path.to_string(), format!("host[{source}].power_trace[1].at"));
    assert!(e.message.contains("out of order"), "{e}");
    let mut f = fleet();
    f.hosts[destination].power_trace = vec![change(60, Some(600))];
    let e = f.validate().unwrap_err();
    assert_eq!(e.path.to_string(), format!("host[{destination}].power_trace"));
}

#[test]
fn memory_sums_do_not_wrap() {
    // 2^14 VMs of 1 PiB = 2^64 B: one more byte than u64 holds.
    let mut f = fleet();
    f.vms = (0..1 << 14)
        .map(|i| vm(&format!("v{i}"), 0, Bytes(1 << 50)))
        .collect();
    let e = f.validate().unwrap_err();
    assert!(
        e.path.0.is_empty() && e.message.contains("18446744073709551616 B"),
        "{e}"
    );
    f.vms.pop();
    f.validate().unwrap();
}

#[test]
fn network_bounds() {
    let net = Network {
        wan_bandwidth: BitsPerSec::gbps(1.0),
        wan_rtt: Duration::from_millis(50),
        tcp_window: Bytes::mib(4),
        wan_trace: Vec::new(),
    };
    net.validate().unwrap();
    let mut bad = net.clone();
    bad.tcp_window = Bytes(1);
    assert_eq!(bad.validate().unwrap_err().path.to_string(), "network.tcp_window");
    let mut bad = net.clone();
    bad.wan_rtt = Duration::from_secs(61);
    assert_eq!(bad.validate().unwrap_err().path.to_string(), "network.wan_rtt");
    let mut bad = net;
    bad.wan_bandwidth = BitsPerSec(f64::INFINITY);
    assert_eq!(
        bad.validate().unwrap_err().path.to_string(),
        "network.wan_bandwidth"
    );
}

#[test]
fn a_trace_of_more_than_a_million_entries_is_refused_whole() {
    // 10^6 entries are allowed; one more is refused at the trace, in
    // words that count them.
    let point = |i: u64| evac_model::TracePoint {
        at: Duration::from_secs(i),
        bandwidth: BitsPerSec::gbps(1.0),
    };
    let mut net = Network {
        wan_trace: (0..1_000_000).map(point).collect(),
        ..evac_testkit::wan(BitsPerSec::gbps(1.0))
    };
    net.validate().unwrap();
    net.wan_trace.push(point(1_000_000));
    let e = net.validate().unwrap_err();
    assert_eq!(
        e.to_string(),
        "field `network.wan_trace`: 1000001 points are more than the 1000000 a trace may have"
    );
    let mut f = fleet();
    f.hosts[0].power_trace = (0..1_000_001)
        .map(|i| evac_model::PowerChange {
            at: Duration::from_secs(i),
            power_off_at: None,
        })
        .collect();
    let e = f.validate().unwrap_err();
    assert_eq!(
        e.to_string(),
        "field `host[0].power_trace`: 1000001 changes are more than the 1000000 a trace may have"
    );
}
