//! The smallest lab network: two namespaces, a source and a destination
//! "host", joined by one veth whose source end is shaped. What the
//! backends' own tests migrate over; `evac lab` builds the larger
//! [`crate::topology::Topology`] from the same pieces ([`crate::netns`]).

use std::time::Duration;

use evac_model::{BitsPerSec, Bytes};

use crate::netns::{address_up, shape, veth, Namespaces, QdiscVerb, Tbf};
use crate::process::ip;

/// The egress shaping of the source's veth: a `tbf` qdisc.
#[derive(Debug, Clone, Copy)]
pub struct Shaping {
    /// tbf `rate`, in bits per second.
    pub rate_bps: u64,
    /// tbf `burst`, in bytes.
    pub burst_bytes: u64,
    /// tbf `latency`: the longest a packet may wait in the queue.
    pub latency: Duration,
}

/// Two network namespaces, a source and a destination "host", joined by a
/// veth pair whose source end is shaped: the WAN bottleneck.
///
/// Names are `evac-<pid>-<n>-src` / `-dst`, unique per process and per
/// network. The veth ends (`evac0` in `src`, `evac1` in `dst`) are created
/// directly inside the namespaces, and their addresses
/// ([`LabNetwork::SRC_ADDRESS`], [`LabNetwork::DST_ADDRESS`]) exist only
/// there: nothing touches the initial namespace, no traffic leaves.
///
/// Dropping it deletes both namespaces with the veth pair and its qdisc,
/// killing what still runs inside ([`crate::netns::remove_netns`]): declare
/// the network before the [`crate::Lab`] owning the VMs, so that the lab
/// stops them first.
#[derive(Debug)]
pub struct LabNetwork {
    pub src: String,
    pub dst: String,
    pub shaping: Shaping,
    namespaces: Namespaces,
}

impl LabNetwork {
    /// The source end's address (in `src`).
    pub const SRC_ADDRESS: &'static str = "10.213.0.1";
    /// The destination end's address (in `dst`): its `migration_address`.
    pub const DST_ADDRESS: &'static str = "10.213.0.2";
    /// The veth end in `src`, whose egress is shaped.
    pub const SRC_DEV: &'static str = "evac0";
    /// The veth end in `dst`.
    pub const DST_DEV: &'static str = "evac1";

    /// Creates the namespaces, the veth pair and the shaping.
    pub fn new(shaping: Shaping) -> std::io::Result<LabNetwork> {
        let base = format!("evac-{}-{}", std::process::id(), crate::next_id());
        let (src, dst) = (format!("{base}-src"), format!("{base}-dst"));
        let mut namespaces = Namespaces::new();
        // From here on, dropping `namespaces` cleans up whatever was made.
        namespaces.add(&src)?;
        namespaces.add(&dst)?;
        veth(&src, Self::SRC_DEV, &dst, Self::DST_DEV)?;
        for (ns, dev, address) in [
            (&src, Self::SRC_DEV, Self::SRC_ADDRESS),
            (&dst, Self::DST_DEV, Self::DST_ADDRESS),
        ] {
            address_up(ns, dev, &format!("{address}/24"))?;
        }
        let tbf = Tbf {
            rate: BitsPerSec(shaping.rate_bps as f64),
            burst: Bytes(shaping.burst_bytes),
            latency: shaping.latency,
        };
        shape(&src, Self::SRC_DEV, QdiscVerb::Add, &tbf)?;
        Ok(LabNetwork {
            src,
            dst,
            shaping,
            namespaces,
        })
    }

    /// Transmitted bytes of the source's veth end.
    pub fn src_tx_bytes(&self) -> std::io::Result<u64> {
        let text = ip(&["-n", &self.src, "-s", "-j", "link", "show", Self::SRC_DEV])?;
        // `"tx":{"bytes":N,` in the JSON.
        text.split("\"tx\":{\"bytes\":")
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no tx bytes in `{text}`")))
    }
}

impl Drop for LabNetwork {
    fn drop(&mut self) {
        self.namespaces.remove_all();
    }
}
