//! A factor's levels: what each factor may take, and how a level is read
//! from the grid.

use std::time::Duration;

use evac_controller::{Order, PolicyKind};
use evac_model::{parse_duration, BitsPerSec, Bytes, BytesPerSec, Connections, Mode};

/// One level of one factor, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Level {
    Policy(PolicyKind),
    WanBandwidth(BitsPerSec),
    WanRtt(Duration),
    TcpWindow(Bytes),
    Connections(Connections),
    Memory(MemoryPreset),
    DirtyRate(BytesPerSec),
    Mode(Mode),
    Trace(TracePreset),
    Order(Order),
    MaxInFlight(usize),
    MaxInFlightPerHost(usize),
    PowerOffScale(f64),
    PowerNews(PowerNews),
}

/// The `power_news` factor's levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PowerNews {
    /// The base's `power_trace`s as they are.
    Base,
    /// No change is ever announced.
    None,
    /// One change per host with a power-off: at `at`, it moves by `shift`.
    Shift { shift: Amount, at: Amount },
}

/// A time in a `power_news` level: seconds, or a fraction of each host's
/// own power-off; signed for a shift.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Seconds(f64),
    Fraction(f64),
}

impl Amount {
    /// Seconds, for a host whose power-off is at `power_off` s.
    pub(crate) fn of(self, power_off: f64) -> f64 {
        match self {
            Amount::Seconds(s) => s,
            Amount::Fraction(f) => f * power_off,
        }
    }

    /// `-40%`, `+5 min`, `25%`, `5 min`; signed only when `signed`.
    fn parse(text: &str, signed: bool) -> Result<Amount, String> {
        let text = text.trim();
        let (sign, magnitude) = match text.as_bytes().first() {
            Some(b'-') if signed => (-1.0, &text[1..]),
            Some(b'+') if signed => (1.0, &text[1..]),
            _ if signed => return Err(format!("`{text}` needs a sign: `-` (earlier) or `+` (later)")),
            _ => (1.0, text),
        };
        if let Some(percent) = magnitude.trim().strip_suffix('%') {
            let value: f64 = percent
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0 && *v <= 1e4)
                .ok_or_else(|| format!("`{text}` is not a percentage like `40%`"))?;
            return Ok(Amount::Fraction(sign * value / 100.0));
        }
        let duration = parse_duration(magnitude).map_err(|e| e.to_string())?;
        Ok(Amount::Seconds(sign * duration.as_secs_f64()))
    }
}

impl PowerNews {
    fn parse(text: &str) -> Result<PowerNews, String> {
        match text.trim() {
            "base" => return Ok(PowerNews::Base),
            "none" => return Ok(PowerNews::None),
            _ => {}
        }
        let expected = || {
            format!(
                "`{text}` is not `base`, `none` or \"<shift> at <when>\" like \"-40% at 25%\" \
                 or \"+5 min at 10 min\""
            )
        };
        let (shift, at) = text.split_once(" at ").ok_or_else(expected)?;
        let shift = Amount::parse(shift, true).map_err(|e| format!("{}: {e}", expected()))?;
        let at = Amount::parse(at, false).map_err(|e| format!("{}: {e}", expected()))?;
        Ok(PowerNews::Shift { shift, at })
    }
}

/// The `memory` factor's levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryPreset {
    Base,
    Equal,
    Skewed,
}

impl MemoryPreset {
    /// Each level with its name in a grid, in the order errors list them.
    const LEVELS: [(&'static str, MemoryPreset); 3] = [
        ("base", Self::Base),
        ("equal", Self::Equal),
        ("skewed", Self::Skewed),
    ];
}

/// The `trace` factor's levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracePreset {
    Base,
    Steady,
    Fluctuating,
    Dip,
    SlowStart,
    NearOutage,
    Sawtooth,
    Stalls,
}

