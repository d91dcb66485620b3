//! SASL and TLS to the broker through the `KAFKA_*` pass-through, against a private nisshi
//! started with `--authentication` (SCRAM users made with `nisshi user create`) and, for TLS,
//! behind a TLS front whose certificate a CA made in the test signed.
//!
//! With the right settings the relay, the consumer and the CLI work; with a wrong password,
//! an unknown user, no CA or the wrong CA they stop within seconds with a message that says
//! what failed and never shows the password.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gregor_config::{BrokerStatus, ConfigError, Env, KafkaSettings};
use gregor_consumer::{Consumer, Context, Event, HandlerError, Raw};
use gregor_integration_tests::{InProcessConsumer, consumer_config, relay_env};
use gregor_outbox::{OutboxMessage, enqueue};
use gregor_testkit::as_pairs;
use gregor_testkit::process::{self, Proc};
use gregor_testkit::{
    BrokerOptions, PrivateBroker, SaslUser, ScramMechanism, TestCa, TestDb, kafka, unique_name,
    wait_until,
};

/// Passwords of the users the brokers know; tests check none of them ever prints.
const PW_256: &str = "canary-scram256-Hq4z";
const PW_512: &str = "canary-scram512-Lm9x";
/// A wrong password, equally never to be printed.
const WRONG: &str = "canary-wrong-Pp3k";

/// How quickly a refusal must be reported (librdkafka would otherwise retry forever).
const FAST: Duration = Duration::from_secs(10);

fn users(prefix: &str) -> (SaslUser, SaslUser) {
    (
        SaslUser {
            name: format!("{prefix}-256"),
            password: PW_256.into(),
            mechanism: ScramMechanism::Sha256,
        },
        SaslUser {
            name: format!("{prefix}-512"),
            password: PW_512.into(),
            mechanism: ScramMechanism::Sha512,
        },
    )
}

/// A broker requiring SASL, optionally behind TLS signed by `ca`.
async fn secured_broker(prefix: &str, ca: Option<&TestCa>) -> anyhow::Result<PrivateBroker> {
    let (u256, u512) = users(prefix);
    PrivateBroker::start_with(BrokerOptions {
        users: vec![u256, u512],
        authentication: true,
        tls: ca.map(TestCa::server_files),
    })
    .await
}

/// `KAFKA_*` variables for SASL with `user`/`password`.
fn sasl_env(
    bootstrap: &str,
    protocol: &str,
    user: &SaslUser,
    password: &str,
    ca: Option<&TestCa>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("KAFKA_BOOTSTRAP_SERVERS".to_owned(), bootstrap.to_owned()),
        ("KAFKA_SECURITY_PROTOCOL".to_owned(), protocol.to_owned()),
        (
            "KAFKA_SASL_MECHANISMS".to_owned(),
            user.mechanism.kafka_name().to_owned(),
        ),
        ("KAFKA_SASL_USERNAME".to_owned(), user.name.clone()),
        ("KAFKA_SASL_PASSWORD".to_owned(), password.to_owned()),
    ];
    if let Some(ca) = ca {
        env.push((
            "KAFKA_SSL_CA_LOCATION".to_owned(),
            ca.ca_pem().display().to_string(),
        ));
    }
    env
}

fn settings(env: &[(String, String)]) -> KafkaSettings {
    KafkaSettings::from_env(&Env::from_pairs(env.iter().cloned())).unwrap()
}

/// librdkafka properties matching `env`, for the testkit's own clients.
fn props(env: &[(String, String)]) -> kafka::ClientProps {
    let kafka = settings(env);
    let mut props = kafka::plaintext(kafka.bootstrap_servers());
    for (var, value) in env {
        if let Some(rest) = var.strip_prefix("KAFKA_")
            && var != "KAFKA_BOOTSTRAP_SERVERS"
        {
            props.push((rest.to_ascii_lowercase().replace('_', "."), value.clone()));
        }
    }
    props
}

/// Runs the broker check on a blocking thread, timing it.
async fn check(env: &[(String, String)]) -> (Result<BrokerStatus, ConfigError>, Duration) {
    let kafka = settings(env);
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || kafka.check_broker(Duration::from_secs(20)))
        .await
        .unwrap();
    (result, started.elapsed())
}

fn assert_no_secret(text: &str) {
    for secret in [PW_256, PW_512, WRONG] {
        assert!(!text.contains(secret), "a password leaked: {text}");
    }
}

