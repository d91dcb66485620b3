//! The schema registry over HTTPS with basic auth: `gregor-registry` serves TLS with a
//! certificate signed by a CA made in the test and requires credentials on every request;
//! `RegistryClient` and `gregor schema register` work with `SCHEMA_REGISTRY_URL=https://…`,
//! `SCHEMA_REGISTRY_CA_LOCATION` and the credentials; a wrong password is a clear 401, a
//! client without the CA a clear TLS error — neither shows the password.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::Path;

use gregor_avro::{AvroError, RegistryClient};
use gregor_config::Env;
use gregor_testkit::{PrivateRegistry, TestCa, process, unique_name};

const USER: &str = "ci";
const PASSWORD: &str = "canary-registry-Wd52";
const WRONG: &str = "canary-wrong-Jx70";

const SCHEMA: &str = r#"{"type":"record","name":"Secured","namespace":"test","fields":[{"name":"id","type":"long"}]}"#;

async fn https_registry(ca: &TestCa) -> anyhow::Result<PrivateRegistry> {
    let cert = ca.server_cert().display().to_string();
    let key = ca.server_key().display().to_string();
    PrivateRegistry::start_with(&[
        ("GREGOR_REGISTRY_TLS_CERT", cert.as_str()),
        ("GREGOR_REGISTRY_TLS_KEY", key.as_str()),
        ("GREGOR_REGISTRY_USERNAME", USER),
        ("GREGOR_REGISTRY_PASSWORD", PASSWORD),
    ])
    .await
}

fn client_env(url: &str, ca: Option<&TestCa>, password: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("SCHEMA_REGISTRY_URL".to_owned(), url.to_owned()),
        ("SCHEMA_REGISTRY_RETRIES".to_owned(), "0".to_owned()),
    ];
    if let Some(password) = password {
        env.push(("SCHEMA_REGISTRY_USERNAME".to_owned(), USER.to_owned()));
        env.push(("SCHEMA_REGISTRY_PASSWORD".to_owned(), password.to_owned()));
    }
    if let Some(ca) = ca {
        env.push((
            "SCHEMA_REGISTRY_CA_LOCATION".to_owned(),
            ca.ca_pem().display().to_string(),
        ));
    }
    env
}

fn client(env: &[(String, String)]) -> RegistryClient {
    RegistryClient::from_env(&Env::from_pairs(env.iter().cloned())).unwrap()
}

fn assert_no_secret(text: &str) {
    assert!(
        !text.contains(PASSWORD) && !text.contains(WRONG),
        "a password leaked: {text}"
    );
}

/// Registers and reads back over HTTPS with the CA and the credentials, by IP address and
/// by host name; refuses the wrong password (401), no credentials (401, reads and writes)
/// and a client that does not trust the CA (TLS error); plain HTTP gets no API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_client_over_https_with_basic_auth() -> anyhow::Result<()> {
    let ca = TestCa::generate()?;
    let registry = https_registry(&ca).await?;
    let url = registry.url();
    assert!(url.starts_with("https://"), "{url}");
    let subject = unique_name("secured-value");

    let good = client(&client_env(&url, Some(&ca), Some(PASSWORD)));
    let id = good.register(&subject, SCHEMA).await?;
    let fetched = client(&client_env(
        &registry.url_on_host("localhost"),
        Some(&ca),
        Some(PASSWORD),
    ))
    .schema_by_id(id)
    .await?;
    assert_eq!(
        fetched.canonical_form(),
        apache_avro::Schema::parse_str(SCHEMA)?.canonical_form()
    );
    assert_eq!(good.versions(&subject).await?, vec![1]);

    // A wrong password: 401, the message says which variables to check, no password.
    let err = client(&client_env(&url, Some(&ca), Some(WRONG)))
        .register(&subject, SCHEMA)
        .await
        .expect_err("a wrong password must be refused");
    let text = format!("{err} {err:?}");
    assert!(
        matches!(err, AvroError::Registry { status: 401, .. }),
        "{text}"
    );
    assert!(text.contains("SCHEMA_REGISTRY_PASSWORD"), "{text}");
    assert!(!err.is_retryable(), "{text}");
    assert_no_secret(&text);
    eprintln!("wrong password: {err}");

    // No credentials: reads and writes are refused alike.
    let anonymous = client(&client_env(&url, Some(&ca), None));
    for err in [
        anonymous.register(&subject, SCHEMA).await.unwrap_err(),
        anonymous.versions(&subject).await.unwrap_err(),
        anonymous.schema_by_id(id).await.unwrap_err(),
    ] {
        assert!(
            matches!(err, AvroError::Registry { status: 401, .. }),
            "{err:?}"
        );
    }

    // No CA: the certificate is not trusted.
    let err = client(&client_env(&url, None, Some(PASSWORD)))
        .versions(&subject)
        .await
        .expect_err("an untrusted certificate must fail");
    let text = err.to_string();
    assert!(text.contains("invalid peer certificate"), "{text}");
    assert!(text.contains("SCHEMA_REGISTRY_CA_LOCATION"), "{text}");
    assert_no_secret(&text);
    eprintln!("no CA: {err}");

    // Plain HTTP on the HTTPS port gets no answer from the API.
    let plain = url.replacen("https://", "http://", 1);
    let err = client(&client_env(&plain, Some(&ca), Some(PASSWORD)))
        .versions(&subject)
        .await
        .expect_err("plain HTTP must not reach the API");
    assert_no_secret(&err.to_string());
    Ok(())
}

/// `gregor schema register` over HTTPS with the CA and credentials; with a wrong password it
/// exits non-zero saying 401, without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_registers_the_catalog_over_https() -> anyhow::Result<()> {
    let ca = TestCa::generate()?;
    let registry = https_registry(&ca).await?;
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let schemas = schemas.to_str().unwrap();

    let bad = client_env(&registry.url(), Some(&ca), Some(WRONG));
    let bad: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = process::run("gregor", &["schema", "register", schemas], &bad)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("401"), "{text}");
    assert_no_secret(&text);

    let good = client_env(&registry.url(), Some(&ca), Some(PASSWORD));
    let pairs: Vec<(&str, &str)> = good.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = process::run("gregor", &["schema", "register", schemas], &pairs)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("registered order.placed orders-value id="),
        "{text}"
    );
    assert_eq!(client(&good).versions("orders-value").await?, vec![1]);
    assert_no_secret(&text);
    Ok(())
}
