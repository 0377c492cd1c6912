//! A table of a shared type (the model's `[migration]` parameters) that a
//! backend extends with keys of its own (`tls`, `copy_storage`), read
//! without serde's `flatten`.
//!
//! `flatten` buffers the table before the shared type sees it: a bad value
//! then loses its place (the error points at the table's header, not the
//! field's line) and its path (`migration`, not `migration.downtime_limit`).
//! Here the shared type reads the file's own map, entry by entry, while the
//! backend's keys are set aside as they pass: every value it reads keeps
//! its line and its path. The backend's few keys are read afterwards, from
//! what was set aside, their errors naming the key.

use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, DeserializeSeed, Error as _, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Reads a table as the shared `C` plus the backend's `O`, whose keys are
/// `own_keys` (every other key is `C`'s, and `C` refuses those it does not
/// know).
pub fn extended<'de, D, C, O>(deserializer: D, own_keys: &'static [&'static str]) -> Result<(C, O), D::Error>
where
    D: Deserializer<'de>,
    C: Deserialize<'de>,
    O: DeserializeOwned,
{
    deserializer.deserialize_map(ExtendedVisitor {
        own_keys,
        marker: PhantomData,
    })
}

struct ExtendedVisitor<C, O> {
    own_keys: &'static [&'static str],
    marker: PhantomData<(C, O)>,
}

impl<'de, C: Deserialize<'de>, O: DeserializeOwned> Visitor<'de> for ExtendedVisitor<C, O> {
    type Value = (C, O);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(C, O), A::Error> {
        let mut own = toml::Table::new();
        let common = C::deserialize(MapAccessDeserializer::new(SetAside {
            map: &mut map,
            own_keys: self.own_keys,
            own: &mut own,
        }))?;
        let own = serde_path_to_error::deserialize(toml::Value::Table(own))
            .map_err(|e| A::Error::custom(format!("field `{}`: {}", e.path(), e.inner().message())))?;
        Ok((common, own))
    }
}

/// The table's map as `C` sees it: the backend's keys set aside in `own`.
struct SetAside<'a, A> {
    map: &'a mut A,
    own_keys: &'static [&'static str],
    own: &'a mut toml::Table,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SetAside<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(key) = self.map.next_key::<String>()? else {
                return Ok(None);
            };
            if self.own_keys.contains(&key.as_str()) {
                let value: toml::Value = self.map.next_value()?;
                self.own.insert(key, value);
                continue;
            }
            return seed
                .deserialize(IntoDeserializer::<A::Error>::into_deserializer(key))
                .map(Some);
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Shared {
        rate: evac_model::BitsPerSec,
        rounds: u32,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct Own {
        #[serde(default)]
        tls: bool,
    }

    #[derive(Debug, PartialEq)]
    struct Table {
        shared: Shared,
        own: Own,
    }

    impl<'de> Deserialize<'de> for Table {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let (shared, own) = extended(d, &["tls"])?;
            Ok(Table { shared, own })
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[allow(dead_code)]
        name: String,
        migration: Table,
    }

    fn error(text: &str) -> String {
        crate::inventory::parse::<File>(text, Path::new("f.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn both_parts_are_read_and_a_bad_value_is_placed_at_its_own_line() {
        let text = "name = \"x\"\n[migration]\nrate = \"1 Gbps\"\ntls = true\nrounds = 3\n";
        let file = crate::inventory::parse::<File>(text, Path::new("f.toml")).unwrap();
        assert_eq!(
            file.migration,
            Table {
                shared: Shared {
                    rate: evac_model::BitsPerSec::gbps(1.0),
                    rounds: 3
                },
                own: Own { tls: true }
            }
        );
        // Line 5, column 8: the value, not the table's header (line 2).
        let e = error("name = \"x\"\n[migration]\ntls = true\nrounds = 3\nrate = \"1 GiB\"\n");
        assert!(e.starts_with("f.toml:5:8: field `migration.rate`: "), "{e}");
        let e = error("name = \"x\"\n[migration]\ntls = true\nrounds = \"three\"\n");
        assert!(e.starts_with("f.toml:4:10: field `migration.rounds`: "), "{e}");
        // A key neither part knows is refused, named.
        let e = error("name = \"x\"\n[migration]\nrounds = 3\nrtae = \"1 Gbps\"\n");
        assert!(e.contains("unknown field `rtae`"), "{e}");
        // A bad value of the backend's own key names it.
        let e = error("name = \"x\"\n[migration]\ntls = \"yes\"\n");
        assert!(e.contains("field `tls`"), "{e}");
    }
}
