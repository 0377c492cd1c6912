//! Local disks on a real libvirt lab: refused without `copy_storage`,
//! copied with it (libvirt's non-shared-disk migration: NBD from the
//! destination's QEMU, the source mirroring into it before the memory).

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use evac_lab::libvirt::{self as lab, Lab, LabOptions};
use evac_libvirt::backend::run_with_options;
use evac_libvirt::inventory::Inventory;
use evac_model::Bytes;
use evac_run::{Backend as _, RunOptions};

const MIB: u64 = 1 << 20;

/// 8 MiB of a pattern that no zero page or repeated block matches.
fn pattern() -> Vec<u8> {
    (0..8 * MIB).map(|i| (i.wrapping_mul(7) % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_disk_is_refused_without_copy_storage_and_copied_with_it() {
    let Some(lab) = Lab::unless_missing(&[lab::libvirt_lab_available], &LabOptions::pair(false)) else {
        return;
    };
    // A 64 MiB sparse raw disk on A holding the pattern at 1 MiB; the same
    // path on B (another file: B's own /var/lib/libvirt) pre-created empty
    // and as large, as libvirt needs outside storage pools.
    let (on_a, seen_path) = lab.image_path(0, "evdisk.raw").unwrap();
    let mut disk = std::fs::File::create(&on_a).unwrap();
    disk.set_len(64 * MIB).unwrap();
    disk.seek(SeekFrom::Start(MIB)).unwrap();
    disk.write_all(&pattern()).unwrap();
    disk.sync_all().unwrap();
    drop(disk);
    let (on_b, _) = lab.image_path(1, "evdisk.raw").unwrap();
    std::fs::File::create(&on_b).unwrap().set_len(64 * MIB).unwrap();
    let ram = lab.ram_file("disk", 32, None).unwrap();
    let name = lab
        .start_domain_with_disk(0, "disk0", 32, &ram, &seen_path)
        .unwrap();
    let inventory = |migration: &str| {
        let text = lab.pair_inventory(migration, "policy = \"sequential\"\nperiod = \"500 ms\"");
        Inventory::from_str_at(&text, Path::new("lab.toml")).unwrap()
    };

    // Without copy_storage: refused before anything moves, the disk named.
    let err = run_with_options(inventory(""), RunOptions::default(), std::future::pending())
        .await
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains(&name) && err.contains("vda") && err.contains("copy_storage"),
        "{err}"
    );
    assert_eq!(lab.running_domains(0).unwrap(), vec![name.clone()]);

    // With it, the plan's disk is the host storage the disk occupies (what
    // `du` counts: the file's blocks), at least the 8 MiB written.
    let allocated = std::fs::metadata(&on_a).unwrap().blocks() * 512;
    assert!(allocated >= 8 * MIB, "{allocated}");
    let backend = evac_libvirt::LibvirtBackend::connect(
        inventory("copy_storage = true"),
        evac_run::log_to_stderr(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(backend.fleet().vms[0].disk, Bytes(allocated));
    drop(backend);

    let out = run_with_options(
        inventory("copy_storage = true"),
        RunOptions::default(),
        std::future::pending(),
    )
    .await
    .unwrap();
    let r = &out.result;
    assert_eq!((r.migrated, r.lost), (1, 0), "{r:?}");
    // libvirt's record of the job counts the disk too: more than the 32 MiB
    // of random RAM plus the 8 MiB written to the disk.
    let sent = r.vms[0].bytes_sent.unwrap();
    assert!(sent >= 40 * MIB, "{sent} bytes: the disk is not counted: {r:?}");
    assert!(lab.running_domains(0).unwrap().is_empty());
    assert_eq!(lab.running_domains(1).unwrap(), vec![name]);
    // B's own disk file now holds what A's held.
    let mut copied = vec![0u8; 8 * MIB as usize];
    let mut file = std::fs::File::open(&on_b).unwrap();
    file.seek(SeekFrom::Start(MIB)).unwrap();
    file.read_exact(&mut copied).unwrap();
    assert!(copied == pattern(), "the disk's data did not reach B's file");
}
