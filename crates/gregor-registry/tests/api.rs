//! The registry's HTTP API over real sockets, table-driven, against both stores.

#![allow(clippy::unwrap_used)]

mod common;

use common::{ANY, Auth, Server, delete, get, post, put, run, step, test_db, with_auth};
use serde_json::{Value, json};

/// `Order { id: long }`, written exactly as its canonical text.
const V1: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
/// The same schema with other whitespace and key order.
const V1_SCRAMBLED: &str = "{ \"fields\" : [ { \"type\" : \"long\",\n \"name\" : \"id\" } ],\n  \"name\": \"Order\", \"type\": \"record\" }";
/// V1 plus `note` with a default, written exactly as its canonical text.
const V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"note","type":"string","default":""}]}"#;

const ID: &str = r#"{"name":"id","type":"long"}"#;
const ID_STRING: &str = r#"{"name":"id","type":"string"}"#;
const ID_INT: &str = r#"{"name":"id","type":"int"}"#;
const NOTE: &str = r#"{"name":"note","type":"string"}"#;
const NOTE_DEFAULT: &str = r#"{"name":"note","type":"string","default":""}"#;
const EXTRA: &str = r#"{"name":"extra","type":"int"}"#;
const A: &str = r#"{"name":"a","type":"int"}"#;
const A_DEFAULT: &str = r#"{"name":"a","type":"int","default":0}"#;

fn record(fields: &[&str]) -> String {
    format!(
        r#"{{"type":"record","name":"Order","fields":[{}]}}"#,
        fields.join(",")
    )
}

fn schema(text: &str) -> Value {
    json!({ "schema": text })
}

