//! What the libvirt backend's lab tests share.

#![allow(dead_code)] // each test file uses some of these

use evac_libvirt::inventory::Inventory;
use evac_libvirt::{run_with_options, Landed};
use evac_run::{RunOptions, RunOutput};

/// `inventory` evacuated by the run loop to its end, with the lines it
/// logged.
pub async fn run_logged(inventory: Inventory) -> (RunOutput<Landed>, Vec<String>) {
    let (log, said) = evac_run::log_kept();
    let options = RunOptions {
        log: Some(log),
        ..Default::default()
    };
    let out = run_with_options(inventory, options, std::future::pending())
        .await
        .unwrap();
    let said = said.lock().unwrap().clone();
    (out, said)
}
