//! The command-line conventions: `--version` with the commit, shell
//! completions and manual pages generated from the CLI definition, "did you
//! mean" for a mistyped policy, order, unit or field, and results that
//! record which evac made them, from which scenario and seed.

use std::process::{Command, Output};

mod common;
use common::{arg, evac};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The commit of this checkout as git itself says, if this is one.
fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn version() -> String {
    match git_commit() {
        Some(commit) => format!("{} ({commit})", env!("CARGO_PKG_VERSION")),
        None => env!("CARGO_PKG_VERSION").to_owned(),
    }
}

#[test]
fn version_names_the_commit() {
    let out = evac(&["--version"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), format!("evac {}\n", version()));
}

#[test]
fn bash_completes_commands_and_options() {
    let script = evac(&["completions", "bash"]);
    assert!(script.status.success(), "{}", stderr(&script));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evac.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    // Real bash, as it completes a word: COMP_WORDS, then the function.
    let complete = |words: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 _evac evac \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; echo \"${{COMPREPLY[@]}}\"",
                path.display()
            ))
            .output()
            .expect("bash runs");
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_owned()
    };
    assert_eq!(complete("evac sim"), "simulate");
    assert_eq!(complete("evac simulate --pol"), "--policy");
    assert_eq!(complete("evac completions fi"), "fish");
}

