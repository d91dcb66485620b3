//! Hostile registrants against the compatibility check (issue 15, item 6): a union of
//! thousands of records checked against another used to burn CPU for seconds to minutes
//! (every mismatch formatted both schemas with `{:#?}`, failures were not remembered) while
//! holding the registry's write lock — and, in memory, every reader out.
//!
//! The `gregor-registry` binary serves each test on its own port: the timing is measured over
//! a socket against the real server, with its own runtime.

// The measures are printed (seen with `--nocapture`) to show the margins.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::test_db;
use serde_json::{Value, json};

/// The hostile request must be refused within this.
const REFUSED_WITHIN: Duration = Duration::from_secs(1);
/// A concurrent read of another subject must be answered within this.
const READ_WITHIN: Duration = Duration::from_millis(100);
/// A concurrent registration under another subject must be answered within this.
const WRITE_WITHIN: Duration = Duration::from_millis(500);

/// A `gregor-registry` process, killed when dropped.
struct Registry {
    child: Child,
    url: String,
}

impl Registry {
    fn start(vars: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gregor-registry"))
            .env_clear()
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("GREGOR_REGISTRY_LISTEN", "127.0.0.1:0")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let addr = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                panic!("the registry exited before listening: {seen}");
            }
            seen.push_str(&line);
            if let Some((_, rest)) = line.split_once("listening on ") {
                break rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect::<String>();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stderr.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        Self {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A union of `n` records all named `R` (in namespaces `{prefix}0`, `{prefix}1` …) whose
/// field `a` has the type `field_type(i)` gives: every writer branch is compared with every
/// reader branch.
fn union_of_records(n: usize, prefix: &str, field_type: impl Fn(usize) -> Value) -> String {
    let branches: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "type": "record",
                "name": "R",
                "namespace": format!("{prefix}{i}"),
                "fields": [{"name": "a", "type": field_type(i)}],
            })
        })
        .collect();
    Value::Array(branches).to_string()
}

/// A record of `width` string fields, named `Wide{i}`.
fn wide(i: usize, width: usize) -> Value {
    let fields: Vec<Value> = (0..width)
        .map(|f| json!({"name": format!("field_{f}"), "type": "string"}))
        .collect();
    json!({"type": "record", "name": format!("Wide{i}"), "fields": fields})
}

fn order(fields: Value) -> String {
    json!({"type": "record", "name": "Order", "fields": fields}).to_string()
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value, Duration) {
    let started = Instant::now();
    let mut request = client
        .request(method, url)
        .header("content-type", gregor_registry::CONTENT_TYPE)
        .timeout(Duration::from_secs(120));
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let took = started.elapsed();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, took)
}

async fn register(client: &reqwest::Client, base: &str, subject: &str, schema: &str) -> u16 {
    let (status, body, _) = send(
        client,
        reqwest::Method::POST,
        format!("{base}/subjects/{subject}/versions"),
        Some(json!({ "schema": schema })),
    )
    .await;
    assert!(status == 200 || status >= 400, "{status}: {body}");
    status
}

