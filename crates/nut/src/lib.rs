//! # evac-nut
//!
//! Linux hosts learn about their UPS through Network UPS Tools (NUT): a
//! `upsd` daemon serves each UPS's variables over TCP (port 3493) in a
//! plain-text protocol. A host that names its UPS (`ups = "ups1@10.0.0.5:3493"`
//! in an inventory) has its power-off deadline read from it rather than
//! written by hand, and the deadline follows the battery:
//!
//! | `ups.status` | the host's power-off |
//! |---|---|
//! | `OL` (on line power) | none |
//! | `OB` (on battery) | now + `battery.runtime` - margin |
//! | `LB` (low battery, alone or with `OB`) | now |
//!
//! The margin (`ups_margin`) is the operator's: the time the host needs
//! to shut down cleanly, or what they do not trust of the UPS's estimate.
//!
//! This crate is the client only: [`read`] asks one `upsd` for one UPS's
//! status and runtime, every step within one bounded wait, and
//! [`Reading::power_off`] turns the answer into a deadline. What to do when
//! `upsd` does not answer (a warning, the last deadline stands) is the
//! caller's: a dead `upsd` does not mean the power is off.
//!
//! The protocol, as `upsd` (NUT 2.8) speaks it, one line each way:
//!
//! ```text
//! GET VAR ups1 ups.status        ->  VAR ups1 ups.status "OB LB"
//! GET VAR ups1 battery.runtime   ->  VAR ups1 battery.runtime "300"
//! LOGOUT                         ->  OK Goodbye
//! ```
//!
//! and `ERR <WHY>` for a refusal (`UNKNOWN-UPS`, `VAR-NOT-SUPPORTED`,
//! `DRIVER-NOT-CONNECTED`, `DATA-STALE`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// NUT's port.
pub const DEFAULT_PORT: u16 = 3493;

/// The longest answer line read: a variable's line is tens of bytes; a
/// longer one is not `upsd`'s, and is not read into memory.
const MAX_LINE: u64 = 1024;

/// A UPS on a `upsd`: `name@host[:port]`, as NUT's own tools write it
/// (`upsc ups1@10.0.0.5:3493`). An IPv6 host goes in brackets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpsAddress {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for UpsAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.name, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.name, self.host, self.port)
        }
    }
}

impl FromStr for UpsAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let expected = || {
            format!("`{text}` is not a UPS like \"ups1@10.0.0.5:3493\" (name@host, port {DEFAULT_PORT} by default)")
        };
        let (name, at) = text.trim().split_once('@').ok_or_else(expected)?;
        // The name is sent on the wire: one word of NUT's characters.
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(format!(
                "{}: the UPS name `{name}` has characters other than A-Z a-z 0-9 - _ .",
                expected()
            ));
        }
        let (host, port) = if let Some(rest) = at.strip_prefix('[') {
            let (host, rest) = rest.split_once(']').ok_or_else(expected)?;
            match rest.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if rest.is_empty() => (host, None),
                None => return Err(expected()),
            }
        } else {
            match at.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                Some(_) => return Err(format!("{}: put an IPv6 address in brackets", expected())),
                None => (at, None),
            }
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'));
        if !host_ok {
            return Err(expected());
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(format!("{}: `{port}` is not a port", expected())),
            },
        };
        Ok(UpsAddress {
            name: name.to_owned(),
            host: host.to_owned(),
            port,
        })
    }
}

impl Serialize for UpsAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UpsAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// What the UPS says of the power, from `ups.status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Power {
    /// `OL`: on line power.
    Line,
    /// `OB`: on battery.
    Battery,
    /// `LB`: the battery is low (the UPS is about to shut its load down).
    LowBattery,
    /// Neither (`WAIT` while the driver starts, `OFF`, ...): as written.
    Unknown(String),
}

impl Power {
    /// From `ups.status`'s flags: low battery first (it is said with `OB`),
    /// then battery, then line.
    pub fn from_status(status: &str) -> Power {
        let flags: Vec<&str> = status.split_whitespace().collect();
        if flags.contains(&"LB") {
            Power::LowBattery
        } else if flags.contains(&"OB") {
            Power::Battery
        } else if flags.contains(&"OL") {
            Power::Line
        } else {
            Power::Unknown(status.to_owned())
        }
    }
}

