//! Schema compatibility levels and the rules that enforce them, shared by the registry server
//! (at registration) and `gregor schema check` (in CI).

use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;

mod checker;

use checker::{Checker, OverBudget};

/// The work one compatibility check may do by default ([`check`], [`can_read`]): about a
/// second of CPU in a debug build, a tenth of that optimized. Real schemas need a few
/// thousand steps; a union of thousands of records compared with another needs millions.
pub const DEFAULT_MAX_CHECK_STEPS: u64 = 1_000_000;

/// Why a check did not accept a schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The schemas are incompatible; the reason names the version and the part that breaks.
    #[error("{0}")]
    Incompatible(String),
    /// Comparing the schemas would take more than `max_steps` steps of work: refused
    /// unfinished.
    #[error(
        "comparing the schemas takes more than {max_steps} steps of work (unions of many \
         records, very wide records); the check was stopped"
    )]
    TooCostly {
        /// The budget that ran out.
        max_steps: u64,
    },
}

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
/// Bounded by [`DEFAULT_MAX_CHECK_STEPS`].
pub fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    can_read_within(writer, reader, DEFAULT_MAX_CHECK_STEPS).map_err(|e| e.to_string())
}

/// [`can_read`] with a work budget of `max_steps`.
pub fn can_read_within(writer: &Schema, reader: &Schema, max_steps: u64) -> Result<(), CheckError> {
    let mut checker = Checker::new(max_steps);
    match checker.can_read(writer, reader) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(why)) => Err(CheckError::Incompatible(checker.explain(why).to_string())),
        Err(OverBudget) => Err(CheckError::TooCostly { max_steps }),
    }
}

/// Checks `candidate` against a subject's existing versions (oldest first) under `level`,
/// within [`DEFAULT_MAX_CHECK_STEPS`].
///
/// Non-transitive levels compare with the latest version only; transitive ones with all of
/// them. The error names the version it fails against and the reason.
pub fn check(
    level: CompatibilityLevel,
    candidate: &Schema,
    existing: &[(i32, &Schema)],
) -> Result<(), String> {
    check_within(level, candidate, existing, DEFAULT_MAX_CHECK_STEPS).map_err(|e| e.to_string())
}

