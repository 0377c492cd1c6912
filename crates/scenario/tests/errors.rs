//! Every refusal names the file, the line (counted here by hand), the field
//! and what was expected.

use evac_scenario::{Location, Scenario, ScenarioError};

const ORIGIN: &str = "scenarios/x.toml";

/// A valid scenario, 21 lines long; the tests append to it or change it.
/// It ends in the [network] table, so appended keys land there.
const BASE: &str = r#"name = "errors"
seed = 7

[[host]]
name = "src-1"
site = "source"
nic = "10 Gbps"

[[host]]
name = "dst-1"
site = "destination"
nic = "10 Gbps"
memory = "64 GiB"

[[vm]]
name = "web-1"
host = "src-1"
memory = "4 GiB"

[network]
wan_bandwidth = "1 Gbps"
"#;

fn refuse(text: &str) -> ScenarioError {
    match Scenario::from_toml_str(text, ORIGIN) {
        Ok(scenario) => panic!("accepted:\n{text}\nas {scenario:?}"),
        Err(error) => error,
    }
}

/// Asserts a refusal at `line` of `field`, whose message contains `says`,
/// and that the printed error carries all of them.
#[track_caller]
fn assert_refused(text: &str, line: Option<usize>, field: Option<&str>, says: &str) {
    let error = refuse(text);
    let printed = error.to_string();
    let ScenarioError::Invalid {
        at,
        field: got_field,
        message,
    } = &error
    else {
        panic!("not an Invalid error: {error:?}");
    };
    assert_eq!(
        at,
        &Location {
            origin: ORIGIN.into(),
            line
        },
        "{printed}"
    );
    assert_eq!(got_field.as_deref(), field, "{printed}");
    assert!(message.contains(says), "{printed}\ndoes not say: {says}");
    let location = match line {
        Some(line) => format!("{ORIGIN}:{line}: "),
        None => format!("{ORIGIN}: "),
    };
    let subject = field.map(|f| format!("{f}: ")).unwrap_or_default();
    assert!(printed.starts_with(&format!("{location}{subject}")), "{printed}");
}

fn appended(extra: &str) -> String {
    format!("{BASE}{extra}")
}

/// Asserts that `keys` (`key = value` lines) in a `[table]` appended to
/// [`BASE`] are refused at the last key's line and field, with `says`.
/// `[network]` is BASE's last table: its keys go on from line 22. Any
/// other table opens on line 23, after a blank line 22: its keys from 24.
#[track_caller]
fn assert_key_refused(table: &str, keys: &str, says: &str) {
    let (text, first_line) = match table {
        "network" => (appended(&format!("{keys}\n")), 22),
        _ => (appended(&format!("\n[{table}]\n{keys}\n")), 24),
    };
    let last = keys.lines().last().expect("at least one key");
    let (key, _) = last.split_once(" = ").expect("a `key = value` line");
    let line = first_line + keys.lines().count() - 1;
    let field = format!("field `{key}` of [{table}]");
    assert_refused(&text, Some(line), Some(&field), says);
}

#[test]
fn the_base_is_valid() {
    let scenario = Scenario::from_toml_str(BASE, ORIGIN).unwrap();
    assert_eq!(scenario.fleet.vms.len(), 1);
}

