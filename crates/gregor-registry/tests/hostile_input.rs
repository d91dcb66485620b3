//! Hostile registrants: NUL bytes in a subject name or in the schema text are refused with a
//! 4xx by both stores — PostgreSQL cannot store a NUL in `text`, which used to surface as a
//! 500 (50001) from the PostgreSQL store only.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, test_db};
use serde_json::{Value, json};

/// A valid record schema with `doc` and a string default holding `piece`.
fn schema_with(piece: &str) -> String {
    json!({
        "type": "record",
        "name": "Order",
        "doc": format!("a{piece}b"),
        "fields": [{"name": "note", "type": "string", "default": format!("x{piece}y")}],
    })
    .to_string()
}

/// Every request that carries a subject name or a schema text, with a NUL in it.
fn hostile_requests() -> Vec<(&'static str, String, Option<Value>)> {
    let ok_schema = json!({"schema": schema_with("")});
    let mut requests = Vec::new();
    for subject in ["a%00b", "%00", "orders-value%00"] {
        requests.extend([
            (
                "POST",
                format!("/subjects/{subject}/versions"),
                Some(ok_schema.clone()),
            ),
            (
                "POST",
                format!("/subjects/{subject}"),
                Some(ok_schema.clone()),
            ),
            ("GET", format!("/subjects/{subject}/versions"), None),
            ("GET", format!("/subjects/{subject}/versions/latest"), None),
            (
                "GET",
                format!("/subjects/{subject}/versions/1/schema"),
                None,
            ),
            ("DELETE", format!("/subjects/{subject}"), None),
            ("DELETE", format!("/subjects/{subject}/versions/1"), None),
            ("GET", format!("/config/{subject}"), None),
            (
                "PUT",
                format!("/config/{subject}"),
                Some(json!({"compatibility": "NONE"})),
            ),
            ("DELETE", format!("/config/{subject}"), None),
            (
                "POST",
                format!("/compatibility/subjects/{subject}/versions"),
                Some(ok_schema.clone()),
            ),
        ]);
    }
    // Raw NUL characters in the schema text (a JSON-escaped `\u0000` inside a string of
    // the schema is legitimate Avro and stays accepted: see `escaped_nul_in_a_default`).
    for schema in [
        format!("{}\u{0}", schema_with("")),
        "\u{0}".to_owned(),
        "{\"type\":\"record\",\"name\":\"R\u{0}\",\"fields\":[]}".to_owned(),
        "{\"type\":\"record\",\"name\":\"R\",\"doc\":\"a\u{0}b\",\"fields\":[]}".to_owned(),
    ] {
        requests.extend([
            (
                "POST",
                "/subjects/nul-value/versions".to_owned(),
                Some(json!({"schema": schema})),
            ),
            (
                "POST",
                "/subjects/nul-value".to_owned(),
                Some(json!({"schema": schema})),
            ),
            (
                "POST",
                "/compatibility/subjects/nul-value/versions".to_owned(),
                Some(json!({"schema": schema})),
            ),
        ]);
    }
    requests
}

async fn no_request_is_a_server_error(server: &Server) {
    let client = reqwest::Client::new();
    // Something under the subject so that lookups and checks have versions to compare with.
    let seeded = client
        .post(format!("{}/subjects/nul-value/versions", server.url))
        .body(json!({"schema": schema_with("")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        seeded.status().as_u16(),
        200,
        "{}",
        seeded.text().await.unwrap()
    );
    for (method, path, body) in hostile_requests() {
        let mut request = client.request(method.parse().unwrap(), format!("{}{path}", server.url));
        if let Some(body) = &body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let label = format!(
            "{method} {path} {}",
            body.map(|b| b.to_string()).unwrap_or_default()
        );
        assert!(
            (400..500).contains(&status),
            "{label}: expected a 4xx refusal, got {status} {text}"
        );
    }
}

/// A NUL *escaped* inside a JSON string of the schema (a default, a doc) is valid Avro: both
/// stores keep it and give it back.
async fn escaped_nul_in_a_default(server: &Server) {
    let client = reqwest::Client::new();
    let text = schema_with("\u{0}");
    assert!(text.contains("\\u0000"), "{text}");
    let response = client
        .post(format!("{}/subjects/escaped-value/versions", server.url))
        .body(json!({ "schema": text }).to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(status, 200, "{}", response.text().await.unwrap());
    let back: Value = client
        .get(format!(
            "{}/subjects/escaped-value/versions/latest",
            server.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = back["schema"].as_str().unwrap();
    assert!(schema.contains("x\\u0000y"), "{schema}");
}

#[tokio::test]
async fn nul_bytes_are_refused_with_a_4xx_on_postgres() {
    let db = test_db().await;
    let server = Server::postgres(&db).await;
    no_request_is_a_server_error(&server).await;
    escaped_nul_in_a_default(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn nul_bytes_are_refused_with_a_4xx_in_memory() {
    let server = Server::memory().await;
    no_request_is_a_server_error(&server).await;
    escaped_nul_in_a_default(&server).await;
    server.stop().await;
}
