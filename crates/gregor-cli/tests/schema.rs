//! `gregor schema check` and `gregor schema register` against a private `gregor-registry`
//! (in-memory, one per test). Build the binaries first:
//! `cargo build -p gregor-cli -p gregor-registry`.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Output;

use gregor_avro::{CompatibilityLevel, RegistryClient, RegistryConfig};
use gregor_testkit::{PrivateRegistry, process, unique_name};

/// Runs `gregor` with only `SCHEMA_REGISTRY_URL` (when given) in its environment.
fn gregor(args: &[&str], registry: Option<&str>) -> Output {
    let env: Vec<(&str, &str)> = registry
        .map(|url| ("SCHEMA_REGISTRY_URL", url))
        .into_iter()
        .collect();
    process::run("gregor", args, &env).unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit status and returns stdout and stderr together.
fn expect(out: &Output, code: i32) -> String {
    let text = format!("stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out));
    assert_eq!(out.status.code(), Some(code), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    text
}

/// A catalog directory of the test's own, removed when dropped.
struct CatalogDir(PathBuf);

impl CatalogDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("gregor-schema"));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, relative: &str, text: &str) -> &Self {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for CatalogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An `Order` record with `fields` (JSON field objects).
fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Order","namespace":"test","fields":[{fields}]}}"#)
}

const ID: &str = r#"{"name":"id","type":"long"}"#;
const CUSTOMER: &str = r#"{"name":"customer","type":"string"}"#;

/// A one-event catalog: `order.placed` on `orders` with `orders/order.avsc`, the level, and
/// `billing-service` reading with `billing/order.avsc`.
fn catalog(level: &str) -> String {
    format!(
        r#"
[[events]]
name = "order.placed"
topic = "orders"
schema = "orders/order.avsc"
owner = "team-orders"
compatibility = "{level}"
producers = ["order-service"]

[[events.consumers]]
service = "billing-service"
reader = "billing/order.avsc"
"#
    )
}

fn client(url: &str) -> RegistryClient {
    RegistryClient::new(RegistryConfig::new(url)).unwrap()
}

fn repository_schemas() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn repository_catalog_checks_and_registers() {
    let dir = repository_schemas();
    let out = expect(&gregor(&["schema", "check", "--offline", &dir], None), 0);
    assert!(out.contains("contract shipping-service"), "{out}");

    let registry = PrivateRegistry::start().await.unwrap();
    let url = registry.url();
    let out = expect(&gregor(&["schema", "check", &dir], Some(&url)), 0);
    assert!(
        out.contains("new subject, nothing to check against"),
        "{out}"
    );
    let out = expect(&gregor(&["schema", "register", &dir], Some(&url)), 0);
    assert!(
        out.contains("registered order.placed orders-value id=") && out.contains("version=1"),
        "{out}"
    );
    let out = expect(&gregor(&["schema", "check", &dir], Some(&url)), 0);
    assert!(out.contains("unchanged"), "{out}");
    assert!(out.contains("reads orders-value version 1"), "{out}");

    let registry_client = client(&url);
    assert_eq!(registry_client.versions("orders-value").await.unwrap(), [1]);
    assert_eq!(
        registry_client
            .compatibility_level("orders-value")
            .await
            .unwrap(),
        CompatibilityLevel::BackwardTransitive
    );
    // Registering again changes nothing.
    let out = expect(&gregor(&["schema", "register", &dir], Some(&url)), 0);
    assert!(out.contains("version=1"), "{out}");
}

#[tokio::test]
async fn allowed_evolution_passes_and_registers() {
    let registry = PrivateRegistry::start().await.unwrap();
    let url = registry.url();
    let dir = CatalogDir::new();
    dir.write("catalog.toml", &catalog("BACKWARD"))
        .write("orders/order.avsc", &record(&format!("{ID},{CUSTOMER}")))
        .write("billing/order.avsc", &record(ID));
    expect(&gregor(&["schema", "register", dir.path()], Some(&url)), 0);

    let note = r#"{"name":"note","type":"string","default":""}"#;
    dir.write(
        "orders/order.avsc",
        &record(&format!("{ID},{CUSTOMER},{note}")),
    );
    let out = expect(&gregor(&["schema", "check", dir.path()], Some(&url)), 0);
    assert!(out.contains("BACKWARD against version 1"), "{out}");
    let out = expect(
        &gregor(&["schema", "register", "--dry-run", dir.path()], Some(&url)),
        0,
    );
    assert!(!out.contains("registered"), "{out}");
    let out = expect(&gregor(&["schema", "register", dir.path()], Some(&url)), 0);
    assert!(out.contains("version=2"), "{out}");
    assert_eq!(client(&url).versions("orders-value").await.unwrap(), [1, 2]);
}

#[tokio::test]
async fn forbidden_evolution_fails_check_and_register() {
    let registry = PrivateRegistry::start().await.unwrap();
    let url = registry.url();
    let dir = CatalogDir::new();
    dir.write("catalog.toml", &catalog("BACKWARD"))
        .write("orders/order.avsc", &record(&format!("{ID},{CUSTOMER}")))
        .write("billing/order.avsc", &record(ID));
    expect(&gregor(&["schema", "register", dir.path()], Some(&url)), 0);

    let note = r#"{"name":"note","type":"string"}"#;
    dir.write(
        "orders/order.avsc",
        &record(&format!("{ID},{CUSTOMER},{note}")),
    );
    let out = expect(&gregor(&["schema", "check", dir.path()], Some(&url)), 1);
    assert!(
        out.contains("FAIL order.placed  orders-value  BACKWARD:"),
        "{out}"
    );
    assert!(out.contains("'note'"), "{out}");
    // The other checks still ran.
    assert!(
        out.contains("ok   order.placed  contract billing-service"),
        "{out}"
    );

    let check = gregor(&["schema", "check", "--json", dir.path()], Some(&url));
    expect(&check, 1);
    let lines: Vec<serde_json::Value> = stdout(&check)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l["status"] == "fail"
            && l["check"] == "compatibility"
            && l["level"] == "BACKWARD"),
        "{lines:?}"
    );

    let out = expect(&gregor(&["schema", "register", dir.path()], Some(&url)), 1);
    assert!(out.contains("409"), "{out}");
    assert!(out.contains("'note'"), "{out}");
    assert_eq!(client(&url).versions("orders-value").await.unwrap(), [1]);
}

