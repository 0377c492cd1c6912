//! evac-libvirt as an [`evac_run::Backend`]: each migration attempt is a
//! task owning its own libvirt connection ([`client::Migration`]); its
//! handle ([`LibvirtMigration`]) sends it requests and reads the progress
//! the task last measured, so an observation never waits on libvirt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use evac_controller::{Phase, Retune};
use evac_model::{BitsPerSec, Bytes, Fleet, HostId, Network, Site};
use evac_run::{Completion, Failure, Log, Observed, Progress, StartRequest};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::client::{self, ClientError, Conn, JobProgress, MigrateRequest};
use crate::inventory::{FoundDomain, HostSpec, Inventory};
use crate::limits;

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

impl LibvirtBackend {
    /// Starts an attempt's task; `adopt_only`: follow a migration already
    /// started, never start one.
    fn spawn(&mut self, request: StartRequest, adopt_only: bool) -> LibvirtMigration {
        let source = self.sources[request.vm.0].clone();
        let src_host = &self.inventory.hosts[source.host.0];
        let dst_host = &self.inventory.hosts[request.destination.0];
        let params = request.params;
        let migrate = MigrateRequest {
            domain: source.domain.clone(),
            destination_uri: dst_host.peer_uri().to_owned(),
            migration_uri: dst_host.migration_address.as_ref().map(|a| format!("tcp://{a}")),
            max_bandwidth: params.max_bandwidth.map(BitsPerSec::to_bytes_per_sec),
            parallel_connections: params.connections.get(),
            auto_converge: params.auto_converge,
            downtime_limit: params.downtime_limit,
            tls: self.inventory.migration.tls,
            tls_destination: dst_host.tls_name.clone(),
            copy_storage: self.inventory.migration.copy_storage,
            offline: params.mode == evac_model::Mode::Offline,
            postcopy: params.allow_postcopy || params.mode == evac_model::Mode::Postcopy,
        };
        let destinations = self
            .inventory
            .hosts
            .iter()
            .filter(|h| h.site == Site::Destination)
            .map(|h| (h.name.clone(), h.uri.clone()))
            .collect();
        let ctx = AttemptCtx {
            source_gate: self.gates[source.host.0].clone(),
            destination_gate: self.gates[request.destination.0].clone(),
            source_spec: src_host.clone(),
            destination_spec: dst_host.clone(),
            source_uri: src_host.uri.clone(),
            source_host: source.host.0,
            destinations,
            request: migrate,
            migrated: self.migrated.clone(),
            next_start: self.next_start.clone(),
            log: self.log.clone(),
            adopt_only,
            auto_postcopy: params.mode == evac_model::Mode::Postcopy,
        };
        let (control, control_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (result_tx, result) = oneshot::channel();
        let task_shared = shared.clone();
        let wake = request.wake;
        tokio::spawn(async move {
            let result = run_attempt(ctx, control_rx, task_shared).await;
            let _ = result_tx.send(result);
            wake.wake();
        });
        LibvirtMigration {
            control,
            shared,
            result,
        }
    }
}

/// What an attempt's task needs.
struct AttemptCtx {
    source_gate: Gate,
    destination_gate: Gate,
    /// The two hosts as the inventory has them: what a failure is
    /// explained with ([`limits::explain`]).
    source_spec: HostSpec,
    destination_spec: HostSpec,
    source_uri: String,
    source_host: usize,
    /// Every destination host (name, uri): where a completed domain is
    /// looked for (an adopted migration may go to any of them).
    destinations: Vec<(String, String)>,
    request: MigrateRequest,
    migrated: Arc<Mutex<Vec<u64>>>,
    next_start: Arc<tokio::sync::Mutex<tokio::time::Instant>>,
    log: Log,
    adopt_only: bool,
    /// Mode postcopy: switch by itself once the first pass over memory is
    /// done (the model's one live round), as the QEMU backend does.
    auto_postcopy: bool,
}

/// A request to an attempt's task.
enum Control {
    Retune(Retune),
    Offline,
    /// Switch to postcopy; the answer says whether libvirt did.
    Postcopy(oneshot::Sender<Result<(), String>>),
    Cancel,
}

/// What the task last measured.
#[derive(Debug, Default, Clone, Copy)]
struct Shared {
    progress: Option<JobProgress>,
    rate: BitsPerSec,
    paused_by_us: bool,
    /// When we paused the guest: a guest we paused is down from then until
    /// it runs at its destination (libvirt counts only the final switch).
    paused_at: Option<Instant>,
    /// Switched to postcopy: the guest runs at the destination; no cancel.
    in_postcopy: bool,
}

enum AttemptResult {
    Completed {
        landed: Landed,
        bytes: Bytes,
        rounds: u32,
        downtime: Option<Duration>,
    },
    Failed {
        reason: String,
        bytes: Bytes,
    },
}

async fn run_attempt(
    mut ctx: AttemptCtx,
    mut control: mpsc::UnboundedReceiver<Control>,
    shared: Arc<Mutex<Shared>>,
) -> AttemptResult {
    // An adopted migration runs already: it waits for nothing.
    let (_slots, mut startup_slots) = if ctx.adopt_only {
        (Vec::new(), Vec::new())
    } else {
        match wait_for_slots(&mut ctx, &mut control, &shared).await {
            Ok(slots) => slots,
            Err(result) => return result,
        }
    };
    let (source, destination) = (ctx.source_spec.clone(), ctx.destination_spec.clone());
    let result = attempt(ctx, &mut control, &shared, &mut startup_slots).await;
    match result {
        AttemptResult::Failed { reason, bytes } => AttemptResult::Failed {
            reason: match limits::explain(&reason, &source, &destination) {
                Some(limit) => format!("{reason} ({limit})"),
                None => reason,
            },
            bytes,
        },
        done => done,
    }
}

/// Waits (reported as starting) until the attempt's hosts have a slot for
/// it: a migration out of its source, one into its destination, and where
/// ssh is in the way, a connection set up to each. Retunes and a switch to
/// offline that come meanwhile change what will be started; a cancel (or
/// the run loop dropping the handle) ends the attempt before it began.
async fn wait_for_slots(
    ctx: &mut AttemptCtx,
    control: &mut mpsc::UnboundedReceiver<Control>,
    shared: &Arc<Mutex<Shared>>,
) -> Result<(Vec<OwnedSemaphorePermit>, Vec<OwnedSemaphorePermit>), AttemptResult> {
    // Always the source's before the destination's: no two attempts can
    // each hold what the other waits for.
    let semaphores = |pick: fn(&Gate) -> &Option<Arc<Semaphore>>| -> Vec<Arc<Semaphore>> {
        [&ctx.source_gate, &ctx.destination_gate]
            .into_iter()
            .filter_map(|g| pick(g).clone())
            .collect()
    };
    let wanted = [semaphores(|g| &g.migrations), semaphores(|g| &g.startups)];
    let mut held: [Vec<OwnedSemaphorePermit>; 2] = [Vec::new(), Vec::new()];
    for (kind, list) in wanted.into_iter().enumerate() {
        for semaphore in list {
            let permit = loop {
                tokio::select! {
                    permit = semaphore.clone().acquire_owned() => break permit.expect("never closed"),
                    request = control.recv() => match request {
                        Some(Control::Retune(Retune::MaxBandwidth(b))) => {
                            ctx.request.max_bandwidth = b.map(BitsPerSec::to_bytes_per_sec);
                        }
                        Some(Control::Retune(Retune::DowntimeLimit(d))) => ctx.request.downtime_limit = d,
                        Some(Control::Retune(Retune::AutoConverge(on))) => ctx.request.auto_converge = on,
                        Some(Control::Offline) => {
                            ctx.request.offline = true;
                            let mut s = shared.lock().expect("not poisoned");
                            s.paused_by_us = true;
                            s.paused_at = Some(Instant::now());
                        }
                        Some(Control::Postcopy(reply)) => {
                            let _ = reply.send(Err("not started yet (waiting for a host's limit)".into()));
                        }
                        Some(Control::Cancel) | None => {
                            return Err(AttemptResult::Failed {
                                reason: "cancelled before it started (it was waiting for a host's limit)".into(),
                                bytes: Bytes::ZERO,
                            })
                        }
                    },
                }
            };
            held[kind].push(permit);
        }
    }
    let [slots, startups] = held;
    Ok((slots, startups))
}

/// The attempt proper, once its hosts have room for it.
async fn attempt(
    ctx: AttemptCtx,
    control: &mut mpsc::UnboundedReceiver<Control>,
    shared: &Arc<Mutex<Shared>>,
    startup_slots: &mut Vec<OwnedSemaphorePermit>,
) -> AttemptResult {
    let domain = ctx.request.domain.clone();
    // Why a switch to postcopy would be refused (`None`: ready for it).
    let mut postcopy_refused: Option<String> = None;
    {
        let mut next = ctx.next_start.lock().await;
        let at = (*next).max(tokio::time::Instant::now());
        *next = at + STAGGER;
        drop(next);
        tokio::time::sleep_until(at).await;
    }
    if ctx.request.offline {
        let mut s = shared.lock().expect("not poisoned");
        s.paused_by_us = true;
        s.paused_at = Some(Instant::now());
    }
    let started = if ctx.adopt_only {
        if let Some((landed, completed)) = find_running(&ctx, &domain).await {
            (ctx.log)(&format!(
                "{domain}: the earlier evac's migration completed: runs on {}",
                landed.host
            ));
            return AttemptResult::Completed {
                landed,
                bytes: Bytes(completed.map_or(0, |c| c.data_processed)),
                rounds: completed.map_or(0, |c| c.iteration as u32),
                downtime: completed.map(|c| Duration::from_millis(c.downtime_ms)),
            };
        }
        match client::Migration::find(&ctx.source_uri, &domain, CALL_TIMEOUT).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => {
                return AttemptResult::Failed {
                    reason: "the earlier evac's migration is not running (the domain is still on its source)"
                        .into(),
                    bytes: Bytes::ZERO,
                }
            }
            Err(e) => Err(e),
        }
    } else {
        let mut request = ctx.request.clone();
        if request.postcopy {
            match client::postcopy_obstacle(&ctx.source_uri, &domain, CALL_TIMEOUT).await {
                Ok(None) => {}
                Ok(Some(why)) if ctx.auto_postcopy => {
                    return AttemptResult::Failed {
                        reason: format!("postcopy refused: {why}; postcopy needs anonymous, private memory"),
                        bytes: Bytes::ZERO,
                    }
                }
                Ok(Some(why)) => {
                    // Started without it: a later switch is refused.
                    postcopy_refused = Some(format!("postcopy refused: {why}"));
                    request.postcopy = false;
                }
                Err(e) => {
                    postcopy_refused = Some(format!(
                        "postcopy refused: cannot read the domain's definition: {e}"
                    ));
                    request.postcopy = false;
                }
            }
        } else {
            postcopy_refused = Some(
                "postcopy unavailable: the migration was not started ready for it ([migration] allow_postcopy is off)"
                    .into(),
            );
        }
        client::Migration::start(&ctx.source_uri, request, CALL_TIMEOUT).await
    };
    let mut migration = match started {
        Ok(m) => m,
        Err(e) => {
            // Gone from its source: an earlier evac may have moved it.
            if let Some((landed, _)) = find_running(&ctx, &domain).await {
                (ctx.log)(&format!("{domain}: already runs on {}", landed.host));
                return AttemptResult::Completed {
                    landed,
                    bytes: Bytes::ZERO,
                    rounds: 0,
                    downtime: None,
                };
            }
            return AttemptResult::Failed {
                reason: format!("cannot start: {e}"),
                bytes: Bytes::ZERO,
            };
        }
    };
    if migration.adopted() {
        (ctx.log)(&format!("{domain}: adopted the migration already running"));
    }
    let mut cancelled = false;
    let mut counted = 0u64;
    let mut last: Option<(Instant, u64)> = None;
    let mut ticker = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            request = control.recv() => match request {
                Some(Control::Retune(change)) => {
                    let r = match change {
                        Retune::MaxBandwidth(b) => {
                            migration.set_max_speed(b.map(BitsPerSec::to_bytes_per_sec), CALL_TIMEOUT).await
                        }
                        Retune::DowntimeLimit(d) => migration.set_max_downtime(d, CALL_TIMEOUT).await,
                        Retune::AutoConverge(_) => {
                            (ctx.log)(&format!("{domain}: auto-converge is fixed when a libvirt migration starts"));
                            Ok(())
                        }
                    };
                    if let Err(e) = r {
                        (ctx.log)(&format!("{domain}: retune {change:?}: {e}"));
                    }
                }
                Some(Control::Offline) => match migration.suspend(CALL_TIMEOUT).await {
                    Ok(()) => {
                        let mut s = shared.lock().expect("not poisoned");
                        s.paused_by_us = true;
                        s.paused_at = Some(Instant::now());
                    }
                    Err(e) => (ctx.log)(&format!("{domain}: pausing for offline: {e}")),
                },
                Some(Control::Postcopy(reply)) => {
                    let _ = reply.send(switch_to_postcopy(&migration, postcopy_refused.as_deref(), shared).await);
                }
                Some(Control::Cancel) => {
                    cancelled = true;
                    if let Err(e) = migration.abort(CALL_TIMEOUT).await {
                        (ctx.log)(&format!("{domain}: abort: {e}"));
                    }
                }
                // The handle is gone: the loop no longer wants this one.
                None => {
                    cancelled = true;
                    let _ = migration.abort(CALL_TIMEOUT).await;
                    let _ = migration.wait(Duration::from_secs(60)).await;
                    break;
                }
            },
            _ = ticker.tick() => {
                if migration.poll_done().is_some() {
                    break;
                }
                if let Ok(p) = migration.progress(CALL_TIMEOUT).await {
                    if p.active {
                        let now = Instant::now();
                        let rate = match last {
                            Some((t, b)) if now > t => {
                                BitsPerSec(p.processed.0.saturating_sub(b) as f64 * 8.0 / (now - t).as_secs_f64())
                            }
                            _ => BitsPerSec(0.0),
                        };
                        last = Some((now, p.processed.0));
                        count(&ctx, &mut counted, p.processed.0);
                        if p.total.0 > 0 {
                            // Bytes flow: its ssh connections are up.
                            startup_slots.clear();
                        }
                        let switch_now = {
                            let mut s = shared.lock().expect("not poisoned");
                            s.progress = Some(p);
                            s.rate = rate;
                            // The first pass over memory is done: libvirt
                            // counts iterations from 1.
                            ctx.auto_postcopy && !s.in_postcopy && p.iteration >= 2
                        };
                        if switch_now {
                            if let Err(e) = switch_to_postcopy(&migration, postcopy_refused.as_deref(), shared).await {
                                (ctx.log)(&format!("{domain}: switching to postcopy: {e}"));
                            }
                        }
                    }
                }
            }
        }
    }
    let outcome = migration.wait(Duration::from_secs(5)).await;
    let progress = shared.lock().expect("not poisoned").progress.unwrap_or_default();
    let (paused_by_us, paused_at) = {
        let s = shared.lock().expect("not poisoned");
        (s.paused_by_us, s.paused_at)
    };
    match outcome {
        Ok(()) => match find_running(&ctx, &domain).await {
            Some((landed, completed)) => {
                // The destination's record of the migration; without it,
                // what was left at the last reading went at the end.
                let (bytes, rounds, downtime) = match completed {
                    Some(c) => (
                        c.data_processed,
                        c.iteration.max(progress.iteration),
                        Some(Duration::from_millis(c.downtime_ms)),
                    ),
                    None => (
                        progress.processed.0 + progress.remaining.0,
                        progress.iteration,
                        None,
                    ),
                };
                count(&ctx, &mut counted, bytes);
                let mut downtime = downtime;
                if paused_by_us {
                    resume_at(&ctx, &landed).await;
                    downtime = paused_at.map(|t| t.elapsed()).or(downtime);
                }
                AttemptResult::Completed {
                    landed,
                    bytes: Bytes(bytes),
                    rounds: rounds as u32,
                    downtime,
                }
            }
            None => AttemptResult::Failed {
                reason: "libvirt reported success but no destination runs the domain".into(),
                bytes: progress.processed,
            },
        },
        Err(e) => {
            if paused_by_us {
                if let Err(e) = migration.resume_if_paused(CALL_TIMEOUT).await {
                    (ctx.log)(&format!("{domain}: resuming on its source: {e}"));
                }
            }
            AttemptResult::Failed {
                reason: if cancelled {
                    "cancelled".into()
                } else {
                    e.to_string()
                },
                bytes: progress.processed,
            }
        }
    }
}

