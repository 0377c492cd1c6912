//! # evac-qmp
//!
//! A small asynchronous client for QEMU's machine protocol (QMP), written by
//! hand for the handful of commands evac needs and tested against QEMU 7.2.
//!
//! - [`Qmp::connect`] opens a unix socket path (anything with a `/`, or a
//!   `unix:` prefix) or a TCP `host:port` (optionally `tcp:` prefixed), reads
//!   QEMU's greeting and negotiates capabilities (`qmp_capabilities`).
//! - [`Qmp::execute`] sends any command with JSON arguments and returns the
//!   `return` value. Commands carry an `id` and replies are matched to them,
//!   so a [`Qmp`] (cheap to clone) can be used from several tasks at once.
//!   Every command has a timeout ([`Qmp::set_timeout`], 10 s by default).
//! - Asynchronous events arrive as typed [`Event`]s on a broadcast channel:
//!   [`Qmp::events`] (the first call also gets every event since connect).
//! - Errors: QEMU's error replies are [`QmpError::Command`] with QEMU's
//!   `class` and `desc`; a closed socket (QEMU quit or died) is
//!   [`QmpError::Disconnected`] for the command in flight and every later one;
//!   [`Qmp::closed`] resolves when that happens.
//! - Limits, because the peer may be anything listening on that socket:
//!   connecting takes at most [`CONNECT_TIMEOUT`], the greeting and every
//!   reply at most their timeout, a line at most [`MAX_LINE`] (1 MiB, read
//!   in bounded chunks: a peer that never sends a newline is cut off, the
//!   connection then counts as closed), and an error quotes at most the
//!   first 80 characters of what the peer sent.
//! - Typed helpers for migration: [`Qmp::query_migrate`] ([`MigrationInfo`]),
//!   [`Qmp::query_status`], [`Qmp::migrate_set_capabilities`],
//!   [`Qmp::migrate_set_parameters`] (`max-bandwidth` is in **bytes** per
//!   second in QMP, `downtime-limit` in milliseconds), [`Qmp::migrate`],
//!   [`Qmp::migrate_incoming`], [`Qmp::migrate_cancel`], [`Qmp::stop`],
//!   [`Qmp::cont`], [`Qmp::quit`], [`Qmp::query_memory_size_summary`].
//!
//! On a destination, `migrate-incoming` may ask for `tcp:<addr>:0`; the port
//! QEMU bound is then in the `query-migrate` reply's `socket-address`
//! ([`MigrationInfo::listening_port`]).
//!
//! The reply types ignore unknown fields and map unknown enum values to an
//! `Other` variant, so a newer or older QEMU does not break parsing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), evac_qmp::QmpError> {
//! let qmp = evac_qmp::Qmp::connect("/run/evac/vm-1.qmp").await?;
//! let status = qmp.query_status().await?;
//! println!("{:?}", status.status);
//! let info = qmp.query_migrate().await?;
//! println!("{:?} {:?}", info.status, info.ram.map(|r| r.transferred));
//! # Ok(()) }
//! ```

mod types;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, oneshot, watch};

pub use types::*;

/// What can go wrong talking to QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("QMP I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The socket is closed: QEMU quit, crashed or was killed.
    #[error("QMP connection closed (QEMU quit or died)")]
    Disconnected,
    #[error("QMP command `{command}` got no reply within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    /// QEMU refused the command.
    #[error("QEMU error {class}: {desc}")]
    Command { class: String, desc: String },
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    #[error("unexpected QMP reply to `{command}`: {source}")]
    Decode {
        command: String,
        source: serde_json::Error,
    },
}

pub type Result<T, E = QmpError> = std::result::Result<T, E>;

type Pending = HashMap<u64, oneshot::Sender<Result<Value>>>;

struct Inner {
    writer: tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    pending: Mutex<Option<Pending>>,
    next_id: AtomicU64,
    events: broadcast::Sender<Event>,
    first_events: Mutex<Option<broadcast::Receiver<Event>>>,
    closed: watch::Receiver<bool>,
    timeout: Mutex<Duration>,
    peer_pid: Option<u32>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A QMP connection. Clones share the connection.
#[derive(Clone)]
pub struct Qmp {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("peer_pid", &self.inner.peer_pid)
            .finish()
    }
}

