use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use crate::ConfigError;

/// A snapshot of environment variables.
///
/// Binaries take [`Env::from_process`]; tests build one with [`Env::from_pairs`] so they never
/// mutate the process environment.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets: show names only.
        f.debug_struct("Env")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Env {
    /// Every variable of the current process (non-UTF-8 ones are skipped).
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    /// Variables from explicit pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Sets one variable, returning `self` (handy in tests).
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(key.into(), value.into());
        self
    }

    /// The value of `var`, treating an empty value as unset.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.vars
            .get(var)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// The value of `var`, or [`ConfigError::Missing`].
    pub fn require(&self, var: &str) -> Result<&str, ConfigError> {
        self.get(var).ok_or_else(|| ConfigError::Missing {
            var: var.to_owned(),
        })
    }

    /// Parses `var` with [`FromStr`], or returns `default` when unset.
    pub fn parse_or<T>(&self, var: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::invalid(var, format!("{e} (got {raw:?})"))),
        }
    }

    /// A duration given in milliseconds, or `default` when unset.
    pub fn millis_or(&self, var: &str, default: Duration) -> Result<Duration, ConfigError> {
        let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        self.parse_or::<u64>(var, default_ms)
            .map(Duration::from_millis)
    }

    /// Every variable whose name starts with `prefix`, in name order.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.vars
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_count_as_unset() {
        let env = Env::from_pairs([("A", "  ")]);
        assert!(env.get("A").is_none());
        assert_eq!(env.require("A").unwrap_err().var(), "A");
    }

    #[test]
    fn parse_errors_name_the_variable() {
        let env = Env::from_pairs([("GREGOR_X", "ten")]);
        let err = env.parse_or::<u32>("GREGOR_X", 1).unwrap_err();
        assert!(err.to_string().starts_with("GREGOR_X is invalid"), "{err}");
    }

    #[test]
    fn debug_shows_names_not_values() {
        let env = Env::from_pairs([("DATABASE_URL", "postgres://u:canary@h/d")]);
        assert!(!format!("{env:?}").contains("canary"));
    }
}
