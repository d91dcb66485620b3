//! P8 through the real binary: a `DATABASE_URL` whose password holds characters a naive
//! redactor cuts at (`/`, `?`, `#`, `@`, …) never shows in the CLI's connection errors.
//!
//! Not covered, because nothing can tell it apart: an unencoded `&name=` inside a
//! `password=` query parameter reads as the next parameter (the driver splits there too).

#![allow(clippy::unwrap_used)]

use gregor_testkit::process;

const LEFT: &str = "cAnArYlEfT";
const RIGHT: &str = "cAnArYrIgHt";

#[test]
fn connection_errors_never_show_a_password_of_any_shape() -> anyhow::Result<()> {
    // The real server (`./scripts/services up`) with a role that does not exist: every
    // command fails at once and prints its connection error.
    for shape in [
        "/",
        "?",
        "#",
        "@",
        "%",
        ":",
        " ",
        "&x",
        "@127.0.0.1:5432/",
        "ü€",
        "?sslmode=",
    ] {
        for url in [
            format!("postgres://gregor_nobody:{LEFT}{shape}{RIGHT}@127.0.0.1:5432/db"),
            format!("postgres://127.0.0.1:5432/db?password={LEFT}{shape}{RIGHT}"),
            format!("postgres://gregor_nobody@127.0.0.1:5432/db?sslpassword={LEFT}{shape}{RIGHT}"),
        ] {
            let out = process::run("gregor", &["outbox", "status"], &[("DATABASE_URL", &url)])?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!out.status.success(), "{url}: {text}");
            assert!(
                !text.contains(LEFT) && !text.contains(RIGHT),
                "{url:?} leaks: {text}"
            );
        }
    }
    Ok(())
}