/// Asserts a fast, secret-free authentication refusal.
async fn refused_authentication(env: &[(String, String)]) {
    let (result, took) = check(env).await;
    let err = result.expect_err("the broker must refuse these credentials");
    let text = err.to_string();
    assert!(
        matches!(err, ConfigError::BrokerAuthentication { .. }),
        "{err:?}"
    );
    assert!(text.contains("refused authentication"), "{text}");
    assert!(text.contains("KAFKA_SASL_PASSWORD"), "{text}");
    assert!(!err.is_retryable());
    assert_no_secret(&text);
    assert_no_secret(&format!("{err:?}"));
    assert!(took < FAST, "took {took:?}: {text}");
    eprintln!("refused in {took:?}: {text}");
}

/// Asserts a fast, secret-free TLS failure.
async fn refused_tls(env: &[(String, String)]) -> String {
    let (result, took) = check(env).await;
    let err = result.expect_err("the TLS handshake must fail");
    let text = err.to_string();
    assert!(matches!(err, ConfigError::BrokerTls { .. }), "{err:?}");
    assert!(text.contains("TLS with the broker"), "{text}");
    assert!(!err.is_retryable());
    assert_no_secret(&text);
    assert!(took < FAST, "took {took:?}: {text}");
    eprintln!("refused in {took:?}: {text}");
    text
}

/// nisshi supports SCRAM-SHA-256 and SCRAM-SHA-512 (stored credentials): the right password
/// connects, a wrong one, an unknown user or a credential of the other mechanism is refused
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256_and_512_connect_and_wrong_credentials_are_refused_at_once()
-> anyhow::Result<()> {
    let broker = secured_broker("scram", None).await?;
    let (u256, u512) = users("scram");
    let bootstrap = broker.bootstrap();
    for (user, password) in [(&u256, PW_256), (&u512, PW_512)] {
        let env = sasl_env(&bootstrap, "SASL_PLAINTEXT", user, password, None);
        let (result, _) = check(&env).await;
        assert!(
            matches!(result, Ok(BrokerStatus::Reachable)),
            "{} with the right password: {result:?}",
            user.mechanism.kafka_name()
        );
        refused_authentication(&sasl_env(&bootstrap, "SASL_PLAINTEXT", user, WRONG, None)).await;
    }
    let stranger = SaslUser {
        name: unique_name("nobody"),
        ..u512.clone()
    };
    refused_authentication(&sasl_env(
        &bootstrap,
        "SASL_PLAINTEXT",
        &stranger,
        PW_512,
        None,
    ))
    .await;
    // The SCRAM-SHA-256 user's credential does not exist for SCRAM-SHA-512.
    let crossed = SaslUser {
        mechanism: ScramMechanism::Sha512,
        ..u256.clone()
    };
    refused_authentication(&sasl_env(
        &bootstrap,
        "SASL_PLAINTEXT",
        &crossed,
        PW_256,
        None,
    ))
    .await;
    Ok(())
}

/// TLS (`SSL`) and `SASL_SSL` connect with `KAFKA_SSL_CA_LOCATION` naming the test CA; without
/// it, or with another CA, the handshake fails at once with "certificate verify failed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_sasl_ssl_verify_the_broker_certificate() -> anyhow::Result<()> {
    let ca = TestCa::generate()?;
    let other_ca = TestCa::generate()?;

    // SSL: a broker without authentication behind TLS.
    let tls_only = PrivateBroker::start_with(BrokerOptions {
        tls: Some(ca.server_files()),
        ..BrokerOptions::default()
    })
    .await?;
    let ssl = |ca: Option<&TestCa>| {
        let mut env = vec![
            ("KAFKA_BOOTSTRAP_SERVERS".to_owned(), tls_only.bootstrap()),
            ("KAFKA_SECURITY_PROTOCOL".to_owned(), "SSL".to_owned()),
        ];
        if let Some(ca) = ca {
            env.push((
                "KAFKA_SSL_CA_LOCATION".to_owned(),
                ca.ca_pem().display().to_string(),
            ));
        }
        env
    };
    let (result, _) = check(&ssl(Some(&ca))).await;
    assert!(matches!(result, Ok(BrokerStatus::Reachable)), "{result:?}");
    let text = refused_tls(&ssl(None)).await;
    assert!(text.contains("certificate verify failed"), "{text}");
    let text = refused_tls(&ssl(Some(&other_ca))).await;
    assert!(text.contains("certificate verify failed"), "{text}");
    // The certificate names localhost too.
    let mut by_name = ssl(Some(&ca));
    by_name[0].1 = tls_only.bootstrap_localhost();
    let (result, _) = check(&by_name).await;
    assert!(matches!(result, Ok(BrokerStatus::Reachable)), "{result:?}");
    // (TLS against nisshi's plaintext port is not a case here: nisshi waits for the rest of
    // the "frame" the ClientHello announces instead of closing, so the client only sees a
    // connection-setup timeout. Apache Kafka closes, and librdkafka reports an SSL error.)

    // SASL_SSL: SCRAM over TLS.
    let broker = secured_broker("sasl-ssl", Some(&ca)).await?;
    let (u256, u512) = users("sasl-ssl");
    for (user, password) in [(&u256, PW_256), (&u512, PW_512)] {
        let env = sasl_env(&broker.bootstrap(), "SASL_SSL", user, password, Some(&ca));
        let (result, _) = check(&env).await;
        assert!(matches!(result, Ok(BrokerStatus::Reachable)), "{result:?}");
        refused_authentication(&sasl_env(
            &broker.bootstrap(),
            "SASL_SSL",
            user,
            WRONG,
            Some(&ca),
        ))
        .await;
    }
    let text = refused_tls(&sasl_env(
        &broker.bootstrap(),
        "SASL_SSL",
        &u512,
        PW_512,
        None,
    ))
    .await;
    assert!(text.contains("certificate verify failed"), "{text}");
    Ok(())
}

