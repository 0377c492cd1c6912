//! The libvirt client layer: every call the backend makes, each bounded by a
//! timeout.
//!
//! libvirt's client library blocks, so every call runs on a blocking thread
//! and is awaited with a tokio timeout. A call that times out leaves its
//! thread behind until libvirt returns (libvirt's own RPC keeps it finite);
//! the caller goes on. One connection serves only `max_client_requests`
//! (default 5) calls at once and a peer-to-peer migrate call holds one for
//! its whole length, so each migration in flight gets a [`Conn`] of its own.

use std::sync::Arc;
use std::time::Duration;

use evac_model::{Bytes, BytesPerSec};
use virt::connect::Connect;
use virt::domain::{Domain, MigrateParameters};

/// Why a libvirt call did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Libvirt(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Refused(String),
}

impl From<virt::error::Error> for ClientError {
    fn from(e: virt::error::Error) -> Self {
        ClientError::Libvirt(e.message().to_owned())
    }
}

/// A libvirt connection, closed when dropped (virt 0.4's `Connect` is not).
#[derive(Debug)]
pub struct Conn(pub Connect);

impl Conn {
    /// Opens `uri` on this thread (blocking).
    pub fn open_blocking(uri: &str) -> Result<Conn, virt::error::Error> {
        // libvirt prints every error on stderr by default; ours are
        // returned and reported where they matter.
        static QUIET: std::sync::Once = std::sync::Once::new();
        QUIET.call_once(virt::error::clear_error_callback);
        Connect::open(Some(uri)).map(Conn)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.0.close();
    }
}

/// Runs `f` on a fresh thread and waits at most `timeout` (for synchronous
/// callers such as the lab).
pub fn blocking<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> Result<T, virt::error::Error> + Send + 'static,
) -> Result<T, ClientError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => r.map_err(ClientError::from),
        Err(_) => Err(ClientError::Timeout(timeout)),
    }
}

/// Runs `f` on tokio's blocking pool and awaits it at most `timeout`.
pub async fn call<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ClientError> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(ClientError::Libvirt(format!("libvirt call panicked: {join}"))),
        Err(_) => Err(ClientError::Timeout(timeout)),
    }
}

/// Calls `f` on `dom`, again (up to 30 times, 100 ms apart) while libvirt
/// says the domain does not exist: on the lab's loaded machine the source
/// daemon answered "Domain not found" for a domain in the middle of its
/// migration, and the same call succeeded a moment later.
pub fn on_domain<T>(
    dom: &Domain,
    f: impl Fn(&Domain) -> Result<T, virt::error::Error>,
) -> Result<T, virt::error::Error> {
    on_domain_while(dom, f, || true)
}

/// [`on_domain`], trying again only while `worth_it()`: once a migrate
/// call has returned, a domain gone from its source has moved, and waiting
/// 3 s more for it there only delays seeing the migration's end (it did,
/// by 2.9 s a migration, before this check: docs/libvirt.md).
pub fn on_domain_while<T>(
    dom: &Domain,
    f: impl Fn(&Domain) -> Result<T, virt::error::Error>,
    worth_it: impl Fn() -> bool,
) -> Result<T, virt::error::Error> {
    let mut tries = 0;
    loop {
        match f(dom) {
            Err(e) if e.code() == virt::error::ErrorNumber::NoDomain && tries < 29 && worth_it() => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return r,
        }
    }
}

/// Connects to `uri` and returns the host's name: proof the daemon answers.
pub fn probe(uri: &str, timeout: Duration) -> Result<String, ClientError> {
    let uri = uri.to_owned();
    blocking(timeout, move || Conn::open_blocking(&uri)?.0.get_hostname())
}

/// Opens a connection, bounded by `timeout`.
pub async fn connect(uri: &str, timeout: Duration) -> Result<Arc<Conn>, ClientError> {
    let owned = uri.to_owned();
    call(timeout, move || Ok(Arc::new(Conn::open_blocking(&owned)?)))
        .await
        .map_err(|e| ClientError::Libvirt(format!("cannot connect to {uri}: {e}")))
}

