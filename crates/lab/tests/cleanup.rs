//! `evac lab down`'s teardown (`evac_lab::cleanup::down`) on real
//! namespaces: whatever part of a lab is already gone is not an error, so a
//! second teardown of a half-gone lab succeeds. Needs root.

use std::path::Path;

use evac_lab::cleanup::down;
use evac_lab::instance::{lab_prefix, LABS_DIR};
use evac_lab::netns::remove_netns;
use evac_lab::{self as lab};

/// The namespaces of this machine whose name starts with `prefix`.
fn namespaces(prefix: &str) -> Vec<String> {
    lab::netns_list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn add_netns(name: &str) {
    let out = std::process::Command::new("ip")
        .args(["netns", "add", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn removing_a_namespace_that_is_gone_is_not_an_error() {
    lab::skip_without!(&[lab::netns_available]);
    let ns = format!("{}-gone", lab_prefix("tgone", std::process::id()));
    assert!(!remove_netns(&ns).unwrap(), "never made: nothing removed");
    add_netns(&ns);
    assert!(remove_netns(&ns).unwrap(), "made: removed");
    assert_eq!(namespaces(&ns), Vec::<String>::new());
    assert!(!remove_netns(&ns).unwrap(), "removed twice");
}

#[test]
fn a_second_teardown_of_a_half_gone_lab_succeeds() {
    lab::skip_without!(&[lab::netns_available]);
    // A lab as `evac lab` names one, owned by this test process (so `down`
    // signals no owner): three namespaces and its directory.
    let name = format!("thalf{}", std::process::id());
    let prefix = lab_prefix(&name, std::process::id());
    let made: Vec<String> = ["s", "h0", "h1"]
        .iter()
        .map(|h| format!("{prefix}-{h}"))
        .collect();
    for ns in &made {
        add_netns(ns);
    }
    let dir = Path::new(LABS_DIR).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("inventory.toml"), "").unwrap();

    // Half gone: one namespace and the directory were removed by someone
    // else (an owner's teardown interrupted half way).
    assert!(remove_netns(&made[0]).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();

    let removed = down(Some(&name)).unwrap();
    assert_eq!(removed.labs, [format!("{name}-{}", std::process::id())]);
    let mut gone = removed.namespaces.clone();
    gone.sort();
    assert_eq!(gone, made[1..].to_vec(), "only what was left is counted");
    assert_eq!(namespaces(&prefix), Vec::<String>::new());

    // Nothing left: a second teardown finds nothing and succeeds.
    let again = down(Some(&name)).unwrap();
    assert!(again.labs.is_empty() && again.namespaces.is_empty(), "{again:?}");
}
