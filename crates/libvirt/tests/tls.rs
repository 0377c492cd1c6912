//! Migration TLS on a real two-host lab: a packet capture of the link
//! during the migration of a domain whose RAM is a repeated marker.

use std::time::Duration;

use evac_lab::capture::{count_occurrences, tcpdump_available};
use evac_lab::libvirt::{self as lab, Lab, LabOptions};
use evac_libvirt::client::{MigrateRequest, Migration};

// Generous: the machine is shared and libvirt calls slow down under load.
const T: Duration = Duration::from_secs(60);
const MARKER: &[u8] = b"EVAC-TLS-MARKER-4d61726b65722121";

fn request(lab: &Lab, domain: &str, tls: bool, tls_destination: Option<&str>) -> MigrateRequest {
    MigrateRequest {
        tls,
        tls_destination: tls_destination.map(str::to_owned),
        ..lab.migrate_request(domain)
    }
}

/// Migrates `domain` from host A to host B (with TLS or not) while host B's
/// link is captured into `pcap`; what the capture holds.
async fn migrate_captured(lab: &Lab, domain: &str, tls: bool, pcap: &str) -> Vec<u8> {
    let mut capture = lab.capture(1, &lab.dir.join(pcap)).unwrap();
    let mut m = Migration::start(&lab.hosts[0].uri(), request(lab, domain, tls, None), T)
        .await
        .unwrap();
    m.wait(Duration::from_secs(60)).await.unwrap();
    capture.stop()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marker_is_on_the_wire_without_tls_and_absent_with_it() {
    let Some(lab) = Lab::unless_missing(
        &[
            lab::libvirt_lab_available,
            lab::certtool_available,
            tcpdump_available,
        ],
        &LabOptions::pair(true),
    ) else {
        return;
    };
    let ram = lab.ram_file("marker", 32, Some(MARKER)).unwrap();
    let plain = lab.start_domain(0, "plain", 32, &ram).unwrap();
    let secret = lab.start_domain(0, "secret", 32, &ram).unwrap();
    let bogus = lab.start_domain(0, "bogus", 32, &ram).unwrap();

    let wire = migrate_captured(&lab, &plain, false, "plain.pcap").await;
    // 32 MiB of marker sent in clear: with 256-byte snapshots of ~1448-byte
    // segments, thousands of whole markers must be seen.
    let plain_hits = count_occurrences(&wire, MARKER);
    assert!(plain_hits > 1000, "{plain_hits} markers in {} bytes", wire.len());

    let wire = migrate_captured(&lab, &secret, true, "tls.pcap").await;
    assert_eq!(count_occurrences(&wire, MARKER), 0);
    // The stream did pass through the capture: at least 32 MiB worth of
    // packets, each snapped at 256 bytes, is far more than 100 KiB.
    assert!(wire.len() > 100_000, "only {} bytes captured", wire.len());
    assert_eq!(
        lab.running_domains(1).unwrap(),
        vec![plain.clone(), secret.clone()]
    );

    // A certificate that does not carry the expected name: refused, and the
    // domain still runs on its source.
    let mut m = Migration::start(
        &lab.hosts[0].uri(),
        request(&lab, &bogus, true, Some("not-this-host")),
        T,
    )
    .await
    .unwrap();
    let err = m.wait(Duration::from_secs(60)).await.unwrap_err();
    // evac's error says it was TLS and which name to check; libvirt passes
    // on only the destination's side ("Cannot read from TLS channel"), the
    // source QEMU's log on host A says it was the certificate.
    let err = err.to_string();
    assert!(err.contains("TLS") && err.contains("`not-this-host`"), "{err}");
    let log = lab.hosts[0].dir.join("log/qemu").join(format!("{bogus}.log"));
    let said = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("Certificate does not match the hostname not-this-host")
    };
    assert!(
        evac_lab::process::wait_until(Duration::from_secs(10), || said(&log)),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(lab.running_domains(0).unwrap(), vec![bogus.clone()]);
}
