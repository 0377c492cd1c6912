//! `evac init` and `evac report` as a newcomer meets them: a scenario to
//! start from, and a clear error for a file that is not a result.

mod common;
use common::{arg, evac, read_json, text};

#[test]
fn init_writes_a_scenario_that_simulates_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    let out = evac(&["init", arg(&path)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("[[host]]") && written.contains("[controller]"));

    let out = evac(&["simulate", arg(&path)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The scenario's header line names the 41 VMs of the default.
    assert!(text(&out.stdout).contains("41 VMs"), "{}", text(&out.stdout));

    std::fs::write(&path, "edited").unwrap();
    let out = evac(&["init", arg(&path)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("never overwritten"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "edited");

    // Without a file: the same text on stdout.
    let out = evac(&["init"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), written);
}

#[test]
fn report_refuses_a_file_that_is_not_a_result() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\n  \"policy\": \"x\",\n  \"vms\": 3\n}\n").unwrap();
    let html = dir.path().join("r.html");
    let out = evac(&["report", arg(&bad), "-o", arg(&html)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    // One line naming the file, the line and column, and what it expected.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bad.json:3:"), "{stderr}");
    assert!(stderr.contains("not an evac result"), "{stderr}");
    assert!(!html.exists());

    let missing = dir.path().join("missing.json");
    let out = evac(&["report", arg(&missing), "-o", arg(&html)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("missing.json"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn report_of_one_simulated_run_names_its_lost_vms() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("aimd.json");
    let html = dir.path().join("r.html");
    let out = evac(&["simulate", "--policy", "aimd-global", "--json", arg(&json)]);
    // aimd-global loses VMs of the default scenario: exit 3, result written.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = evac(&["report", arg(&json), "-o", arg(&html), "--label", "plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    let result: serde_json::Value = read_json(&json);
    for vm in result["vms"].as_array().unwrap() {
        let name = vm["name"].as_str().unwrap();
        assert!(
            page.contains(&format!("data-vm=\"{name}\"")),
            "no Gantt row for {name}"
        );
        if vm["outcome"] == "lost" {
            assert!(
                page.contains(&format!("<li>{name} on ")),
                "{name} is not named as lost"
            );
        }
    }
    assert!(page.contains("evac report: plan"));
    // Self-contained: nothing to fetch.
    for reference in ["src=\"http", "href=\"http", "<link", "<script"] {
        assert!(!page.contains(reference), "the page refers to {reference}");
    }
}
