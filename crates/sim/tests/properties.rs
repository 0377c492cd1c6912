//! Invariants of the simulator on random evacuations.

use std::time::Duration;

use evac_controller::policies::MAX_CONNECTIONS;
use evac_controller::{ControllerConfig, PolicyKind};
use evac_model::{
    BitsPerSec, Bytes, BytesPerSec, Compression, Fleet, Host, HostId, MigrationParams, Network, Site, Vm,
};
use evac_outcome::{Outcome, RunResult};
use proptest::prelude::*;

mod common;
use common::{same, trace_of, Case};

fn case() -> impl Strategy<Value = Case> {
    // Host, MiB, MB/s dirtied, working set MiB, percent of zero pages,
    // compression ratio in tenths.
    let vm = (0usize..3, 64u64..2048, 0u32..80, 16u64..1024, 0u32..90, 10u32..40);
    let trace = prop::collection::vec((1u64..120, 100u32..2000), 0..4);
    (
        prop::collection::vec(vm, 1..12),
        trace,
        1u32..5,
        1u64..100,
        prop::sample::select(PolicyKind::ALL.to_vec()),
        prop::option::of(20u64..200),
        prop::option::of(5u64..60),
        prop::sample::select(vec![Compression::None, Compression::Zstd, Compression::Auto]),
        prop::option::of(1u32..8),
    )
        .prop_map(
            |(vms, trace, channels, rtt_ms, policy, power_off_s, cap_mbps, compression, quarter_cpus)| {
                let mut hosts: Vec<Host> = (0..3)
                    .map(|i| Host {
                        name: format!("src-{i}"),
                        site: Site::Source,
                        nic: BitsPerSec::mbps(500.0 + 500.0 * i as f64),
                        memory: None,
                        power_off_at: None,
                        power_trace: Vec::new(),
                        migration_cpus: None,
                    })
                    .collect();
                hosts[0].power_off_at = power_off_s.map(Duration::from_secs);
                hosts[1].migration_cpus = quarter_cpus.map(|q| f64::from(q) / 4.0);
                hosts.push(evac_testkit::destination("dst"));
                let vms = vms
                    .into_iter()
                    .enumerate()
                    .map(|(i, (host, mib, dirty_mb, ws_mib, zero_pct, ratio_tenths))| Vm {
                        profile: evac_model::MemoryProfile {
                            zero_fraction: f64::from(zero_pct) / 100.0,
                            compression_ratio: f64::from(ratio_tenths) / 10.0,
                            dirty_curve: Vec::new(),
                        },
                        name: format!("vm-{i}"),
                        host: HostId(host),
                        memory: Bytes::mib(mib),
                        dirty_rate: BytesPerSec(f64::from(dirty_mb) * 1e6),
                        working_set: Bytes::mib(ws_mib.min(mib)),
                        disk: Bytes::ZERO,
                        priority: 1,
                        destination: None,
                    })
                    .collect();
                let wan_trace = trace_of(trace.into_iter().map(|(step, mbps)| (step, f64::from(mbps))));
                Case {
                    fleet: Fleet { hosts, vms },
                    network: Network {
                        wan_bandwidth: BitsPerSec::gbps(1.0),
                        wan_rtt: Duration::from_millis(rtt_ms),
                        tcp_window: Bytes::mib(4),
                        wan_trace,
                    },
                    params: MigrationParams {
                        connections: evac_model::Connections::new(channels).unwrap(),
                        max_bandwidth: cap_mbps.map(|m| BitsPerSec::mbps(m as f64)),
                        compression,
                        ..MigrationParams::default()
                    },
                    policy,
                }
            },
        )
}

fn run(case: &Case) -> RunResult {
    let config = ControllerConfig {
        policy: case.policy,
        ..ControllerConfig::default()
    };
    evac_sim::simulate_evacuation(&case.fleet, &case.network, case.params, &config)
}

