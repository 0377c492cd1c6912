//! Quantities that carry their unit in their type.
//!
//! Network rates are quoted in bits per second and memory in bytes; mixing the
//! two is the classic factor-of-eight bug of migration tooling. Here a
//! [`BitsPerSec`] and a [`BytesPerSec`] are different types, and the only way
//! from one to the other is an explicit conversion.
//!
//! Every type parses human text at the edge (`"4 GiB"`, `"1 Gbps"`,
//! `"20 MB/s"`, `"300 ms"`) and prints itself back in the same notation.
//! Decimal prefixes (`K M G T`) are powers of 1000, binary ones (`Ki Mi Gi Ti`)
//! powers of 1024.

use std::fmt;
use std::ops::{Add, AddAssign, Div, Sub};
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Why a piece of text is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not {expected}{}", did_you_mean(.suggestion))]
pub struct ParseError {
    text: String,
    expected: &'static str,
    /// The text with the closest known unit, when the unit was a typo
    /// (`10 Gbsp`: `10 Gbps`).
    suggestion: Option<String>,
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map_or_else(String::new, |s| format!("; did you mean `{s}`?"))
}

impl ParseError {
    fn new(text: &str, expected: &'static str) -> Self {
        Self {
            text: text.to_owned(),
            expected,
            suggestion: None,
        }
    }
}

/// Splits `"4.5 GiB"` into `(4.5, "GiB")`; the space is optional.
fn split_number(text: &str) -> Option<(f64, &str)> {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_' || c == 'e' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    // An exponent is only part of the number if digits follow it ("1e3"), so
    // fall back to the longest prefix that parses.
    let mut end = end;
    while end > 0 {
        let number = text[..end].replace('_', "");
        if let Ok(value) = number.parse::<f64>() {
            return Some((value, text[end..].trim()));
        }
        end -= 1;
    }
    None
}

/// The sane range of a quantity in its base unit (bytes, bit/s, byte/s,
/// seconds): a value is 0 or within `least..=most`. Anything else is a typo
/// (`1e-300 bps`, `1e308 Tbps`, `1e300 s`) that would otherwise divide by
/// almost nothing, become infinite, or overflow a `Duration`.
struct Range {
    least: f64,
    most: f64,
    /// The message's "is not ..." part.
    describe: &'static str,
}

/// Sizes: 0, or 1 B to 1 PiB (a VM or a host; sums of them saturate).
const SIZE_RANGE: Range = Range {
    least: 1.0,
    most: (1u64 << 50) as f64,
    describe: "within 0 or 1 B ..= 1 PiB",
};
/// Bit rates: 0, or 1 bps to 1000 Tbps.
const BIT_RATE_RANGE: Range = Range {
    least: 1.0,
    most: 1e15,
    describe: "within 0 or 1 bps ..= 1000 Tbps",
};
/// Byte rates: 0, or 1 B/s to 125 TB/s (1000 Tbps).
const BYTE_RATE_RANGE: Range = Range {
    least: 1.0,
    most: 1.25e14,
    describe: "within 0 or 1 B/s ..= 125000 GB/s",
};
/// 2^52: below it every `f64` has a fraction to round, and `i64` holds it.
const TWO_POW_52: f64 = 4_503_599_627_370_496.0;

/// Durations: 0, or 1 us to 10 years (87660 h).
pub const MAX_DURATION: Duration = Duration::from_secs(87_660 * 3600);
const DURATION_RANGE: Range = Range {
    least: 1e-6,
    most: 87_660.0 * 3600.0,
    describe: "within 0 or 1 us ..= 87660 h (10 years)",
};

