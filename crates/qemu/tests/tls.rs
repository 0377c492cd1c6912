//! Migration TLS through `evac run`'s QEMU backend, between two network
//! namespaces: a packet capture on the destination's link of migrations of
//! VMs whose RAM is a repeated marker (the marker is on the wire without
//! TLS, absent with it, with one connection or two multifd channels), and a destination whose certificate does not carry
//! the name the source checks (the migration fails, QEMU says it was the
//! certificate, and the VM still runs on its source).
//!
//! Needs root, `ip`/`tc`, QEMU, `certtool` (gnutls-bin) and `tcpdump`;
//! skipped with the reason printed otherwise (a failure under
//! `EVAC_REQUIRE_LAB=1`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use evac_lab::capture::{count_occurrences, pcap_totals, tcpdump_available, Capture};
use evac_lab::{self as lab, Guest, Lab, LabNetwork, LabVm, ShapedLab, Shaping};
use evac_qemu::{run_detailed, Inventory, Placement, RunOutput};
use evac_qmp::{Qmp, RunState};
use evac_report::Outcome;

const MARKER: &[u8] = b"EVAC-QEMU-TLS-MARKER-0123456789!";
const MIB: u64 = 32;

/// What these tests need.
const NEEDS: &[lab::Prerequisite] = &[
    lab::qemu_available,
    lab::netns_available,
    evac_pki::certtool_available,
    tcpdump_available,
];

/// A CA, and a certificate directory per lab host naming it by a DNS name
/// and its veth address. Returns (source dir, destination dir).
fn certificates(dir: &Path) -> (PathBuf, PathBuf) {
    let ca = evac_pki::Ca::create(&dir.join("ca"), "evac qemu tls test CA").unwrap();
    let src = dir.join("pki-src");
    let dst = dir.join("pki-dst");
    for (path, name, ip) in [
        (&src, "evac-src.lab", LabNetwork::SRC_ADDRESS),
        (&dst, "evac-dst.lab", LabNetwork::DST_ADDRESS),
    ] {
        ca.issue_host(path, &evac_pki::HostIdentity { name, ip: Some(ip) })
            .unwrap();
    }
    (src, dst)
}

/// The lab's inventory for `vms` in its own run dir `run`, with `migration`
/// added to `[migration]`, each host's `tls_dir`, and `dst_extra` added to the
/// destination host. One attempt per VM: a certificate that is refused
/// once is refused again.
fn inventory(
    lab: &Lab,
    net: &LabNetwork,
    vm: &LabVm,
    run: &str,
    migration: &str,
    pki: &(PathBuf, PathBuf),
    dst_extra: &str,
) -> Inventory {
    let text = lab
        .inventory_in(net, "sequential", std::slice::from_ref(vm), migration)
        .replace(
            &format!("run_dir = \"{}\"", lab.dir.display()),
            &format!("run_dir = \"{}\"", lab.dir.join(run).display()),
        )
        .replace("period = \"500 ms\"\n", "period = \"500 ms\"\nmax_attempts = 1\n")
        .replace(
            "name = \"src\"\n",
            &format!("name = \"src\"\ntls_dir = \"{}\"\n", pki.0.display()),
        )
        .replace(
            "name = \"dst\"\n",
            &format!("name = \"dst\"\ntls_dir = \"{}\"\n{dst_extra}", pki.1.display()),
        );
    Inventory::from_str_at(&text, Path::new("tls.toml")).unwrap()
}

/// What every run here shares: the runtime they run on and the lab network
/// they cross.
struct Runs<'a> {
    runtime: tokio::runtime::Runtime,
    net: &'a LabNetwork,
}

