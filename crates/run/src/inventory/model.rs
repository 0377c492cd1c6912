//! What an inventory states, turned into the model whatever the backend:
//! its `[network]` (else the fastest source NIC) and a `[[vm]]`'s stated
//! memory profile. Apart from reading and checking: these only convert.

use std::time::Duration;

use evac_model::{BitsPerSec, Bytes, DirtyPoint, Network, Vm};
use serde::Deserialize;

/// An inventory's `[network]`: the WAN as the operator knows it (the
/// scenario format's fields, no trace). `evac plan` simulates over it and a
/// run's lower bounds use it, whatever the backend.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub wan_bandwidth: BitsPerSec,
    #[serde(default = "Network::default_rtt", with = "evac_model::units::human_duration")]
    pub wan_rtt: Duration,
    #[serde(default = "Network::default_tcp_window")]
    pub tcp_window: Bytes,
}

/// The WAN as far as a real run knows it: the inventory's `[network]`,
/// else the fastest of the source hosts' NICs (`source_nics`), with no
/// round trip and a 4 MiB window.
pub fn network(spec: Option<&NetworkSpec>, source_nics: impl IntoIterator<Item = BitsPerSec>) -> Network {
    match spec {
        Some(net) => Network {
            wan_bandwidth: net.wan_bandwidth,
            wan_rtt: net.wan_rtt,
            tcp_window: net.tcp_window,
            wan_trace: Vec::new(),
        },
        None => Network {
            wan_bandwidth: BitsPerSec(source_nics.into_iter().map(|n| n.0).fold(0.0, f64::max)),
            wan_rtt: Duration::ZERO,
            tcp_window: Network::DEFAULT_TCP_WINDOW,
            wan_trace: Vec::new(),
        },
    }
}

/// Sets what an inventory's `[[vm]]` states of its memory on `vm`: the
/// share of zero pages, the compression ratio of the others and the dirty
/// curve (each absent: the model's default, or what `evac plan` measures).
/// The model's wall checks them with the rest of the VM.
pub fn stated_profile(
    vm: &mut Vm,
    zero_fraction: Option<f64>,
    compression_ratio: Option<f64>,
    dirty_curve: Option<&[DirtyPoint]>,
) {
    if let Some(zero) = zero_fraction {
        vm.profile.zero_fraction = zero;
    }
    if let Some(ratio) = compression_ratio {
        vm.profile.compression_ratio = ratio;
    }
    if let Some(curve) = dirty_curve {
        vm.set_dirty_curve(curve.to_vec());
    }
}
