//! One trace from the HTTP request to the handler: order-service (HTTP → outbox), the relay
//! and shipping-service export OTLP/HTTP to a real receiver in this test, which decodes the
//! protobuf and checks trace ids, parent/child links and the messaging attributes — for a
//! direct delivery and for one that takes a retry hop.

use gregor_testkit::{env_plus, free_port};
use std::time::Duration;

use gregor_testkit::otlp::{OtlpReceiver, ReceivedSpan, kind};
use gregor_testkit::process::Proc;
use gregor_testkit::{PrivateRegistry, TestDb, kafka, kafka_bootstrap, unique_name, wait_until};

const WAIT: Duration = Duration::from_secs(60);
/// Orders whose amount is a multiple of this fail their first attempt (shipping-service).
const FLAKY_EVERY: i64 = 7;

fn by_id<'a>(spans: &'a [ReceivedSpan], id: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.span_id == id)
}

/// The spans of one trace, once the consumer has finished handling it (a handled process
/// span exists) and its ancestors are all present.
fn complete_trace(spans: &[ReceivedSpan], trace_id: &str) -> Option<Vec<ReceivedSpan>> {
    let trace: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .cloned()
        .collect();
    let handled = trace
        .iter()
        .find(|s| s.kind == kind::CONSUMER && s.attr("gregor.outcome") == Some("handled"))?;
    // Walk up to the server span: every ancestor must have arrived.
    let mut current = handled;
    loop {
        if current.kind == kind::SERVER {
            return Some(trace);
        }
        current = by_id(&trace, &current.parent_span_id)?;
    }
}

fn parent_of<'a>(trace: &'a [ReceivedSpan], span: &ReceivedSpan) -> &'a ReceivedSpan {
    by_id(trace, &span.parent_span_id)
        .unwrap_or_else(|| panic!("parent of {} ({}) missing", span.name, span.parent_span_id))
}

fn assert_messaging(span: &ReceivedSpan, topic: &str) {
    assert_eq!(span.attr("messaging.system"), Some("kafka"), "{span:?}");
    assert_eq!(
        span.attr("messaging.destination.name"),
        Some(topic),
        "{span:?}"
    );
}

