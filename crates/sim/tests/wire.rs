//! What crosses the wire (`evac_model::memory`), against results computed
//! by hand in the comments: zero pages as their header, compressed pages
//! with their header, a compressing migration capped by its host's CPU
//! (shared by the host's compressing migrations), `auto` choosing the
//! faster, and a dirty curve interpolated within each round.

use std::time::Duration;

use evac_controller::{ControllerConfig, PolicyKind};
use evac_model::{
    BitsPerSec, Bytes, BytesPerSec, Compression, DirtyPoint, Fleet, Host, MemoryProfile, MigrationParams,
    Network, Site, Vm,
};
use evac_outcome::RunResult;

mod common;

const GIB: u64 = 1 << 30;

fn host(name: &str, site: Site, cpus: Option<f64>) -> Host {
    Host {
        migration_cpus: cpus,
        ..evac_testkit::host(name, site)
    }
}

/// An idle 1 GiB VM on host 0 with `profile`.
fn vm(name: &str, profile: MemoryProfile) -> Vm {
    Vm {
        profile,
        ..evac_testkit::vm(name, 0, Bytes(GIB))
    }
}

fn profile(zero_fraction: f64, compression_ratio: f64) -> MemoryProfile {
    MemoryProfile {
        zero_fraction,
        compression_ratio,
        dirty_curve: Vec::new(),
    }
}

fn fleet(cpus: Option<f64>, vms: Vec<Vm>) -> Fleet {
    Fleet {
        hosts: vec![
            host("src", Site::Source, cpus),
            host("dst", Site::Destination, None),
        ],
        vms,
    }
}

/// A WAN of `gbps` whose window never limits a connection.
fn wan(gbps: f64) -> Network {
    evac_testkit::wan(BitsPerSec::gbps(gbps))
}

fn run(fleet: &Fleet, gbps: f64, compression: Compression, policy: PolicyKind) -> RunResult {
    // A round number per core for the hand computations; a host that
    // states no cores gives each migration one (one connection), at 100
    // MB/s too: so such hosts get a rate per core that never binds.
    let per_core = if fleet.hosts[0].migration_cpus.is_some() {
        100e6
    } else {
        100e9
    };
    let params = MigrationParams {
        compression,
        zstd_rate_per_core: BytesPerSec(per_core),
        ..MigrationParams::default()
    };
    common::simulate(fleet, &wan(gbps), params, policy)
}

/// The one VM of [`half_zero`] moved alone (sequential, 1 Gbit/s) from a
/// host of `cpus` cores: its result.
fn half_zero_alone(cpus: Option<f64>, compression: Compression) -> evac_outcome::VmRecord {
    let f = fleet(cpus, vec![half_zero()]);
    let mut r = run(&f, 1.0, compression, PolicyKind::Sequential);
    r.vms.remove(0)
}

/// An idle 1 GiB VM, half of it zero pages, the rest compressing at 2.
fn half_zero() -> Vm {
    vm("half-zero", profile(0.5, 2.0))
}

#[track_caller]
fn close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "got {actual}, expected {expected}"
    );
}

#[test]
fn a_zero_page_costs_its_header() {
    // Half of 1 GiB is zero pages: 2^17 pages of 9 B (1,179,648 B) and 2^29
    // B of the others, 538,050,560 B at 1 Gbit/s (125 MB/s): 4.30440448 s.
    let alone = half_zero_alone(None, Compression::None);
    assert_eq!(alone.bytes_sent, Some(538_050_560));
    close(alone.migration_time_s.unwrap(), 4.30440448);
}

#[test]
fn a_compressed_page_costs_its_bytes_over_the_ratio_and_its_header() {
    // The other 2^17 pages compressed at 2: 2048 + 8 B each, 269,484,032
    // B, plus the zero pages' 1,179,648: 270,663,680 B at 125 MB/s is
    // 2.16530944 s (the host's CPU never binds).
    let alone = half_zero_alone(None, Compression::Zstd);
    assert_eq!(alone.bytes_sent, Some(270_663_680));
    close(alone.migration_time_s.unwrap(), 2.16530944);
}