impl Runs<'_> {
    /// Moves `vm` with the [`inventory`] of these arguments.
    fn run(&self, lab: &Lab, vm: &LabVm, run: &str, migration: &str, pki: &(PathBuf, PathBuf)) -> RunOutput {
        self.run_to(lab, vm, run, migration, pki, "")
    }

    /// [`Runs::run`] while the destination's link is captured into
    /// `<run>.pcap`, and checked [`migrated`]: what the capture holds and
    /// the destination's monitor. Whole packets: the veth hands tcpdump
    /// GRO segments of up to 64 KiB, so a short snap length would see only
    /// their heads.
    fn run_captured(
        &self,
        lab: &mut Lab,
        vm: &LabVm,
        run: &str,
        migration: &str,
        pki: &(PathBuf, PathBuf),
    ) -> (Vec<u8>, PathBuf) {
        let pcap = lab.dir.join(format!("{run}.pcap"));
        let mut capture = Capture::start(&self.net.dst, LabNetwork::DST_DEV, "tcp", 0, &pcap).unwrap();
        let out = self.run(lab, vm, run, migration, pki);
        let wire = capture.stop();
        (wire, migrated(lab, &out, vm))
    }

    /// [`Runs::run`] with `dst_extra` added to the destination host.
    fn run_to(
        &self,
        lab: &Lab,
        vm: &LabVm,
        run: &str,
        migration: &str,
        pki: &(PathBuf, PathBuf),
        dst_extra: &str,
    ) -> RunOutput {
        let inv = inventory(lab, self.net, vm, run, migration, pki, dst_extra);
        self.runtime
            .block_on(async { tokio::spawn(run_detailed(inv, None, std::future::pending())).await })
            .unwrap()
            .unwrap()
    }

    /// The source QMP of `vm`, which must still run there.
    fn still_at_source(&self, lab: &mut Lab, vm: &LabVm) -> Qmp {
        assert!(!lab.exited(vm.pid), "the source QEMU of {} exited", vm.name);
        self.runtime.block_on(async {
            let src = Qmp::connect(vm.monitor.to_str().unwrap()).await.unwrap();
            let status = src.query_status().await.unwrap();
            assert_eq!(status.status, RunState::Running, "{} on its source", vm.name);
            src
        })
    }
}

/// A capture `wire` of a TLS migration of `ram` bytes: not one marker, and
/// the capture did hold the stream (most of the RAM's bytes).
fn assert_encrypted(wire: &[u8], ram: f64, what: &str) {
    assert_eq!(count_occurrences(wire, MARKER), 0);
    let totals = pcap_totals(wire).expect("a pcap file");
    eprintln!("{what}: {totals:?}");
    assert!(totals.captured_bytes as f64 > 0.5 * ram, "{totals:?}");
}

/// The VM migrated and runs at its destination; returns the destination's
/// QMP socket.
fn migrated(lab: &mut Lab, out: &RunOutput, vm: &LabVm) -> PathBuf {
    let record = &out.result.vms[0];
    assert_eq!(record.outcome, Outcome::Migrated, "{}", out.result.to_json());
    // What QEMU counted: the guest's RAM went over (all but the few pages
    // the firmware zeroed, which QEMU sends as zero-page flags).
    assert!(
        record.bytes_sent.unwrap() as f64 >= 0.95 * (vm.mib << 20) as f64,
        "{record:?}"
    );
    let Placement::Destination { qmp, pid, .. } = &out.placements[0] else {
        panic!("{} not at its destination: {:?}", vm.name, out.placements[0])
    };
    lab.adopt(*pid);
    qmp.clone()
}