/// The highest capacity the WAN has in `[from, to]`.
fn peak_between(network: &Network, from: f64, to: f64) -> f64 {
    let mut peak = network.capacity_at(Duration::from_secs_f64(from)).0;
    for point in &network.wan_trace {
        let at = point.at.as_secs_f64();
        if at > from && at <= to {
            peak = peak.max(point.bandwidth.0);
        }
    }
    peak
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn invariants_hold(case in case()) {
        let result = run(&case);
        let tolerance = 1.0 + 1e-9;

        // Every VM is accounted for.
        prop_assert_eq!(result.migrated + result.not_migrated + result.lost, case.fleet.vms.len());

        // The WAN never carries more than its capacity over a period.
        let mut last = 0.0;
        for point in &result.timeline {
            prop_assert!(point.t_s >= last, "timeline goes back in time");
            if point.t_s > last {
                let peak = peak_between(&case.network, last, point.t_s);
                prop_assert!(point.wan_throughput_bps <= peak * tolerance + 1e-6,
                    "{} bps over a {} bps WAN at {}", point.wan_throughput_bps, peak, point.t_s);
            }
            last = point.t_s;
        }

        // `deadline` may give a migration more connections than configured.
        let connections = match case.policy {
            PolicyKind::Deadline => case.params.connections.max(MAX_CONNECTIONS),
            _ => case.params.connections,
        };
        let cap_bps = case.params.max_bandwidth.map_or(f64::INFINITY, |c| c.0)
            .min(case.network.connection_cap().0 * connections.as_f64())
            .min(case.network.peak_capacity().0);
        for (record, vm) in result.vms.iter().zip(&case.fleet.vms) {
            match record.outcome {
                Outcome::Migrated => {
                    prop_assert!(record.reason.is_none());
                    let (start, end) = (record.start_s.unwrap(), record.end_s.unwrap());
                    // Times run forward, and no faster than the best rate allows.
                    prop_assert!(start >= 0.0 && end >= start);
                    prop_assert!(record.downtime_s.unwrap() <= end - start + 1e-9);
                    // (The fewest bytes a migration of it can send: zero
                    // pages as their header, compressed when that is less.)
                    let least = vm.least_wire_bytes();
                    let fastest = least * 8.0 / cap_bps.min(case.fleet.host(vm.host).nic.0);
                    prop_assert!(end - start >= fastest / tolerance - 1e-9, "{} faster than {}", end - start, fastest);
                    // Bytes are conserved: the whole memory's first pass at
                    // least once, exactly once (compressed or not) when the
                    // guest writes nothing.
                    let sent = record.bytes_sent.unwrap() as f64;
                    prop_assert!(sent + 1.0 >= least);
                    if vm.dirty_rate.0 == 0.0 {
                        let pass = |compressed| vm.memory.as_f64() * vm.profile.first_pass_wire_per_byte(compressed);
                        prop_assert!((sent - pass(false)).abs() <= 1.0 || (sent - pass(true)).abs() <= 1.0,
                            "{} B, neither {} nor {}", sent, pass(false), pass(true));
                    }
                    // Never sent after the host died.
                    if let Some(off) = case.fleet.host(vm.host).power_off_at {
                        prop_assert!(end <= off.as_secs_f64() + 1e-9);
                    }
                }
                Outcome::Lost => {
                    prop_assert!(record.end_s.is_none() && record.migration_time_s.is_none());
                    // Only a power-off loses a VM.
                    prop_assert!(case.fleet.host(vm.host).power_off_at.is_some());
                    prop_assert_eq!(record.reason.as_deref(), Some("its source host lost power"));
                }
                Outcome::NotMigrated => {
                    // No VM is left on a host that still has power when the
                    // run ends: these WANs never stop for good, no attempt
                    // fails and the week's horizon is never reached, so
                    // every policy (`deadline`'s triage included: it only
                    // puts a VM last) moves a VM or loses it with its host.
                    return Err(TestCaseError::fail(format!(
                        "{} left on {} ({:?}) by {:?}",
                        record.name, record.host, record.reason, case.policy
                    )));
                }
            }
        }
        if case.policy == PolicyKind::Sequential {
            // A VM lost mid-migration stopped when its host died.
            let mut intervals: Vec<(f64, f64)> = result.vms.iter().zip(&case.fleet.vms)
                .filter_map(|(r, vm)| {
                    let died = case.fleet.host(vm.host).power_off_at.map(|t| t.as_secs_f64());
                    Some((r.start_s?, r.end_s.or(died)?))
                })
                .collect();
            intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
            for pair in intervals.windows(2) {
                prop_assert!(pair[1].0 >= pair[0].1 - 1e-9, "sequential overlap: {:?}", pair);
            }
        }

        // Same input, same result.
        prop_assert_eq!(run(&case), result);
    }
}

