//! Tests of the QEMU inventory format: the documented example, power-offs
//! and UPSes, edits during a run, TLS, the `[network]` table and every
//! refusal placed at its file, line and field.

use super::*;
use evac_model::wall_clock::PowerOffAt;
use evac_model::BitsPerSec;

/// `text` read as `lab.toml`.
fn parse(text: &str) -> Inventory {
    Inventory::from_str_at(text, Path::new("lab.toml")).unwrap_or_else(|error| panic!("{error}"))
}

/// `text` with `lines` added after the first `anchor` in it.
fn added_after(text: &str, anchor: &str, lines: &str) -> String {
    text.replacen(anchor, &format!("{anchor}{lines}"), 1)
}

/// Asserts that `error` says each of `words`.
#[track_caller]
fn assert_says(error: &str, words: &[&str]) {
    for word in words {
        assert!(error.contains(word), "{error}\ndoes not say {word:?}");
    }
}

/// The error of reading `text` as `lab.toml`, as it is printed.
fn refused(text: &str) -> String {
    Inventory::from_str_at(text, Path::new("lab.toml"))
        .unwrap_err()
        .to_string()
}

const GOOD: &str = r#"
name = "lab"
[controller]
policy = "aimd-global"
period = "1 s"
[migration]
downtime_limit = "300 ms"
[[host]]
name = "src-1"
site = "source"
nic = "10 Gbps"
power_off_at = "10 min"
[[host]]
name = "dst-1"
site = "destination"
nic = "10 Gbps"
memory = "64 GiB"
migration_address = "127.0.0.1"
incoming_command = "ip netns exec {netns} qemu-system-x86_64"
netns = "evac-dst"
[[vm]]
name = "vm-1"
host = "src-1"
qmp = "/run/evac/vm-1.qmp"
memory = "256 MiB"
qemu_args = ["-machine", "q35"]
"#;

#[test]
fn parses_the_documented_example() {
    let inv = parse(GOOD);
    assert_eq!(inv.hosts.len(), 2);
    assert_eq!(
        inv.hosts[0].power_off_at,
        Some(PowerOffAt::FromStart(Duration::from_secs(600)))
    );
    assert_eq!(
        inv.fleet(&[Bytes::mib(256)]).hosts[0].power_off_at,
        Some(Duration::from_secs(600))
    );
    assert_eq!(inv.vms[0].memory, Some(Bytes::mib(256)));
    assert_eq!(inv.controller.policy, evac_controller::PolicyKind::AimdGlobal);
    let fleet = inv.fleet(&[Bytes::mib(256)]);
    assert_eq!(fleet.vms[0].host, HostId(0));
    assert_eq!(inv.network().wan_bandwidth, BitsPerSec::gbps(10.0));
}

#[test]
fn a_power_off_time_counts_from_the_runs_start_and_needs_its_zone() {
    let text = GOOD.replace("\"10 min\"", "\"2026-12-06T14:30:00+01:00\"");
    let mut inv = parse(&text);
    // 14:30 at +01:00 is 13:30 UTC: 40 min after a start at 12:50 UTC.
    inv.start = "2026-12-06T12:50:00Z".parse().unwrap();
    let fleet = inv.fleet(&[Bytes::mib(256)]);
    assert_eq!(fleet.hosts[0].power_off_at, Some(Duration::from_secs(40 * 60)));
    // Past by the time the run starts: now.
    inv.start = "2026-12-06T13:31:00Z".parse().unwrap();
    assert_eq!(
        inv.fleet(&[Bytes::mib(256)]).hosts[0].power_off_at,
        Some(Duration::ZERO)
    );
    // Line 12 of GOOD (which starts with a newline) holds it.
    let err = refused(&GOOD.replace("\"10 min\"", "\"14:30\""));
    assert!(
        err.starts_with("lab.toml:12:16: field `host[0].power_off_at`: `14:30` is not"),
        "{err}"
    );
}

#[test]
fn a_host_may_name_its_ups_and_a_margin() {
    let text = added_after(
        GOOD,
        "power_off_at = \"10 min\"\n",
        "ups = \"ups1@10.0.0.5\"\nups_margin = \"30 s\"\n",
    );
    let inv = parse(&text);
    let hosts = inv.ups_hosts();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].host, "src-1");
    assert_eq!(hosts[0].ups.to_string(), "ups1@10.0.0.5:3493");
    assert_eq!(hosts[0].margin, Duration::from_secs(30));
    // Its power-off is the UPS's to tell during a run, not the file's.
    assert!(inv.power_offs().is_empty());
    let e = refused(&text.replace("ups1@10.0.0.5", "ups1"));
    assert!(
        e.starts_with("lab.toml:13:7: field `host[0].ups`: `ups1` is not a UPS"),
        "{e}"
    );
    let e = refused(&text.replace("ups = \"ups1@10.0.0.5\"\n", ""));
    assert!(
        e.starts_with("lab.toml:9: host `src-1`: field `ups_margin` without `ups`"),
        "{e}"
    );
    let e = refused(&added_after(GOOD, "memory = \"64 GiB\"\n", "ups = \"u@h\"\n"));
    assert!(e.contains("destination host `dst-1`: field `ups`"), "{e}");
}

