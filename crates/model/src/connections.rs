//! A migration's parallel TCP connections, one type under one name.
//!
//! QEMU calls them multifd channels (`multifd-channels`), libvirt parallel
//! connections (`VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS`), the simulator
//! counts them as a migration's weight on a link it shares max-min fairly:
//! they are one concept, [`Connections`], and only the backends speak the
//! wire's names. The type holds 1 ..= 255 (QEMU's limit; libvirt's is the
//! same QEMU's), so no code downstream checks for 0 again.

use std::fmt;
use std::num::NonZeroU8;

use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

/// A migration's parallel TCP connections: 1 ..= [`Connections::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Connections(NonZeroU8);

impl Connections {
    /// One connection: QEMU's default, and all that postcopy's pages use
    /// before QEMU 10.1.
    pub const ONE: Connections = Connections(NonZeroU8::MIN);
    /// QEMU refuses more multifd channels.
    pub const MAX: Connections = Connections(NonZeroU8::MAX);

    /// `n` connections, if 1 ..= 255.
    pub const fn new(n: u32) -> Option<Connections> {
        if n > 255 {
            return None;
        }
        match NonZeroU8::new(n as u8) {
            Some(n) => Some(Connections(n)),
            None => None,
        }
    }

    /// `n` connections, brought within 1 ..= 255.
    pub fn clamped(n: u32) -> Connections {
        Connections::new(n.clamp(1, Connections::MAX.get())).expect("within range")
    }

    pub fn get(self) -> u32 {
        u32::from(self.0.get())
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0.get())
    }

    /// Why `n` is not a number of connections.
    fn refusal(n: i64) -> String {
        if n < 1 {
            "a migration needs at least 1 connection".to_owned()
        } else {
            format!("{n} connections are more than QEMU's {}", Connections::MAX)
        }
    }
}

impl Default for Connections {
    fn default() -> Self {
        Connections::ONE
    }
}

impl fmt::Display for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl TryFrom<i64> for Connections {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        u32::try_from(n)
            .ok()
            .and_then(Connections::new)
            .ok_or_else(|| Connections::refusal(n))
    }
}

impl Serialize for Connections {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.0.get())
    }
}

impl<'de> Deserialize<'de> for Connections {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        Connections::try_from(n).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_one_to_qemus_limit() {
        assert_eq!(Connections::new(0), None);
        assert_eq!(Connections::new(1), Some(Connections::ONE));
        assert_eq!(Connections::new(255), Some(Connections::MAX));
        assert_eq!(Connections::new(256), None);
        assert_eq!(Connections::clamped(0), Connections::ONE);
        assert_eq!(Connections::clamped(1000).get(), 255);
        assert_eq!(Connections::new(4).unwrap().as_f64(), 4.0);
    }

    #[test]
    fn reads_and_writes_as_a_number_with_clear_refusals() {
        let c: Connections = serde_json::from_str("8").unwrap();
        assert_eq!(c.get(), 8);
        assert_eq!(serde_json::to_string(&c).unwrap(), "8");
        let zero = serde_json::from_str::<Connections>("0").unwrap_err().to_string();
        assert!(zero.contains("at least 1 connection"), "{zero}");
        let many = serde_json::from_str::<Connections>("300")
            .unwrap_err()
            .to_string();
        assert!(
            many.contains("300 connections are more than QEMU's 255"),
            "{many}"
        );
        let negative = serde_json::from_str::<Connections>("-2").unwrap_err().to_string();
        assert!(negative.contains("at least 1 connection"), "{negative}");
    }
}