#[test]
fn a_compressing_migration_goes_no_faster_than_its_host_compresses() {
    // Half a core at 100 MB/s compresses the 2^29 B of non-zero pages in
    // 2^29 / 50e6 = 10.73741824 s, far longer than the link's 2.165 s; the
    // bytes are the same 270,663,680.
    let alone = half_zero_alone(Some(0.5), Compression::Zstd);
    assert_eq!(alone.bytes_sent, Some(270_663_680));
    close(alone.migration_time_s.unwrap(), 10.73741824);
}

#[test]
fn a_hosts_cpu_is_shared_by_its_compressing_migrations() {
    // Two 1 GiB VMs without zero pages, ratio 4, started together on a host
    // with 1 core: 50 MB/s each, 2^30 / 50e6 = 21.47483648 s for both (the
    // 10 Gbit/s WAN carries their 2 x 270,532,608 B in 0.43 s). Alone, one
    // takes half that: 10.73741824 s.
    let vms = vec![vm("a", profile(0.0, 4.0)), vm("b", profile(0.0, 4.0))];
    let f = fleet(Some(1.0), vms);
    let r = run(&f, 10.0, Compression::Zstd, PolicyKind::Parallel);
    for v in &r.vms {
        assert_eq!(v.bytes_sent, Some(270_532_608));
        close(v.migration_time_s.unwrap(), 21.47483648);
    }
    let r = run(&f, 10.0, Compression::Zstd, PolicyKind::Sequential);
    close(r.vms[0].migration_time_s.unwrap(), 10.73741824);
    // The second starts when the first ends, the host's core its own.
    close(r.vms[1].migration_time_s.unwrap(), 10.73741824);
}

#[test]
fn auto_compresses_only_when_that_is_faster() {
    // CPU to spare: compressed (2.16530944 s) beats plain (4.30440448 s).
    let alone = half_zero_alone(None, Compression::Auto);
    close(alone.migration_time_s.unwrap(), 2.16530944);
    // The result says what was chosen.
    assert_eq!(alone.compression, Some(Compression::Zstd));
    // Half a core: compressed would take 10.74 s, plain 4.30 s.
    let alone = half_zero_alone(Some(0.5), Compression::Auto);
    close(alone.migration_time_s.unwrap(), 4.30440448);
    assert_eq!(alone.compression, Some(Compression::None));
    // Nothing compresses (ratio 1): zstd only adds headers, 2^18 pages of
    // 4104 B, 1,075,838,976 B at 125 MB/s (8.606711808 s); auto sends
    // 2^30 B (8.589934592 s).
    let f = fleet(None, vec![vm("random", profile(0.0, 1.0))]);
    let r = run(&f, 1.0, Compression::Zstd, PolicyKind::Sequential);
    assert_eq!(r.vms[0].bytes_sent, Some(1_075_838_976));
    close(r.vms[0].migration_time_s.unwrap(), 8.606711808);
    let r = run(&f, 1.0, Compression::Auto, PolicyKind::Sequential);
    assert_eq!(r.vms[0].bytes_sent, Some(GIB));
    close(r.vms[0].migration_time_s.unwrap(), 8.589934592);
}

#[test]
fn a_migration_compresses_on_one_core_per_connection() {
    // No cores stated: one per connection. At 100 MB/s a core, the 2^29 B
    // of non-zero pages take 5.36870912 s on one connection (the link
    // would take 2.165 s); with the host's 0.5 core stated, 10.73741824 s.
    let f = fleet(None, vec![half_zero()]);
    let params = MigrationParams {
        compression: Compression::Zstd,
        zstd_rate_per_core: BytesPerSec(100e6),
        ..MigrationParams::default()
    };
    let config = ControllerConfig::default();
    let r = evac_sim::simulate_evacuation(&f, &wan(1.0), params, &config);
    close(r.vms[0].migration_time_s.unwrap(), 5.36870912);
}

