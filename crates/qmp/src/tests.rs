//! Tests against a fake QMP server on a unix socket.

use super::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

const GREETING: &str =
    r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}"#;

/// A client connected to a fake QEMU that greets, then answers each
/// command with `reply(command, id)` (a list of lines to send back; `None`
/// closes the socket). The directory holds the socket: keep it for the
/// test's length.
async fn fake_qemu<F>(reply: F) -> (tempfile::TempDir, Qmp)
where
    F: Fn(&str, &Value) -> Option<Vec<String>> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        write.write_all(format!("{GREETING}\n").as_bytes()).await.unwrap();
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let message: Value = serde_json::from_str(&line).unwrap();
            let command = message["execute"].as_str().unwrap().to_owned();
            let id = message["id"].clone();
            match reply(&command, &id) {
                Some(out) => {
                    for l in out {
                        write.write_all(format!("{l}\n").as_bytes()).await.unwrap();
                    }
                }
                None => return,
            }
        }
    });
    let qmp = Qmp::connect(path.to_str().unwrap()).await.unwrap();
    (dir, qmp)
}

/// [`fake_qemu`] returning each of `returns`' values for its command, and
/// `{}` for any other command.
async fn fake_qemu_returning(returns: Vec<(&'static str, Value)>) -> (tempfile::TempDir, Qmp) {
    fake_qemu(move |command, id| {
        let value = returns
            .iter()
            .find(|(c, _)| *c == command)
            .map(|(_, v)| v.clone());
        Some(vec![ok(id, value.unwrap_or_else(|| json!({})))])
    })
    .await
}

fn ok(id: &Value, value: Value) -> String {
    json!({"return": value, "id": id}).to_string()
}

#[test]
fn tls_parameters_have_qemus_names() {
    let p = MigrationParameters {
        tls_creds: Some("creds0".into()),
        tls_hostname: Some(String::new()),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&p).unwrap(),
        json!({"tls-creds": "creds0", "tls-hostname": ""})
    );
}

#[tokio::test]
async fn matches_replies_by_id_and_parses_query_migrate() {
    let (_dir, qmp) = fake_qemu_returning(vec![
        (
            "query-migrate",
            json!({"status": "active", "total-time": 1200, "expected-downtime": 30,
                   "some-new-field": {"x": 1},
                   "ram": {"transferred": 1000, "remaining": 24, "total": 4096, "mbps": 812.5,
                           "dirty-pages-rate": 10, "dirty-sync-count": 3, "page-size": 4096,
                           "new-counter": 7}}),
        ),
        (
            "query-status",
            json!({"status": "some-future-state", "running": false, "singlestep": false}),
        ),
    ])
    .await;
    let info = qmp.query_migrate().await.unwrap();
    assert_eq!(info.status, Some(MigrationStatus::Active));
    let ram = info.ram.unwrap();
    assert_eq!(
        (
            ram.transferred,
            ram.remaining,
            ram.dirty_sync_count,
            ram.page_size
        ),
        (1000, 24, 3, 4096)
    );
    assert_eq!(ram.mbps, 812.5);
    assert_eq!(info.total_time, Some(1200));
    let status = qmp.query_status().await.unwrap();
    assert_eq!(status.status, RunState::Other);
    qmp.stop().await.unwrap();
}

#[tokio::test]
async fn reports_command_errors_with_class_and_desc() {
    let (_dir, qmp) = fake_qemu(|command, id| {
        Some(match command {
            "qmp_capabilities" => vec![ok(id, json!({}))],
            _ => vec![
                json!({"error": {"class": "GenericError", "desc": "no migration"}, "id": id}).to_string(),
            ],
        })
    })
    .await;
    match qmp.migrate_cancel().await {
        Err(QmpError::Command { class, desc }) => {
            assert_eq!(class, "GenericError");
            assert_eq!(desc, "no migration");
        }
        other => panic!("expected a command error, got {other:?}"),
    }
}

