//! # evac-qemu
//!
//! The QEMU backend of evac: an [`evac_run::Backend`] ([`QemuBackend`])
//! that carries out the run loop's actions on QEMU virtual machines over QMP
//! ([`evac_qmp`]) and measures them. The loop itself (ticks, concurrent
//! observations, attempts, power-offs, Ctrl-C, progress, the
//! [`RunResult`]) is `evac-run`'s, the same for every backend; no policy
//! lives here.
//!
//! ## Entry points
//!
//! ```ignore
//! pub async fn run(
//!     inventory: Inventory,
//!     policy_override: Option<evac_controller::PolicyKind>,
//!     shutdown: impl Future<Output = ()>,
//! ) -> anyhow::Result<evac_outcome::RunResult>;
//! ```
//!
//! [`run_detailed`] also returns where each VM runs at the end
//! ([`Placement`]), [`run_with_options`] does too and can publish a
//! [`RunProgress`] snapshot every control period on a
//! [`tokio::sync::watch`] channel (the CLI draws progress bars from it; the
//! library draws nothing), and [`run_with_controller`] drives any
//! [`Controller`] (tests use scripted ones). When `shutdown` resolves (the CLI passes
//! Ctrl-C) every migration in flight is cancelled, each VM is left running
//! exactly once (on its source, or at its destination if it completed
//! first), and the partial result is returned; VMs that did not migrate are
//! reported with outcome `lost`, as are VMs whose host's `power_off_at`
//! passed (they are left alone, a migration in flight is cancelled) and VMs
//! that failed `max_attempts` times. A run also stops when, for 20 periods,
//! nothing is in flight and the controller starts nothing while VMs wait
//! (e.g. none fits any destination's `memory`); those VMs are reported lost.
//!
//! ## Inventory ([`Inventory::from_path`])
//!
//! ```toml
//! name = "lab"
//! backend = "qemu"               # optional; the default (`evac run` dispatches on it)
//! run_dir = "/var/lib/evac/run"  # optional: journal, destination QMP sockets, logs
//! [controller]                   # evac_controller::ControllerConfig, as in scenarios
//! policy = "aimd-global"
//! period = "1 s"
//! [migration]                    # evac_model::MigrationParams, plus `tls`
//! downtime_limit = "300 ms"
//! max_bandwidth = "unlimited"
//! tls = true                     # optional: TLS migration streams (docs/tls.md)
//! [[host]]
//! name = "src-1"
//! site = "source"
//! nic = "10 Gbps"
//! power_off_at = "10 min"        # optional: from the run's start, or a time with its zone
//!                                # ("2026-12-06T14:30:00+01:00"), counted from the run's start;
//!                                # an edit during the run is applied (evac_run::power)
//! ups = "ups1@10.0.0.5:3493"     # optional: the NUT UPS that tells the power-off during the run
//! ups_margin = "30 s"            # optional (default 0 s): taken off its battery runtime
//! netns = "evac-src"             # optional: the host is this network namespace
//! [[host]]
//! name = "dst-1"
//! site = "destination"
//! nic = "10 Gbps"
//! memory = "64 GiB"              # optional room for VMs
//! migration_address = "127.0.0.1"
//! incoming_command = "ip netns exec {netns} qemu-system-x86_64"  # default "qemu-system-x86_64"
//! netns = "evac-dst"
//! tls_dir = "/etc/pki/qemu"      # optional (the default): this host's certificates
//! tls_name = "dst-1.example"     # optional: the name in its certificate
//! [[vm]]
//! name = "vm-1"
//! host = "src-1"
//! qmp = "/run/evac/vm-1.qmp"     # unix path or host:port; evac is its only QMP client
//! memory = "256 MiB"             # optional: query-memory-size-summary otherwise
//! priority = 1                   # optional
//! destination = "dst-1"          # optional pin
//! qemu_args = ["-machine", "q35,memory-backend=mem", "-object", "memory-backend-ram,id=mem,size=256M", "-m", "256M"]
//! ```
//!
//! `incoming_command` is split on whitespace; `{host}` (host name),
//! `{netns}`, `{address}` (its `migration_address`) and `{vm}` are replaced.
//! evac appends the VM's `qemu_args` and `-incoming defer -qmp
//! unix:<run_dir>/dst-<vm>-<attempt>.qmp,server=on,wait=off -display none
//! -nodefaults`; the QMP socket must therefore be reachable from this machine
//! (a local process or a network namespace; not `ssh`).
//!
//! ## What an action does
//!
//! - `Start`: spawns a fresh destination QEMU (its own process group, output
//!   in `<run_dir>/dst-<vm>-<attempt>.log`, killed on every failure path),
//!   sets capabilities (`events`, `multifd` when channels > 1) and
//!   `multifd-channels` there, `migrate-incoming tcp:<addr>:0` (QEMU binds
//!   a free port itself, in its own network namespace, and evac reads it
//!   back from the destination's `query-migrate` `socket-address`); on
//!   the source sets `events`, `multifd`, `auto-converge`, `max-bandwidth`
//!   (bytes/s; unlimited = 1 TB/s), `downtime-limit`, `multifd-channels`,
//!   `stop`s the guest in offline mode, and `migrate`s.
//! - With `tls = true`, before that: a `tls-creds-x509` object
//!   (`evac-migration-tls`, the host's `tls_dir`, `verify-peer`) added on
//!   each end by `object-add` (`endpoint=server` on the destination,
//!   `client` on the source, replacing an earlier attempt's), and
//!   `tls-creds` set on both, `tls-hostname` (the destination's `tls_name`,
//!   else empty: its address) on the source. A failure QEMU blames on a
//!   certificate or the TLS channel gets a hint at what to check.
//! - `Retune`: `migrate-set-parameters`; `AutoConverge` cannot change
//!   mid-flight (QEMU takes capabilities only before `migrate`): logged and
//!   ignored.
//! - `SwitchToOffline`: `stop` on the source; precopy ends as stop-and-copy.
//!   The downtime recorded for a guest we paused (this, or offline mode) runs
//!   from our `stop` to its resumption at the destination (QEMU's own counts
//!   only its final stop-and-copy).
//! - Postcopy: when the parameters have `allow_postcopy` or mode
//!   `postcopy`, the source's memory backends are checked first
//!   (`qom-list /objects`, `query-memdev`): file-backed or shared RAM is
//!   refused with an error naming the VM and its backend (a postcopy
//!   start then fails, the VM stays on its source; a later switch is
//!   refused). Otherwise `postcopy-ram` is set on both ends (and multifd
//!   off: QEMU 7.2 does not combine them; a live migration with several
//!   connections keeps them and cannot switch). `SwitchToPostcopy`:
//!   `migrate-start-postcopy`; mode `postcopy` switches by itself once the
//!   first pass over memory is done. Observed as phase `postcopy` while
//!   QEMU says `postcopy-active`; from the switch on, a cancel is refused
//!   (the guest runs at the destination) and a failure never resumes the
//!   source (its copy is stale): the VM is lost.
//! - `Cancel`: `migrate_cancel`; the destination exits by itself and is
//!   reaped; the VM keeps running on its source; reported as failed
//!   (`"cancelled"`).
//! - Completion: the source's `MIGRATION` event `completed` and the
//!   destination's `RESUME` (after a `cont` when the guest was sent paused);
//!   then the source QEMU is `quit`. The destination QEMU is left running: it
//!   is the VM now.
//! - Failure (destination died, migration failed): the source's migration
//!   is brought to its end, the guest resumed there if we paused it, and the
//!   controller told; a retry gets a fresh destination process.
//!
//! Observations are taken every `period` and whenever a migration ends: from
//! the source's `query-migrate`; per source host the cumulative transmit
//! bytes of the non-`lo` interfaces in `/proc/<pid>/net/dev` of one of its
//! QEMU processes when the host has a `netns`, else the sum of its
//! migrations' transferred bytes.
//!
//! The lab (namespaces, shaping, small VMs for tests) is the `evac-lab` crate.