#[test]
fn a_value_in_the_wrong_unit_is_refused_with_the_unit_expected() {
    let error = refuse(&BASE.replace(r#"memory = "4 GiB""#, r#"memory = "4 GB/s""#));
    assert_eq!(
        error.to_string(),
        r#"scenarios/x.toml:18: field `memory` of [[vm]] "web-1": `4 GB/s` is not a size like "4 GiB" (units: B KB MB GB TB KiB MiB GiB TiB)"#
    );
}

#[test]
fn a_negative_size_or_a_rate_without_its_unit_does_not_parse() {
    assert_refused(
        &BASE.replace(r#"memory = "4 GiB""#, r#"memory = "-4 GiB""#),
        Some(18),
        Some(r#"field `memory` of [[vm]] "web-1""#),
        "`-4 GiB` is not a size",
    );
    assert_refused(
        &BASE.replace(r#"wan_bandwidth = "1 Gbps""#, "wan_bandwidth = 1000"),
        Some(21),
        Some("field `wan_bandwidth` of [network]"),
        "`1000` has no unit; expected a bit rate like \"1 Gbps\"",
    );
}

#[test]
fn text_that_is_not_toml_is_a_syntax_error() {
    let error = refuse(&BASE.replace(r#"memory = "4 GiB""#, "memory = = 4"));
    let ScenarioError::Syntax { at, message } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(
        at,
        &Location {
            origin: ORIGIN.into(),
            line: Some(18)
        }
    );
    assert!(!message.contains('\n'), "{message}");
    assert!(
        error
            .to_string()
            .starts_with("scenarios/x.toml:18: not valid TOML: "),
        "{error}"
    );
}

#[test]
fn an_unknown_key_is_refused_with_the_accepted_ones() {
    assert_refused(
        &BASE.replace(r#"memory = "4 GiB""#, "memory = \"4 GiB\"\ncolour = \"blue\""),
        Some(19),
        Some(r#"field `colour` of [[vm]] "web-1""#),
        "unknown field `colour`, expected one of `name`, `host`, `memory`, `dirty_rate`, \
         `working_set`, `priority`, `destination`",
    );
    assert_refused(
        &BASE.replace("seed = 7", "seed = 7\ncolour = 1"),
        Some(3),
        Some("field `colour`"),
        "unknown field `colour`",
    );
    assert_key_refused(
        "network",
        "bandwith = \"1 Gbps\"",
        "unknown field `bandwith`, expected one of `wan_bandwidth`",
    );
    assert_refused(
        &appended("wan_trace = [{ at = \"0 s\", bandwidth = \"1 Gbps\", jitter = \"1 ms\" }]\n"),
        Some(22),
        Some("field `wan_trace[0].jitter` of [network]"),
        "unknown field `jitter`, expected `at` or `bandwidth`",
    );
    assert_key_refused("migration", "downtime = \"1 s\"", "unknown field `downtime`");
    assert_refused(
        &appended("\n[controller]\npolicy = \"aimd-global\"\n\n[controller.aimd]\nwindow = 3\n"),
        Some(27),
        Some("field `aimd.window` of [controller]"),
        "unknown field `window`",
    );
}

#[test]
fn a_missing_required_field_is_named() {
    assert_refused(
        &BASE.replace(r#"wan_bandwidth = "1 Gbps""#, r#"wan_rtt = "10 ms""#),
        Some(20),
        Some("field `network`"),
        "missing field `wan_bandwidth`",
    );
    assert_refused(
        &BASE.replace("name = \"web-1\"\n", ""),
        Some(15),
        Some("[[vm]] #1"),
        "missing field `name`",
    );
}

#[test]
fn an_unknown_policy_lists_the_known_ones() {
    assert_key_refused(
        "controller",
        "policy = \"fastest\"",
        "unknown variant `fastest`, expected one of `sequential`, `parallel`, `static`, \
         `aimd-local`, `aimd-global`",
    );
}

/// A second destination host, `dst-2`, of unbounded room, after a blank
/// line: five lines (appended to [`BASE`], 22 to 26), a sixth for a key the
/// caller adds (its `memory`).
const DST_2: &str = "\n[[host]]\nname = \"dst-2\"\nsite = \"destination\"\nnic = \"10 Gbps\"\n";

/// A `[[vm_group]]` of `count` VMs on `host` with this `memory` (a TOML
/// value), after a blank line: appended to [`BASE`], its header is on line
/// 23, `prefix` on 24, `count` 25, `host` 26, `memory` 27, and a key the
/// caller adds on 28.
fn group(prefix: &str, count: u64, host: &str, memory: &str) -> String {
    format!("\n{}", evac_testkit::vm_group_toml(prefix, count, host, memory))
}

const VM_ON: &str = r#"
[[vm]]
name = "db"
host = "HOST"
memory = "1 GiB"
"#;

#[test]
fn a_vm_on_an_unknown_or_destination_host_is_refused() {
    // Appended after line 21: a blank line 22, [[vm]] on 23, host on 25.
    for (host, says) in [
        (
            "src-9",
            "no [[host]] is named `src-9`; the source hosts are `src-1`",
        ),
        (
            "dst-1",
            "`dst-1` is a destination host, but a VM to evacuate runs on a source host",
        ),
    ] {
        let text = appended(&VM_ON.replace("HOST", host));
        assert_refused(&text, Some(25), Some(r#"field `host` of [[vm]] "db""#), says);
    }
}

#[test]
fn a_group_on_an_unknown_or_destination_host_is_refused() {
    let group = |host| group("batch", 2, host, r#""1 GiB""#);
    assert_refused(
        &appended(&group("nowhere")),
        Some(26),
        Some(r#"field `host` of [[vm_group]] "batch""#),
        "no [[host]] is named `nowhere`",
    );
    assert_refused(
        &appended(&group("dst-1")),
        Some(26),
        Some(r#"field `host` of [[vm_group]] "batch""#),
        "`dst-1` is a destination host",
    );
}

#[test]
fn a_pinned_destination_must_be_a_known_destination_host() {
    let pinned = |to: &str| appended(&format!("{VM_ON}destination = \"{to}\"\n").replace("HOST", "src-1"));
    // The destination is on line 27, after memory on 26.
    assert_refused(
        &pinned("dst-9"),
        Some(27),
        Some(r#"field `destination` of [[vm]] "db""#),
        "no [[host]] is named `dst-9`; the destination hosts are `dst-1`",
    );
    assert_refused(
        &pinned("src-1"),
        Some(27),
        Some(r#"field `destination` of [[vm]] "db""#),
        "`src-1` is a source host, but a VM can be pinned to a destination host only",
    );
}

#[test]
fn both_sites_need_a_host() {
    assert_refused(
        &BASE
            .replace(r#"site = "destination""#, r#"site = "source""#)
            .replace("memory = \"64 GiB\"\n", ""),
        None,
        None,
        "no [[host]] has site = \"destination\": there is nowhere to evacuate to",
    );
    let no_source = r#"
[network]
wan_bandwidth = "1 Gbps"

[[host]]
name = "dst-1"
site = "destination"
nic = "10 Gbps"
"#;
    assert_refused(no_source, None, None, "no [[host]] has site = \"source\"");
    assert_eq!(
        refuse(no_source).to_string(),
        "scenarios/x.toml: no [[host]] has site = \"source\": there is nothing to evacuate from"
    );
}

#[test]
fn a_vm_larger_than_every_destination_is_refused() {
    // [[vm]] on 23, memory on 26.
    assert_refused(
        &appended("\n[[vm]]\nname = \"huge\"\nhost = \"src-1\"\nmemory = \"100 GiB\"\n"),
        Some(26),
        Some(r#"field `memory` of [[vm]] "huge""#),
        "VM `huge` needs 100 GiB but the destination with the most room, `dst-1`, has room \
         for 64 GiB only: there is no destination with room for it",
    );
}

#[test]
fn a_vm_larger_than_its_pinned_destination_is_refused() {
    let text = appended(&format!(
        "{DST_2}memory = \"8 GiB\"\n\
         \n[[vm]]\nname = \"big\"\nhost = \"src-1\"\nmemory = \"16 GiB\"\ndestination = \"dst-2\"\n"
    ));
    // [[host]] on 23-27, blank 28, [[vm]] on 29, memory on 32.
    assert_refused(
        &text,
        Some(32),
        Some(r#"field `memory` of [[vm]] "big""#),
        "VM `big` needs 16 GiB but its pinned destination `dst-2` has room for 8 GiB only",
    );
}

#[test]
fn more_memory_than_all_destinations_have_is_refused() {
    // 4 GiB of web-1 and 16 x 4 GiB: 68 GiB for 64 GiB of room.
    let group = group("batch", 16, "src-1", r#""4 GiB""#);
    assert_refused(
        &appended(&group),
        None,
        None,
        "the VMs need 68 GiB of memory in all, but the destination hosts have room for 64 GiB in all",
    );
    // With a destination of unbounded room there is room for all.
    Scenario::from_toml_str(&appended(&format!("{group}{DST_2}")), ORIGIN).unwrap();
}

#[test]
fn more_memory_pinned_to_a_destination_than_it_has_is_refused() {
    let group = group("batch", 20, "src-1", r#""4 GiB""#);
    let text = appended(&format!("{DST_2}{group}destination = \"dst-1\"\n"));
    assert_refused(
        &text,
        Some(13),
        Some(r#"field `memory` of [[host]] "dst-1""#),
        "the VMs pinned to `dst-1` need 80 GiB in all, more than its room of 64 GiB",
    );
}

#[test]
fn zero_sizes_and_rates_are_refused() {
    assert_refused(
        &BASE.replace(r#"memory = "4 GiB""#, r#"memory = "0 GiB""#),
        Some(18),
        Some(r#"field `memory` of [[vm]] "web-1""#),
        "a VM needs memory above zero",
    );
    assert_refused(
        &BASE.replacen(r#"nic = "10 Gbps""#, r#"nic = "0 Gbps""#, 1),
        Some(7),
        Some(r#"field `nic` of [[host]] "src-1""#),
        "a NIC of 0 bps carries nothing",
    );
    assert_refused(
        &BASE.replace(r#"wan_bandwidth = "1 Gbps""#, r#"wan_bandwidth = "0 Mbps""#),
        Some(21),
        Some("field `wan_bandwidth` of [network]"),
        "a WAN of 0 bps carries nothing",
    );
    assert_key_refused(
        "network",
        "tcp_window = \"0 KiB\"",
        "a TCP window of 0 B lets nothing through",
    );
    assert_refused(
        &BASE.replace(r#"memory = "64 GiB""#, r#"memory = "0 B""#),
        Some(13),
        Some(r#"field `memory` of [[host]] "dst-1""#),
        "a destination host with 0 B of room can take no VM",
    );
    for (key, says) in [
        ("max_bandwidth = \"0 bps\"", "lets nothing through"),
        ("ramp_rtts = -2.5", "-2.5 is not a number of round trips"),
        (
            "join_rtts = 20000",
            "20000 round trips of joining are more than 10000",
        ),
    ] {
        assert_key_refused("migration", key, says);
    }
}

#[test]
fn a_group_that_draws_zero_memory_is_refused() {
    assert_refused(
        &appended(&group(
            "tiny",
            3,
            "src-1",
            r#"{ dist = "choice", values = ["0 B"] }"#,
        )),
        Some(27),
        Some(r#"field `memory` of [[vm_group]] "tiny""#),
        "VM `tiny-1` drew 0 B of memory",
    );
}

#[test]
fn a_trace_out_of_order_is_refused() {
    let trace = "wan_trace = [\n  { at = \"2 min\", bandwidth = \"500 Mbps\" },\n  { at = \"AT\", bandwidth = \"400 Mbps\" },\n]\n";
    // wan_trace opens on line 22; its second point is on line 24.
    assert_refused(
        &appended(&trace.replace("AT", "1 min")),
        Some(24),
        Some("field `wan_trace[1].at` of [network]"),
        "`60 s` is out of order: it does not come after the previous point's `2 min`",
    );
    assert_refused(
        &appended(&trace.replace("AT", "120 s")),
        Some(24),
        Some("field `wan_trace[1].at` of [network]"),
        "out of order",
    );
}

#[test]
fn duplicate_host_and_vm_names_are_refused() {
    assert_refused(
        &appended("\n[[host]]\nname = \"src-1\"\nsite = \"source\"\nnic = \"1 Gbps\"\n"),
        Some(24),
        Some(r#"field `name` of [[host]] "src-1""#),
        r#"duplicate host name `src-1`: [[host]] "src-1" at line 4 has it already"#,
    );
    assert_refused(
        &appended(&VM_ON.replace("HOST", "src-1").replace("\"db\"", "\"web-1\"")),
        Some(24),
        Some(r#"field `name` of [[vm]] "web-1""#),
        r#"duplicate VM name `web-1`: [[vm]] "web-1" at line 15 has it already"#,
    );
}

#[test]
fn a_group_may_not_generate_a_name_taken_already() {
    // The group generates web-1 and web-2; web-1 is the [[vm]] of line 15.
    assert_refused(
        &appended(&group("web", 2, "src-1", r#""1 GiB""#)),
        Some(24),
        Some(r#"field `prefix` of [[vm_group]] "web""#),
        r#"duplicate VM name `web-1`: [[vm]] "web-1" at line 15 has it already"#,
    );
    // Two groups of one prefix collide on their first VM.
    let group = group("batch", 2, "src-1", r#""1 GiB""#);
    assert_refused(
        &appended(&format!("{group}{group}")),
        Some(30),
        Some(r#"field `prefix` of [[vm_group]] "batch""#),
        r#"duplicate VM name `batch-1`: [[vm_group]] "batch" at line 23 has it already"#,
    );
}

#[test]
fn a_destination_host_does_not_lose_power_and_a_source_host_has_no_room_to_give() {
    assert_refused(
        &BASE.replace(
            "memory = \"64 GiB\"\n",
            "memory = \"64 GiB\"\npower_off_at = \"10 min\"\n",
        ),
        Some(14),
        Some(r#"field `power_off_at` of [[host]] "dst-1""#),
        "only source hosts lose power in this model",
    );
    assert_refused(
        &BASE.replacen(
            "nic = \"10 Gbps\"\n",
            "nic = \"10 Gbps\"\nmemory = \"256 GiB\"\n",
            1,
        ),
        Some(8),
        Some(r#"field `memory` of [[host]] "src-1""#),
        "a source host receives none",
    );
}

#[test]
fn round_robin_is_no_host_name() {
    assert_refused(
        &BASE.replace(r#"name = "src-1""#, r#"name = "round-robin""#),
        Some(5),
        Some(r#"field `name` of [[host]] "round-robin""#),
        "`round-robin` is reserved",
    );
}

#[test]
fn a_migration_needs_a_connection_and_a_round() {
    assert_key_refused(
        "migration",
        "connections = 0",
        "a migration needs at least 1 connection",
    );
    assert_key_refused(
        "migration",
        "mode = \"live\"\nmax_rounds = 0",
        "live migration needs at least 1 precopy round",
    );
    // Offline migration has no rounds to count.
    Scenario::from_toml_str(
        &appended("\n[migration]\nmode = \"offline\"\nmax_rounds = 0\n"),
        ORIGIN,
    )
    .unwrap();
}

#[test]
fn a_group_of_none_or_too_many_is_refused() {
    for (count, says) in [
        (0, "a group of 0 VMs is empty"),
        (
            4_000_000_000,
            "4000000000 VMs is more than the 1000000 a group may have",
        ),
    ] {
        let text = appended(&group("batch", count, "src-1", r#""1 GiB""#));
        let field = r#"field `count` of [[vm_group]] "batch""#;
        assert_refused(&text, Some(25), Some(field), says);
    }
}

#[test]
fn a_working_set_larger_than_the_vm_is_refused() {
    assert_refused(
        &BASE.replace(
            "memory = \"4 GiB\"\n",
            "memory = \"4 GiB\"\nworking_set = \"8 GiB\"\n",
        ),
        Some(19),
        Some(r#"field `working_set` of [[vm]] "web-1""#),
        "a working set of 8 GiB is more than the VM's 4 GiB of memory",
    );
}

#[test]
fn the_controller_needs_a_period_and_room_to_start() {
    assert_key_refused(
        "controller",
        "period = \"0 s\"",
        "the controller needs a period above zero",
    );
    assert_key_refused(
        "controller",
        "policy = \"static\"\nmax_in_flight = 0",
        "would never start a migration",
    );
}

#[test]
fn a_bad_distribution_is_refused_at_its_field() {
    let uniform = |min, max| {
        let memory = format!(r#"{{ dist = "uniform", min = "{min}", max = "{max}" }}"#);
        group("batch", 2, "src-1", &memory)
    };
    assert_refused(
        &appended(&uniform("8 GiB", "1 GiB")),
        Some(27),
        Some(r#"field `memory` of [[vm_group]] "batch""#),
        "`min` (8 GiB) is above `max` (1 GiB)",
    );
    assert_refused(
        &appended(&uniform("1 GiB", "8 GB/s")),
        Some(27),
        Some(r#"field `memory.max` of [[vm_group]] "batch""#),
        "`8 GB/s` is not a size",
    );
}

#[test]
fn an_unreadable_file_names_its_path() {
    let path = std::path::Path::new("/nonexistent/evac/scenario.toml");
    let error = Scenario::from_path(path).unwrap_err();
    assert!(matches!(error, ScenarioError::Read { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "cannot read scenario file /nonexistent/evac/scenario.toml"
    );
    // The cause travels as the error's source, for the CLI to print once.
    let cause = std::error::Error::source(&error).expect("the I/O error");
    assert!(cause.to_string().contains("No such file"), "{cause}");
}

#[test]
fn a_file_names_itself_in_its_errors() {
    let dir = std::env::temp_dir().join(format!("evac-scenario-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, BASE.replace(r#"memory = "4 GiB""#, r#"memory = "4 GB/s""#)).unwrap();
    let error = Scenario::from_path(&path).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        error.to_string().starts_with(&format!("{}:18: ", path.display())),
        "{error}"
    );
}

#[test]
fn a_disk_in_the_wrong_unit_or_too_large_is_refused_at_its_line() {
    // `disk` added as line 19, right after web-1's memory (line 18).
    let with_disk = |disk: &str| {
        BASE.replace(
            "memory = \"4 GiB\"\n",
            &format!("memory = \"4 GiB\"\ndisk = {disk}\n"),
        )
    };
    assert_refused(
        &with_disk("\"20 Gbps\""),
        Some(19),
        Some(r#"field `disk` of [[vm]] "web-1""#),
        "`20 Gbps` is not a size",
    );
    // 1 PiB is 1024 TiB: one byte more is refused.
    assert_refused(
        &with_disk("\"1125899906842625 B\""),
        Some(19),
        Some(r#"field `disk` of [[vm]] "web-1""#),
        "is not within",
    );
    assert!(Scenario::from_toml_str(&with_disk("\"1024 TiB\""), ORIGIN).is_ok());
}

#[test]
fn a_group_drawing_a_disk_too_large_is_refused_at_the_group() {
    // A blank line 22, [[vm_group]] on 23, prefix 24, count 25, host 26,
    // memory 27, disk 28: a draw above 1 PiB (half of them are, around a
    // median of 1 PiB) is refused at the field.
    let text = appended(&format!(
        "{}disk = {{ dist = \"lognormal\", median = \"1024 TiB\", sigma = 2.0 }}\n",
        group("big", 20, "src-1", r#""1 GiB""#)
    ));
    assert_refused(
        &text,
        Some(28),
        Some(r#"field `disk` of [[vm_group]] "big""#),
        "of local disk, more than the",
    );
}

/// A fuzz finding: spreading a group over no source host divided by zero.
#[test]
fn a_round_robin_group_without_source_hosts_is_refused() {
    let text = "name = \"errors\"\nseed = 7\n\n[[host]]\nname = \"dst-1\"\nsite = \"destination\"\n\
                nic = \"10 Gbps\"\nmemory = \"64 GiB\"\n\n[network]\nwan_bandwidth = \"1 Gbps\"\n\n\
                [[vm_group]]\nprefix = \"batch\"\ncount = 2\nhost = \"round-robin\"\nmemory = \"1 GiB\"\n";
    // Line 16 holds `host = "round-robin"` (counted by hand).
    assert_refused(
        text,
        Some(16),
        Some(r#"field `host` of [[vm_group]] "batch""#),
        "there are none",
    );
}
