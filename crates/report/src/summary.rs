//! The summary a person reads after a run: the headline metrics with times
//! as `h:mm:ss` beside seconds, one line per source host, every VM that did
//! not move with its reason, and warnings for results that make no physical
//! sense. The terminal table and the HTML report both render this.

use evac_model::{Bytes, Site};

use crate::readable::{hms, maybe_seconds, seconds, span, time_of_day};
use crate::{Outcome, RunResult, VmRecord};

/// What one run says, in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Metric name and value, in reading order.
    pub rows: Vec<(String, String)>,
    /// One line per source host.
    pub hosts: Vec<String>,
    /// One line per VM that did not end at a destination.
    pub not_moved: Vec<String>,
    /// Results that make no physical sense: a sign of a typo in the input.
    pub warnings: Vec<String>,
}

/// The score in a few words, for the table.
fn score_cell(score: Option<f64>) -> String {
    match score {
        Some(s) if s.is_finite() => format!("{s:.3} (1 = the physical limit; lower is better)"),
        Some(s) => format!("{s} (meaningless: see the warnings)"),
        None => "- (no VM migrated)".to_owned(),
    }
}

/// What the score and the bounds mean, in one line each.
pub const MEANING: [&str; 2] = [
    "bound: a time no schedule moving the same VMs can beat on this WAN and these NICs (their memory at full capacity; each alone on its best path)",
    "score: the geometric mean of total time / its bound and mean migration time / its bound; 1.0 is the physical limit",
];

/// Describes `result` in words.
pub fn describe(result: &RunResult) -> Summary {
    let rows = vec![
        ("policy".to_owned(), result.policy.clone()),
        ("VMs".to_owned(), outcome_counts(result)),
        (
            "priority saved".to_owned(),
            format!(
                "priority {} of {} (weighted)",
                result.priority_saved, result.priority_total
            ),
        ),
        (
            "total time".to_owned(),
            format!(
                "{}; bound {}",
                maybe_seconds(result.total_time_s),
                seconds(result.lower_bound_total_s)
            ),
        ),
        (
            "mean migration time".to_owned(),
            format!(
                "{}; bound {}",
                maybe_seconds(result.mean_migration_time_s),
                seconds(result.lower_bound_mean_migration_s)
            ),
        ),
        (
            "p95 / max migration".to_owned(),
            format!(
                "{} / {}",
                maybe_seconds(result.p95_migration_time_s),
                maybe_seconds(result.max_migration_time_s)
            ),
        ),
        (
            "mean completion time".to_owned(),
            maybe_seconds(result.mean_completion_time_s),
        ),
        (
            "mean downtime".to_owned(),
            result
                .mean_downtime_s
                .map_or_else(|| "-".to_owned(), |v| format!("{:.0} ms", v * 1e3)),
        ),
        ("bytes sent".to_owned(), Bytes(result.bytes_sent).to_string()),
        ("score".to_owned(), score_cell(result.score)),
    ];
    Summary {
        rows,
        hosts: host_lines(result),
        not_moved: result
            .vms
            .iter()
            .filter(|vm| vm.outcome != Outcome::Migrated)
            .map(|vm| not_moved_line(result, vm))
            .collect(),
        warnings: warnings(result),
    }
}

/// "28 migrated, 3 not migrated, 10 lost, of 41".
fn outcome_counts(result: &RunResult) -> String {
    let count = |o: Outcome| result.vms.iter().filter(|vm| vm.outcome == o).count();
    let (migrated, lost) = (count(Outcome::Migrated), count(Outcome::Lost));
    let not_migrated = result.vms.len() - migrated - lost;
    let middle = if not_migrated > 0 {
        format!("{not_migrated} not migrated, ")
    } else {
        String::new()
    };
    format!(
        "{migrated} migrated, {middle}{lost} lost, of {}",
        result.vms.len()
    )
}

/// `hms(t)`, and the time of day when the result knows its start: "0:15:00
/// (14:30:00 CET)".
fn when(result: &RunResult, t: f64) -> String {
    match result
        .started_at
        .as_deref()
        .and_then(|start| time_of_day(start, t))
    {
        Some(clock) => format!("{} ({clock})", hms(t)),
        None => hms(t),
    }
}

fn power_off_of(result: &RunResult, host: &str) -> Option<f64> {
    result
        .hosts
        .iter()
        .find(|h| h.name == host)
        .and_then(|h| h.power_off_s)
}