/// The relay publishes over SASL_SSL with SCRAM-SHA-512; with a wrong password, or without
/// the CA, it exits with status 2 within seconds, saying why, without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_publishes_over_sasl_ssl_and_exits_at_once_when_refused() -> anyhow::Result<()> {
    let ca = TestCa::generate()?;
    let broker = secured_broker("relay", Some(&ca)).await?;
    let (_, u512) = users("relay");
    let good = sasl_env(&broker.bootstrap(), "SASL_SSL", &u512, PW_512, Some(&ca));
    let topic = unique_name("secure-relay");
    kafka::create_topic_with(&props(&good), &topic, 3).await?;

    let db = TestDb::create("secure_relay").await?;
    let mut tx = db.pool.begin().await?;
    for i in 0..5 {
        enqueue(
            &mut tx,
            OutboxMessage::new(&topic, "test.secured", "/tests")
                .payload(format!("event {i}").into_bytes())
                .key(format!("k{i}")),
        )
        .await?;
    }
    tx.commit().await?;

    let mut env = relay_env(&db.url, &broker.bootstrap());
    env.extend(good.iter().cloned());
    let mut relay = Proc::spawn("gregor-relay", &as_pairs(&env))?;
    let got = kafka::read_topic_with(&props(&good), &topic, 5, Duration::from_secs(60)).await;
    let log = relay.log();
    let got = got.map_err(|e| anyhow::anyhow!("{e}; relay log:\n{log}"))?;
    assert_eq!(got.len(), 5, "{log}");
    relay.signal("TERM")?;
    assert!(relay.wait()?.success(), "{}", relay.log());
    assert_no_secret(&relay.log());

    for (case, bad, expected) in [
        (
            "wrong password",
            sasl_env(&broker.bootstrap(), "SASL_SSL", &u512, WRONG, Some(&ca)),
            "refused authentication",
        ),
        (
            "no CA",
            sasl_env(&broker.bootstrap(), "SASL_SSL", &u512, PW_512, None),
            "certificate verify failed",
        ),
    ] {
        let mut env = relay_env(&db.url, &broker.bootstrap());
        env.extend(bad);
        let started = Instant::now();
        let mut relay = Proc::spawn("gregor-relay", &as_pairs(&env))?;
        let status = wait_until(Duration::from_secs(30), "the relay to exit", || {
            let exited = relay.try_wait();
            async move { exited }
        })
        .await?;
        let log = relay.log();
        assert_eq!(status.code(), Some(2), "{case}: {log}");
        assert!(
            started.elapsed() < FAST + Duration::from_secs(5),
            "{case}: {log}"
        );
        assert!(log.contains(expected), "{case}: {log}");
        assert!(
            log.lines().any(|l| l.starts_with("gregor-relay: ")),
            "{case}: {log}"
        );
        assert_no_secret(&log);
        eprintln!(
            "{case}: exit 2 after {:?}: {}",
            started.elapsed(),
            log.lines()
                .find(|l| l.starts_with("gregor-relay: "))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// The consumer and the CLI over SASL (SCRAM-SHA-256): `gregor topics ensure` creates the
/// topic family, the consumer handles a message; with a wrong password `build()` fails at
/// once with a non-retryable configuration error and the CLI exits 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_cli_connect_with_scram_and_fail_fast_when_refused() -> anyhow::Result<()> {
    let broker = secured_broker("consumer", None).await?;
    let (u256, _) = users("consumer");
    let good = sasl_env(&broker.bootstrap(), "SASL_PLAINTEXT", &u256, PW_256, None);
    let bad = sasl_env(&broker.bootstrap(), "SASL_PLAINTEXT", &u256, WRONG, None);
    let topic = unique_name("secure-consumer");

    // The CLI: refused, then accepted.
    let ensure = ["topics", "ensure", topic.as_str(), "--partitions", "2"];
    let started = Instant::now();
    let out = process::run("gregor", &ensure, &as_pairs(&bad))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("refused authentication"), "{stderr}");
    assert!(
        started.elapsed() < FAST + Duration::from_secs(5),
        "{stderr}"
    );
    assert_no_secret(&stderr);
    let out = process::run("gregor", &ensure, &as_pairs(&good))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = process::run(
        "gregor",
        &["dlq", "inspect", &format!("{topic}.dlq")],
        &as_pairs(&good),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("no messages"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The consumer: refused at build time.
    let extra = |env: &[(String, String)]| env.to_vec();
    let group = unique_name("secure-group");
    let bad_config = consumer_config(&group, None, &as_pairs(&extra(&bad)))?;
    let started = Instant::now();
    let err = Consumer::builder(bad_config)
        .route("x", Raw, |_: Context, _: Event<Vec<u8>>| async {
            Ok::<(), HandlerError>(())
        })
        .build()
        .await
        .expect_err("a wrong password must fail the build");
    assert!(started.elapsed() < FAST, "{err}");
    assert!(!err.is_retryable(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("refused authentication"), "{text}");
    assert_no_secret(&text);
    assert_no_secret(&format!("{err:?}"));

    // Accepted: handles a message produced over SASL.
    let seen = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let handled = seen.clone();
    let config = consumer_config(&group, None, &as_pairs(&extra(&good)))?;
    let consumer = InProcessConsumer::start(Consumer::builder(config).route(
        &topic,
        Raw,
        move |_: Context, event: Event<Vec<u8>>| {
            let handled = handled.clone();
            async move {
                if let Some(value) = event.value {
                    handled.lock().unwrap().push(value);
                }
                Ok::<(), HandlerError>(())
            }
        },
    ))
    .await?;
    produce_with(&props(&good), &topic, b"over sasl").await?;
    wait_until(Duration::from_secs(60), "the consumer to handle it", || {
        let got = seen.lock().unwrap().clone();
        async move { Ok((got == vec![b"over sasl".to_vec()]).then_some(())) }
    })
    .await?;
    consumer.stop().await?;
    Ok(())
}

/// nisshi 0.7.0-pre.2 offers SCRAM-SHA-256 and SCRAM-SHA-512 only: a client asking for PLAIN
/// is refused at the SASL handshake, and that too is reported at once as an authentication
/// failure naming the mechanism. A client without any SASL settings is simply disconnected
/// at its first request: an outage to the client, not a refusal it could name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_mechanism_is_refused_at_once() -> anyhow::Result<()> {
    let broker = secured_broker("plain", None).await?;
    let plain = SaslUser {
        name: "plain-user".into(),
        password: PW_256.into(),
        mechanism: ScramMechanism::Sha256,
    };
    let mut env = sasl_env(&broker.bootstrap(), "SASL_PLAINTEXT", &plain, PW_256, None);
    env[2].1 = "PLAIN".to_owned();
    let (result, took) = check(&env).await;
    let err = result.expect_err("nisshi offers no PLAIN");
    let text = err.to_string();
    assert!(text.contains("SASL PLAIN"), "{text}");
    assert!(text.contains("refused authentication"), "{text}");
    assert!(took < FAST, "took {took:?}");
    assert_no_secret(&text);

    let anonymous = vec![("KAFKA_BOOTSTRAP_SERVERS".to_owned(), broker.bootstrap())];
    let kafka = settings(&anonymous);
    let status =
        tokio::task::spawn_blocking(move || kafka.check_broker(Duration::from_secs(3))).await??;
    assert!(matches!(status, BrokerStatus::Unreachable(_)), "{status:?}");
    Ok(())
}

async fn produce_with(props: &[(String, String)], topic: &str, value: &[u8]) -> anyhow::Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mut config = rdkafka::ClientConfig::new();
    for (k, v) in props {
        config.set(k, v);
    }
    let producer: FutureProducer = config.create()?;
    producer
        .send(
            FutureRecord::<str, [u8]>::to(topic).key("k").payload(value),
            Duration::from_secs(20),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}
