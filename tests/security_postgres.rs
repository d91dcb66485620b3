//! TLS to PostgreSQL: a private server with `ssl = on`, a certificate signed by a CA made in
//! the test, `hostssl`-only access with a password. The relay, the CLI and a plain pool
//! connect with `sslmode=verify-full&sslrootcert=<ca.pem>`; the wrong CA, or a host name
//! the certificate does not name, fails at once with a clear error and no password.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use gregor_integration_tests::relay_env;
use gregor_outbox::{OutboxMessage, enqueue};
use gregor_testkit::as_pairs;
use gregor_testkit::process::{self, Proc};
use gregor_testkit::{
    PostgresOptions, PrivatePostgres, TestCa, kafka, kafka_bootstrap, unique_name, wait_until,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

const PASSWORD: &str = "canary-pg-Tz81";

async fn tls_server(ca: &TestCa) -> anyhow::Result<PrivatePostgres> {
    PrivatePostgres::start_with(PostgresOptions {
        tls: Some(ca.server_files()),
        password: Some(PASSWORD.into()),
    })
    .await
}

fn verify_full(url: &str, ca: &TestCa) -> String {
    format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        ca.ca_pem().display()
    )
}

async fn uses_tls(url: &str) -> anyhow::Result<bool> {
    let mut conn = PgConnection::connect(url).await?;
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(ssl)
}

/// `verify-full` with the right CA connects over TLS, by IP address and by host name; the
/// server refuses connections without TLS; the wrong CA and an unnamed host are refused by
/// the client, fast, without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_with_the_right_ca_only() -> anyhow::Result<()> {
    let ca = TestCa::generate()?;
    let other = TestCa::generate()?;
    let pg = tls_server(&ca).await?;

    assert!(uses_tls(&verify_full(&pg.url(), &ca)).await?);
    assert!(uses_tls(&verify_full(&pg.url_on_host("localhost"), &ca)).await?);

    // The server takes TLS connections only.
    let err = PgConnection::connect(&format!("{}?sslmode=disable", pg.url()))
        .await
        .expect_err("plaintext must be refused");
    assert!(err.to_string().contains("no encryption"), "{err}");

    // A server whose certificate names localhost only, reached as 127.0.0.1.
    let named = TestCa::generate_for("DNS:localhost")?;
    let pg_named = tls_server(&named).await?;
    assert!(uses_tls(&verify_full(&pg_named.url_on_host("localhost"), &named)).await?);
    for (case, url, expected) in [
        (
            "another CA",
            verify_full(&pg.url(), &other),
            "invalid peer certificate: UnknownIssuer",
        ),
        (
            "a host the certificate does not name",
            verify_full(&pg_named.url(), &named),
            "invalid peer certificate: certificate not valid for name",
        ),
    ] {
        let started = Instant::now();
        let err = PgConnection::connect(&url)
            .await
            .expect_err("must not connect");
        let text = format!("{err} {err:?}");
        assert!(text.contains(expected), "{case}: {text}");
        assert!(!text.contains(PASSWORD), "{case}: {text}");
        assert!(started.elapsed() < Duration::from_secs(5), "{case}");
        eprintln!("{case}: {err}");
    }
    Ok(())
}

/// The relay and the CLI over `verify-full`: events enqueued through a TLS pool are
/// published; the relay with the wrong CA exits 2 at start naming DATABASE_URL, without the
/// password; the CLI fails the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_cli_use_verify_full() -> anyhow::Result<()> {
    let ca = TestCa::generate()?;
    let other = TestCa::generate()?;
    let pg = tls_server(&ca).await?;
    let url = verify_full(&pg.url(), &ca);

    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await?;
    gregor_outbox::migrate(&pool).await?;
    let topic = unique_name("pg-tls");
    kafka::create_topic(&topic, 1).await?;
    let mut tx = pool.begin().await?;
    enqueue(
        &mut tx,
        OutboxMessage::new(&topic, "test.tls", "/tests")
            .payload(b"over verify-full".to_vec())
            .key("k"),
    )
    .await?;
    tx.commit().await?;

    let out = process::run("gregor", &["outbox", "status"], &[("DATABASE_URL", &url)])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let env = relay_env(&url, &kafka_bootstrap()?);
    let mut relay = Proc::spawn("gregor-relay", &as_pairs(&env))?;
    let got = kafka::read_topic(&topic, 1, Duration::from_secs(60)).await;
    let got = got.map_err(|e| anyhow::anyhow!("{e}; relay log:\n{}", relay.log()))?;
    assert_eq!(got[0].payload.as_deref(), Some(&b"over verify-full"[..]));
    relay.signal("TERM")?;
    assert!(relay.wait()?.success(), "{}", relay.log());
    assert!(!relay.log().contains(PASSWORD));

    let wrong = verify_full(&pg.url(), &other);
    let env = relay_env(&wrong, &kafka_bootstrap()?);
    let started = Instant::now();
    let mut relay = Proc::spawn("gregor-relay", &as_pairs(&env))?;
    let status = wait_until(Duration::from_secs(30), "the relay to exit", || {
        let exited = relay.try_wait();
        async move { exited }
    })
    .await?;
    let log = relay.log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(started.elapsed() < Duration::from_secs(15), "{log}");
    let line = log
        .lines()
        .find(|l| l.starts_with("gregor-relay: "))
        .unwrap_or_default();
    assert!(line.contains("DATABASE_URL"), "{log}");
    assert!(line.contains("TLS with PostgreSQL"), "{log}");
    assert!(line.contains("invalid peer certificate"), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
    eprintln!("{line}");

    let out = process::run(
        "gregor",
        &["outbox", "status"],
        &[("DATABASE_URL", wrong.as_str())],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    Ok(())
}
