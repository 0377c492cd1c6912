//! Numbers as people read them: times as `h:mm:ss` beside seconds, margins
//! as `m:ss`, rates in bits per second with a unit, no trailing zeros.

/// `h:mm:ss`, rounded to the nearest second ("0:20:31"); `-` when not finite.
pub fn hms(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "-".to_owned();
    }
    let (sign, total) = signed_whole(seconds);
    format!("{sign}{}:{:02}:{:02}", total / 3600, total / 60 % 60, total % 60)
}

/// The sign of `seconds` and their magnitude in whole seconds, rounded
/// once, on the whole, so 59.6 s reads 0:01:00 and not 0:00:60.
fn signed_whole(seconds: f64) -> (&'static str, u64) {
    let sign = if seconds < 0.0 { "-" } else { "" };
    (sign, seconds.abs().round() as u64)
}

/// The wall-clock time `seconds` after `start` (RFC 3339, as a real run's
/// `started_at`), as a time of day in this machine's zone: "14:30:00 CET";
/// with its date when that is not `start`'s. `None` when `start` is not a
/// time.
pub fn time_of_day(start: &str, seconds: f64) -> Option<String> {
    let start: evac_model::wall_clock::Timestamp = start.parse().ok()?;
    let after = std::time::Duration::try_from_secs_f64(seconds.max(0.0)).ok()?;
    let zone = jiff::tz::TimeZone::system();
    let (begun, at) = (
        start.to_zoned(zone.clone()),
        evac_model::wall_clock::after(start, after).to_zoned(zone),
    );
    let format = if at.date() == begun.date() {
        "%H:%M:%S %Z"
    } else {
        "%Y-%m-%d %H:%M:%S %Z"
    };
    Some(at.strftime(format).to_string())
}

/// A short span as `m:ss` ("4:29"), or `h:mm:ss` from an hour on.
pub fn span(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "-".to_owned();
    }
    if seconds.abs() >= 3600.0 {
        return hms(seconds);
    }
    let (sign, total) = signed_whole(seconds);
    format!("{sign}{}:{:02}", total / 60, total % 60)
}

/// Seconds with one decimal and, from a minute on, `h:mm:ss` beside them:
/// "1687.3 s (0:28:07)".
pub fn seconds(seconds: f64) -> String {
    if !seconds.is_finite() {
        return format!("{seconds} s");
    }
    if seconds.abs() < 60.0 {
        format!("{seconds:.1} s")
    } else {
        format!("{seconds:.1} s ({})", hms(seconds))
    }
}

/// [`seconds`] of a value that may be missing.
pub fn maybe_seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), seconds)
}

/// A rate in bits per second with an SI unit: "1.25 Gbit/s".
pub fn bits_per_sec(bps: f64) -> String {
    let (value, unit) = if bps.abs() >= 1e12 {
        (bps / 1e12, "Tbit/s")
    } else if bps.abs() >= 1e9 {
        (bps / 1e9, "Gbit/s")
    } else if bps.abs() >= 1e6 {
        (bps / 1e6, "Mbit/s")
    } else if bps.abs() >= 1e3 {
        (bps / 1e3, "kbit/s")
    } else {
        (bps, "bit/s")
    };
    format!("{} {unit}", decimals(value))
}

/// Up to three decimals, as few as the value needs: trailing zeros say
/// nothing ("1.250" reads "1.25", "400.000" "400").
pub fn decimals(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_times() {
        // 20 min 31 s = 1231 s.
        assert_eq!(hms(1231.0), "0:20:31");
        assert_eq!(hms(1231.4), "0:20:31");
        assert_eq!(hms(59.6), "0:01:00");
        // 1 h 2 min 3 s = 3723 s.
        assert_eq!(hms(3723.0), "1:02:03");
        assert_eq!(hms(-5.0), "-0:00:05");
        assert_eq!(hms(f64::INFINITY), "-");
        // 4 min 29 s = 269 s.
        assert_eq!(span(269.0), "4:29");
        assert_eq!(span(7200.0), "2:00:00");
    }

    #[test]
    fn seconds_beside_clock() {
        assert_eq!(seconds(42.25), "42.2 s");
        assert_eq!(seconds(1687.34), "1687.3 s (0:28:07)");
        assert_eq!(maybe_seconds(None), "-");
    }

    #[test]
    fn rates() {
        assert_eq!(bits_per_sec(1.25e9), "1.25 Gbit/s");
        assert_eq!(bits_per_sec(4e8), "400 Mbit/s");
        assert_eq!(bits_per_sec(1.5e3), "1.5 kbit/s");
        assert_eq!(bits_per_sec(1e9), "1 Gbit/s");
        assert_eq!(decimals(0.2), "0.2");
        assert_eq!(decimals(5.0), "5");
    }
}
