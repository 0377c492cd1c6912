//! One migration in flight ([`Migration`]): its own connection to the
//! source, the thread blocked in the migrate call, its end ([`Ended`]), and
//! what is asked of it meanwhile (speed, downtime, postcopy, cancel, its
//! progress); a job left by an earlier run, adopted.

use std::sync::Arc;
use std::time::Duration;

use evac_model::BytesPerSec;
use virt::domain::Domain;

use super::job::{job_progress, JobProgress};
use super::request::{explain_tls_failure, mib_per_sec, MigrateRequest};
use super::{call, connect, on_domain, on_domain_while, ClientError, Conn};

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
        // Paused only now, after every call that may fail before the
        // migration starts: a failure above leaves the guest running.
        if request.offline {
            let dom = dom.clone();
            call(timeout, move || Ok(dom.suspend()?)).await?;
        }
        let paused = request.offline.then(|| dom.clone());
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
                .map_err(|e| {
                    // The guest we paused must not stay paused where it is.
                    if let Some(dom) = &paused {
                        let _ = dom.resume();
                    }
                    ClientError::Libvirt(format!("cannot start a thread: {e}"))
                })?;
        }
        Ok(Migration::handle(name, conn, dom, rx, ended, false))
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
        Migration::handle(name, conn, dom, rx, ended, true)
    }

    /// The handle of the job on `dom` whose migrate call (or, `adopted`,
    /// whose end) reports to `done` and `ended`. An adopted job streams
    /// already: what is set on it applies at once, nothing is kept for later.
    fn handle(
        domain: String,
        conn: Arc<Conn>,
        dom: Arc<Domain>,
        done: tokio::sync::oneshot::Receiver<Result<(), ClientError>>,
        ended: Ended,
        adopted: bool,
    ) -> Migration {
        Migration {
            domain,
            conn,
            dom,
            done,
            result: None,
            ended,
            pending: Arc::new(std::sync::Mutex::new(Pending {
                streaming: adopted,
                ..Pending::default()
            })),
            adopted,
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
        let mib = mib_per_sec(rate);
        self.set_knob(mib, |p| &mut p.speed_mib, Domain::migrate_set_max_speed, timeout)
            .await
    }

    /// Sets the longest pause precopy may end with.
    pub async fn set_max_downtime(&self, limit: Duration, timeout: Duration) -> Result<(), ClientError> {
        let ms = (limit.as_millis() as u64).max(1);
        self.set_knob(
            ms,
            |p| &mut p.downtime_ms,
            Domain::migrate_set_max_downtime,
            timeout,
        )
        .await
    }

    /// Sets a knob of the job to `value` (`set`: libvirt's call for it),
    /// kept in `slot` of [`Pending`] while the job is still in its setup
    /// phase, to be applied again once data flows.
    async fn set_knob(
        &self,
        value: u64,
        slot: fn(&mut Pending) -> &mut Option<u64>,
        set: fn(&Domain, u64, u32) -> Result<u32, virt::error::Error>,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let dom = self.dom.clone();
        {
            let mut p = self.pending.lock().expect("not poisoned");
            if !p.streaming {
                *slot(&mut p) = Some(value);
            }
        }
        call(timeout, move || {
            Ok(on_domain(&dom, |d| set(d, value, 0)).map(|_| ())?)
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
