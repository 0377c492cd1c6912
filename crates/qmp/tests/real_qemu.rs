//! Against a real QEMU; skipped (with the reason printed) where
//! `qemu-system-x86_64` is not installed, failed there when
//! `EVAC_REQUIRE_LAB=1` (as in CI).

use std::process::{Command, Stdio};
use std::time::Duration;

use evac_qmp::{
    MigrationCapability, MigrationParameters, MigrationStatus, Qmp, QmpError, RunState, SocketAddress,
};

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qemu(args: &[&str]) -> Option<Kill> {
    match Command::new("qemu-system-x86_64")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => Some(Kill(child)),
        Err(e) => {
            let why = format!("cannot run qemu-system-x86_64 ({e}); install qemu-system-x86");
            // The same rule as `evac_lab::skip_without` (this crate
            // sits below evac-qemu and cannot use it): under
            // EVAC_REQUIRE_LAB a missing QEMU fails the test.
            if std::env::var_os("EVAC_REQUIRE_LAB").is_some_and(|v| !v.is_empty() && v != "0") {
                panic!("EVAC_REQUIRE_LAB is set but this test cannot run: {why}");
            }
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

/// A paused QEMU of 64 MiB with no devices and `extra` arguments, and a
/// client of its QMP socket (in `dir`); `None` where QEMU cannot run.
async fn paused_qemu(dir: &std::path::Path, extra: &[&str]) -> Option<(Kill, Qmp)> {
    let sock = dir.join("vm.qmp");
    let qmp_arg = format!("unix:{},server=on,wait=off", sock.display());
    let mut args = vec![
        "-S",
        "-nodefaults",
        "-display",
        "none",
        "-m",
        "64M",
        "-qmp",
        &qmp_arg,
    ];
    args.extend(extra);
    let child = qemu(&args)?;
    let qmp = Qmp::connect_retry(sock.to_str().unwrap(), Duration::from_secs(10))
        .await
        .unwrap();
    Some((child, qmp))
}

#[tokio::test]
async fn talks_to_a_real_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut child, qmp)) = paused_qemu(dir.path(), &[]).await else {
        return;
    };
    assert_eq!(qmp.peer_pid(), Some(child.0.id()));
    assert_eq!(qmp.query_status().await.unwrap().status, RunState::Prelaunch);
    assert_eq!(
        qmp.query_memory_size_summary().await.unwrap().base_memory,
        64 << 20
    );
    let info = qmp.query_migrate().await.unwrap();
    assert!(info.status.is_none() || info.status == Some(MigrationStatus::None));
    qmp.migrate_set_capabilities(&[
        (MigrationCapability::Events, true),
        (MigrationCapability::AutoConverge, true),
    ])
    .await
    .unwrap();
    qmp.migrate_set_parameters(&MigrationParameters {
        max_bandwidth: Some(1 << 40),
        downtime_limit: Some(500),
        multifd_channels: Some(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let params = qmp.execute("query-migrate-parameters", None).await.unwrap();
    assert_eq!(params["downtime-limit"], 500);
    assert_eq!(params["max-bandwidth"], 1u64 << 40);
    let mut events = qmp.events();
    qmp.cont().await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.name, "RESUME");
    assert!(qmp.query_status().await.unwrap().running);
    match qmp.execute("no-such-command", None).await {
        Err(QmpError::Command { class, .. }) => assert_eq!(class, "CommandNotFound"),
        other => panic!("{other:?}"),
    }
    qmp.quit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), qmp.closed())
        .await
        .unwrap();
    assert!(matches!(qmp.query_status().await, Err(QmpError::Disconnected)));
    let status = child.0.wait().unwrap();
    assert!(status.success());
}

/// `migrate-incoming tcp:127.0.0.1:0` lets QEMU pick the port; the
/// destination's `query-migrate` tells which (`socket-address`).
#[tokio::test]
async fn an_incoming_migration_on_port_zero_reports_the_bound_port() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_child, qmp)) = paused_qemu(dir.path(), &["-machine", "q35", "-incoming", "defer"]).await
    else {
        return;
    };
    assert_eq!(qmp.query_migrate().await.unwrap().listening_port(), None);
    qmp.migrate_incoming("tcp:127.0.0.1:0").await.unwrap();
    let info = qmp.query_migrate().await.unwrap();
    let port = info
        .listening_port()
        .unwrap_or_else(|| panic!("no listening port in {info:?}"));
    assert_ne!(port, 0);
    assert!(
        info.socket_address.iter().any(|a| matches!(
            a,
            SocketAddress::Inet(inet) if inet.host == "127.0.0.1" && inet.port == port.to_string()
        )),
        "{info:?}"
    );
    // QEMU listens there: a connection is accepted (and, not being a
    // migration stream, makes the destination give up).
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .expect("connect timed out")
    .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"));
}