#[tokio::test]
async fn transitive_level_checks_every_version() {
    let registry = PrivateRegistry::start().await.unwrap();
    let url = registry.url();
    let dir = CatalogDir::new();
    // The same lineage under two subjects: one transitive, one not.
    let two = |schema: &str| {
        format!(
            r#"
[[events]]
name = "order.transitive"
topic = "orders-t"
schema = "{schema}"
owner = "team-orders"
compatibility = "BACKWARD_TRANSITIVE"
producers = ["order-service"]

[[events]]
name = "order.plain"
topic = "orders-p"
schema = "{schema}"
owner = "team-orders"
compatibility = "BACKWARD"
producers = ["order-service"]
"#
        )
    };
    dir.write("catalog.toml", &two("v1.avsc"))
        .write("v1.avsc", &record(ID))
        .write(
            "v2.avsc",
            &record(&format!(
                r#"{ID},{{"name":"region","type":"string","default":"eu"}}"#
            )),
        )
        .write(
            "v3.avsc",
            &record(&format!(r#"{ID},{{"name":"region","type":"string"}}"#)),
        );
    expect(&gregor(&["schema", "register", dir.path()], Some(&url)), 0);
    dir.write("catalog.toml", &two("v2.avsc"));
    expect(&gregor(&["schema", "register", dir.path()], Some(&url)), 0);

    // v3 reads v2's data (region is there) but not v1's (no region, no default).
    dir.write("catalog.toml", &two("v3.avsc"));
    let out = expect(&gregor(&["schema", "check", dir.path()], Some(&url)), 1);
    assert!(
        out.contains("FAIL order.transitive  orders-t-value  BACKWARD_TRANSITIVE:"),
        "{out}"
    );
    assert!(out.contains("version 1"), "{out}");
    assert!(out.contains("'region'"), "{out}");
    assert!(
        out.contains("ok   order.plain  orders-p-value  BACKWARD against version 2"),
        "{out}"
    );
    assert!(out.contains("1 of 2 checks failed"), "{out}");
}

#[tokio::test]
async fn contract_break_names_consumer_and_field() {
    let dir = CatalogDir::new();
    // The producer drops `customer`, which billing-service reads without a default.
    dir.write("catalog.toml", &catalog("BACKWARD"))
        .write("orders/order.avsc", &record(ID))
        .write("billing/order.avsc", &record(&format!("{ID},{CUSTOMER}")));
    let out = expect(
        &gregor(&["schema", "check", "--offline", dir.path()], None),
        1,
    );
    assert!(
        out.contains("FAIL order.placed  contract billing-service:"),
        "{out}"
    );
    assert!(out.contains("'customer'"), "{out}");
    assert!(out.contains("orders/order.avsc"), "{out}");

    // Same against a registry, where the subject is new.
    let registry = PrivateRegistry::start().await.unwrap();
    let out = expect(
        &gregor(&["schema", "check", dir.path()], Some(&registry.url())),
        1,
    );
    assert!(out.contains("contract billing-service"), "{out}");
    assert!(out.contains("'customer'"), "{out}");
}

#[tokio::test]
async fn older_registered_version_breaks_contract() {
    let registry = PrivateRegistry::start().await.unwrap();
    let url = registry.url();
    let dir = CatalogDir::new();
    let region = r#"{"name":"region","type":"string","default":"eu"}"#;
    let required_region = r#"{"name":"region","type":"string"}"#;
    // Version 1 has no region; billing-service requires one.
    dir.write("catalog.toml", &catalog("BACKWARD"))
        .write("orders/order.avsc", &record(ID))
        .write(
            "billing/order.avsc",
            &record(&format!("{ID},{required_region}")),
        );
    expect(&gregor(&["schema", "register", dir.path()], Some(&url)), 0);

    // The new producer schema carries region, so it is fine, but version 1's messages are not.
    dir.write("orders/order.avsc", &record(&format!("{ID},{region}")));
    let out = expect(&gregor(&["schema", "check", dir.path()], Some(&url)), 1);
    assert!(
        out.contains(
            "ok   order.placed  contract billing-service: billing/order.avsc reads orders/order.avsc"
        ),
        "{out}"
    );
    assert!(
        out.contains("FAIL order.placed  contract billing-service: billing/order.avsc cannot read orders-value version 1"),
        "{out}"
    );
    assert!(out.contains("'region'"), "{out}");
    assert!(
        out.contains("ok   order.placed  orders-value  BACKWARD"),
        "{out}"
    );
}

#[test]
fn bad_catalogs_exit_2() {
    let good_event = |extra: &str, schema: &str| {
        format!(
            "[[events]]\nname = \"order.placed\"\ntopic = \"orders\"\nschema = \"{schema}\"\n\
             owner = \"team-orders\"\nproducers = [\"order-service\"]\n{extra}\n"
        )
    };
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        (
            good_event("", "orders/missing.avsc"),
            "missing schema file",
            vec!["missing.avsc", "cannot read"],
        ),
        (
            good_event("compatibility = \"SIDEWAYS\"", "orders/order.avsc"),
            "unknown level",
            vec!["SIDEWAYS", "unknown compatibility level"],
        ),
        (
            good_event("colour = \"red\"", "orders/order.avsc"),
            "unknown key",
            vec!["colour"],
        ),
        (
            good_event("", "orders/broken.avsc"),
            "invalid Avro",
            vec!["broken.avsc", "not a valid Avro schema"],
        ),
        (
            format!(
                "{}{}",
                good_event("", "orders/order.avsc"),
                good_event("", "orders/order.avsc")
            ),
            "duplicate event",
            vec![
                "order.placed is declared twice",
                "both use subject orders-value",
            ],
        ),
    ];
    for (text, what, needles) in cases {
        let dir = CatalogDir::new();
        dir.write("catalog.toml", &text)
            .write("orders/order.avsc", &record(ID))
            .write("orders/broken.avsc", r#"{"type":"record","name":"Order"}"#);
        for args in [
            vec!["schema", "check", "--offline", dir.path()],
            vec!["schema", "register", dir.path()],
        ] {
            let out = gregor(&args, Some("http://127.0.0.1:9"));
            let text = expect(&out, 2);
            assert!(text.contains("catalog.toml"), "{what}: {text}");
            for needle in &needles {
                assert!(
                    stderr(&out).contains(needle),
                    "{what}: {needle:?} in {text}"
                );
            }
        }
    }
    // No catalog at all.
    let out = gregor(
        &["schema", "check", "--offline", "/nonexistent-gregor-dir"],
        None,
    );
    expect(&out, 2);
}

#[tokio::test]
async fn unreachable_registry_exits_1() {
    let mut registry = PrivateRegistry::start().await.unwrap();
    let url = registry.url();
    registry.stop().unwrap();
    let dir = repository_schemas();
    for command in ["check", "register"] {
        let out = gregor(&["schema", command, &dir], Some(&url));
        let text = expect(&out, 1);
        assert!(stderr(&out).contains("unreachable"), "{command}: {text}");
        assert!(stderr(&out).contains(&url), "{command}: {text}");
    }
    // Without SCHEMA_REGISTRY_URL: a configuration error.
    let out = gregor(&["schema", "check", &dir], None);
    let text = expect(&out, 2);
    assert!(text.contains("SCHEMA_REGISTRY_URL"), "{text}");
}

/// The catalog declares a stricter level than the registry applies: `check` warns and checks
/// with the declared level — the one `register` sets — so CI fails before the deploy does.
#[tokio::test]
async fn declared_level_wins_over_the_registry_level() {
    let registry = PrivateRegistry::start().await.unwrap();
    let url = registry.url();
    let dir = CatalogDir::new();
    dir.write("catalog.toml", &catalog("BACKWARD"))
        .write("orders/order.avsc", &record(&format!("{ID},{CUSTOMER}")))
        .write("billing/order.avsc", &record(ID));
    expect(&gregor(&["schema", "register", dir.path()], Some(&url)), 0);

    // Dropping `customer` is BACKWARD-compatible but not FULL (v1 readers need it).
    dir.write("catalog.toml", &catalog("FULL"))
        .write("orders/order.avsc", &record(ID));
    let out = expect(&gregor(&["schema", "check", dir.path()], Some(&url)), 1);
    assert!(
        out.contains("the catalog declares FULL but the registry applies BACKWARD"),
        "{out}"
    );
    assert!(
        out.contains("FAIL order.placed  orders-value  FULL:"),
        "{out}"
    );
    assert!(out.contains("'customer'"), "{out}");
    let out = expect(&gregor(&["schema", "register", dir.path()], Some(&url)), 1);
    assert!(out.contains("409"), "{out}");
    assert_eq!(client(&url).versions("orders-value").await.unwrap(), [1]);
    assert_eq!(
        client(&url)
            .compatibility_level("orders-value")
            .await
            .unwrap(),
        CompatibilityLevel::Full
    );
}
