//! A migration's rate as the controller is told it ([`RateMeter`]): over
//! the time between two readings, bounded by what its source host sent.
//! Apart because it is a measurement with its own reasons (QEMU's `mbps` and
//! `transferred` both overstate what crossed the WAN) and its own tests.

use std::time::Duration;

use evac_model::BitsPerSec;

/// Shorter than this since the last reading, a rate between two readings
/// would be noise: the last rate measured stands.
const MIN_RATE_WINDOW: Duration = Duration::from_millis(200);

/// The rate of `sent` bytes over `elapsed` between two readings of QEMU's
/// `transferred` counter; `None` over too short a time to tell.
///
/// Why not QEMU's `mbps`: it is measured over the last 100 ms, and behind
/// a WAN of several multifd connections it swings widely from one 100 ms to
/// the next (a migration held at 336 Mbit/s by its connections' windows read
/// 577 Mbit/s once on the lab's 400 Mbit/s WAN), which the deadline policy
/// took for the WAN's peak and sized the next migrations' channels to. Over
/// the time between two observations (a control period) the swings
/// average out, as the simulator's rates do.
pub fn rate_over(elapsed: Duration, sent: u64) -> Option<BitsPerSec> {
    (elapsed >= MIN_RATE_WINDOW).then(|| BitsPerSec(sent as f64 * 8.0 / elapsed.as_secs_f64()))
}

/// A migration's rate, reading after reading: over the time since the
/// last reading that measured one ([`rate_over`]), the first from when
/// `migrate` was accepted (0 bytes then); and never more than its source's
/// network namespace transmitted over the same time.
///
/// Why: QEMU's `mbps` at a migration's first reading is its first 100 ms,
/// and QEMU's `transferred` counts what it wrote into its sockets, not what
/// left the host: early in a migration several MB sit in the sockets' send
/// buffers and the NIC's queue. The lab's 32 MiB VMs read 666 Mbit/s by
/// `mbps`, and 501 Mbit/s by `transferred` since the start, on a 400 Mbit/s
/// WAN; `deadline` took that for the WAN's peak and started a second
/// migration on a full WAN where the simulator (whose rates are what
/// crosses the WAN) starts none (`crates/lab/tests/decisions.rs`). What the
/// source host transmitted bounds what the migration sent; with several
/// migrations on a host it bounds each one loosely.
#[derive(Debug, Default, Clone, Copy)]
pub struct RateMeter {
    /// When the rate was last measured (or the migration started), with
    /// `transferred` and the host's transmitted bytes (if known) then.
    reference: Option<(tokio::time::Instant, u64, Option<u64>)>,
    last: Option<BitsPerSec>,
}

impl RateMeter {
    /// The rate at a reading of `transferred` and of the source host's
    /// transmitted bytes `host_tx` at `now`; `started`: when `migrate` was
    /// accepted and the host's bytes then, if known (not for an adopted
    /// migration); `qemu`: QEMU's own `mbps`, used only when nothing else
    /// tells.
    pub fn read(
        &mut self,
        now: tokio::time::Instant,
        transferred: u64,
        host_tx: Option<u64>,
        started: Option<(tokio::time::Instant, Option<u64>)>,
        qemu: BitsPerSec,
    ) -> BitsPerSec {
        let Some((at, bytes, host_then)) = self.reference.or(started.map(|(at, host)| (at, 0, host))) else {
            // Adopted: nothing to measure from yet.
            self.reference = Some((now, transferred, host_tx));
            return qemu;
        };
        let elapsed = now.saturating_duration_since(at);
        let mut sent = transferred.saturating_sub(bytes);
        if let (Some(then), Some(host_now)) = (host_then, host_tx) {
            sent = sent.min(host_now.saturating_sub(then));
        }
        match rate_over(elapsed, sent) {
            Some(rate) => {
                self.reference = Some((now, transferred, host_tx));
                self.last = Some(rate);
                rate
            }
            None => self.last.unwrap_or_else(|| {
                // A first reading soon after the start: its average so far.
                if elapsed.is_zero() {
                    BitsPerSec(0.0)
                } else {
                    BitsPerSec(sent as f64 * 8.0 / elapsed.as_secs_f64())
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_measured_over_the_time_between_two_readings() {
        // 1 000 000 bytes in half a second: 16 Mbit/s.
        assert_eq!(
            rate_over(Duration::from_millis(500), 1_000_000),
            Some(BitsPerSec(16e6))
        );
        // Too short a time to tell.
        assert_eq!(rate_over(Duration::from_millis(100), 1_000_000), None);
        assert_eq!(rate_over(Duration::ZERO, 0), None);
    }

    #[test]
    fn a_first_reading_is_measured_from_the_start_not_by_qemu() {
        let start = tokio::time::Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let qemu = BitsPerSec(666e6);
        let mut meter = RateMeter::default();
        // 5 000 000 bytes in the first 400 ms: 100 Mbit/s, whatever QEMU says.
        let started = Some((start, None));
        assert_eq!(
            meter.read(at(400), 5_000_000, None, started, qemu),
            BitsPerSec(100e6)
        );
        // 50 ms later: too short to tell; the last rate stands.
        assert_eq!(
            meter.read(at(450), 9_000_000, None, started, qemu),
            BitsPerSec(100e6)
        );
        // From the last measured reading (400 ms): 5 000 000 more in 500 ms.
        assert_eq!(
            meter.read(at(900), 10_000_000, None, started, qemu),
            BitsPerSec(80e6)
        );
    }

    #[test]
    fn a_first_reading_soon_after_the_start_is_the_average_so_far() {
        let start = tokio::time::Instant::now();
        let mut meter = RateMeter::default();
        let rate = meter.read(
            start + Duration::from_millis(100),
            500_000,
            None,
            Some((start, None)),
            BitsPerSec(1e9),
        );
        assert_eq!(rate, BitsPerSec(40e6));
    }

    #[test]
    fn an_adopted_migration_reads_qemu_until_it_can_measure() {
        let start = tokio::time::Instant::now();
        let mut meter = RateMeter::default();
        assert_eq!(
            meter.read(start, 7_000_000, None, None, BitsPerSec(3e6)),
            BitsPerSec(3e6)
        );
        // 1 000 000 bytes in the 250 ms since: 32 Mbit/s.
        let later = start + Duration::from_millis(250);
        assert_eq!(
            meter.read(later, 8_000_000, None, None, BitsPerSec(3e6)),
            BitsPerSec(32e6)
        );
    }

    #[test]
    fn a_rate_is_no_more_than_its_host_transmitted() {
        let start = tokio::time::Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // The host had sent 10 000 000 bytes when the migration started.
        let started = Some((start, Some(10_000_000)));
        let mut meter = RateMeter::default();
        // QEMU wrote 6 000 000 bytes in 500 ms (96 Mbit/s) but the host
        // sent 2 500 000 (40 Mbit/s): the rest waits in its buffers.
        let rate = meter.read(at(500), 6_000_000, Some(12_500_000), started, BitsPerSec(1e9));
        assert_eq!(rate, BitsPerSec(40e6));
        // The next 500 ms: 2 000 000 written, the host 3 000 000 (it sent
        // the buffers out, or another migration sent too): 32 Mbit/s.
        let rate = meter.read(at(1000), 8_000_000, Some(15_500_000), started, BitsPerSec(1e9));
        assert_eq!(rate, BitsPerSec(32e6));
    }
}
