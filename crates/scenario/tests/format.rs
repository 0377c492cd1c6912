//! What a valid scenario reads as. Expected values are computed by hand from
//! the text, not by the code under test.

use std::path::Path;
use std::time::Duration;

use evac_controller::{ControllerConfig, Order, PolicyKind};
use evac_model::{BitsPerSec, Bytes, BytesPerSec, HostId, MigrationParams, Mode, Site, TracePoint, Vm};
use evac_scenario::{Scenario, DEFAULT_SCENARIO_TOML};
use evac_testkit::{host_toml, vm_group_toml};
use proptest::prelude::*;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn parse(text: &str) -> Scenario {
    Scenario::from_toml_str(text, "test.toml").unwrap_or_else(|error| panic!("{error}"))
}

fn workspace_file(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

#[test]
fn the_two_site_example_reads_as_written() {
    let scenario = Scenario::from_path(&workspace_file("scenarios/two-site.toml")).unwrap();
    assert_eq!(scenario.name, "two-site evacuation");
    assert_eq!(scenario.seed, 42);

    let network = &scenario.network;
    assert_eq!(network.wan_bandwidth, BitsPerSec(1_000_000_000.0));
    assert_eq!(network.wan_rtt, Duration::from_millis(50));
    assert_eq!(network.tcp_window, Bytes(4_194_304));
    assert_eq!(
        network.wan_trace,
        vec![
            TracePoint {
                at: Duration::ZERO,
                bandwidth: BitsPerSec(1e9)
            },
            TracePoint {
                at: Duration::from_secs(120),
                bandwidth: BitsPerSec(400_000_000.0)
            },
        ]
    );

    assert_eq!(
        scenario.migration,
        MigrationParams {
            mode: Mode::Live,
            downtime_limit: Duration::from_millis(300),
            max_rounds: 30,
            connections: evac_model::Connections::new(1).unwrap(),
            max_bandwidth: None,
            auto_converge: false,
            allow_postcopy: false,
            setup_time: Duration::ZERO,
            ramp_rtts: 0.0,
            join_rtts: 0.0,
            compression: evac_model::Compression::None,
            zstd_rate_per_core: evac_model::BytesPerSec(250e6),
        }
    );
    assert_eq!(
        scenario.controller,
        ControllerConfig {
            policy: PolicyKind::Sequential,
            period: Duration::from_secs(1),
            order: Some(Order::AsListed),
            ..ControllerConfig::default()
        }
    );

    let hosts = &scenario.fleet.hosts;
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[0].name, "src-1");
    assert_eq!(hosts[0].site, Site::Source);
    assert_eq!(hosts[0].nic, BitsPerSec(10_000_000_000.0));
    assert_eq!(hosts[0].memory, None);
    assert_eq!(hosts[0].power_off_at, Some(Duration::from_secs(15 * 60)));
    assert_eq!(hosts[1].name, "dst-1");
    assert_eq!(hosts[1].site, Site::Destination);
    assert_eq!(hosts[1].memory, Some(Bytes(549_755_813_888)));
    assert_eq!(hosts[1].power_off_at, None);

    let vms = &scenario.fleet.vms;
    assert_eq!(vms.len(), 101, "web-1 and 100 batch VMs");
    assert_eq!(
        vms[0],
        Vm {
            profile: evac_model::MemoryProfile::default(),
            name: "web-1".into(),
            host: HostId(0),
            memory: Bytes(4_294_967_296),
            dirty_rate: BytesPerSec(20_000_000.0),
            working_set: Bytes(536_870_912),
            disk: Bytes::ZERO,
            priority: 1,
            destination: Some(HostId(1)),
        }
    );
    for (n, vm) in vms[1..].iter().enumerate() {
        assert_eq!(vm.name, format!("batch-{}", n + 1));
        // Round-robin over the one source host.
        assert_eq!(vm.host, HostId(0));
        assert!((GIB..=8 * GIB).contains(&vm.memory.0), "{vm:?}");
        assert_eq!(vm.memory.0 % MIB, 0, "drawn sizes are whole MiB: {vm:?}");
        assert_eq!(vm.dirty_rate, BytesPerSec(10_000_000.0));
        assert_eq!(vm.working_set, Bytes(268_435_456));
        assert_eq!(vm.priority, 1);
        assert_eq!(vm.destination, None);
    }
}