/// How long connecting and each command may take unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting to a QMP socket may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest line read from a peer: QEMU's replies are a few KiB; a peer
/// that sends more without a newline is cut off, never buffered for ever.
pub const MAX_LINE: usize = 1 << 20;

/// How much of what a peer sent an error quotes.
const EXCERPT: usize = 80;

/// At most [`EXCERPT`] characters of `text`, marked when cut.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text.to_owned(),
    }
}

/// Reads one line (without its newline) of at most [`MAX_LINE`] bytes;
/// `None` at the end of the stream.
async fn read_line<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(QmpError::Disconnected)
            };
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(at) => (&buf[..at], Some(at + 1)),
            None => (buf, None),
        };
        if line.len() + chunk.len() > MAX_LINE {
            line.extend_from_slice(&chunk[..EXCERPT.min(chunk.len())]);
            return Err(QmpError::Protocol(format!(
                "the peer sent a line longer than {MAX_LINE} bytes, starting `{}`",
                excerpt(&String::from_utf8_lossy(&line))
            )));
        }
        line.extend_from_slice(chunk);
        let used = done.unwrap_or(buf.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
    }
}

/// Where a QMP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QmpAddr {
    Unix(std::path::PathBuf),
    Tcp(String),
}

impl QmpAddr {
    /// `unix:PATH`, `tcp:HOST:PORT`, a path (contains `/` or has no port) or `HOST:PORT`.
    pub fn parse(text: &str) -> QmpAddr {
        if let Some(path) = text.strip_prefix("unix:") {
            return QmpAddr::Unix(path.into());
        }
        if let Some(addr) = text.strip_prefix("tcp:") {
            return QmpAddr::Tcp(addr.to_owned());
        }
        let is_tcp = !text.contains('/')
            && text
                .rsplit_once(':')
                .is_some_and(|(_, port)| !port.is_empty() && port.parse::<u16>().is_ok());
        if is_tcp {
            QmpAddr::Tcp(text.to_owned())
        } else {
            QmpAddr::Unix(text.into())
        }
    }
}

