//! Exit codes and output plumbing of the `evac` binary, spawned as a script
//! would: 0 all migrated, 3 some VM not, 1 error, 2 usage; output paths
//! checked before anything runs; `-`; closed pipes and full disks.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

mod common;
use common::{arg, evac, evac_command, read_json, text};

/// One source host that loses power after 1 s, with a 4 GiB VM on it: at
/// 1 Gbps the copy alone takes 4 * 2^30 * 8 / 1e9 = 34.4 s, so it cannot
/// migrate; the other VM (no deadline) can.
const ONE_LOST: &str = r#"
name = "one lost"
[network]
wan_bandwidth = "1 Gbps"
[controller]
policy = "parallel"
[[host]]
name = "doomed"
site = "source"
nic = "10 Gbps"
power_off_at = "1 s"
[[host]]
name = "safe-src"
site = "source"
nic = "10 Gbps"
[[host]]
name = "dst"
site = "destination"
nic = "10 Gbps"
[[vm]]
name = "late"
host = "doomed"
memory = "4 GiB"
[[vm]]
name = "fine"
host = "safe-src"
memory = "256 MiB"
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn every_vm_migrated_exits_0_and_some_not_migrated_exits_3() {
    let out = evac(&["simulate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let dir = tempfile::tempdir().unwrap();
    let scenario = write(dir.path(), "lost.toml", ONE_LOST);
    let json = dir.path().join("r.json");
    let out = evac(&["simulate", &scenario, "--json", arg(&json)]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    // The result is written all the same.
    let result: Value = read_json(&json);
    let outcome = |name: &str| {
        result["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|vm| vm["name"] == name)
            .unwrap()["outcome"]
            .clone()
    };
    assert_eq!(outcome("fine"), "migrated");
    assert_ne!(outcome("late"), "migrated");
}

#[test]
fn errors_exit_1_and_usage_errors_exit_2() {
    let out = evac(&["simulate", "/nonexistent/scenario.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = evac(&["simulate", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = evac(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn an_unwritable_output_is_refused_before_anything_runs() {
    let cases: [&[&str]; 4] = [
        &["simulate", "--json", "/nonexistent/dir/r.json"],
        &["simulate", "--csv", "/nonexistent/dir/r.csv"],
        &["simulate", "--plot", "/nonexistent/dir/r.svg"],
        &[
            "run",
            "/nonexistent/inventory.toml",
            "--json",
            "/nonexistent/dir/r.json",
        ],
    ];
    for args in cases {
        let out = evac(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        // Refused for the output, not for the inventory that is read after.
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error: {} /nonexistent/dir/r.", args[args.len() - 2])),
            "{stderr}"
        );
        assert!(stderr.contains("cannot be written"), "{stderr}");
        // Nothing ran: not even the scenario's header line was printed.
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    }
}

#[test]
fn a_failed_run_leaves_no_empty_result_and_keeps_an_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.json");
    let old = write(dir.path(), "old.json", "the previous result\n");
    let bad = write(
        dir.path(),
        "bad.toml",
        "name = \"x\"\n[network]\nwan_bandwidth = \"fast\"\n",
    );
    let out = evac(&["simulate", &bad, "--json", arg(&fresh), "--csv", &old]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!fresh.exists(), "an empty result file was left behind");
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "the previous result\n");
}

#[test]
fn dash_is_stdout_for_an_output_and_stdin_for_a_scenario() {
    let mut child = evac_command()
        .args(["simulate", "-", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ONE_LOST.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    // Stdout is the JSON alone; the summary went to stderr.
    let result: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(result["vms"].as_array().unwrap().len(), 2);
    assert!(text(&out.stderr).contains("score"), "{}", text(&out.stderr));

    let out = evac(&["simulate", "--json", "-", "--csv", "-"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "error: only one output can go to stdout (`-`)"
    );
}

/// A pipe whose reading end is already closed: every write to it fails with
/// EPIPE, as `evac simulate | head -2` does once `head` has its lines.
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two fds we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both are fresh fds owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

#[test]
fn a_closed_stdout_ends_quietly_and_still_writes_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let out = evac_command()
        .args(["simulate", "--json", arg(&json)])
        .stdout(Stdio::from(closed_pipe()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("error"), "{}", text(&out.stderr));
    let result: Value = read_json(&json);
    assert!(result["migrated"].as_u64().unwrap() > 0);

    // The same for a JSON written to the closed stdout.
    let out = evac_command()
        .args(["simulate", "--json", "-"])
        .stdout(Stdio::from(closed_pipe()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
}

/// Every subcommand that prints to stdout without a lab or QEMU: a closed
/// stdout ends it quietly, with the exit code it would have had.
#[test]
fn every_subcommand_ends_quietly_on_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let grid = write(
        dir.path(),
        "grid.toml",
        "[factors]\npolicy = [\"sequential\", \"parallel\"]\n",
    );
    let json = dir.path().join("r.json");
    let unique = format!("evac-no-such-lab-{}", std::process::id());
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["init"], 0),
        (vec!["simulate"], 0),
        (vec!["simulate", "--explain"], 0),
        (vec!["sweep", &grid], 0),
        (vec!["sweep", &grid, "--csv", "-"], 0),
        (vec!["simulate", "--json", json.to_str().unwrap()], 0),
        // `evac lab down NAME` prints "no lab named ... found" on stdout
        // (a name no lab has: nobody's lab is touched). Needs root.
        (vec!["lab", "down", &unique], 0),
        (vec!["--help"], 0),
    ];
    for (args, code) in cases {
        if args[0] == "lab" && unsafe { libc::geteuid() } != 0 {
            continue;
        }
        let out = evac_command()
            .args(&args)
            .stdout(Stdio::from(closed_pipe()))
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "evac {}: {stderr}", args.join(" "));
        assert!(!stderr.contains("panicked"), "evac {}: {stderr}", args.join(" "));
        assert!(!stderr.contains("error"), "evac {}: {stderr}", args.join(" "));
    }
}

#[test]
fn a_full_disk_is_one_line_naming_the_path() {
    if !Path::new("/dev/full").exists() {
        panic!("/dev/full is missing: this test needs Linux");
    }
    let out = evac(&["simulate", "--json", "/dev/full"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "error: writing /dev/full: No space left on device (os error 28)"
    );

    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = evac_command().arg("simulate").stdout(full).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "error: writing <stdout>: No space left on device (os error 28)"
    );
}
