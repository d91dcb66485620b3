use std::fmt;

use crate::ConfigError;
use crate::redact::{is_credential_name, param_names, redact_url};

/// Credential parameters the PostgreSQL driver (sqlx) understands; it ignores any other and
/// logs its value at WARN, so a URL holding one is refused.
const DRIVER_CREDENTIAL_PARAMS: &[&str] = &["password", "sslkey", "ssl-key"];

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
        if encoded_param_name(rest) {
            return Err(ConfigError::invalid(
                var,
                "a query parameter name is percent-encoded: the PostgreSQL driver decodes \
                 names, so a credential parameter could not be recognised and hidden; write \
                 parameter names plainly",
            ));
        }
        if reads_differently(rest) {
            return Err(ConfigError::invalid(
                var,
                "an '@' follows the first '/', '?' or '#', so the PostgreSQL driver would take \
                 part of the user info for the database name or a parameter (and print it): \
                 percent-encode a password holding '/', '?', '#' or '@' (%2F, %3F, %23, %40), \
                 and an '@' in a database name or parameter value (%40)",
            ));
        }
        if let Some(name) = param_names(raw)
            .find(|name| is_credential_name(name) && !DRIVER_CREDENTIAL_PARAMS.contains(name))
        {
            return Err(ConfigError::invalid(
                var,
                format!(
                    "the parameter {name:?} is not supported by the PostgreSQL driver, which \
                     would ignore it and log its value; remove it (a password belongs in the \
                     URL's user info, `password=` or PGPASSWORD, a password file in PGPASSFILE, \
                     and an encrypted client key must be decrypted)"
                ),
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

    /// The URL with its password and every credential parameter replaced by `***`, however
    /// the password is shaped (see the `redact` module).
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

/// Whether a query parameter *name* holds a `%` (the driver decodes names; `pass%77ord` is
/// `password` to it).
fn encoded_param_name(after_scheme: &str) -> bool {
    let Some(query) = after_scheme.split_once('?').map(|(_, q)| q) else {
        return false;
    };
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').any(|pair| {
        pair.split('=')
            .next()
            .is_some_and(|name| name.contains('%'))
    })
}

/// Whether the driver, which ends the authority at the first `/`, `?` or `#`, would read a
/// different user info than the redactor (which ends it at the last `@`): an `@` after that
/// first delimiter means part of the user info would become the driver's database name, query
/// or fragment (the server echoes a database name; sqlx logs unknown parameters).
fn reads_differently(after_scheme: &str) -> bool {
    let Some(delimiter) = after_scheme.find(['/', '?', '#']) else {
        return false;
    };
    after_scheme[delimiter..].contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_the_driver_would_split_at_a_slash_or_question_mark_is_refused() {
        // The driver ends the authority at the first '/', '?' or '#': it would read host
        // `app`, and put the rest of the password in the database name or a query parameter
        // (which sqlx then logs as unrecognized).
        for raw in [
            "postgres://app:/cAnArY?def@db/orders",
            "postgres://app:12?cAnArY@db/orders",
            "postgres://app:ab#cAnArY@db/orders",
        ] {
            let err = DatabaseUrl::parse("DATABASE_URL", raw).expect_err(raw);
            assert!(!err.to_string().contains("cAnArY"), "{err}");
        }
    }

    #[test]
    fn a_percent_encoded_parameter_name_is_refused() {
        // The driver decodes `pass%77ord` to `password` and uses it; the redactor could not
        // know, and would print the value.
        let err = DatabaseUrl::parse("DATABASE_URL", "postgres://u@h/db?pass%77ord=cAnArY")
            .expect_err("refused");
        assert!(!err.to_string().contains("cAnArY"), "{err}");
        assert!(
            DatabaseUrl::parse("DATABASE_URL", "postgres://u@h/db?application_name=a%20b").is_ok()
        );
    }

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
    fn urls_the_driver_would_read_differently_are_refused_without_the_secret() {
        for raw in [
            "postgres://app:1234/canary@db/orders",
            "postgres://app:x@127.0.0.1:5432/canary@db/orders",
            // An '@' in a parameter value reads the same way to a parser that ends the user
            // info at the last '@': percent-encode it (%40).
            "postgres://app:pw@db/orders?application_name=canary@host",
            "postgres://app:a/b?canary#d@db/orders",
        ] {
            let err = DatabaseUrl::parse("DATABASE_URL", raw).unwrap_err();
            assert!(!err.to_string().contains("canary"), "{err}");
            assert_eq!(err.var(), "DATABASE_URL");
        }
        for fine in [
            "postgres://app:pw@db/orders?application_name=me%40host",
            "postgres://app:a%2Fb%3Fc%23d@db/orders",
            "postgres://db/orders",
        ] {
            assert!(DatabaseUrl::parse("DATABASE_URL", fine).is_ok(), "{fine}");
        }
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
