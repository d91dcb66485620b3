//! Bad consumer configuration fails at start with a message naming the variable.

#![allow(clippy::unwrap_used)]

use gregor_testkit::{kafka, kafka_bootstrap, process, unique_name};

fn run_shipping(env: &[(&str, &str)]) -> anyhow::Result<(i32, String)> {
    let out = process::run("shipping-service", &[], env)?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn missing_group_is_refused_naming_the_variable() -> anyhow::Result<()> {
    let bootstrap = kafka_bootstrap()?;
    let (code, stderr) = run_shipping(&[("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)])?;
    assert_ne!(code, 0);
    assert!(stderr.contains("GREGOR_CONSUMER_GROUP"), "{stderr}");
    Ok(())
}

#[test]
fn malformed_retry_tiers_are_refused_naming_the_variable() -> anyhow::Result<()> {
    let bootstrap = kafka_bootstrap()?;
    for tiers in ["1s,fast", "10q", "0s"] {
        let (code, stderr) = run_shipping(&[
            ("KAFKA_BOOTSTRAP_SERVERS", &bootstrap),
            ("GREGOR_CONSUMER_GROUP", "g"),
            ("GREGOR_CONSUMER_RETRY_TIERS", tiers),
        ])?;
        assert_ne!(code, 0, "{tiers}");
        assert!(
            stderr.contains("GREGOR_CONSUMER_RETRY_TIERS"),
            "{tiers}: {stderr}"
        );
    }
    Ok(())
}

#[test]
fn auto_commit_is_refused_because_offsets_follow_handling() -> anyhow::Result<()> {
    let bootstrap = kafka_bootstrap()?;
    let (code, stderr) = run_shipping(&[
        ("KAFKA_BOOTSTRAP_SERVERS", &bootstrap),
        ("GREGOR_CONSUMER_GROUP", "g"),
        ("KAFKA_ENABLE_AUTO_COMMIT", "true"),
    ])?;
    assert_ne!(code, 0);
    assert!(stderr.contains("KAFKA_ENABLE_AUTO_COMMIT"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_retry_and_dlq_topics_are_named_with_the_fix() -> anyhow::Result<()> {
    let bootstrap = kafka_bootstrap()?;
    let db = gregor_testkit::TestDb::create("cfg").await?;
    let topic = unique_name("lonely");
    kafka::create_topic(&topic, 1).await?;
    let (code, stderr) = run_shipping(&[
        ("KAFKA_BOOTSTRAP_SERVERS", &bootstrap),
        ("GREGOR_CONSUMER_GROUP", "g"),
        ("DATABASE_URL", &db.url),
        ("SHIPPING_TOPIC", &topic),
        ("GREGOR_CONSUMER_RETRY_TIERS", "1s"),
        // Not contacted before the first message: the topic check fails first.
        ("SCHEMA_REGISTRY_URL", "http://127.0.0.1:9"),
    ])?;
    assert_ne!(code, 0);
    assert!(stderr.contains(&format!("{topic}.retry.1")), "{stderr}");
    assert!(stderr.contains(&format!("{topic}.dlq")), "{stderr}");
    assert!(stderr.contains("gregor topics ensure"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_malformed_registry_url_is_refused_naming_the_variable() -> anyhow::Result<()> {
    let bootstrap = kafka_bootstrap()?;
    let db = gregor_testkit::TestDb::create("cfgsr").await?;
    for url in [
        None,
        Some("registry:8081"),
        Some("http://user:pw@registry:8081"),
    ] {
        let mut env = vec![
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
            ("GREGOR_CONSUMER_GROUP", "g"),
            ("DATABASE_URL", db.url.as_str()),
        ];
        env.extend(url.map(|u| ("SCHEMA_REGISTRY_URL", u)));
        let (code, stderr) = run_shipping(&env)?;
        assert_ne!(code, 0, "{url:?}");
        assert!(stderr.contains("SCHEMA_REGISTRY_URL"), "{url:?}: {stderr}");
        assert!(
            !stderr.contains("pw@"),
            "credentials never echoed: {stderr}"
        );
    }
    Ok(())
}
