//! Power-offs on the wall clock.
//!
//! The model counts every deadline from the evacuation's start
//! ([`crate::Host::power_off_at`] is a [`Duration`]). An operator is told
//! "the power goes at 14:30", not "in 40 minutes from whenever you start
//! evac": a plan made at 13:50 and a run started at 14:05 must mean the
//! same instant. So the files (scenarios, inventories) take either, as
//! written ([`PowerOffAt`]), and each is turned into a duration once, against
//! the start of the evacuation it belongs to ([`PowerOffAt::resolve`]): a
//! run's own start (kept in its journal, so a resumed run resolves alike),
//! or for a scenario its `start` key, else the moment it is read.
//!
//! A time of day must carry its zone (RFC 3339: `2026-12-06T14:30:00+01:00`
//! or `...Z`): `"14:30"` alone would mean different instants on the
//! machine that plans and the one that runs. A time already past when the
//! evacuation starts means "now": the host is lost at once, which is what
//! it is.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use jiff::Timestamp;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::units::{format_duration, parse_duration};

/// When a host loses power, as a file says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOffAt {
    /// This long after the evacuation's start (`"15 min"`).
    FromStart(Duration),
    /// At this instant (`"2026-12-06T14:30:00+01:00"`).
    Time(Timestamp),
}

impl PowerOffAt {
    /// The deadline counted from `start`, the evacuation's start on the wall
    /// clock; an instant at or before `start` is zero (the power is already
    /// off).
    pub fn resolve(self, start: Timestamp) -> Duration {
        match self {
            PowerOffAt::FromStart(after) => after,
            PowerOffAt::Time(at) => until(start, at),
        }
    }
}

/// The time from `from` to `to`, zero if `to` is not later.
pub fn until(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

/// `start + after`, on the wall clock (saturating at the last instant jiff
/// knows, ten thousand years on).
pub fn after(start: Timestamp, after: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(after)
        .ok()
        .and_then(|d| start.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// What a value that is neither a duration nor a time is not.
pub const EXPECTED_POWER_OFF: &str = "a duration from the start like \"15 min\" \
     or a time with its zone like \"2026-12-06T14:30:00+01:00\" (RFC 3339)";

/// Why a piece of text is not a [`PowerOffAt`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not {}{hint}", EXPECTED_POWER_OFF)]
pub struct PowerOffError {
    text: String,
    /// What was almost right.
    hint: String,
}

impl FromStr for PowerOffAt {
    type Err = PowerOffError;

    fn from_str(text: &str) -> Result<Self, PowerOffError> {
        let trimmed = text.trim();
        // A time starts with its four-digit year and has a `T` or a space
        // between date and time; a duration never has a `-` after a digit.
        let looks_like_time = trimmed.len() >= 10
            && trimmed.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && trimmed.as_bytes()[4] == b'-';
        if !looks_like_time {
            if let Ok(after) = parse_duration(trimmed) {
                return Ok(PowerOffAt::FromStart(after));
            }
        }
        match trimmed.parse::<Timestamp>() {
            Ok(at) => Ok(PowerOffAt::Time(at)),
            Err(error) => {
                let hint = if !looks_like_time {
                    // "14:30", "15 mn": say what a duration takes.
                    parse_duration(trimmed)
                        .err()
                        .map_or_else(String::new, |e| format!(" ({e})"))
                } else if trimmed.parse::<jiff::civil::DateTime>().is_ok() {
                    "; give its zone, e.g. `Z` for UTC or `+01:00`, or the time would mean \
                     different instants on different machines"
                        .to_owned()
                } else {
                    format!(" ({error})")
                };
                Err(PowerOffError {
                    text: text.to_owned(),
                    hint,
                })
            }
        }
    }
}

impl fmt::Display for PowerOffAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerOffAt::FromStart(after) => f.write_str(&format_duration(*after)),
            PowerOffAt::Time(at) => write!(f, "{at}"),
        }
    }
}

impl Serialize for PowerOffAt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PowerOffAt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(PowerOffVisitor { none: false })?
            .ok_or_else(|| de::Error::custom(format!("`none` is not {EXPECTED_POWER_OFF}")))
    }
}