impl fmt::Display for Power {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Power::Line => f.write_str("on line power"),
            Power::Battery => f.write_str("on battery"),
            Power::LowBattery => f.write_str("low battery"),
            Power::Unknown(status) => write!(f, "status `{status}`"),
        }
    }
}

/// One answer of a UPS.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub power: Power,
    /// `battery.runtime`: how long the battery lasts at the present load
    /// (read only on battery).
    pub runtime: Option<Duration>,
}

/// A host's power-off as its UPS tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOff {
    /// On line power: no deadline.
    None,
    /// At this time from the evacuation's start.
    At(Duration),
    /// The UPS says nothing usable (its driver starting, say): the last
    /// deadline stands.
    Unknown,
}

impl Reading {
    /// The power-off this reading means at `now` (from the evacuation's
    /// start), `margin` before the battery runs out.
    pub fn power_off(&self, now: Duration, margin: Duration) -> PowerOff {
        match (&self.power, self.runtime) {
            (Power::Line, _) => PowerOff::None,
            (Power::LowBattery, _) => PowerOff::At(now),
            (Power::Battery, Some(runtime)) => PowerOff::At(now + runtime.saturating_sub(margin)),
            (Power::Battery, None) | (Power::Unknown(_), _) => PowerOff::Unknown,
        }
    }
}

/// Why a UPS could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NutError {
    #[error("{ups}: cannot connect: {source}")]
    Connect { ups: UpsAddress, source: std::io::Error },
    #[error("{ups}: no answer within {:.1} s", .wait.as_secs_f64())]
    Timeout { ups: UpsAddress, wait: Duration },
    #[error("{ups}: {source}")]
    Io { ups: UpsAddress, source: std::io::Error },
    /// `upsd` refused: `ERR DRIVER-NOT-CONNECTED` and the like.
    #[error("{ups}: upsd answered `{answer}` to `{request}`")]
    Refused {
        ups: UpsAddress,
        request: String,
        answer: String,
    },
    #[error("{ups}: `{answer}` is not an answer to `{request}`")]
    Malformed {
        ups: UpsAddress,
        request: String,
        answer: String,
    },
}

/// Reads `ups`'s status (and its battery runtime when on battery) from its
/// `upsd`, all within `wait`.
pub async fn read(ups: &UpsAddress, wait: Duration) -> Result<Reading, NutError> {
    match tokio::time::timeout(wait, read_unbounded(ups)).await {
        Ok(reading) => reading,
        Err(_) => Err(NutError::Timeout {
            ups: ups.clone(),
            wait,
        }),
    }
}

async fn read_unbounded(ups: &UpsAddress) -> Result<Reading, NutError> {
    let stream = TcpStream::connect((ups.host.as_str(), ups.port))
        .await
        .map_err(|source| NutError::Connect {
            ups: ups.clone(),
            source,
        })?;
    let mut session = Session {
        ups,
        stream: BufReader::new(stream),
    };
    let status = session.get("ups.status").await?;
    let power = Power::from_status(&status);
    let runtime = match power {
        Power::Battery => {
            let text = session.get("battery.runtime").await?;
            let seconds: f64 = text
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| NutError::Malformed {
                    ups: ups.clone(),
                    request: format!("GET VAR {} battery.runtime", ups.name),
                    answer: text.clone(),
                })?;
            // A runtime beyond a year is not a battery's: capped, not trusted to overflow.
            Some(Duration::from_secs_f64(seconds.min(365.0 * 86_400.0)))
        }
        _ => None,
    };
    // Polite, not needed: the answer is in; a failure here changes nothing.
    let _ = session.stream.get_mut().write_all(b"LOGOUT\n").await;
    Ok(Reading { power, runtime })
}

struct Session<'a> {
    ups: &'a UpsAddress,
    stream: BufReader<TcpStream>,
}

