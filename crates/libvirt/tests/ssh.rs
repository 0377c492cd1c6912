//! `qemu+ssh://` on a real libvirt lab: host B's daemon is reached by A's
//! (peer-to-peer) over ssh, through an sshd the lab runs in B's namespaces
//! with keys the lab made. B's sshd lets 3 connections wait for
//! authentication (`MaxStartups 3`, given in the inventory as
//! `ssh_max_startups`): evac says once that at most 1 migration sets up its
//! ssh connection to B at a time, and moves every domain exactly once
//! without a failed attempt, each over its own ssh session (B's sshd log).

use std::path::Path;

use evac_lab::libvirt::{self as lab, Lab, LabOptions};
use evac_libvirt::inventory::Inventory;
use evac_outcome::Outcome;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_move_over_qemu_ssh_within_sshds_max_startups() {
    let Some(mut lab) = Lab::unless_missing(
        &[lab::libvirt_lab_available, lab::sshd_available],
        &LabOptions::pair(false),
    ) else {
        return;
    };
    lab.start_sshd(1, 3).unwrap();
    let mut names = lab.start_domains("s", 4, 32);
    let tcp = lab.hosts[1].peer_uri();
    let ssh = lab.ssh_peer_uri(1).unwrap();
    let text = lab
        .inventory(
            &[0],
            &[1],
            "400 Mbps",
            "",
            "policy = \"parallel\"\nperiod = \"500 ms\"\nmax_attempts = 3",
        )
        .replace(
            &format!("peer_uri = \"{tcp}\"\n"),
            &format!("peer_uri = \"{ssh}\"\nssh_max_startups = 3\n"),
        );
    assert!(text.contains("qemu+ssh://"), "{text}");
    let inventory = Inventory::from_str_at(&text, Path::new("lab.toml")).unwrap();
    let (out, said) = common::run_logged(inventory).await;

    let capped: Vec<&String> = said
        .iter()
        .filter(|l| {
            l.contains(&format!(
                "host `{}`: at most 1 migrations setting up ssh",
                lab.hosts[1].hostname
            ))
        })
        .collect();
    assert_eq!(capped.len(), 1, "said once: {said:#?}");
    assert!(
        capped[0].contains("MaxStartups = 3 (the inventory's `ssh_max_startups`)"),
        "{}",
        capped[0]
    );
    let r = &out.result;
    assert_eq!((r.migrated, r.lost), (4, 0), "{r:?}\n{said:#?}");
    assert!(r.vms.iter().all(|vm| vm.outcome == Outcome::Migrated), "{r:?}");
    assert!(r.failed_attempts.is_empty(), "{:#?}", r.failed_attempts);
    assert!(lab.running_domains(0).unwrap().is_empty());
    let mut on_b = lab.running_domains(1).unwrap();
    on_b.sort();
    names.sort();
    assert_eq!(on_b, names, "each domain once on B");
    // Every peer-to-peer connection to B went through its sshd.
    let sessions = lab.ssh_sessions_accepted(1);
    assert!(
        sessions >= 4,
        "B's sshd accepted {sessions} sessions for 4 migrations"
    );
}
