//! evac-qemu as an [`evac_run::Backend`]: each migration attempt is a task
//! ([`crate::attempt`]) driving a fresh destination QEMU and the source over
//! QMP; its handle ([`QemuMigration`]) talks to that task and reads the
//! source's `query-migrate`.
//!
//! This module connects the fleet and is the backend; `migration` is the
//! handle of one attempt, `rate` how its rate is measured.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use evac_model::{Bytes, Fleet, Network, Site};
use evac_qmp::Qmp;
use evac_run::journal::Replay;
use evac_run::{Log, StartRequest};

use crate::attempt::{self, AttemptCtx};
use crate::inventory::Inventory;

mod migration;
mod rate;

pub use migration::QemuMigration;
pub use rate::RateMeter;

/// Where a migrated VM runs: the destination QEMU evac started.
#[derive(Debug, Clone, PartialEq)]
pub struct Landed {
    pub host: String,
    pub qmp: PathBuf,
    pub pid: u32,
}

/// The QEMU VMs of an inventory, connected.
pub struct QemuBackend {
    inventory: Inventory,
    fleet: Fleet,
    run_dir: PathBuf,
    /// Each VM's source QMP, in inventory order; `None` for a VM a resumed
    /// run finds without its source (it quit after completing).
    sources: Vec<Option<Qmp>>,
    log: Log,
}

impl QemuBackend {
    /// Connects to every VM's QMP (it must be evac's alone) and reads the
    /// memory of those the inventory does not size.
    ///
    /// Resuming (`replay`), a VM the journal shows migrating or migrated may
    /// have no source any more; its memory then comes from the journal.
    pub async fn connect(
        inventory: Inventory,
        log: Log,
        replay: Option<&Replay>,
    ) -> anyhow::Result<QemuBackend> {
        let run_dir = inventory
            .run_dir
            .clone()
            .unwrap_or_else(|| evac_run::default_run_dir(&inventory.name));
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create run_dir {}", run_dir.display()))?;
        let mut sources = Vec::new();
        let mut memory = Vec::new();
        for spec in &inventory.vms {
            let journaled = replay.and_then(|r| {
                let at = r.vms.iter().position(|n| n == &spec.name)?;
                let state = &r.states[at];
                (state.done || state.in_flight.is_some()).then_some(r.memory[at])
            });
            let src = match (Qmp::connect(&spec.qmp).await, journaled) {
                (Ok(src), _) => src,
                (Err(_), Some(size)) => {
                    sources.push(None);
                    memory.push(spec.memory.unwrap_or(size));
                    continue;
                }
                (Err(e), None) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("vm {}: cannot reach its QMP at {}", spec.name, spec.qmp)))
                }
            };
            // Drop the backlog: each attempt subscribes afresh.
            drop(src.events());
            // What QEMU says wins over what the inventory states: a typo
            // there (64 GiB for 64 MiB) would skew every plan and bound.
            let reported = src
                .query_memory_size_summary()
                .await
                .map(|summary| Bytes(summary.base_memory));
            let size = match (spec.memory, reported) {
                (Some(stated), Ok(reported)) if stated != reported => {
                    log(&format!(
                        "WARNING: vm {}: the inventory states memory = \"{stated}\" but QEMU reports {reported} \
                         (query-memory-size-summary); using QEMU's",
                        spec.name
                    ));
                    reported
                }
                (_, Ok(reported)) => reported,
                (Some(stated), Err(e)) => {
                    log(&format!(
                        "vm {}: query-memory-size-summary failed ({e}); using the inventory's {stated}",
                        spec.name
                    ));
                    stated
                }
                (None, Err(e)) => {
                    return Err(
                        anyhow::Error::new(e).context(format!("vm {}: query-memory-size-summary", spec.name))
                    )
                }
            };
            memory.push(size);
            sources.push(Some(src));
        }
        let fleet = inventory.fleet(&memory);
        // Checked again now that QEMU has said each VM's memory.
        fleet.validate().map_err(|invalid| {
            anyhow::anyhow!("inventory `{}`: {}", inventory.name, invalid.named(&fleet))
        })?;
        Ok(QemuBackend {
            fleet,
            inventory,
            run_dir,
            sources,
            log,
        })
    }
}

