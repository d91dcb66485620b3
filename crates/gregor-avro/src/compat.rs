//! Schema compatibility levels and the rules that enforce them, shared by the registry server
//! (at registration) and `gregor schema check` (in CI).

use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;

/// A subject's compatibility level, with Confluent's names and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CompatibilityLevel {
    /// No check.
    None,
    /// The new schema can read data written with the latest one (Confluent's default).
    #[default]
    Backward,
    /// As [`Backward`](Self::Backward), against every earlier version.
    BackwardTransitive,
    /// Data written with the new schema can be read with the latest one.
    Forward,
    /// As [`Forward`](Self::Forward), against every earlier version.
    ForwardTransitive,
    /// Both backward and forward.
    Full,
    /// Both, against every earlier version.
    FullTransitive,
}

impl CompatibilityLevel {
    /// Every level, in Confluent's order.
    pub const ALL: [Self; 7] = [
        Self::None,
        Self::Backward,
        Self::BackwardTransitive,
        Self::Forward,
        Self::ForwardTransitive,
        Self::Full,
        Self::FullTransitive,
    ];

    /// The level's name as the registry API spells it (`BACKWARD_TRANSITIVE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compatibility level name that is not one of Confluent's seven.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown compatibility level {0:?} (expected NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL or FULL_TRANSITIVE)"
)]
pub struct UnknownLevel(pub String);

impl FromStr for CompatibilityLevel {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        Self::ALL
            .into_iter()
            .find(|l| l.as_str() == upper)
            .ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

/// Whether data written with `writer` can be read with `reader`; the error says which part
/// of the schema breaks (a field without a default, a type that cannot be promoted …).
pub fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    SchemaCompatibility::can_read(writer, reader)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks `candidate` against a subject's existing versions (oldest first) under `level`.
///
/// Non-transitive levels compare with the latest version only; transitive ones with all of
/// them. The error names the version it fails against and the reason.
pub fn check(
    level: CompatibilityLevel,
    candidate: &Schema,
    existing: &[(i32, &Schema)],
) -> Result<(), String> {
    let against: &[(i32, &Schema)] = if level.transitive() {
        existing
    } else {
        existing.last().map(std::slice::from_ref).unwrap_or(&[])
    };
    for &(version, old) in against.iter().rev() {
        if level.backward() {
            can_read(old, candidate).map_err(|reason| {
                format!(
                    "{level}: the new schema cannot read data written with version {version}: {reason}"
                )
            })?;
        }
        if level.forward() {
            can_read(candidate, old).map_err(|reason| {
                format!(
                    "{level}: version {version} cannot read data written with the new schema: {reason}"
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"Order","fields":[{fields}]}}"#
        ))
        .expect("valid schema")
    }

    #[test]
    fn levels_parse_and_print() {
        for level in CompatibilityLevel::ALL {
            assert_eq!(level.as_str().parse::<CompatibilityLevel>(), Ok(level));
        }
        assert_eq!(
            "full_transitive".parse(),
            Ok(CompatibilityLevel::FullTransitive)
        );
        assert!("SIDEWAYS".parse::<CompatibilityLevel>().is_err());
    }

    #[test]
    fn rules_follow_confluent() {
        let v1 = schema(r#"{"name":"id","type":"long"}"#);
        let with_default =
            schema(r#"{"name":"id","type":"long"},{"name":"note","type":"string","default":""}"#);
        let without_default =
            schema(r#"{"name":"id","type":"long"},{"name":"note","type":"string"}"#);
        let prev = [(1, &v1)];
        use CompatibilityLevel::*;
        // Adding a field with a default is fully compatible.
        for level in ALL_LEVELS {
            assert!(check(level, &with_default, &prev).is_ok(), "{level}");
        }
        // Adding a field without a default is forward- but not backward-compatible.
        assert!(check(Forward, &without_default, &prev).is_ok());
        let err = check(Backward, &without_default, &prev).unwrap_err();
        assert!(err.contains("version 1"), "{err}");
        assert!(check(Full, &without_default, &prev).is_err());
        assert!(check(None, &without_default, &prev).is_ok());
        // Removing a field without a default is backward- but not forward-compatible.
        let prev2 = [(1, &without_default)];
        assert!(check(Backward, &v1, &prev2).is_ok());
        assert!(check(Forward, &v1, &prev2).is_err());
    }

    #[test]
    fn transitive_levels_look_at_every_version() {
        let v1 = schema(r#"{"name":"id","type":"long"}"#);
        let v2 = schema(r#"{"name":"id","type":"long"},{"name":"a","type":"int","default":0}"#);
        // v3 drops `id`'s neighbour and adds a required field only v1 lacks... build a case
        // where v3 is compatible with v2 but not with v1: v3 requires `a` without default.
        let v3 = schema(r#"{"name":"id","type":"long"},{"name":"a","type":"int"}"#);
        let prev = [(1, &v1), (2, &v2)];
        assert!(check(CompatibilityLevel::Backward, &v3, &prev).is_ok());
        let err = check(CompatibilityLevel::BackwardTransitive, &v3, &prev).unwrap_err();
        assert!(err.contains("version 1"), "{err}");
    }

    const ALL_LEVELS: [CompatibilityLevel; 7] = CompatibilityLevel::ALL;
}