#[tokio::test]
async fn delivers_events_and_out_of_order_replies() {
    let (_dir, qmp) = fake_qemu(|command, id| {
        Some(match command {
            "cont" => vec![
                r#"{"timestamp": {"seconds": 5, "microseconds": 6}, "event": "RESUME"}"#.to_owned(),
                r#"{"timestamp": {"seconds": 5, "microseconds": 7}, "event": "MIGRATION", "data": {"status": "completed"}}"#
                    .to_owned(),
                ok(id, json!({})),
            ],
            _ => vec![ok(id, json!({}))],
        })
    })
    .await;
    let mut events = qmp.events();
    qmp.cont().await.unwrap();
    let resume = events.recv().await.unwrap();
    assert_eq!(resume.name, "RESUME");
    assert_eq!(
        resume.timestamp,
        Timestamp {
            seconds: 5,
            microseconds: 6
        }
    );
    let migration = events.recv().await.unwrap();
    assert_eq!(migration.migration_status(), Some(MigrationStatus::Completed));
}

#[tokio::test]
async fn a_closed_socket_is_disconnected_and_a_silent_one_times_out() {
    let (_dir, qmp) = fake_qemu(|command, id| match command {
        "qmp_capabilities" => Some(vec![ok(id, json!({}))]),
        "stop" => Some(vec![]), // never answers
        _ => None,              // hangs up
    })
    .await;
    let err = qmp
        .execute_with_timeout("stop", None, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, QmpError::Timeout { .. }), "{err:?}");
    let err = qmp.query_status().await.unwrap_err();
    assert!(matches!(err, QmpError::Disconnected), "{err:?}");
    qmp.closed().await;
    assert!(qmp.is_closed());
    assert!(matches!(qmp.cont().await, Err(QmpError::Disconnected)));
}

#[test]
fn parses_addresses() {
    assert_eq!(QmpAddr::parse("/run/a.qmp"), QmpAddr::Unix("/run/a.qmp".into()));
    assert_eq!(QmpAddr::parse("unix:a.qmp"), QmpAddr::Unix("a.qmp".into()));
    assert_eq!(
        QmpAddr::parse("127.0.0.1:4444"),
        QmpAddr::Tcp("127.0.0.1:4444".into())
    );
    assert_eq!(QmpAddr::parse("tcp:h:1"), QmpAddr::Tcp("h:1".into()));
    assert_eq!(QmpAddr::parse("vm.qmp"), QmpAddr::Unix("vm.qmp".into()));
}

#[test]
fn serializes_only_the_parameters_given() {
    let p = MigrationParameters {
        max_bandwidth: Some(125_000_000),
        downtime_limit: Some(300),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&p).unwrap(),
        json!({"max-bandwidth": 125_000_000u64, "downtime-limit": 300})
    );
}

#[tokio::test]
async fn reads_the_bound_port_from_a_destinations_query_migrate() {
    // QEMU 7.2's reply on a destination after
    // `migrate-incoming tcp:127.0.0.1:0`: no status, the port a string.
    let (_dir, qmp) = fake_qemu_returning(vec![(
        "query-migrate",
        json!({"socket-address": [
            {"port": "42209", "ipv4": true, "host": "127.0.0.1", "type": "inet"}
        ]}),
    )])
    .await;
    let info = qmp.query_migrate().await.unwrap();
    assert_eq!(info.status, None);
    assert_eq!(
        info.socket_address,
        vec![SocketAddress::Inet(InetSocketAddress {
            host: "127.0.0.1".into(),
            port: "42209".into(),
            ipv4: Some(true),
            ipv6: None,
        })]
    );
    assert_eq!(info.listening_port(), Some(42209));
}

