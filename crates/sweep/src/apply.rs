//! A level applied to a scenario: the factors' effects, and the traces
//! the `trace` presets draw from the seed.

use std::time::Duration;

use evac_model::{BitsPerSec, Bytes, TracePoint};
use evac_scenario::Scenario;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Level, MemoryPreset, PowerNews, TracePreset};

/// The smallest VM `skewed` draws.
pub(crate) const SKEWED_MIN: Bytes = Bytes::mib(64);
/// `fluctuating`: the low phase's share of the bandwidth, and the range of a
/// phase's length in seconds.
pub(crate) const LOW_SHARE: f64 = 0.4;
pub(crate) const PHASE_S: (f64, f64) = (30.0, 90.0);

pub(crate) fn apply(scenario: &mut Scenario, level: &Level) {
    let seed = scenario.seed;
    match *level {
        Level::Policy(policy) => scenario.controller.policy = policy,
        Level::WanBandwidth(bandwidth) => {
            let ratio = bandwidth.0 / scenario.network.wan_bandwidth.0;
            for point in &mut scenario.network.wan_trace {
                point.bandwidth = BitsPerSec(point.bandwidth.0 * ratio);
            }
            scenario.network.wan_bandwidth = bandwidth;
        }
        Level::WanRtt(rtt) => scenario.network.wan_rtt = rtt,
        Level::TcpWindow(window) => scenario.network.tcp_window = window,
        Level::Connections(connections) => scenario.migration.connections = connections,
        Level::Memory(MemoryPreset::Base) => {}
        Level::Memory(preset) => {
            let vms = &mut scenario.fleet.vms;
            if vms.is_empty() {
                return;
            }
            let total: f64 = vms.iter().map(|vm| vm.memory.as_f64()).sum();
            let sizes: Vec<f64> = match preset {
                MemoryPreset::Equal => vec![total / vms.len() as f64; vms.len()],
                _ => {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d65_6d6f_7279);
                    let lognormal = rand_distr::LogNormal::new(0.0, 1.0).expect("valid parameters");
                    let draws: Vec<f64> = vms.iter().map(|_| rng.sample(lognormal)).collect();
                    let sum: f64 = draws.iter().sum();
                    draws.iter().map(|d| d / sum * total).collect()
                }
            };
            for (vm, size) in vms.iter_mut().zip(sizes) {
                let mib = (size / Bytes::mib(1).as_f64()).round().max(1.0) as u64;
                let memory = match preset {
                    MemoryPreset::Skewed => Bytes::mib(mib).max(SKEWED_MIN),
                    _ => Bytes::mib(mib),
                };
                let ratio = vm.working_set.as_f64() / vm.memory.as_f64();
                vm.working_set = Bytes::from_f64(memory.as_f64() * ratio).min(memory);
                // A dirty curve scales with the memory, as the working set.
                let scale = memory.as_f64() / vm.memory.as_f64();
                for point in &mut vm.profile.dirty_curve {
                    point.dirtied = Bytes::from_f64(point.dirtied.as_f64() * scale).min(memory);
                }
                vm.memory = memory;
            }
        }
        Level::DirtyRate(rate) => {
            for vm in &mut scenario.fleet.vms {
                vm.dirty_rate = rate;
                // The factor is one rate: a dirty curve gives way to the
                // short form (that rate up to the curve's last point).
                vm.profile.dirty_curve.clear();
            }
        }
        Level::Mode(mode) => scenario.migration.mode = mode,
        Level::Trace(TracePreset::Base) => {}
        Level::Trace(TracePreset::Steady) => scenario.network.wan_trace.clear(),
        Level::Trace(TracePreset::Fluctuating) => {
            scenario.network.wan_trace = fluctuating_trace(scenario, seed);
        }
        Level::Trace(preset) => {
            scenario.network.wan_trace = disturbed_trace(preset, scenario.network.wan_bandwidth, seed);
        }
        Level::Order(order) => scenario.controller.order = Some(order),
        Level::MaxInFlight(n) => scenario.controller.max_in_flight = n,
        Level::MaxInFlightPerHost(n) => scenario.controller.max_in_flight_per_host = n,
        Level::PowerOffScale(scale) => {
            for host in &mut scenario.fleet.hosts {
                host.power_off_at = host.power_off_at.map(|at| at.mul_f64(scale));
                for change in &mut host.power_trace {
                    change.at = change.at.mul_f64(scale);
                    change.power_off_at = change.power_off_at.map(|at| at.mul_f64(scale));
                }
            }
        }
        Level::PowerNews(PowerNews::Base) => {}
        Level::PowerNews(PowerNews::None) => {
            for host in &mut scenario.fleet.hosts {
                host.power_trace.clear();
            }
        }
        Level::PowerNews(PowerNews::Shift { shift, at }) => {
            for host in &mut scenario.fleet.hosts {
                let Some(power_off) = host.power_off_at else {
                    host.power_trace.clear();
                    continue;
                };
                let off = power_off.as_secs_f64();
                let at = at.of(off).max(0.0);
                let moved = (off + shift.of(off)).max(0.0);
                host.power_trace = vec![evac_model::PowerChange {
                    at: Duration::from_secs_f64(at),
                    power_off_at: Some(Duration::from_secs_f64(moved)),
                }];
            }
        }
    }
}

