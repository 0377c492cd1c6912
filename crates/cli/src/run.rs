//! `evac run INVENTORY`: the inventory's `backend` picks the backend; the
//! run loop (evac-run) is the same for all of them.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use evac_controller::PolicyKind;
use evac_run::{BackendKind, Log, RunOptions, RunProgress};

use crate::{progress, write_outputs, OutputArgs};

/// An inventory of either backend.
enum Inventory {
    Qemu(evac_qemu::Inventory),
    Libvirt(evac_libvirt::Inventory),
}

pub fn run(path: &Path, policy: Option<PolicyKind>, quiet: bool, output: &OutputArgs) -> Result<()> {
    let inventory = match backend_of(path) {
        BackendKind::Qemu => Inventory::Qemu(evac_qemu::Inventory::from_path(path)?),
        BackendKind::Libvirt => Inventory::Libvirt(evac_libvirt::Inventory::from_path(path)?),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let display = (!quiet).then(progress::Display::stderr);
        // Messages go above the bars, not through them.
        let log: Log = match &display {
            Some(display) => Arc::new(display.printer()),
            None => evac_run::log_to_stderr(),
        };
        let ctrl_c = {
            let log = log.clone();
            async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    log("Ctrl-C: cancelling the migrations in flight");
                } else {
                    std::future::pending::<()>().await;
                }
            }
        };
        let mut options = RunOptions {
            policy,
            log: Some(log),
            ..Default::default()
        };
        let render = display.map(|mut display| {
            let (tx, mut rx) = tokio::sync::watch::channel(RunProgress::default());
            options.progress = Some(tx);
            tokio::spawn(async move {
                // Ends when the run drops the sender, after its last snapshot.
                while rx.changed().await.is_ok() {
                    let snapshot = rx.borrow_and_update().clone();
                    display.update(&snapshot);
                }
                display.finish();
            })
        });
        let output = match inventory {
            Inventory::Qemu(inventory) => evac_qemu::run_with_options(inventory, options, ctrl_c)
                .await
                .map(|o| o.result),
            Inventory::Libvirt(inventory) => evac_libvirt::run_with_options(inventory, options, ctrl_c)
                .await
                .map(|o| o.result),
        };
        if let Some(render) = render {
            let _ = render.await;
        }
        output
    })?;
    println!("{}", evac_report::summary::render_text(&result));
    write_outputs(&result, output)
}

/// The inventory's top-level `backend`. A file that does not parse is
/// taken as QEMU's: its loader reports the error with file, line and field.
fn backend_of(path: &Path) -> BackendKind {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(default)]
        backend: BackendKind,
    }
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| toml::from_str::<Peek>(&text).ok())
        .map_or(BackendKind::Qemu, |peek| peek.backend)
}
