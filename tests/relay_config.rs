//! Bad configuration fails at start with a message naming the variable; secrets never show
//! in logs, errors or Debug output (P7, P8).

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::Duration;

use gregor_integration_tests::relay_env;
use gregor_testkit::as_pairs;
use gregor_testkit::process::{self, Proc};
use gregor_testkit::{TestDb, kafka, kafka_bootstrap, unique_name};

const CANARY_DB: &str = "canary-db-Zq81";
const CANARY_KAFKA: &str = "canary-kafka-Vx27";

fn start_fails(env: &[(&str, &str)], var: &str) -> anyhow::Result<()> {
    let out = process::run("gregor-relay", &[], env)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2 for {var}: {stderr}"
    );
    assert!(stderr.contains(var), "the message names {var}: {stderr}");
    assert!(
        !stderr.contains(CANARY_DB) && !stderr.contains(CANARY_KAFKA),
        "secret in: {stderr}"
    );
    Ok(())
}

#[test]
fn bad_config_exits_non_zero_naming_the_variable() -> anyhow::Result<()> {
    let db = format!("postgres://app:{CANARY_DB}@127.0.0.1:5432/gregor");
    let ok = [
        ("DATABASE_URL", db.as_str()),
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        ("KAFKA_SASL_PASSWORD", CANARY_KAFKA),
    ];
    start_fails(&ok[1..], "DATABASE_URL")?;
    start_fails(
        &[ok[0], ("KAFKA_BOOTSTRAP_SERVERS", "broker-without-port")],
        "KAFKA_BOOTSTRAP_SERVERS",
    )?;
    start_fails(
        &[ok[0], ok[1], ("KAFKA_ENABLE_IDEMPOTENCE", "false")],
        "KAFKA_ENABLE_IDEMPOTENCE",
    )?;
    start_fails(
        &[ok[0], ok[1], ok[2], ("KAFKA_NOT_A_PROPERTY", "1")],
        "KAFKA_NOT_A_PROPERTY",
    )?;
    start_fails(
        &[ok[0], ok[1], ("GREGOR_RELAY_BATCH_SIZE", "lots")],
        "GREGOR_RELAY_BATCH_SIZE",
    )?;
    start_fails(
        &[ok[0], ok[1], ("GREGOR_RELAY_HTTP_ADDR", "nowhere")],
        "GREGOR_RELAY_HTTP_ADDR",
    )?;
    start_fails(&[("DATABASE_URL", "mysql://x"), ok[1]], "DATABASE_URL")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_passwords_never_appear_in_logs() -> anyhow::Result<()> {
    let db = TestDb::create("canary").await?;
    // A role whose password is the canary: works under trust and password authentication.
    let role = unique_name("canary").replace('-', "_");
    for sql in [
        format!("CREATE ROLE {role} LOGIN PASSWORD '{CANARY_DB}'"),
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
    let url = format!("postgres://{role}:{CANARY_DB}{}", &db.url[at..]);
    let topic = unique_name("canary");
    kafka::create_topic(&topic, 1).await?;
    let mut env = relay_env(&url, &kafka_bootstrap()?);
    env.retain(|(k, _)| k != "RUST_LOG");
    env.push(("RUST_LOG".into(), "trace".into()));
    env.push(("KAFKA_SASL_PASSWORD".into(), CANARY_KAFKA.into()));
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
    assert!(
        log.contains("configuration"),
        "the config is logged (redacted): {log}"
    );
    assert!(
        !log.contains(CANARY_DB) && !log.contains(CANARY_KAFKA),
        "a secret leaked into the log"
    );

    // An unreachable database: errors are logged repeatedly, still without the password.
    let mut env = relay_env(
        "postgres://app:canary-db-Zq81@127.0.0.1:1/nowhere",
        &kafka_bootstrap()?,
    );
    env.push(("KAFKA_SASL_PASSWORD".into(), CANARY_KAFKA.into()));
    let mut down = Proc::spawn("gregor-relay", &as_pairs(&env))?;
    gregor_testkit::wait_until(
        Duration::from_secs(20),
        "the relay to report the database down",
        || async { Ok(down.log().contains("database not ready").then_some(())) },
    )
    .await?;
    down.signal("TERM")?;
    down.wait()?;
    let log = down.log();
    assert!(
        !log.contains(CANARY_DB) && !log.contains(CANARY_KAFKA),
        "a secret leaked: {log}"
    );
    Ok(())
}

/// GET `path` on `addr`; returns (status code, body).
async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let code = response.split_whitespace().nth(1).unwrap_or("0").parse()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_endpoints_answer() -> anyhow::Result<()> {
    let db = TestDb::create("http").await?;
    let topic = unique_name("http");
    kafka::create_topic(&topic, 1).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut env = relay_env(&db.url, &kafka_bootstrap()?);
    env.retain(|(k, _)| k != "GREGOR_RELAY_HTTP_ADDR");
    env.push(("GREGOR_RELAY_HTTP_ADDR".into(), addr.clone()));
    let mut relay = Proc::spawn("gregor-relay", &as_pairs(&env))?;

    let addr_ref = addr.as_str();
    gregor_testkit::wait_until(
        Duration::from_secs(20),
        "/readyz to report ready",
        || async move {
            Ok(match http_get(addr_ref, "/readyz").await {
                Ok((200, body)) => Some(body),
                _ => None,
            })
        },
    )
    .await?;
    assert_eq!(http_get(&addr, "/healthz").await?.0, 200);

    let out = process::run(
        "gregor",
        &[
            "outbox", "send", "--topic", &topic, "--key", "k", "--value", "v",
        ],
        &[("DATABASE_URL", &db.url)],
    )?;
    assert!(out.status.success());
    kafka::read_topic(&topic, 1, Duration::from_secs(30)).await?;
    let metrics = gregor_testkit::wait_until(
        Duration::from_secs(20),
        "the published counter",
        || async move {
            let (_, body) = http_get(addr_ref, "/metrics").await?;
            Ok(body
                .lines()
                .any(|l| l == "gregor_relay_published_total 1")
                .then_some(body))
        },
    )
    .await?;
    for name in [
        "gregor_outbox_backlog",
        "gregor_outbox_oldest_age_seconds",
        "gregor_outbox_parked",
        "gregor_relay_leases_held",
        "gregor_relay_publish_latency_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    relay.signal("TERM")?;
    assert!(relay.wait()?.success());
    Ok(())
}
