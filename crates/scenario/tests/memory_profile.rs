//! A VM's memory profile in a scenario: zero pages, the compression ratio
//! of the others, the dirty curve (or its short form), a host's cores for
//! compression and `[migration] compression`; each refusal at its file,
//! line (counted here by hand) and field.

use std::time::Duration;

use evac_model::{Bytes, BytesPerSec, Compression, DirtyPoint, MemoryProfile};
use evac_scenario::Scenario;

const ORIGIN: &str = "p.toml";

/// 18 lines; the tests append a VM from line 19 on.
const HOSTS: &str = r#"[network]
wan_bandwidth = "1 Gbps"

[migration]
compression = "zstd"
zstd_rate_per_core = "300 MB/s"

[[host]]
name = "src"
site = "source"
nic = "10 Gbps"
migration_cpus = 1.5

[[host]]
name = "dst"
site = "destination"
nic = "10 Gbps"

"#;

fn load(vm: &str) -> Result<Scenario, String> {
    Scenario::from_toml_str(&format!("{HOSTS}{vm}"), ORIGIN).map_err(|e| e.to_string())
}

#[test]
fn the_issue_example_reads_as_a_curve_and_its_short_form() {
    let s = load(
        r#"[[vm]]
name = "db"
host = "src"
memory = "32 GiB"
zero_fraction = 0.61
compression_ratio = 2
dirty_curve = [{ after = "125 ms", dirtied = "0.06 GiB" }, { after = "1 s", dirtied = "0.46 GiB" },
               { after = "10 s", dirtied = "1.75 GiB" }, { after = "60 s", dirtied = "5.8 GiB" }]
"#,
    )
    .unwrap();
    assert_eq!(s.migration.compression, Compression::Zstd);
    assert_eq!(s.migration.zstd_rate_per_core, BytesPerSec(300e6));
    assert_eq!(s.fleet.hosts[0].migration_cpus, Some(1.5));
    assert_eq!(s.fleet.hosts[1].migration_cpus, None);
    let vm = &s.fleet.vms[0];
    assert_eq!(vm.profile.zero_fraction, 0.61);
    assert_eq!(vm.profile.compression_ratio, 2.0);
    assert_eq!(vm.profile.dirty_curve.len(), 4);
    assert_eq!(
        vm.profile.dirty_curve[0],
        DirtyPoint {
            after: Duration::from_millis(125),
            dirtied: Bytes((0.06 * 1073741824.0_f64).round() as u64)
        }
    );
    // The short form the estimates see: the first slope (0.06 GiB in
    // 125 ms = 0.48 GiB/s) up to the last point (5.8 GiB); the point's
    // size is rounded to a whole byte, which is 8 B/s at most over 125 ms.
    let gib = 1073741824.0;
    assert!((vm.dirty_rate.0 - 0.48 * gib).abs() <= 8.0, "{}", vm.dirty_rate);
    assert_eq!(vm.working_set, Bytes((5.8 * gib).round() as u64));
    // Interpolated by hand: halfway from 1 s to 10 s, (0.46 + 1.75) / 2.
    assert!((vm.dirtied_within(5.5) - 1.105 * gib).abs() < 2.0);
    // Within the first segment: a quarter of 125 ms, a quarter of 0.06 GiB.
    assert!((vm.dirtied_within(0.03125) - 0.015 * gib).abs() < 1.0);
    // Flat after the last point.
    assert_eq!(vm.dirtied_within(3600.0), (5.8 * gib).round());
}

#[test]
fn without_the_new_fields_a_vm_is_as_before() {
    let s = load(
        "[[vm]]\nname = \"web\"\nhost = \"src\"\nmemory = \"4 GiB\"\ndirty_rate = \"20 MB/s\"\nworking_set = \"1 GiB\"\n",
    )
    .unwrap();
    let vm = &s.fleet.vms[0];
    assert_eq!(vm.profile, MemoryProfile::default());
    // min(working set, rate x t): 20 MB/s for 10 s is 200 MB; for 100 s
    // the 1 GiB working set.
    assert_eq!(vm.dirtied_within(10.0), 200e6);
    assert_eq!(vm.dirtied_within(100.0), 1073741824.0);
    assert_eq!(vm.saturated_after(), 1073741824.0 / 20e6);
}

