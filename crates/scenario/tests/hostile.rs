//! The malformed inputs of issue 8's "Why" list that used to panic: each is
//! now one error naming the file, the line and the field, never a panic.
//! Each case is run in the test's own thread: a panic fails it by name.

use evac_scenario::{Scenario, ScenarioError};

const ORIGIN: &str = "hostile.toml";

/// A valid scenario whose `[network]` and `[controller]` tables are filled
/// by each case; 1 source host (line 5 onwards), 1 destination, 1 VM.
fn scenario(network: &str, controller: &str, host_extra: &str, vm_group: &str) -> String {
    format!(
        r#"name = "hostile"
[network]
{network}
[controller]
{controller}
[[host]]
name = "src"
site = "source"
nic = "10 Gbps"
{host_extra}
[[host]]
name = "dst"
site = "destination"
nic = "10 Gbps"
[[vm]]
name = "vm"
host = "src"
memory = "1 GiB"
{vm_group}
"#
    )
}

const WAN: &str = r#"wan_bandwidth = "1 Gbps""#;

/// Refused, in one line, naming `field`; no panic.
#[track_caller]
fn refused(text: &str, field: &str) -> String {
    let outcome = std::panic::catch_unwind(|| Scenario::from_toml_str(text, ORIGIN));
    let result = outcome.unwrap_or_else(|_| panic!("panicked on:\n{text}"));
    let error: ScenarioError = match result {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(error) => error,
    };
    let printed = error.to_string();
    assert_eq!(printed.lines().count(), 1, "{printed}");
    assert!(printed.starts_with(ORIGIN), "{printed}");
    assert!(printed.contains(field), "no `{field}` in: {printed}");
    printed
}