/// The worst latency of reads (and registrations) of other subjects issued every 10 ms while
/// `hostile` is in flight, the hostile answer, and how long it took. Gives up on the hostile
/// request after `give_up`.
async fn while_hostile(
    base: &str,
    path: String,
    body: Value,
    give_up: Duration,
) -> (Option<(u16, Value)>, Duration, Duration, Duration, usize) {
    let client = reqwest::Client::new();
    let hostile = {
        let client = client.clone();
        let url = format!("{base}{path}");
        tokio::spawn(async move { send(&client, reqwest::Method::POST, url, Some(body)).await })
    };
    let started = Instant::now();
    let (mut worst_read, mut worst_write, mut probes) = (Duration::ZERO, Duration::ZERO, 0);
    while !hostile.is_finished() && started.elapsed() < give_up {
        let read = tokio::time::timeout(
            Duration::from_secs(2),
            send(
                &client,
                reqwest::Method::GET,
                format!("{base}/subjects/other-value/versions/latest"),
                None,
            ),
        )
        .await;
        let took = match read {
            Ok((200, _, took)) => took,
            Ok((status, body, _)) => panic!("reading another subject: {status} {body}"),
            Err(_) => Duration::from_secs(2),
        };
        worst_read = worst_read.max(took);
        if probes % 5 == 0 {
            let schema = order(json!([
                {"name": "id", "type": "long"},
                {"name": format!("n{probes}"), "type": "int", "default": 0},
            ]));
            let write = tokio::time::timeout(
                Duration::from_secs(2),
                send(
                    &client,
                    reqwest::Method::POST,
                    format!("{base}/subjects/other-value/versions"),
                    Some(json!({ "schema": schema })),
                ),
            )
            .await;
            let took = match write {
                Ok((200, _, took)) => took,
                Ok((status, body, _)) => {
                    panic!("registering under another subject: {status} {body}")
                }
                Err(_) => Duration::from_secs(2),
            };
            worst_write = worst_write.max(took);
        }
        probes += 1;
        // Probe cadence (a load pattern, not synchronisation).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !hostile.is_finished() {
        hostile.abort();
        return (None, started.elapsed(), worst_read, worst_write, probes);
    }
    let (status, body, took) = hostile.await.unwrap();
    (Some((status, body)), took, worst_read, worst_write, probes)
}

