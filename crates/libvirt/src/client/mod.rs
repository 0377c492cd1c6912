//! The libvirt client layer: every call the backend makes, each bounded by a
//! timeout.
//!
//! libvirt's client library blocks, so every call runs on a blocking thread
//! and is awaited with a tokio timeout. A call that times out leaves its
//! thread behind until libvirt returns (libvirt's own RPC keeps it finite);
//! the caller goes on. One connection serves only `max_client_requests`
//! (default 5) calls at once and a peer-to-peer migrate call holds one for
//! its whole length, so each migration in flight gets a [`Conn`] of its own.
//!
//! This module holds the connection and the bounded call; beside it,
//! `domain` (what is read of the fleet), `request` (what a migration is
//! asked to do, as libvirt's flags and parameters), `migration` (one
//! migration in flight) and `job` (libvirt's job statistics in evac's units).

use std::sync::Arc;
use std::time::Duration;

use virt::connect::Connect;
use virt::domain::Domain;

mod domain;
mod job;
mod migration;
mod request;

pub use domain::{dirty_rate, guests_tx, is_q35, peek, postcopy_obstacle, running_domains, DomainFacts};
pub use job::{completed_migration, CompletedMigration, JobProgress};
pub use migration::{Ended, Migration};
pub use request::{mib_per_sec, MigrateRequest};

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