#[test]
fn durations_that_overflow_are_refused() {
    for (controller, field) in [
        (r#"period = "1e300 s""#, "period"),
        (r#"period = "1e-9 s""#, "period"),
    ] {
        let printed = refused(&scenario(WAN, controller, "", ""), field);
        assert!(
            printed.contains("87660 h") || printed.contains("1 us"),
            "{printed}"
        );
    }
    let printed = refused(
        &scenario(&format!("{WAN}\nwan_rtt = \"1e307 h\""), "", "", ""),
        "wan_rtt",
    );
    assert!(printed.contains("10 years"), "{printed}");
    refused(
        &scenario(WAN, "", r#"power_off_at = "1e20 h""#, ""),
        "power_off_at",
    );
}

#[test]
fn rates_of_almost_nothing_or_infinity_are_refused() {
    let printed = refused(
        &scenario(r#"wan_bandwidth = "1e-300 bps""#, "", "", ""),
        "wan_bandwidth",
    );
    assert!(printed.contains("1 bps"), "{printed}");
    let printed = refused(
        &scenario(r#"wan_bandwidth = "1e308 Tbps""#, "", "", ""),
        "wan_bandwidth",
    );
    assert!(printed.contains("1000 Tbps"), "{printed}");
    refused(
        &scenario(
            &format!("{WAN}\nwan_trace = [{{ at = \"1 s\", bandwidth = \"1e-300 bps\" }}]"),
            "",
            "",
            "",
        ),
        "bandwidth",
    );
}

#[test]
fn distributions_that_would_panic_are_refused() {
    // A group of 3 VMs whose dirty rate is drawn from `dirty_rate`, and the
    // field its refusal names.
    for (dirty_rate, field) in [
        (
            r#"{ dist = "choice", values = ["1 MB/s", "2 MB/s"], weights = [inf, 1] }"#,
            "weights",
        ),
        (
            r#"{ dist = "choice", values = ["1 MB/s", "2 MB/s"], weights = [1e308, 1e308] }"#,
            "weights",
        ),
        (
            r#"{ dist = "uniform", min = "1 MB/s", max = "1e308 MB/s" }"#,
            "max",
        ),
    ] {
        let group = format!(
            "[[vm_group]]\nprefix = \"g\"\ncount = 3\nhost = \"src\"\nmemory = \"1 GiB\"\ndirty_rate = {dirty_rate}\n"
        );
        refused(&scenario(WAN, "", "", &group), field);
    }
}

#[test]
fn sizes_beyond_a_pebibyte_are_refused() {
    let text = scenario(WAN, "", "", "").replace(r#"memory = "1 GiB""#, r#"memory = "1e30 TB""#);
    let printed = refused(&text, "memory");
    assert!(printed.contains("1 PiB"), "{printed}");
}

/// Refused with exactly `expected` (file, line, field and message), counted
/// by hand from [`scenario`]'s layout.
#[track_caller]
fn refused_exactly(text: &str, expected: &str) {
    let outcome = std::panic::catch_unwind(|| Scenario::from_toml_str(text, ORIGIN));
    match outcome.unwrap_or_else(|_| panic!("panicked on:\n{text}")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(error) => assert_eq!(error.to_string(), expected),
    }
}

#[test]
fn the_models_bounds_are_refused_at_file_line_field() {
    // Line 3 is wan_bandwidth, line 4 the next [network] key.
    refused_exactly(
        &scenario(&format!("{WAN}\ntcp_window = \"1 B\""), "", "", ""),
        "hostile.toml:4: field `tcp_window` of [network]: a TCP window of 1 B is not within 1 KiB ..= 1 GiB",
    );
    refused_exactly(
        &scenario(&format!("{WAN}\nwan_rtt = \"4294967296 ms\""), "", "", ""),
        "hostile.toml:4: field `wan_rtt` of [network]: a round trip of 1193.046 h is beyond the most, 60 s",
    );
    // Line 4 is [controller], line 5 its first key.
    refused_exactly(
        &scenario(WAN, "period = \"1 us\"", "", ""),
        "hostile.toml:5: field `period` of [controller]: a period of 0.001 ms is not within 1 ms ..= 60 min",
    );
    // A week of 10 ms periods: 604800 / 0.01 = 60,480,000 ticks.
    refused_exactly(
        &scenario(WAN, "period = \"10 ms\"", "", ""),
        "hostile.toml:5: field `period` of [controller]: a period of 10 ms over a horizon of 168 h is \
         60480000 periods, more than 10000000; lengthen the period or shorten `horizon`",
    );
    refused_exactly(
        &scenario(WAN, "max_attempts = 0", "", ""),
        "hostile.toml:5: field `max_attempts` of [controller]: 0 attempts would never start a migration; \
         give at least 1",
    );
    refused_exactly(
        &scenario(WAN, "horizon = \"0 s\"", "", ""),
        "hostile.toml:5: field `horizon` of [controller]: a horizon of 0 s ends the evacuation before it \
         starts; give one above zero",
    );
    // [migration] on line 5, max_rounds on line 6.
    refused_exactly(
        &scenario(WAN, "[migration]\nmax_rounds = 4294967295", "", ""),
        "hostile.toml:6: field `max_rounds` of [migration]: 4294967295 rounds are more than the 10000 a \
         migration may have; a guest that has not converged by then will not",
    );
}

#[test]
fn names_outside_the_safe_set_are_refused() {
    // The source host's name is on line 7.
    refused_exactly(
        &scenario(WAN, "", "", "").replace("\"src\"", "\"s,rc\""),
        "hostile.toml:7: field `name` of [[host]] \"s,rc\": \"s,rc\" has the character ','; a name has only \
         letters A-Z a-z, digits 0-9, `.`, `_` and `-`",
    );
    // The VM's name is on line 16.
    refused_exactly(
        &scenario(WAN, "", "", "").replace("name = \"vm\"", "name = \"x/../../escaped\""),
        "hostile.toml:16: field `name` of [[vm]] \"x/../../escaped\": \"x/../../escaped\" has the character \
         '/'; a name has only letters A-Z a-z, digits 0-9, `.`, `_` and `-`",
    );
    refused_exactly(
        &scenario(WAN, "", "", "").replace("name = \"vm\"", "name = \"..\""),
        "hostile.toml:16: field `name` of [[vm]] \"..\": `..` starts with `.`; a name starts with a letter, \
         a digit or `_`",
    );
}

#[test]
fn a_fleet_whose_memory_overflows_u64_is_refused() {
    // 20,000 VMs of 1 PiB and the 1 GiB VM: 20000 * 2^50 + 2^30 =
    // 22517998137926221824 B, beyond u64's 18446744073709551615.
    let group = "[[vm_group]]\nprefix = \"huge\"\ncount = 20000\nhost = \"src\"\nmemory = \"1 PiB\"\n";
    let text = scenario(WAN, "", "", group).replace("memory = \"1 PiB\"", "memory = \"1024 TiB\"");
    refused_exactly(
        &text,
        "hostile.toml: the VMs need 22517998137926221824 B of memory in all, more than 16 EiB: no data \
         center holds that much",
    );
}
