//! evac-libvirt as an [`evac_run::Backend`]: each migration attempt is a
//! task owning its own libvirt connection ([`client::Migration`]) that
//! takes the attempt through its stages (`attempt`: an enum with its
//! transitions in one place); its handle ([`LibvirtMigration`]) sends it
//! requests and reads the stage and progress the task last wrote, so an
//! observation never waits on libvirt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use evac_model::{Bytes, Fleet, HostId, Network, Site};
use evac_run::{Log, StartRequest};
use tokio::sync::Semaphore;

use crate::client::{self, ClientError, Conn};
use crate::inventory::{FoundDomain, Inventory};
use crate::limits;

mod attempt;
mod probe;

pub use attempt::{LibvirtMigration, Stages};
pub use probe::{ProbeFailure, ProbeRun, PROBE_MEMORY_MIB, PROBE_PREFIX};

/// How long one libvirt call of an attempt may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// How often an attempt's task reads its job's progress.
const POLL: Duration = Duration::from_millis(500);

/// Migrations start at least this far apart: libvirt daemons started 24 at
/// the same instant ran them in two waves and stalled job queries 18 s;
/// 200 ms apart all ran at once (libvirt-lab.md).
pub const STAGGER: Duration = Duration::from_millis(200);

/// Where a migrated domain runs: a destination host (by inventory name).
#[derive(Debug, Clone, PartialEq)]
pub struct Landed {
    pub host: String,
    pub domain: String,
}

/// A domain of the fleet, as found on its source host.
#[derive(Debug, Clone)]
struct Source {
    host: HostId,
    domain: String,
    interfaces: Vec<String>,
}

/// The hosts of an inventory, connected, and the domains to evacuate.
pub struct LibvirtBackend {
    inventory: Inventory,
    fleet: Fleet,
    sources: Vec<Source>,
    /// One connection per host for discovery and guest counters (each
    /// migration has its own).
    conns: Vec<Arc<Conn>>,
    /// Per host, the bytes of migrations from it (cumulative).
    migrated: Arc<Mutex<Vec<u64>>>,
    /// Per domain, the last transmit counter of its interfaces: a domain
    /// gone from its source keeps counting what it sent there.
    guest_tx: HashMap<String, u64>,
    next_start: Arc<tokio::sync::Mutex<tokio::time::Instant>>,
    /// Per host, its caps as semaphores ([`crate::limits`]).
    gates: Vec<Gate>,
    log: Log,
}

/// A host's caps: slots for migrations (out of a source: its daemon's
/// workers; into a destination: its ports) and for ssh connections being
/// set up.
#[derive(Clone, Default)]
struct Gate {
    migrations: Option<Arc<Semaphore>>,
    startups: Option<Arc<Semaphore>>,
}

/// Reads, says once per host and turns into semaphores the hosts' limits.
async fn gates(inventory: &Inventory, log: &Log) -> Vec<Gate> {
    let mut gates = Vec::new();
    for host in &inventory.hosts {
        let read = match (host.site, limits::admin_uri(&host.uri)) {
            (Site::Source, Some(admin)) => {
                match client::call(CALL_TIMEOUT, move || {
                    limits::read_max_workers(&admin, CALL_TIMEOUT).map_err(ClientError::Libvirt)
                })
                .await
                {
                    Ok(n) => Some(n),
                    Err(e) => {
                        log(&format!(
                            "host `{}`: cannot read its max_workers through libvirt's admin API ({e})",
                            host.name
                        ));
                        None
                    }
                }
            }
            _ => None,
        };
        let (migrations, startups) = limits::host_caps(host, read, inventory.migration.copy_storage);
        let direction = match host.site {
            Site::Source => "out of it",
            Site::Destination => "into it",
        };
        if let Some(cap) = &migrations {
            log(&format!(
                "host `{}`: at most {} migrations {direction} at once: {}",
                host.name, cap.at_most, cap.why
            ));
        }
        if let Some(cap) = &startups {
            log(&format!(
                "host `{}`: at most {} migrations setting up ssh connections to it at once: {}",
                host.name, cap.at_most, cap.why
            ));
        }
        gates.push(Gate {
            migrations: migrations.map(|c| Arc::new(Semaphore::new(c.at_most))),
            startups: startups.map(|c| Arc::new(Semaphore::new(c.at_most))),
        });
    }
    gates
}

