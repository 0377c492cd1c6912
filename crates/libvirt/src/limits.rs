//! The hosts' own limits, known and respected.
//!
//! Mass migrations with libvirt fail, or hang, on limits of the hosts that
//! no controller sees: each migration out of a host holds one of its
//! daemon's worker threads (`max_workers`, default 20) from start to end,
//! and the calls that read its progress need one too; each migration into a
//! host holds one of its daemon's migration ports (64 by default, two per
//! migration when disks are copied); under `qemu+ssh://` every migration
//! opens ssh connections, and sshd drops new ones beyond `MaxStartups`
//! (default 10) waiting for authentication. The controller asks for
//! concurrency without knowing them; the backend knows them (read through
//! libvirt's admin API where it can, else from the inventory, else
//! libvirt's and sshd's defaults), says once per host what it caps and
//! why, and holds a migration beyond a cap as "starting" until a slot is
//! free: it waits, as libvirt itself would queue it, but never stalls
//! (nothing is measured before it starts) and never fails for it. A
//! failure that a limit still causes (a host shared with others, a setting
//! that differs from the inventory) is reported as that limit, with the
//! setting to change.

use crate::inventory::{parse_port_range, HostSpec, DEFAULT_MIGRATION_PORTS};

/// libvirtd's default `max_workers`.
pub const DEFAULT_MAX_WORKERS: u32 = 20;

/// Workers of a source daemon left free of migrations: one for evac's own
/// calls that no priority worker serves (discovery, counters, aborts), one
/// for any other client of the daemon.
pub const WORKER_RESERVE: u32 = 2;

/// sshd's default `MaxStartups` (its first number: from there it drops new
/// connections at random).
pub const DEFAULT_SSH_MAX_STARTUPS: u32 = 10;

/// Unauthenticated ssh connections left to others (an operator's shell,
/// evac's own connection for discovery).
pub const SSH_RESERVE: u32 = 2;

/// A cap on a host and why, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    pub at_most: usize,
    pub why: String,
}

/// Where a value of a limit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Read from the daemon itself (the admin API).
    Read,
    /// The inventory's.
    Inventory,
    /// Nobody said: the software's default.
    Default,
}

impl Known {
    fn words(self, field: &str) -> String {
        match self {
            Known::Read => "read through libvirt's admin API, `virt-admin`".into(),
            Known::Inventory => format!("the inventory's `{field}`"),
            Known::Default => {
                format!("the default; give the host's `{field}` in the inventory if it differs")
            }
        }
    }
}

/// Migrations out of a host whose daemon has `max_workers`.
pub fn source_cap(max_workers: u32, known: Known) -> Cap {
    let at_most = max_workers.saturating_sub(WORKER_RESERVE).max(1) as usize;
    Cap {
        at_most,
        why: format!(
            "its libvirtd has max_workers = {max_workers} ({}), each migration out holds one, \
             {WORKER_RESERVE} are kept for other calls",
            known.words("max_workers")
        ),
    }
}

/// Migrations into a host whose daemon listens on the ports `range`.
pub fn destination_cap(range: (u16, u16), copy_storage: bool, known: Known) -> Cap {
    let ports = usize::from(range.1 - range.0) + 1;
    let per_migration = if copy_storage { 2 } else { 1 };
    Cap {
        at_most: (ports / per_migration).max(1),
        why: format!(
            "its migration ports are {}-{} ({ports}; {}), each migration in holds {per_migration}{}",
            range.0,
            range.1,
            known.words("migration_ports"),
            if copy_storage {
                " (memory and the disks' NBD server)"
            } else {
                ""
            }
        ),
    }
}

/// Migrations setting up ssh connections to a host at once.
pub fn ssh_cap(max_startups: u32, known: Known) -> Cap {
    Cap {
        at_most: max_startups.saturating_sub(SSH_RESERVE).max(1) as usize,
        why: format!(
            "its sshd has MaxStartups = {max_startups} ({}), {SSH_RESERVE} kept for others",
            known.words("ssh_max_startups")
        ),
    }
}

/// Whether `uri` reaches its daemon over ssh.
pub fn is_ssh(uri: &str) -> bool {
    uri.split("://")
        .next()
        .is_some_and(|scheme| scheme.ends_with("+ssh"))
}

/// The admin URI of the daemon `uri` names, when it is on this machine
/// (libvirt's admin API answers on a local socket only): `qemu:///system`
/// -> `libvirtd:///system`, a `socket=DIR/libvirt-sock` -> DIR's
/// `libvirt-admin-sock`.
pub fn admin_uri(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    if scheme != "qemu" && scheme != "qemu+unix" {
        return None;
    }
    let query = rest.split_once('?').map(|(_, q)| q);
    match query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("socket="))) {
        Some(socket) => {
            let dir = std::path::Path::new(socket).parent()?;
            Some(format!(
                "libvirtd:///system?socket={}",
                dir.join("libvirt-admin-sock").display()
            ))
        }
        None if rest.starts_with("/system") => Some("libvirtd:///system".into()),
        None => None,
    }
}

