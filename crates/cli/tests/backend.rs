//! `evac run` picks its backend from the inventory's `backend` key.

use std::path::Path;
use std::process::Output;

mod common;
use common::arg;

/// `evac run --quiet FILE`, `text` written to FILE, `fleet.toml` in `dir`.
fn run_inventory_in(dir: &Path, text: &str) -> Output {
    let path = dir.join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    common::evac_command()
        .args(["run", "--quiet", arg(&path)])
        .output()
        .expect("evac runs")
}

/// [`run_inventory_in`] a fresh directory: whether it succeeded, and its
/// stderr.
fn run_inventory(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = run_inventory_in(dir.path(), text);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A libvirt inventory of one source host, `a1`, and no destination; its
/// daemon's socket does not exist.
const LIBVIRT: &str = r#"name = "dc1-to-dc2"
backend = "libvirt"
[[host]]
name = "a1"
site = "source"
nic = "10 Gbps"
uri = "qemu:///system?socket=/nonexistent/evac-test/a1.sock"
"#;

#[test]
fn a_libvirt_inventory_is_read_by_the_libvirt_backend() {
    // The libvirt loader's own check: this inventory has no destination.
    let (ok, stderr) = run_inventory(LIBVIRT);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("fleet.toml") && stderr.contains("no host has site = \"destination\""),
        "{stderr}"
    );
}

#[test]
fn an_unknown_backend_names_the_line_and_the_field() {
    let (ok, stderr) = run_inventory(&LIBVIRT.replace("\"libvirt\"", "\"xen\""));
    assert!(!ok, "{stderr}");
    // `backend` is on line 2 of the file.
    assert!(
        stderr.contains("fleet.toml:2:") && stderr.contains("backend") && stderr.contains("xen"),
        "{stderr}"
    );
}

/// [`LIBVIRT`] with a destination: an inventory that the libvirt loader
/// accepts; its daemons' sockets do not exist, so a build with libvirt
/// fails fast connecting.
fn libvirt_valid() -> String {
    format!(
        r#"{LIBVIRT}[[host]]
name = "b1"
site = "destination"
nic = "10 Gbps"
uri = "qemu:///system?socket=/nonexistent/evac-test/b1.sock"
migration_address = "10.77.0.2"
"#
    )
}

#[cfg(not(feature = "libvirt"))]
#[test]
fn a_build_without_libvirt_refuses_a_libvirt_inventory_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_inventory_in(dir.path(), &libvirt_valid());
    let path = dir.path().join("fleet.toml");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: {}:2: backend = \"libvirt\" needs an evac built with libvirt support: \
             cargo install --path crates/cli --features libvirt \
             (needs libvirt-dev and pkg-config; docs/libvirt.md)\n",
            path.display()
        )
    );
}

#[cfg(feature = "libvirt")]
#[test]
fn a_build_with_libvirt_runs_a_libvirt_inventory() {
    let (ok, stderr) = run_inventory(&libvirt_valid());
    assert!(!ok, "{stderr}");
    // It got as far as connecting to the first daemon.
    assert!(
        !stderr.contains("built with libvirt support") && stderr.contains("a1.sock"),
        "{stderr}"
    );
}
