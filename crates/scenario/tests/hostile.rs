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
    let group = |memory: &str| {
        format!(
            "[[vm_group]]\nprefix = \"g\"\ncount = 3\nhost = \"src\"\nmemory = \"1 GiB\"\ndirty_rate = {memory}\n"
        )
    };
    refused(
        &scenario(
            WAN,
            "",
            "",
            &group(r#"{ dist = "choice", values = ["1 MB/s", "2 MB/s"], weights = [inf, 1] }"#),
        ),
        "weights",
    );
    refused(
        &scenario(
            WAN,
            "",
            "",
            &group(r#"{ dist = "choice", values = ["1 MB/s", "2 MB/s"], weights = [1e308, 1e308] }"#),
        ),
        "weights",
    );
    refused(
        &scenario(
            WAN,
            "",
            "",
            &group(r#"{ dist = "uniform", min = "1 MB/s", max = "1e308 MB/s" }"#),
        ),
        "max",
    );
}

#[test]
fn sizes_beyond_a_pebibyte_are_refused() {
    let text = scenario(WAN, "", "", "").replace(r#"memory = "1 GiB""#, r#"memory = "1e30 TB""#);
    let printed = refused(&text, "memory");
    assert!(printed.contains("1 PiB"), "{printed}");
}