async fn tls_creds_of(qmp: &Path) -> String {
    let q = Qmp::connect(qmp.to_str().unwrap()).await.unwrap();
    assert_eq!(q.query_status().await.unwrap().status, RunState::Running);
    let params = q.execute("query-migrate-parameters", None).await.unwrap();
    params["tls-creds"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn the_marker_is_on_the_wire_without_tls_and_absent_with_it_and_a_wrong_name_is_refused() {
    let mut shaped = lab::shaped_lab_or_skip!(
        NEEDS,
        Shaping {
            rate_bps: 400_000_000,
            burst_bytes: 256 << 10,
            latency: Duration::from_millis(20),
        }
    );
    let ShapedLab { lab, net } = &mut shaped;
    let dir = lab.dir.clone();
    let pki = certificates(&dir);
    let [plain, secret, bogus, multifd] = ["plain", "secret", "bogus", "multifd"].map(|name| {
        lab.start_guest(name, MIB, Guest::Marker(MARKER), Some(&net.src))
            .unwrap()
    });
    let runs = Runs {
        runtime: evac_lab::runtime(),
        net,
    };
    let ram = (MIB << 20) as f64;

    // 1. Plain: the marker crosses the link in clear.
    let (wire, qmp) = runs.run_captured(lab, &plain, "plain", "tls = false", &pki);
    // 32 MiB of 32-byte markers is 1 Mi markers; those cut by a segment
    // boundary, on zeroed pages or (on a loaded machine) dropped by the
    // kernel are missing: at least half.
    let hits = count_occurrences(&wire, MARKER);
    eprintln!("plain: {hits} markers, {:?}", pcap_totals(&wire));
    assert!(
        hits as f64 > 0.5 * ram / MARKER.len() as f64,
        "{hits} markers in {:?}",
        pcap_totals(&wire)
    );
    assert_eq!(runs.runtime.block_on(tls_creds_of(&qmp)), "");

    // 2. TLS: not one marker, though the stream went through the capture.
    let (wire, qmp) = runs.run_captured(lab, &secret, "tls", "tls = true", &pki);
    assert_encrypted(&wire, ram, "tls");
    // TLS records of application data (type 23, version 3.3) carried it.
    let records = count_occurrences(&wire, &[0x17, 0x03, 0x03]);
    assert!(records > 100, "{records} TLS application-data records");
    // The destination QEMU received it through evac's credentials.
    assert_eq!(runs.runtime.block_on(tls_creds_of(&qmp)), "evac-migration-tls");

    // 3. TLS over two multifd channels: every connection is encrypted.
    let (wire, qmp) = runs.run_captured(lab, &multifd, "multifd", "tls = true\nconnections = 2", &pki);
    assert_encrypted(&wire, ram, "tls, multifd");
    assert_eq!(runs.runtime.block_on(tls_creds_of(&qmp)), "evac-migration-tls");

    // 4. The destination's certificate does not carry the name the source
    // checks: refused, said so, and the VM still runs on its source.
    let wrong_name = "tls_name = \"not-this-host.lab\"\n";
    let out = runs.run_to(lab, &bogus, "bogus", "tls = true", &pki, wrong_name);
    let record = &out.result.vms[0];
    assert_ne!(record.outcome, Outcome::Migrated, "{}", out.result.to_json());
    assert_eq!(out.placements[0], Placement::Source);
    let reason = out.result.to_json();
    eprintln!("wrong name: {:?}", record.reason);
    assert!(
        reason.contains("Certificate does not match the hostname not-this-host.lab"),
        "{reason}"
    );
    let src = runs.still_at_source(lab, &bogus);
    let migration = runs.runtime.block_on(src.query_migrate()).unwrap();
    assert_eq!(
        migration.status,
        Some(evac_qmp::MigrationStatus::Failed),
        "{migration:?}"
    );
    drop(src);

    // 5. A destination whose certificate directory is missing: refused
    // before anything is sent, naming the host and the directory.
    let missing = (pki.0.clone(), dir.join("no-such-pki"));
    let out = runs.run(lab, &bogus, "missing", "tls = true", &missing);
    let reason = out.result.vms[0].reason.clone().unwrap_or_default();
    eprintln!("missing dir: {reason}");
    assert_ne!(out.result.vms[0].outcome, Outcome::Migrated);
    assert!(
        reason.contains("destination host dst") && reason.contains("no-such-pki"),
        "{reason}"
    );
    assert!(!reason.contains("certificate check failed"), "{reason}");
    runs.still_at_source(lab, &bogus);
    drop(runs);
    // The lab's QEMUs, then its namespaces.
    drop(shaped);
}
