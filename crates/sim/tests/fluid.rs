//! The whole simulation through the fluid model against the same simulation
//! with a full max-min solve at every change ([`Solver::FullSolve`], the
//! reference), on thousands of random small evacuations: every VM's record,
//! every metric, the timeline and the failed attempts equal within 1e-9
//! relative (a byte counter within one byte: it is rounded to whole bytes).
//!
//! The scenarios are drawn so that both regimes occur and alternate within a
//! run: WANs thinner and wider than the NICs, traces that change the WAN's
//! capacity (down to nothing), caps below and above the fair share, setup
//! times, local disks, offline and postcopy migrations, power-offs, every
//! policy.

use std::time::Duration;

use evac_controller::{ControllerConfig, Evacuation, PolicyKind};
use evac_model::{
    BitsPerSec, Bytes, BytesPerSec, Compression, Fleet, Host, HostId, MigrationParams, Mode, Network, Site,
    TracePoint, Vm,
};
use evac_outcome::RunResult;
use evac_sim::{simulate_with_solver, Solver, SolverStats};
use proptest::prelude::*;

mod common;
use common::{same, trace_of, Case};

fn case() -> impl Strategy<Value = Case> {
    let source = (
        prop::sample::select(vec![100.0, 300.0, 1000.0, 10_000.0]),
        prop::option::of(5u64..300),
        // Quarters of a core for compressing migrations.
        prop::option::of(1u32..8),
    );
    let vm = (
        0usize..4,
        0usize..3,
        16u64..1024,
        0u32..40,
        8u64..512,
        prop::sample::select(vec![0u64, 0, 0, 300]),
        // Percent of zero pages, compression ratio in tenths.
        // ... and, for some, a dirty curve of two points: the rate's first
        // second, then the working set after this many seconds.
        (0u32..90, 10u32..40, prop::option::of(2u64..30)),
    );
    let params = (
        1u32..5,
        prop::option::of(prop::sample::select(vec![20.0, 80.0, 400.0, 5000.0])),
        prop::sample::select(vec![Mode::Live, Mode::Live, Mode::Offline, Mode::Postcopy]),
        prop::sample::select(vec![0u64, 0, 500, 2000]),
        1u32..12,
        prop::sample::select(vec![Compression::None, Compression::Zstd, Compression::Auto]),
    );
    (
        prop::collection::vec(source, 1..5),
        prop::collection::vec(prop::sample::select(vec![400.0, 2000.0, 10_000.0]), 1..3),
        prop::collection::vec(vm, 1..30),
        prop::sample::select(vec![50.0, 200.0, 700.0, 3000.0, 20_000.0]),
        prop::collection::vec(
            (
                1u64..90,
                prop::sample::select(vec![0.0, 30.0, 150.0, 600.0, 2500.0, 20_000.0]),
            ),
            0..7,
        ),
        params,
        prop::sample::select(PolicyKind::ALL.to_vec()),
    )
        .prop_map(|(sources, destinations, vms, wan_mbps, trace, params, policy)| {
            let (channels, cap_mbps, mode, setup_ms, max_rounds, compression) = params;
            let mut hosts: Vec<Host> = sources
                .iter()
                .enumerate()
                .map(|(i, &(mbps, power_off_s, quarter_cpus))| Host {
                    migration_cpus: quarter_cpus.map(|q| f64::from(q) / 4.0),
                    name: format!("src-{i}"),
                    site: Site::Source,
                    nic: BitsPerSec::mbps(mbps),
                    memory: None,
                    power_off_at: power_off_s.map(Duration::from_secs),
                    power_trace: Vec::new(),
                })
                .collect();
            let first_destination = hosts.len();
            hosts.extend(destinations.iter().enumerate().map(|(i, &mbps)| Host {
                migration_cpus: None,
                name: format!("dst-{i}"),
                site: Site::Destination,
                nic: BitsPerSec::mbps(mbps),
                memory: None,
                power_off_at: None,
                power_trace: Vec::new(),
            }));
            let vms = vms
                .into_iter()
                .enumerate()
                .map(
                    |(i, (host, pin, mib, dirty_mb, ws_mib, disk_mib, (zero_pct, ratio_tenths, curve_s)))| {
                        let mut vm = Vm {
                            profile: evac_model::MemoryProfile {
                                zero_fraction: f64::from(zero_pct) / 100.0,
                                compression_ratio: f64::from(ratio_tenths) / 10.0,
                                dirty_curve: Vec::new(),
                            },
                            name: format!("vm-{i}"),
                            host: HostId(host % sources.len()),
                            memory: Bytes::mib(mib),
                            dirty_rate: BytesPerSec(f64::from(dirty_mb) * 1e6),
                            working_set: Bytes::mib(ws_mib.min(mib)),
                            disk: Bytes::mib(disk_mib),
                            priority: 1 + (i % 3) as u32,
                            // Some pinned to a destination (so that one NIC can bind).
                            destination: (pin == 0).then_some(HostId(first_destination)),
                        };
                        if let Some(seconds) = curve_s {
                            let first = Bytes::from_f64(vm.dirty_rate.0).min(vm.working_set);
                            vm.set_dirty_curve(vec![
                                evac_model::DirtyPoint {
                                    after: Duration::from_secs(1),
                                    dirtied: first,
                                },
                                evac_model::DirtyPoint {
                                    after: Duration::from_secs(seconds),
                                    dirtied: vm.working_set,
                                },
                            ]);
                        }
                        vm
                    },
                )
                .collect();
            let wan_trace = trace_of(trace);
            Case {
                fleet: Fleet { hosts, vms },
                network: Network {
                    wan_bandwidth: BitsPerSec::mbps(wan_mbps),
                    wan_rtt: Duration::from_millis(20),
                    tcp_window: Bytes::mib(4),
                    wan_trace,
                },
                params: MigrationParams {
                    mode,
                    connections: evac_model::Connections::new(channels).unwrap(),
                    max_bandwidth: cap_mbps.map(BitsPerSec::mbps),
                    setup_time: Duration::from_millis(setup_ms),
                    max_rounds,
                    compression,
                    ..MigrationParams::default()
                },
                policy,
            }
        })
}