impl evac_run::Backend for QemuBackend {
    /// Everything the controller asks: postcopy (`migrate-start-postcopy`),
    /// auto-converge at any time (a migration parameter QEMU takes
    /// mid-flight), multifd zstd compression.
    fn capabilities(&self) -> evac_run::Capabilities {
        evac_run::Capabilities {
            postcopy: true,
            auto_converge_in_flight: true,
            compression: true,
        }
    }

    fn name(&self) -> &'static str {
        "QEMU"
    }

    type Migration = QemuMigration;

    fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    fn network(&self) -> Network {
        self.inventory.network()
    }

    fn start(&mut self, request: StartRequest) -> QemuMigration {
        self.launch(request, None)
    }

    fn reconnect_info(&self, request: &StartRequest) -> serde_json::Value {
        let vm = &self.inventory.vms[request.vm.0].name;
        let sock = attempt::dst_socket(&self.run_dir, vm, request.attempt);
        serde_json::json!({ "qmp": sock })
    }

    fn adopt(&mut self, request: StartRequest, info: &serde_json::Value) -> Option<QemuMigration> {
        let sock = match info.get("qmp").and_then(|q| q.as_str()) {
            Some(path) => PathBuf::from(path),
            None => attempt::dst_socket(
                &self.run_dir,
                &self.inventory.vms[request.vm.0].name,
                request.attempt,
            ),
        };
        Some(self.launch(request, Some(sock)))
    }

    /// A source host with a `netns`: the transmit counter of that namespace
    /// (read through a live source QEMU in it), guests' traffic included.
    async fn host_tx(&mut self) -> Vec<Option<Bytes>> {
        let mut tx = vec![None; self.fleet.hosts.len()];
        for (host, spec) in self.inventory.hosts.iter().enumerate() {
            if spec.site != Site::Source || spec.netns.is_none() {
                continue;
            }
            tx[host] = self
                .fleet
                .vms
                .iter()
                .zip(&self.sources)
                .filter_map(|(vm, src)| src.as_ref().map(|src| (vm, src)))
                .filter(|(vm, src)| vm.host.0 == host && !src.is_closed())
                .find_map(|(_, src)| src.peer_pid().and_then(crate::netns_tx_bytes))
                .map(Bytes);
        }
        tx
    }
}

impl QemuBackend {
    /// What an attempt of `request` from the source `src` needs: its VM,
    /// the destination host, and where the TLS credentials of both ends
    /// are when the stream is TLS.
    fn attempt_ctx(&self, request: &StartRequest, src: &Qmp) -> AttemptCtx {
        let vm = request.vm.0;
        AttemptCtx {
            vm: self.inventory.vms[vm].name.clone(),
            attempt: request.attempt,
            src: src.clone(),
            dst_host: self.inventory.hosts[request.destination.0].clone(),
            qemu_args: self.inventory.vms[vm].qemu_args.clone(),
            run_dir: self.run_dir.clone(),
            params: request.params,
            tls: self.inventory.migration.tls.then(|| {
                let src_name = &self.inventory.vms[vm].host;
                let src_dir = self
                    .inventory
                    .hosts
                    .iter()
                    .find(|h| &h.name == src_name)
                    .map_or(Path::new(crate::inventory::DEFAULT_TLS_DIR), |h| h.tls_dir());
                let dst_host = &self.inventory.hosts[request.destination.0];
                attempt::TlsCtx {
                    src_dir: src_dir.to_owned(),
                    dst_dir: dst_host.tls_dir().to_owned(),
                    hostname: dst_host.tls_name.clone(),
                }
            }),
            log: self.log.clone(),
        }
    }
}
