//! P8 over a table of secret shapes: whatever characters a password holds, it never shows in
//! a redacted URL, in `Debug`, in `Display` or in an error.

use gregor_config::{DatabaseUrl, Env, KafkaSettings};

/// Two canary halves around each awkward character: neither half may ever be printed.
const LEFT: &str = "cAnArYlEfT";
const RIGHT: &str = "cAnArYrIgHt";

/// Characters generated or pasted passwords hold that a naive redactor trips over.
const SHAPES: &[&str] = &[
    "/",
    "?",
    "@",
    "#",
    "%",
    "%2F",
    ":",
    " ",
    "&",
    "=",
    "==",
    "+",
    "//",
    "?a=b",
    "@h:5432/db",
    "#x?y",
    "&password=",
    "ü€",
    "😀",
    "\\",
    "'",
    "\"",
    ";",
    ",",
    "[",
    "]",
];

fn canary(shape: &str) -> String {
    format!("{LEFT}{shape}{RIGHT}")
}

fn assert_hidden(shown: &str, what: &str) {
    assert!(
        !shown.contains(LEFT) && !shown.contains(RIGHT),
        "{what} shows the secret: {shown}"
    );
}

/// Every way a `DatabaseUrl` can be printed, or the error it was refused with.
fn shown(raw: &str) -> Vec<String> {
    match DatabaseUrl::parse("DATABASE_URL", raw) {
        Ok(url) => vec![
            format!("{url:?}"),
            format!("{url:#?}"),
            url.to_string(),
            url.redacted().to_owned(),
        ],
        Err(e) => vec![e.to_string(), format!("{e:?}")],
    }
}

#[test]
fn url_passwords_of_every_shape_are_masked() {
    for shape in SHAPES {
        let secret = canary(shape);
        for raw in [
            format!("postgres://app:{secret}@db:5432/orders"),
            format!("postgresql://app:{secret}@db/orders?sslmode=require"),
            format!("postgres://app:{secret}@db1:5432,db2:5433/orders?application_name=x"),
            format!("postgres://:{secret}@db/orders"),
            format!("postgres://app:{secret}@[::1]:5432/orders"),
            format!("postgres://app:{secret}@db"),
            format!("postgres://db/orders?password={secret}"),
            format!("postgres://db/orders?sslmode=require&password={secret}&application_name=x"),
            format!("postgres://db/orders?user=app&PASSWORD={secret}"),
        ] {
            for text in shown(&raw) {
                assert_hidden(&text, &format!("{raw:?} →"));
            }
        }
    }
}

#[test]
fn every_credential_parameter_is_masked_or_refused() {
    for param in [
        "password",
        "sslpassword",
        "ssl-password",
        "passfile",
        "sslkey",
        "ssl-key",
        "token",
        "auth_token",
        "secret",
        "client_secret",
        "api_key",
        "apikey",
        "private_key",
        "passphrase",
        "credentials",
    ] {
        for shape in ["", "/", "?", "@", "#", "&x"] {
            let secret = canary(shape);
            let raw = format!("postgres://app@db:5432/orders?sslmode=verify-full&{param}={secret}");
            for text in shown(&raw) {
                assert_hidden(&text, &format!("{param} in {raw:?} →"));
            }
        }
    }
}

/// An unencoded `/` in a password makes the driver read the URL differently (part of the
/// password becomes the database name, which the server echoes in its error): refused with
/// a hint, never echoed.
#[test]
fn a_raw_slash_in_a_password_is_refused_with_a_hint() {
    for raw in [
        format!("postgres://app:{}@db:5432/orders", canary("/")),
        format!("postgres://app:{}@db:5432/orders", canary("@db:5432/")),
        format!("postgres://app:1234/{RIGHT}@db/orders"),
        // The driver would read host `app`, port 12 and a parameter `{RIGHT}@db/orders`, which
        // sqlx logs as unrecognized.
        format!("postgres://app:12?{RIGHT}@db/orders"),
        format!("postgres://app:{}@db:5432/orders", canary("?#:")),
    ] {
        let err = DatabaseUrl::parse("DATABASE_URL", &raw).expect_err(&raw);
        assert_hidden(&format!("{err} {err:?}"), &raw);
        assert!(err.to_string().contains("%2F"), "{err}");
    }
    let encoded = format!("postgres://app:{LEFT}%2F{RIGHT}@db:5432/orders");
    let url = DatabaseUrl::parse("DATABASE_URL", &encoded).expect("percent-encoded is fine");
    assert_eq!(url.redacted(), "postgres://app:***@db:5432/orders");
}