fn parse_scaled(
    text: &str,
    units: &[(&str, f64)],
    expected: &'static str,
    range: &Range,
) -> Result<f64, ParseError> {
    let (value, unit) = split_number(text).ok_or_else(|| ParseError::new(text, expected))?;
    let scale = units
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, scale)| *scale)
        .ok_or_else(|| ParseError {
            suggestion: crate::suggest::closest(unit, units.iter().map(|(name, _)| *name)).map(|name| {
                let number = text.trim();
                format!("{} {name}", number[..number.len() - unit.len()].trim_end())
            }),
            ..ParseError::new(text, expected)
        })?;
    if !value.is_finite() || value < 0.0 {
        return Err(ParseError::new(text, expected));
    }
    let scaled = value * scale;
    if scaled != 0.0 && !(scaled >= range.least * (1.0 - 1e-9) && scaled <= range.most) {
        return Err(ParseError::new(text, range.describe));
    }
    Ok(scaled)
}

const KIB: f64 = 1024.0;
const SIZE_UNITS: &[(&str, f64)] = &[
    ("B", 1.0),
    ("KB", 1e3),
    ("MB", 1e6),
    ("GB", 1e9),
    ("TB", 1e12),
    ("KiB", KIB),
    ("MiB", KIB * KIB),
    ("GiB", KIB * KIB * KIB),
    ("TiB", KIB * KIB * KIB * KIB),
];
const BIT_RATE_UNITS: &[(&str, f64)] = &[
    ("bps", 1.0),
    ("Kbps", 1e3),
    ("Mbps", 1e6),
    ("Gbps", 1e9),
    ("Tbps", 1e12),
];
const BYTE_RATE_UNITS: &[(&str, f64)] = &[
    ("B/s", 1.0),
    ("KB/s", 1e3),
    ("MB/s", 1e6),
    ("GB/s", 1e9),
    ("KiB/s", KIB),
    ("MiB/s", KIB * KIB),
    ("GiB/s", KIB * KIB * KIB),
];
const DURATION_UNITS: &[(&str, f64)] = &[
    ("us", 1e-6),
    ("ms", 1e-3),
    ("s", 1.0),
    ("min", 60.0),
    ("h", 3600.0),
];

const EXPECTED_SIZE: &str = "a size like \"4 GiB\" (units: B KB MB GB TB KiB MiB GiB TiB)";
const EXPECTED_BIT_RATE: &str = "a bit rate like \"1 Gbps\" (units: bps Kbps Mbps Gbps Tbps)";
const EXPECTED_BYTE_RATE: &str = "a byte rate like \"20 MB/s\" (units: B/s KB/s MB/s GB/s KiB/s MiB/s GiB/s)";
const EXPECTED_DURATION: &str = "a duration like \"300 ms\" (units: us ms s min h)";

/// An amount of memory or data, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

impl Bytes {
    pub const ZERO: Bytes = Bytes(0);

    pub const fn mib(n: u64) -> Self {
        Bytes(n * 1024 * 1024)
    }
    pub const fn gib(n: u64) -> Self {
        Bytes(n * 1024 * 1024 * 1024)
    }
    pub fn as_f64(self) -> f64 {
        self.0 as f64
    }
    /// Rounds a fractional byte count (as the fluid simulator produces) to
    /// the nearest byte, halves away from zero (as `f64::round`, which is a
    /// call into libm on baseline x86-64, and this runs for every migration
    /// at every consultation of a simulation).
    pub fn from_f64(bytes: f64) -> Self {
        // NaN and negatives are 0; `as` saturates above u64::MAX.
        let bytes = bytes.max(0.0);
        // Below 2^52 (4 PiB: every count a simulation makes) through i64,
        // which x86-64 converts in one instruction each way; u64's
        // conversions are sequences with branches, and were most of a
        // million-VM run's cost of observing its migrations.
        if bytes < TWO_POW_52 {
            // Exact: `whole` and `bytes - whole` are exact below 2^52.
            let whole = bytes as i64;
            return Bytes((whole + i64::from(bytes - whole as f64 >= 0.5)) as u64);
        }
        let whole = bytes as u64;
        // Exact: below 2^53 `whole` is exact as an f64 and within 1 of
        // `bytes`; from 2^52 on every f64 is whole and the fraction is 0.
        if whole < u64::MAX && bytes - whole as f64 >= 0.5 {
            Bytes(whole + 1)
        } else {
            Bytes(whole)
        }
    }
}

