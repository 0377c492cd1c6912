//! The lab's network: one namespace per host, a router namespace per site,
//! and between the two routers the WAN: a TUN pair joined by the
//! [`DelayLine`], shaped by `tbf` on the source router's TUN device.
//!
//! ```text
//!  src host 0 ──veth──┐                                   ┌──veth── dst host 2
//!                     ├─ router `s` ═ wan (TUN) ══ delay line ══ wan (TUN) ═ router `d` ─┤
//!  src host 1 ──veth──┘      tbf: WAN bandwidth                                      └──veth── dst host 3
//! ```
//!
//! Host `i` (its index in the fleet) has the address `10.214.i.2` on its
//! veth end `uplink`; the router's end is `h<i>` at `10.214.i.1`, the host's
//! default route. Everything lives inside the namespaces, whose names all
//! start with the lab's prefix `evlab-<name>-<pid>-` (see
//! [`crate::cleanup`]): nothing touches the initial namespace. Source hosts'
//! uplinks and destination hosts' downlinks are shaped to their NIC when it
//! is below 10 Gbit/s.
//!
//! TCP in the host namespaces may grow its receive window to the scenario's
//! `tcp_window` and no further ([`tcp_buffer_sysctls`]), so one connection
//! is held to about `tcp_window / wan_rtt`, as the model says.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use evac_model::{BitsPerSec, Bytes, Fleet, Network, Site, TracePoint};

use crate::delay::DelayLine;
use crate::netns::{address_up, shape as tbf_shape, sysctl, veth, Namespaces, QdiscVerb, Tbf};
use crate::process::ip;

/// NICs at or above this are not shaped (nothing here is that fast).
const UNSHAPED_NIC_BPS: f64 = 10e9;

/// Inside each router namespace, the TUN device of the WAN.
const WAN_DEV: &str = "wan";

/// The lab's network, torn down when dropped.
pub struct Topology {
    /// `evlab-<name>-<pid>`.
    pub prefix: String,
    /// The namespace of each host, in fleet order.
    pub host_netns: Vec<String>,
    /// Each host's address, in fleet order.
    pub host_address: Vec<String>,
    src_router: String,
    /// The WAN bottleneck's queue ([`wan_queue`]).
    pub wan_queue: Duration,
    delay: Option<DelayLine>,
    /// Last: removed after the delay line has closed its TUN devices.
    namespaces: Namespaces,
}

/// The model's rates are payload: what TCP carries. `tbf` counts whole
/// packets, as the device sees them: on the TUN device an IP packet of 1500
/// bytes carries 1448 bytes of TCP payload (20 IP + 32 TCP header with
/// timestamps), on a veth the frame adds 14 bytes of Ethernet. So a shaper
/// for a payload rate `r` is set to `r x packet / payload`.
pub const TUN_PACKET_PER_PAYLOAD: f64 = 1500.0 / 1448.0;
/// [`TUN_PACKET_PER_PAYLOAD`] for a veth (Ethernet frames).
pub const VETH_FRAME_PER_PAYLOAD: f64 = 1514.0 / 1448.0;

/// The queue of a link that is never the bottleneck (a host's NIC): it
/// only has to absorb bursts.
const NIC_QUEUE: Duration = Duration::from_millis(20);

/// The queue of the WAN's bottleneck, in time at its rate: half the path's
/// round trip (half its bandwidth-delay product), between 5 and 50 ms.
///
/// Why not deeper: a drop-tail queue of twice the bandwidth-delay product
/// (20 ms on the 10 ms `idle` lab) made the sharing of concurrent migrations
/// a lottery. The connection that started first ended with a congestion
/// window of 36 packets while the two that joined it held 300-600 for
/// seconds, under cubic, reno and bbr alike, so the first VM took 11.5-12.4 s
/// where a fair share gives 7.1 (docs/lab.md); a full 20 ms queue also made
/// every round trip 35 ms where the path's is 10, so the window/RTT cap of
/// a connection was not the scenario's. Half the product is the size
/// Appenzeller, Keslassy and McKeown ("Sizing router buffers", 2004) give a
/// link carrying a few flows (RTT x C / sqrt(n)), and it keeps one
/// connection's link full after a loss (cubic backs off to 0.7 of its
/// window). Measured at 5 ms on that lab, the three VMs took their fair
/// shares within 3 %.
pub fn wan_queue(rtt: Duration) -> Duration {
    (rtt / 2).clamp(Duration::from_millis(5), Duration::from_millis(50))
}

