//! `init()`: the process-wide subscriber of a gregor binary.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::{LogFormat, TelemetryConfig, TelemetryError};

/// Keeps trace export running; flushes and stops it when dropped (drop it last in `main`,
/// outside the async runtime).
#[derive(Debug)]
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered now (before a planned exit, say).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(e) = provider.force_flush()
        {
            tracing::warn!(error = %e, "trace export flush failed");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "trace export did not shut down cleanly");
        }
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber: log lines on stderr filtered by `log_filter`, and, when
/// `config.otlp` is set, OpenTelemetry spans filtered by `trace_filter`, batched and exported
/// over OTLP/HTTP. Also installs the W3C trace-context propagator globally.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let log_filter = filter("RUST_LOG", &config.log_filter)?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: BoxedLayer = match config.log_format {
        LogFormat::Text => fmt.with_filter(log_filter).boxed(),
        LogFormat::Pretty => fmt.pretty().with_filter(log_filter).boxed(),
        LogFormat::Json => fmt.json().with_filter(log_filter).boxed(),
    };
    let mut layers = vec![fmt];
    let provider = if config.otlp {
        let provider = provider(&config.service_name)?;
        let tracer = provider.tracer("gregor");
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_location(false)
                .with_filter(filter("GREGOR_TRACE_FILTER", &config.trace_filter)?)
                .boxed(),
        );
        Some(provider)
    } else {
        None
    };
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    Ok(Telemetry { provider })
}

/// What a binary's `main` does first: [`TelemetryConfig::from_env`] with its own name as the
/// default `service.name`, then [`init`].
pub fn init_from_env(
    service_name: &str,
    env: &gregor_config::Env,
) -> Result<Telemetry, TelemetryError> {
    init(&TelemetryConfig::from_env(service_name, env)?)
}

fn filter(var: &'static str, value: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::try_new(value).map_err(|e| TelemetryError::Filter {
        var,
        reason: format!("{value:?} is not a valid filter: {e}"),
    })
}

/// Batching OTLP/HTTP exporter; endpoint, headers, timeout, sampler and resource attributes
/// come from the standard `OTEL_*` variables.
fn provider(service_name: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attrs| {
            attrs
                .split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let mut resource = Resource::builder();
    if !named {
        resource = resource.with_service_name(service_name.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}