/// `Option<PowerOffAt>` fields where `"none"` says "no power-off" (a
/// change of power that lifts the deadline), as
/// `#[serde(with = "evac_model::wall_clock::or_none")]`.
pub mod or_none {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Option<PowerOffAt>, serializer: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => at.serialize(serializer),
            None => serializer.serialize_str("none"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PowerOffAt>, D::Error> {
        deserializer.deserialize_any(PowerOffVisitor { none: true })
    }
}

/// `Timestamp` fields (a scenario's `start`): a time with its zone, quoted
/// or a bare TOML date-time, as `#[serde(with = "evac_model::wall_clock::instant")]`.
pub mod instant {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.collect_str(at),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Timestamp>, D::Error> {
        match deserializer.deserialize_any(PowerOffVisitor { none: false })? {
            Some(PowerOffAt::Time(at)) => Ok(Some(at)),
            Some(PowerOffAt::FromStart(after)) => Err(de::Error::custom(format!(
                "`{}` is a duration; expected a time with its zone like \"2026-12-06T14:30:00+01:00\" (RFC 3339)",
                format_duration(after)
            ))),
            None => Err(de::Error::custom("expected a time with its zone")),
        }
    }
}

/// Reads a string, or a TOML date-time written without quotes (which the
/// toml crate hands over as a one-entry map).
struct PowerOffVisitor {
    /// Whether `"none"` is taken (as `None`).
    none: bool,
}

impl<'de> de::Visitor<'de> for PowerOffVisitor {
    type Value = Option<PowerOffAt>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED_POWER_OFF)?;
        if self.none {
            f.write_str(", or \"none\"")?;
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        if self.none && text.trim() == "none" {
            return Ok(None);
        }
        match text.parse() {
            Ok(at) => Ok(Some(at)),
            Err(e) if self.none => Err(E::custom(format!("{e}, or \"none\" for no power-off"))),
            Err(e) => Err(E::custom(e)),
        }
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "`{n}` has no unit; expected {EXPECTED_POWER_OFF}"
        )))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "`{n}` has no unit; expected {EXPECTED_POWER_OFF}"
        )))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        Err(E::custom(format!(
            "`{n}` has no unit; expected {EXPECTED_POWER_OFF}"
        )))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // A bare TOML date-time: the toml crate's private one-key table.
        let Some((_, text)) = map.next_entry::<String, String>()? else {
            return Err(de::Error::custom(format!(
                "an empty table is not {EXPECTED_POWER_OFF}"
            )));
        };
        self.visit_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn reads_a_duration_or_a_time_with_its_zone() {
        assert_eq!(
            "15 min".parse::<PowerOffAt>().unwrap(),
            PowerOffAt::FromStart(Duration::from_secs(900))
        );
        // 14:30 at +01:00 is 13:30 UTC.
        assert_eq!(
            "2026-12-06T14:30:00+01:00".parse::<PowerOffAt>().unwrap(),
            PowerOffAt::Time(at("2026-12-06T13:30:00Z"))
        );
        assert_eq!(
            "2026-12-06 13:30:00Z".parse::<PowerOffAt>().unwrap(),
            PowerOffAt::Time(at("2026-12-06T13:30:00Z"))
        );
    }

    #[test]
    fn a_time_without_its_zone_or_a_clock_time_is_refused_saying_why() {
        let e = "2026-12-06T14:30:00"
            .parse::<PowerOffAt>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("give its zone") && e.contains("`2026-12-06T14:30:00`"),
            "{e}"
        );
        let e = "14:30".parse::<PowerOffAt>().unwrap_err().to_string();
        assert!(e.starts_with("`14:30` is not a duration from the start"), "{e}");
        assert!(e.contains("RFC 3339"), "{e}");
        let e = "2026-13-06T14:30:00Z"
            .parse::<PowerOffAt>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`2026-13-06T14:30:00Z`"), "{e}");
    }

    #[test]
    fn resolves_against_the_start_a_past_time_being_now() {
        let start = at("2026-12-06T13:50:00Z");
        let deadline = PowerOffAt::Time(at("2026-12-06T14:30:00Z"));
        assert_eq!(deadline.resolve(start), Duration::from_secs(40 * 60));
        // The same instant, for a run started 15 minutes later.
        assert_eq!(
            deadline.resolve(at("2026-12-06T14:05:00Z")),
            Duration::from_secs(25 * 60)
        );
        assert_eq!(deadline.resolve(at("2026-12-06T15:00:00Z")), Duration::ZERO);
        let after_start = PowerOffAt::FromStart(Duration::from_secs(60));
        assert_eq!(after_start.resolve(start), Duration::from_secs(60));
        assert_eq!(
            after(start, Duration::from_secs(2400)),
            at("2026-12-06T14:30:00Z")
        );
    }

    #[test]
    fn toml_reads_quoted_and_bare_times_and_none_where_allowed() {
        #[derive(Deserialize)]
        struct Host {
            power_off_at: PowerOffAt,
        }
        #[derive(Deserialize)]
        struct Change {
            #[serde(with = "or_none")]
            power_off_at: Option<PowerOffAt>,
        }
        let read = |text: &str| toml::from_str::<Host>(text).map(|h| h.power_off_at);
        assert_eq!(
            read("power_off_at = 2026-12-06T14:30:00Z").unwrap(),
            PowerOffAt::Time(at("2026-12-06T14:30:00Z"))
        );
        assert_eq!(
            read("power_off_at = \"10 s\"").unwrap(),
            PowerOffAt::FromStart(Duration::from_secs(10))
        );
        let e = read("power_off_at = 14:30:00").err().unwrap().to_string();
        assert!(e.contains("is not a duration from the start"), "{e}");
        let e = read("power_off_at = 600").err().unwrap().to_string();
        assert!(e.contains("`600` has no unit"), "{e}");
        assert!(read("power_off_at = \"none\"").is_err());
        let change = |text: &str| toml::from_str::<Change>(text).map(|c| c.power_off_at);
        assert_eq!(change("power_off_at = \"none\"").unwrap(), None);
        let e = change("power_off_at = \"never\"").err().unwrap().to_string();
        assert!(e.contains("or \"none\""), "{e}");
    }
}