/// Edited during a run, only power-offs may change.
#[test]
fn an_edit_beyond_power_offs_is_named() {
    let inv = parse(GOOD);
    let edited = |from: &str, to: &str| parse(&GOOD.replace(from, to));
    let moved = edited("\"10 min\"", "\"2026-12-06T14:30:00Z\"");
    assert_eq!(inv.changed_beyond_power(&moved), None);
    assert_eq!(
        moved.power_offs(),
        vec![(
            "src-1".to_owned(),
            Some(PowerOffAt::Time("2026-12-06T14:30:00Z".parse().unwrap()))
        )]
    );
    let said = |newer: &Inventory| inv.changed_beyond_power(newer).unwrap();
    assert!(said(&edited("nic = \"10 Gbps\"\nmemory", "nic = \"1 Gbps\"\nmemory")).contains("host `dst-1`"));
    assert!(said(&edited("memory = \"256 MiB\"", "memory = \"128 MiB\"")).contains("its VMs"));
    assert!(said(&edited("period = \"1 s\"", "period = \"2 s\"")).contains("its settings"));
    assert!(said(&edited("name = \"dst-1\"", "name = \"dst-2\"")).contains("its list of hosts"));
}

#[test]
fn the_backend_key_is_qemu_or_absent() {
    let inv = parse(&format!("backend = \"qemu\"\n{GOOD}"));
    assert_eq!(inv.backend, "qemu");
    assert_eq!(parse(GOOD).backend, "qemu");
    let err = refused(&format!("backend = \"libvirt\"\n{GOOD}"));
    assert_says(&err, &["lab.toml", "`backend`", "libvirt"]);
}

#[test]
fn source_hosts_sharing_a_netns_are_refused_naming_both() {
    // src-1 in netns `evac-src`, then a host src-2 in it too.
    let src_2 = "[[host]]\nname = \"src-2\"\nsite = \"source\"\nnic = \"1 Gbps\"\nnetns = \"evac-src\"\n";
    let two = added_after(
        GOOD,
        "power_off_at = \"10 min\"\n",
        &format!("netns = \"evac-src\"\n{src_2}"),
    );
    let err = refused(&two);
    assert_says(&err, &["lab.toml", "`src-1`", "`src-2`", "netns"]);
    // In namespaces of their own, they are fine.
    let apart = two.replacen(
        "netns = \"evac-src\"\n[[host]]\nname = \"dst-1\"",
        "netns = \"evac-src2\"\n[[host]]\nname = \"dst-1\"",
        1,
    );
    parse(&apart);
}

#[test]
fn tls_sits_beside_the_model_parameters_and_hosts_name_their_certificates() {
    let inv = parse(GOOD);
    assert!(!inv.migration.tls);
    assert_eq!(inv.hosts[0].tls_dir(), Path::new("/etc/pki/qemu"));
    let text = added_after(GOOD, "[migration]\n", "tls = true\nconnections = 2\n");
    let text = added_after(
        &text,
        "netns = \"evac-dst\"\n",
        "tls_dir = \"/srv/pki/dst\"\ntls_name = \"dst-1.example\"\n",
    );
    let inv = parse(&text);
    assert!(inv.migration.tls);
    assert_eq!(inv.migration.params.connections.get(), 2);
    assert_eq!(inv.migration.params.downtime_limit, Duration::from_millis(300));
    assert_eq!(inv.hosts[1].tls_dir(), Path::new("/srv/pki/dst"));
    assert_eq!(inv.hosts[1].tls_name.as_deref(), Some("dst-1.example"));
    // Still strict about what [migration] holds.
    let err = refused(&text.replace("tls = true", "tls = true\ntls_verify = 1"));
    assert_says(&err, &["lab.toml", "tls_verify"]);
    // A bad value of the model's parameters beside `tls`: at its own
    // line and column, with its path (the table's header is line 6).
    let bad = text.replace("tls = true", "tls = true\nmax_bandwidth = \"fast\"");
    let err = refused(&bad);
    let line = bad.lines().position(|l| l.starts_with("max_bandwidth")).unwrap() + 1;
    assert_eq!(line, 8);
    assert!(
        err.starts_with("lab.toml:8:17: field `migration.max_bandwidth`"),
        "{err}"
    );
    let err = refused(&text.replace("tls = true", "tls = \"yes\""));
    assert_says(&err, &["lab.toml", "tls"]);
    let err = refused(&text.replace("/srv/pki/dst", "pki/dst"));
    assert_says(&err, &["lab.toml", "`dst-1`", "tls_dir", "pki/dst"]);
}