#[test]
fn round_robin_goes_over_the_source_hosts_in_file_order() {
    let hosts: String = [
        ("src-a", "source"),
        ("dst", "destination"),
        ("src-b", "source"),
        ("src-c", "source"),
    ]
    .iter()
    .map(|(name, site)| host_toml(name, site, "10 Gbps"))
    .collect();
    let scenario = parse(&format!(
        "[network]\nwan_bandwidth = \"1 Gbps\"\n{hosts}{}",
        vm_group_toml("batch", 5, "round-robin", r#""1 GiB""#)
    ));
    let hosts: Vec<HostId> = scenario.fleet.vms.iter().map(|vm| vm.host).collect();
    // batch-1 on src-a (host 0), batch-2 on src-b (2), batch-3 on src-c (3), then again.
    assert_eq!(hosts, [HostId(0), HostId(2), HostId(3), HostId(0), HostId(2)]);
}

/// A scenario of only the fields it must have.
fn minimal() -> String {
    format!(
        r#"
[network]
wan_bandwidth = "100 Mbps"

{}
[[vm]]
name = "only"
host = "src"
memory = 1073741824

{}"#,
        evac_testkit::src_dst_toml("1 Gbps"),
        vm_group_toml("g", 1, "src", r#""2 GiB""#)
    )
}

#[test]
fn optional_fields_take_their_defaults() {
    let scenario = Scenario::from_toml_str(&minimal(), "scenarios/minimal.toml").unwrap();
    assert_eq!(
        scenario.name, "minimal",
        "a scenario without a name goes by its file's"
    );
    assert_eq!(scenario.seed, 0);
    assert_eq!(scenario.network.wan_rtt, Duration::from_millis(1));
    assert_eq!(scenario.network.tcp_window, Bytes(4 * MIB));
    assert!(scenario.network.wan_trace.is_empty());
    assert_eq!(scenario.migration, MigrationParams::default());
    assert_eq!(scenario.controller, ControllerConfig::default());
    assert_eq!(scenario.fleet.hosts[1].memory, None);
    assert_eq!(scenario.fleet.hosts[0].power_off_at, None);
    for vm in &scenario.fleet.vms {
        assert_eq!(vm.dirty_rate, BytesPerSec(0.0));
        assert_eq!(vm.working_set, vm.memory);
        assert_eq!(vm.priority, 1);
        assert_eq!(vm.destination, None);
    }
    // A bare integer is a number of bytes.
    assert_eq!(scenario.fleet.vms[0].memory, Bytes(GIB));
    assert_eq!(scenario.fleet.vms[1].memory, Bytes(2 * GIB));
}

#[test]
fn vms_and_groups_keep_their_file_order() {
    let scenario = parse(&format!(
        "{}{}[[vm]]\nname = \"middle\"\nhost = \"src\"\nmemory = \"1 GiB\"\n{}",
        src_and_dst(),
        vm_group_toml("first", 2, "src", r#""1 GiB""#),
        vm_group_toml("last", 1, "src", r#""1 GiB""#)
    ));
    let names: Vec<&str> = scenario.fleet.vms.iter().map(|vm| vm.name.as_str()).collect();
    assert_eq!(names, ["first-1", "first-2", "middle", "last-1"]);
}

/// The start of a scenario: a 1 Gbps WAN, hosts `src` and `dst`.
fn src_and_dst() -> String {
    format!(
        "[network]\nwan_bandwidth = \"1 Gbps\"\n{}",
        evac_testkit::src_dst_toml("10 Gbps")
    )
}

/// [`src_and_dst`] drawn with `seed`.
fn one_source_one_destination(seed: u64) -> String {
    format!("seed = {seed}\n{}", src_and_dst())
}

/// Memory drawn uniformly from 1 to 8 GiB.
const UNIFORM_1_TO_8_GIB: &str = r#"{ dist = "uniform", min = "1 GiB", max = "8 GiB" }"#;

/// A scenario with one uniform group, and whatever `extra` appends.
fn with_group(seed: u64, extra: &str) -> String {
    format!(
        "{}{}{extra}\n",
        one_source_one_destination(seed),
        vm_group_toml("batch", 20, "src", UNIFORM_1_TO_8_GIB)
    )
}

fn memories(scenario: &Scenario) -> Vec<Bytes> {
    scenario.fleet.vms.iter().map(|vm| vm.memory).collect()
}

#[test]
fn the_same_seed_gives_the_same_fleet() {
    let text = with_group(7, "");
    assert_eq!(parse(&text), parse(&text));
}

#[test]
fn another_seed_gives_other_memories() {
    assert_ne!(
        memories(&parse(&with_group(7, ""))),
        memories(&parse(&with_group(8, "")))
    );
}

#[test]
fn a_new_group_or_distribution_leaves_earlier_draws_alone() {
    let alone = memories(&parse(&with_group(7, "")));
    let more = parse(&with_group(
        7,
        &format!(
            "dirty_rate = {{ dist = \"uniform\", min = \"1 MB/s\", max = \"9 MB/s\" }}\n{}",
            vm_group_toml("later", 5, "src", UNIFORM_1_TO_8_GIB)
        ),
    ));
    assert_eq!(memories(&more)[..20], alone[..]);
    // The second group draws from a stream of its own, not a copy of the first's.
    assert_ne!(memories(&more)[20..], alone[..5]);
}

#[test]
fn a_group_working_set_is_clipped_to_each_vm() {
    let scenario = parse(&with_group(1, r#"working_set = "2 GiB""#));
    for vm in &scenario.fleet.vms {
        assert_eq!(vm.working_set, Bytes(vm.memory.0.min(2 * GIB)), "{vm:?}");
    }
}

#[test]
fn a_group_can_draw_its_dirty_rate_and_working_set() {
    let scenario = parse(&with_group(
        3,
        r#"dirty_rate = { dist = "choice", values = ["5 MB/s", "50 MB/s"] }
working_set = { dist = "lognormal", median = "512 MiB", sigma = 0.5, max = "1 GiB" }
priority = 4
destination = "dst""#,
    ));
    for vm in &scenario.fleet.vms {
        assert!(
            [BytesPerSec(5e6), BytesPerSec(5e7)].contains(&vm.dirty_rate),
            "{vm:?}"
        );
        assert!(vm.working_set <= Bytes(GIB), "{vm:?}");
        assert_eq!(vm.priority, 4);
        assert_eq!(vm.destination, Some(HostId(1)));
    }
}

#[test]
fn a_choice_with_a_zero_weight_never_picks_that_value() {
    let picky = r#"{ dist = "choice", values = ["1 GiB", "4 GiB"], weights = [0, 1] }"#;
    let scenario = parse(&with_group(5, &vm_group_toml("picky", 50, "src", picky)));
    assert!(scenario.fleet.vms[20..]
        .iter()
        .all(|vm| vm.memory == Bytes(4 * GIB)));
}

#[test]
fn the_embedded_default_is_the_one_in_scenarios() {
    let on_disk = std::fs::read_to_string(workspace_file("scenarios/default.toml")).unwrap();
    assert_eq!(DEFAULT_SCENARIO_TOML, on_disk);
}

#[test]
fn the_embedded_default_is_an_evacuation_worth_looking_at() {
    let scenario = Scenario::embedded_default();
    let fleet = &scenario.fleet;
    assert_eq!(fleet.source_hosts().count(), 4);
    assert_eq!(fleet.destination_hosts().count(), 2);
    assert!(fleet.destination_hosts().all(|h| fleet.host(h).memory.is_some()));
    assert_eq!(fleet.hosts.iter().filter(|h| h.power_off_at.is_some()).count(), 2);
    assert_eq!(fleet.vms.len(), 41);
    let total = fleet.total_memory();
    assert!((90 * GIB..=130 * GIB).contains(&total.0), "{total}");
    assert!(fleet.vms.iter().any(|vm| vm.priority > 1));
    assert!(fleet.vms.iter().any(|vm| vm.dirty_rate == BytesPerSec(0.0)));
    assert_eq!(scenario.network.connection_cap(), BitsPerSec(671_088_640.0));
    assert_eq!(
        scenario.network.capacity_at(Duration::from_secs(11 * 60)),
        BitsPerSec(3e8)
    );
    assert_eq!(scenario.controller.policy, PolicyKind::Deadline);
    assert_eq!(scenario.migration.connections.get(), 2);
}

proptest! {
    #[test]
    fn uniform_draws_stay_within_their_bounds(
        seed in 0..=i64::MAX as u64, // TOML integers are i64
        min in 1u64..1 << 36,
        span in 0u64..1 << 36,
    ) {
        let max = min + span;
        let memory = format!(r#"{{ dist = "uniform", min = "{min} B", max = "{max} B" }}"#);
        let scenario = parse(&format!(
            "{}{}",
            one_source_one_destination(seed),
            vm_group_toml("u", 10, "src", &memory)
        ));
        for vm in &scenario.fleet.vms {
            prop_assert!((min..=max).contains(&vm.memory.0), "{} not in [{min}, {max}]", vm.memory.0);
        }
    }

    #[test]
    fn a_choice_yields_only_listed_values(
        seed in 0..=i64::MAX as u64, // TOML integers are i64
        values in proptest::collection::vec(1u64..1 << 40, 1..5),
    ) {
        let listed: Vec<String> = values.iter().map(|v| format!("\"{v} B\"")).collect();
        let memory = format!(r#"{{ dist = "choice", values = [{}] }}"#, listed.join(", "));
        let scenario = parse(&format!(
            "{}{}",
            one_source_one_destination(seed),
            vm_group_toml("c", 10, "src", &memory)
        ));
        for vm in &scenario.fleet.vms {
            prop_assert!(values.contains(&vm.memory.0), "{} not listed in {values:?}", vm.memory.0);
        }
    }
}

#[test]
fn a_disk_is_read_per_vm_and_drawn_per_group_member() {
    let text = format!(
        "{}\n[[vm]]\nname = \"db\"\nhost = \"src\"\nmemory = \"1 GiB\"\ndisk = \"20 GiB\"\n\n[[vm]]\nname = \"web\"\nhost = \"src\"\nmemory = \"1 GiB\"\n",
        with_group(3, r#"disk = { dist = "choice", values = ["10 GiB", "30 GiB"] }"#)
    );
    let scenario = parse(&text);
    let by_name = |name: &str| {
        scenario
            .fleet
            .vms
            .iter()
            .find(|v| v.name == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("db").disk, Bytes(20 * GIB));
    assert_eq!(by_name("web").disk, Bytes::ZERO);
    let drawn: Vec<u64> = scenario.fleet.vms[..20].iter().map(|v| v.disk.0).collect();
    assert!(
        drawn.iter().all(|d| [10 * GIB, 30 * GIB].contains(d)),
        "{drawn:?}"
    );
    assert!(
        drawn.contains(&(10 * GIB)) && drawn.contains(&(30 * GIB)),
        "{drawn:?}"
    );
    // Drawing disks leaves the memories drawn as before.
    assert_eq!(
        memories(&scenario)[..20],
        memories(&parse(&with_group(3, "")))[..]
    );
}
