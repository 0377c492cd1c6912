//! The setup probe: what one migration costs on these hosts beyond its
//! bytes, measured without moving a fleet domain.
//!
//! Why: a libvirt migration spends seconds that no byte count explains
//! (the daemons' peer-to-peer handshake, the destination daemon starting
//! its QEMU, the finish at the destination and the confirm at the source;
//! docs/libvirt.md, "Where a migration's time goes"). How long depends on
//! the hosts, their load and the transport, so `evac plan` measures it: a
//! transient domain of [`PROBE_MEMORY_MIB`] MiB, no disk, started paused
//! (its guest never runs: nothing of it can change), with the platform of
//! a fleet domain of its source host, is migrated to a destination by the
//! backend's own attempt ([`LibvirtBackend::spawn_for`]: the same URIs,
//! flags, TLS, parameters and host limits as a fleet domain's), timed from
//! the attempt's start to the domain found at its destination as the run
//! loop times a migration, and destroyed.
//!
//! A probe domain is named `evac-probe-<machine>-<pid>-<n>` (the machine
//! and process of the evac that made it) and removed on every path: at its
//! end, on an error, a timeout or a panic (a guard's drop), and a probe a
//! killed evac left behind is removed by the next probe from the same
//! machine ([`LibvirtBackend::remove_stale_probes`]).

use std::time::Duration;

use evac_model::{Bytes, HostId, Site};
use evac_run::Wake;
use virt::domain::Domain;

use super::attempt::{AttemptResult, Stages};
use super::{LibvirtBackend, Source, CALL_TIMEOUT};
use crate::client::{self, ClientError, Conn};

/// What every probe domain's name starts with.
pub const PROBE_PREFIX: &str = "evac-probe-";

/// A probe domain's memory: QEMU's start does not depend on it, and a
/// paused guest's untouched pages go as zero pages.
pub const PROBE_MEMORY_MIB: u64 = 16;

/// One probe migration.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRun {
    /// Source and destination host (inventory names).
    pub source: String,
    pub destination: String,
    /// From the attempt's start to the domain found at its destination.
    pub elapsed: Duration,
    /// What libvirt sent (the destination's record of the job).
    pub bytes: Bytes,
    /// When it passed each stage.
    pub stages: Stages,
    /// The first probe into its destination: it warms the destination
    /// daemon up and is not to be counted (see [`LibvirtBackend::probe_setup`]).
    pub warm_up: bool,
}

/// One probe that did not complete: where, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeFailure {
    pub source: String,
    pub destination: String,
    pub reason: String,
    pub warm_up: bool,
}

/// This machine's name as a domain name may carry it.
fn machine() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.is_empty() {
        "unknown".to_owned()
    } else {
        name
    }
}

/// The probe domain `n` of this process.
fn probe_name(n: usize) -> String {
    format!("{PROBE_PREFIX}{}-{}-{n}", machine(), std::process::id())
}

/// The pid in a probe name made on this machine (`None`: not a probe, or
/// another machine's).
fn own_probe_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PROBE_PREFIX)?.strip_prefix(&machine())?;
    let mut parts = rest.strip_prefix('-')?.split('-');
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.parse::<usize>().ok()?;
    parts.next().is_none().then_some(pid)
}

/// Destroys (and undefines, if the migration made it persistent) domain
/// `name` on every daemon of `uris`, each bounded by `timeout`; the
/// errors, by host.
fn remove_everywhere(name: &str, uris: &[(String, String)], timeout: Duration) -> Vec<String> {
    let mut errors = Vec::new();
    for (host, uri) in uris {
        let (uri, name) = (uri.clone(), name.to_owned());
        let removed = client::blocking(timeout, move || {
            let conn = Conn::open_blocking(&uri)?;
            let dom = match Domain::lookup_by_name(&conn.0, &name) {
                Ok(dom) => dom,
                Err(e) if e.code() == virt::error::ErrorNumber::NoDomain => return Ok(()),
                Err(e) => return Err(e),
            };
            // Asked before the destroy: a transient domain is gone after it.
            let persistent = dom.is_persistent()?;
            let gone = |r: Result<(), virt::error::Error>| match r {
                Err(e) if e.code() != virt::error::ErrorNumber::NoDomain => Err(e),
                _ => Ok(()),
            };
            if dom.is_active()? {
                gone(dom.destroy())?;
            }
            if persistent {
                gone(dom.undefine())?;
            }
            Ok(())
        });
        if let Err(e) = removed {
            errors.push(format!("host `{host}`: {e}"));
        }
    }
    errors
}