/// A domain as the backend needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainFacts {
    pub name: String,
    pub memory: Bytes,
    /// Disks backed by something on the host itself (see
    /// [`crate::xml::devices`]).
    pub local_disks: Vec<crate::xml::LocalDisk>,
    /// The host storage those disks occupy (libvirt's block allocation):
    /// what a non-shared-disk migration copies.
    pub local_disk_bytes: Bytes,
    /// The host-side device names of its network interfaces.
    pub interfaces: Vec<String>,
    /// Whether a job (a migration) is running on it now.
    pub job_running: bool,
}

/// Why domain `domain` of the daemon at `uri` cannot be moved by postcopy,
/// if it cannot ([`crate::xml::postcopy_obstacle`] of its definition).
pub async fn postcopy_obstacle(
    uri: &str,
    domain: &str,
    timeout: Duration,
) -> Result<Option<String>, ClientError> {
    let (uri, domain) = (uri.to_owned(), domain.to_owned());
    let xml = call(timeout, move || {
        let conn = Conn::open_blocking(&uri)?;
        let dom = Domain::lookup_by_name(&conn.0, &domain)?;
        Ok(dom.get_xml_desc(0)?)
    })
    .await?;
    crate::xml::postcopy_obstacle(&xml).map_err(ClientError::Libvirt)
}

