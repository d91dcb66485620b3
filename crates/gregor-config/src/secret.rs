use std::fmt;

use crate::ConfigError;

/// A value that never shows in `Debug` or `Display` output.
///
/// Read it deliberately with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself; call sites that use it are easy to audit.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A PostgreSQL connection URL. `Debug` and `Display` show it with the password masked.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: Secret<String>,
    redacted: String,
}

impl DatabaseUrl {
    /// Validates the scheme and keeps the URL; `var` names the variable for errors.
    pub fn parse(var: &str, raw: &str) -> Result<Self, ConfigError> {
        let raw = raw.trim();
        let Some(rest) = raw
            .strip_prefix("postgres://")
            .or_else(|| raw.strip_prefix("postgresql://"))
        else {
            return Err(ConfigError::invalid(
                var,
                "expected a URL starting with postgres:// or postgresql://",
            ));
        };
        if rest.is_empty() {
            return Err(ConfigError::invalid(
                var,
                "the URL names no host or database",
            ));
        }
        Ok(Self {
            redacted: redact_url(raw),
            url: Secret::new(raw.to_owned()),
        })
    }

    /// The full URL, password included: only for handing to the driver.
    pub fn expose(&self) -> &str {
        self.url.expose()
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&self.redacted).finish()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// Masks `user:password@` and any `password=` query parameter.
fn redact_url(raw: &str) -> String {
    let (scheme, rest) = raw.split_once("://").unwrap_or(("", raw));
    let (authority_end, _) = rest
        .char_indices()
        .find(|&(_, c)| c == '/' || c == '?')
        .unwrap_or((rest.len(), ' '));
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_masked_everywhere() {
        let url = DatabaseUrl::parse(
            "DATABASE_URL",
            "postgres://app:s3cr3t-canary@db:5432/orders?sslmode=require&password=other-canary",
        )
        .unwrap();
        for shown in [
            format!("{url:?}"),
            url.to_string(),
            url.redacted().to_owned(),
        ] {
            assert!(!shown.contains("canary"), "{shown}");
            assert!(shown.contains("app:***@db:5432/orders"), "{shown}");
        }
        assert!(url.expose().contains("s3cr3t-canary"));
    }

    #[test]
    fn wrong_scheme_is_refused_with_the_variable_name() {
        let err = DatabaseUrl::parse("DATABASE_URL", "mysql://x").unwrap_err();
        assert_eq!(err.var(), "DATABASE_URL");
    }

    #[test]
    fn secret_debug_and_display_are_redacted() {
        let s = Secret::new("canary".to_owned());
        assert_eq!(format!("{s:?}{s}"), "Secret(<redacted>)<redacted>");
    }
}