/// "rack4 emptied at 0:20:31 (1231.0 s), 4:29 before its power-off".
fn host_lines(result: &RunResult) -> Vec<String> {
    let mut names: Vec<&str> = result
        .hosts
        .iter()
        .filter(|h| h.site == Site::Source)
        .map(|h| h.name.as_str())
        .collect();
    // Results written before hosts were recorded: the VMs still name them.
    if names.is_empty() {
        for vm in &result.vms {
            if !names.contains(&vm.host.as_str()) {
                names.push(&vm.host);
            }
        }
    }
    // Grouped once: a million VMs on twenty thousand hosts must not be
    // scanned once per host.
    let mut by_host: std::collections::HashMap<&str, Vec<&VmRecord>> = std::collections::HashMap::new();
    for vm in &result.vms {
        by_host.entry(vm.host.as_str()).or_default().push(vm);
    }
    let power_offs: std::collections::HashMap<&str, Option<f64>> = result
        .hosts
        .iter()
        .rev()
        .map(|h| (h.name.as_str(), h.power_off_s))
        .collect();
    names
        .into_iter()
        .map(|name| {
            let vms: Vec<&VmRecord> = by_host.get(name).cloned().unwrap_or_default();
            let power_off = power_offs.get(name).copied().flatten();
            let left: Vec<&VmRecord> = vms
                .iter()
                .copied()
                .filter(|vm| vm.outcome != Outcome::Migrated)
                .collect();
            if vms.is_empty() {
                return format!("{name}: no VMs");
            }
            if !left.is_empty() {
                let names = left
                    .iter()
                    .map(|vm| vm.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                return match power_off {
                    Some(off) => format!(
                        "{name} lost power at {} ({off:.1} s) with {} of its {} VMs still on it: {names}",
                        when(result, off),
                        left.len(),
                        vms.len()
                    ),
                    None => format!(
                        "{name} not emptied: {} of its {} VMs not migrated: {names}",
                        left.len(),
                        vms.len()
                    ),
                };
            }
            let emptied = vms.iter().filter_map(|vm| vm.end_s).fold(0.0, f64::max);
            match power_off {
                Some(off) => format!(
                    "{name} emptied at {} ({emptied:.1} s), {} before its power-off at {}",
                    hms(emptied),
                    span(off - emptied),
                    when(result, off)
                ),
                None => format!(
                    "{name} emptied at {} ({emptied:.1} s); no power-off",
                    hms(emptied)
                ),
            }
        })
        .collect()
}

/// Why `vm` did not end at a destination (`None` when it did): "lost when
/// rack4 lost power at 0:15:00 (900.0 s), never started".
pub fn reason(result: &RunResult, vm: &VmRecord) -> Option<String> {
    (vm.outcome != Outcome::Migrated).then(|| {
        let line = not_moved_line(result, vm);
        let prefix = format!("{} on {}: ", vm.name, vm.host);
        line.strip_prefix(&prefix).map_or(line.clone(), str::to_owned)
    })
}

/// "db-2 on rack4: lost when rack4 lost power at 0:15:00 (900.0 s)".
fn not_moved_line(result: &RunResult, vm: &VmRecord) -> String {
    let attempts: Vec<_> = result
        .failed_attempts
        .iter()
        .filter(|a| a.vm == vm.name)
        .collect();
    let tried = match attempts.last() {
        Some(last) => format!(
            ", after {} failed attempt{} (last: {})",
            attempts.len(),
            if attempts.len() == 1 { "" } else { "s" },
            last.reason
        ),
        None if vm.start_s.is_some() => String::new(),
        None => ", never started".to_owned(),
    };
    // Compared rather than matched: written so that outcomes added later
    // (not migrated) read as "not migrated" until they say more.
    let why = if vm.outcome == Outcome::Lost {
        {
            let during = match vm.start_s {
                Some(start) if attempts.is_empty() => {
                    format!(" during its migration (started at {})", hms(start))
                }
                _ => String::new(),
            };
            match power_off_of(result, &vm.host) {
                Some(off) => format!(
                    "lost when {} lost power at {} ({off:.1} s){during}",
                    vm.host,
                    hms(off)
                ),
                None => format!("lost (its host lost power){during}"),
            }
        }
    } else if vm.outcome == Outcome::Migrated {
        "migrated".to_owned()
    } else {
        format!(
            "not migrated, still on its source ({})",
            vm.reason.as_deref().unwrap_or("no reason recorded")
        )
    };
    format!("{} on {}: {why}{tried}", vm.name, vm.host)
}

/// Results no physical evacuation produces: a typo in the input (a rate in
/// the wrong unit, a duration off by orders of magnitude) is likelier.
fn warnings(result: &RunResult) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(score) = result.score.filter(|s| !s.is_finite() || *s <= 0.0) {
        out.push(format!(
            "score {score}: a lower bound is zero or infinite; check the WAN and NIC rates for a unit typo"
        ));
    }
    for (name, bound) in [
        ("total time", result.lower_bound_total_s),
        ("mean migration time", result.lower_bound_mean_migration_s),
    ] {
        if !bound.is_finite() {
            out.push(format!(
                "the lower bound on the {name} is {bound}: some rate is zero or absurdly small"
            ));
        } else if bound == 0.0 && !result.vms.is_empty() {
            out.push(format!(
                "the lower bound on the {name} is 0 s: some rate is infinite or absurdly large"
            ));
        }
    }
    let capacities = result.timeline.iter().filter_map(|p| p.wan_capacity_bps);
    if let Some(peak) = capacities.clone().reduce(f64::max) {
        if peak > 10e12 {
            out.push(format!(
                "WAN capacity up to {}: more than 10 Tbit/s, a unit typo?",
                crate::readable::bits_per_sec(peak)
            ));
        }
    }
    if let Some(low) = capacities.reduce(f64::min) {
        if low > 0.0 && low < 1e6 {
            out.push(format!(
                "WAN capacity down to {}: less than 1 Mbit/s, a unit typo?",
                crate::readable::bits_per_sec(low)
            ));
        }
    }
    if let Some(total) = result.total_time_s.filter(|&t| t > 7.0 * 86400.0) {
        out.push(format!(
            "the evacuation takes {} ({:.1} days): no disaster waits that long",
            hms(total),
            total / 86400.0
        ));
    }
    out
}