#[test]
fn the_dirty_curve_is_interpolated_within_each_round() {
    // Dirtied within t: 100 MB/s up to 1 s (100 MB), then 20 MB/s up to
    // 10 s (280 MB), flat after. 1 GiB at 125 MB/s: round 1 lasts
    // T1 = 8.589934592 s and the guest dirties
    // D(T1) = 100e6 + 20e6 (T1 - 1) = 251,798,691.84 B; each next round
    // sends D of the one before, T(k+1) = D(Tk) / 125e6: 2.0143895347,
    // 0.9623023256 (now on the first segment, D = 100e6 T), 0.7698418604,
    // 0.6158734884, 0.4926987907, 0.3941590325, 0.3153272260 s; after
    // round 8, D / r = 0.2522617808 s fits the 300 ms downtime: it is the
    // stop-and-copy. Total 14.406788631174631 s, every byte at 125 MB/s.
    let mut v = vm("curved", MemoryProfile::default());
    v.set_dirty_curve(vec![
        DirtyPoint {
            after: Duration::from_secs(1),
            dirtied: Bytes(100_000_000),
        },
        DirtyPoint {
            after: Duration::from_secs(10),
            dirtied: Bytes(280_000_000),
        },
    ]);
    let f = fleet(None, vec![v]);
    let r = run(&f, 1.0, Compression::None, PolicyKind::Sequential);
    let vm = &r.vms[0];
    assert_eq!(vm.rounds, Some(8));
    close(vm.migration_time_s.unwrap(), 14.406788631174631);
    close(vm.downtime_s.unwrap(), 0.25226178083034245);
    let bytes = vm.bytes_sent.unwrap() as f64;
    assert!((bytes - 125e6 * 14.406788631174631).abs() <= 1.0, "{bytes}");
}

#[test]
fn the_short_form_is_the_curve_of_one_point() {
    // 50 MB/s up to 256 MiB is the point { after = 256 MiB / 50 MB/s =
    // 5.36870912 s, dirtied = 256 MiB }: the same run to the byte.
    let mut short = vm("short", MemoryProfile::default());
    short.dirty_rate = BytesPerSec(50e6);
    short.working_set = Bytes::mib(256);
    let mut curve = vm("curve", MemoryProfile::default());
    curve.set_dirty_curve(vec![DirtyPoint {
        after: Duration::from_nanos(5_368_709_120),
        dirtied: Bytes::mib(256),
    }]);
    assert_eq!(
        (curve.dirty_rate, curve.working_set),
        (short.dirty_rate, short.working_set)
    );
    let a = run(
        &fleet(None, vec![short]),
        1.0,
        Compression::None,
        PolicyKind::Sequential,
    );
    let b = run(
        &fleet(None, vec![curve]),
        1.0,
        Compression::None,
        PolicyKind::Sequential,
    );
    assert_eq!(a.vms[0].bytes_sent, b.vms[0].bytes_sent);
    assert_eq!(a.vms[0].rounds, b.vms[0].rounds);
    close(
        a.vms[0].migration_time_s.unwrap(),
        b.vms[0].migration_time_s.unwrap(),
    );
}

#[test]
fn the_planner_counts_the_bytes_the_simulator_sends() {
    // 4 GiB, three quarters zero pages: 3 x 2^18 pages of 9 B (7,077,888
    // B) and 1 GiB of the others, 1,080,819,712 B; with 512 MiB idle beside
    // it, 1,617,690,624 B at 100 Mbit/s: 129.41524992 s, before the
    // power-off at 140 s. Counting every byte of memory (4.5 GiB, 386.5 s)
    // the planner would put the large VM last; with the simulator's bytes
    // it plans both and moves both, live.
    let mut big = vm("mostly-zero", profile(0.75, 1.0));
    big.memory = Bytes(4 * GIB);
    big.working_set = big.memory;
    let mut small = vm("small", MemoryProfile::default());
    small.memory = Bytes(GIB / 2);
    small.working_set = small.memory;
    let mut f = fleet(None, vec![big, small]);
    f.hosts[0].power_off_at = Some(Duration::from_secs(140));
    let r = run(&f, 0.1, Compression::None, PolicyKind::Deadline);
    assert_eq!(r.migrated, 2, "{:?}", r.vms);
    for v in &r.vms {
        assert!(
            v.decisions.iter().all(|d| d.decision == "start"),
            "{}: {:?}",
            v.name,
            v.decisions
        );
    }
    assert_eq!(r.vms[0].bytes_sent, Some(1_080_819_712));
    close(r.total_time_s.unwrap(), 129.41524992);
}
