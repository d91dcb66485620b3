//! A real OTLP/HTTP trace receiver: accepts `POST /v1/traces` with protobuf bodies, decodes
//! them with the OpenTelemetry protobuf definitions and keeps every span for assertions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use tokio::sync::watch;

/// One exported span, flattened for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process.
    pub service: String,
    /// Span name.
    pub name: String,
    /// OTLP span kind (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Lower-case hex.
    pub trace_id: String,
    /// Lower-case hex.
    pub span_id: String,
    /// Lower-case hex; empty for a root span.
    pub parent_span_id: String,
    /// Attributes rendered as strings.
    pub attributes: BTreeMap<String, String>,
    /// Linked (trace id, span id) pairs.
    pub links: Vec<(String, String)>,
    /// OTLP status code (0 unset, 1 ok, 2 error).
    pub status: i32,
}

impl ReceivedSpan {
    /// The attribute `key`, if set.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The OTLP span kinds.
pub mod kind {
    /// Server.
    pub const SERVER: i32 = 2;
    /// Producer.
    pub const PRODUCER: i32 = 4;
    /// Consumer.
    pub const CONSUMER: i32 = 5;
}

#[derive(Clone)]
struct Shared {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    /// Count spans without keeping them (benchmarks).
    discard: bool,
    count: Arc<AtomicU64>,
    changed: watch::Sender<usize>,
}

/// Listens on a free port of 127.0.0.1 until dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    count: Arc<AtomicU64>,
    changed: watch::Receiver<usize>,
    server: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts the receiver.
    pub async fn start() -> anyhow::Result<Self> {
        Self::launch(false).await
    }

    /// Starts a receiver that decodes and counts spans but keeps none (for benchmarks).
    pub async fn start_discarding() -> anyhow::Result<Self> {
        Self::launch(true).await
    }

    async fn launch(discard: bool) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicU64::new(0));
        let (tx, rx) = watch::channel(0);
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(Shared {
                spans: spans.clone(),
                discard,
                count: count.clone(),
                changed: tx,
            });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            endpoint: format!("http://{addr}"),
            spans,
            count,
            changed: rx,
            server,
        })
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// How many spans arrived so far (kept or not).
    pub fn span_count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits, waking on each export, until `check` returns `Some` for the spans received so
    /// far; fails after `timeout` naming `what` and listing what did arrive.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&[ReceivedSpan]) -> Option<T>,
    ) -> anyhow::Result<T> {
        let mut changed = self.changed.clone();
        let wait = async {
            loop {
                if let Some(v) = check(&self.spans()) {
                    return Ok(v);
                }
                changed.changed().await?;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => {
                let mut seen = String::new();
                for s in self.spans() {
                    let _ = writeln!(
                        seen,
                        "  {} {} {} parent={}",
                        s.service, s.name, s.trace_id, s.parent_span_id
                    );
                }
                anyhow::bail!(
                    "timed out after {timeout:?} waiting for {what}; spans received:\n{seen}"
                )
            }
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn export(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    let protobuf = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-protobuf"));
    if !protobuf {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    if shared.discard {
        let n: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let total = shared.count.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let _ = shared
            .changed
            .send(usize::try_from(total).unwrap_or(usize::MAX));
        return (
            StatusCode::OK,
            ExportTraceServiceResponse::default().encode_to_vec(),
        );
    }
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map(render)
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    status: span.status.map(|s| s.code).unwrap_or(0),
                });
            }
        }
    }
    shared
        .count
        .fetch_add(received.len() as u64, Ordering::Relaxed);
    let total = match shared.spans.lock() {
        Ok(mut spans) => {
            spans.extend(received);
            spans.len()
        }
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, Vec::new()),
    };
    let _ = shared.changed.send(total);
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .filter_map(|kv| kv.value.as_ref().map(|v| (kv.key.clone(), render(v))))
        .collect()
}

fn render(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