/// The summary as plain text for a terminal: the table, then the lines.
pub fn render_text(result: &RunResult) -> String {
    let summary = describe(result);
    let mut out = crate::summary_table(result).to_string();
    for line in MEANING {
        out.push_str(&format!("\n{line}"));
    }
    let mut section = |title: &str, lines: &[String]| {
        if !lines.is_empty() {
            out.push_str(&format!("\n{title}:"));
            for line in lines {
                out.push_str(&format!("\n  {line}"));
            }
        }
    };
    section("hosts", &summary.hosts);
    section("not moved", &summary.not_moved);
    section("WARNING", &summary.warnings);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use evac_model::{BitsPerSec, Fleet, Host, Network, Vm};

    use super::*;

    fn fleet() -> Fleet {
        let host = |name: &str, site, power_off: Option<u64>| Host {
            power_off_at: power_off.map(Duration::from_secs),
            ..evac_testkit::host(name, site)
        };
        let vm = |name: &str, host: usize, priority: u32| Vm {
            priority,
            ..evac_testkit::vm(name, host, Bytes::gib(1))
        };
        Fleet {
            hosts: vec![
                host("rack1", Site::Source, None),
                host("rack4", Site::Source, Some(1500)),
                host("rack5", Site::Source, Some(900)),
                host("dst", Site::Destination, None),
            ],
            vms: vec![
                vm("web", 0, 5),
                vm("db", 1, 50),
                vm("batch", 2, 2),
                vm("cache", 2, 1),
            ],
        }
    }

    fn network(gbps: f64) -> Network {
        Network {
            wan_bandwidth: BitsPerSec::gbps(gbps),
            wan_rtt: Duration::from_millis(10),
            tcp_window: Bytes::mib(64),
            wan_trace: vec![],
        }
    }

    fn migrated(name: &str, host: &str, start: f64, end: f64) -> VmRecord {
        VmRecord {
            destination: Some("dst".into()),
            start_s: Some(start),
            end_s: Some(end),
            migration_time_s: Some(end - start),
            downtime_s: Some(0.2),
            rounds: Some(3),
            bytes_sent: Some(1 << 30),
            outcome: Outcome::Migrated,
            ..VmRecord::unmoved(name.into(), host.into())
        }
    }

    fn result() -> RunResult {
        let mut batch = VmRecord::unmoved("batch".into(), "rack5".into());
        batch.start_s = Some(880.0);
        batch.left(Outcome::Lost, crate::reason::POWER_OFF);
        let mut cache = VmRecord::unmoved("cache".into(), "rack5".into());
        cache.left(Outcome::Lost, crate::reason::POWER_OFF);
        let vms = vec![
            migrated("web", "rack1", 0.0, 30.0),
            migrated("db", "rack4", 1200.0, 1231.0),
            batch,
            cache,
        ];
        RunResult::summarize("test", &fleet(), &network(1.0), vms, vec![])
    }

    #[test]
    fn one_line_per_source_host() {
        let summary = describe(&result());
        assert_eq!(
            summary.hosts,
            vec![
                "rack1 emptied at 0:00:30 (30.0 s); no power-off".to_owned(),
                // 1500 - 1231 = 269 s = 4 min 29 s.
                "rack4 emptied at 0:20:31 (1231.0 s), 4:29 before its power-off at 0:25:00".to_owned(),
                "rack5 lost power at 0:15:00 (900.0 s) with 2 of its 2 VMs still on it: batch, cache"
                    .to_owned(),
            ]
        );
    }

    #[test]
    fn a_real_runs_power_offs_also_read_as_times_of_day() {
        let mut result = result();
        result.started_at = Some("2026-12-06T13:50:00Z".into());
        // rack4's power-off, 1500 s = 25 min after 13:50 UTC: 14:15 UTC, in
        // this machine's zone.
        let clock = "2026-12-06T14:15:00Z"
            .parse::<evac_model::wall_clock::Timestamp>()
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%H:%M:%S %Z")
            .to_string();
        assert_eq!(
            describe(&result).hosts[1],
            format!("rack4 emptied at 0:20:31 (1231.0 s), 4:29 before its power-off at 0:25:00 ({clock})")
        );
        // A day later, the date is said too.
        let tomorrow = crate::readable::time_of_day("2026-12-06T13:50:00Z", 86_400.0).unwrap();
        assert!(tomorrow.starts_with("2026-12-0"), "{tomorrow}");
        assert_eq!(crate::readable::time_of_day("not a time", 1.0), None);
    }

    #[test]
    fn every_vm_not_moved_is_named_with_its_reason() {
        let mut result = result();
        result.failed_attempts.push(crate::FailedAttempt {
            vm: "cache".into(),
            destination: Some("dst".into()),
            start_s: 100.0,
            end_s: 160.0,
            reason: "cancelled".into(),
        });
        let summary = describe(&result);
        assert_eq!(
            summary.not_moved,
            vec![
                "batch on rack5: lost when rack5 lost power at 0:15:00 (900.0 s) during its migration (started at 0:14:40)"
                    .to_owned(),
                "cache on rack5: lost when rack5 lost power at 0:15:00 (900.0 s), after 1 failed attempt (last: cancelled)"
                    .to_owned(),
            ]
        );
    }

    #[test]
    fn priority_counts_and_times_read_as_words() {
        let rows = describe(&result()).rows;
        let row = |name: &str| rows.iter().find(|(n, _)| n == name).unwrap().1.clone();
        // web (5) and db (50) migrated, of 5 + 50 + 2 + 1 = 58.
        assert_eq!(row("priority saved"), "priority 55 of 58 (weighted)");
        assert_eq!(row("VMs"), "2 migrated, 2 lost, of 4");
        // The last VM ended at 1231 s = 0:20:31; the bound counts the two
        // VMs moved, 2 GiB at 1 Gbps: 2 * 2^30 * 8 / 1e9 = 17.18 s.
        assert_eq!(row("total time"), "1231.0 s (0:20:31); bound 17.2 s");
        assert!(describe(&result()).warnings.is_empty());
    }

    #[test]
    fn absurd_rates_are_warned_about() {
        // 1e300 Gbps: every bound is 0 and the score infinite.
        let vms = vec![migrated("web", "rack1", 0.0, 30.0)];
        let mut fleet = fleet();
        fleet.vms.truncate(1);
        for host in &mut fleet.hosts {
            host.nic = BitsPerSec::gbps(1e300);
        }
        let result = RunResult::summarize("test", &fleet, &network(1e300), vms, vec![]);
        let warnings = describe(&result).warnings;
        assert!(
            warnings.iter().any(|w| w.starts_with("score inf")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("lower bound on the total time is 0 s")),
            "{warnings:?}"
        );
        let text = render_text(&result);
        assert!(text.contains("WARNING:\n  score inf"), "{text}");
    }
}
