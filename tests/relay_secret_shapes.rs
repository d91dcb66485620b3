//! P8 for the relay binary over secrets of unusual shape: a generated password holding
//! `/`, `?`, `#`, `@`, `:`, `%`, a space or non-ASCII characters (percent-encoded, as a URL
//! needs), and librdkafka's less common sensitive properties, never show in its start-up
//! line or its logs; a password pasted without encoding is refused with a hint, not echoed.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::Duration;

use gregor_integration_tests::relay_env;
use gregor_testkit::as_pairs;
use gregor_testkit::process::{self, Proc};
use gregor_testkit::{TestDb, kafka, kafka_bootstrap, unique_name, wait_until};

const LEFT: &str = "cAnArYlEfT";
const RIGHT: &str = "cAnArYrIgHt";

fn hidden(log: &str) -> bool {
    !log.contains(LEFT) && !log.contains(RIGHT)
}

/// Every byte but ASCII letters and digits as `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_password_of_any_shape_works_and_never_shows() -> anyhow::Result<()> {
    let db = TestDb::create("shapes").await?;
    let password = format!("{LEFT}/?#@:% ü&={RIGHT}");
    let role = unique_name("shapes").replace('-', "_");
    for sql in [
        format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{}'",
            password.replace('\'', "''")
        ),
        format!("GRANT ALL ON SCHEMA public TO {role}"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        sqlx::query(&sql).execute(&db.pool).await?;
    }
    let at = db
        .url
        .find('@')
        .ok_or_else(|| anyhow::anyhow!("no @ in the database URL"))?;
    let url = format!(
        "postgres://{role}:{}{}",
        percent_encode(&password),
        &db.url[at..]
    );
    let topic = unique_name("shapes");
    kafka::create_topic(&topic, 1).await?;
    let mut env = relay_env(&url, &kafka_bootstrap()?);
    env.retain(|(k, _)| k != "RUST_LOG");
    env.push(("RUST_LOG".into(), "trace".into()));
    let mut relay = Proc::spawn("gregor-relay", &as_pairs(&env))?;
    let out = process::run(
        "gregor",
        &[
            "outbox", "send", "--topic", &topic, "--key", "k", "--value", "v",
        ],
        &[("DATABASE_URL", &url)],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kafka::read_topic(&topic, 1, Duration::from_secs(30)).await?;
    relay.signal("TERM")?;
    assert!(relay.wait()?.success());
    let log = relay.log();
    assert!(log.contains("configuration"), "the start-up line: {log}");
    assert!(hidden(&log), "a secret leaked into the log");
    Ok(())
}

#[test]
fn a_raw_slash_in_a_password_is_refused_without_echoing_it() -> anyhow::Result<()> {
    let bootstrap = kafka_bootstrap()?;
    for shape in ["/", "@127.0.0.1:5432/", "/x?y#z@"] {
        let url = format!("postgres://app:{LEFT}{shape}{RIGHT}@127.0.0.1:5432/db");
        let env = relay_env(&url, &bootstrap);
        let out = process::run("gregor-relay", &[], &as_pairs(&env))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{shape:?}: {stderr}");
        assert!(stderr.contains("DATABASE_URL"), "{stderr}");
        if !shape.contains('?') {
            // (With a '?' first the driver itself refuses the URL: "invalid port number".)
            assert!(stderr.contains("%2F"), "the hint: {stderr}");
        }
        assert!(hidden(&stderr), "{shape:?}: {stderr}");
    }
    Ok(())
}

/// Properties librdkafka itself flags sensitive, beyond the SASL password: whatever the
/// relay makes of them (librdkafka may refuse an OIDC property in a build without OIDC),
/// their values never show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_sensitive_properties_never_show() -> anyhow::Result<()> {
    for (var, value) in [
        (
            "KAFKA_SASL_OAUTHBEARER_ASSERTION_PRIVATE_KEY_PASSPHRASE",
            format!("{LEFT}/@#{RIGHT}"),
        ),
        ("KAFKA_SSL_KEY_PASSWORD", format!("{LEFT} {RIGHT}")),
        (
            "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
            format!("{LEFT}?{RIGHT}"),
        ),
        (
            "KAFKA_SASL_OAUTHBEARER_CONFIG",
            format!("principal={LEFT}:{RIGHT}"),
        ),
    ] {
        let mut env = relay_env("postgres://app:pw@127.0.0.1:1/nowhere", &kafka_bootstrap()?);
        env.retain(|(k, _)| k != "RUST_LOG");
        env.push(("RUST_LOG".into(), "trace".into()));
        env.push((var.into(), value));
        let mut relay = Proc::spawn("gregor-relay", &as_pairs(&env))?;
        let waited = wait_until(
            Duration::from_secs(20),
            "the relay to start or stop",
            || {
                let log = relay.log();
                let exited = relay.try_wait().ok().flatten().is_some();
                async move { Ok((exited || log.contains("database not ready")).then_some(())) }
            },
        )
        .await;
        let _ = relay.signal("TERM");
        let _ = relay.wait();
        let log = relay.log();
        waited.map_err(|e| anyhow::anyhow!("{var}: {e}: {log}"))?;
        assert!(
            log.contains("configuration") || log.contains(var),
            "{var}: {log}"
        );
        assert!(hidden(&log), "{var} leaked: {log}");
    }
    Ok(())
}