impl Add for Bytes {
    type Output = Bytes;
    fn add(self, rhs: Bytes) -> Bytes {
        // Saturating: a sum of many huge VMs is "more than anything", not a
        // panic or a wrap to a small number.
        Bytes(self.0.saturating_add(rhs.0))
    }
}
impl AddAssign for Bytes {
    fn add_assign(&mut self, rhs: Bytes) {
        *self = *self + rhs;
    }
}
impl Sub for Bytes {
    type Output = Bytes;
    fn sub(self, rhs: Bytes) -> Bytes {
        Bytes(self.0.saturating_sub(rhs.0))
    }
}
impl std::iter::Sum for Bytes {
    fn sum<I: Iterator<Item = Bytes>>(iter: I) -> Bytes {
        iter.fold(Bytes::ZERO, |total, b| total + b)
    }
}

/// Time to move `self` at `rate`.
impl Div<BytesPerSec> for Bytes {
    type Output = Duration;
    fn div(self, rate: BytesPerSec) -> Duration {
        seconds_saturating(self.as_f64() / rate.0)
    }
}

impl FromStr for Bytes {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Self, ParseError> {
        parse_scaled(text, SIZE_UNITS, EXPECTED_SIZE, &SIZE_RANGE).map(Bytes::from_f64)
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [("TiB", 4), ("GiB", 3), ("MiB", 2), ("KiB", 1)];
        for (name, power) in units {
            let scale = 1024u64.pow(power);
            if self.0 >= scale {
                return write_trimmed(f, self.0 as f64 / scale as f64, name);
            }
        }
        write!(f, "{} B", self.0)
    }
}

/// A link or connection rate, in bits per second (how networks are quoted).
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd)]
pub struct BitsPerSec(pub f64);

impl BitsPerSec {
    pub fn mbps(n: f64) -> Self {
        BitsPerSec(n * 1e6)
    }
    pub fn gbps(n: f64) -> Self {
        BitsPerSec(n * 1e9)
    }
    pub fn to_bytes_per_sec(self) -> BytesPerSec {
        BytesPerSec(self.0 / 8.0)
    }
}

impl FromStr for BitsPerSec {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Self, ParseError> {
        parse_scaled(text, BIT_RATE_UNITS, EXPECTED_BIT_RATE, &BIT_RATE_RANGE).map(BitsPerSec)
    }
}

impl fmt::Display for BitsPerSec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_in_units(f, self.0, BIT_RATE_UNITS)
    }
}

/// A rate of bytes, e.g. how fast a guest dirties memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd)]
pub struct BytesPerSec(pub f64);

impl BytesPerSec {
    pub const ZERO: BytesPerSec = BytesPerSec(0.0);

    pub fn to_bits_per_sec(self) -> BitsPerSec {
        BitsPerSec(self.0 * 8.0)
    }
}

impl FromStr for BytesPerSec {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Self, ParseError> {
        parse_scaled(text, BYTE_RATE_UNITS, EXPECTED_BYTE_RATE, &BYTE_RATE_RANGE).map(BytesPerSec)
    }
}

impl fmt::Display for BytesPerSec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // In the decimal units, the first four: the binary ones are read only.
        write_in_units(f, self.0, &BYTE_RATE_UNITS[..4])
    }
}

/// Parses `"300 ms"`, `"15 min"`, `"1.5 h"`.
pub fn parse_duration(text: &str) -> Result<Duration, ParseError> {
    parse_scaled(text, DURATION_UNITS, EXPECTED_DURATION, &DURATION_RANGE).map(seconds_saturating)
}