/// The running domains of the host at `conn`.
pub async fn running_domains(
    conn: &Arc<Conn>,
    shared_storage: &[String],
    timeout: Duration,
) -> Result<Vec<DomainFacts>, ClientError> {
    let conn = conn.clone();
    let shared = shared_storage.to_vec();
    call(timeout, move || {
        let doms = conn
            .0
            .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)?;
        let mut out = Vec::new();
        for dom in doms {
            let name = dom.get_name()?;
            let info = dom.get_info()?;
            let xml = dom.get_xml_desc(0)?;
            let (local_disks, interfaces) = crate::xml::devices(&xml, &shared)
                .map_err(|e| ClientError::Libvirt(format!("domain {name}: {e}")))?;
            let mut local_disk_bytes = Bytes::ZERO;
            for disk in &local_disks {
                let info = dom
                    .get_block_info(&disk.target, 0)
                    .map_err(|e| ClientError::Libvirt(format!("domain {name}: disk {disk}: {e}")))?;
                local_disk_bytes += Bytes(info.allocation);
            }
            let job = crate::raw::job_stats(&dom)
                .map(|j| j.job_type != 0)
                .unwrap_or(false);
            out.push(DomainFacts {
                name,
                // libvirt reports KiB.
                memory: Bytes(info.max_mem * 1024),
                local_disks,
                local_disk_bytes,
                interfaces,
                job_running: job,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    })
    .await
}

/// Per domain of `domains` (name, interface devices) still on the host at
/// `conn`, the bytes its interfaces transmitted (a domain gone meanwhile is
/// left out).
pub async fn guests_tx(
    conn: &Arc<Conn>,
    domains: Vec<(String, Vec<String>)>,
    timeout: Duration,
) -> Result<Vec<(String, Bytes)>, ClientError> {
    let conn = conn.clone();
    call(timeout, move || {
        let mut out = Vec::new();
        for (name, ifaces) in domains {
            let Ok(dom) = Domain::lookup_by_name(&conn.0, &name) else {
                continue;
            };
            let mut sum = 0u64;
            for iface in ifaces {
                if let Ok(stats) = dom.interface_stats(&iface) {
                    // libvirt reports a tap's counters as the guest sees
                    // them: tx is what the guest sent.
                    sum = sum.saturating_add(stats.tx_bytes.max(0) as u64);
                }
            }
            out.push((name, Bytes(sum)));
        }
        Ok(out)
    })
    .await
}

/// The pages `domain` on the host at `conn` dirties over `seconds`, in
/// whole MiB/s, as QEMU counts them (dirty-bitmap mode, every page written,
/// through `virDomainStartDirtyRateCalc` and the domain's `dirtyrate.*`
/// statistics). Each libvirt call is bounded by `timeout`; the result must
/// come within `timeout` of the sample's end.
pub async fn dirty_rate(
    conn: &Arc<Conn>,
    domain: &str,
    seconds: u32,
    timeout: Duration,
) -> Result<u64, ClientError> {
    let lookup = {
        let (conn, domain) = (conn.clone(), domain.to_owned());
        move || Domain::lookup_by_name(&conn.0, &domain)
    };
    let start = lookup.clone();
    // QEMU marks the calculation as measuring before the call returns: a
    // status of measured read after the sample is this sample's.
    call(timeout, move || {
        Ok(crate::raw::start_dirty_rate_calc(&start()?, seconds)?)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(seconds.into())).await;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let read = lookup.clone();
        let rate = call(timeout, move || Ok(crate::raw::dirty_rate(&read()?)?)).await?;
        if rate.status == virt::sys::VIR_DOMAIN_DIRTYRATE_MEASURED as i32 {
            return Ok(rate.mib_per_second);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ClientError::Timeout(timeout));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `size` bytes (at most 64 KiB) of the guest-physical memory of `domain`
/// on the host at `conn`, from `start` (`virDomainMemoryPeek`): `evac plan`
/// samples what the guest's memory holds. Read while the guest runs.
pub async fn peek(
    conn: &Arc<Conn>,
    domain: &str,
    start: u64,
    size: usize,
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let (conn, domain) = (conn.clone(), domain.to_owned());
    call(timeout, move || {
        let dom = Domain::lookup_by_name(&conn.0, &domain)?;
        Ok(crate::raw::memory_peek(&dom, start, size)?)
    })
    .await
}

/// Whether `domain` on the host at `conn` is a `q35` machine (else `pc`):
/// where QEMU maps its RAM above 4 GiB depends on it.
pub async fn is_q35(conn: &Arc<Conn>, domain: &str, timeout: Duration) -> Result<bool, ClientError> {
    let (conn, domain) = (conn.clone(), domain.to_owned());
    call(timeout, move || {
        let dom = Domain::lookup_by_name(&conn.0, &domain)?;
        let xml = dom.get_xml_desc(0)?;
        Ok(crate::xml::machine(&xml).is_some_and(|m| m.contains("q35")))
    })
    .await
}

/// libvirt's record of a domain's last completed migration, read on the
/// host it arrived at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompletedMigration {
    pub bytes: Bytes,
    pub elapsed: Duration,
    pub downtime: Duration,
}

/// The completed-job statistics of `domain` on the host at `uri`.
pub async fn completed_migration(
    uri: &str,
    domain: &str,
    timeout: Duration,
) -> Result<CompletedMigration, ClientError> {
    let (uri, domain) = (uri.to_owned(), domain.to_owned());
    call(timeout, move || {
        let conn = Conn::open_blocking(&uri)?;
        let dom = Domain::lookup_by_name(&conn.0, &domain)?;
        let s = crate::raw::completed_job_stats(&dom)?;
        Ok(CompletedMigration {
            bytes: Bytes(s.data_processed),
            elapsed: Duration::from_millis(s.time_elapsed_ms),
            downtime: Duration::from_millis(s.downtime_ms),
        })
    })
    .await
}

/// What a migration is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrateRequest {
    pub domain: String,
    /// The destination daemon, as the source daemon reaches it (p2p).
    pub destination_uri: String,
    /// Where the migration stream goes: `tcp://<migration_address>`.
    pub migration_uri: Option<String>,
    pub max_bandwidth: Option<BytesPerSec>,
    pub parallel_connections: u32,
    pub auto_converge: bool,
    pub downtime_limit: Duration,
    pub tls: bool,
    /// The name the destination's certificate must carry (TLS), when not
    /// the migration URI's host.
    pub tls_destination: Option<String>,
    /// Copy local disks (libvirt's non-shared-disk migration).
    pub copy_storage: bool,
    /// Pause the guest first (offline migration).
    pub offline: bool,
    /// Ready for postcopy (`VIR_MIGRATE_POSTCOPY`): a switch may be asked
    /// for later ([`Migration::start_postcopy`]).
    pub postcopy: bool,
}

/// A failed TLS migration's error with what to check. libvirt returns
/// the destination's side ("Cannot read from TLS channel"); the source
/// QEMU's reason (e.g. "Certificate does not match the hostname ...") is
/// only in the domain's log on the source host (libvirt 9.0 keeps no job
/// statistics for the failed migration).
fn explain_tls_failure(request: &MigrateRequest, message: String) -> String {
    let lower = message.to_lowercase();
    if !(lower.contains("certificate") || lower.contains("tls")) {
        return message;
    }
    let name = request
        .tls_destination
        .clone()
        .or_else(|| {
            request
                .migration_uri
                .as_deref()
                .map(|uri| uri.trim_start_matches("tcp://").to_owned())
        })
        .unwrap_or_else(|| "the destination's host name".to_owned());
    format!(
        "{message} [TLS session failed: the source QEMU's log on its host \
         (/var/log/libvirt/qemu/{}.log) says why; check that the destination's server \
         certificate names `{name}` (its `tls_name`, else its `migration_address`) and that \
         both hosts' certificates (qemu.conf `migrate_tls_x509_cert_dir`) are signed by a CA \
         the other trusts]",
        request.domain
    )
}

/// "Unlimited", MiB/s: 1 TB/s, as the QEMU backend has it. (libvirt's own
/// maximum, `i64::MAX` bytes, was accepted by `virDomainMigrateSetMaxSpeed`
/// in the lab but left the old cap in force.)
const UNLIMITED_MIB_S: u64 = 1_000_000_000_000 / (1024 * 1024);

/// A rate in the whole MiB/s libvirt takes (at least 1; `None` unlimited).
pub fn mib_per_sec(rate: Option<BytesPerSec>) -> u64 {
    match rate {
        None => UNLIMITED_MIB_S,
        Some(r) if !r.0.is_finite() => UNLIMITED_MIB_S,
        Some(r) => ((r.0 / 1_048_576.0).round() as u64).clamp(1, UNLIMITED_MIB_S),
    }
}

impl MigrateRequest {
    /// The migrate flags.
    pub fn flags(&self) -> u32 {
        use virt::sys::*;
        let mut flags = VIR_MIGRATE_PEER2PEER | VIR_MIGRATE_PERSIST_DEST | VIR_MIGRATE_UNDEFINE_SOURCE;
        if !self.offline {
            flags |= VIR_MIGRATE_LIVE;
        }
        if self.auto_converge {
            flags |= VIR_MIGRATE_AUTO_CONVERGE;
        }
        if self.parallel_connections > 1 {
            flags |= VIR_MIGRATE_PARALLEL;
        }
        if self.tls {
            flags |= VIR_MIGRATE_TLS;
        }
        if self.copy_storage {
            flags |= VIR_MIGRATE_NON_SHARED_DISK;
        }
        if self.postcopy {
            flags |= VIR_MIGRATE_POSTCOPY;
        }
        flags
    }

    /// The migrate parameters.
    pub fn parameters(&self) -> MigrateParameters {
        MigrateParameters {
            bandwidth: self.max_bandwidth.map(|r| mib_per_sec(Some(r))),
            parallel_connections: (self.parallel_connections > 1).then_some(self.parallel_connections as i32),
            uri: self.migration_uri.clone(),
            tls_destination: if self.tls {
                self.tls_destination.clone()
            } else {
                None
            },
            ..MigrateParameters::default()
        }
    }
}

/// Progress of a migration, from the source's job stats.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct JobProgress {
    /// Whether a job runs at all (false once it ended).
    pub active: bool,
    pub processed: Bytes,
    pub remaining: Bytes,
    pub total: Bytes,
    /// Bytes per second the guest dirties.
    pub dirty_rate: BytesPerSec,
    pub iteration: u64,
}

/// One migration in flight: its own connection to the source, the domain,
/// and the thread blocked in the migrate call.
pub struct Migration {
    pub domain: String,
    conn: Arc<Conn>,
    dom: Arc<Domain>,
    done: tokio::sync::oneshot::Receiver<Result<(), ClientError>>,
    result: Option<Result<(), ClientError>>,
    /// Set, and notified, as the migrate call returns (before its result
    /// is sent): the attempt sees the end at once, not at its next poll.
    ended: Ended,
    /// Knobs set while the job was still in its setup phase: libvirt
    /// accepts them then but QEMU's migration starts with the initial
    /// values, so they are applied again once data flows (seen in the lab).
    pending: Arc<std::sync::Mutex<Pending>>,
    adopted: bool,
}

/// The end of a migrate call (or of an adopted job): a flag for the
/// blocking threads and a notification for the attempt's task.
#[derive(Debug, Default, Clone)]
pub struct Ended {
    flag: Arc<std::sync::atomic::AtomicBool>,
    notify: Arc<tokio::sync::Notify>,
}

impl Ended {
    fn set(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        // A permit is kept if no one waits yet: the end is never missed.
        self.notify.notify_one();
    }

    /// Whether the call has returned.
    pub fn is_set(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once the call has returned (at once if it had).
    pub async fn wait(&self) {
        if !self.is_set() {
            self.notify.notified().await;
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    /// Whether data has been seen flowing (QEMU's migration runs).
    streaming: bool,
    speed_mib: Option<u64>,
    downtime_ms: Option<u64>,
}

impl std::fmt::Debug for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migration").field("domain", &self.domain).finish()
    }
}

impl Migration {
    /// Connects to the source (`source_uri`, a connection of its own) and
    /// starts the migration on a thread; returns at once (the migrate call
    /// runs on: [`Migration::wait`] and [`Migration::poll_done`] see its end).
    pub async fn start(
        source_uri: &str,
        request: MigrateRequest,
        timeout: Duration,
    ) -> Result<Migration, ClientError> {
        let conn = connect(source_uri, timeout).await?;
        let name = request.domain.clone();
        let dom = {
            let conn = conn.clone();
            let name = name.clone();
            call(timeout, move || {
                Ok(Arc::new(Domain::lookup_by_name(&conn.0, &name)?))
            })
            .await?
        };
        // A migration of this domain already runs (an earlier evac was
        // killed; libvirt goes on without its client): adopt it rather
        // than start a second one.
        let job = {
            let dom = dom.clone();
            call(timeout, move || Ok(on_domain(&dom, crate::raw::job_stats)?)).await?
        };
        if job.job_type != 0 {
            return Ok(Migration::adopt(conn, dom, name));
        }
        if request.offline {
            let dom = dom.clone();
            call(timeout, move || Ok(dom.suspend()?)).await?;
        }
        // The downtime limit is no migrate parameter. Set before the
        // migration, QEMU keeps it for the migration libvirt starts (set
        // during the job's setup phase it waits for libvirt's job lock).
        {
            let dom = dom.clone();
            let ms = (request.downtime_limit.as_millis() as u64).max(1);
            // The cap too: the `bandwidth` migrate parameter alone was
            // sometimes not applied in the lab (the migration ran uncapped);
            // a domain's max speed set before the migration is the one it
            // starts with.
            let mib = mib_per_sec(request.max_bandwidth);
            call(timeout, move || {
                dom.migrate_set_max_speed(mib, 0)?;
                Ok(dom.migrate_set_max_downtime(ms, 0).map(|_| ())?)
            })
            .await?;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ended = Ended::default();
        {
            let dom = dom.clone();
            let conn = conn.clone();
            let request = request.clone();
            let ended = ended.clone();
            std::thread::Builder::new()
                .name(format!("migrate-{name}"))
                .spawn(move || {
                    let result = dom
                        .migrate_to_uri3(
                            Some(&request.destination_uri),
                            request.parameters(),
                            request.flags(),
                        )
                        .map_err(ClientError::from);
                    let result = match result {
                        Err(ClientError::Libvirt(message)) if request.tls => {
                            Err(ClientError::Libvirt(explain_tls_failure(&request, message)))
                        }
                        other => other,
                    };
                    // The guest we paused must not stay paused where it is.
                    if result.is_err() && request.offline {
                        let _ = dom.resume();
                    }
                    drop(conn);
                    let _ = tx.send(result);
                    ended.set();
                })
                .map_err(|e| ClientError::Libvirt(format!("cannot start a thread: {e}")))?;
        }
        let migration = Migration {
            domain: name,
            conn,
            dom,
            done: rx,
            result: None,
            ended,
            pending: Arc::new(std::sync::Mutex::new(Pending::default())),
            adopted: false,
        };
        Ok(migration)
    }

    /// The migration of `domain` running now on the host at `source_uri`,
    /// adopted; `None` when no job runs on it (it never began, or ended).
    pub async fn find(
        source_uri: &str,
        domain: &str,
        timeout: Duration,
    ) -> Result<Option<Migration>, ClientError> {
        let conn = connect(source_uri, timeout).await?;
        let name = domain.to_owned();
        let found = {
            let conn = conn.clone();
            let name = name.clone();
            call(timeout, move || {
                let dom = match Domain::lookup_by_name(&conn.0, &name) {
                    Ok(dom) => dom,
                    Err(e) if e.code() == virt::error::ErrorNumber::NoDomain => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let job = on_domain(&dom, crate::raw::job_stats)?;
                Ok((job.job_type != 0).then(|| Arc::new(dom)))
            })
            .await?
        };
        Ok(found.map(|dom| Migration::adopt(conn, dom, name)))
    }

    /// Adopts the migration already running on `dom` (started by an
    /// earlier evac, which a p2p migration outlives): its end is seen when
    /// the job stops; the domain still running on the source means it
    /// failed.
    fn adopt(conn: Arc<Conn>, dom: Arc<Domain>, name: String) -> Migration {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ended = Ended::default();
        {
            let dom = dom.clone();
            let ended = ended.clone();
            std::thread::spawn(move || {
                loop {
                    match on_domain(&dom, crate::raw::job_stats) {
                        Ok(job) if job.job_type != 0 => std::thread::sleep(Duration::from_millis(200)),
                        _ => break,
                    }
                }
                let result = match dom.get_state() {
                    Ok((state, _))
                        if state == virt::sys::VIR_DOMAIN_RUNNING
                            || state == virt::sys::VIR_DOMAIN_PAUSED =>
                    {
                        Err(ClientError::Libvirt("the adopted migration failed".into()))
                    }
                    _ => Ok(()),
                };
                let _ = tx.send(result);
                ended.set();
            });
        }
        Migration {
            domain: name,
            conn,
            dom,
            done: rx,
            result: None,
            ended,
            pending: Arc::new(std::sync::Mutex::new(Pending {
                streaming: true,
                ..Pending::default()
            })),
            adopted: true,
        }
    }

    /// What says the migrate call returned (to await beside other work).
    pub fn ended(&self) -> Ended {
        self.ended.clone()
    }

    /// Whether this migration was found running rather than started.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The migration's end, once the migrate call returned.
    pub fn poll_done(&mut self) -> Option<&Result<(), ClientError>> {
        if self.result.is_none() {
            match self.done.try_recv() {
                Ok(r) => self.result = Some(r),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    self.result = Some(Err(ClientError::Libvirt("the migrate thread died".into())))
                }
            }
        }
        self.result.as_ref()
    }

    /// Waits for the end, at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Result<(), ClientError> {
        if self.result.is_none() {
            let r = tokio::time::timeout(timeout, &mut self.done)
                .await
                .map_err(|_| ClientError::Timeout(timeout))?;
            self.result =
                Some(r.unwrap_or_else(|_| Err(ClientError::Libvirt("the migrate thread died".into()))));
        }
        self.result.clone().expect("set above")
    }

    /// The job's progress: job stats only, so it answers while the job
    /// runs.
    ///
    /// Knobs set during the job's setup are applied again, on a thread of
    /// their own that this call does not wait for, once data flows: libvirt
    /// sometimes holds such a call until the migration ends (seen in the
    /// lab on a quiet machine, about one start in three: the call made as
    /// the first bytes moved waited 20 s, the whole migration), and
    /// progress must not wait with it.
    pub async fn progress(&self, timeout: Duration) -> Result<JobProgress, ClientError> {
        let dom = self.dom.clone();
        let ended = self.ended.clone();
        let progress = call(timeout, move || {
            Ok(job_progress(&on_domain_while(
                &dom,
                crate::raw::job_stats,
                || !ended.is_set(),
            )?))
        })
        .await?;
        if progress.active && progress.total.0 > 0 {
            let knobs = {
                let mut p = self.pending.lock().expect("not poisoned");
                std::mem::replace(
                    &mut *p,
                    Pending {
                        streaming: true,
                        ..Pending::default()
                    },
                )
            };
            if knobs.speed_mib.is_some() || knobs.downtime_ms.is_some() {
                let dom = self.dom.clone();
                // Detached: bounded by the migration itself (libvirt
                // answers, with an error if need be, once the job ends).
                std::thread::spawn(move || {
                    if let Some(mib) = knobs.speed_mib {
                        let _ = on_domain(&dom, |d| d.migrate_set_max_speed(mib, 0));
                    }
                    if let Some(ms) = knobs.downtime_ms {
                        let _ = on_domain(&dom, |d| d.migrate_set_max_downtime(ms, 0));
                    }
                });
            }
        }
        Ok(progress)
    }

    /// Caps the migration's rate (`None`: unlimited).
    pub async fn set_max_speed(
        &self,
        rate: Option<BytesPerSec>,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let dom = self.dom.clone();
        let mib = mib_per_sec(rate);
        {
            let mut p = self.pending.lock().expect("not poisoned");
            if !p.streaming {
                p.speed_mib = Some(mib);
            }
        }
        call(timeout, move || {
            Ok(on_domain(&dom, |d| d.migrate_set_max_speed(mib, 0)).map(|_| ())?)
        })
        .await
    }

    /// Sets the longest pause precopy may end with.
    pub async fn set_max_downtime(&self, limit: Duration, timeout: Duration) -> Result<(), ClientError> {
        let dom = self.dom.clone();
        let ms = (limit.as_millis() as u64).max(1);
        {
            let mut p = self.pending.lock().expect("not poisoned");
            if !p.streaming {
                p.downtime_ms = Some(ms);
            }
        }
        call(timeout, move || {
            Ok(on_domain(&dom, |d| d.migrate_set_max_downtime(ms, 0)).map(|_| ())?)
        })
        .await
    }

    /// The downtime limit in force.
    pub async fn max_downtime(&self, timeout: Duration) -> Result<Duration, ClientError> {
        let dom = self.dom.clone();
        call(timeout, move || {
            Ok(Duration::from_millis(on_domain(
                &dom,
                crate::raw::max_downtime_ms,
            )?))
        })
        .await
    }

    /// Pauses the guest: precopy ends as stop-and-copy. The guest resumes
    /// at the destination (libvirt resumes a live migration's guest there).
    pub async fn suspend(&self, timeout: Duration) -> Result<(), ClientError> {
        let dom = self.dom.clone();
        call(timeout, move || Ok(on_domain(&dom, |d| d.suspend()).map(|_| ())?)).await
    }

    /// Switches the running migration to postcopy
    /// (`virDomainMigrateStartPostCopy`): the guest resumes at the
    /// destination, its remaining pages following. Only for a migration
    /// started with [`MigrateRequest::postcopy`].
    pub async fn start_postcopy(&self, timeout: Duration) -> Result<(), ClientError> {
        let dom = self.dom.clone();
        call(timeout, move || Ok(crate::raw::start_postcopy(&dom)?)).await
    }

    /// Aborts the job: the domain keeps running on its source, the migrate
    /// call fails ("canceled by client").
    pub async fn abort(&self, timeout: Duration) -> Result<(), ClientError> {
        let dom = self.dom.clone();
        call(timeout, move || Ok(on_domain(&dom, crate::raw::abort_job)?)).await
    }

    /// Resumes the domain on its source if it is paused (after a failed
    /// migration of a guest we paused).
    pub async fn resume_if_paused(&self, timeout: Duration) -> Result<(), ClientError> {
        let dom = self.dom.clone();
        call(timeout, move || {
            if let Ok((state, _)) = dom.get_state() {
                if state == virt::sys::VIR_DOMAIN_PAUSED {
                    dom.resume()?;
                }
            }
            Ok(())
        })
        .await
    }

    /// The connection this migration uses.
    pub fn connection(&self) -> &Arc<Conn> {
        &self.conn
    }
}

fn job_progress(stats: &crate::raw::JobStats) -> JobProgress {
    let page = if stats.page_size == 0 {
        4096
    } else {
        stats.page_size
    };
    JobProgress {
        active: stats.job_type != 0,
        processed: Bytes(stats.data_processed),
        remaining: Bytes(stats.data_remaining),
        total: Bytes(stats.data_total),
        // libvirt reports pages per second.
        dirty_rate: BytesPerSec(stats.dirty_rate_pages as f64 * page as f64),
        iteration: stats.iteration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_round_to_whole_mib_per_second() {
        // 100 Mbit/s = 12.5e6 B/s = 11.92 MiB/s -> 12.
        assert_eq!(mib_per_sec(Some(BytesPerSec(12.5e6))), 12);
        assert_eq!(mib_per_sec(Some(BytesPerSec(1.0))), 1);
        assert_eq!(mib_per_sec(None), 953_674);
    }

    #[test]
    fn flags_follow_the_request() {
        use virt::sys::*;
        let mut r = MigrateRequest {
            postcopy: false,
            domain: "d".into(),
            destination_uri: "qemu+tcp://b/system".into(),
            migration_uri: Some("tcp://10.0.0.2".into()),
            max_bandwidth: None,
            parallel_connections: 1,
            auto_converge: false,
            downtime_limit: Duration::from_millis(300),
            tls: false,
            tls_destination: Some("b".into()),
            copy_storage: false,
            offline: false,
        };
        // live | p2p | persist_dest | undefine_source = 1 | 2 | 8 | 16.
        assert_eq!(r.flags(), 1 | 2 | 8 | 16);
        assert_eq!(r.parameters().tls_destination, None);
        r.tls = true;
        r.copy_storage = true;
        r.offline = true;
        r.parallel_connections = 4;
        assert_eq!(
            r.flags(),
            VIR_MIGRATE_PEER2PEER
                | VIR_MIGRATE_PERSIST_DEST
                | VIR_MIGRATE_UNDEFINE_SOURCE
                | VIR_MIGRATE_TLS
                | VIR_MIGRATE_NON_SHARED_DISK
                | VIR_MIGRATE_PARALLEL
        );
        assert_eq!(r.parameters().parallel_connections, Some(4));
        assert_eq!(r.parameters().tls_destination.as_deref(), Some("b"));
    }
}
