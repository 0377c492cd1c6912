//! The checks of the WAN (`[network]`) and of how migrations cross it
//! (`[migration]`): the settings a whole evacuation shares, apart from the
//! fleet's hosts and VMs (`super::fleet`).

use super::{check_bit_rate, check_count, check_duration, check_rtts, check_trace_time, FieldPath, Invalid};
use super::{
    MAX_BYTE_RATE, MAX_DOWNTIME, MAX_ROUNDS, MAX_RTT, MAX_SETUP_TIME, MAX_TCP_WINDOW, MAX_TRACE_POINTS,
    MIN_TCP_WINDOW,
};
use crate::{Bytes, BytesPerSec, MigrationParams, Mode, Network};

impl Network {
    /// Checks the WAN; paths are under `network`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let at = |key: &str| FieldPath::top("network").key(key);
        check_bit_rate(self.wan_bandwidth, "a WAN").map_err(|m| Invalid::new(at("wan_bandwidth"), m))?;
        check_duration(self.wan_rtt, MAX_RTT, "a round trip").map_err(|m| Invalid::new(at("wan_rtt"), m))?;
        if self.tcp_window == Bytes::ZERO {
            return Err(Invalid::new(
                at("tcp_window"),
                "a TCP window of 0 B lets nothing through; give a size above zero",
            ));
        }
        if self.tcp_window < MIN_TCP_WINDOW || self.tcp_window > MAX_TCP_WINDOW {
            return Err(Invalid::new(
                at("tcp_window"),
                format!(
                    "a TCP window of {} is not within {MIN_TCP_WINDOW} ..= {MAX_TCP_WINDOW}",
                    self.tcp_window
                ),
            ));
        }
        let points = self.wan_trace.len();
        check_count(at("wan_trace"), points, MAX_TRACE_POINTS, "points", "a trace")?;
        for (index, point) in self.wan_trace.iter().enumerate() {
            let path = at("wan_trace").index(index);
            // A trace point of 0 is an outage: the WAN carries nothing
            // until the next point (a WAN's constant capacity stays above 0).
            if point.bandwidth.0 != 0.0 {
                check_bit_rate(point.bandwidth, "a WAN")
                    .map_err(|m| Invalid::new(path.clone().key("bandwidth"), m))?;
            }
            let previous = index.checked_sub(1).map(|i| self.wan_trace[i].at);
            check_trace_time(path, point.at, previous, "point", "wan_trace")?;
        }
        Ok(())
    }
}

impl MigrationParams {
    /// Checks the migration parameters; paths are under `migration`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let at = |key: &str| FieldPath::top("migration").key(key);
        if self.mode != Mode::Offline && self.max_rounds == 0 {
            return Err(Invalid::new(
                at("max_rounds"),
                "live migration needs at least 1 precopy round; \
                 to copy everything in one stop, use mode = \"offline\"",
            ));
        }
        if self.max_rounds > MAX_ROUNDS {
            return Err(Invalid::new(
                at("max_rounds"),
                format!(
                    "{} rounds are more than the {MAX_ROUNDS} a migration may have; \
                     a guest that has not converged by then will not",
                    self.max_rounds
                ),
            ));
        }
        check_duration(self.downtime_limit, MAX_DOWNTIME, "a downtime limit")
            .map_err(|m| Invalid::new(at("downtime_limit"), m))?;
        check_duration(self.setup_time, MAX_SETUP_TIME, "a setup time")
            .map_err(|m| Invalid::new(at("setup_time"), m))?;
        check_rtts(self.ramp_rtts, "ramp-up").map_err(|m| Invalid::new(at("ramp_rtts"), m))?;
        check_rtts(self.join_rtts, "joining").map_err(|m| Invalid::new(at("join_rtts"), m))?;
        if let Some(cap) = self.max_bandwidth {
            if cap.0 == 0.0 {
                return Err(Invalid::new(
                    at("max_bandwidth"),
                    format!("a cap of {cap} lets nothing through; give a rate above zero, or \"unlimited\""),
                ));
            }
            check_bit_rate(cap, "a cap").map_err(|m| Invalid::new(at("max_bandwidth"), m))?;
        }
        let BytesPerSec(rate) = self.zstd_rate_per_core;
        if !(rate.is_finite() && rate > 0.0 && rate <= MAX_BYTE_RATE) {
            return Err(Invalid::new(
                at("zstd_rate_per_core"),
                format!(
                    "{rate} B/s per core is not within 1 B/s ..= 125000 GB/s; give a rate like \"250 MB/s\""
                ),
            ));
        }
        Ok(())
    }
}