#[test]
fn socket_addresses_are_parsed_tolerantly() {
    let info: MigrationInfo = serde_json::from_value(json!({
        "status": "setup",
        "socket-address": [
            {"type": "unix", "path": "/run/x.sock"},
            {"type": "some-future-type", "whatever": 1},
            {"type": "inet", "host": "::1", "port": "0"},
            {"type": "inet", "host": "::1", "port": "not-a-port"},
            {"no-type": true},
            {"type": "inet", "host": "10.0.0.2", "port": 4444, "keep-alive": true}
        ]
    }))
    .unwrap();
    assert_eq!(info.status, Some(MigrationStatus::Setup));
    assert_eq!(info.socket_address.len(), 5, "{:?}", info.socket_address);
    assert_eq!(
        info.socket_address[0],
        SocketAddress::Unix {
            path: "/run/x.sock".into()
        }
    );
    assert_eq!(info.socket_address[1], SocketAddress::Other);
    assert_eq!(info.socket_address[1].inet_port(), None);
    // Port 0 and a service name are no usable port: the numeric one is.
    assert_eq!(info.listening_port(), Some(4444));

    // A source's reply has none; nor has a malformed one.
    let source: MigrationInfo = serde_json::from_value(json!({"status": "active"})).unwrap();
    assert!(source.socket_address.is_empty());
    assert_eq!(source.listening_port(), None);
    let odd: MigrationInfo = serde_json::from_value(json!({"socket-address": "tcp:x:1"})).unwrap();
    assert!(odd.socket_address.is_empty());
}

/// A peer that sends whatever `send` says, once connected.
async fn raw_server(dir: &tempfile::TempDir, send: Vec<u8>, then_greet: bool) -> String {
    let path = dir.path().join("raw.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        if then_greet {
            write.write_all(format!("{GREETING}\n").as_bytes()).await.unwrap();
            // Answer `qmp_capabilities`, then flood.
            let mut lines = BufReader::new(read).lines();
            let line = lines.next_line().await.unwrap().unwrap();
            let id = serde_json::from_str::<Value>(&line).unwrap()["id"].clone();
            write
                .write_all(format!("{}\n", ok(&id, json!({}))).as_bytes())
                .await
                .unwrap();
            let _ = lines.next_line().await;
            let _ = write.write_all(&send).await;
            // Keep the socket open: only the line limit may end this.
            let _ = lines.next_line().await;
        } else {
            let _ = write.write_all(&send).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(read);
        }
    });
    path.to_str().unwrap().to_owned()
}

/// Why connecting to a peer that sends `send` in place of a greeting fails.
async fn greeting_error(send: Vec<u8>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = raw_server(&dir, send, false).await;
    match Qmp::connect(&path).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("connected without a greeting"),
    }
}

#[tokio::test]
async fn an_endless_greeting_is_cut_at_the_line_limit() {
    let started = tokio::time::Instant::now();
    // 3 MiB without a newline; the socket stays open.
    let err = greeting_error(vec![b'x'; 3 << 20]).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.contains("longer than 1048576 bytes"), "{err}");
    // The error quotes a short prefix, not the flood.
    assert!(err.len() < 300, "{} bytes of error", err.len());
}

#[tokio::test]
async fn a_bad_greeting_is_quoted_short() {
    let mut garbage = vec![b'{'; 1];
    garbage.extend(vec![b'y'; 10_000]);
    garbage.push(b'\n');
    let err = greeting_error(garbage).await;
    assert!(
        err.contains("bad greeting") && err.contains("10001 bytes"),
        "{err}"
    );
    assert!(err.len() < 300, "{} bytes of error", err.len());
}

#[tokio::test]
async fn a_flood_after_the_handshake_ends_the_connection_not_the_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = raw_server(&dir, vec![b'z'; 3 << 20], true).await;
    let qmp = Qmp::connect(&path).await.unwrap();
    qmp.set_timeout(Duration::from_secs(5));
    let started = tokio::time::Instant::now();
    let err = qmp.query_status().await.unwrap_err();
    assert!(matches!(err, QmpError::Disconnected), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert!(qmp.is_closed());
}

#[test]
fn excerpts_cut_on_a_character_boundary() {
    let text = "é".repeat(200);
    let cut = excerpt(&text);
    assert!(
        cut.starts_with(&"é".repeat(80)) && cut.ends_with("(400 bytes)"),
        "{cut}"
    );
    assert_eq!(excerpt("short"), "short");
}