#[test]
fn a_network_table_gives_the_wan() {
    let text = GOOD.replace(
        "[migration]",
        "[network]\nwan_bandwidth = \"200 Mbps\"\nwan_rtt = \"40 ms\"\n[migration]",
    );
    let net = parse(&text).network();
    assert_eq!(net.wan_bandwidth, BitsPerSec::mbps(200.0));
    assert_eq!(net.wan_rtt, Duration::from_millis(40));
    assert_eq!(net.tcp_window, Bytes::mib(4));
    let bad = text.replace("wan_rtt", "wan_latency");
    let err = refused(&bad);
    assert!(err.contains("wan_latency"), "{err}");
}

#[test]
fn errors_name_the_file_line_and_field() {
    let bad = GOOD.replace("nic = \"10 Gbps\"\nmemory", "nic = \"10 GiB\"\nmemory");
    let err = refused(&bad);
    assert!(err.starts_with("lab.toml:16:"), "{err}");
    assert_says(&err, &["field `host[1].nic`", "10 GiB"]);
    let bad = GOOD.replace("qmp = ", "qmpp = ");
    let err = refused(&bad);
    assert_says(&err, &["lab.toml:", "qmpp"]);
    let bad = GOOD.replace("host = \"src-1\"", "host = \"src-9\"");
    let err = refused(&bad);
    assert_says(&err, &["field `host`", "src-9"]);
}

/// The model's refusals, at the inventory's line and field, in the
/// same words as a scenario's (lines counted by hand in GOOD, which
/// starts with a newline).
#[test]
fn the_models_wall_refuses_at_file_line_field() {
    let charset = "a name has only letters A-Z a-z, digits 0-9, `.`, `_` and `-`";
    let limit = |key: &str| {
        format!(
            "lab.toml:6: field `{key}` of [controller]: a limit of 0 would never start a migration; give at least 1"
        )
    };
    // (what GOOD has, what it is replaced with, the error in full)
    let cases = [
        (
            "nic = \"10 Gbps\"\nmemory",
            "nic = \"0 bps\"\nmemory",
            "lab.toml:16: field `nic` of [[host]] \"dst-1\": a NIC of 0 bps carries nothing; give a rate above zero"
                .to_owned(),
        ),
        (
            "period = \"1 s\"",
            "period = \"0 s\"",
            "lab.toml:5: field `period` of [controller]: the controller needs a period above zero, like \"1 s\""
                .to_owned(),
        ),
        ("period = \"1 s\"", "period = \"1 s\"\nmax_in_flight = 0", limit("max_in_flight")),
        (
            "period = \"1 s\"",
            "period = \"1 s\"\nmax_in_flight_per_host = 0",
            limit("max_in_flight_per_host"),
        ),
        (
            "period = \"1 s\"",
            "period = \"1 s\"\nmax_attempts = 0",
            "lab.toml:6: field `max_attempts` of [controller]: 0 attempts would never start a migration; give at least 1"
                .to_owned(),
        ),
        (
            "name = \"lab\"",
            "name = \"x/../../escaped\"",
            "lab.toml:2: field `name`: \"x/../../escaped\" has the character '/'; this name becomes a directory, \
             so it has no `/`, `\\`, `,` or control characters"
                .to_owned(),
        ),
        (
            "name = \"vm-1\"",
            "name = \"a,b\"",
            format!("lab.toml:22: field `name` of [[vm]] \"a,b\": \"a,b\" has the character ','; {charset}"),
        ),
        (
            "memory = \"256 MiB\"",
            "memory = \"128 GiB\"",
            "lab.toml:25: field `memory` of [[vm]] \"vm-1\": VM `vm-1` needs 128 GiB but the destination with \
             the most room, `dst-1`, has room for 64 GiB only: there is no destination with room for it"
                .to_owned(),
        ),
        (
            "name = \"lab\"",
            "name = \"lab\"\nrun_dir = \"/tmp/a,b\"",
            "lab.toml:3: field `run_dir`: /tmp/a,b has a `,`, which would end the path in QEMU's option strings"
                .to_owned(),
        ),
    ];
    for (from, to, expected) in cases {
        assert_eq!(refused(&GOOD.replace(from, to)), expected, "{from} -> {to}");
    }
}

/// The same bad value in a scenario and in an inventory: the same words.
#[test]
fn a_scenario_and_an_inventory_refuse_alike() {
    let scenario = "[network]\nwan_bandwidth = \"1 Gbps\"\n[controller]\nperiod = \"0 s\"\n\
                    [[host]]\nname = \"s\"\nsite = \"source\"\nnic = \"1 Gbps\"\n\
                    [[host]]\nname = \"d\"\nsite = \"destination\"\nnic = \"1 Gbps\"\n";
    let from_scenario = evac_scenario::Scenario::from_toml_str(scenario, "s.toml")
        .unwrap_err()
        .to_string();
    let from_inventory = refused(&GOOD.replace("period = \"1 s\"", "period = \"0 s\""));
    let tail = |s: &str| s.split_once(": ").map(|(_, t)| t.to_owned()).unwrap();
    assert_eq!(tail(&from_scenario), tail(&from_inventory));
}