mod attempt;
mod backend;
pub mod inventory;
mod postcopy;

use std::future::Future;
use std::path::PathBuf;

use evac_controller::Controller;
use evac_model::Fleet;
use evac_outcome::RunResult;

pub use backend::{Landed, QemuBackend, QemuMigration};
pub use evac_controller::PolicyKind;
pub use evac_run::{log_to_stderr, FlightProgress, Log, RunOptions, RunProgress};
pub use inventory::{HostSpec, Inventory, InventoryError, VmSpec};

/// Where a VM runs at the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Still on its source (not migrated, or lost and left alone).
    Source,
    /// At its destination, in a QEMU evac started.
    Destination { host: String, qmp: PathBuf, pid: u32 },
}

/// A run's result and where each VM ended up (in inventory order).
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub result: RunResult,
    pub placements: Vec<Placement>,
}

impl From<evac_run::RunOutput<Landed>> for RunOutput {
    fn from(output: evac_run::RunOutput<Landed>) -> Self {
        RunOutput {
            result: output.result,
            placements: output
                .landed
                .into_iter()
                .map(|landed| match landed {
                    Some(Landed { host, qmp, pid }) => Placement::Destination { host, qmp, pid },
                    None => Placement::Source,
                })
                .collect(),
        }
    }
}