/// `maxWorkers` of the `libvirtd` server behind the admin socket
/// `admin_uri`, as `virt-admin server-threadpool-info` reports it (at most
/// `timeout`, then the child is killed).
///
/// Why a child process and not `virAdmServerGetThreadPoolParameters` in
/// evac itself: in a process that has loaded libvirt.so (as evac has),
/// libvirt 9.0's admin library registers its object types a second time
/// and `virAdmConnectOpen` crashes (SIGSEGV in `virObjectNew`, after GLib's
/// "cannot register existing type 'virAdmConnect'"; reproduced with a
/// five-line C program linking both). `virt-admin` comes with libvirt's
/// clients (Debian's libvirt-clients, beside `virsh`).
pub fn read_max_workers(admin_uri: &str, timeout: std::time::Duration) -> Result<u32, String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("virt-admin")
        .args(["-c", admin_uri, "server-threadpool-info", "libvirtd"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run virt-admin ({e}); apt-get install libvirt-clients"))?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("virt-admin gave no answer within {timeout:?}"));
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "virt-admin: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_max_workers(&text).ok_or_else(|| format!("virt-admin said no maxWorkers: {}", text.trim()))
}

/// The `maxWorkers : N` line of `virt-admin server-threadpool-info`.
fn parse_max_workers(text: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "maxWorkers").then(|| value.trim().parse().ok())?
    })
}

/// The caps of one host: migrations at once, and ssh connections set up at
/// once. `max_workers`: the value read from its daemon, if it could be.
pub fn host_caps(
    host: &HostSpec,
    read_max_workers: Option<u32>,
    copy_storage: bool,
) -> (Option<Cap>, Option<Cap>) {
    let migrations = match host.site {
        evac_model::Site::Source => Some(match (read_max_workers, host.max_workers) {
            (Some(n), _) => source_cap(n, Known::Read),
            (None, Some(n)) => source_cap(n, Known::Inventory),
            (None, None) => source_cap(DEFAULT_MAX_WORKERS, Known::Default),
        }),
        evac_model::Site::Destination => Some(match host.migration_ports.as_deref().map(parse_port_range) {
            Some(Ok(range)) => destination_cap(range, copy_storage, Known::Inventory),
            _ => destination_cap(DEFAULT_MIGRATION_PORTS, copy_storage, Known::Default),
        }),
    };
    // evac opens ssh connections to a source (one per migration), the
    // sources' daemons to a destination (peer-to-peer).
    let ssh_uri = match host.site {
        evac_model::Site::Source => &host.uri,
        evac_model::Site::Destination => host.peer_uri(),
    };
    let startups = is_ssh(ssh_uri).then(|| match host.ssh_max_startups {
        Some(n) => ssh_cap(n, Known::Inventory),
        None => ssh_cap(DEFAULT_SSH_MAX_STARTUPS, Known::Default),
    });
    (migrations, startups)
}

