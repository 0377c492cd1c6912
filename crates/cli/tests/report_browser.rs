//! `evac report` opened in a real headless Chromium (Debian's `chromium`),
//! driven over the DevTools protocol: the page loads with no console error,
//! no failed request and no exception, and its charts have content.

mod browser;
mod common;
use common::arg;

use std::path::Path;

use browser::{chromium_available, Browser};
use serde_json::{json, Value};

fn evac(args: &[&str]) {
    let out = common::evac(args);
    // 3: it ran, and some VM did not migrate (aimd-global loses some).
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "evac {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_report_of_two_runs_renders_in_chromium_without_errors() {
    evac_lab::skip_without!(&[chromium_available]);
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("deadline.json");
    let b = dir.path().join("aimd-global.json");
    let html = dir.path().join("report.html");
    // The default scenario: two racks lose power; aimd-global loses VMs there.
    evac(&["simulate", "--policy", "deadline", "--json", arg(&a)]);
    evac(&["simulate", "--policy", "aimd-global", "--json", arg(&b)]);
    evac(&["report", arg(&a), arg(&b), "-o", arg(&html)]);
    let (a, b) = (read_json(&a), read_json(&b));

    let mut browser = Browser::launch();
    browser.open(&html);
    assert_eq!(browser.errors, Vec::<String>::new(), "the page logged errors");

    // One Gantt chart per run, one row per VM of its result file.
    let rows = browser.eval(
        "Array.from(document.querySelectorAll('svg.gantt')).map(s => s.querySelectorAll('g.gantt-row').length)",
    );
    let vms = |r: &Value| r["vms"].as_array().unwrap().len();
    assert_eq!(rows, json!([vms(&a), vms(&b)]));
    // Every migrated VM has a bar the browser lays out with a width.
    let migrated = |r: &Value| {
        r["vms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|vm| vm["outcome"] == "migrated")
            .count()
    };
    let bars = browser.eval(
        "Array.from(document.querySelectorAll('svg.gantt')).map(s => \
           Array.from(s.querySelectorAll('g.gantt-row[data-outcome=migrated] rect.bar.migrated')) \
             .filter(r => r.getBBox().width > 0 && r.getBoundingClientRect().height > 0).length)",
    );
    assert_eq!(bars, json!([migrated(&a), migrated(&b)]));
    let lost = vms(&b) - migrated(&b);
    assert!(
        lost > 0,
        "aimd-global was expected to lose VMs in the default scenario"
    );
    let marks = browser.eval(
        "document.querySelectorAll('svg.gantt')[1].querySelectorAll('g.gantt-row[data-outcome=lost] .mark.lost').length",
    );
    assert_eq!(marks, json!(lost));
    // VM names are text on the axis.
    let first = a["vms"][0]["name"].as_str().unwrap();
    let names = browser.eval(
        "Array.from(document.querySelectorAll('svg.gantt')[0].querySelectorAll('text.vm-name')).map(t => t.textContent)",
    );
    assert!(names.as_array().unwrap().contains(&json!(first)), "{names}");
    // A dashed line per distinct power-off instant in the scenario.
    let mut offs: Vec<f64> = a["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["power_off_s"].as_f64())
        .collect();
    offs.dedup();
    assert!(!offs.is_empty());
    let lines =
        browser.eval("document.querySelectorAll('svg.gantt')[0].querySelectorAll('line.power-off').length");
    assert_eq!(lines, json!(offs.len()));
    // The time series and the CDF: a curve per run, each with a drawn length.
    for class in ["throughput", "capacity", "in-flight", "cdf-curve"] {
        let lengths = browser.eval(&format!(
            "Array.from(document.querySelectorAll('path.{class}')).map(p => p.getTotalLength() > 10)"
        ));
        assert_eq!(lengths, json!([true, true]), "{class}");
    }
    // The summary names the lost VMs of the second run.
    let text = browser.eval("document.body.innerText");
    let lost_vm = b["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vm| vm["outcome"] == "lost")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.as_str().unwrap().contains(&format!("{lost_vm} on ")),
        "{text}"
    );
    assert_eq!(browser.errors, Vec::<String>::new(), "the page logged errors");

    // The screenshots in docs/ come from here:
    // EVAC_REPORT_SCREENSHOTS=docs cargo test -p evac-cli --test report_browser
    if let Some(dir) = std::env::var_os("EVAC_REPORT_SCREENSHOTS") {
        // Relative to the workspace's root, where the command is typed.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(dir);
        for (name, from, to) in [
            ("report-summary.png", "h1", "#gantt"),
            ("report-gantt.png", "#gantt", "#wan"),
            ("report-charts.png", "#wan", ""),
        ] {
            let clip = browser.eval(&format!(
                "(() => {{ const top = document.querySelector('{from}').getBoundingClientRect().top + scrollY - 8; \
                   const end = '{to}' ? document.querySelector('{to}').getBoundingClientRect().top + scrollY - 8 \
                                      : document.documentElement.scrollHeight; \
                   return {{x: 0, y: top, width: document.documentElement.clientWidth, height: end - top, scale: 1}}; }})()"
            ));
            let shot = browser.page_call(
                "Page.captureScreenshot",
                json!({"format": "png", "clip": clip, "captureBeyondViewport": true}),
            );
            use base64::Engine;
            let png = base64::engine::general_purpose::STANDARD
                .decode(shot["data"].as_str().unwrap())
                .unwrap();
            std::fs::write(dir.join(name), png).unwrap();
        }
    }
}

/// The harness itself: a page with a script error and a missing image is
/// caught, so the test above cannot pass by not listening.
#[test]
fn the_browser_harness_sees_console_errors_and_failed_loads() {
    evac_lab::skip_without!(&[chromium_available]);
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("broken.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><img src=\"missing.png\"><script>console.error('boom'); no_such_function();</script></body></html>",
    )
    .unwrap();
    let mut browser = Browser::launch();
    browser.open(&page);
    let errors = browser.errors.join("\n");
    assert!(errors.contains("boom"), "{errors}");
    assert!(errors.contains("no_such_function"), "{errors}");
    assert!(
        errors.contains("missing.png") || errors.contains("ERR_FILE_NOT_FOUND"),
        "{errors}"
    );
}