impl Session<'_> {
    /// `GET VAR <ups> <var>`: the variable's value.
    async fn get(&mut self, var: &str) -> Result<String, NutError> {
        let request = format!("GET VAR {} {var}", self.ups.name);
        let io = |source| NutError::Io {
            ups: self.ups.clone(),
            source,
        };
        self.stream
            .get_mut()
            .write_all(format!("{request}\n").as_bytes())
            .await
            .map_err(io)?;
        let mut line = Vec::new();
        (&mut self.stream)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|source| NutError::Io {
                ups: self.ups.clone(),
                source,
            })?;
        let answer = String::from_utf8_lossy(&line).trim_end().to_owned();
        parse_var(&answer, &self.ups.name, var).map_err(|refused| {
            let (ups, request, answer) = (self.ups.clone(), request, answer.clone());
            if refused {
                NutError::Refused { ups, request, answer }
            } else {
                NutError::Malformed { ups, request, answer }
            }
        })
    }
}

/// The value in `VAR <ups> <var> "<value>"`; `Err(true)` for an `ERR`,
/// `Err(false)` for anything else.
fn parse_var(answer: &str, ups: &str, var: &str) -> Result<String, bool> {
    if answer.starts_with("ERR") {
        return Err(true);
    }
    let rest = answer
        .strip_prefix("VAR ")
        .and_then(|r| r.strip_prefix(ups))
        .and_then(|r| r.strip_prefix(' '))
        .and_then(|r| r.strip_prefix(var))
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(false)?;
    let quoted = rest
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .ok_or(false)?;
    // NUT escapes `"` and `\` with a backslash.
    let mut value = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        value.push(if c == '\\' { chars.next().ok_or(false)? } else { c });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ups_is_written_as_nut_writes_it() {
        let ups: UpsAddress = "ups1@10.0.0.5:3493".parse().unwrap();
        assert_eq!(
            (ups.name.as_str(), ups.host.as_str(), ups.port),
            ("ups1", "10.0.0.5", 3493)
        );
        assert_eq!("ups1@localhost".parse::<UpsAddress>().unwrap().port, DEFAULT_PORT);
        let v6: UpsAddress = "ups1@[::1]:4000".parse().unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 4000));
        assert_eq!(v6.to_string(), "ups1@[::1]:4000");
        for bad in [
            "ups1",
            "@host",
            "ups 1@host",
            "ups1@",
            "ups1@host:0",
            "ups1@host:x",
            "ups1@::1",
        ] {
            let e = bad.parse::<UpsAddress>().unwrap_err();
            assert!(
                e.contains(&format!("`{bad}`")) && e.contains("ups1@10.0.0.5:3493"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_status_flags_give_the_deadline() {
        let now = Duration::from_secs(100);
        let margin = Duration::from_secs(30);
        let reading = |status: &str, runtime: Option<u64>| Reading {
            power: Power::from_status(status),
            runtime: runtime.map(Duration::from_secs),
        };
        assert_eq!(reading("OL", None).power_off(now, margin), PowerOff::None);
        assert_eq!(reading("OL CHRG", None).power_off(now, margin), PowerOff::None);
        // 100 s + 900 s - 30 s.
        assert_eq!(
            reading("OB", Some(900)).power_off(now, margin),
            PowerOff::At(Duration::from_secs(970))
        );
        // A runtime shorter than the margin: now.
        assert_eq!(reading("OB", Some(10)).power_off(now, margin), PowerOff::At(now));
        assert_eq!(
            reading("OB LB", Some(300)).power_off(now, margin),
            PowerOff::At(now)
        );
        assert_eq!(reading("LB", None).power_off(now, margin), PowerOff::At(now));
        assert_eq!(reading("WAIT", None).power_off(now, margin), PowerOff::Unknown);
        assert_eq!(reading("OB", None).power_off(now, margin), PowerOff::Unknown);
    }

    #[test]
    fn answers_are_read_strictly() {
        assert_eq!(
            parse_var("VAR ups1 ups.status \"OB LB\"", "ups1", "ups.status"),
            Ok("OB LB".to_owned())
        );
        assert_eq!(
            parse_var(r#"VAR ups1 x "a \"b\" \\c""#, "ups1", "x"),
            Ok(r#"a "b" \c"#.to_owned())
        );
        assert_eq!(parse_var("ERR DATA-STALE", "ups1", "x"), Err(true));
        assert_eq!(parse_var("VAR ups2 x \"1\"", "ups1", "x"), Err(false));
        assert_eq!(parse_var("VAR ups1 x 1", "ups1", "x"), Err(false));
        assert_eq!(parse_var("", "ups1", "x"), Err(false));
    }
}
