//! What one migration is asked to do ([`MigrateRequest`]) and how that
//! becomes libvirt's migrate flags and typed parameters; a failed TLS
//! migration's error explained. Apart from the migration in flight
//! (`super::migration`) because it is pure: its tests need no daemon.

use std::time::Duration;

use evac_model::BytesPerSec;
use virt::domain::MigrateParameters;

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
    /// for later ([`Migration::start_postcopy`](super::Migration::start_postcopy)).
    pub postcopy: bool,
}

/// A failed TLS migration's error with what to check. libvirt returns
/// the destination's side ("Cannot read from TLS channel"); the source
/// QEMU's reason (e.g. "Certificate does not match the hostname ...") is
/// only in the domain's log on the source host (libvirt 9.0 keeps no job
/// statistics for the failed migration).
pub(super) fn explain_tls_failure(request: &MigrateRequest, message: String) -> String {
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