/// Removes a probe domain from every host when dropped, whatever path
/// left the probe (return, `?`, timeout, panic).
struct Guard {
    name: String,
    uris: Vec<(String, String)>,
    /// Where the errors of the removal go (the probe's failure, if any).
    errors: Vec<String>,
    done: bool,
}

impl Guard {
    fn remove(&mut self) -> Vec<String> {
        if !self.done {
            self.done = true;
            self.errors = remove_everywhere(&self.name, &self.uris, CALL_TIMEOUT);
        }
        self.errors.clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.remove();
    }
}

impl LibvirtBackend {
    /// Every host's (name, uri).
    fn host_uris(&self) -> Vec<(String, String)> {
        self.inventory
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.uri.clone()))
            .collect()
    }

    /// Removes the probe domains that an evac of this machine which no
    /// longer runs left on any host; their names.
    pub async fn remove_stale_probes(&self) -> Vec<String> {
        let mut stale = Vec::new();
        for conn in &self.conns {
            let conn = conn.clone();
            let names = client::call(CALL_TIMEOUT, move || {
                let doms = conn.0.list_all_domains(0)?;
                Ok(doms.iter().filter_map(|d| d.get_name().ok()).collect::<Vec<_>>())
            })
            .await
            .unwrap_or_default();
            for name in names {
                let dead = own_probe_pid(&name)
                    .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
                if dead && !stale.contains(&name) {
                    stale.push(name);
                }
            }
        }
        let uris = self.host_uris();
        for name in &stale {
            let (name, uris) = (name.clone(), uris.clone());
            let _ = tokio::task::spawn_blocking(move || remove_everywhere(&name, &uris, CALL_TIMEOUT)).await;
        }
        stale
    }

    /// The platform of the first fleet domain of `host` (else libvirt's
    /// defaults).
    async fn platform_of(&self, host: HostId) -> crate::xml::Platform {
        let Some(domain) = self
            .sources
            .iter()
            .find(|s| s.host == host)
            .map(|s| s.domain.clone())
        else {
            return crate::xml::Platform::default();
        };
        let conn = self.conns[host.0].clone();
        let xml = client::call(CALL_TIMEOUT, move || {
            Ok(Domain::lookup_by_name(&conn.0, &domain)?.get_xml_desc(0)?)
        })
        .await;
        xml.ok()
            .and_then(|x| crate::xml::platform(&x))
            .unwrap_or_default()
    }

    /// A warm-up probe into each destination, then `count` probe
    /// migrations over the (source, destination) pairs in turn; one at a
    /// time, each bounded by `timeout` from its start. Each probe's domain
    /// is gone from every host when it returns.
    ///
    /// Why a warm-up: the first migration into a daemon that has not
    /// started a QEMU lately took 5.6-6.4 s in the lab where the next ones
    /// took 1.5-2.8 s (docs/libvirt.md); a run right after the plan finds
    /// the daemons warm (the probes warmed them), and a fleet's daemons
    /// that run guests are. It is reported, not counted.
    pub async fn probe_setup(
        &mut self,
        count: usize,
        timeout: Duration,
    ) -> Vec<Result<ProbeRun, ProbeFailure>> {
        let sources: Vec<HostId> = (0..self.inventory.hosts.len())
            .filter(|&i| self.inventory.hosts[i].site == Site::Source)
            .map(HostId)
            .collect();
        let destinations: Vec<HostId> = (0..self.inventory.hosts.len())
            .filter(|&i| self.inventory.hosts[i].site == Site::Destination)
            .map(HostId)
            .collect();
        let mut runs = Vec::new();
        if sources.is_empty() || destinations.is_empty() {
            return runs;
        }
        let warm_ups = destinations
            .iter()
            .enumerate()
            .map(|(i, &d)| (sources[i % sources.len()], d, true));
        let counted = (0..count).map(|n| {
            (
                sources[n % sources.len()],
                destinations[n % destinations.len()],
                false,
            )
        });
        for (n, (source, destination, warm_up)) in warm_ups.chain(counted).enumerate() {
            let run = self.probe_one(n, source, destination, timeout).await;
            runs.push(
                run.map(|r| ProbeRun { warm_up, ..r })
                    .map_err(|reason| ProbeFailure {
                        source: self.inventory.hosts[source.0].name.clone(),
                        destination: self.inventory.hosts[destination.0].name.clone(),
                        reason,
                        warm_up,
                    }),
            );
        }
        runs
    }

    async fn probe_one(
        &mut self,
        n: usize,
        source: HostId,
        destination: HostId,
        timeout: Duration,
    ) -> Result<ProbeRun, String> {
        let name = probe_name(n);
        let platform = self.platform_of(source).await;
        let xml = crate::xml::probe_domain(&name, PROBE_MEMORY_MIB, &platform);
        let mut guard = Guard {
            name: name.clone(),
            uris: self.host_uris(),
            errors: Vec::new(),
            done: false,
        };
        let conn = self.conns[source.0].clone();
        client::call(CALL_TIMEOUT, move || {
            Domain::create_xml(&conn.0, &xml, virt::sys::VIR_DOMAIN_START_PAUSED)?;
            Ok(())
        })
        .await
        .map_err(|e: ClientError| format!("cannot start the probe domain `{name}`: {e}"))?;
        // The fleet's parameters; live whatever the mode (the guest is
        // paused already, so an offline migration's pause is moot).
        let mut params = self.inventory.migration.params;
        params.mode = evac_model::Mode::Live;
        let handle = self.spawn_for(
            Source {
                host: source,
                domain: name.clone(),
                interfaces: Vec::new(),
            },
            destination,
            params,
            Wake::default(),
            false,
        );
        let finished = handle.finish_within(timeout).await;
        let removal = guard.remove();
        let run = match finished {
            Some((AttemptResult::Completed { bytes, .. }, stages)) => Ok(ProbeRun {
                source: self.inventory.hosts[source.0].name.clone(),
                destination: self.inventory.hosts[destination.0].name.clone(),
                elapsed: stages.found.unwrap_or_default(),
                bytes,
                stages,
                warm_up: false,
            }),
            Some((AttemptResult::Failed { reason, .. }, _)) => Err(reason),
            None => Err(format!("no end within {} s", timeout.as_secs())),
        };
        match (run, removal.is_empty()) {
            (run, true) => run,
            (Ok(_), false) => Err(format!(
                "the probe domain `{name}` could not be removed: {}",
                removal.join("; ")
            )),
            (Err(e), false) => Err(format!(
                "{e}; the probe domain `{name}` could not be removed: {}",
                removal.join("; ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machines_probe_names_give_a_pid() {
        let mine = probe_name(3);
        assert_eq!(own_probe_pid(&mine), Some(std::process::id()));
        assert_eq!(own_probe_pid(&format!("{PROBE_PREFIX}elsewhere-12-0")), None);
        assert_eq!(own_probe_pid(&format!("{PROBE_PREFIX}{}-12", machine())), None);
        assert_eq!(
            own_probe_pid(&format!("{PROBE_PREFIX}{}-12-0-x", machine())),
            None
        );
        assert_eq!(own_probe_pid("web-1"), None);
    }
}