/// [`check`] with a work budget of `max_steps` for the whole check (all versions, both
/// directions).
pub fn check_within(
    level: CompatibilityLevel,
    candidate: &Schema,
    existing: &[(i32, &Schema)],
    max_steps: u64,
) -> Result<(), CheckError> {
    let against: &[(i32, &Schema)] = if level.transitive() {
        existing
    } else {
        existing.last().map(std::slice::from_ref).unwrap_or(&[])
    };
    let mut checker = Checker::new(max_steps);
    let over = |OverBudget| CheckError::TooCostly { max_steps };
    for &(version, old) in against.iter().rev() {
        if level.backward()
            && let Err(why) = checker.can_read(old, candidate).map_err(over)?
        {
            let reason = checker.explain(why);
            return Err(CheckError::Incompatible(format!(
                "{level}: the new schema cannot read data written with version {version}: {reason}"
            )));
        }
        if level.forward()
            && let Err(why) = checker.can_read(candidate, old).map_err(over)?
        {
            let reason = checker.explain(why);
            return Err(CheckError::Incompatible(format!(
                "{level}: version {version} cannot read data written with the new schema: {reason}"
            )));
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

    fn parse(text: &str) -> Schema {
        Schema::parse_str(text).expect("valid schema")
    }

    /// A union of `n` records named `R` (namespaces `{prefix}0` …) with a field `a` of `ty`.
    fn union_of_records(n: usize, prefix: &str, ty: &str) -> Schema {
        let branches: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"type":"record","name":"R","namespace":"{prefix}{i}","fields":[{{"name":"a","type":"{ty}"}}]}}"#
                )
            })
            .collect();
        parse(&format!("[{}]", branches.join(",")))
    }

    /// The hostile shape of issue 15: 3 000 × 3 000 failing record pairs. It is stopped at
    /// the budget, quickly, and a budget too small for even an ordinary check stops that too.
    #[test]
    fn the_work_budget_stops_a_costly_check() {
        let writer = union_of_records(3000, "w", "int");
        let reader = union_of_records(3000, "r", "string");
        let started = std::time::Instant::now();
        let err = check_within(
            CompatibilityLevel::Backward,
            &reader,
            &[(1, &writer)],
            DEFAULT_MAX_CHECK_STEPS,
        )
        .unwrap_err();
        assert_eq!(
            err,
            CheckError::TooCostly {
                max_steps: DEFAULT_MAX_CHECK_STEPS
            }
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(err.to_string().len() < 200, "{err}");

        // An ordinary compatible pair needs a few steps: fine with a small budget, stopped
        // with a tiny one.
        let v1 = schema(r#"{"name":"id","type":"long"}"#);
        let v2 = schema(r#"{"name":"id","type":"long"},{"name":"n","type":"int","default":0}"#);
        let mut counting = Checker::new(u64::MAX);
        assert!(matches!(counting.can_read(&v1, &v2), Ok(Ok(_))));
        let needed = counting.steps();
        assert!((1..50).contains(&needed), "{needed}");
        assert_eq!(can_read_within(&v1, &v2, needed), Ok(()));
        assert_eq!(
            can_read_within(&v1, &v2, needed - 1),
            Err(CheckError::TooCostly {
                max_steps: needed - 1
            })
        );
        // One budget covers every version of a transitive check.
        let prev = [(1, &v1), (2, &v1), (3, &v1)];
        assert!(check_within(CompatibilityLevel::FullTransitive, &v2, &prev, 4 * needed).is_ok());
        assert!(check_within(CompatibilityLevel::FullTransitive, &v2, &prev, needed).is_err());
    }

    /// Failures are remembered per pair of schema nodes: comparing the same two unions again
    /// costs one step per pair of branches, not the record comparisons again.
    #[test]
    fn failures_are_remembered() {
        let writer = union_of_records(30, "w", "int");
        let reader = union_of_records(30, "r", "string");
        let mut checker = Checker::new(u64::MAX);
        assert!(matches!(checker.can_read(&writer, &reader), Ok(Err(_))));
        let first = checker.steps();
        assert!(matches!(checker.can_read(&writer, &reader), Ok(Err(_))));
        assert_eq!(
            checker.steps() - first,
            1,
            "the pair of unions is remembered"
        );
    }

    /// A mismatch is told in a few words that say where and which types clash, never with
    /// the schemas dumped.
    #[test]
    fn mismatches_are_brief() {
        let wide: Vec<String> = (0..2000)
            .map(|i| format!(r#"{{"name":"field_{i}","type":"string"}}"#))
            .collect();
        let inner = format!(
            r#"{{"type":"record","name":"Wide","fields":[{}]}}"#,
            wide.join(",")
        );
        let v1 = schema(
            r#"{"name":"a","type":{"type":"record","name":"In","fields":[{"name":"b","type":"int"}]}}"#,
        );
        let v2 = schema(&format!(
            r#"{{"name":"a","type":{{"type":"record","name":"In","fields":[{{"name":"b","type":{inner}}}]}}}}"#
        ));
        let err = can_read(&v1, &v2).unwrap_err();
        assert_eq!(
            err,
            "Field 'a.b': the writer's int cannot be read as record Wide"
        );
        let err = can_read(&v2, &v1).unwrap_err();
        assert_eq!(
            err,
            "Field 'a.b': the writer's record Wide cannot be read as int"
        );
        let long_name = "x".repeat(10_000);
        let v3 = schema(&format!(r#"{{"name":"{long_name}","type":"int"}}"#));
        let err = can_read(&v1, &v3).unwrap_err();
        assert!(err.len() < 200, "{err}");
        assert!(err.contains("has no default"), "{err}");
        let v4 = schema(
            r#"{"name":"a","type":{"type":"record","name":"In","fields":[{"name":"c","type":"int"}]}}"#,
        );
        assert_eq!(
            can_read(&v1, &v4).unwrap_err(),
            "Field 'a.c' of the reader's record is not in the writer's and has no default"
        );
    }

    /// The rules are apache-avro's: the same verdict on every pair of a varied set.
    #[test]
    fn verdicts_match_apache_avro() {
        use apache_avro::schema_compatibility::SchemaCompatibility;
        let texts = [
            r#""null""#,
            r#""int""#,
            r#""long""#,
            r#""float""#,
            r#""double""#,
            r#""string""#,
            r#""bytes""#,
            r#"{"type":"int","logicalType":"date"}"#,
            r#"{"type":"long","logicalType":"timestamp-millis"}"#,
            r#"{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}"#,
            r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}"#,
            r#"{"type":"fixed","name":"F","size":4}"#,
            r#"{"type":"fixed","name":"F","size":8}"#,
            r#"{"type":"fixed","name":"G","size":4}"#,
            r#"{"type":"array","items":"int"}"#,
            r#"{"type":"array","items":"long"}"#,
            r#"{"type":"map","values":"string"}"#,
            r#"{"type":"enum","name":"E","symbols":["A","B"]}"#,
            r#"{"type":"enum","name":"E","symbols":["B","C"]}"#,
            r#"{"type":"enum","name":"E","symbols":["C"]}"#,
            r#"{"type":"enum","name":"E","symbols":["C"],"default":"C"}"#,
            r#"["null","int"]"#,
            r#"["null","string","long"]"#,
            r#"["int","string"]"#,
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"b","type":"string","default":""}]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"b","type":"string"}]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"c","aliases":["a"],"type":"int"}]}"#,
            r#"{"type":"record","name":"S","fields":[{"name":"a","type":"int"}]}"#,
            r#"{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]}]}"#,
            r#"{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]},{"name":"v","type":"int","default":0}]}"#,
        ];
        let schemas: Vec<Schema> = texts.iter().map(|t| parse(t)).collect();
        for (wi, w) in schemas.iter().enumerate() {
            for (ri, r) in schemas.iter().enumerate() {
                let theirs = SchemaCompatibility::can_read(w, r).is_ok();
                let ours = can_read(w, r);
                assert_eq!(
                    ours.is_ok(),
                    theirs,
                    "writer {} reader {}: {ours:?}",
                    texts[wi],
                    texts[ri]
                );
            }
        }
    }
}