/// The controller as it was before it had its own clock: consulted every
/// period whatever its policy says.
struct EveryPeriod(evac_controller::Evacuation);

impl evac_controller::Controller for EveryPeriod {
    fn on_tick(&mut self, observations: &evac_controller::Observations) -> Vec<evac_controller::Action> {
        self.0.on_tick(observations)
    }

    fn needs_progress(&self) -> bool {
        evac_controller::Controller::needs_progress(&self.0)
    }

    fn name(&self) -> &str {
        evac_controller::Controller::name(&self.0)
    }

    fn explain(&self, vm: evac_model::VmId) -> Vec<evac_controller::Explanation> {
        evac_controller::Controller::explain(&self.0, vm)
    }
}

proptest! {
    /// Skipping the ticks a policy does not need (fixed limits, AIMD with
    /// nothing queued) changes nothing but the timeline's sampling: every
    /// VM's record and every metric are the same as when the controller is
    /// consulted every period.
    #[test]
    fn skipped_ticks_change_no_result(case in case()) {
        let config = ControllerConfig {
            policy: case.policy,
            ..ControllerConfig::default()
        };
        let mut woken = run(&case);
        // The same controller `simulate_evacuation` builds (it tells the
        // policy the WAN's per-connection cap, and `deadline` plans with
        // rollouts), consulted every period.
        let mut every_period = EveryPeriod(evac_sim::evacuation(
            &case.fleet,
            &case.network,
            case.params,
            &config,
        ));
        let mut ticked = evac_sim::simulate(&case.fleet, &case.network, config.period, &mut every_period);
        woken.timeline.clear();
        ticked.timeline.clear();
        // Equal within rounding: an event less than 1e-9 s from a tick is
        // handled at the tick's instant (`SAME_INSTANT`), so a run with more
        // ticks can place one a fraction of a nanosecond apart.
        let (a, b) = (serde_json::to_value(&woken).unwrap(), serde_json::to_value(&ticked).unwrap());
        if let Err(why) = same("result", &a, &b) {
            prop_assert!(false, "woken (left) against ticked every period (right): {}", why);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// No run ends below its own bounds: the bounds count the VMs the run
    /// moved (those it lost are counted apart), each of which had to cross
    /// the WAN whole at least once, so the total time is at least the time
    /// the WAN needs for their bytes, the mean migration at least their
    /// bytes at the best rate one migration can get, and the score at
    /// least 1, whatever the policy (the case draws every one).
    #[test]
    fn no_run_ends_below_its_own_bound(case in case()) {
        let result = run(&case);
        if let (Some(total), Some(mean), Some(score)) =
            (result.total_time_s, result.mean_migration_time_s, result.score)
        {
            let slack = 1e-6;
            prop_assert!(total >= result.lower_bound_total_s * (1.0 - slack), "{} < {}", total, result.lower_bound_total_s);
            prop_assert!(mean >= result.lower_bound_mean_migration_s * (1.0 - slack), "{} < {}", mean, result.lower_bound_mean_migration_s);
            prop_assert!(score >= 1.0 - slack, "score {}", score);
        }
        // A VM on a host that lost power is lost, not "not migrated".
        for vm in &result.vms {
            let host = result.hosts.iter().find(|h| h.name == vm.host).expect("its host");
            if vm.outcome == Outcome::NotMigrated && host.power_off_s.is_some() {
                prop_assert!(vm.reason.as_deref() == Some(evac_outcome::reason::HORIZON), "{:?}", vm);
            }
        }
    }
}
