//! The lab's one network builder: network namespaces as hosts and
//! routers, veth pairs between them, `tc tbf` shaping, per-namespace
//! sysctls, and code run inside a namespace.
//!
//! Every lab network (the two-namespace [`crate::LabNetwork`] of the
//! backend tests, the scenario's [`crate::topology::Topology`], the libvirt
//! lab's bridge) is made of these pieces, and its namespaces are owned by a
//! [`Namespaces`], which removes them (processes inside first) when
//! dropped, so a failing build or a panicking test cleans up. Both ends of
//! every veth are created inside namespaces: nothing is added to the
//! machine's own namespace and no lab traffic leaves it.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use evac_model::{BitsPerSec, Bytes};

use crate::process::{ip, kill, run};

/// Where `ip netns` keeps its namespaces' handles.
const NETNS_DIR: &str = "/run/netns";

/// Namespaces made by one lab, removed in reverse order of creation
/// ([`remove_netns`]) when dropped.
#[derive(Debug, Default)]
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    pub fn new() -> Namespaces {
        Namespaces::default()
    }

    /// Creates namespace `name` with its loopback up; owned from then on.
    pub fn add(&mut self, name: &str) -> io::Result<()> {
        ip(&["netns", "add", name])?;
        self.names.push(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The namespaces made, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Removes every namespace now (also done on drop); says on stderr what
    /// could not be removed.
    pub fn remove_all(&mut self) {
        for ns in self.names.drain(..).rev() {
            if let Err(e) = remove_netns(&ns) {
                eprintln!("lab: {e}");
            }
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// Creates a veth pair with `a_dev` in namespace `a` and `b_dev` in `b`
/// (made inside `a` and its peer moved at once: no name ever appears in the
/// machine's own namespace).
pub fn veth(a: &str, a_dev: &str, b: &str, b_dev: &str) -> io::Result<()> {
    ip(&[
        "-n", a, "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b,
    ])?;
    Ok(())
}

/// Gives `dev` in `netns` the address `cidr` (e.g. `10.214.0.2/24`) and
/// brings it up.
pub fn address_up(netns: &str, dev: &str, cidr: &str) -> io::Result<()> {
    ip(&["-n", netns, "addr", "add", cidr, "dev", dev])?;
    link_up(netns, dev)
}

/// Brings `dev` in `netns` up.
pub fn link_up(netns: &str, dev: &str) -> io::Result<()> {
    ip(&["-n", netns, "link", "set", dev, "up"])?;
    Ok(())
}

/// A token bucket filter (`tc tbf`): what every shaped link of the lab is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tbf {
    /// The rate, as the device counts it (whole packets or frames).
    pub rate: BitsPerSec,
    /// The bucket: how much may pass at once above the rate.
    pub burst: Bytes,
    /// The queue: the longest a packet may wait.
    pub latency: Duration,
}

impl Tbf {
    /// The `tbf ...` arguments of `tc qdisc`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "tbf".into(),
            "rate".into(),
            format!("{}bit", self.rate.0.round() as u64),
            "burst".into(),
            format!("{}b", self.burst.0),
            "latency".into(),
            format!("{}us", self.latency.as_micros()),
        ]
    }
}

/// Whether [`shape`] adds a root qdisc or changes the one there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QdiscVerb {
    Add,
    Change,
}

/// Puts `tbf` at the root of `dev`'s egress in `netns`.
pub fn shape(netns: &str, dev: &str, verb: QdiscVerb, tbf: &Tbf) -> io::Result<()> {
    let verb = match verb {
        QdiscVerb::Add => "add",
        QdiscVerb::Change => "change",
    };
    let mut args: Vec<String> = ["-n", netns, "qdisc", verb, "dev", dev, "root"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(tbf.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("tc", &args)?;
    Ok(())
}

/// Sets `key` (dotted, as `sysctl` names it) to `value` in `netns`: written
/// to `/proc/sys` from a thread inside the namespace, where the `net.*`
/// entries are the namespace's own (no `sysctl` binary needed).
pub fn sysctl(netns: &str, key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_owned();
    in_netns(netns, move || {
        std::fs::write(&path, value).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
    })?
    .map_err(|e| io::Error::new(e.kind(), format!("network namespace {netns}: {e}")))
}

/// Runs `f` in a thread that has entered network namespace `netns` (a name
/// under `/run/netns`): sockets and TUN devices it opens belong to that
/// namespace and stay there when handed back to other threads.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let ns = std::fs::File::open(Path::new(NETNS_DIR).join(netns))
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {netns}: {e}")))?;
    std::thread::spawn(move || -> io::Result<T> {
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) on a descriptor we own; it changes the namespace
        // of this thread only, which ends with `f`.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("a thread in a network namespace panicked"))?
}

/// Whether process `pid` lives in network namespace `netns`.
pub fn pid_in_netns(pid: u32, netns: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(format!("/proc/{pid}/ns/net")),
        std::fs::metadata(Path::new(NETNS_DIR).join(netns)),
    ) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// The pids of the processes inside network namespace `netns`.
pub fn netns_pids(netns: &str) -> Vec<u32> {
    ip(&["netns", "pids", netns])
        .map(|out| out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// The names of the existing network namespaces (`ip netns list`).
pub fn netns_list() -> io::Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// Kills every process in `netns` (SIGKILL), waits up to 5 s for them to
/// go, and deletes the namespace. A namespace that is already gone (never
/// made, or removed meanwhile by its owner's own teardown) is not an error:
/// `Ok(false)`; `Ok(true)` when this call removed it.
pub fn remove_netns(netns: &str) -> io::Result<bool> {
    let file = Path::new(NETNS_DIR).join(netns);
    if !file.exists() {
        return Ok(false);
    }
    for pid in netns_pids(netns) {
        kill(pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !netns_pids(netns).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    match ip(&["netns", "del", netns]) {
        Ok(_) => Ok(true),
        // `ip netns del` unmounts, then unlinks the file: when another
        // process (the lab's owner tearing down on SIGTERM) deleted it in
        // between, the unlink fails ("Cannot remove namespace file ...: No
        // such file or directory") though the namespace is gone.
        Err(_) if !file.exists() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `ip netns add` works here (root, iproute2, kernel support):
/// `Err(reason)` otherwise. Creates and deletes a throw-away namespace.
pub fn netns_available() -> Result<(), String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    for tool in ["ip", "tc"] {
        match run(tool, &["-V"]) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(format!(
                    "`{tool}` is not installed ({e}); apt-get install iproute2"
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let probe = format!("evac-{}-probe-{}", std::process::id(), crate::next_id());
    ip(&["netns", "add", &probe]).map_err(|e| format!("`ip netns add` fails: {e}"))?;
    ip(&["netns", "del", &probe]).map_err(|e| format!("`ip netns del` fails: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_is_given_its_rate_in_bits_its_burst_in_bytes_its_queue_in_microseconds() {
        let tbf = Tbf {
            rate: BitsPerSec(200e6),
            burst: Bytes(256 << 10),
            latency: Duration::from_millis(50),
        };
        assert_eq!(
            tbf.args(),
            [
                "tbf",
                "rate",
                "200000000bit",
                "burst",
                "262144b",
                "latency",
                "50000us"
            ]
        );
    }
}
