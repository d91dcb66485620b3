//! Test harness: a registry on an ephemeral port, a throw-away PostgreSQL database, and a
//! table-driven HTTP runner.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use gregor_config::{DatabaseUrl, Secret};
use gregor_registry::{BasicAuth, CONTENT_TYPE, RegistryConfig, RegistryError, Storage};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Matches any present, non-null value in an expected JSON subset.
pub const ANY: &str = "<any>";

/// A registry served in-process until [`Server::stop`].
pub struct Server {
    pub url: String,
    cancel: CancellationToken,
    handle: JoinHandle<Result<(), RegistryError>>,
}

impl Server {
    pub async fn start(config: RegistryConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(gregor_registry::serve(config, listener, cancel.clone()));
        Self {
            url,
            cancel,
            handle,
        }
    }

    pub async fn memory() -> Self {
        Self::start(RegistryConfig::default()).await
    }

    pub async fn postgres(db: &TestDb) -> Self {
        Self::start(postgres_config(db)).await
    }

    /// Shuts down gracefully and fails the test if serving failed.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.handle
            .await
            .expect("server task panicked")
            .expect("server failed");
    }
}

/// A fresh database of the workspace's test kit (on the server of `DATABASE_URL`, named
/// `gregor_t_registry_*`; `./scripts/test` drops those of earlier runs).
pub use gregor_testkit::TestDb;

/// A database for one test; fails loudly when PostgreSQL is unreachable.
pub async fn test_db() -> TestDb {
    TestDb::create("registry")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is required for these tests: {e:#}"))
}

/// The registry configuration storing schemas in `db`.
pub fn postgres_config(db: &TestDb) -> RegistryConfig {
    RegistryConfig {
        storage: Storage::Postgres(DatabaseUrl::parse("DATABASE_URL", &db.url).unwrap()),
        ..RegistryConfig::default()
    }
}

/// Runs SQL in the test database.
pub async fn execute(db: &TestDb, sql: &str) {
    sqlx::raw_sql(sql).execute(&db.pool).await.unwrap();
}

/// A memory-backed config with basic auth.
pub fn with_auth(user: &str, password: &str) -> RegistryConfig {
    RegistryConfig {
        auth: Some(BasicAuth {
            username: user.to_owned(),
            password: Secret::new(password.to_owned()),
        }),
        ..RegistryConfig::default()
    }
}

/// What a step sends as its body.
#[derive(Debug, Clone)]
pub enum Body {
    None,
    Json(Value),
    Raw(&'static str),
}

/// Which credentials a step sends.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The runner's credentials, if any.
    Default,
    None,
    Basic(&'static str, &'static str),
}

/// One request and what must come back.
#[derive(Debug, Clone)]
pub struct Step {
    pub method: &'static str,
    pub path: String,
    pub body: Body,
    /// `None`: no Content-Type header.
    pub content_type: Option<&'static str>,
    pub auth: Auth,
    pub status: u16,
    /// A subset the response JSON must contain (objects: listed keys; arrays: same length,
    /// element-wise; `null`: the key is absent; [`ANY`]: any value).
    pub subset: Option<Value>,
    /// Texts the raw response body (or its unescaped `message`) must contain.
    pub contains: Vec<String>,
}

pub fn step(method: &'static str, path: impl Into<String>) -> Step {
    Step {
        method,
        path: path.into(),
        body: Body::None,
        content_type: Some(CONTENT_TYPE),
        auth: Auth::Default,
        status: 200,
        subset: None,
        contains: Vec::new(),
    }
}

pub fn get(path: impl Into<String>) -> Step {
    step("GET", path)
}
pub fn post(path: impl Into<String>, body: Value) -> Step {
    step("POST", path).json(body)
}
pub fn put(path: impl Into<String>, body: Value) -> Step {
    step("PUT", path).json(body)
}
pub fn delete(path: impl Into<String>) -> Step {
    step("DELETE", path)
}

impl Step {
    pub fn json(mut self, body: Value) -> Self {
        self.body = Body::Json(body);
        self
    }
    pub fn raw(mut self, body: &'static str) -> Self {
        self.body = Body::Raw(body);
        self
    }
    pub fn content_type(mut self, content_type: Option<&'static str>) -> Self {
        self.content_type = content_type;
        self
    }
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
    /// Expects 200 and a JSON subset.
    pub fn ok(self, subset: Value) -> Self {
        self.is(200, subset)
    }
    pub fn is(mut self, status: u16, subset: Value) -> Self {
        self.status = status;
        self.subset = Some(subset);
        self
    }
    /// Expects an error answer with this status and `error_code`, whose message contains
    /// `message`.
    pub fn fails(mut self, status: u16, code: u32, message: &str) -> Self {
        self.status = status;
        self.subset = Some(serde_json::json!({ "error_code": code, "message": ANY }));
        self.contains.push(message.to_owned());
        self
    }
    pub fn containing(mut self, text: &str) -> Self {
        self.contains.push(text.to_owned());
        self
    }
}

/// Runs `steps` in order against `base`, sending `auth` where a step does not say otherwise;
/// panics naming the first step that does not match.
pub async fn run(base: &str, steps: &[Step], auth: Option<(&str, &str)>) {
    let client = reqwest::Client::new();
    for (i, s) in steps.iter().enumerate() {
        let label = format!("step {i}: {} {}", s.method, s.path);
        let method = reqwest::Method::from_bytes(s.method.as_bytes()).unwrap();
        let mut req = client.request(method, format!("{base}{}", s.path));
        if let Some(ct) = s.content_type {
            req = req.header("content-type", ct);
        }
        req = match (&s.auth, auth) {
            (Auth::Default, Some((u, p))) => req.basic_auth(u, Some(p)),
            (Auth::Basic(u, p), _) => req.basic_auth(u, Some(p)),
            (Auth::Default, None) | (Auth::None, _) => req,
        };
        req = match &s.body {
            Body::None => req,
            Body::Json(v) => req.body(v.to_string()),
            Body::Raw(text) => req.body(*text),
        };
        let resp = req.send().await.unwrap_or_else(|e| panic!("{label}: {e}"));
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = resp.text().await.unwrap();
        assert_eq!(status, s.status, "{label}: status; body {text}");
        assert_eq!(content_type, CONTENT_TYPE, "{label}: content type");
        let actual: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{label}: body is not JSON ({e}): {text}"));
        if let Some(subset) = &s.subset {
            assert!(
                matches(subset, &actual),
                "{label}: expected a superset of {subset}, got {actual}"
            );
        }
        let message = actual.get("message").and_then(Value::as_str).unwrap_or("");
        for needle in &s.contains {
            assert!(
                text.contains(needle.as_str()) || message.contains(needle.as_str()),
                "{label}: {needle:?} not in {text}"
            );
        }
    }
}

fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(s), a) if s == ANY => !a.is_null(),
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| matches(v, a.get(k).unwrap_or(&Value::Null))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| matches(x, y))
        }
        _ => expected == actual,
    }
}