/// The `tbf` for `rate`: a burst of 5 ms of traffic (at least 64 KiB, so
/// that TSO bursts pass) and a queue of at most `queue`.
fn tbf(rate: BitsPerSec, queue: Duration) -> Tbf {
    Tbf {
        rate,
        burst: Bytes(((rate.0 / 8.0 * 0.005) as u64).max(64 << 10)),
        latency: queue,
    }
}

/// Shapes `dev` to carry `payload` of TCP payload per second (see
/// [`TUN_PACKET_PER_PAYLOAD`]) with a queue of `queue`.
fn shape(netns: &str, dev: &str, verb: QdiscVerb, payload: BitsPerSec, queue: Duration) -> io::Result<()> {
    let overhead = if dev == WAN_DEV {
        TUN_PACKET_PER_PAYLOAD
    } else {
        VETH_FRAME_PER_PAYLOAD
    };
    tbf_shape(netns, dev, verb, &tbf(BitsPerSec(payload.0 * overhead), queue))
}

/// The socket-buffer sysctls that let a TCP connection's receive window
/// reach `window` and no further. Linux advertises a share of its receive
/// buffer as the window, the rest paying for the buffers that hold the
/// segments; with 1500-byte packets through veth that share measured about
/// 0.56 here (one connection at 100 ms with a 2 MiB buffer moved 95 Mbit/s,
/// `examples/wan_accuracy.rs`), so the buffer's maximum is 16/9 of the
/// window. The send buffer must hold a window in flight plus what is not
/// yet sent.
pub fn tcp_buffer_sysctls(window: Bytes) -> Vec<(String, String)> {
    let w = window.0;
    vec![
        ("net.ipv4.tcp_rmem".into(), format!("4096 131072 {}", w * 16 / 9)),
        ("net.ipv4.tcp_wmem".into(), format!("4096 16384 {}", 4 * w)),
        ("net.ipv4.tcp_moderate_rcvbuf".into(), "1".into()),
    ]
}