impl LibvirtBackend {
    /// Connects to every host, lists the running domains of the source
    /// hosts (those the inventory names, or all) and checks their disks.
    /// Domains with a migration already running (left by an earlier evac)
    /// are part of the fleet: their migration is adopted, not restarted.
    ///
    /// Resuming (`replay`), the fleet also holds the run's VMs that are no
    /// longer on their source (moved before or while evac was down): they
    /// are matched by name and source host, never by position, so the
    /// journal's records and attempts in flight find them.
    pub async fn connect(
        inventory: Inventory,
        log: Log,
        replay: Option<&evac_run::journal::Replay>,
    ) -> anyhow::Result<LibvirtBackend> {
        let mut conns = Vec::new();
        for host in &inventory.hosts {
            let conn = client::connect(&host.uri, CALL_TIMEOUT)
                .await
                .with_context(|| format!("host `{}`", host.name))?;
            conns.push(conn);
        }
        let mut found = Vec::new();
        let mut sources = Vec::new();
        for (i, host) in inventory.hosts.iter().enumerate() {
            if host.site != Site::Source {
                continue;
            }
            let domains =
                client::running_domains(&conns[i], &inventory.migration.shared_storage, CALL_TIMEOUT)
                    .await
                    .with_context(|| format!("host `{}`: listing its domains", host.name))?;
            for d in domains {
                if !inventory.vms.is_empty() && !inventory.vms.iter().any(|v| v.name == d.name) {
                    continue;
                }
                // Resuming finishes the run the journal describes: a domain
                // started since is for a next run.
                if replay.is_some_and(|r| !r.vms.contains(&d.name)) {
                    log(&format!(
                        "{}: not in the run being resumed (started since?): left for a next run",
                        d.name
                    ));
                    continue;
                }
                if !d.local_disks.is_empty() && !inventory.migration.copy_storage {
                    anyhow::bail!(
                        "domain `{}` on host `{}` has local disks ({}): evac assumes storage the destination \
                         reaches too. Set [migration] copy_storage = true to copy them with the migration, or \
                         name the shared mount in [migration] shared_storage",
                        d.name,
                        host.name,
                        d.local_disks.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    );
                }
                if d.job_running {
                    log(&format!(
                        "{}: a migration is already running (an earlier evac?): it will be adopted",
                        d.name
                    ));
                }
                found.push(FoundDomain {
                    host: HostId(i),
                    name: d.name.clone(),
                    memory: d.memory,
                    // Copied ahead of the memory: the plan must count it.
                    disk: if inventory.migration.copy_storage {
                        d.local_disk_bytes
                    } else {
                        Bytes::ZERO
                    },
                });
                sources.push(Source {
                    host: HostId(i),
                    domain: d.name,
                    interfaces: d.interfaces,
                });
            }
        }
        if let Some(replay) = replay {
            for (vm, found_as) in journal_vms_gone(&inventory, replay, &found) {
                log(&format!(
                    "{}: no longer on host `{}` (it moved before this restart): kept from the journal",
                    found_as.name, inventory.hosts[found_as.host.0].name
                ));
                sources.push(Source {
                    host: found_as.host,
                    domain: replay.vms[vm].clone(),
                    interfaces: Vec::new(),
                });
                found.push(found_as);
            }
        }
        let fleet = inventory.fleet(&found).map_err(anyhow::Error::msg)?;
        let gates = gates(&inventory, &log).await;
        // The fleet keeps the order of `found` (filtered the same way).
        let sources = fleet
            .vms
            .iter()
            .map(|vm| {
                sources
                    .iter()
                    .find(|s| s.domain == vm.name)
                    .expect("same list")
                    .clone()
            })
            .collect();
        Ok(LibvirtBackend {
            migrated: Arc::new(Mutex::new(vec![0; inventory.hosts.len()])),
            inventory,
            fleet,
            sources,
            conns,
            guest_tx: HashMap::new(),
            next_start: Arc::new(tokio::sync::Mutex::new(tokio::time::Instant::now())),
            gates,
            log,
        })
    }
}

impl LibvirtBackend {
    /// The connection to host `host` that discovery used (`evac plan`
    /// measures the domains through it).
    pub fn connection(&self, host: HostId) -> &Arc<Conn> {
        &self.conns[host.0]
    }
}

