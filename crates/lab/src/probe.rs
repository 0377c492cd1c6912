//! Measures the lab's WAN from inside its host namespaces: round-trip times
//! of small UDP datagrams (what `ping` measures, without needing `ping`) and
//! the goodput of TCP connections. Used by tests and by the
//! `wan_accuracy` example that produced the figures in `docs/lab.md`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::netns::in_netns;

/// Sends `count` datagrams from namespace `from` to a UDP echo in
/// namespace `to` at `to_address`, one every `interval`, and returns each
/// round-trip time (datagrams lost within 2 s are left out).
pub fn udp_rtts(
    from: &str,
    to: &str,
    to_address: &str,
    count: usize,
    interval: Duration,
) -> io::Result<Vec<Duration>> {
    let server = in_netns(to, {
        let addr = format!("{to_address}:0");
        move || UdpSocket::bind(addr)
    })??;
    let target: SocketAddr = server.local_addr()?;
    let client = in_netns(from, || UdpSocket::bind("0.0.0.0:0"))??;
    let stop = Arc::new(AtomicBool::new(false));
    let echo = {
        let stop = stop.clone();
        server.set_read_timeout(Some(Duration::from_millis(100)))?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = server.recv_from(&mut buf) {
                    let _ = server.send_to(&buf[..n], peer);
                }
            }
        })
    };
    client.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut rtts = Vec::with_capacity(count);
    let mut buf = [0u8; 64];
    for seq in 0..count as u64 {
        let sent = Instant::now();
        client.send_to(&seq.to_le_bytes(), target)?;
        // Answers to earlier, late datagrams are skipped.
        while let Ok(n) = client.recv(&mut buf) {
            if n == 8 && buf[..8] == seq.to_le_bytes() {
                rtts.push(sent.elapsed());
                break;
            }
        }
        std::thread::sleep(interval.saturating_sub(sent.elapsed()));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    Ok(rtts)
}

/// Runs `connections` TCP connections from namespace `from` to namespace
/// `to` (listening on `to_address`) for `duration` and returns the bytes
/// per second received in all, counted over the last half of `duration`
/// (after slow start).
pub fn tcp_goodput(
    from: &str,
    to: &str,
    to_address: &str,
    connections: usize,
    duration: Duration,
) -> io::Result<f64> {
    let listener = in_netns(to, {
        let addr = format!("{to_address}:0");
        move || TcpListener::bind(addr)
    })??;
    let target = listener.local_addr()?;
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let half = start + duration / 2;
    let end = start + duration;
    let receiver = {
        let counted = counted.clone();
        std::thread::spawn(move || -> io::Result<()> {
            let mut readers = Vec::new();
            for _ in 0..connections {
                let (mut stream, _) = listener.accept()?;
                let counted = counted.clone();
                readers.push(std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                    let mut buf = vec![0u8; 1 << 16];
                    while Instant::now() < end {
                        match stream.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) if Instant::now() >= half => {
                                counted.fetch_add(n as u64, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(e)
                                if e.kind() == io::ErrorKind::WouldBlock
                                    || e.kind() == io::ErrorKind::TimedOut => {}
                            Err(_) => break,
                        }
                    }
                }));
            }
            for r in readers {
                let _ = r.join();
            }
            Ok(())
        })
    };
    let mut senders = Vec::new();
    for _ in 0..connections {
        let mut stream = in_netns(from, move || {
            TcpStream::connect_timeout(&target, Duration::from_secs(5))
        })??;
        senders.push(std::thread::spawn(move || {
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            let buf = vec![0x5au8; 1 << 16];
            while Instant::now() < end {
                if let Err(e) = stream.write(&buf) {
                    if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::TimedOut {
                        break;
                    }
                }
            }
        }));
    }
    for s in senders {
        let _ = s.join();
    }
    receiver
        .join()
        .map_err(|_| io::Error::other("receiver panicked"))??;
    let counted_for = (end - half).as_secs_f64();
    Ok(counted.load(Ordering::Relaxed) as f64 / counted_for)
}