fn run(case: &Case, solver: Solver) -> (RunResult, SolverStats) {
    let config = ControllerConfig {
        policy: case.policy,
        ..ControllerConfig::default()
    };
    let mut controller =
        Evacuation::with_network(case.fleet.clone(), &case.network, case.params, config.clone());
    simulate_with_solver(&case.fleet, &case.network, config.period, &mut controller, solver)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn fluid_model_equals_full_solves(case in case()) {
        let (fluid, stats) = run(&case, Solver::Fluid);
        let (full, full_stats) = run(&case, Solver::FullSolve);
        prop_assert_eq!(full_stats.fluid_steps, 0);
        let (a, b) = (serde_json::to_value(&fluid).unwrap(), serde_json::to_value(&full).unwrap());
        if let Err(why) = same("result", &a, &b) {
            prop_assert!(false, "fluid (left) against full solves (right): {} ({:?})", why, stats);
        }
    }
}

/// The scenarios above do exercise both regimes, and switch between them.
#[test]
fn both_regimes_occur() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    // Runs all in the fluid model, runs that switch, and runs mostly in
    // full solves (every run starts with nothing sending, which the fluid
    // model holds trivially).
    let (mut fluid_only, mut both, mut mostly_full) = (0, 0, 0);
    let (mut chained, mut cut) = (0, 0);
    for _ in 0..300 {
        let case = case().new_tree(&mut runner).unwrap().current();
        let (_, stats) = run(&case, Solver::Fluid);
        if stats.full_solves == 0 {
            fluid_only += 1;
        } else if stats.fluid_steps > 0 {
            both += 1;
        }
        if stats.full_solves > stats.fluid_steps {
            mostly_full += 1;
        }
        chained += usize::from(stats.chains > 0);
        cut += usize::from(stats.chains_cut > 0);
    }
    let counts = format!(
        "of 300 runs: fluid only {fluid_only}, both {both}, mostly full solves {mostly_full}, \
         with chained rounds {chained}, with a chain cut {cut}"
    );
    eprintln!("{counts}");
    assert!(
        fluid_only >= 20 && both >= 20 && mostly_full >= 20 && chained >= 20 && cut >= 10,
        "{counts}"
    );
}

/// By hand: three VMs of 1,000 MB, idle, one connection each, on three
/// sources with 1 Gbps NICs, a 600 Mbps WAN (the only bottleneck: 200 Mbps
/// each) that drops to 300 Mbps at 10 s. Each has sent 250 MB by 10 s, then
/// runs at 100 Mbps = 12.5 MB/s: 750 MB / 12.5 MB/s = 60 s more. All end at
/// 70 s, every step through the fluid model.
#[test]
fn wan_drop_by_hand() {
    let hosts = (0..3)
        .map(|i| Host {
            nic: BitsPerSec::gbps(1.0),
            ..evac_testkit::source(&format!("src-{i}"))
        })
        .chain(std::iter::once(evac_testkit::destination("dst")))
        .collect();
    let vms = (0..3)
        .map(|i| Vm {
            working_set: Bytes(0),
            ..evac_testkit::vm(&format!("vm-{i}"), i, Bytes(1_000_000_000))
        })
        .collect();
    let case = Case {
        fleet: Fleet { hosts, vms },
        network: Network {
            wan_bandwidth: BitsPerSec::mbps(600.0),
            wan_rtt: Duration::from_millis(1),
            tcp_window: Bytes::mib(64),
            wan_trace: vec![TracePoint {
                at: Duration::from_secs(10),
                bandwidth: BitsPerSec::mbps(300.0),
            }],
        },
        params: MigrationParams {
            connections: evac_model::Connections::new(1).unwrap(),
            ..MigrationParams::default()
        },
        policy: PolicyKind::Parallel,
    };
    let (result, stats) = run(&case, Solver::Fluid);
    assert_eq!(stats.full_solves, 0, "{stats:?}");
    assert!(stats.fluid_steps >= 2, "{stats:?}");
    assert_eq!(result.migrated, 3);
    for vm in &result.vms {
        let end = vm.end_s.unwrap();
        assert!((end - 70.0).abs() < 1e-9, "{} ended at {end}", vm.name);
    }
}