/// Seconds as a `Duration` without the panic of `Duration::from_secs_f64`:
/// infinite or huge values saturate at `Duration::MAX`, NaN and negative
/// ones are zero. Parsed durations are bounded ([`MAX_DURATION`]) before
/// they get here; this guards derived ones (a size over a tiny rate).
pub fn seconds_saturating(seconds: f64) -> Duration {
    if seconds.is_nan() || seconds <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    }
}

/// Prints a duration in the notation [`parse_duration`] reads.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    let mut out = String::new();
    let (value, unit) = if secs == 0.0 {
        (0.0, "s")
    } else if secs < 1.0 {
        (secs * 1e3, "ms")
    } else if secs < 120.0 {
        (secs, "s")
    } else if secs < 7200.0 {
        (secs / 60.0, "min")
    } else {
        (secs / 3600.0, "h")
    };
    let _ = fmt::write(&mut out, format_args!("{}", Trimmed(value, unit)));
    out
}

struct Trimmed<'a>(f64, &'a str);

impl fmt::Display for Trimmed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_trimmed(f, self.0, self.1)
    }
}

/// Writes `value` in the largest of `units` (the base unit first, then
/// ever larger ones) that it reaches, else in the base unit: `1.5 Gbps`,
/// `500 B/s`.
fn write_in_units(f: &mut fmt::Formatter<'_>, value: f64, units: &[(&str, f64)]) -> fmt::Result {
    let (name, scale) = units
        .iter()
        .rev()
        .find(|(_, scale)| value >= *scale)
        .unwrap_or(&units[0]);
    write_trimmed(f, value / scale, name)
}

/// Writes up to three decimals, without trailing zeros: `4 GiB`, `1.5 Gbps`.
fn write_trimmed(f: &mut fmt::Formatter<'_>, value: f64, unit: &str) -> fmt::Result {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    write!(f, "{text} {unit}")
}

/// Serde support: every quantity is written as its human string and read
/// from one. A bare integer is accepted for [`Bytes`] only: a rate or a
/// duration without its unit is ambiguous.
impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrVisitor::<Bytes>::new(EXPECTED_SIZE))
    }
}
impl Serialize for BitsPerSec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
impl Serialize for BytesPerSec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for BitsPerSec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrVisitor::<BitsPerSec>::new(EXPECTED_BIT_RATE))
    }
}
impl<'de> Deserialize<'de> for BytesPerSec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrVisitor::<BytesPerSec>::new(EXPECTED_BYTE_RATE))
    }
}

/// Reads a quantity that must be written with its unit.
struct StrVisitor<T> {
    expected: &'static str,
    _marker: std::marker::PhantomData<T>,
}

impl<T> StrVisitor<T> {
    fn new(expected: &'static str) -> Self {
        Self {
            expected,
            _marker: std::marker::PhantomData,
        }
    }
}

/// Quantities that may be written as a bare integer.
trait FromInteger: Sized {
    fn from_integer(_: u64) -> Option<Self> {
        None
    }
}
impl FromInteger for Bytes {
    fn from_integer(n: u64) -> Option<Self> {
        Some(Bytes(n))
    }
}
impl FromInteger for BitsPerSec {}
impl FromInteger for BytesPerSec {}

impl<T> de::Visitor<'_> for StrVisitor<T>
where
    T: FromStr<Err = ParseError> + FromInteger,
{
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected)
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::custom(format!(
                "`{n}` is negative; expected {}",
                self.expected
            ))),
        }
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        T::from_integer(n).ok_or_else(|| E::custom(format!("`{n}` has no unit; expected {}", self.expected)))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<T, E> {
        Err(E::custom(format!(
            "`{n}` has no unit; expected {}",
            self.expected
        )))
    }
}