/// A migration's failure as the limit that caused it, with the setting to
/// change, when libvirt's or ssh's words say which; `None` otherwise.
pub fn explain(reason: &str, source: &HostSpec, destination: &HostSpec) -> Option<String> {
    let lower = reason.to_ascii_lowercase();
    if lower.contains("unable to find an unused port") {
        let range = destination
            .migration_ports
            .clone()
            .unwrap_or_else(|| format!("{}-{}", DEFAULT_MIGRATION_PORTS.0, DEFAULT_MIGRATION_PORTS.1));
        return Some(format!(
            "destination `{}` ran out of migration ports (its range {range} is in use): widen \
             migration_port_min/migration_port_max in its qemu.conf, and give the range as its \
             `migration_ports` in the inventory",
            destination.name
        ));
    }
    let ssh_refused = [
        "kex_exchange_identification",
        "ssh_exchange_identification",
        "connection closed by",
    ]
    .iter()
    .any(|w| lower.contains(w));
    if ssh_refused {
        let host = if is_ssh(destination.peer_uri()) && !is_ssh(&source.uri) {
            destination
        } else {
            source
        };
        return Some(format!(
            "sshd on `{}` closed a new connection, as it does beyond MaxStartups connections waiting \
             for authentication: raise MaxStartups in its sshd_config, and give it as its \
             `ssh_max_startups` in the inventory",
            host.name
        ));
    }
    let no_worker = lower.contains("timed out") || lower.contains("no answer within");
    if no_worker {
        return Some(format!(
            "host `{}`'s libvirtd did not answer in time, as when all its workers are busy: \
             raise max_workers in its libvirtd.conf, and give it as its `max_workers` in the inventory",
            source.name
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(toml: &str) -> HostSpec {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn caps_follow_the_limits_by_hand() {
        // 20 workers, 2 kept: 18 migrations out.
        assert_eq!(source_cap(20, Known::Default).at_most, 18);
        assert_eq!(source_cap(4, Known::Read).at_most, 2);
        assert_eq!(source_cap(1, Known::Inventory).at_most, 1);
        // 49152-49215 is 64 ports; 32 migrations with their disks.
        assert_eq!(destination_cap((49152, 49215), false, Known::Default).at_most, 64);
        assert_eq!(destination_cap((49152, 49215), true, Known::Default).at_most, 32);
        assert_eq!(destination_cap((50000, 50000), true, Known::Inventory).at_most, 1);
        assert_eq!(ssh_cap(10, Known::Default).at_most, 8);
        assert!(source_cap(4, Known::Read)
            .why
            .contains("max_workers = 4 (read through libvirt's admin API, `virt-admin`)"));
    }

    #[test]
    fn reads_virt_admins_report() {
        // As virt-admin 9.0 prints it.
        let text = "minWorkers     : 4\nmaxWorkers     : 4\nnWorkers       : 4\nfreeWorkers    : 4\n\
                    prioWorkers    : 5\njobQueueDepth  : 0\n";
        assert_eq!(parse_max_workers(text), Some(4));
        assert_eq!(parse_max_workers("minWorkers : 5\n"), None);
    }

    #[test]
    fn the_admin_socket_is_found_for_daemons_on_this_machine_only() {
        assert_eq!(
            admin_uri("qemu+unix:///system?socket=/tmp/lab/a/run/libvirt-sock").as_deref(),
            Some("libvirtd:///system?socket=/tmp/lab/a/run/libvirt-admin-sock")
        );
        assert_eq!(admin_uri("qemu:///system").as_deref(), Some("libvirtd:///system"));
        assert_eq!(admin_uri("qemu+tcp://10.0.0.1/system"), None);
        assert_eq!(admin_uri("qemu+ssh://root@10.0.0.1/system"), None);
        assert!(is_ssh("qemu+ssh://root@10.0.0.1/system?keyfile=k"));
        assert!(!is_ssh("qemu+tcp://10.0.0.1/system"));
    }

    #[test]
    fn a_host_gets_its_caps_from_where_they_are_known() {
        let src = host(
            "name = \"a\"\nsite = \"source\"\nnic = \"1 Gbps\"\nuri = \"qemu+ssh://root@10.0.0.1/system\"\nmax_workers = 8\n",
        );
        let (migrations, startups) = host_caps(&src, None, false);
        assert_eq!(migrations.unwrap().at_most, 6);
        assert_eq!(startups.unwrap().at_most, 8);
        let (migrations, _) = host_caps(&src, Some(30), false);
        assert_eq!(migrations.unwrap().at_most, 28, "what the daemon says wins");
        let dst = host(
            "name = \"b\"\nsite = \"destination\"\nnic = \"1 Gbps\"\nuri = \"qemu+tcp://10.0.0.2/system\"\n\
             migration_ports = \"50000-50009\"\n",
        );
        let (migrations, startups) = host_caps(&dst, None, true);
        assert_eq!(migrations.unwrap().at_most, 5);
        assert_eq!(startups, None, "not reached over ssh");
    }

    #[test]
    fn a_failure_a_limit_causes_names_the_setting() {
        let src =
            host("name = \"a\"\nsite = \"source\"\nnic = \"1 Gbps\"\nuri = \"qemu+tcp://10.0.0.1/system\"\n");
        let dst = host(
            "name = \"b\"\nsite = \"destination\"\nnic = \"1 Gbps\"\nuri = \"qemu+ssh://root@10.0.0.2/system\"\n",
        );
        let ports = explain(
            "internal error: Unable to find an unused port in range 'migration' (49152-49215)",
            &src,
            &dst,
        )
        .unwrap();
        assert!(
            ports.contains("destination `b` ran out of migration ports (its range 49152-49215"),
            "{ports}"
        );
        assert!(ports.contains("migration_port_min/migration_port_max"), "{ports}");
        let ssh = explain(
            "Cannot recv data: kex_exchange_identification: Connection closed by remote host",
            &src,
            &dst,
        )
        .unwrap();
        assert!(
            ssh.starts_with("sshd on `b`") && ssh.contains("MaxStartups"),
            "{ssh}"
        );
        let workers = explain("cannot start: timed out after 15s", &src, &dst).unwrap();
        assert!(
            workers.contains("host `a`'s libvirtd") && workers.contains("max_workers"),
            "{workers}"
        );
        assert_eq!(
            explain(
                "operation aborted: job 'migration out' canceled by client",
                &src,
                &dst
            ),
            None
        );
    }
}