impl Qmp {
    /// Connects to `addr` (see [`QmpAddr::parse`]), reads the greeting and
    /// enters command mode.
    pub async fn connect(addr: &str) -> Result<Qmp> {
        let connect_err = |source| QmpError::Connect {
            addr: addr.to_owned(),
            source,
        };
        match QmpAddr::parse(addr) {
            QmpAddr::Unix(path) => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(&path))
                    .await
                    .map_err(|_| connect_err(std::io::ErrorKind::TimedOut.into()))?
                    .map_err(connect_err)?;
                let pid = stream
                    .peer_cred()
                    .ok()
                    .and_then(|c| c.pid())
                    .and_then(|p| u32::try_from(p).ok());
                let (r, w) = stream.into_split();
                Self::handshake(r, Box::new(w), pid).await
            }
            QmpAddr::Tcp(hostport) => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&hostport))
                    .await
                    .map_err(|_| connect_err(std::io::ErrorKind::TimedOut.into()))?
                    .map_err(connect_err)?;
                let (r, w) = stream.into_split();
                Self::handshake(r, Box::new(w), None).await
            }
        }
    }

    /// Keeps trying to connect until `deadline` passes (QEMU creates its
    /// socket a moment after it starts).
    pub async fn connect_retry(addr: &str, within: Duration) -> Result<Qmp> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match Self::connect(addr).await {
                Ok(qmp) => return Ok(qmp),
                Err(e @ QmpError::Connect { .. }) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn handshake<R>(
        read: R,
        write: Box<dyn AsyncWrite + Send + Unpin>,
        peer_pid: Option<u32>,
    ) -> Result<Qmp>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let mut lines = BufReader::new(read);
        let greeting = tokio::time::timeout(DEFAULT_TIMEOUT, read_line(&mut lines))
            .await
            .map_err(|_| QmpError::Timeout {
                command: "(greeting)".into(),
                timeout: DEFAULT_TIMEOUT,
            })??
            .ok_or(QmpError::Disconnected)?;
        let greeting: Value = serde_json::from_str(&greeting)
            .map_err(|e| QmpError::Protocol(format!("bad greeting `{}`: {e}", excerpt(&greeting))))?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "not a QMP greeting: {}",
                excerpt(&greeting.to_string())
            )));
        }
        let (events, first) = broadcast::channel(1024);
        let (closed_tx, closed) = watch::channel(false);
        // The reader reaches the pending table through a weak reference, so
        // dropping the last `Qmp` frees the connection.
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let weak = weak.clone();
            let events_tx = events.clone();
            let reader = tokio::spawn(async move {
                loop {
                    // An over-long line ends the connection: every command
                    // then fails as disconnected rather than wait.
                    let line = match read_line(&mut lines).await {
                        Ok(Some(line)) => line,
                        _ => break,
                    };
                    let Ok(message) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    if message.get("event").is_some() {
                        if let Ok(event) = serde_json::from_value::<Event>(message) {
                            let _ = events_tx.send(event);
                        }
                        continue;
                    }
                    let Some(id) = message.get("id").and_then(Value::as_u64) else {
                        continue;
                    };
                    let Some(inner) = weak.upgrade() else { break };
                    let sender = inner.pending.lock().unwrap().as_mut().and_then(|p| p.remove(&id));
                    if let Some(sender) = sender {
                        let _ = sender.send(reply_result(message));
                    }
                }
                if let Some(inner) = weak.upgrade() {
                    inner.pending.lock().unwrap().take();
                }
                let _ = closed_tx.send(true);
            });
            Inner {
                writer: tokio::sync::Mutex::new(write),
                pending: Mutex::new(Some(HashMap::new())),
                next_id: AtomicU64::new(1),
                events,
                first_events: Mutex::new(Some(first)),
                closed,
                timeout: Mutex::new(DEFAULT_TIMEOUT),
                peer_pid,
                reader,
            }
        });
        let qmp = Qmp { inner };
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// The pid of the QEMU process at the other end of a unix socket.
    pub fn peer_pid(&self) -> Option<u32> {
        self.inner.peer_pid
    }

    /// Sets the timeout of every later command on this connection.
    pub fn set_timeout(&self, timeout: Duration) {
        *self.inner.timeout.lock().unwrap() = timeout;
    }

    /// The events QEMU sends. The first call on a connection receives every
    /// event since the connection was made; later calls those from then on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner
            .first_events
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| self.inner.events.subscribe())
    }

    /// Whether the socket has closed.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Resolves once the socket has closed (QEMU quit or died).
    pub async fn closed(&self) {
        let mut closed = self.inner.closed.clone();
        let _ = closed.wait_for(|c| *c).await;
    }

    /// Runs `command` with `arguments` (an object, or `None`) and returns
    /// QEMU's `return` value.
    pub async fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let timeout = *self.inner.timeout.lock().unwrap();
        self.execute_with_timeout(command, arguments, timeout).await
    }

    /// [`Qmp::execute`] with a timeout of its own.
    pub async fn execute_with_timeout(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.inner.pending.lock().unwrap();
            let Some(pending) = pending.as_mut() else {
                return Err(QmpError::Disconnected);
            };
            pending.insert(id, tx);
        }
        let mut message = Map::new();
        message.insert("execute".into(), json!(command));
        if let Some(arguments) = arguments {
            message.insert("arguments".into(), arguments);
        }
        message.insert("id".into(), json!(id));
        let mut line = serde_json::to_vec(&Value::Object(message)).expect("JSON serializes");
        line.push(b'\n');
        let forget = || {
            if let Some(p) = self.inner.pending.lock().unwrap().as_mut() {
                p.remove(&id);
            }
        };
        let sent = async {
            let mut writer = self.inner.writer.lock().await;
            writer.write_all(&line).await?;
            writer.flush().await
        };
        match tokio::time::timeout(timeout, sent).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                forget();
                return Err(QmpError::Disconnected);
            }
            Err(_) => {
                forget();
                return Err(QmpError::Timeout {
                    command: command.into(),
                    timeout,
                });
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(QmpError::Disconnected),
            Err(_) => {
                forget();
                Err(QmpError::Timeout {
                    command: command.into(),
                    timeout,
                })
            }
        }
    }

    /// [`Qmp::execute`] for a command whose reply carries nothing (QEMU
    /// answers `{}`): only whether it was done.
    async fn execute_unit(&self, command: &str, arguments: Option<Value>) -> Result<()> {
        self.execute(command, arguments).await.map(drop)
    }

    /// [`Qmp::execute`] decoding the reply into `T`.
    pub async fn execute_as<T: serde::de::DeserializeOwned>(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<T> {
        let value = self.execute(command, arguments).await?;
        serde_json::from_value(value).map_err(|source| QmpError::Decode {
            command: command.into(),
            source,
        })
    }

    pub async fn query_status(&self) -> Result<StatusInfo> {
        self.execute_as("query-status", None).await
    }

    pub async fn query_migrate(&self) -> Result<MigrationInfo> {
        self.execute_as("query-migrate", None).await
    }

    pub async fn query_memory_size_summary(&self) -> Result<MemorySizeSummary> {
        self.execute_as("query-memory-size-summary", None).await
    }

    /// `migrate-set-capabilities` with `(capability, state)` pairs.
    pub async fn migrate_set_capabilities(&self, capabilities: &[(MigrationCapability, bool)]) -> Result<()> {
        let list: Vec<Value> = capabilities
            .iter()
            .map(|(c, on)| json!({"capability": c.as_str(), "state": on}))
            .collect();
        self.execute_unit("migrate-set-capabilities", Some(json!({ "capabilities": list })))
            .await
    }

    /// `migrate-set-parameters` with the fields that are `Some`.
    pub async fn migrate_set_parameters(&self, parameters: &MigrationParameters) -> Result<()> {
        let arguments = serde_json::to_value(parameters).expect("parameters serialize");
        self.execute_unit("migrate-set-parameters", Some(arguments)).await
    }

    /// Starts an outgoing migration to `uri` (e.g. `tcp:10.0.0.2:4444`).
    pub async fn migrate(&self, uri: &str) -> Result<()> {
        self.execute_unit("migrate", Some(json!({ "uri": uri }))).await
    }

    /// Starts listening for an incoming migration (QEMU started with `-incoming defer`).
    /// With port 0 (`tcp:<addr>:0`) QEMU picks a free one: read it back from
    /// [`Qmp::query_migrate`] ([`MigrationInfo::listening_port`]).
    pub async fn migrate_incoming(&self, uri: &str) -> Result<()> {
        self.execute_unit("migrate-incoming", Some(json!({ "uri": uri })))
            .await
    }

    /// `object-add` of a `tls-creds-x509` object `id` reading its
    /// certificates from `dir`, as the `client` (sender) or `server`
    /// (receiver) `endpoint`, verifying the peer's certificate.
    pub async fn add_tls_creds_x509(&self, id: &str, dir: &str, endpoint: TlsEndpoint) -> Result<()> {
        let endpoint = match endpoint {
            TlsEndpoint::Client => "client",
            TlsEndpoint::Server => "server",
        };
        self.execute_unit(
            "object-add",
            Some(json!({
                "qom-type": "tls-creds-x509",
                "id": id,
                "dir": dir,
                "endpoint": endpoint,
                "verify-peer": true,
            })),
        )
        .await
    }

    /// `object-del`.
    pub async fn object_del(&self, id: &str) -> Result<()> {
        self.execute_unit("object-del", Some(json!({ "id": id }))).await
    }

    pub async fn migrate_cancel(&self) -> Result<()> {
        self.execute_unit("migrate_cancel", None).await
    }

    /// Pauses the guest.
    pub async fn stop(&self) -> Result<()> {
        self.execute_unit("stop", None).await
    }

    /// Resumes the guest.
    pub async fn cont(&self) -> Result<()> {
        self.execute_unit("cont", None).await
    }

    /// Asks QEMU to exit. A connection that closes before the reply counts as success.
    pub async fn quit(&self) -> Result<()> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QmpError::Disconnected) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn reply_result(message: Value) -> Result<Value> {
    if let Some(error) = message.get("error") {
        let field = |name: &str| excerpt(error.get(name).and_then(Value::as_str).unwrap_or(""));
        return Err(QmpError::Command {
            class: field("class"),
            desc: field("desc"),
        });
    }
    match message {
        Value::Object(mut map) => match map.remove("return") {
            Some(value) => Ok(value),
            None => Err(QmpError::Protocol(format!(
                "reply with neither return nor error: {}",
                excerpt(&Value::Object(map).to_string())
            ))),
        },
        other => Err(QmpError::Protocol(format!(
            "reply is not an object: {}",
            excerpt(&other.to_string())
        ))),
    }
}

#[cfg(test)]
mod tests;
