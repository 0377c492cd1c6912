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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::instance::{sanitize_name, LABS_DIR};
use crate::topology::remove_netns;
use crate::{netns_list, pid_alive};

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

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` is an `evac lab ...` process (and so owns its lab).
fn is_lab_owner(pid: u32) -> bool {
    let args = cmdline(pid);
    args.iter().position(|a| a == "lab").is_some_and(|i| i >= 1) && pid_alive(pid)
}

/// Processes whose command line mentions `needle`, other than this one.
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && cmdline(pid).iter().any(|a| a.contains(needle)))
        .collect()
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
            // SAFETY: kill(2) on an `evac lab` process that owns this lab.
            unsafe {
                libc::kill(owner as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while pid_alive(owner) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if pid_alive(owner) {
                // SAFETY: as above; it did not stop in time.
                unsafe {
                    libc::kill(owner as i32, libc::SIGKILL);
                }
            }
            removed.processes.push(owner);
        }
        let dir = Path::new(LABS_DIR).join(&id);
        let marker = format!("{}/", dir.display());
        for pid in pids_mentioning(&marker) {
            // SAFETY: kill(2) on a process started with the lab's files.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            removed.processes.push(pid);
        }
        // The owner's own teardown has removed some or all of them; what is
        // gone already is not an error, so a second `down` of a half-gone
        // lab succeeds too.
        for ns in namespaces {
            if remove_netns(&ns)? {
                removed.namespaces.push(ns);
            }
        }
        remove_dir(&dir)?;
        removed.labs.push(id);
    }
    Ok(removed)
}

fn remove_dir(dir: &PathBuf) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::new(e).context(format!("removing {}", dir.display())))
        }
        _ => Ok(()),
    }
}
