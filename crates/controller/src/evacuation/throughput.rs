//! The hosts' measured throughput: a sample of their byte counters once a
//! control period.

use std::time::Duration;

use evac_model::BitsPerSec;

use super::{Evacuation, Sample};
use crate::Observations;

impl Evacuation {
    /// Measures each host's throughput once a control period has passed.
    /// Whether a throughput sample is due at `now`: the first, or a control
    /// period after the last (half of one at a periodic tick).
    pub(super) fn sample_due(&self, now: Duration, periodic: bool) -> bool {
        match &self.last_sample {
            None => true,
            // A tick caused by a migration's end, between two periodic ticks,
            // is too short a window to measure over; a periodic tick is one
            // (see `Observations::periodic`) unless it follows a measurement
            // taken at such an end.
            Some(last) => {
                let elapsed = now.saturating_sub(last.at).as_secs_f64();
                let period = self.config.period.as_secs_f64();
                elapsed >= 0.999 * period || (periodic && elapsed >= 0.5 * period)
            }
        }
    }

    pub(super) fn sample(&mut self, observations: &Observations) -> bool {
        let now = observations.now;
        if !self.sample_due(now, observations.periodic) {
            return false;
        }
        let sparse = !self.touched.all;
        if let Some(last) = &mut self.last_sample {
            let elapsed = (now - last.at).as_secs_f64();
            let rate = |host: usize, last: &Sample| {
                let sent = observations.host_tx.get(host).copied().unwrap_or_default()
                    - last.host_tx.get(host).copied().unwrap_or_default();
                BitsPerSec(sent.as_f64() * 8.0 / elapsed)
            };
            if sparse {
                // Only the hosts whose counter moved can have sent: the
                // others' throughput is exactly zero.
                for host in self.sending.drain(..) {
                    self.throughput[host.0] = BitsPerSec(0.0);
                }
                for &host in &self.touched.list {
                    self.throughput[host.0] = rate(host.0, last);
                    if let (Some(slot), Some(&tx)) =
                        (last.host_tx.get_mut(host.0), observations.host_tx.get(host.0))
                    {
                        *slot = tx;
                    }
                }
                self.sending.extend_from_slice(&self.touched.list);
                self.sending.sort_unstable();
            } else {
                for host in 0..self.throughput.len() {
                    self.throughput[host] = rate(host, last);
                }
                self.sending.clear();
                self.sending.extend(self.fleet.host_ids());
            }
        }
        match &mut self.last_sample {
            // Every period: reuse the buffer rather than allocate anew.
            Some(last) => {
                last.at = now;
                if !sparse || last.host_tx.len() != observations.host_tx.len() {
                    last.host_tx.clone_from(&observations.host_tx);
                }
                self.touched.clear();
                true
            }
            None => {
                self.last_sample = Some(Sample {
                    at: now,
                    host_tx: observations.host_tx.clone(),
                });
                self.touched.clear();
                false
            }
        }
    }
}