/// Switches `migration` to postcopy unless `refused` says why it cannot;
/// from then on the guest runs at its destination.
async fn switch_to_postcopy(
    migration: &client::Migration,
    refused: Option<&str>,
    shared: &Arc<Mutex<Shared>>,
) -> Result<(), String> {
    if let Some(why) = refused {
        return Err(why.to_owned());
    }
    if shared.lock().expect("not poisoned").in_postcopy {
        return Ok(());
    }
    migration
        .start_postcopy(CALL_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    shared.lock().expect("not poisoned").in_postcopy = true;
    Ok(())
}

/// Adds what this attempt sent since it was last counted to its source
/// host's migration bytes.
fn count(ctx: &AttemptCtx, counted: &mut u64, processed: u64) {
    if processed > *counted {
        ctx.migrated.lock().expect("not poisoned")[ctx.source_host] += processed - *counted;
        *counted = processed;
    }
}

/// The destination host `domain` runs on (running or paused), if any,
/// with the statistics of its last completed job there (the migration).
async fn find_running(ctx: &AttemptCtx, domain: &str) -> Option<(Landed, Option<crate::raw::JobStats>)> {
    for (name, uri) in &ctx.destinations {
        let uri = uri.clone();
        let d = domain.to_owned();
        let found = client::call(CALL_TIMEOUT, move || {
            let conn = Conn::open_blocking(&uri)?;
            match virt::domain::Domain::lookup_by_name(&conn.0, &d) {
                Ok(dom) if dom.is_active().unwrap_or(false) => {
                    Ok(Some(crate::raw::completed_job_stats(&dom).ok()))
                }
                _ => Ok(None),
            }
        })
        .await;
        if let Ok(Some(stats)) = found {
            let landed = Landed {
                host: name.clone(),
                domain: domain.to_owned(),
            };
            return Some((landed, stats.filter(|s| s.data_processed > 0)));
        }
    }
    None
}

/// Resumes at its destination a guest we paused (offline), which libvirt
/// leaves paused there.
async fn resume_at(ctx: &AttemptCtx, landed: &Landed) {
    let Some((_, uri)) = ctx.destinations.iter().find(|(n, _)| *n == landed.host) else {
        return;
    };
    let uri = uri.clone();
    let d = landed.domain.clone();
    let r: Result<(), ClientError> = client::call(CALL_TIMEOUT, move || {
        let conn = Conn::open_blocking(&uri)?;
        let dom = virt::domain::Domain::lookup_by_name(&conn.0, &d)?;
        if let Ok((state, _)) = dom.get_state() {
            if state == virt::sys::VIR_DOMAIN_PAUSED {
                dom.resume()?;
            }
        }
        Ok(())
    })
    .await;
    if let Err(e) = r {
        (ctx.log)(&format!("{}: resuming at {}: {e}", landed.domain, landed.host));
    }
}

/// One attempt in flight: its task's control channel and result.
pub struct LibvirtMigration {
    control: mpsc::UnboundedSender<Control>,
    shared: Arc<Mutex<Shared>>,
    result: oneshot::Receiver<AttemptResult>,
}

impl evac_run::Migration for LibvirtMigration {
    type Landed = Landed;

    async fn observe(&mut self) -> Result<Observed<Landed>, String> {
        match self.result.try_recv() {
            Ok(AttemptResult::Completed {
                landed,
                bytes,
                rounds,
                downtime,
            }) => {
                return Ok(Observed::Completed(Completion {
                    bytes_sent: bytes,
                    rounds: rounds.max(1),
                    downtime,
                    landed,
                }))
            }
            Ok(AttemptResult::Failed { reason, bytes }) => {
                return Ok(Observed::Failed(Failure {
                    reason,
                    bytes_sent: bytes,
                }))
            }
            Err(oneshot::error::TryRecvError::Closed) => {
                return Ok(Observed::Failed(Failure {
                    reason: "the migration task ended without a result".into(),
                    bytes_sent: Bytes::ZERO,
                }))
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let s = *self.shared.lock().expect("not poisoned");
        let Some(p) = s.progress.filter(|p| p.total.0 > 0) else {
            return Ok(Observed::Starting);
        };
        let phase = if s.in_postcopy {
            Phase::Postcopy
        } else if s.paused_by_us {
            Phase::Offline
        } else {
            Phase::Precopy
        };
        Ok(Observed::Running(Progress {
            phase,
            round: (p.iteration as u32).max(1),
            bytes_sent: p.processed,
            bytes_remaining: p.remaining,
            rate: s.rate,
            dirty_rate: p.dirty_rate,
        }))
    }

    async fn retune(&mut self, change: Retune) -> Result<(), String> {
        let _ = self.control.send(Control::Retune(change));
        Ok(())
    }

    async fn switch_to_offline(&mut self) -> Result<(), String> {
        let _ = self.control.send(Control::Offline);
        Ok(())
    }

    async fn switch_to_postcopy(&mut self) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        let _ = self.control.send(Control::Postcopy(reply));
        match tokio::time::timeout(CALL_TIMEOUT + POLL, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the migration ended before it could switch".into()),
            Err(_) => Err(format!("no answer within {} s", (CALL_TIMEOUT + POLL).as_secs())),
        }
    }

    async fn cancel(&mut self) -> Result<(), String> {
        if self.shared.lock().expect("not poisoned").in_postcopy {
            return Err("in postcopy: the guest runs at its destination and cannot go back".into());
        }
        let _ = self.control.send(Control::Cancel);
        Ok(())
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