/// What the libvirt backend carries out: postcopy (`VIR_MIGRATE_POSTCOPY`,
/// `virDomainMigrateStartPostCopy`); auto-converge only as a migration
/// starts (libvirt has no call to turn it on mid-flight); no compression
/// yet (libvirt's `VIR_MIGRATE_COMPRESSED` is not wired).
pub const CAPABILITIES: evac_run::Capabilities = evac_run::Capabilities {
    postcopy: true,
    auto_converge_in_flight: false,
    compression: false,
};

impl evac_run::Backend for LibvirtBackend {
    fn capabilities(&self) -> evac_run::Capabilities {
        CAPABILITIES
    }

    fn name(&self) -> &'static str {
        "libvirt"
    }

    type Migration = LibvirtMigration;

    fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    fn network(&self) -> Network {
        self.inventory.network()
    }

    fn start(&mut self, request: StartRequest) -> LibvirtMigration {
        self.spawn(request, false)
    }

    /// The domain and its source host: all a later evac needs to find the
    /// migration again (libvirt keeps the rest).
    fn reconnect_info(&self, request: &StartRequest) -> serde_json::Value {
        let source = &self.sources[request.vm.0];
        serde_json::json!({
            "domain": source.domain,
            "source": self.inventory.hosts[source.host.0].name,
        })
    }

    /// Follows the migration an earlier evac started: done if the domain
    /// runs at a destination, adopted if its job still runs on the source,
    /// failed (the domain is still on its source) otherwise. Never starts
    /// a migration.
    fn adopt(&mut self, request: StartRequest, info: &serde_json::Value) -> Option<LibvirtMigration> {
        let source = &self.sources[request.vm.0];
        let same = info.get("domain").and_then(|d| d.as_str()) == Some(source.domain.as_str())
            && info.get("source").and_then(|h| h.as_str())
                == Some(self.inventory.hosts[source.host.0].name.as_str());
        same.then(|| self.spawn(request, true))
    }

    /// Per source host: its migrations' bytes plus its guests' own
    /// transmitted bytes (their interface counters).
    async fn host_tx(&mut self) -> Vec<Option<Bytes>> {
        let mut tx = vec![None; self.fleet.hosts.len()];
        let migrated = self.migrated.lock().expect("not poisoned").clone();
        for (host, spec) in self.inventory.hosts.iter().enumerate() {
            if spec.site != Site::Source {
                continue;
            }
            let domains: Vec<_> = self
                .sources
                .iter()
                .filter(|s| s.host.0 == host && !s.interfaces.is_empty())
                .map(|s| (s.domain.clone(), s.interfaces.clone()))
                .collect();
            if !domains.is_empty() {
                // A domain gone (migrated) keeps its last count; a call
                // that fails counts nothing new this time.
                if let Ok(counts) =
                    client::guests_tx(&self.conns[host], domains, Duration::from_secs(1)).await
                {
                    for (domain, Bytes(b)) in counts {
                        let last = self.guest_tx.entry(domain).or_default();
                        *last = (*last).max(b);
                    }
                }
            }
            let guests: u64 = self
                .sources
                .iter()
                .filter(|s| s.host.0 == host)
                .filter_map(|s| self.guest_tx.get(&s.domain))
                .sum();
            tx[host] = Some(Bytes(guests + migrated[host]));
        }
        tx
    }
}

/// The least time without bytes moving before a migration is taken for
/// stalled (unless the caller sets its own `stall_after`).
pub const MIN_STALL_AFTER: Duration = Duration::from_secs(15);