#[tokio::test]
async fn one_trace_from_http_request_to_handler_including_a_retry_hop() -> anyhow::Result<()> {
    let db = TestDb::create("trace").await?;
    let registry = PrivateRegistry::start().await?;
    let receiver = OtlpReceiver::start().await?;
    let bootstrap = kafka_bootstrap()?;
    let topic = unique_name("traced-orders");
    let group = unique_name("shipping");
    kafka::create_topic_family(&topic, 2, 1).await?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let registry_url = registry.url();
    let flaky = FLAKY_EVERY.to_string();
    let common = [
        ("DATABASE_URL", db.url.as_str()),
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
        ("SCHEMA_REGISTRY_URL", registry_url.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("GREGOR_ORDERS_TOPIC", topic.as_str()),
        ("GREGOR_ORDERS_ADDR", addr.as_str()),
    ];
    let mut orders = Proc::spawn_args("order-service", &["serve"], &env_plus(&common, &[]))?;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/orders");
    let place = |trace_id: &'static str, amount: i64| {
        let request = client
            .post(&url)
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .json(&serde_json::json!({"customer": "c-1", "amount_cents": amount}));
        async move { request.send().await }
    };
    // Direct: amount not a multiple of FLAKY_EVERY. Retried once: a multiple.
    const DIRECT: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const RETRIED: &str = "5cf92f3577b34da6a3ce929d0e0e4737";
    wait_until(WAIT, "order-service to accept an order", || async {
        match place(DIRECT, 1000).await {
            Ok(r) if r.status().as_u16() == 201 => Ok(Some(())),
            Ok(r) => anyhow::bail!(
                "order-service answered {}: {}\n{}",
                r.status(),
                r.text().await?,
                orders.log()
            ),
            Err(_) => Ok(None), // not listening yet
        }
    })
    .await?;
    let placed = place(RETRIED, 7 * 100).await?;
    anyhow::ensure!(
        placed.status().as_u16() == 201,
        "second order: {}",
        placed.status()
    );

    let relay = Proc::spawn(
        "gregor-relay",
        &env_plus(&common, &[("GREGOR_RELAY_HTTP_ADDR", "off")]),
    )?;
    let shipping = Proc::spawn(
        "shipping-service",
        &env_plus(
            &common,
            &[
                ("GREGOR_CONSUMER_GROUP", group.as_str()),
                ("SHIPPING_TOPIC", topic.as_str()),
                ("SHIPPING_FLAKY_EVERY", flaky.as_str()),
                ("GREGOR_CONSUMER_IN_PLACE_ATTEMPTS", "1"),
                ("GREGOR_CONSUMER_RETRY_TIERS", "1s"),
            ],
        ),
    )?;

    let logs = || {
        format!(
            "relay:\n{}\nshipping:\n{}\norders:\n{}",
            relay.log(),
            shipping.log(),
            orders.log()
        )
    };
    let direct = receiver
        .wait_for(WAIT, "the direct order's complete trace", |s| {
            complete_trace(s, DIRECT)
        })
        .await
        .map_err(|e| e.context(logs()))?;
    let retried = receiver
        .wait_for(WAIT, "the retried order's complete trace", |s| {
            complete_trace(s, RETRIED)
        })
        .await
        .map_err(|e| e.context(logs()))?;

    // Direct: POST /orders → create → publish (relay) → process (shipping-service).
    let process = direct
        .iter()
        .find(|s| s.kind == kind::CONSUMER)
        .expect("a process span");
    assert_eq!(process.service, "shipping-service");
    assert_eq!(process.name, format!("process {topic}"));
    assert_messaging(process, &topic);
    assert_eq!(process.attr("messaging.operation.type"), Some("process"));
    assert_eq!(
        process.attr("messaging.consumer.group.name"),
        Some(group.as_str())
    );
    assert!(process.attr("messaging.destination.partition.id").is_some());
    assert!(process.attr("messaging.kafka.offset").is_some());
    let publish = parent_of(&direct, process);
    assert_eq!(
        (publish.service.as_str(), publish.kind),
        ("gregor-relay", kind::PRODUCER)
    );
    assert_eq!(publish.name, format!("publish {topic}"));
    assert_messaging(publish, &topic);
    let message_id = publish.attr("messaging.message.id").expect("message id");
    assert_eq!(process.attr("messaging.message.id"), Some(message_id));
    assert_eq!(
        publish.attr("messaging.destination.partition.id"),
        process.attr("messaging.destination.partition.id")
    );
    assert_eq!(
        publish.attr("messaging.kafka.offset"),
        process.attr("messaging.kafka.offset")
    );
    let create = parent_of(&direct, publish);
    assert_eq!(
        (create.service.as_str(), create.name.as_str()),
        ("order-service", &*format!("create {topic}"))
    );
    assert_eq!(create.attr("messaging.message.id"), Some(message_id));
    let server = parent_of(&direct, create);
    assert_eq!(
        (server.name.as_str(), server.kind),
        ("POST /orders", kind::SERVER)
    );
    assert_eq!(
        server.parent_span_id, "00f067aa0ba902b7",
        "continues the caller's traceparent"
    );
    assert_eq!(server.attr("http.response.status_code"), Some("201"));

    // Retried: the first process span failed and forwarded a copy to the retry topic; the
    // retry hop's process span is a child of that forward, all in the request's trace.
    let retry_topic = format!("{topic}.retry.1");
    let hop = retried
        .iter()
        .find(|s| s.kind == kind::CONSUMER && s.attr("gregor.outcome") == Some("handled"))
        .expect("the handled hop");
    assert_eq!(hop.name, format!("process {retry_topic}"));
    assert_messaging(hop, &retry_topic);
    let forward = parent_of(&retried, hop);
    assert_eq!(
        (forward.name.as_str(), forward.kind),
        (&*format!("publish {retry_topic}"), kind::PRODUCER)
    );
    let first = parent_of(&retried, forward);
    assert_eq!(first.name, format!("process {topic}"));
    assert_eq!(first.attr("gregor.outcome"), Some("retried"));
    assert_eq!(first.attr("error.type"), Some("retryable"));
    assert_eq!(
        first.attr("messaging.message.id"),
        hop.attr("messaging.message.id")
    );
    let relay_span = parent_of(&retried, first);
    assert_eq!(relay_span.service, "gregor-relay");
    let server = parent_of(&retried, parent_of(&retried, relay_span));
    assert_eq!(server.kind, kind::SERVER);
    assert!(retried.iter().all(|s| s.trace_id == RETRIED));
    assert!(direct.iter().all(|s| s.trace_id == DIRECT));

    drop((relay, shipping));
    orders.kill9()?;
    Ok(())
}