#[test]
fn every_shell_gets_a_script() {
    for shell in ["bash", "elvish", "fish", "powershell", "zsh"] {
        let out = evac(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in ["simulate", "sweep", "run", "plan", "policy", "resume"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    let out = evac(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: invalid value 'tcsh' for '<SHELL>'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn man_pages_are_generated_from_the_cli() {
    let out = evac(&["man"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(
        page.contains(&format!(".TH evac 1  \"evac {}\"", version())),
        "{page}"
    );
    // Every command is listed, each pointing at its own page.
    for command in [
        "simulate",
        "sweep",
        "run",
        "plan",
        "init",
        "report",
        "lab",
        "completions",
        "man",
    ] {
        assert!(
            page.contains(&format!("evac\\-{command}(1)")),
            "{command}: {page}"
        );
    }
    let out = evac(&["man", "run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH evac-run 1"), "{page}");
    assert!(page.contains("\\fBevac run\\fR"), "{page}");
    assert!(page.contains("\\fB\\-\\-resume\\fR"), "{page}");

    let out = evac(&["man", "simulte"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: evac man: no command `simulte`; expected one of simulate, sweep, run, plan, init, \
         report, lab, completions, man; did you mean `simulate`?\n"
    );
}

/// The first line of stderr (clap adds a hint after a blank line).
fn first_line(out: &Output) -> String {
    stderr(out).lines().next().unwrap_or_default().to_owned()
}

#[test]
fn a_mistyped_policy_or_order_flag_gets_the_closest_one() {
    let out = evac(&["simulate", "--policy", "deadlin"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        first_line(&out),
        "error: invalid value 'deadlin' for '--policy <POLICY>': unknown policy `deadlin`; expected one of \
         sequential, parallel, static, aimd-local, aimd-global, deadline; did you mean `deadline`?"
    );
    let out = evac(&["simulate", "--order", "smallest"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        first_line(&out),
        "error: invalid value 'smallest' for '--order <ORDER>': unknown order `smallest`; expected as-listed, \
         smallest-first, largest-first, priority or deadline; did you mean `smallest-first`?"
    );
}

/// Runs `evac ARGS FILE` on `text` written to FILE; its stderr with the
/// file's path replaced by `FILE`.
fn refused(args: &[&str], text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.toml");
    std::fs::write(&path, text).unwrap();
    let mut all: Vec<&str> = args.to_vec();
    all.push(path.to_str().unwrap());
    let out = evac(&all);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    stderr(&out).replace(path.to_str().unwrap(), "FILE")
}

/// The scenario these tests mistype: one VM, `web`, under `deadline`.
fn scenario() -> String {
    common::web_scenario("[controller]\npolicy = \"deadline\"\n")
}

#[test]
fn the_scenario_itself_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.toml");
    std::fs::write(&path, scenario()).unwrap();
    assert!(evac(&["simulate", arg(&path)]).status.success());
}

#[test]
fn a_mistyped_unit_gets_the_closest_one() {
    assert_eq!(
        refused(
            &["simulate"],
            &scenario().replace("nic = \"10 Gbps\"", "nic = \"10 Gbsp\"")
        ),
        "error: FILE:9: field `nic` of [[host]] \"src\": `10 Gbsp` is not a bit rate like \"1 Gbps\" \
         (units: bps Kbps Mbps Gbps Tbps); did you mean `10 Gbps`?\n"
    );
    assert_eq!(
        refused(&["simulate"], &scenario().replace("\"4 GiB\"", "\"4 GIB\"")),
        "error: FILE:17: field `memory` of [[vm]] \"web\": `4 GIB` is not a size like \"4 GiB\" \
         (units: B KB MB GB TB KiB MiB GiB TiB); did you mean `4 GiB`?\n"
    );
}

#[test]
fn a_mistyped_scenario_field_or_policy_gets_the_closest_one() {
    assert_eq!(
        refused(
            &["simulate"],
            &scenario().replace("wan_bandwidth", "wan_bandwith")
        ),
        "error: FILE:3: field `wan_bandwith` of [network]: unknown field `wan_bandwith`, expected one of \
         `wan_bandwidth`, `wan_rtt`, `tcp_window`, `wan_trace`; did you mean `wan_bandwidth`?\n"
    );
    assert_eq!(
        refused(
            &["simulate"],
            &scenario().replace("policy = \"deadline\"", "policy = \"aimd_global\"")
        ),
        "error: FILE:5: field `policy` of [controller]: unknown variant `aimd_global`, expected one of \
         `sequential`, `parallel`, `static`, `aimd-local`, `aimd-global`, `deadline`; \
         did you mean `aimd-global`?\n"
    );
}

#[test]
fn a_mistyped_grid_factor_or_field_gets_the_closest_one() {
    assert_eq!(
        refused(&["sweep"], "name = \"g\"\n[factors]\nwan_rt = [\"5 ms\"]\n"),
        "error: FILE:3: factor `wan_rt`: unknown factor; expected one of policy, wan_bandwidth, wan_rtt, \
         tcp_window, connections, memory, dirty_rate, mode, trace, order, max_in_flight, \
         max_in_flight_per_host, power_off_scale, power_news; did you mean `wan_rtt`?\n"
    );
    assert_eq!(
        refused(
            &["sweep"],
            "name = \"g\"\nrepeat_seed = 3\n[factors]\nwan_rtt = [\"5 ms\"]\n"
        ),
        "error: FILE:2: unknown field `repeat_seed`, expected one of `name`, `base`, `repeat_seeds`, \
         `factors`; did you mean `repeat_seeds`?\n"
    );
}

#[test]
fn a_mistyped_inventory_field_gets_the_closest_one() {
    // QEMU's (`evac run` and `evac plan` read the same format).
    for command in ["run", "plan"] {
        assert_eq!(
            refused(&[command], "naem = \"x\"\n"),
            "error: FILE:1:1: field `naem`: unknown field `naem`, expected one of `name`, `backend`, \
             `controller`, `migration`, `run_dir`, `network`, `stall_after`, `host`, `vm`; \
             did you mean `name`?\n"
        );
    }
    // libvirt's, read in any build: the fields every inventory's hosts
    // have, then libvirt's own.
    assert_eq!(
        refused(
            &["run"],
            "name = \"x\"\nbackend = \"libvirt\"\n[[host]]\nname = \"a1\"\nsite = \"source\"\n\
             nic = \"10 Gbps\"\npeer_url = \"qemu+tcp://a/system\"\n"
        ),
        "error: FILE:7:1: field `host[0].peer_url`: unknown field `peer_url`, expected one of `name`, \
         `site`, `nic`, `memory`, `power_off_at`, `ups`, `ups_margin`, `migration_cpus`, \
         `migration_address`, `tls_name`, `uri`, `peer_uri`, `max_workers`, `migration_ports`, \
         `ssh_max_startups`; did you mean `peer_uri`?\n"
    );
}

/// `--json` to stdout, parsed.
fn result_json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--json", "-"]);
    let out = evac(&all);
    assert!(
        out.status.code().is_some_and(|c| c == 0 || c == 3),
        "{}",
        stderr(&out)
    );
    // Stdout holds the summary too when it is not the JSON's: here --json -
    // takes stdout, so it is the JSON alone.
    serde_json::from_slice(&out.stdout).expect("the JSON result")
}

#[test]
fn a_result_records_evac_the_scenario_and_its_seed() {
    // The embedded default is scenarios/default.toml; its seed read from the
    // file by the toml crate, not by evac.
    let default: toml::Table = toml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scenarios/default.toml"
        ))
        .unwrap(),
    )
    .unwrap();
    let result = result_json(&["simulate"]);
    assert_eq!(result["evac_version"], version());
    assert_eq!(result["scenario"], "default");
    assert_eq!(result["seed"].as_i64(), default["seed"].as_integer());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.toml");
    std::fs::write(
        &path,
        scenario().replace("name = \"s\"\n", "name = \"s\"\nseed = 99\n"),
    )
    .unwrap();
    let result = result_json(&["simulate", path.to_str().unwrap()]);
    assert_eq!(result["evac_version"], version());
    assert_eq!(result["scenario"], path.to_str().unwrap());
    assert_eq!(result["seed"], 99);
}

#[test]
fn plan_samples_whole_seconds_and_says_so() {
    for bad in ["500ms", "2.5 s", "0 s"] {
        let out = evac(&["plan", "inventory.toml", "--sample", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert_eq!(
            first_line(&out),
            format!(
                "error: invalid value '{bad}' for '--sample <SAMPLE>': `{bad}` is not a whole number of \
                 seconds, at least 1 (QEMU samples dirty pages per second), e.g. `2s`"
            )
        );
    }
    let help = stdout(&evac(&["plan", "--help"]));
    assert!(help.contains("a whole number of seconds"), "{help}");
    assert!(!help.contains("(whole seconds)"), "{help}");
}

#[test]
fn run_help_speaks_of_both_backends() {
    let help = stdout(&evac(&["run", "--help"]));
    assert!(help.contains("QEMU VMs over QMP"), "{help}");
    assert!(help.contains("backend = \"libvirt\""), "{help}");
}