fn doc(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// Every endpoint and error code, in one story: ids are predictable because each run starts
/// from an empty registry (V1 gets id 1, V2 id 2).
fn scenario() -> Vec<common::Step> {
    let bad = record(&[ID, NOTE_DEFAULT, EXTRA]);
    let versions = "/subjects/orders-value/versions";
    vec![
        // What clients probe first.
        get("/").ok(json!({})),
        get("/schemas/types").ok(json!(["AVRO"])),
        get("/subjects").ok(json!([])),
        get("/config").ok(json!({"compatibilityLevel": "BACKWARD"})),
        // Registering; the same schema (however written) keeps its id and version.
        post(versions, schema(V1)).ok(json!({"id": 1})),
        post(versions, schema(V1))
            .content_type(Some("application/json"))
            .ok(json!({"id": 1})),
        post(versions, schema(V1_SCRAMBLED))
            .content_type(Some("application/vnd.schemaregistry+json"))
            .ok(json!({"id": 1})),
        post(
            versions,
            json!({"schema": V1, "schemaType": "AVRO", "references": []}),
        )
        .content_type(None)
        .ok(json!({"id": 1})),
        get(versions).ok(json!([1])),
        // The same schema under other subjects gets the same id.
        post("/subjects/payments-value/versions", schema(V1)).ok(json!({"id": 1})),
        post("/subjects/audit-value/versions", schema(V1_SCRAMBLED)).ok(json!({"id": 1})),
        // Evolution under the default level (BACKWARD).
        post(versions, schema(V2)).ok(json!({"id": 2})),
        post(versions, schema(&bad))
            .fails(409, 409, "Field 'extra'")
            .containing(
                "Schema being registered is incompatible with an earlier schema for subject \"orders-value\", details: [",
            ),
        get(versions).ok(json!([1, 2])),
        get("/subjects").ok(json!(["audit-value", "orders-value", "payments-value"])),
        // Reading versions.
        get(format!("{versions}/latest")).ok(json!({
            "subject": "orders-value", "version": 2, "id": 2, "schema": V2, "schemaType": null
        })),
        get(format!("{versions}/-1")).ok(json!({"version": 2, "id": 2})),
        get(format!("{versions}/1")).ok(json!({
            "subject": "orders-value", "version": 1, "id": 1, "schema": V1
        })),
        get(format!("{versions}/1/schema"))
            .ok(doc(V1))
            .containing(V1),
        get(format!("{versions}/latest/schema")).ok(doc(V2)),
        get(format!("{versions}/0")).fails(
            422,
            42202,
            "The specified version '0' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"",
        ),
        get(format!("{versions}/abc")).fails(422, 42202, "'abc'"),
        get(format!("{versions}/2147483648")).fails(422, 42202, "'2147483648'"),
        get(format!("{versions}/abc/schema")).fails(422, 42202, "'abc'"),
        get(format!("{versions}/9")).fails(404, 40402, "Version 9 not found."),
        get(format!("{versions}/9/schema")).fails(404, 40402, "Version 9 not found."),
        get("/subjects/nope/versions").fails(404, 40401, "Subject 'nope' not found."),
        get("/subjects/nope/versions/1").fails(404, 40401, "Subject 'nope' not found."),
        get("/subjects/nope/versions/latest/schema").fails(404, 40401, "'nope'"),
        // Schemas by id.
        get("/schemas/ids/1").ok(json!({"schema": V1, "schemaType": null})),
        get("/schemas/ids/2/schema").ok(doc(V2)).containing(V2),
        get("/schemas/ids/1/versions").ok(json!([
            {"subject": "audit-value", "version": 1},
            {"subject": "orders-value", "version": 1},
            {"subject": "payments-value", "version": 1},
        ])),
        get("/schemas/ids/99").fails(404, 40403, "Schema 99 not found"),
        get("/schemas/ids/99/schema").fails(404, 40403, "Schema 99 not found"),
        get("/schemas/ids/99/versions").fails(404, 40403, "Schema 99 not found"),
        get("/schemas/ids/abc").fails(404, 40403, "Schema not found"),
        // Looking a schema up under a subject.
        post("/subjects/orders-value", schema(V1_SCRAMBLED))
            .content_type(None)
            .ok(json!({"subject": "orders-value", "version": 1, "id": 1, "schema": V1})),
        post("/subjects/orders-value", schema("\"string\"")).fails(404, 40403, "Schema not found"),
        post("/subjects/nope", schema(V1)).fails(404, 40401, "Subject 'nope' not found."),
        post("/subjects/orders-value", schema("{\"type\":")).fails(422, 42201, "Invalid schema"),
        // Invalid requests change nothing.
        post(versions, schema(r#"{"type":"nope"}"#)).fails(422, 42201, "Invalid schema"),
        post(versions, json!({"schema": V1, "schemaType": "PROTOBUF"})).fails(
            422,
            42201,
            "only AVRO",
        ),
        post(versions, json!({"schema": V1, "schemaType": "JSON"})).fails(422, 42201, "AVRO"),
        post(
            versions,
            json!({"schema": V1, "references": [{"name": "x", "subject": "y", "version": 1}]}),
        )
        .fails(422, 42201, "schema references are not supported"),
        post(versions, json!({})).fails(422, 42201, "has no"),
        step("POST", versions)
            .raw("{\"schema\": ")
            .fails(400, 400, "malformed JSON"),
        step("POST", versions).raw("").fails(400, 400, "no body"),
        post(versions, json!({"schema": 5})).fails(400, 400, "malformed JSON"),
        step("PUT", "/config")
            .raw("FULL")
            .fails(400, 400, "malformed JSON"),
        step("POST", "/subjects/orders-value")
            .raw("[")
            .fails(400, 400, "malformed JSON"),
        get(versions).ok(json!([1, 2])),
        // The global level.
        put("/config", json!({"compatibility": "FULL"})).ok(json!({"compatibility": "FULL"})),
        get("/config").ok(json!({"compatibilityLevel": "FULL"})),
        put("/config", json!({"compatibility": "SIDEWAYS"})).fails(
            422,
            42203,
            "Invalid compatibility level",
        ),
        put("/config", json!({})).fails(422, 42203, "Invalid compatibility level"),
        get("/config").ok(json!({"compatibilityLevel": "FULL"})),
        delete("/config").ok(json!({"compatibilityLevel": "FULL"})),
        get("/config").ok(json!({"compatibilityLevel": "BACKWARD"})),
        delete("/config").ok(json!({"compatibilityLevel": "BACKWARD"})),
        // Subject levels.
        get("/config/orders-value").fails(
            404,
            40408,
            "Subject 'orders-value' does not have subject-level compatibility configured",
        ),
        get("/config/orders-value?defaultToGlobal=true")
            .ok(json!({"compatibilityLevel": "BACKWARD"})),
        put("/config/orders-value", json!({"compatibility": "none"}))
            .ok(json!({"compatibility": "NONE"})),
        get("/config/orders-value").ok(json!({"compatibilityLevel": "NONE"})),
        get("/config/orders-value?defaultToGlobal=true").ok(json!({"compatibilityLevel": "NONE"})),
        get("/config").ok(json!({"compatibilityLevel": "BACKWARD"})),
        put("/config/orders-value", json!({"compatibility": "BACK"})).fails(422, 42203, "BACK"),
        delete("/config/orders-value").ok(json!({"compatibilityLevel": "NONE"})),
        delete("/config/orders-value").fails(404, 40408, "'orders-value'"),
        delete("/config/nope").fails(404, 40401, "Subject 'nope' not found."),
        // A level can be set before the subject's first version.
        put("/config/future-value", json!({"compatibilityLevel": "FORWARD"}))
            .ok(json!({"compatibility": "FORWARD"})),
        get("/config/future-value").ok(json!({"compatibilityLevel": "FORWARD"})),
        delete("/config/future-value").ok(json!({"compatibilityLevel": "FORWARD"})),
        // Compatibility checks.
        post(
            "/compatibility/subjects/orders-value/versions/latest",
            schema(V2),
        )
        .ok(json!({"is_compatible": true, "messages": null})),
        post(
            "/compatibility/subjects/orders-value/versions/1?verbose=true",
            schema(V2),
        )
        .ok(json!({"is_compatible": true, "messages": []})),
        post(
            "/compatibility/subjects/orders-value/versions/latest",
            schema(&bad),
        )
        .ok(json!({"is_compatible": false, "messages": null})),
        post(
            "/compatibility/subjects/orders-value/versions/latest?verbose=true",
            schema(&bad),
        )
        .ok(json!({"is_compatible": false, "messages": [ANY]}))
        .containing("Field 'extra'"),
        post("/compatibility/subjects/orders-value/versions", schema(&bad))
            .ok(json!({"is_compatible": false})),
        post("/compatibility/subjects/orders-value/versions", schema(V2))
            .ok(json!({"is_compatible": true})),
        post("/compatibility/subjects/brand-new/versions", schema(&bad))
            .ok(json!({"is_compatible": true})),
        post(
            "/compatibility/subjects/nope/versions/latest",
            schema(V1),
        )
        .fails(404, 40401, "Subject 'nope' not found."),
        post(
            "/compatibility/subjects/orders-value/versions/7",
            schema(V1),
        )
        .fails(404, 40402, "Version 7 not found."),
        post(
            "/compatibility/subjects/orders-value/versions/zero",
            schema(V1),
        )
        .fails(422, 42202, "'zero'"),
        post(
            "/compatibility/subjects/orders-value/versions/latest",
            schema("{"),
        )
        .fails(422, 42201, "Invalid schema"),
        // The check's direction follows the subject's level.
        put("/config/orders-value", json!({"compatibility": "FORWARD"}))
            .ok(json!({"compatibility": "FORWARD"})),
        post(
            "/compatibility/subjects/orders-value/versions/latest",
            schema(&bad),
        )
        .ok(json!({"is_compatible": true})),
        delete("/config/orders-value").ok(json!({"compatibilityLevel": "FORWARD"})),
        // Deleting versions.
        delete(format!("{versions}/1")).ok(json!(1)),
        delete(format!("{versions}/1")).fails(
            404,
            40406,
            "Subject 'orders-value' Version 1 was soft deleted",
        ),
        get(versions).ok(json!([2])),
        get(format!("{versions}?deleted=true")).ok(json!([1, 2])),
        get(format!("{versions}/1")).fails(404, 40402, "Version 1 not found."),
        get(format!("{versions}/1?deleted=true")).ok(json!({"version": 1, "id": 1})),
        get("/schemas/ids/1/versions").ok(json!([
            {"subject": "audit-value", "version": 1},
            {"subject": "payments-value", "version": 1},
        ])),
        get("/schemas/ids/1/versions?deleted=true").ok(json!([
            {"subject": "audit-value", "version": 1},
            {"subject": "orders-value", "version": 1},
            {"subject": "payments-value", "version": 1},
        ])),
        post("/subjects/orders-value", schema(V1)).fails(404, 40403, "Schema not found"),
        post("/subjects/orders-value?deleted=true", schema(V1))
            .ok(json!({"subject": "orders-value", "version": 1, "id": 1})),
        delete(format!("{versions}/2?permanent=true")).fails(
            404,
            40407,
            "Subject 'orders-value' Version 2 was not deleted first before being permanently deleted",
        ),
        delete(format!("{versions}/1?permanent=true")).ok(json!(1)),
        get(format!("{versions}?deleted=true")).ok(json!([2])),
        delete(format!("{versions}/1")).fails(404, 40402, "Version 1 not found."),
        delete(format!("{versions}/x")).fails(422, 42202, "'x'"),
        delete("/subjects/nope/versions/1").fails(404, 40401, "Subject 'nope' not found."),
        // Versions are never reused; a deleted schema keeps its id.
        post(versions, schema(V1)).ok(json!({"id": 1})),
        get(versions).ok(json!([2, 3])),
        get(format!("{versions}/latest")).ok(json!({"version": 3, "id": 1})),
        // Deleting subjects.
        delete("/subjects/orders-value?permanent=true").fails(
            404,
            40405,
            "Subject 'orders-value' was not deleted first before being permanently deleted",
        ),
        delete("/subjects/orders-value").ok(json!([2, 3])),
        delete("/subjects/orders-value").fails(404, 40404, "Subject 'orders-value' was soft deleted"),
        get("/subjects").ok(json!(["audit-value", "payments-value"])),
        get("/subjects?deleted=true").ok(json!(["audit-value", "orders-value", "payments-value"])),
        get(versions).fails(404, 40401, "Subject 'orders-value' not found."),
        get(format!("{versions}/latest")).fails(404, 40401, "'orders-value'"),
        get(format!("{versions}?deleted=true")).ok(json!([2, 3])),
        // Soft-deleted schemas stay readable by id (consumers still meet them).
        get("/schemas/ids/2").ok(json!({"schema": V2})),
        delete("/subjects/orders-value?permanent=true").ok(json!([2, 3])),
        get("/subjects?deleted=true").ok(json!(["audit-value", "payments-value"])),
        get("/schemas/ids/2").fails(404, 40403, "Schema 2 not found"),
        delete("/subjects/orders-value").fails(404, 40401, "Subject 'orders-value' not found."),
        delete("/subjects/orders-value?permanent=true").fails(404, 40401, "'orders-value'"),
        // Ids are stable: registering V2 again brings back id 2.
        post("/subjects/renamed-value/versions", schema(V2)).ok(json!({"id": 2})),
        get("/subjects/renamed-value/versions").ok(json!([1])),
        // `latest` in deletes.
        delete("/subjects/payments-value/versions/latest").ok(json!(1)),
        delete("/subjects/payments-value/versions/latest").fails(404, 40406, "Version 1"),
        delete("/subjects/payments-value/versions/latest?permanent=true").ok(json!(1)),
        get("/subjects/payments-value/versions?deleted=true").fails(404, 40401, "'payments-value'"),
        // The global level applies to subjects without their own.
        post("/subjects/global-value/versions", schema(V1)).ok(json!({"id": 1})),
        put("/config", json!({"compatibility": "NONE"})).ok(json!({"compatibility": "NONE"})),
        post("/subjects/global-value/versions", schema(&record(&[ID_STRING])))
            .ok(json!({"id": ANY})),
        delete("/config").ok(json!({"compatibilityLevel": "NONE"})),
        post("/subjects/global-value/versions", schema(&record(&[ID_INT])))
            .fails(409, 409, "Field 'id'"),
        // Unknown routes and methods.
        get("/nope").fails(404, 404, "Not Found"),
        step("PUT", "/subjects").fails(405, 405, "Method Not Allowed"),
    ]
}

/// Per level: a subject with that level, changes it accepts, and one it refuses with a
/// reason naming the field.
fn evolution() -> Vec<common::Step> {
    type Case = (
        &'static str,
        Vec<Vec<&'static str>>,
        Option<(Vec<&'static str>, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        // Anything goes, even changing a field's type.
        ("NONE", vec![vec![ID], vec![ID_STRING], vec![NOTE]], None),
        (
            "BACKWARD",
            vec![vec![ID], vec![ID, NOTE_DEFAULT]],
            Some((vec![ID, NOTE_DEFAULT, EXTRA], "extra")),
        ),
        (
            "BACKWARD_TRANSITIVE",
            vec![vec![ID], vec![ID, A_DEFAULT]],
            // Fine against version 2, not against version 1.
            Some((vec![ID, A], "a")),
        ),
        (
            "FORWARD",
            vec![vec![ID, NOTE], vec![ID, NOTE, EXTRA]],
            Some((vec![ID, EXTRA], "note")),
        ),
        (
            "FORWARD_TRANSITIVE",
            vec![vec![ID, NOTE], vec![ID, NOTE_DEFAULT]],
            // Version 2 reads it (note has a default), version 1 does not.
            Some((vec![ID], "note")),
        ),
        (
            "FULL",
            vec![vec![ID], vec![ID, NOTE_DEFAULT]],
            Some((vec![ID, NOTE_DEFAULT, EXTRA], "extra")),
        ),
        (
            "FULL_TRANSITIVE",
            vec![vec![ID], vec![ID, A_DEFAULT]],
            Some((vec![ID, A], "a")),
        ),
    ];
    let mut steps = Vec::new();
    for (level, accepted, refused) in cases {
        let subject = format!("evolve-{}", level.to_ascii_lowercase());
        let versions = format!("/subjects/{subject}/versions");
        steps.push(
            put(
                format!("/config/{subject}"),
                json!({"compatibility": level}),
            )
            .ok(json!({"compatibility": level})),
        );
        for fields in &accepted {
            steps.push(post(&versions, schema(&record(fields))).ok(json!({"id": ANY})));
        }
        if let Some((fields, field)) = refused {
            steps.push(
                post(&versions, schema(&record(&fields)))
                    .fails(409, 409, &format!("Field '{field}'"))
                    .containing(&format!("{level}:")),
            );
        }
        let numbers: Vec<usize> = (1..=accepted.len()).collect();
        steps.push(get(&versions).ok(json!(numbers)));
    }
    // What the transitive level refused, the plain one accepts.
    steps.push(
        put(
            "/config/evolve-backward_transitive",
            json!({"compatibility": "BACKWARD"}),
        )
        .ok(json!({"compatibility": "BACKWARD"})),
    );
    steps.push(
        post(
            "/subjects/evolve-backward_transitive/versions",
            schema(&record(&[ID, A])),
        )
        .ok(json!({"id": ANY})),
    );
    steps
}

fn auth_steps() -> Vec<common::Step> {
    vec![
        get("/").auth(Auth::None).fails(401, 40101, "Unauthorized"),
        get("/subjects")
            .auth(Auth::None)
            .fails(401, 40101, "Unauthorized"),
        get("/nope")
            .auth(Auth::None)
            .fails(401, 40101, "Unauthorized"),
        post("/subjects/a/versions", schema(V1))
            .auth(Auth::Basic("ci", "wrong"))
            .fails(401, 40101, "Unauthorized"),
        get("/")
            .auth(Auth::Basic("someone", "s3cret"))
            .fails(401, 40101, "Unauthorized"),
        get("/").ok(json!({})),
        post("/subjects/a/versions", schema(V1)).ok(json!({"id": 1})),
        get("/subjects").ok(json!(["a"])),
    ]
}

#[tokio::test]
async fn api_in_memory() {
    let server = Server::memory().await;
    run(&server.url, &scenario(), None).await;
    server.stop().await;
}

#[tokio::test]
async fn api_on_postgres() {
    let db = test_db().await;
    let server = Server::postgres(&db).await;
    run(&server.url, &scenario(), None).await;
    server.stop().await;
}

#[tokio::test]
async fn evolution_in_memory() {
    let server = Server::memory().await;
    run(&server.url, &evolution(), None).await;
    server.stop().await;
}

#[tokio::test]
async fn evolution_on_postgres() {
    let db = test_db().await;
    let server = Server::postgres(&db).await;
    run(&server.url, &evolution(), None).await;
    server.stop().await;
}

#[tokio::test]
async fn basic_auth_guards_every_route() {
    let server = Server::start(with_auth("ci", "s3cret")).await;
    run(&server.url, &auth_steps(), Some(("ci", "s3cret"))).await;
    server.stop().await;
}

#[tokio::test]
async fn postgres_store_survives_a_restart() {
    let db = test_db().await;
    let server = Server::postgres(&db).await;
    run(
        &server.url,
        &[
            post("/subjects/orders-value/versions", schema(V1)).ok(json!({"id": 1})),
            post("/subjects/orders-value/versions", schema(V2)).ok(json!({"id": 2})),
            put("/config/orders-value", json!({"compatibility": "FULL"}))
                .ok(json!({"compatibility": "FULL"})),
            delete("/subjects/orders-value/versions/1").ok(json!(1)),
        ],
        None,
    )
    .await;
    server.stop().await;

    let server = Server::postgres(&db).await;
    run(
        &server.url,
        &[
            get("/schemas/ids/1").ok(json!({"schema": V1})),
            get("/schemas/ids/2").ok(json!({"schema": V2})),
            get("/subjects/orders-value/versions").ok(json!([2])),
            get("/subjects/orders-value/versions?deleted=true").ok(json!([1, 2])),
            get("/config/orders-value").ok(json!({"compatibilityLevel": "FULL"})),
            post("/subjects/orders-value/versions", schema(V1)).ok(json!({"id": 1})),
            get("/subjects/orders-value/versions").ok(json!([2, 3])),
        ],
        None,
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn database_failures_are_50001_without_details() {
    let db = test_db().await;
    let server = Server::postgres(&db).await;
    run(
        &server.url,
        &[post("/subjects/a/versions", schema(V1)).ok(json!({"id": 1}))],
        None,
    )
    .await;
    common::execute(
        &db,
        "DROP TABLE gregor_registry_versions, gregor_registry_schemas, gregor_registry_config",
    )
    .await;
    let failed = |s: common::Step| {
        s.is(
            500,
            json!({"error_code": 50001, "message": "Error in the backend data store"}),
        )
    };
    run(
        &server.url,
        &[
            failed(get("/subjects")),
            failed(get("/schemas/ids/1")),
            failed(post("/subjects/a/versions", schema(V2))),
            failed(delete("/subjects/a")),
            failed(put("/config", json!({"compatibility": "FULL"}))),
            // Still answering.
            get("/").ok(json!({})),
        ],
        None,
    )
    .await;
    server.stop().await;
}

async fn concurrent_registrations(url: &str) {
    let client = reqwest::Client::new();
    run(
        url,
        &[put("/config/busy-value", json!({"compatibility": "NONE"}))
            .ok(json!({"compatibility": "NONE"}))],
        None,
    )
    .await;
    let register = |subject: String, text: String| {
        let client = client.clone();
        let url = format!("{url}/subjects/{subject}/versions");
        async move {
            let resp = client
                .post(url)
                .header("content-type", gregor_registry::CONTENT_TYPE)
                .body(schema(&text).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
        }
    };
    // Eight different schemas into one subject at once: eight distinct versions and ids.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let field = format!(r#"{{"name":"f{i}","type":"long"}}"#);
            tokio::spawn(register("busy-value".to_owned(), record(&[&field])))
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 8, "{ids:?}");
    run(
        url,
        &[get("/subjects/busy-value/versions").ok(json!([1, 2, 3, 4, 5, 6, 7, 8]))],
        None,
    )
    .await;
    // One new schema into eight subjects at once: one id.
    let tasks: Vec<_> = (0..8)
        .map(|i| tokio::spawn(register(format!("same-{i}"), V2.to_owned())))
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_in_memory() {
    let server = Server::memory().await;
    concurrent_registrations(&server.url).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_on_postgres() {
    let db = test_db().await;
    let server = Server::postgres(&db).await;
    concurrent_registrations(&server.url).await;
    server.stop().await;
}
