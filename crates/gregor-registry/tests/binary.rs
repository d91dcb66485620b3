//! The `gregor-registry` binary: configuration errors exit 2 naming the variable; a good
//! configuration serves until SIGTERM and exits 0.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn registry(vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gregor-registry"));
    cmd.env_clear()
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(vars.iter().copied())
        .stdin(Stdio::null());
    cmd
}

fn fails_naming(vars: &[(&str, &str)], variable: &str) {
    let out = registry(vars).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    let line = format!("gregor-registry: {variable} ");
    assert!(
        stderr.lines().any(|l| l.starts_with(&line)),
        "no line starting {line:?} in {stderr}"
    );
}

#[test]
fn configuration_errors_exit_2_naming_the_variable() {
    // PostgreSQL is the default storage and needs DATABASE_URL.
    fails_naming(&[], "DATABASE_URL");
    fails_naming(&[("GREGOR_REGISTRY_STORAGE", "postgres")], "DATABASE_URL");
    fails_naming(&[("DATABASE_URL", "mysql://db")], "DATABASE_URL");
    fails_naming(
        &[("GREGOR_REGISTRY_STORAGE", "sqlite")],
        "GREGOR_REGISTRY_STORAGE",
    );
    fails_naming(
        &[
            ("GREGOR_REGISTRY_STORAGE", "memory"),
            ("GREGOR_REGISTRY_USERNAME", "ci"),
        ],
        "GREGOR_REGISTRY_PASSWORD",
    );
    fails_naming(
        &[
            ("GREGOR_REGISTRY_STORAGE", "memory"),
            ("GREGOR_REGISTRY_PASSWORD", "pw"),
        ],
        "GREGOR_REGISTRY_USERNAME",
    );
    fails_naming(
        &[
            ("GREGOR_REGISTRY_STORAGE", "memory"),
            ("GREGOR_REGISTRY_LISTEN", "nowhere"),
        ],
        "GREGOR_REGISTRY_LISTEN",
    );
    fails_naming(
        &[
            ("GREGOR_REGISTRY_STORAGE", "memory"),
            ("GREGOR_REGISTRY_TLS_CERT", "/nonexistent/cert.pem"),
        ],
        "GREGOR_REGISTRY_TLS_KEY",
    );
    // HTTPS with files that cannot be read: refused at start, before serving anything.
    fails_naming(
        &[
            ("GREGOR_REGISTRY_STORAGE", "memory"),
            ("GREGOR_REGISTRY_LISTEN", "127.0.0.1:0"),
            ("GREGOR_REGISTRY_TLS_CERT", "/nonexistent/cert.pem"),
            ("GREGOR_REGISTRY_TLS_KEY", "/nonexistent/key.pem"),
        ],
        "GREGOR_REGISTRY_TLS_CERT",
    );
}

#[test]
fn passwords_never_reach_the_logs() {
    let out = registry(&[
        (
            "DATABASE_URL",
            "postgres://postgres:canary-db@127.0.0.1:5432/gregor_registry_no_such_database",
        ),
        ("GREGOR_REGISTRY_USERNAME", "ci"),
        ("GREGOR_REGISTRY_PASSWORD", "canary-pw"),
        // Any free port: the shared registry of scripts/services may hold 8081.
        ("GREGOR_REGISTRY_LISTEN", "127.0.0.1:0"),
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The database does not exist: the registry cannot start.
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("canary"), "{stderr}");
    assert!(
        stderr.contains(
            "gregor-registry: cannot use the database DATABASE_URL=postgres://postgres:***@"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn serves_until_sigterm() {
    let mut child = registry(&[
        ("GREGOR_REGISTRY_STORAGE", "memory"),
        ("GREGOR_REGISTRY_LISTEN", "127.0.0.1:0"),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut seen = String::new();
    let mut line = String::new();
    while addr.is_none() {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("the registry exited before listening: {seen}");
        }
        seen.push_str(&line);
        addr = line.split_once("listening on ").map(|(_, rest)| {
            rest.chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect::<String>()
        });
    }
    let addr = addr.unwrap();
    let body = reqwest::get(format!("http://{addr}/schemas/types"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, r#"["AVRO"]"#);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(stdout.is_empty(), "stdout: {stdout}");
}

/// The start-up line (`configuration (secrets redacted)`) and the database error, with
/// passwords of the shapes a naive redactor cuts at.
#[test]
fn passwords_of_any_shape_never_reach_the_logs() {
    for shape in [
        "/",
        "?sslmode=x",
        "#",
        "@",
        "@127.0.0.1:5432/",
        ":",
        "%2F",
        " ",
        "ü",
    ] {
        let url = format!(
            "postgres://postgres:cAnArYlEfT{shape}cAnArYrIgHt@127.0.0.1:5432/gregor_registry_no_such_database"
        );
        let out = registry(&[
            ("DATABASE_URL", url.as_str()),
            ("RUST_LOG", "debug"),
            ("GREGOR_REGISTRY_LISTEN", "127.0.0.1:0"),
        ])
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{shape:?}: {stderr}");
        assert!(
            !stderr.contains("cAnArYlEfT") && !stderr.contains("cAnArYrIgHt"),
            "{shape:?}: {stderr}"
        );
        // Either refused before the start (a raw '/' the driver would misread), or shown
        // redacted.
        assert!(
            stderr.contains("postgres:***@") || stderr.contains("DATABASE_URL is invalid"),
            "{shape:?}: {stderr}"
        );
    }
}
