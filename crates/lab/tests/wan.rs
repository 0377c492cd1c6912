//! The lab's WAN for real: namespaces, the delay line, tbf and the TCP
//! window sysctls. Needs root.

use std::time::Duration;

use evac_lab::probe::{tcp_goodput, udp_rtts};
use evac_lab::topology::Topology;
use evac_lab::{self as lab};
use evac_scenario::Scenario;

fn topology(tag: &str, rate: &str, rtt: &str, window: &str) -> Topology {
    let text = format!(
        "name = \"t\"\n{}{}",
        evac_testkit::wan_toml(rate, rtt, window),
        evac_testkit::two_sites_toml(&[("v", "64 MiB")])
    );
    let scenario = Scenario::from_toml_str(&text, "test").unwrap();
    let prefix = format!("evlab-test{tag}-{}", std::process::id());
    Topology::build(&prefix, &scenario.fleet, &scenario.network).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn an_idle_round_trip_takes_the_configured_rtt() {
    lab::skip_without!(&[lab::netns_available]);
    let topo = topology("rtt", "400 Mbps", "30 ms", "4 MiB");
    let rtts = udp_rtts(
        &topo.host_netns[0],
        &topo.host_netns[1],
        &topo.host_address[1],
        30,
        Duration::from_millis(20),
    )
    .unwrap();
    assert!(rtts.len() >= 28, "{} of 30 answered", rtts.len());
    // Each way holds 15 ms; nothing can come back sooner than 30 ms.
    let fastest = *rtts.iter().min().unwrap();
    assert!(fastest >= Duration::from_millis(30), "{fastest:?}");
    // Thread wake-ups and the namespaces' own path add well under 5 ms
    // when the machine is not starved.
    let typical = median(rtts);
    assert!(typical < Duration::from_millis(35), "median {typical:?}");
    drop(topo);
}

#[test]
fn one_connection_is_held_to_its_window_over_the_rtt_and_four_are_not() {
    lab::skip_without!(&[lab::netns_available]);
    // 1 MiB / 100 ms = 83.9 Mbit/s for one connection; the WAN has 400.
    let topo = topology("win", "400 Mbps", "100 ms", "1 MiB");
    let (s, d, a) = (&topo.host_netns[0], &topo.host_netns[1], &topo.host_address[1]);
    let cap = (1u64 << 20) as f64 / 0.1;
    let one = tcp_goodput(s, d, a, 1, Duration::from_secs(8)).unwrap();
    assert!(one < 1.3 * cap, "one connection: {one} B/s, cap {cap} B/s");
    assert!(one > 0.5 * cap, "one connection: {one} B/s, cap {cap} B/s");
    let four = tcp_goodput(s, d, a, 4, Duration::from_secs(8)).unwrap();
    assert!(four > 2.5 * one, "four connections: {four} B/s, one: {one} B/s");
}

#[test]
fn dropping_the_topology_removes_its_namespaces() {
    lab::skip_without!(&[lab::netns_available]);
    let topo = topology("drop", "100 Mbps", "10 ms", "4 MiB");
    let names = topo.host_netns.clone();
    let prefix = topo.prefix.clone();
    assert!(lab::netns_list().unwrap().contains(&names[0]));
    drop(topo);
    let left: Vec<String> = lab::netns_list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
