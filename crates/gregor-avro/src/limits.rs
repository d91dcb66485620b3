//! How much work and memory decoding one message may cost, read from `GREGOR_AVRO_MAX_*`.

use gregor_config::{ConfigError, Env};

/// The variable bounding the values one message may decode into.
pub const MAX_ITEMS_VAR: &str = "GREGOR_AVRO_MAX_ITEMS";
/// The variable bounding the memory one message may decode into.
pub const MAX_DECODED_BYTES_VAR: &str = "GREGOR_AVRO_MAX_DECODED_BYTES";
/// The variable bounding how deeply records, arrays and maps may nest.
pub const MAX_DEPTH_VAR: &str = "GREGOR_AVRO_MAX_DEPTH";

/// The deepest nesting a limit may allow. The budget walk recurses once per level on the
/// caller's stack (deep values themselves decode on a stack sized for them); 128 levels of it
/// take under 1 MiB even in a debug build.
pub const DEPTH_CEILING: usize = 128;

/// Bounds on decoding one message, checked against the writer schema and the bytes *before*
/// apache-avro decodes anything — fields the reader schema drops included.
///
/// A message over a bound is the bytes' fault ([`AvroError::OverLimit`](crate::AvroError)):
/// dead-lettered, never retried. The defaults fit any event a service should put on Kafka;
/// raise them for unusually large events.
///
/// ```
/// use gregor_avro::DecodeLimits;
/// use gregor_config::Env;
///
/// let limits = DecodeLimits::from_env(&Env::from_pairs([("GREGOR_AVRO_MAX_ITEMS", "5000")]))
///     .expect("valid");
/// assert_eq!(limits.max_items, 5000);
/// assert_eq!(limits.max_decoded_bytes, DecodeLimits::default().max_decoded_bytes);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Values one message may decode into, counting every record field, array item, map
    /// entry, union branch and `null` (`GREGOR_AVRO_MAX_ITEMS`, default 1 000 000).
    pub max_items: usize,
    /// Estimated memory one decoded message may take: a value slot per item plus the contents
    /// of strings, bytes, fixed and enum symbols, record field names and map keys
    /// (`GREGOR_AVRO_MAX_DECODED_BYTES`, default 67 108 864 = 64 MiB).
    pub max_decoded_bytes: usize,
    /// How deeply records, arrays and maps may nest; the top-level record is depth 1
    /// (`GREGOR_AVRO_MAX_DEPTH`, default 64, at most 128).
    pub max_depth: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_items: 1_000_000,
            max_decoded_bytes: 64 * 1024 * 1024,
            max_depth: 64,
        }
    }
}

impl DecodeLimits {
    /// Reads `GREGOR_AVRO_MAX_ITEMS`, `GREGOR_AVRO_MAX_DECODED_BYTES` and
    /// `GREGOR_AVRO_MAX_DEPTH`; unset variables keep their defaults.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let limits = Self {
            max_items: env.parse_or(MAX_ITEMS_VAR, defaults.max_items)?,
            max_decoded_bytes: env.parse_or(MAX_DECODED_BYTES_VAR, defaults.max_decoded_bytes)?,
            max_depth: env.parse_or(MAX_DEPTH_VAR, defaults.max_depth)?,
        };
        limits.validate()?;
        Ok(limits)
    }

    /// Refuses limits no message could meet, and depths the decoder's stack cannot take.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_items == 0 {
            return Err(ConfigError::invalid(MAX_ITEMS_VAR, "must be at least 1"));
        }
        if self.max_decoded_bytes == 0 {
            return Err(ConfigError::invalid(
                MAX_DECODED_BYTES_VAR,
                "must be at least 1",
            ));
        }
        if !(1..=DEPTH_CEILING).contains(&self.max_depth) {
            return Err(ConfigError::invalid(
                MAX_DEPTH_VAR,
                format!("must be 1 to {DEPTH_CEILING}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_unset() {
        assert_eq!(
            DecodeLimits::from_env(&Env::default()).expect("valid"),
            DecodeLimits {
                max_items: 1_000_000,
                max_decoded_bytes: 64 << 20,
                max_depth: 64
            }
        );
    }

    #[test]
    fn every_variable_is_read() {
        let limits = DecodeLimits::from_env(&Env::from_pairs([
            (MAX_ITEMS_VAR, "10"),
            (MAX_DECODED_BYTES_VAR, "2048"),
            (MAX_DEPTH_VAR, "3"),
        ]))
        .expect("valid");
        assert_eq!(
            limits,
            DecodeLimits {
                max_items: 10,
                max_decoded_bytes: 2048,
                max_depth: 3
            }
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, raw) in [
            (MAX_ITEMS_VAR, "0"),
            (MAX_ITEMS_VAR, "many"),
            (MAX_DECODED_BYTES_VAR, "0"),
            (MAX_DECODED_BYTES_VAR, "-1"),
            (MAX_DEPTH_VAR, "0"),
            (MAX_DEPTH_VAR, "129"),
        ] {
            let err = DecodeLimits::from_env(&Env::from_pairs([(var, raw)])).unwrap_err();
            assert_eq!(err.var(), var, "{var}={raw}");
        }
    }
}
