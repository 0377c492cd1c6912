//! Observability as operators run it: the alert rules in
//! `deploy/prometheus/` pass `promtool`, and a real Prometheus (Debian's
//! `prometheus`) scrapes a real evacuation of real QEMU VMs while it runs,
//! loads the rules, and has every series the Grafana dashboard in
//! `deploy/grafana/` draws.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evac_lab::{self as lab, Lab};
use evac_model::BytesPerSec;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// `Err(reason)` when `tool --version` does not run.
fn tool_available(tool: &str) -> Result<(), String> {
    match Command::new(tool).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`{tool} --version` failed: {}", out.status)),
        Err(e) => Err(format!(
            "{tool} is not installed ({e}); apt-get install prometheus"
        )),
    }
}

fn promtool_available() -> Result<(), String> {
    tool_available("promtool")
}

fn prometheus_available() -> Result<(), String> {
    tool_available("prometheus")
}

/// A process we started, killed by its pid when the test ends, even by a
/// panic.
mod common;
use common::{run_with_metrics, KillOnDrop};

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    lab::skip_without!(&[promtool_available]);
    let dir = deploy().join("prometheus");
    for args in [
        ["check", "rules", "evac-alerts.yml"],
        ["test", "rules", "evac-alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every `evac_*` series the dashboard's queries read.
fn dashboard_series() -> BTreeSet<String> {
    let path = deploy().join("grafana/evac-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("the dashboard is JSON");
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a query");
            let mut rest = expr;
            while let Some(at) = rest.find("evac_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
    }
    names
}

/// `GET path` on a local HTTP server: its JSON body's `data`.
fn api(addr: &str, path: &str) -> Option<serde_json::Value> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    (json["status"] == "success").then(|| json["data"].clone())
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A free port on loopback, for Prometheus to listen on.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether Prometheus has any series named `name`, from its first sample on.
fn has_series(addr: &str, name: &str) -> bool {
    let path = format!("/api/v1/series?match%5B%5D={}&start=0", encode(name));
    api(addr, &path).is_some_and(|data| data.as_array().is_some_and(|series| !series.is_empty()))
}

/// The value of an instant query that returns one series.
fn query_one(addr: &str, query: &str) -> Option<f64> {
    let data = api(addr, &format!("/api/v1/query?query={}", encode(query)))?;
    data["result"].get(0)?["value"][1].as_str()?.parse().ok()
}

#[test]
fn a_real_prometheus_scrapes_a_lab_evacuation_and_has_every_dashboard_series() {
    lab::skip_without!(&[
        lab::qemu_available,
        lab::dirty_guest_available,
        prometheus_available,
    ]);
    let wanted = dashboard_series();
    assert!(wanted.len() >= 15, "the dashboard reads only {wanted:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::new(dir.path());
    let vms = vec![
        lab.start_dirtying_vm_in("vm-1", 128, BytesPerSec(5e6), 32, None)
            .unwrap(),
        lab.start_vm("vm-2", 96).unwrap(),
    ];
    // 80 Mbit/s a migration: each takes several seconds, several scrapes.
    // The source host powers off in 10 minutes, long after the run.
    let inventory = dir.path().join("inventory.toml");
    let text = lab
        .inventory("sequential", &vms, "max_bandwidth = \"80 Mbps\"")
        .replacen(
            "site = \"source\"\n",
            "site = \"source\"\npower_off_at = \"10 min\"\n",
            1,
        );
    std::fs::write(&inventory, text).unwrap();
    let (mut evac, target) = run_with_metrics(&inventory, &[]);

    // Prometheus: scrapes evac every second, evaluates the rules, keeps its
    // data in the temporary directory, listens on loopback only.
    let config = dir.path().join("prometheus.yml");
    let rules = deploy()
        .join("prometheus/evac-alerts.yml")
        .canonicalize()
        .unwrap();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: evac\n    static_configs:\n      - targets: ['{target}']\n",
            rules = rules.display()
        ),
    )
    .unwrap();
    let prometheus_addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prometheus_addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts"),
    );

    // Every series the dashboard reads must show up while the run goes on
    // (a migration's series exist only while it is in flight).
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen = BTreeSet::new();
    let mut countdown = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "after 180 s Prometheus still lacks {:?}; its log:\n{}",
            wanted.difference(&seen).collect::<Vec<_>>(),
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        for name in wanted.difference(&seen.clone()) {
            if has_series(&prometheus_addr, name) {
                seen.insert(name.clone());
            }
        }
        if let Some(left) = query_one(&prometheus_addr, "evac_host_power_off_seconds{host=\"src\"}") {
            countdown.push(left);
        }
        let finished = evac.0.try_wait().unwrap().is_some();
        if seen == wanted && finished {
            break;
        }
        if finished && !seen.is_superset(&wanted) {
            // The run ended: what Prometheus has scraped is all it will get.
            std::thread::sleep(Duration::from_secs(2));
            let missing: Vec<_> = wanted.difference(&seen).collect();
            let still_missing = missing.iter().any(|name| !has_series(&prometheus_addr, name));
            assert!(
                !still_missing,
                "the run ended and Prometheus never scraped {missing:?}"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    evac.assert_exits_successfully();

    // The source host's countdown: under 600 s, going down as the run goes.
    let reads = countdown.len();
    assert!(reads >= 2, "the countdown was read {reads} times");
    assert!(
        countdown.iter().all(|&left| left > 400.0 && left <= 600.0),
        "{countdown:?}"
    );
    assert!(countdown.windows(2).all(|w| w[1] <= w[0]), "{countdown:?}");
    assert!(countdown.first() > countdown.last(), "{countdown:?}");
    // Both VMs were seen migrated at some scrape... or at least one: the
    // last snapshot may end the endpoint before a scrape reads it.
    let migrated = query_one(
        &prometheus_addr,
        "max_over_time(evac_vms{outcome=\"migrated\"}[10m])",
    );
    assert!(migrated.is_some_and(|n| n >= 1.0), "{migrated:?}");

    // The rules loaded and evaluate without errors on the real series.
    let rules = api(&prometheus_addr, "/api/v1/rules").expect("the rules API");
    let group = &rules["groups"][0];
    assert_eq!(group["name"], "evac", "{rules}");
    let evaluated = group["rules"].as_array().expect("rules");
    assert_eq!(evaluated.len(), 5, "{rules}");
    for rule in evaluated {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    // Dropping the lab kills the destination QEMUs evac started.
    drop(lab);
}
