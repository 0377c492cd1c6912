//! Hand-written, tolerant types for the QMP messages evac uses.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An asynchronous QMP event, e.g. `MIGRATION`, `RESUME`, `STOP`, `SHUTDOWN`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event {
    #[serde(rename = "event")]
    pub name: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub timestamp: Timestamp,
}

impl Event {
    /// For a `MIGRATION` event: the new status.
    pub fn migration_status(&self) -> Option<MigrationStatus> {
        if self.name != "MIGRATION" {
            return None;
        }
        serde_json::from_value(self.data.get("status")?.clone()).ok()
    }
}

/// When QEMU sent an event (host wall clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Timestamp {
    pub seconds: i64,
    pub microseconds: i64,
}

/// QEMU's run states (`query-status`); unknown ones are `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Debug,
    Inmigrate,
    InternalError,
    IoError,
    Paused,
    Postmigrate,
    Prelaunch,
    FinishMigrate,
    RestoreVm,
    Running,
    SaveVm,
    Shutdown,
    Suspended,
    Watchdog,
    GuestPanicked,
    Colo,
    #[serde(other)]
    Other,
}

/// The reply of `query-status`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StatusInfo {
    pub status: RunState,
    #[serde(default)]
    pub running: bool,
}

/// Migration states (`query-migrate` and `MIGRATION` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationStatus {
    None,
    Setup,
    Cancelling,
    Cancelled,
    Active,
    PostcopyActive,
    PostcopyPaused,
    PostcopyRecover,
    Completed,
    Failed,
    Colo,
    PreSwitchover,
    Device,
    WaitUnplug,
    #[serde(other)]
    Other,
}

impl MigrationStatus {
    /// Completed, failed or cancelled: nothing more will happen.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MigrationStatus::Completed | MigrationStatus::Failed | MigrationStatus::Cancelled
        )
    }
}

/// RAM statistics of a migration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RamStats {
    /// Bytes sent so far.
    pub transferred: u64,
    /// Bytes still dirty in the current round.
    pub remaining: u64,
    pub total: u64,
    pub duplicate: u64,
    pub normal: u64,
    /// The current rate, in megabits per second.
    pub mbps: f64,
    /// Pages dirtied per second.
    pub dirty_pages_rate: u64,
    /// How many times the dirty bitmap was synchronized: the round.
    pub dirty_sync_count: u64,
    pub page_size: u64,
    pub precopy_bytes: Option<u64>,
    pub downtime_bytes: Option<u64>,
}

/// The reply of `query-migrate`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationInfo {
    /// Absent before any migration.
    pub status: Option<MigrationStatus>,
    pub ram: Option<RamStats>,
    /// Milliseconds.
    pub total_time: Option<u64>,
    pub expected_downtime: Option<u64>,
    /// Milliseconds the guest was paused (after completion).
    pub downtime: Option<u64>,
    pub setup_time: Option<u64>,
    pub error_desc: Option<String>,
    pub cpu_throttle_percentage: Option<u64>,
    /// On a destination after `migrate-incoming`: the addresses it listens
    /// on, with the ports actually bound (so `tcp:<addr>:0` can be asked for
    /// and the port read back). Empty elsewhere.
    #[serde(default, deserialize_with = "tolerant_list")]
    pub socket_address: Vec<SocketAddress>,
}

impl MigrationInfo {
    /// The first TCP port the destination listens on (`socket-address`),
    /// if any.
    pub fn listening_port(&self) -> Option<u16> {
        self.socket_address.iter().find_map(SocketAddress::inet_port)
    }
}

/// A QAPI `SocketAddress` (as in `query-migrate`'s `socket-address`); types
/// evac does not know are `Other`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SocketAddress {
    Inet(InetSocketAddress),
    Unix {
        #[serde(default)]
        path: String,
    },
    Vsock {
        #[serde(default)]
        cid: String,
        #[serde(default)]
        port: String,
    },
    Fd {
        #[serde(default)]
        str: String,
    },
    #[serde(other)]
    Other,
}

impl SocketAddress {
    /// The port of an `inet` address, when it is a valid non-zero one.
    pub fn inet_port(&self) -> Option<u16> {
        match self {
            SocketAddress::Inet(inet) => inet.port_number(),
            _ => None,
        }
    }
}

/// An `inet` socket address. QMP sends the port as a string (it may be a
/// service name); a number is accepted too.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct InetSocketAddress {
    pub host: String,
    #[serde(deserialize_with = "string_or_number")]
    pub port: String,
    pub ipv4: Option<bool>,
    pub ipv6: Option<bool>,
}

impl InetSocketAddress {
    /// The port as a number, when it is a valid non-zero one.
    pub fn port_number(&self) -> Option<u16> {
        self.port.parse().ok().filter(|&p| p != 0)
    }
}

/// A string, or a number taken as its decimal text.
fn string_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a port (string or number), got {other}"
        ))),
    }
}

/// A list whose elements that do not parse are dropped (as is a value that
/// is not a list), so one odd entry cannot break the whole reply.
fn tolerant_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    Ok(match Value::deserialize(deserializer)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| serde_json::from_value(item).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// The reply of `query-memory-size-summary`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MemorySizeSummary {
    pub base_memory: u64,
    pub plugged_memory: Option<u64>,
}

/// Migration capabilities evac sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationCapability {
    Events,
    Multifd,
    AutoConverge,
    PostcopyRam,
    /// Any other, by its QMP name.
    Other(String),
}

impl MigrationCapability {
    pub fn as_str(&self) -> &str {
        match self {
            MigrationCapability::Events => "events",
            MigrationCapability::Multifd => "multifd",
            MigrationCapability::AutoConverge => "auto-converge",
            MigrationCapability::PostcopyRam => "postcopy-ram",
            MigrationCapability::Other(name) => name,
        }
    }
}

/// `migrate-set-parameters`: only the fields that are `Some` are sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationParameters {
    /// Bytes per second (not bits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bandwidth: Option<u64>,
    /// Milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multifd_channels: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_initial: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_increment: Option<u32>,
    /// The id of a `tls-creds-x509` object: the migration stream is TLS
    /// (`""`: plain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_creds: Option<String>,
    /// The name the sender checks the receiver's certificate against
    /// (`""`: the host of the migration URI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_hostname: Option<String>,
    /// How multifd channels compress pages: `none`, `zlib` or `zstd` (both
    /// ends must agree).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multifd_compression: Option<String>,
    /// The zstd level of `multifd-compression = zstd` (QEMU's default: 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multifd_zstd_level: Option<u32>,
}

/// Which end of a TLS session a `tls-creds-x509` object serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsEndpoint {
    /// The migration's sender: presents `client-cert.pem`.
    Client,
    /// The migration's receiver: presents `server-cert.pem`.
    Server,
}
