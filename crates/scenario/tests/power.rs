//! Power-offs in a scenario: a duration from the start or a time with its
//! zone, resolved against the file's `start`. Expected values are counted
//! by hand from the text.

use std::time::Duration;

use evac_scenario::Scenario;

/// One source host (its power-off is `POWER`), one destination, one VM;
/// lines counted from 1.
const BASE: &str = r#"name = "power"
START
[network]
wan_bandwidth = "1 Gbps"

[[host]]
name = "src-1"
site = "source"
nic = "10 Gbps"
POWER

[[host]]
name = "dst-1"
site = "destination"
nic = "10 Gbps"

[[vm]]
name = "web-1"
host = "src-1"
memory = "4 GiB"
"#;

fn text(start: &str, power: &str) -> String {
    BASE.replace("START", start).replace("POWER", power)
}

fn power_off(start: &str, power: &str) -> Option<Duration> {
    Scenario::from_toml_str(&text(start, power), "p.toml")
        .unwrap_or_else(|e| panic!("{e}"))
        .fleet
        .hosts[0]
        .power_off_at
}

fn refused(start: &str, power: &str) -> String {
    Scenario::from_toml_str(&text(start, power), "p.toml")
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn a_time_of_day_counts_from_the_files_start() {
    let start = "start = \"2026-12-06T13:50:00Z\"";
    // 14:30 UTC is 40 min after 13:50 UTC.
    assert_eq!(
        power_off(start, "power_off_at = \"2026-12-06T14:30:00Z\""),
        Some(Duration::from_secs(40 * 60))
    );
    // The same instant written in another zone, and bare (a TOML date-time).
    assert_eq!(
        power_off(start, "power_off_at = 2026-12-06T15:30:00+01:00"),
        Some(Duration::from_secs(40 * 60))
    );
    assert_eq!(
        power_off(
            "start = 2026-12-06T14:50:00+01:00",
            "power_off_at = \"2026-12-06T14:30:00Z\""
        ),
        Some(Duration::from_secs(40 * 60))
    );
    // A duration stays one.
    assert_eq!(
        power_off(start, "power_off_at = \"15 min\""),
        Some(Duration::from_secs(15 * 60))
    );
    // A time already past when the evacuation starts: the power is off now.
    assert_eq!(
        power_off(start, "power_off_at = \"2026-12-06T13:00:00Z\""),
        Some(Duration::ZERO)
    );
}

#[test]
fn without_a_start_a_time_counts_from_now() {
    let in_an_hour = evac_model::wall_clock::after(
        evac_model::wall_clock::Timestamp::now(),
        Duration::from_secs(3600),
    );
    let left = power_off("", &format!("power_off_at = \"{in_an_hour}\"")).unwrap();
    // Read within a few seconds of computing it.
    assert!(
        left <= Duration::from_secs(3600) && left > Duration::from_secs(3590),
        "{left:?}"
    );
}

#[test]
fn a_time_without_zone_or_a_start_that_is_a_duration_is_refused_at_its_line() {
    let e = refused("", "power_off_at = \"2026-12-06T14:30:00\"");
    assert!(
        e.starts_with("p.toml:10: field `power_off_at` of [[host]] \"src-1\": `2026-12-06T14:30:00`"),
        "{e}"
    );
    assert!(e.contains("give its zone"), "{e}");
    let e = refused("", "power_off_at = \"14:30\"");
    assert!(e.starts_with("p.toml:10: field `power_off_at`"), "{e}");
    assert!(e.contains("RFC 3339"), "{e}");
    let e = refused("start = \"5 min\"", "");
    assert!(e.starts_with("p.toml:2: field `start`"), "{e}");
    assert!(e.contains("is a duration"), "{e}");
}

#[test]
fn a_power_trace_reads_as_announced_changes() {
    use evac_model::PowerChange;
    let trace = "power_off_at = \"20 min\"\npower_trace = [\n  { at = \"5 min\", power_off_at = \"12 min\" },\n  \
                 { at = \"8 min\", power_off_at = \"2026-12-06T14:30:00Z\" },\n  { at = \"9 min\", power_off_at = \"none\" },\n  \
                 { at = \"10 min\" },\n]";
    let scenario = Scenario::from_toml_str(&text("start = \"2026-12-06T14:00:00Z\"", trace), "p.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    let host = &scenario.fleet.hosts[0];
    assert_eq!(host.power_off_at, Some(Duration::from_secs(20 * 60)));
    let min = |m: u64| Duration::from_secs(m * 60);
    assert_eq!(
        host.power_trace,
        vec![
            PowerChange {
                at: min(5),
                power_off_at: Some(min(12))
            },
            // 14:30 is 30 min after the start at 14:00.
            PowerChange {
                at: min(8),
                power_off_at: Some(min(30))
            },
            PowerChange {
                at: min(9),
                power_off_at: None
            },
            PowerChange {
                at: min(10),
                power_off_at: None
            },
        ]
    );
    assert!(scenario.fleet.hosts[1].power_trace.is_empty());
}

#[test]
fn a_bad_power_trace_is_refused_at_its_line_and_field() {
    // Lines: the trace's entries are on lines 11 and 12.
    let e = refused(
        "",
        "power_trace = [\n  { at = \"5 min\", power_off_at = \"12 min\" },\n  { at = \"4 min\", power_off_at = \"6 min\" },\n]",
    );
    assert!(
        e.starts_with("p.toml:12: field `power_trace[1].at` of [[host]] \"src-1\": `4 min` is out of order"),
        "{e}"
    );
    let e = refused(
        "",
        "power_trace = [\n  { at = \"5 min\", power_off_at = \"never\" },\n]",
    );
    assert!(e.starts_with("p.toml:11:"), "{e}");
    assert!(
        e.contains("power_trace") && e.contains("`never`") && e.contains("\"none\""),
        "{e}"
    );
    let e = refused(
        "",
        "power_trace = [\n  { at = \"5 min\", power_of_at = \"6 min\" },\n]",
    );
    assert!(e.contains("power_of_at") && e.contains("power_off_at"), "{e}");
    let e = refused("", "power_trace = [ { power_off_at = \"6 min\" } ]");
    assert!(e.contains("`at`"), "{e}");
}