#[test]
fn a_group_draws_its_shares_and_gives_every_vm_the_curve() {
    let group = r#"[[vm_group]]
prefix = "g"
count = 50
host = "src"
memory = "8 GiB"
zero_fraction = { dist = "uniform", min = 0.2, max = 0.8 }
compression_ratio = { dist = "choice", values = [1, 3] }
dirty_curve = [{ after = "1 s", dirtied = "1 GiB" }]
"#;
    let s = load(group).unwrap();
    let zero: Vec<f64> = s.fleet.vms.iter().map(|v| v.profile.zero_fraction).collect();
    assert!(zero.iter().all(|z| (0.2..=0.8).contains(z)), "{zero:?}");
    // Rounded to thousandths.
    assert!(zero
        .iter()
        .all(|z| ((z * 1000.0).round() - z * 1000.0).abs() < 1e-9));
    assert!(zero.iter().any(|&z| z != zero[0]), "all drew {}", zero[0]);
    let ratios: Vec<f64> = s.fleet.vms.iter().map(|v| v.profile.compression_ratio).collect();
    assert!(ratios.contains(&1.0) && ratios.contains(&3.0), "{ratios:?}");
    assert!(s.fleet.vms.iter().all(|v| v.working_set == Bytes::gib(1)));
    // The same file, the same draws; the memory draws are those of a
    // group without the new fields.
    let again = load(group).unwrap();
    assert_eq!(again.fleet, s.fleet);
}

#[track_caller]
fn refused(vm: &str, expected: &str) {
    assert_eq!(load(vm).unwrap_err(), expected);
}

const VM: &str = "[[vm]]\nname = \"v\"\nhost = \"src\"\nmemory = \"1 GiB\"\n";

#[test]
fn each_refusal_names_the_file_line_and_field() {
    refused(
        &format!("{VM}zero_fraction = 1.5\n"),
        "p.toml:23: field `zero_fraction` of [[vm]] \"v\": 1.5 is not a share of pages; give one within 0 ..= 1, like 0.6",
    );
    refused(
        &format!("{VM}compression_ratio = 0.5\n"),
        "p.toml:23: field `compression_ratio` of [[vm]] \"v\": 0.5 is not a compression ratio (bytes over \
         compressed bytes); give one within 1 ..= 1000, 1 for memory that does not compress",
    );
    refused(
        &format!(
            "{VM}dirty_curve = [\n  {{ after = \"1 s\", dirtied = \"200 MiB\" }},\n  {{ after = \"2 s\", dirtied = \"100 MiB\" }},\n]\n"
        ),
        "p.toml:25: field `dirty_curve[1].dirtied` of [[vm]] \"v\": 100 MiB is less than the point before \
         (200 MiB); memory dirtied at least once within a longer time is never less",
    );
    refused(
        &format!(
            "{VM}dirty_curve = [\n  {{ after = \"2 s\", dirtied = \"100 MiB\" }},\n  {{ after = \"2 s\", dirtied = \"200 MiB\" }},\n]\n"
        ),
        "p.toml:25: field `dirty_curve[1].after` of [[vm]] \"v\": 2 s is not after the point before (2 s); \
         points go in increasing `after`",
    );
    refused(
        &format!("{VM}dirty_curve = [{{ after = \"0 s\", dirtied = \"1 MiB\" }}]\n"),
        "p.toml:23: field `dirty_curve[0].after` of [[vm]] \"v\": a point after 0 s says nothing (nothing is \
         dirtied in no time); start after it, like \"1 s\"",
    );
    refused(
        &format!("{VM}dirty_curve = [{{ after = \"1 s\", dirtied = \"2 GiB\" }}]\n"),
        "p.toml:23: field `dirty_curve[0].dirtied` of [[vm]] \"v\": 2 GiB is more than the VM's 1 GiB of memory",
    );
    refused(
        &format!("{VM}dirty_rate = \"1 MB/s\"\ndirty_curve = [{{ after = \"1 s\", dirtied = \"2 MiB\" }}]\n"),
        "p.toml:24: field `dirty_curve` of [[vm]] \"v\": a dirty curve says what `dirty_rate` and `working_set` \
         would: give the curve, or those two, not both",
    );
    let host = HOSTS.replace("migration_cpus = 1.5", "migration_cpus = 0");
    let e = Scenario::from_toml_str(&format!("{host}{VM}"), ORIGIN)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("p.toml:12: field `migration_cpus` of [[host]] \"src\": 0 cores"),
        "{e}"
    );
    let zstd = HOSTS.replace("compression = \"zstd\"", "compression = \"gzip\"");
    let e = Scenario::from_toml_str(&format!("{zstd}{VM}"), ORIGIN)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("p.toml:5:") && e.contains("`none`, `zstd`") && e.contains("auto"),
        "{e}"
    );
    let point = format!("{VM}dirty_curve = [{{ after = \"1 s\", dirtied = \"1 MiB\", rate = 3 }}]\n");
    let e = load(&point).unwrap_err();
    assert!(e.starts_with("p.toml:23:") && e.contains("rate"), "{e}");
}