/// `#[serde(with = "evac_model::units::human_duration")]` for `std::time::Duration` fields.
pub mod human_duration {
    use super::*;

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer
            .deserialize_any(StrVisitor::<DurationValue>::new(EXPECTED_DURATION))
            .map(|d| d.0)
    }

    struct DurationValue(Duration);

    impl FromInteger for DurationValue {}

    impl FromStr for DurationValue {
        type Err = ParseError;
        fn from_str(text: &str) -> Result<Self, ParseError> {
            parse_duration(text).map(DurationValue)
        }
    }

    /// The same for `Option<Duration>` fields.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            duration: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match duration {
                Some(d) => serializer.serialize_str(&format_duration(*d)),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(deserializer).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, BitsPerSec, Bytes, BytesPerSec};

    #[test]
    fn a_mistyped_unit_gets_the_closest_one() {
        fn err<T: std::fmt::Debug>(r: Result<T, super::ParseError>) -> String {
            r.unwrap_err().to_string()
        }
        assert_eq!(
            err("10 Gbsp".parse::<BitsPerSec>()),
            "`10 Gbsp` is not a bit rate like \"1 Gbps\" (units: bps Kbps Mbps Gbps Tbps); \
             did you mean `10 Gbps`?"
        );
        assert_eq!(
            err("4 gib".parse::<Bytes>()),
            "`4 gib` is not a size like \"4 GiB\" (units: B KB MB GB TB KiB MiB GiB TiB); \
             did you mean `4 GiB`?"
        );
        assert_eq!(
            err("20MiB/sec".parse::<BytesPerSec>()),
            "`20MiB/sec` is not a byte rate like \"20 MB/s\" (units: B/s KB/s MB/s GB/s KiB/s MiB/s GiB/s); \
             did you mean `20 MiB/s`?"
        );
        assert_eq!(
            err(parse_duration(" 15 mins ")),
            "` 15 mins ` is not a duration like \"300 ms\" (units: us ms s min h); did you mean `15 min`?"
        );
        // No unit close enough: no suggestion.
        assert_eq!(
            err(parse_duration("5 m")),
            "`5 m` is not a duration like \"300 ms\" (units: us ms s min h)"
        );
        assert_eq!(
            err("4 GB/s".parse::<Bytes>()),
            "`4 GB/s` is not a size like \"4 GiB\" (units: B KB MB GB TB KiB MiB GiB TiB)"
        );
    }

    #[test]
    fn rates_are_written_in_the_largest_unit_they_reach() {
        assert_eq!(BitsPerSec(1.5e9).to_string(), "1.5 Gbps");
        assert_eq!(BitsPerSec(2e12).to_string(), "2 Tbps");
        assert_eq!(BitsPerSec(999.0).to_string(), "999 bps");
        assert_eq!(BitsPerSec(0.0).to_string(), "0 bps");
        assert_eq!(BytesPerSec(2.5e7).to_string(), "25 MB/s");
        // Decimal units only, up to GB/s.
        assert_eq!(BytesPerSec(5e12).to_string(), "5000 GB/s");
        assert_eq!(BytesPerSec(1048576.0).to_string(), "1.049 MB/s");
        assert_eq!(BytesPerSec(0.5).to_string(), "0.5 B/s");
    }

    #[test]
    fn from_f64_rounds_as_f64_round_does() {
        // The second method: `f64::round`, halves away from zero.
        let cases = [
            0.0,
            0.49999999999999994,
            0.5,
            1.5,
            2.5,
            1e15 + 0.5,
            4_503_599_627_370_495.5,
            4_503_599_627_370_497.0,
            9_007_199_254_740_993.0,
            1.8e19,
            2e19,
            -3.5,
            f64::NAN,
            f64::INFINITY,
        ];
        for x in cases {
            let expected = x.max(0.0).round() as u64;
            assert_eq!(Bytes::from_f64(x).0, expected, "{x}");
        }
        let mut x = 0.123_f64;
        for _ in 0..100_000 {
            x = x * 1.37 + 0.25;
            if x > 1e19 {
                x /= 1e17;
            }
            assert_eq!(Bytes::from_f64(x).0, x.round() as u64, "{x}");
        }
    }
}