#[test]
fn sane_urls_still_show_where_they_point() {
    let url = DatabaseUrl::parse(
        "DATABASE_URL",
        &format!(
            "postgres://app:{}@db:5432/orders?sslmode=require&application_name=relay",
            canary(":%3F%23")
        ),
    )
    .expect("valid");
    assert_eq!(
        url.redacted(),
        "postgres://app:***@db:5432/orders?sslmode=require&application_name=relay"
    );
    let url = DatabaseUrl::parse("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gregor")
        .expect("valid");
    assert_eq!(url.redacted(), "postgres://postgres@127.0.0.1:5432/gregor");
    let url = DatabaseUrl::parse(
        "DATABASE_URL",
        &format!("postgres://app:{}@db/orders", canary("@")),
    )
    .expect("valid");
    assert_eq!(url.redacted(), "postgres://app:***@db/orders");
}

/// sqlx does not understand `sslpassword` (or `passfile`): it ignores them and logs the value
/// at WARN. Such a URL is refused at start, naming the variable but not the value.
#[test]
fn parameters_the_driver_would_log_are_refused_without_the_value() {
    for param in ["sslpassword", "passfile", "token"] {
        let raw = format!("postgres://app@db/orders?{param}={}", canary("/"));
        let err = DatabaseUrl::parse("DATABASE_URL", &raw).expect_err(param);
        assert_eq!(err.var(), "DATABASE_URL");
        assert!(err.to_string().contains(param), "{err}");
        assert_hidden(&err.to_string(), param);
    }
}

/// Every property librdkafka 2.12.1 flags `_RK_SENSITIVE` (src/rdkafka_conf.c), plus the
/// pass-through names that look like credentials.
const SENSITIVE_PROPERTIES: &[&str] = &[
    "ssl.key.location",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.ca.pem",
    "ssl.keystore.password",
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "sasl.jaas.config",
    "ssl.truststore.password",
    "sasl.oauthbearer.token",
    "sasl.oauthbearer.client.credentials",
];

fn var_of(property: &str) -> String {
    format!(
        "KAFKA_{}",
        property
            .to_ascii_uppercase()
            .replace('_', "__")
            .replace('.', "_")
    )
}

#[test]
fn every_sensitive_librdkafka_property_is_redacted() {
    for property in SENSITIVE_PROPERTIES {
        for shape in ["", "/", "@", "#", " ", "ü"] {
            let secret = canary(shape);
            let env = Env::from_pairs([
                (
                    "KAFKA_BOOTSTRAP_SERVERS".to_owned(),
                    "127.0.0.1:9092".to_owned(),
                ),
                (var_of(property), secret.clone()),
            ]);
            let settings = KafkaSettings::from_env(&env).expect("valid");
            assert_eq!(
                settings.property(property),
                Some(secret.as_str()),
                "{property}"
            );
            assert_hidden(&format!("{settings:?}"), property);
            assert_hidden(&format!("{settings:#?}"), property);
            assert_hidden(&format!("{env:?}"), property);
        }
    }
}

#[test]
fn ordinary_properties_stay_visible() {
    let env = Env::from_pairs([
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        ("KAFKA_SASL_MECHANISMS", "SCRAM-SHA-512"),
        ("KAFKA_SSL_CA_LOCATION", "/etc/ssl/ca.pem"),
        (
            "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
            "https://idp/token",
        ),
    ]);
    let shown = format!("{:?}", KafkaSettings::from_env(&env).expect("valid"));
    for visible in [
        "SASL_SSL",
        "SCRAM-SHA-512",
        "/etc/ssl/ca.pem",
        "https://idp/token",
    ] {
        assert!(shown.contains(visible), "{visible} hidden: {shown}");
    }
}
