//! The TCP ramp-up of each migration (`ramp_rtts`): the model adds
//! `ramp_rtts × wan_rtt` to the migration's setup, during which it sends
//! nothing. Expected values are computed by hand in the comments.

use std::time::Duration;

use evac_scenario::Scenario;
use evac_testkit::two_sites_toml;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// Two idle VMs of 100 MiB, a 100 Mbit/s WAN, a window large enough
/// (64 MiB) never to cap a connection at these RTTs.
fn scenario(rtt_ms: u64, setup: &str, ramp: &str, policy: &str) -> Scenario {
    let text = format!(
        r#"
[network]
wan_bandwidth = "100 Mbps"
wan_rtt = "{rtt_ms} ms"
tcp_window = "64 MiB"
[migration]
setup_time = "{setup}"
{ramp}
[controller]
policy = "{policy}"
{fleet}"#,
        fleet = two_sites_toml(&[("a", "100 MiB"), ("b", "100 MiB")])
    );
    Scenario::from_toml_str(&text, "test").unwrap()
}

fn times(scenario: &Scenario) -> (Vec<f64>, f64) {
    let result = evac_sim::simulate_evacuation(
        &scenario.fleet,
        &scenario.network,
        scenario.migration,
        &scenario.controller,
    );
    let each = result.vms.iter().map(|v| v.migration_time_s.unwrap()).collect();
    (each, result.total_time_s.unwrap())
}

/// 100 MiB over 100 Mbit/s: 838860800 bits / 1e8 = 8.388608 s.
const COPY: f64 = 8.388608;

#[test]
fn the_ramp_is_absent_by_default() {
    let s = scenario(50, "0 s", "", "sequential");
    assert_eq!(s.migration.ramp_rtts, 0.0);
    let (each, total) = times(&s);
    assert!(each.iter().all(|&t| close(t, COPY)), "{each:?}");
    assert!(close(total, 2.0 * COPY), "{total}");
}

#[test]
fn each_sequential_migration_pays_setup_and_ramp_rtts_round_trips() {
    // 0.2 s + 13 x 50 ms = 0.85 s before each copy; two in a row.
    let s = scenario(50, "200 ms", "ramp_rtts = 13", "sequential");
    assert_eq!(s.migration.ramp_rtts, 13.0);
    let (each, total) = times(&s);
    assert!(each.iter().all(|&t| close(t, 0.85 + COPY)), "{each:?}");
    assert!(close(total, 2.0 * (0.85 + COPY)), "{total}");
}

#[test]
fn the_ramp_grows_with_the_rtt() {
    // At 100 ms: 0.2 s + 13 x 0.1 s = 1.5 s; at 1 ms: 0.2 + 0.013 s.
    let (each, _) = times(&scenario(100, "200 ms", "ramp_rtts = 13", "sequential"));
    assert!(each.iter().all(|&t| close(t, 1.5 + COPY)), "{each:?}");
    let (each, _) = times(&scenario(1, "200 ms", "ramp_rtts = 13", "sequential"));
    assert!(each.iter().all(|&t| close(t, 0.213 + COPY)), "{each:?}");
}

#[test]
fn parallel_migrations_ramp_at_the_same_time() {
    // Both start at 0, wait 2.5 x 40 ms = 0.1 s, then share 100 Mbit/s:
    // 2 x 100 MiB take 2 x 8.388608 s together.
    let s = scenario(40, "0 s", "ramp_rtts = 2.5", "parallel");
    let (each, total) = times(&s);
    let expected = 0.1 + 2.0 * COPY;
    assert!(each.iter().all(|&t| close(t, expected)), "{each:?}");
    assert!(close(total, expected), "{total}");
    assert_eq!(s.migration.setup_time, Duration::ZERO);
}

#[test]
fn a_migration_joining_a_full_wan_pays_join_rtts_more() {
    // aimd-global, period 1 s: `a` starts at 0 and fills the WAN at once
    // (no setup); at 1 s the window grows and `b` starts, the WAN full, so
    // it waits 20 x 10 ms = 0.2 s more. `a` has sent 1.2 s of the WAN by
    // then; its other 7.188608 s go at half: it ends at
    // 1.2 + 2 x 7.188608 = 15.577216 s. `b` has sent 7.188608 s of the WAN
    // at half by then, its last 1.2 s at the full WAN: it ends at
    // 16.777216 s (= 2 x COPY, the WAN never idle), 15.777216 s after its
    // start. Without `join_rtts`: `a` ends at 1 + 2 x 7.388608 =
    // 15.777216 s, `b` the same 15.777216 s after its start.
    let s = scenario(10, "0 s", "join_rtts = 20", "aimd-global");
    assert_eq!(s.migration.join_rtts, 20.0);
    let (each, total) = times(&s);
    assert!(close(each[0], 15.577216), "{each:?}");
    assert!(close(each[1], 15.777216), "{each:?}");
    assert!(close(total, 2.0 * COPY), "{total}");
    let (each, _) = times(&scenario(10, "0 s", "", "aimd-global"));
    assert!(close(each[0], 15.777216) && close(each[1], 15.777216), "{each:?}");
}

#[test]
fn migrations_that_start_together_or_one_after_another_join_a_wan_with_room() {
    // Parallel: both start at 0 on an empty WAN; sequential: `b` replaces
    // `a` as it ends. Neither pays `join_rtts`.
    let (each, total) = times(&scenario(10, "0 s", "join_rtts = 20", "parallel"));
    assert!(each.iter().all(|&t| close(t, 2.0 * COPY)), "{each:?}");
    assert!(close(total, 2.0 * COPY), "{total}");
    let (each, total) = times(&scenario(10, "0 s", "join_rtts = 20", "sequential"));
    assert!(each.iter().all(|&t| close(t, COPY)), "{each:?}");
    assert!(close(total, 2.0 * COPY), "{total}");
}

#[test]
fn a_join_cost_ends_when_the_wan_gets_room() {
    // aimd-global, period 1 s, `a` of 12.5 MiB: 104857600 bits / 1e8 =
    // 1.048576 s alone on the WAN, so it is still sending at 1 s, when the
    // window grows and `b` starts on the full WAN with 50 x 10 ms = 0.5 s
    // to lose. `a` ends at 1.048576 s: no queue is left to lose time to, so
    // `b` sends from then on, alone: it ends at 1.048576 + COPY = 9.437184 s,
    // 8.437184 s after its start. Had it waited its whole join cost, it
    // would have sent from 1.5 s, the WAN idle for 0.45 s: 8.888608 s.
    let text = format!(
        r#"
[network]
wan_bandwidth = "100 Mbps"
wan_rtt = "10 ms"
tcp_window = "64 MiB"
[migration]
join_rtts = 50
[controller]
policy = "aimd-global"
{fleet}"#,
        fleet = two_sites_toml(&[("a", "12.5 MiB"), ("b", "100 MiB")])
    );
    let s = Scenario::from_toml_str(&text, "test").unwrap();
    assert_eq!(s.controller.period, Duration::from_secs(1));
    let (each, total) = times(&s);
    assert!(close(each[0], 1.048576), "{each:?}");
    assert!(close(each[1], 1.048576 + COPY - 1.0), "{each:?}");
    assert!(close(total, 1.048576 + COPY), "{total}");
}
