//! The WAN's latency: a userspace delay line between two TUN devices.
//!
//! This kernel has no `netem`, so the lab delays packets itself. Each of
//! two TUN devices sits in one site's router namespace; what the kernel
//! routes into one comes out of the other after the one-way delay. Per
//! direction, one thread reads packets and stamps them with their due time
//! into a FIFO, a second writes each out when it is due: the delay is fixed,
//! so the FIFO is in due order and the line never reorders. Shaping stays in
//! the kernel (`tbf` on the TUN device, before the line), so the delay line
//! only ever holds what the shaper let through: at most rate x delay bytes.
//!
//! Threads, not async tasks: a sleeping thread wakes within tens of
//! microseconds, tokio's timer only to the millisecond, which shows at a
//! 10 ms RTT.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most bytes one direction holds: above it packets are dropped, as a
/// full router queue would (1 Gbit/s x 200 ms is 25 MB).
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// The largest packet read from a TUN device (its MTU is far smaller).
const MAX_PACKET: usize = 65_536;

/// How often a thread blocked on I/O looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Counters of one direction.
#[derive(Debug, Default)]
pub struct DirectionStats {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Packets dropped because the queue was full or the write failed.
    pub dropped: AtomicU64,
}

/// Packets with their due times, and the bytes they hold.
type Held = (VecDeque<(Instant, Vec<u8>)>, usize);

struct Queue {
    packets: Mutex<Held>,
    ready: Condvar,
}

/// A running delay line; dropping it stops its threads and closes both TUN
/// devices (which removes them).
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// `a -> b` and `b -> a`.
    pub stats: [Arc<DirectionStats>; 2],
}

impl DelayLine {
    /// Forwards packets read from `a` to `b` and from `b` to `a`, each
    /// `one_way` later than it was read.
    pub fn start(a: OwnedFd, b: OwnedFd, one_way: Duration) -> io::Result<DelayLine> {
        let a = Arc::new(a);
        let b = Arc::new(b);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = [Arc::default(), Arc::default()];
        let mut threads = Vec::new();
        for (i, (from, to)) in [(a.clone(), b.clone()), (b, a)].into_iter().enumerate() {
            let queue = Arc::new(Queue {
                packets: Mutex::new((VecDeque::new(), 0)),
                ready: Condvar::new(),
            });
            let (q, s, st) = (queue.clone(), stop.clone(), Arc::clone(&stats[i]));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("delay-read-{i}"))
                    .spawn(move || read_loop(&from, &q, one_way, &s, &st))?,
            );
            let (s, st) = (stop.clone(), Arc::clone(&stats[i]));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("delay-write-{i}"))
                    .spawn(move || write_loop(&to, &queue, &s, &st))?,
            );
        }
        Ok(DelayLine { stop, threads, stats })
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Waits until `fd` is readable or [`POLL`] passes; `false` on timeout.
fn wait_readable(fd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, POLL.as_millis() as libc::c_int) > 0 }
}

fn read_loop(from: &OwnedFd, queue: &Queue, delay: Duration, stop: &AtomicBool, stats: &DirectionStats) {
    let mut buf = vec![0u8; MAX_PACKET];
    while !stop.load(Ordering::Relaxed) {
        if !wait_readable(from) {
            continue;
        }
        loop {
            // SAFETY: read(2) into a buffer of MAX_PACKET bytes we own.
            let n = unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break; // EAGAIN: drained
            }
            let due = Instant::now() + delay;
            let n = n as usize;
            let mut q = queue.packets.lock().unwrap_or_else(|p| p.into_inner());
            if q.1 + n > MAX_QUEUED_BYTES {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            q.1 += n;
            q.0.push_back((due, buf[..n].to_vec()));
            drop(q);
            queue.ready.notify_one();
        }
    }
    queue.ready.notify_all();
}

fn write_loop(to: &OwnedFd, queue: &Queue, stop: &AtomicBool, stats: &DirectionStats) {
    loop {
        let packet = {
            let mut q = queue.packets.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Some((due, _)) = q.0.front() {
                    let now = Instant::now();
                    if *due <= now {
                        break;
                    }
                    let wait = (*due - now).min(POLL);
                    drop(q);
                    // Sleep outside the lock: the reader keeps queueing.
                    std::thread::sleep(wait);
                    q = queue.packets.lock().unwrap_or_else(|p| p.into_inner());
                } else {
                    q = queue
                        .ready
                        .wait_timeout(q, POLL)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            let (_, packet) = q.0.pop_front().expect("a due packet");
            q.1 -= packet.len();
            packet
        };
        // SAFETY: write(2) of a buffer we own.
        let n = unsafe { libc::write(to.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        if n == packet.len() as isize {
            stats.packets.fetch_add(1, Ordering::Relaxed);
            stats.bytes.fetch_add(packet.len() as u64, Ordering::Relaxed);
        } else {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