/// Connects to the inventory's hosts and evacuates them through the run
/// loop (see the crate documentation).
pub async fn run_with_options(
    inventory: Inventory,
    options: evac_run::RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<evac_run::RunOutput<Landed>> {
    let (mut options, mut inventory) = (options, inventory);
    let log = options.log.clone().unwrap_or_else(evac_run::log_to_stderr);
    let params = inventory.migration.params;
    // Refused before anything moves, rather than migrating uncompressed
    // what the plan counted compressed (the run would refuse it too, later).
    CAPABILITIES
        .fit("libvirt", params)
        .map_err(|why| anyhow::anyhow!(why))?;
    let config = inventory.controller.clone();
    evac_run::open_run_dir(&inventory.name, inventory.run_dir.as_deref(), &mut options)?;
    inventory.start = options.start.unwrap_or(inventory.start);
    // libvirt's own phases move no bytes for seconds: after the last byte
    // the destination's finish and the source's confirm (2-5 s on a loaded
    // machine, where 5 periods of 500 ms cancelled migrations that were
    // completing). A stall is what lasts longer than that.
    let periods = config.period * evac_run::STALL_AFTER_PERIODS;
    options.stall_after = Some(options.stall_after.unwrap_or(periods.max(MIN_STALL_AFTER)));
    let backend = LibvirtBackend::connect(inventory, log, options.replay.as_ref()).await?;
    evac_run::run(backend, params, config, options, shutdown).await
}

/// The VMs of the run being resumed that discovery did not find on their
/// source host (each with its index in the journal): they moved, or are
/// moving, while evac was down. Their source host is the one the journal
/// recorded (an attempt's reconnect info, else the VM's record); one the
/// journal never placed, or whose host left the inventory, is left out.
fn journal_vms_gone(
    inventory: &Inventory,
    replay: &evac_run::journal::Replay,
    found: &[FoundDomain],
) -> Vec<(usize, FoundDomain)> {
    let mut gone = Vec::new();
    for (i, name) in replay.vms.iter().enumerate() {
        if found.iter().any(|f| &f.name == name) {
            continue;
        }
        let state = &replay.states[i];
        let from_flight = state
            .in_flight
            .as_ref()
            .and_then(|f| f.backend.get("source"))
            .and_then(|s| s.as_str());
        let from_record = state.record.as_ref().map(|r| r.host.as_str());
        let Some(host) = from_flight
            .or(from_record)
            .and_then(|h| inventory.host_id(h))
            .filter(|h| inventory.hosts[h.0].site == Site::Source)
        else {
            continue;
        };
        gone.push((
            i,
            FoundDomain {
                host,
                name: name.clone(),
                memory: replay.memory.get(i).copied().unwrap_or(Bytes::ZERO),
                disk: Bytes::ZERO,
            },
        ));
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;
    use evac_outcome::{Outcome, VmRecord};
    use evac_run::journal::{InFlight, Replay, VmReplay};

    const INVENTORY: &str = r#"name = "r"
backend = "libvirt"
[[host]]
name = "a1"
site = "source"
nic = "1 Gbps"
uri = "qemu+tcp://10.0.0.1/system"
[[host]]
name = "b1"
site = "destination"
nic = "1 Gbps"
uri = "qemu+tcp://10.0.0.2/system"
migration_address = "10.0.0.2"
"#;

    fn state(record_host: Option<&str>, flight_source: Option<&str>) -> VmReplay {
        VmReplay {
            record: record_host.map(|h| VmRecord {
                outcome: Outcome::Migrated,
                ..VmRecord::unmoved("x".into(), h.into())
            }),
            attempts: 1,
            done: record_host.is_some(),
            in_flight: flight_source.map(|s| InFlight {
                attempt: 1,
                destination: "b1".into(),
                started_s: 0.0,
                params: evac_model::MigrationParams::default(),
                backend: serde_json::json!({"domain": "x", "source": s}),
            }),
        }
    }

    #[test]
    fn the_journal_places_the_domains_discovery_no_longer_finds() {
        let inventory = Inventory::from_str_at(INVENTORY, std::path::Path::new("r.toml")).unwrap();
        let replay = Replay {
            started_unix_ms: 0,
            vms: ["here", "moved", "moving", "unplaced", "elsewhere"]
                .map(String::from)
                .to_vec(),
            memory: vec![
                Bytes::mib(1),
                Bytes::mib(2),
                Bytes::mib(3),
                Bytes::mib(4),
                Bytes::mib(5),
            ],
            states: vec![
                state(None, None),
                state(Some("a1"), None),
                state(None, Some("a1")),
                state(None, None),
                state(Some("z9"), None),
            ],
            failed_attempts: Vec::new(),
            power: Vec::new(),
        };
        let found = [FoundDomain {
            host: HostId(0),
            name: "here".into(),
            memory: Bytes::mib(1),
            disk: Bytes::ZERO,
        }];
        let gone = journal_vms_gone(&inventory, &replay, &found);
        // Found on A: not added again. Moved (its record's host) and moving
        // (its attempt's source): kept, at their journal index, with the
        // journal's memory. Never placed, or on a host no longer listed: left out.
        let names: Vec<(usize, &str, HostId, Bytes)> = gone
            .iter()
            .map(|(i, f)| (*i, f.name.as_str(), f.host, f.memory))
            .collect();
        assert_eq!(
            names,
            vec![
                (1, "moved", HostId(0), Bytes::mib(2)),
                (2, "moving", HostId(0), Bytes::mib(3))
            ]
        );
    }
}
