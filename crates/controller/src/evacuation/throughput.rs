//! The hosts' measured throughput: a sample of their byte counters once a
//! control period.

use std::time::Duration;

use evac_model::BitsPerSec;

use super::{Evacuation, Sample};
use crate::Observations;

/// The shortest window, in control periods, a periodic tick measures over.
/// A real run stamps a tick when its counters were read, a few ms either
/// way of the grid (a sample skipped for 0.4957 s of a 0.5 s period made
/// an AIMD window move a period late), but on a loaded machine a reading
/// can take 0.2-0.4 s: a late tick then an on-time one measured over a
/// third of a period, whose noise `aimd-global` took for a rise (a third
/// migration in the lab 1.3 s before the simulation's, docs/lab.md).
const PERIODIC_SAMPLE: f64 = 0.75;

impl Evacuation {
    /// Whether a throughput sample is due at `now`: the first, or a control
    /// period after the last (at a periodic tick, [`PERIODIC_SAMPLE`] of one).
    pub(super) fn sample_due(&self, now: Duration, periodic: bool) -> bool {
        match &self.last_sample {
            None => true,
            // A tick caused by a migration's end, between two periodic ticks,
            // is too short a window to measure over; a periodic tick is one
            // (see `Observations::periodic`) unless it follows a measurement
            // taken at such an end, or one stamped late.
            Some(last) => {
                let elapsed = now.saturating_sub(last.at).as_secs_f64();
                let period = self.config.period.as_secs_f64();
                elapsed >= 0.999 * period || (periodic && elapsed >= PERIODIC_SAMPLE * period)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use evac_model::{Fleet, MigrationParams};

    use crate::{ControllerConfig, Evacuation, Observations};

    #[test]
    fn a_periodic_tick_measures_over_three_quarters_of_a_period_or_more() {
        // Period 0.5 s, a sample at 0.5 s. A tick stamped 0.4957 s later
        // (reading jitter) measures; one 0.1667 s later (after a tick
        // stamped late), not: a third of a period; a tick a migration's
        // end caused measures only a full period on.
        let config = ControllerConfig {
            period: Duration::from_millis(500),
            ..ControllerConfig::default()
        };
        let mut evacuation = Evacuation::new(Fleet::default(), MigrationParams::default(), config);
        let at = |ms: u64| Observations {
            now: Duration::from_millis(ms),
            periodic: true,
            ..Observations::default()
        };
        evacuation.sample(&at(500));
        let due = |e: &Evacuation, ms: u64, periodic: bool| e.sample_due(Duration::from_millis(ms), periodic);
        assert!(due(&evacuation, 500 + 496, true));
        assert!(!due(&evacuation, 500 + 167, true));
        assert!(!due(&evacuation, 500 + 370, true));
        assert!(due(&evacuation, 500 + 375, true));
        assert!(!due(&evacuation, 500 + 496, false));
        assert!(due(&evacuation, 1000, false));
    }
}
