//! Postcopy on a real libvirt lab, as on QEMU (`crates/qemu/tests/postcopy.rs`):
//! a guest whose precopy cannot converge completes by postcopy
//! (`VIR_MIGRATE_POSTCOPY`, then `virDomainMigrateStartPostCopy`) and keeps
//! its memory; a domain whose RAM is a file is refused postcopy and stays,
//! intact, on its source.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use evac_lab::libvirt::{self as lab, Lab, LabOptions};
use evac_lab::{DIRTY_FILL_PATTERN, DIRTY_WORKING_SET_START};
use evac_libvirt::backend::run_with_options;
use evac_libvirt::inventory::Inventory;
use evac_model::{BytesPerSec, Mode};
use evac_outcome::Outcome;
use evac_run::RunOptions;

/// 128 MiB of anonymous RAM, every page marked at boot, then 60 MB/s
/// dirtied over 16 MiB, sent at 400 Mbit/s (50 MB/s): the guest dirties
/// faster than the link carries, so no precopy round can ever end with
/// less left than it started with, let alone within a 1 ms downtime limit.
const MIB: u64 = 128;
const DIRTY_RATE: BytesPerSec = BytesPerSec(60e6);
const WORKING_SET_MIB: u64 = 16;

/// One test at a time: each keeps a core busy with a dirtying guest.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn lab() -> Lab {
    Lab::start(&LabOptions::pair(false)).unwrap()
}

fn inventory(lab: &Lab) -> Inventory {
    let text = lab.pair_inventory(
        "mode = \"postcopy\"\ndowntime_limit = \"1 ms\"",
        "policy = \"sequential\"\nperiod = \"500 ms\"\nmax_attempts = 1",
    );
    Inventory::from_str_at(&text, Path::new("lab.toml")).unwrap()
}

/// The guest-physical addresses of the first dword of one page per MiB
/// outside the working set: below it from 1 MiB, above it to the top.
fn filled_pages() -> Vec<u64> {
    let ws_start = DIRTY_WORKING_SET_START >> 20;
    (1..ws_start)
        .chain(ws_start + WORKING_SET_MIB..MIB)
        .map(|mib| mib << 20)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_cannot_converge_completes_by_postcopy_and_keeps_its_memory() {
    evac_lab::skip_without!(&[lab::libvirt_lab_available, evac_lab::dirty_guest_available]);
    let _serial = SERIAL.lock().await;
    let lab = lab();
    let name = lab
        .start_filled_dirtying_domain(0, "pc", MIB, DIRTY_RATE, WORKING_SET_MIB)
        .unwrap();
    // The fill is done within a second of boot; the check below must see it
    // on the source first, or it would prove nothing at the destination.
    let top = (MIB - 1) << 20;
    assert!(
        evac_lab::process::wait_until(Duration::from_secs(20), || {
            lab.peek_u32(0, &name, top).is_ok_and(|w| w == DIRTY_FILL_PATTERN)
        }),
        "the guest never filled its memory"
    );

    // Whether libvirt ever says the domain is in postcopy (source paused
    // for it, or destination running in it), watched from a thread: what
    // shows the switch happened, independently of evac's record.
    let lab = std::sync::Arc::new(lab);
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let watcher = {
        let (lab, done, name) = (lab.clone(), done.clone(), name.clone());
        std::thread::spawn(move || {
            let mut seen = false;
            while !done.load(Ordering::Relaxed) && !seen {
                seen = (0..2).any(|host| lab.in_postcopy(host, &name).unwrap_or(false));
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        })
    };
    let out = run_with_options(inventory(&lab), RunOptions::default(), std::future::pending())
        .await
        .unwrap();
    done.store(true, Ordering::Relaxed);
    assert!(
        watcher.join().unwrap(),
        "libvirt never reported the domain in postcopy"
    );
    let vm = &out.result.vms[0];
    assert_eq!(vm.outcome, Outcome::Migrated, "{vm:?}");
    assert_eq!(vm.mode, Some(Mode::Postcopy), "{vm:?}");
    assert_eq!(out.landed[0].as_ref().unwrap().host, lab.hosts[1].hostname);
    assert!(lab.running_domains(0).unwrap().is_empty());
    assert_eq!(lab.running_domains(1).unwrap(), std::slice::from_ref(&name));

    // Its memory at the destination: every page outside the working set
    // still holds the fill (a page postcopy lost would read 0).
    let wrong: Vec<String> = filled_pages()
        .into_iter()
        .filter_map(|addr| match lab.peek_u32(1, &name, addr) {
            Ok(w) if w == DIRTY_FILL_PATTERN => None,
            other => Some(format!("{addr:#x}: {other:?}")),
        })
        .collect();
    assert!(wrong.is_empty(), "pages lost: {wrong:?}");
    // And it runs there: its working set keeps changing.
    let at = DIRTY_WORKING_SET_START;
    let before: Vec<u32> = (0..64)
        .map(|p| lab.peek_u32(1, &name, at + p * 4096).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<u32> = (0..64)
        .map(|p| lab.peek_u32(1, &name, at + p * 4096).unwrap())
        .collect();
    assert_ne!(before, after, "the guest does not run at its destination");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backed_ram_is_refused_postcopy_and_stays_intact_on_its_source() {
    evac_lab::skip_without!(&[lab::libvirt_lab_available]);
    let _serial = SERIAL.lock().await;
    let lab = lab();
    let ram = lab.ram_file("fb", 32, None).unwrap();
    let before = std::fs::read(&ram).unwrap();
    let name = lab.start_domain(0, "fb", 32, &ram).unwrap();
    let out = run_with_options(inventory(&lab), RunOptions::default(), std::future::pending())
        .await
        .unwrap();
    let vm = &out.result.vms[0];
    assert_ne!(vm.outcome, Outcome::Migrated, "{vm:?}");
    let failed = &out.result.failed_attempts;
    assert!(
        failed.iter().any(|f| f
            .reason
            .contains("postcopy refused: its memory is a QEMU memory-backend-file")),
        "{failed:?}"
    );
    assert_eq!(lab.running_domains(0).unwrap(), [name]);
    assert!(lab.running_domains(1).unwrap().is_empty());
    assert!(std::fs::read(&ram).unwrap() == before, "the RAM file changed");
}
