//! The quantities of a `[[vm_group]]`: one value for every VM, or a
//! distribution each VM draws its own value from.
//!
//! ```toml
//! memory = "4 GiB"
//! memory = { dist = "uniform", min = "1 GiB", max = "8 GiB" }
//! memory = { dist = "lognormal", median = "2 GiB", sigma = 0.8, min = "1 GiB", max = "16 GiB" }
//! memory = { dist = "choice", values = ["1 GiB", "4 GiB"], weights = [3, 1] }
//! ```

use std::fmt;
use std::marker::PhantomData;

use evac_model::{Bytes, BytesPerSec};
use rand::distributions::WeightedIndex;
use rand::Rng;
use rand_distr::{Distribution, LogNormal};
use serde::de::{self, DeserializeOwned, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A quantity a group's VMs can draw.
pub(crate) trait Quantity: Copy + PartialOrd + fmt::Display + DeserializeOwned {
    /// Drawn values are rounded to a multiple of this, so that generated
    /// VMs have sizes an operator would have given them.
    const GRAIN: f64;
    fn to_f64(self) -> f64;
    fn from_f64(value: f64) -> Self;
}

impl Quantity for Bytes {
    /// Whole MiB: guests are given memory in MiB.
    const GRAIN: f64 = 1024.0 * 1024.0;
    fn to_f64(self) -> f64 {
        self.as_f64()
    }
    fn from_f64(value: f64) -> Self {
        Bytes::from_f64(value)
    }
}

impl Quantity for BytesPerSec {
    /// Whole bytes per second.
    const GRAIN: f64 = 1.0;
    fn to_f64(self) -> f64 {
        self.0
    }
    fn from_f64(value: f64) -> Self {
        BytesPerSec(value)
    }
}

/// A plain number a group's VMs can draw, a type of its own so that it
/// cannot be given where another is meant: the newtype, its display, and
/// its [`Quantity`] with the grain drawn values are rounded to.
macro_rules! plain_number {
    ($(#[$doc:meta])* $name:ident, grain: $grain:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Deserialize)]
        #[serde(transparent)]
        pub(crate) struct $name(pub f64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl Quantity for $name {
            const GRAIN: f64 = $grain;
            fn to_f64(self) -> f64 {
                self.0
            }
            fn from_f64(value: f64) -> Self {
                $name(value)
            }
        }
    };
}

plain_number!(
    /// A share of a VM's pages (`zero_fraction`), drawn in thousandths (a
    /// tenth of a percent).
    Share,
    grain: 1e-3
);

plain_number!(
    /// A compression ratio (`compression_ratio`), drawn in hundredths.
    Ratio,
    grain: 1e-2
);

/// A fixed quantity or a distribution of it.
#[derive(Debug, Clone)]
pub(crate) enum Spec<T> {
    Fixed(T),
    Uniform {
        min: T,
        max: T,
    },
    LogNormal {
        dist: LogNormal<f64>,
        min: Option<T>,
        max: Option<T>,
    },
    Choice {
        values: Vec<T>,
        pick: WeightedIndex<f64>,
    },
}

impl<T: Quantity> Spec<T> {
    /// One VM's value. A fixed quantity draws nothing from `rng`; a listed
    /// choice is returned as written; continuous draws are rounded to
    /// [`Quantity::GRAIN`] and kept within their bounds.
    pub(crate) fn sample(&self, rng: &mut impl Rng) -> T {
        match self {
            Spec::Fixed(value) => *value,
            Spec::Uniform { min, max } => {
                let drawn = rng.gen_range(min.to_f64()..=max.to_f64());
                round_within(drawn, Some(*min), Some(*max))
            }
            Spec::LogNormal { dist, min, max } => round_within(dist.sample(rng), *min, *max),
            Spec::Choice { values, pick } => values[pick.sample(rng)],
        }
    }
}

/// Rounds to the grain, then clamps: rounding must not leave the bounds
/// when they are not themselves multiples of the grain.
fn round_within<T: Quantity>(value: f64, min: Option<T>, max: Option<T>) -> T {
    let mut value = (value / T::GRAIN).round() * T::GRAIN;
    if let Some(min) = min {
        value = value.max(min.to_f64());
    }
    if let Some(max) = max {
        value = value.min(max.to_f64());
    }
    T::from_f64(value)
}

impl<'de, T: Quantity> Deserialize<'de> for Spec<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SpecVisitor(PhantomData))
    }
}

struct SpecVisitor<T>(PhantomData<T>);