impl TracePreset {
    /// Each level with its name in a grid, in the order errors list them.
    const LEVELS: [(&'static str, TracePreset); 8] = [
        ("base", Self::Base),
        ("steady", Self::Steady),
        ("fluctuating", Self::Fluctuating),
        ("dip", Self::Dip),
        ("slow-start", Self::SlowStart),
        ("near-outage", Self::NearOutage),
        ("sawtooth", Self::Sawtooth),
        ("stalls", Self::Stalls),
    ];
}

/// The `mode` factor's levels, with their names in a grid.
const MODES: [(&str, Mode); 3] = [
    ("live", Mode::Live),
    ("offline", Mode::Offline),
    ("postcopy", Mode::Postcopy),
];

/// The factors a grid may vary, in the order they are applied.
pub const FACTORS: [&str; 14] = [
    "policy",
    "wan_bandwidth",
    "wan_rtt",
    "tcp_window",
    "connections",
    "memory",
    "dirty_rate",
    "mode",
    "trace",
    "order",
    "max_in_flight",
    "max_in_flight_per_host",
    "power_off_scale",
    "power_news",
];

/// Whether a level changes the VMs or hosts (the rest change the network,
/// the migration or the controller).
pub(crate) fn touches_fleet(level: &Level) -> bool {
    matches!(
        level,
        Level::Memory(_) | Level::DirtyRate(_) | Level::PowerOffScale(_) | Level::PowerNews(_)
    )
}

pub(crate) fn level_rank(level: &Level) -> usize {
    match level {
        Level::Policy(_) => 0,
        Level::WanBandwidth(_) => 1,
        Level::WanRtt(_) => 2,
        Level::TcpWindow(_) => 3,
        Level::Connections(_) => 4,
        Level::Memory(_) => 5,
        Level::DirtyRate(_) => 6,
        Level::Mode(_) => 7,
        Level::Trace(_) => 8,
        Level::Order(_) => 9,
        Level::MaxInFlight(_) => 10,
        Level::MaxInFlightPerHost(_) => 11,
        Level::PowerOffScale(_) => 12,
        Level::PowerNews(_) => 13,
    }
}

/// The value named `text` among `choices`, or an error that names `what`
/// and lists the names in order ("unknown mode `fast`; expected live,
/// offline or postcopy").
fn one_of<T: Copy>(what: &str, text: &str, choices: &[(&str, T)]) -> Result<T, String> {
    if let Some(&(_, value)) = choices.iter().find(|(name, _)| *name == text) {
        return Ok(value);
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let expected = match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(format!("unknown {what} `{text}`; expected {expected}"))
}

pub(crate) fn parse_level(name: &str, value: &toml::Value) -> Result<Level, String> {
    let text = || {
        value
            .as_str()
            .ok_or_else(|| format!("expected a string, found {} `{value}`", value.type_str()))
    };
    let integer = || {
        value
            .as_integer()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("expected a positive integer, found `{value}`"))
    };
    Ok(match name {
        "policy" => Level::Policy(text()?.parse()?),
        "wan_bandwidth" => Level::WanBandwidth(text()?.parse().map_err(|e| format!("{e}"))?),
        "wan_rtt" => Level::WanRtt(parse_duration(text()?).map_err(|e| format!("{e}"))?),
        "tcp_window" => Level::TcpWindow(text()?.parse().map_err(|e| format!("{e}"))?),
        "connections" => Level::Connections(Connections::try_from(integer()?)?),
        "memory" => Level::Memory(one_of("memory preset", text()?, &MemoryPreset::LEVELS)?),
        "dirty_rate" => Level::DirtyRate(text()?.parse().map_err(|e| format!("{e}"))?),
        "mode" => Level::Mode(one_of("mode", text()?, &MODES)?),
        "trace" => Level::Trace(one_of("trace preset", text()?, &TracePreset::LEVELS)?),
        "order" => Level::Order(text()?.parse()?),
        "max_in_flight" => Level::MaxInFlight(integer()? as usize),
        "max_in_flight_per_host" => Level::MaxInFlightPerHost(integer()? as usize),
        "power_off_scale" => Level::PowerOffScale(
            value
                .as_float()
                .or_else(|| value.as_integer().map(|n| n as f64))
                .filter(|x| x.is_finite() && *x > 0.0 && *x <= 1e6)
                .ok_or_else(|| format!("expected a positive number (at most 1e6), found `{value}`"))?,
        ),
        "power_news" => Level::PowerNews(PowerNews::parse(text()?)?),
        _ => unreachable!("checked against FACTORS"),
    })
}
