//! Redacting connection strings by parsing them, whatever characters their secrets hold.
//!
//! Generated passwords are pasted into URLs without percent-encoding, so a password may hold
//! `/`, `?`, `#`, `@`, `:`, `&` or `=`. Cutting the authority at the first `/` or `?` then
//! prints the rest of the password. Instead:
//!
//! * the userinfo ends at the **last** `@` (a host never holds one), and everything after
//!   its first `:` is masked — the whole userinfo when what precedes the `:` is not a plain
//!   user name;
//! * every parameter named like a credential (see [`is_credential_name`]) is masked from its
//!   `=` up to the next `&name=` — so a value holding `&`, `?`, `#` or `@` stays masked.
//!
//! When the two readings disagree (an `@` inside a parameter value) both ranges are masked:
//! the output may hide more than the secret, never less.

/// What a masked range is replaced with.
const MASK: &str = "***";

/// `raw` with every password and credential parameter replaced by `***`.
pub(crate) fn redact_url(raw: &str) -> String {
    let start = raw.find("://").map_or(0, |i| i + 3);
    let mut masked: Vec<(usize, usize)> = Vec::new();
    if let Some(at) = raw[start..].rfind('@').map(|i| start + i) {
        let userinfo = &raw[start..at];
        match userinfo.split_once(':') {
            Some((user, _)) if is_plain_user(user) => masked.push((start + user.len() + 1, at)),
            None if is_plain_user(userinfo) => {}
            _ => masked.push((start, at)),
        }
    }
    for param in params(raw, start) {
        if is_credential_name(param.name) {
            masked.push((param.value_start, param.value_end));
        }
    }
    render(raw, masked)
}

/// The names of the parameters of `raw`, for validation: only those after the last `@`, so
/// that no piece of a password is ever taken for a name (and echoed in an error).
pub(crate) fn param_names(raw: &str) -> impl Iterator<Item = &str> {
    let start = raw.find("://").map_or(0, |i| i + 3);
    let start = raw[start..].rfind('@').map_or(start, |at| start + at + 1);
    params(raw, start).into_iter().map(|p| p.name)
}

/// Whether a parameter or property named `name` carries a credential: anything named like a
/// password, passphrase, secret, token, credential or key.
pub(crate) fn is_credential_name(name: &str) -> bool {
    let normalized: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    [
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "passfile",
        "secret",
        "token",
        "credential",
        "privatekey",
        "jaas",
    ]
    .iter()
    .any(|needle| normalized.contains(needle))
        || normalized.ends_with("key")
}

/// A user name that is not a piece of something else: no URL delimiters.
fn is_plain_user(user: &str) -> bool {
    !user.contains(['/', '?', '#', '&', '=', '@'])
}

struct Param<'a> {
    name: &'a str,
    value_start: usize,
    value_end: usize,
}

/// Every `name=value` that follows a `?` or `&` after `start`; a value runs up to the next
/// `&name=` (so an unencoded `&`, `?` or `#` inside it stays part of it) or the end.
fn params(raw: &str, start: usize) -> Vec<Param<'_>> {
    let bytes = raw.as_bytes();
    let mut found: Vec<Param<'_>> = Vec::new();
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if b != b'?' && b != b'&' {
            continue;
        }
        let name_start = i + 1;
        let name_len = bytes[name_start..]
            .iter()
            .take_while(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'[' | b']')
            })
            .count();
        let eq = name_start + name_len;
        if name_len == 0 || bytes.get(eq) != Some(&b'=') {
            continue;
        }
        // A `&name=` ends every value still open; a `?name=` inside a value does not.
        if b == b'&' {
            for open in found.iter_mut().filter(|p| p.value_end > i) {
                open.value_end = i;
            }
        }
        found.push(Param {
            name: &raw[name_start..eq],
            value_start: eq + 1,
            value_end: raw.len(),
        });
    }
    found
}

/// `raw` with the union of `ranges` replaced by [`MASK`], one per maximal range.
fn render(raw: &str, mut ranges: Vec<(usize, usize)>) -> String {
    ranges.retain(|(a, b)| a < b);
    ranges.sort_unstable();
    let mut out = String::with_capacity(raw.len());
    let mut pos = 0;
    let mut i = 0;
    while i < ranges.len() {
        let (a, mut b) = ranges[i];
        i += 1;
        while i < ranges.len() && ranges[i].0 <= b {
            b = b.max(ranges[i].1);
            i += 1;
        }
        let a = a.max(pos);
        out.push_str(&raw[pos..a]);
        out.push_str(MASK);
        pos = b;
    }
    out.push_str(&raw[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_by_parsing() {
        for (raw, shown) in [
            ("postgres://u:p@h:1/d", "postgres://u:***@h:1/d"),
            ("postgres://u:a/b?c#d@e@h/d?x=1", "postgres://u:***@h/d?x=1"),
            ("postgres://u@h/d", "postgres://u@h/d"),
            (
                "postgres://h/d?sslmode=require&password=a&b&c=d",
                "postgres://h/d?sslmode=require&password=***&c=d",
            ),
            (
                "postgres://h/d?password=a?b=c&d=e",
                "postgres://h/d?password=***&d=e",
            ),
            ("postgres://h/d?password=x@h2/d", "postgres://***"),
            (
                "postgres://u:p@h/d?application_name=a@b",
                "postgres://u:***@b",
            ),
            ("no scheme", "no scheme"),
        ] {
            assert_eq!(redact_url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn credential_names() {
        for name in [
            "password",
            "sslpassword",
            "PGPASSWORD",
            "api_key",
            "sslkey",
            "auth-token",
            "client.secret",
            "passfile",
        ] {
            assert!(is_credential_name(name), "{name}");
        }
        for name in [
            "sslmode",
            "application_name",
            "sslrootcert",
            "host",
            "keepalives",
            "options",
        ] {
            assert!(!is_credential_name(name), "{name}");
        }
    }
}