impl Topology {
    /// Builds the namespaces, links, routes, shaping and the delay line for
    /// `fleet`'s hosts and `network` (the WAN at its capacity at time 0).
    pub fn build(prefix: &str, fleet: &Fleet, network: &Network) -> io::Result<Topology> {
        if fleet.hosts.len() > 250 {
            return Err(io::Error::other("the lab has room for at most 250 hosts"));
        }
        let mut topo = Topology {
            prefix: prefix.to_owned(),
            host_netns: Vec::new(),
            host_address: Vec::new(),
            src_router: format!("{prefix}-s"),
            wan_queue: wan_queue(network.wan_rtt),
            delay: None,
            namespaces: Namespaces::new(),
        };
        let dst_router = format!("{prefix}-d");
        // From each `add` on, Drop removes what was made.
        for ns in [topo.src_router.clone(), dst_router.clone()] {
            topo.namespaces.add(&ns)?;
            sysctl(&ns, "net.ipv4.ip_forward", "1")?;
        }
        for (i, host) in fleet.hosts.iter().enumerate() {
            let ns = format!("{prefix}-h{i}");
            topo.namespaces.add(&ns)?;
            let router = match host.site {
                Site::Source => &topo.src_router,
                Site::Destination => &dst_router,
            };
            let router_dev = format!("h{i}");
            veth(&ns, "uplink", router, &router_dev)?;
            let address = format!("10.214.{i}.2");
            address_up(&ns, "uplink", &format!("{address}/24"))?;
            address_up(router, &router_dev, &format!("10.214.{i}.1/24"))?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.214.{i}.1"),
            ])?;
            for (key, value) in tcp_buffer_sysctls(network.tcp_window) {
                sysctl(&ns, &key, &value)?;
            }
            if host.nic.0 < UNSHAPED_NIC_BPS {
                match host.site {
                    Site::Source => shape(&ns, "uplink", QdiscVerb::Add, host.nic, NIC_QUEUE)?,
                    Site::Destination => shape(router, &router_dev, QdiscVerb::Add, host.nic, NIC_QUEUE)?,
                }
            }
            topo.host_netns.push(ns);
            topo.host_address.push(address);
        }
        let tun_s = crate::tun::open_in(&topo.src_router, WAN_DEV)?;
        let tun_d = crate::tun::open_in(&dst_router, WAN_DEV)?;
        topo.delay = Some(DelayLine::start(tun_s, tun_d, network.wan_rtt / 2)?);
        for (ns, address) in [
            (&topo.src_router, "10.215.0.1/32"),
            (&dst_router, "10.215.0.2/32"),
        ] {
            ip(&["-n", ns, "addr", "add", address, "dev", WAN_DEV])?;
            ip(&["-n", ns, "link", "set", WAN_DEV, "up", "txqueuelen", "10000"])?;
            ip(&["-n", ns, "route", "add", "default", "dev", WAN_DEV])?;
        }
        shape(
            &topo.src_router,
            WAN_DEV,
            QdiscVerb::Add,
            network.capacity_at(Duration::ZERO),
            topo.wan_queue,
        )?;
        Ok(topo)
    }

    /// Changes the WAN's `tbf` rate.
    pub fn set_wan_rate(&self, rate: BitsPerSec) -> io::Result<()> {
        shape(&self.src_router, WAN_DEV, QdiscVerb::Change, rate, self.wan_queue)
    }

    /// Applies `trace` from now on (its `at` counted from this call), in a
    /// thread of its own, until the returned handle is dropped.
    pub fn follow_trace(&self, trace: &[TracePoint]) -> TraceFollower {
        let stop = Arc::new(AtomicBool::new(false));
        let points = trace.to_vec();
        let ns = self.src_router.clone();
        let queue = self.wan_queue;
        let flag = stop.clone();
        let thread = (!points.is_empty()).then(|| {
            std::thread::spawn(move || {
                let start = Instant::now();
                for point in points {
                    while start.elapsed() < point.at {
                        if flag.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep((point.at - start.elapsed()).min(Duration::from_millis(50)));
                    }
                    if let Err(e) = shape(&ns, WAN_DEV, QdiscVerb::Change, point.bandwidth, queue) {
                        eprintln!("lab: WAN trace at {:?}: {e}", point.at);
                    }
                }
            })
        });
        TraceFollower { stop, thread }
    }

    /// The bytes the delay line forwarded source -> destination.
    pub fn wan_bytes(&self) -> u64 {
        self.delay
            .as_ref()
            .map_or(0, |d| d.stats[0].bytes.load(Ordering::Relaxed))
    }

    /// Packets the delay line dropped (both directions).
    pub fn wan_dropped(&self) -> u64 {
        self.delay.as_ref().map_or(0, |d| {
            d.stats.iter().map(|s| s.dropped.load(Ordering::Relaxed)).sum()
        })
    }
}

/// Stops following a trace when dropped.
pub struct TraceFollower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for TraceFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // The TUN devices go with their descriptors.
        self.delay = None;
        self.namespaces.remove_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wan_queue_is_half_the_round_trip_within_its_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(wan_queue(ms(10)), ms(5));
        assert_eq!(wan_queue(ms(40)), ms(20));
        assert_eq!(wan_queue(ms(2)), ms(5));
        assert_eq!(wan_queue(Duration::ZERO), ms(5));
        assert_eq!(wan_queue(ms(100)), ms(50));
        assert_eq!(wan_queue(ms(300)), ms(50));
    }

    #[test]
    fn tbf_is_given_its_queue_in_microseconds() {
        let args = tbf(BitsPerSec(200e6), Duration::from_micros(12_500)).args();
        // 5 ms at 200 Mbit/s is 125 000 bytes, above the 64 KiB floor.
        assert_eq!(
            args,
            [
                "tbf",
                "rate",
                "200000000bit",
                "burst",
                "125000b",
                "latency",
                "12500us"
            ]
        );
    }
}
