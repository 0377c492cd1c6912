//! Whether the measured dirty curves reach far enough for the plan.
//!
//! The plan holds a VM's dirty curve flat after its longest sample
//! (docs/format.md). A round longer than that sample then re-sends only
//! what the sample found, while the guest, whose curve was still growing,
//! dirties more: the plan runs short. The first round is a migration's
//! longest (it sends the whole memory), so a curve is long enough when its
//! longest sample is at least the planned first round; else `evac plan`
//! says so, and how long a sample would do.

use evac_model::{Compression, Fleet};
use evac_report::RunResult;

use crate::Measured;

/// One line per VM of `fleet` whose measured curve still grew at its
/// longest sample (by more than that sample's uncertainty) and whose first
/// round in `result` (the plan) would outlast that sample ([`note`]).
pub fn too_short(fleet: &Fleet, measured: &[Measured], result: &RunResult) -> Vec<String> {
    fleet
        .vms
        .iter()
        .zip(measured)
        .zip(&result.vms)
        .filter_map(|((vm, m), planned)| {
            // A curve the inventory stated is the operator's word.
            if vm.profile.dirty_curve != m.dirty_curve()? {
                return None;
            }
            let (time, sent) = (planned.migration_time_s?, planned.bytes_sent?);
            let compressed = planned.compression == Some(Compression::Zstd);
            let first_pass =
                vm.disk.as_f64() + vm.memory.as_f64() * vm.profile.first_pass_wire_per_byte(compressed);
            note(&vm.name, m, first_round(time, sent as f64, first_pass))
        })
        .collect()
}

/// A migration's first round, estimated from its planned `time`: in
/// proportion to the first pass's share (`first_pass` bytes) of all the
/// bytes the plan sent (`sent`).
pub fn first_round(time: f64, sent: f64, first_pass: f64) -> f64 {
    if sent > 0.0 {
        time * (first_pass / sent).min(1.0)
    } else {
        time
    }
}

/// Why the curve of VM `name` (measured as `m`) is too short for a first
/// round of `first_round` seconds, if it is.
pub fn note(name: &str, m: &Measured, first_round: f64) -> Option<String> {
    let (Some(_), [.., before, last]) = (m.dirty_curve(), m.dirtied.as_slice()) else {
        return None;
    };
    let grew = last.dirtied_bytes.saturating_sub(before.dirtied_bytes);
    (grew > last.uncertainty_bytes && first_round > last.seconds as f64).then(|| {
        format!(
            "{name}: its dirty curve still grew at the longest sample ({} MiB more from {} s to {} s), and its \
             first round is planned to take about {first_round:.0} s: the plan takes the curve as flat after \
             {} s and may run short; --working-set-sample {}s would measure it",
            grew >> 20,
            before.seconds,
            last.seconds,
            last.seconds,
            first_round.ceil() as u64
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::DirtySample;
    use evac_model::{Bytes, BytesPerSec};

    fn measured(last_mib: u64) -> Measured {
        let sample = |seconds: u64, mib: u64| DirtySample {
            seconds,
            dirtied_bytes: mib << 20,
            uncertainty_bytes: (seconds + 1) << 20,
        };
        Measured {
            memory: Bytes::mib(384),
            dirty_rate: BytesPerSec(14.0 * 1_048_576.0),
            working_set: Bytes::mib(last_mib),
            dirtied: vec![sample(2, 28), sample(4, 40), sample(8, last_mib)],
            content: None,
        }
    }

    /// 384 MiB sent first of 576 MiB in 19.5 s: a first round of 13 s,
    /// longer than the 8 s sample, after which the curve grew 24 MiB (more
    /// than the 9 MiB uncertainty).
    #[test]
    fn a_curve_still_growing_before_a_longer_first_round_is_noted() {
        let round = first_round(19.5, 576.0, 384.0);
        assert_eq!(round, 13.0);
        let line = note("db", &measured(64), round).expect("a note");
        assert!(
            line.starts_with(
                "db: its dirty curve still grew at the longest sample (24 MiB more from 4 s to 8 s)"
            ),
            "{line}"
        );
        assert!(
            line.contains("about 13 s") && line.ends_with("--working-set-sample 13s would measure it"),
            "{line}"
        );
        // Flat within the uncertainty (8 MiB more, 9 allowed): nothing.
        assert_eq!(note("db", &measured(48), round), None);
        // A first round within the sample (384 of 576 MiB in 10 s: 6.7 s).
        assert_eq!(note("db", &measured(64), first_round(10.0, 576.0, 384.0)), None);
        // No curve (no working set): nothing to hold flat.
        let mut line_guest = measured(64);
        line_guest.working_set = line_guest.memory;
        assert_eq!(note("db", &line_guest, round), None);
    }
}
