//! The scrape endpoint over real TCP on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use evac_metrics::{serve, Metrics, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn server() -> (
    std::net::SocketAddr,
    Arc<Metrics>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, metrics.clone(), async move {
        let _ = stopped.await;
    }));
    (addr, metrics, stop)
}

async fn request(addr: std::net::SocketAddr, text: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(text).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut out))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    out
}

#[tokio::test]
async fn scrapes_answer_and_everything_else_is_refused() {
    let (addr, metrics, _stop) = server().await;
    metrics.update(&Snapshot {
        migrated: 7,
        ..Snapshot::default()
    });
    let ok = request(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("\nevac_vms{outcome=\"migrated\"} 7\n"), "{ok}");
    let (head, body) = ok.split_once("\r\n\r\n").unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len());

    let missing = request(addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let post = request(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let refused = request(addr, huge.as_bytes()).await;
    assert!(
        refused.starts_with("HTTP/1.1 431"),
        "{}",
        &refused[..refused.len().min(80)]
    );
}

#[tokio::test]
async fn a_silent_client_is_dropped_and_does_not_block_others() {
    let (addr, _metrics, _stop) = server().await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Another client is served meanwhile.
    let ok = request(addr, b"GET /metrics HTTP/1.0\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // The silent one is closed without an answer after the 5 s limit.
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(15), silent.read_to_end(&mut buf))
        .await
        .expect("closed within 15 s")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