impl<'de, T: Quantity> Visitor<'de> for SpecVisitor<T> {
    type Value = Spec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a quantity like \"4 GiB\" or a distribution like \
             { dist = \"uniform\", min = \"1 GiB\", max = \"8 GiB\" }",
        )
    }

    // A scalar is a fixed quantity: the quantity's own parser says what is
    // wrong with it, in its own words (units and all).
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Spec<T>, E> {
        T::deserialize(text.into_deserializer()).map(Spec::Fixed)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Spec<T>, E> {
        T::deserialize(n.into_deserializer()).map(Spec::Fixed)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Spec<T>, E> {
        T::deserialize(n.into_deserializer()).map(Spec::Fixed)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Spec<T>, E> {
        T::deserialize(n.into_deserializer()).map(Spec::Fixed)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Spec<T>, A::Error> {
        let fields = DistFields::<T>::deserialize(de::value::MapAccessDeserializer::new(map))?;
        fields.into_spec().map_err(de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DistKind {
    Uniform,
    Lognormal,
    Choice,
}

impl DistKind {
    fn name(self) -> &'static str {
        match self {
            DistKind::Uniform => "uniform",
            DistKind::Lognormal => "lognormal",
            DistKind::Choice => "choice",
        }
    }

    /// The fields this distribution takes besides `dist`.
    fn fields(self) -> &'static [&'static str] {
        match self {
            DistKind::Uniform => &["min", "max"],
            DistKind::Lognormal => &["median", "sigma", "min", "max"],
            DistKind::Choice => &["values", "weights"],
        }
    }
}

/// Every key any distribution takes; which ones belong together is checked
/// after reading, so that the message can say which distribution wants what.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DistFields<T> {
    dist: DistKind,
    min: Option<T>,
    max: Option<T>,
    median: Option<T>,
    sigma: Option<f64>,
    values: Option<Vec<T>>,
    weights: Option<Vec<f64>>,
}

impl<T: Quantity> DistFields<T> {
    fn into_spec(self) -> Result<Spec<T>, String> {
        let kind = self.dist;
        let written = [
            ("min", self.min.is_some()),
            ("max", self.max.is_some()),
            ("median", self.median.is_some()),
            ("sigma", self.sigma.is_some()),
            ("values", self.values.is_some()),
            ("weights", self.weights.is_some()),
        ];
        if let Some((field, _)) = written.iter().find(|(f, is)| *is && !kind.fields().contains(f)) {
            return Err(format!(
                "`{field}` does not apply to dist = \"{}\", which takes {}",
                kind.name(),
                quoted_list(kind.fields())
            ));
        }
        let needs = |field: &str| format!("dist = \"{}\" needs `{field}`", kind.name());
        check_bounds(self.min, self.max)?;
        match kind {
            DistKind::Uniform => {
                let min = self.min.ok_or_else(|| needs("min"))?;
                let max = self.max.ok_or_else(|| needs("max"))?;
                Ok(Spec::Uniform { min, max })
            }
            DistKind::Lognormal => {
                let median = self.median.ok_or_else(|| needs("median"))?;
                let sigma = self.sigma.ok_or_else(|| needs("sigma"))?;
                if median.to_f64() <= 0.0 {
                    return Err(format!("`median` must be above zero, not {median}"));
                }
                if !(sigma.is_finite() && sigma >= 0.0) {
                    return Err(format!("`sigma` must be a number of at least 0, not {sigma}"));
                }
                // The median of a log-normal variable is e^mu.
                let dist = LogNormal::new(median.to_f64().ln(), sigma).map_err(|e| e.to_string())?;
                Ok(Spec::LogNormal {
                    dist,
                    min: self.min,
                    max: self.max,
                })
            }
            DistKind::Choice => {
                let values = self.values.ok_or_else(|| needs("values"))?;
                let weights = self.weights.unwrap_or_else(|| vec![1.0; values.len()]);
                if weights.len() != values.len() {
                    return Err(format!(
                        "`weights` has {} entries but `values` has {}; give one weight per value",
                        weights.len(),
                        values.len()
                    ));
                }
                // Infinite weights, or finite ones whose sum is not, make the
                // sampler panic: refused here with the others.
                if !weights.iter().all(|w| w.is_finite()) || !weights.iter().sum::<f64>().is_finite() {
                    return Err(format!(
                        "`weights` must be finite numbers of at least 0 with a finite sum (they are {weights:?})"
                    ));
                }
                let pick = WeightedIndex::new(&weights).map_err(|e| match e {
                    rand::distributions::WeightedError::NoItem => "`values` is empty".to_owned(),
                    _ => format!("`weights` must be numbers of at least 0, not all 0 (they are {weights:?})"),
                })?;
                Ok(Spec::Choice { values, pick })
            }
        }
    }
}

fn check_bounds<T: Quantity>(min: Option<T>, max: Option<T>) -> Result<(), String> {
    match (min, max) {
        (Some(min), Some(max)) if min > max => Err(format!("`min` ({min}) is above `max` ({max})")),
        _ => Ok(()),
    }
}

/// `` `a`, `b` and `c` ``.
fn quoted_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("`{item}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn parse(text: &str) -> Result<Spec<Bytes>, String> {
        #[derive(Deserialize)]
        struct Holder {
            memory: Spec<Bytes>,
        }
        toml::from_str::<Holder>(&format!("memory = {text}"))
            .map(|holder| holder.memory)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn a_scalar_is_fixed() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(parse("\"4 GiB\"").unwrap().sample(&mut rng), Bytes(4 << 30));
        assert_eq!(parse("1024").unwrap().sample(&mut rng), Bytes(1024));
    }

    #[test]
    fn draws_are_whole_mib() {
        let spec = parse("{ dist = \"lognormal\", median = \"2 GiB\", sigma = 0.8 }").unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..100 {
            let drawn = spec.sample(&mut rng);
            assert_eq!(drawn.0 % (1 << 20), 0, "{drawn:?}");
        }
    }

    #[test]
    fn lognormal_clamps_to_its_bounds() {
        let spec = parse(
            "{ dist = \"lognormal\", median = \"2 GiB\", sigma = 3, min = \"1 GiB\", max = \"3 GiB\" }",
        )
        .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let drawn: Vec<Bytes> = (0..200).map(|_| spec.sample(&mut rng)).collect();
        assert!(drawn
            .iter()
            .all(|&b| (Bytes(1 << 30)..=Bytes(3 << 30)).contains(&b)));
        // With sigma = 3 most draws fall outside [1, 3] GiB and hit a bound.
        assert!(drawn.contains(&Bytes(1 << 30)) && drawn.contains(&Bytes(3 << 30)));
    }

    #[test]
    fn refuses_fields_of_another_distribution() {
        let message =
            parse("{ dist = \"uniform\", min = \"1 GiB\", max = \"2 GiB\", sigma = 1 }").unwrap_err();
        assert!(
            message.contains("`sigma` does not apply to dist = \"uniform\""),
            "{message}"
        );
        assert!(message.contains("`min` and `max`"), "{message}");
    }

    #[test]
    fn refuses_incomplete_or_inconsistent_distributions() {
        let cases = [
            (
                "{ dist = \"uniform\", min = \"1 GiB\" }",
                "dist = \"uniform\" needs `max`",
            ),
            (
                "{ dist = \"uniform\", min = \"2 GiB\", max = \"1 GiB\" }",
                "`min` (2 GiB) is above `max` (1 GiB)",
            ),
            ("{ dist = \"lognormal\", median = \"2 GiB\" }", "needs `sigma`"),
            (
                "{ dist = \"lognormal\", median = \"0 GiB\", sigma = 1 }",
                "`median` must be above zero",
            ),
            (
                "{ dist = \"lognormal\", median = \"1 GiB\", sigma = -1 }",
                "`sigma` must be a number of at least 0",
            ),
            ("{ dist = \"choice\", values = [] }", "`values` is empty"),
            (
                "{ dist = \"choice\", values = [\"1 GiB\"], weights = [1, 2] }",
                "`weights` has 2 entries but `values` has 1",
            ),
            (
                "{ dist = \"choice\", values = [\"1 GiB\"], weights = [0] }",
                "not all 0",
            ),
            (
                "{ dist = \"normal\" }",
                "unknown variant `normal`, expected one of `uniform`, `lognormal`, `choice`",
            ),
            ("{ dist = \"uniform\", mean = 1 }", "unknown field `mean`"),
            ("\"4 GB/s\"", "`4 GB/s` is not a size like \"4 GiB\""),
        ];
        for (text, expected) in cases {
            let message = parse(text).err().unwrap_or_else(|| panic!("{text} parsed"));
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn lists_read_naturally() {
        assert_eq!(quoted_list(&["min", "max"]), "`min` and `max`");
        assert_eq!(quoted_list(&["a", "b", "c"]), "`a`, `b` and `c`");
        assert_eq!(quoted_list(&["a"]), "`a`");
    }
}
