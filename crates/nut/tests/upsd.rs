//! The client against a real `upsd` (NUT's, from Debian's nut-server)
//! serving a lab UPS: on line power, then on battery, then low battery, as
//! the test sets it; a stopped driver and a dead `upsd` are
//! errors, never a deadline. Loopback only; skipped, with the reason, on a
//! machine without NUT or root, failed under EVAC_REQUIRE_LAB=1.

use std::time::{Duration, Instant};

use evac_lab::upsd::{nut_available, LabUps};
use evac_nut::{read, NutError, Power, PowerOff, UpsAddress};

const WAIT: Duration = Duration::from_secs(2);

/// Removed when dropped, after the UPS (declared before it), a failing
/// test's too.
fn dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("evac-nut-").tempdir().unwrap()
}

async fn reading(ups: &UpsAddress) -> evac_nut::Reading {
    read(ups, WAIT).await.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_draining_ups_reads_as_line_battery_then_low_battery() {
    evac_lab::skip_without!(&[nut_available]);
    let dir = dir();
    let mut server = LabUps::start(dir.path(), "ups1", "ups.status: OL\nbattery.runtime: 3600\n").unwrap();
    let ups: UpsAddress = server.address().parse().unwrap();
    let margin = Duration::from_secs(30);
    let now = Duration::from_secs(10);

    let line = reading(&ups).await;
    assert_eq!(line.power, Power::Line);
    assert_eq!(line.runtime, None, "the runtime is read on battery only");
    assert_eq!(line.power_off(now, margin), PowerOff::None);

    server.set("ups.status: OB\nbattery.runtime: 900\n").unwrap();
    let battery = reading(&ups).await;
    assert_eq!(battery.power, Power::Battery);
    assert_eq!(battery.runtime, Some(Duration::from_secs(900)));
    // 10 s + 900 s - 30 s.
    assert_eq!(
        battery.power_off(now, margin),
        PowerOff::At(Duration::from_secs(880))
    );

    server.set("ups.status: OB LB\nbattery.runtime: 120\n").unwrap();
    let low = reading(&ups).await;
    assert_eq!(low.power, Power::LowBattery);
    assert_eq!(low.power_off(now, margin), PowerOff::At(now));
}

#[tokio::test]
async fn an_unknown_ups_a_dead_driver_and_a_dead_upsd_are_errors_within_the_wait() {
    evac_lab::skip_without!(&[nut_available]);
    let dir = dir();
    let mut server = LabUps::start(dir.path(), "ups2", "ups.status: OL\n").unwrap();
    let port = server.port();
    let other: UpsAddress = format!("nosuch@127.0.0.1:{port}").parse().unwrap();
    match read(&other, WAIT).await {
        Err(NutError::Refused { answer, .. }) => assert!(answer.contains("UNKNOWN-UPS"), "{answer}"),
        other => panic!("{other:?}"),
    }

    let ups: UpsAddress = server.address().parse().unwrap();
    server.stop_driver();
    // upsd notices the driver gone within a few seconds; until then it
    // serves the last values.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        match read(&ups, WAIT).await {
            Err(NutError::Refused { answer, .. }) => {
                assert!(
                    answer.contains("DRIVER-NOT-CONNECTED") || answer.contains("DATA-STALE"),
                    "{answer}"
                );
                break;
            }
            Ok(reading) => assert_eq!(reading.power, Power::Line),
            Err(e) => panic!("{e}"),
        }
        assert!(
            Instant::now() < end,
            "upsd still serves a UPS whose driver is gone"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    server.stop_upsd();
    let started = Instant::now();
    assert!(matches!(read(&ups, WAIT).await, Err(NutError::Connect { .. })));
    assert!(started.elapsed() < WAIT);
}

/// A server that accepts and never answers: the wait bounds the read.
#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let (_socket, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let ups: UpsAddress = format!("ups1@127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    let wait = Duration::from_millis(300);
    assert!(matches!(read(&ups, wait).await, Err(NutError::Timeout { .. })));
    assert!(started.elapsed() < Duration::from_secs(2));
    hold.abort();
}