/// 100 % / 40 % of the bandwidth in phases of 30 to 90 s, up to a horizon
/// no evacuation outlasts: 100 times the time to carry every VM at the low
/// rate over one connection per migration, or at least an hour.
pub(crate) fn fluctuating_trace(scenario: &Scenario, seed: u64) -> Vec<TracePoint> {
    let network = &scenario.network;
    let high = network.wan_bandwidth;
    let low = BitsPerSec(high.0 * LOW_SHARE);
    let slowest = low.0.min(network.connection_cap().0);
    let carry = scenario.fleet.total_memory().as_f64() * 8.0 / slowest;
    let horizon = (100.0 * carry).clamp(3600.0, 1e7);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0074_7261_6365);
    let mut points = Vec::new();
    let mut t = 0.0;
    let mut is_high = true;
    while t < horizon && points.len() < 200_000 {
        t += rng.gen_range(PHASE_S.0..PHASE_S.1);
        is_high = !is_high;
        points.push(TracePoint {
            at: Duration::from_secs_f64(t),
            bandwidth: if is_high { high } else { low },
        });
    }
    points
}

/// The WANs of a disaster, as shares of `base` over time, each drawn from
/// the seed (so repeat seeds give new shapes of the same family):
///
/// - `dip`: after 1-5 min the WAN falls to 5-20 % for 5-15 min, then
///   recovers to 1-5 times what it was (other traffic gone, a backup link
///   up);
/// - `slow-start`: 5-20 % for the first 3-8 min, then all of it;
/// - `near-outage`: after 1-6 min, 0.5-2 % for 2-6 min, then all of it;
/// - `sawtooth`: climbs from 20 % to 100 % in five steps over 3-6 min,
///   falls back, and again;
/// - `stalls`: all of it for 2-5 min, then 0.5-2 % for 0.5-2 min, and
///   again.
///
/// Repeating shapes run for 10 hours (no benchmark evacuation outlasts it);
/// after the last point the WAN stays at full bandwidth.
pub(crate) fn disturbed_trace(preset: TracePreset, base: BitsPerSec, seed: u64) -> Vec<TracePoint> {
    const MIN: f64 = 60.0;
    const HORIZON_S: f64 = 36_000.0;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0064_6973_7475_7262);
    let mut points = Vec::new();
    let mut push = |at: f64, share: f64| {
        points.push(TracePoint {
            at: Duration::from_secs_f64(at),
            bandwidth: BitsPerSec(base.0 * share),
        });
    };
    match preset {
        TracePreset::Dip => {
            let from = rng.gen_range(1.0..5.0) * MIN;
            push(from, rng.gen_range(0.05..0.20));
            push(from + rng.gen_range(5.0..15.0) * MIN, rng.gen_range(1.0..5.0));
        }
        TracePreset::SlowStart => {
            // From the start: the base bandwidth never shows.
            push(0.001, rng.gen_range(0.05..0.20));
            push(rng.gen_range(3.0..8.0) * MIN, 1.0);
        }
        TracePreset::NearOutage => {
            let from = rng.gen_range(1.0..6.0) * MIN;
            push(from, rng.gen_range(0.005..0.02));
            push(from + rng.gen_range(2.0..6.0) * MIN, 1.0);
        }
        TracePreset::Sawtooth => {
            let step = rng.gen_range(3.0..6.0) * MIN / 5.0;
            let mut t = 0.001;
            while t < HORIZON_S {
                for k in 0..5 {
                    push(t, 0.2 + 0.2 * f64::from(k));
                    t += step;
                }
            }
        }
        TracePreset::Stalls => {
            let mut t = 0.0;
            while t < HORIZON_S {
                t += rng.gen_range(2.0..5.0) * MIN;
                push(t, rng.gen_range(0.005..0.02));
                t += rng.gen_range(0.5..2.0) * MIN;
                push(t, 1.0);
            }
        }
        TracePreset::Base | TracePreset::Steady | TracePreset::Fluctuating => {
            unreachable!("not a disturbed trace")
        }
    }
    points
}
