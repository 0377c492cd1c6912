//! `evac lab down`: removes labs by name, including what a killed process
//! left behind.
//!
//! A lab is found by its names alone ([`crate::instance::lab_prefix`]): the
//! namespaces `evlab-<name>-<pid>-*` and the directory
//! `/run/evac-lab/<name>-<pid>`. Its owner (the `evac lab up` background
//! process or an `evac lab run`) is asked to stop first (SIGTERM, so it
//! tears down in order); then whatever is left goes by force: every
//! process whose command line names the lab's directory (its QEMUs), every
//! process inside its namespaces, the namespaces (with their veths and
//! qdiscs), the directory. TUN devices need nothing: they vanish with the
//! process holding them.
//!
//! The same removal ([`remove_lab`]) serves every lab of the crate: the
//! libvirt lab tears down with it, and [`sweep_dead`] removes what any lab
//! whose owning process died left (its names carry the owner's pid).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::instance::{sanitize_name, LABS_DIR};
use crate::netns::{netns_list, remove_netns};
use crate::process::{cmdline, kill, kill_under, pid_alive, run};

/// What [`down`] removed.
#[derive(Debug, Default)]
pub struct Removed {
    /// `<name>-<pid>` of each lab found.
    pub labs: Vec<String>,
    pub namespaces: Vec<String>,
    pub processes: Vec<u32>,
}

/// Splits `<name>-<pid>[-rest]` into its name and pid.
fn parse_id(id: &str) -> Option<(&str, u32)> {
    let mut parts = id.splitn(3, '-');
    let name = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    Some((name, pid))
}

/// Whether `pid` is an `evac lab ...` process (and so owns its lab).
fn is_lab_owner(pid: u32) -> bool {
    let args = cmdline(pid);
    args.iter().position(|a| a == "lab").is_some_and(|i| i >= 1) && pid_alive(pid)
}

/// Removes the lab named `name` (every instance of it, one per owning
/// process), or with `None` every lab on this machine.
pub fn down(name: Option<&str>) -> Result<Removed> {
    let wanted = name.map(sanitize_name);
    let matches = |id: &str| parse_id(id).is_some_and(|(n, _)| wanted.as_deref().is_none_or(|w| w == n));
    // <name>-<pid> -> its namespaces.
    let mut labs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(LABS_DIR) {
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if matches(&id) {
                labs.entry(id).or_default();
            }
        }
    }
    for ns in netns_list()? {
        if let Some(rest) = ns.strip_prefix("evlab-") {
            if matches(rest) {
                let (n, pid) = parse_id(rest).expect("matched");
                labs.entry(format!("{n}-{pid}")).or_default().push(ns.clone());
            }
        }
    }
    let mut removed = Removed::default();
    for (id, namespaces) in labs {
        let (_, owner) = parse_id(&id).expect("parsed");
        if owner != std::process::id() && is_lab_owner(owner) {
            // It tears its lab down in order on SIGTERM.
            kill(owner, libc::SIGTERM);
            let deadline = Instant::now() + OWNER_TEARDOWN;
            while pid_alive(owner) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if pid_alive(owner) {
                kill(owner, libc::SIGKILL);
            }
            removed.processes.push(owner);
        }
        // The owner's own teardown has removed some or all of it; what is
        // gone already is not an error, so a second `down` of a half-gone
        // lab succeeds too.
        remove_lab(&Path::new(LABS_DIR).join(&id), &namespaces, &mut removed)?;
        removed.labs.push(id);
    }
    Ok(removed)
}

/// How long [`down`] gives a lab's owner to tear its lab down in order
/// before the rest goes by force.
const OWNER_TEARDOWN: Duration = Duration::from_secs(60);

/// Removes what is left of one lab, by force, skipping what is gone: every
/// process whose command line names a file under `dir` (its QEMUs and
/// daemons), its `namespaces` (with what runs inside), whatever is mounted
/// under `dir` in this mount namespace, and `dir`. Adds what it removed to
/// `removed`.
pub fn remove_lab(dir: &Path, namespaces: &[String], removed: &mut Removed) -> Result<()> {
    removed.processes.extend(kill_under(dir));
    for ns in namespaces {
        if remove_netns(ns)? {
            removed.namespaces.push(ns.clone());
        }
    }
    unmount_under(dir);
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::new(e).context(format!("removing {}", dir.display())))
        }
        _ => Ok(()),
    }
}

/// Unmounts (lazily) whatever is mounted under `dir` in this mount
/// namespace: normally nothing, as the libvirt lab's daemons mount in
/// their own namespaces.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let prefix = format!("{}/", dir.display());
    for line in mounts.lines() {
        if let Some(target) = line.split(' ').nth(1) {
            if target.starts_with(&prefix) || target == prefix.trim_end_matches('/') {
                if let Err(e) = run("umount", &["-l", target]) {
                    eprintln!("lab: {e}");
                }
            }
        }
    }
}

/// Removes what labs whose owner died left: each directory under `parent`
/// and each network namespace whose name `owner` maps to the pid of a
/// process that no longer runs ([`remove_lab`]). A lab that crashed (its
/// test killed, its process panicking past its teardown) is so removed by
/// the next one of its kind. Says on stderr what it could not remove.
pub fn sweep_dead(parent: &Path, owner: impl Fn(&str) -> Option<u32>) -> Removed {
    let me = std::process::id();
    let dead = |name: &str| owner(name).is_some_and(|pid| pid != me && !pid_alive(pid));
    let mut removed = Removed::default();
    if let Ok(entries) = std::fs::read_dir(parent) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dead(&name) && entry.path().is_dir() {
                match remove_lab(&entry.path(), &[], &mut removed) {
                    Ok(()) => removed.labs.push(name),
                    Err(e) => eprintln!("lab: {e:#}"),
                }
            }
        }
    }
    let namespaces: Vec<String> = netns_list()
        .unwrap_or_default()
        .into_iter()
        .filter(|ns| dead(ns))
        .collect();
    for ns in namespaces {
        match remove_netns(&ns) {
            Ok(true) => removed.namespaces.push(ns),
            Ok(false) => {}
            Err(e) => eprintln!("lab: {e}"),
        }
    }
    removed
}
