//! libvirt at fleet size: 4 libvirt daemons (hosts) and 24 domains (60
//! with `EVAC_LIBVIRT_FLEET_DOMAINS=60`, the figure in docs/libvirt.md), moved
//! from 2 sources to 2 destinations and back, over each transport the lab
//! has: peer-to-peer control over `qemu+tcp://` and `qemu+ssh://` (the
//! lab's sshd, keys made by the lab), the migration stream in clear and
//! encrypted (`VIR_MIGRATE_TLS`, the lab's CA). Every domain must land
//! exactly once: on a destination, never twice, none left on a source.

use std::path::Path;
use std::time::Instant;

use evac_lab::libvirt::{self as lab, Lab, LabOptions};
use evac_libvirt::backend::run_with_options;
use evac_libvirt::inventory::Inventory;
use evac_outcome::Outcome;
use evac_run::RunOptions;

/// The domains moved by default: enough for 4 daemons, both sources and
/// both transports to carry several at once, small enough for CI (the
/// 60-domain run takes some 6 minutes on the 2-core CI machine).
const DEFAULT_DOMAINS: usize = 24;

/// `EVAC_LIBVIRT_FLEET_DOMAINS`, else [`DEFAULT_DOMAINS`]; a value that is
/// not a whole number from 2 to 200 fails the test, naming it.
fn domains() -> usize {
    match std::env::var("EVAC_LIBVIRT_FLEET_DOMAINS") {
        Err(_) => DEFAULT_DOMAINS,
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if (2..=200).contains(&n) => n,
            _ => panic!("EVAC_LIBVIRT_FLEET_DOMAINS={v:?}: expected a whole number from 2 to 200"),
        },
    }
}

/// Evacuates `sources` to `destinations`, the daemons of `over_ssh` reached
/// by the others over ssh, the stream encrypted with `tls`; checks that
/// each of `names` runs on exactly one destination afterwards.
async fn evacuate(
    lab: &Lab,
    run: &str,
    sources: &[usize],
    destinations: &[usize],
    over_ssh: &[usize],
    tls: bool,
    names: &[String],
) {
    let mut text = lab
        .inventory(
            sources,
            destinations,
            "400 Mbps",
            &format!("tls = {tls}"),
            "policy = \"aimd-global\"\nperiod = \"500 ms\"\nmax_attempts = 3",
        )
        .replace(
            &format!("name = \"{}\"\n", lab.name),
            &format!("name = \"{}{run}\"\n", lab.name),
        )
        .replace(
            &format!("{}\"\n", lab.dir.join("run").display()),
            &format!("{}\"\n", lab.dir.join(run).display()),
        );
    for &i in over_ssh {
        let tcp = lab.hosts[i].peer_uri();
        text = text.replace(
            &format!("peer_uri = \"{tcp}\""),
            &format!("peer_uri = \"{}\"", lab.ssh_peer_uri(i).unwrap()),
        );
    }
    assert_eq!(text.matches("qemu+ssh://").count(), over_ssh.len(), "{text}");
    let inventory = Inventory::from_str_at(&text, Path::new("lab.toml")).unwrap();
    let started = Instant::now();
    let out = run_with_options(inventory, RunOptions::default(), std::future::pending())
        .await
        .unwrap();
    let r = &out.result;
    eprintln!(
        "{run}: {} of {} migrated in {:.1} s ({:.1} s wall), {} failed attempts (retried)",
        r.migrated,
        names.len(),
        r.total_time_s.unwrap_or(f64::NAN),
        started.elapsed().as_secs_f64(),
        r.failed_attempts.len()
    );
    assert_eq!(
        (r.migrated, r.lost),
        (names.len(), 0),
        "{run}: {:#?}",
        r.failed_attempts
    );
    assert!(r.vms.iter().all(|vm| vm.outcome == Outcome::Migrated), "{run}");
    for &s in sources {
        assert!(
            lab.running_domains(s).unwrap().is_empty(),
            "{run}: left on {}",
            lab.hosts[s].hostname
        );
    }
    let mut landed: Vec<String> = destinations
        .iter()
        .flat_map(|&d| lab.running_domains(d).unwrap())
        .collect();
    landed.sort();
    let mut expected = names.to_vec();
    expected.sort();
    assert_eq!(landed, expected, "{run}: each domain on exactly one destination");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_domains_crosses_four_hosts_over_tcp_ssh_and_tls_each_once() {
    evac_lab::skip_without!(&[
        lab::libvirt_lab_available,
        lab::sshd_available,
        lab::certtool_available,
    ]);
    let mut lab = Lab::start(&LabOptions {
        hosts: 4,
        rate_mbit: Some(400),
        tls: true,
    })
    .unwrap();
    for i in 0..4 {
        lab.start_sshd(i, 10).unwrap();
    }
    let ram = lab.ram_file("f", 32, None).unwrap();
    let names: Vec<String> = (0..domains())
        .map(|d| lab.start_domain(d % 2, &format!("f{d:02}"), 32, &ram).unwrap())
        .collect();
    // A, B -> C (reached over ssh), D (over tcp); the stream in clear.
    evacuate(&lab, "out", &[0, 1], &[2, 3], &[2], false, &names).await;
    let to_c = lab.running_domains(2).unwrap().len();
    assert!(
        lab.ssh_sessions_accepted(2) >= to_c,
        "C's sshd saw fewer sessions than the {to_c} domains it took"
    );
    // And back: C, D -> A (over tcp), B (over ssh); the stream encrypted.
    evacuate(&lab, "back", &[2, 3], &[0, 1], &[1], true, &names).await;
}