/// The hostile tests measure latency: one at a time, so they do not share the CPU.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The hostile registration is refused (4xx) and the compatibility check answered (4xx, or
/// a short "no") within 1 s, while reads and registrations of another subject are answered
/// promptly.
async fn hostile_union_is_refused_quickly(base: &str) {
    let client = reqwest::Client::new();
    let other = order(json!([{"name": "id", "type": "long"}]));
    assert_eq!(register(&client, base, "other-value", &other).await, 200);
    // 3 000 records of ~90 bytes: well under any sensible size limit.
    let v1 = union_of_records(3000, "w", |_| json!("int"));
    assert_eq!(register(&client, base, "hostile-value", &v1).await, 200);
    // Long: 3 000 × 3 000 record pairs, each failing on `a`.
    let long = union_of_records(3000, "r", |_| json!("string"));
    // Wide: 3 000 × 100 pairs, each failing on `a` against a record of 100 fields (which the
    // old checker formatted, with `{:#?}`, into an error nobody read).
    let wide = union_of_records(100, "r", |i| wide(i, 100));
    assert!(long.len() < 512 << 10 && wide.len() < 512 << 10);
    let mut failures = Vec::new();
    for (candidate, path) in [
        (&long, "/subjects/hostile-value/versions"),
        (&wide, "/subjects/hostile-value/versions"),
        (
            &long,
            "/compatibility/subjects/hostile-value/versions?verbose=true",
        ),
        (
            &wide,
            "/compatibility/subjects/hostile-value/versions?verbose=true",
        ),
    ] {
        let (answer, took, worst_read, worst_write, probes) = while_hostile(
            base,
            path.to_owned(),
            json!({ "schema": candidate }),
            Duration::from_secs(5),
        )
        .await;
        let kind = if std::ptr::eq(candidate, &long) {
            "long"
        } else {
            "wide"
        };
        eprintln!(
            "{kind} union, {path}: answered {:?} after {took:?}; other subject: reads up to \
             {worst_read:?}, registrations up to {worst_write:?} ({probes} probes)",
            answer.as_ref().map(|(status, _)| status)
        );
        let mut wrong = Vec::new();
        match &answer {
            None => wrong.push(format!("no answer after {took:?}")),
            // A check may also finish within its budget: a quick, short "no" is as good.
            Some((200, body))
                if path.starts_with("/compatibility")
                    && body["is_compatible"] == false
                    && body.to_string().len() < 1024 =>
            {
                if took >= REFUSED_WITHIN {
                    wrong.push(format!("answered after {took:?}"));
                }
            }
            Some((status, body)) => {
                let message = body["message"].as_str().unwrap_or_default();
                if !(400..500).contains(status) || message.is_empty() || message.len() > 1024 {
                    wrong.push(format!(
                        "answered {status} with {} bytes of message: {:.300}",
                        message.len(),
                        body.to_string()
                    ));
                }
                if took >= REFUSED_WITHIN {
                    wrong.push(format!("answered after {took:?}: {message:.200}"));
                }
            }
        }
        if worst_read >= READ_WITHIN {
            wrong.push(format!("a read of another subject took {worst_read:?}"));
        }
        if worst_write >= WRITE_WITHIN {
            wrong.push(format!(
                "a registration under another subject took {worst_write:?}"
            ));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{kind} union, {path} ({probes} probes): {}",
                wrong.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The subject is unchanged and still usable.
    let (status, body, _) = send(
        &client,
        reqwest::Method::GET,
        format!("{base}/subjects/hostile-value/versions"),
        None,
    )
    .await;
    assert_eq!((status, body), (200, json!([1])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_union_is_refused_quickly_in_memory() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let registry = Registry::start(&[("GREGOR_REGISTRY_STORAGE", "memory")]);
    hostile_union_is_refused_quickly(&registry.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_union_is_refused_quickly_on_postgres() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let db = test_db().await;
    let registry = Registry::start(&[
        ("GREGOR_REGISTRY_STORAGE", "postgres"),
        ("DATABASE_URL", &db.url),
    ]);
    hostile_union_is_refused_quickly(&registry.url).await;
    drop(registry);
}

/// An incompatible field type is reported in a few words that say which types clash. (The
/// old checker formatted both whole types — here a 2 000-field record — with `{:#?}` into an
/// inner error the message then dropped, keeping only the field's name.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_409_message_stays_short() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let registry = Registry::start(&[("GREGOR_REGISTRY_STORAGE", "memory")]);
    let base = &registry.url;
    let client = reqwest::Client::new();
    let v1 = order(json!([{"name": "a", "type": "int"}]));
    assert_eq!(register(&client, base, "wide-value", &v1).await, 200);
    let candidate = order(json!([{"name": "a", "type": wide(0, 2000)}]));
    let (status, body, _) = send(
        &client,
        reqwest::Method::POST,
        format!("{base}/subjects/wide-value/versions"),
        Some(json!({ "schema": candidate })),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error_code"], 409, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.len() < 512,
        "{} bytes of message: {:.300}",
        message.len(),
        message
    );
    // Still says where and why.
    for needle in ["wide-value", "version 1", "'a'", "int", "record"] {
        assert!(message.contains(needle), "{needle} missing from {message}");
    }
}

/// A schema text over `GREGOR_REGISTRY_MAX_SCHEMA_BYTES` is refused with a 422 naming the
/// variable, before it is parsed; one at the limit is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_over_the_size_limit_are_refused() {
    let registry = Registry::start(&[
        ("GREGOR_REGISTRY_STORAGE", "memory"),
        ("GREGOR_REGISTRY_MAX_SCHEMA_BYTES", "4096"),
    ]);
    let base = &registry.url;
    let client = reqwest::Client::new();
    let sized = |bytes: usize| {
        let shell = order(json!([{"name": "id", "type": "long", "doc": ""}]));
        let doc = "d".repeat(bytes - shell.len());
        order(json!([{"name": "id", "type": "long", "doc": doc}]))
    };
    assert_eq!(sized(4096).len(), 4096);
    assert_eq!(
        register(&client, base, "sized-value", &sized(4096)).await,
        200
    );
    for path in [
        "/subjects/sized-value/versions",
        "/subjects/sized-value",
        "/compatibility/subjects/sized-value/versions",
    ] {
        let (status, body, _) = send(
            &client,
            reqwest::Method::POST,
            format!("{base}{path}"),
            Some(json!({ "schema": sized(4097) })),
        )
        .await;
        assert_eq!(
            (status, &body["error_code"]),
            (422, &json!(42201)),
            "{path}: {body}"
        );
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("4097 bytes") && message.contains("GREGOR_REGISTRY_MAX_SCHEMA_BYTES"),
            "{path}: {message}"
        );
    }
}