/// Evacuates the inventory's VMs under its `[controller]` policy (or
/// `policy_override`) until each is migrated or lost, or `shutdown` resolves.
pub async fn run(
    inventory: Inventory,
    policy_override: Option<PolicyKind>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunResult> {
    run_detailed(inventory, policy_override, shutdown)
        .await
        .map(|o| o.result)
}

/// [`run`], also telling where each VM runs at the end.
pub async fn run_detailed(
    inventory: Inventory,
    policy_override: Option<PolicyKind>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunOutput> {
    let options = RunOptions {
        policy: policy_override,
        ..RunOptions::default()
    };
    run_with_options(inventory, options, shutdown).await
}

/// [`run_detailed`] with [`RunOptions`]: a policy override, a channel to
/// publish progress on, where messages go.
pub async fn run_with_options(
    inventory: Inventory,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunOutput> {
    let mut inventory = inventory;
    let mut options = options;
    let config = inventory.controller.clone();
    let params = inventory.migration.params;
    let log = options.log.clone().unwrap_or_else(log_to_stderr);
    let run_dir = evac_run::open_run_dir(&inventory.name, inventory.run_dir.as_deref(), &mut options)?;
    options.stall_after = options.stall_after.or(inventory.stall_after);
    inventory.run_dir = Some(run_dir);
    inventory.start = options.start.unwrap_or(inventory.start);
    let backend = QemuBackend::connect(inventory, log, options.replay.as_ref()).await?;
    evac_run::run(backend, params, config, options, shutdown)
        .await
        .map(RunOutput::from)
}

/// Drives the controller `make` builds for the inventory's fleet.
pub async fn run_with_controller<C, F>(
    inventory: Inventory,
    make: F,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunOutput>
where
    C: Controller,
    F: FnOnce(&Fleet) -> C,
{
    let config = inventory.controller.clone();
    let stall_after = inventory.stall_after;
    let backend = QemuBackend::connect(inventory, log_to_stderr(), None).await?;
    let controller = make(evac_run::Backend::fleet(&backend));
    let options = RunOptions {
        stall_after,
        ..RunOptions::default()
    };
    evac_run::run_with_controller(backend, controller, &config, options, shutdown)
        .await
        .map(RunOutput::from)
}

/// The frame a retransmitted TCP segment takes on an Ethernet NIC of MTU
/// 1500: 1448 bytes of payload, 32 of TCP header with timestamps, 20 of IP,
/// 14 of Ethernet. Migration streams send full segments, so their
/// retransmissions are these (a jumbo-frame NIC's are larger: the estimate
/// then leaves some retransmitted bytes counted).
pub const RETRANSMITTED_FRAME: u64 = 1514;

/// Transmitted bytes of the non-`lo` interfaces in the network namespace of
/// `pid`, less the namespace's TCP retransmissions.
///
/// Why less: a retransmission is a byte the bottleneck dropped, sent again.
/// Counted, it made the throughput the controller sees rise with the loss
/// that more migrations cause, not with what reaches the other site: three
/// migrations on the lab's 200 Mbit/s WAN measured 210-255 Mbit/s, period
/// to period, where two measured 200, so a probe seemed to pay off where it
/// bought nothing (docs/lab.md). What the simulator and the policies call
/// throughput is what gets through.
pub fn netns_tx_bytes(pid: u32) -> Option<u64> {
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let tx = parse_net_dev_tx(&dev);
    let retransmitted = std::fs::read_to_string(format!("/proc/{pid}/net/snmp"))
        .ok()
        .and_then(|snmp| parse_snmp_tcp(&snmp, "RetransSegs"))
        .unwrap_or(0);
    Some(tx.saturating_sub(retransmitted.saturating_mul(RETRANSMITTED_FRAME)))
}

/// The counter `field` of the `Tcp:` lines of `/proc/net/snmp` (a line of
/// names, then a line of values).
pub fn parse_snmp_tcp(text: &str, field: &str) -> Option<u64> {
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let index = names.split_whitespace().position(|n| n == field)?;
    values.split_whitespace().nth(index)?.parse().ok()
}

/// Sums the transmit bytes (the 9th number) of every interface but `lo`.
pub fn parse_net_dev_tx(text: &str) -> u64 {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            if name.trim() == "lo" {
                return None;
            }
            counters.split_whitespace().nth(8)?.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use evac_model::{BitsPerSec, Site};

    #[test]
    fn sums_tx_bytes_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0
  eth0: 5000 10 0 0 0 0 0 0 7000 20 0 0 0 0 0 0
 veth1: 1 1 0 0 0 0 0 0 300 3 0 0 0 0 0 0
";
        assert_eq!(parse_net_dev_tx(text), 7300);
    }

    #[test]
    fn reads_a_tcp_counter_by_its_name() {
        let text = "Udp: InDatagrams NoPorts
Udp: 5 6
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 1034 1010 1 21 0 808935 803307 103 0 26 0
";
        assert_eq!(parse_snmp_tcp(text, "RetransSegs"), Some(103));
        assert_eq!(parse_snmp_tcp(text, "OutSegs"), Some(803307));
        assert_eq!(parse_snmp_tcp(text, "NoPorts"), None);
        assert_eq!(parse_snmp_tcp("Tcp: RetransSegs\n", "RetransSegs"), None);
    }

    #[test]
    fn expands_the_incoming_command() {
        let host = HostSpec {
            migration_cpus: None,
            name: "dst-1".into(),
            site: Site::Destination,
            nic: BitsPerSec::gbps(1.0),
            memory: None,
            power_off_at: None,
            ups: None,
            ups_margin: None,
            migration_address: Some("10.0.0.2".into()),
            incoming_command: "ip netns exec {netns} qemu-system-x86_64 -name {vm}@{host}".into(),
            netns: Some("evac-dst".into()),
            tls_dir: None,
            tls_name: None,
        };
        assert_eq!(
            attempt::expand_template(&host, "vm-1"),
            [
                "ip",
                "netns",
                "exec",
                "evac-dst",
                "qemu-system-x86_64",
                "-name",
                "vm-1@dst-1"
            ]
        );
        assert_eq!(attempt::bandwidth(None), attempt::UNLIMITED_BYTES_PER_SEC);
        assert_eq!(attempt::bandwidth(Some(BitsPerSec::mbps(80.0))), 10_000_000);
    }
}
