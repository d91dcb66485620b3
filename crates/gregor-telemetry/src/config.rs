//! What `init()` sets up, read from the environment.

use gregor_config::{ConfigError, Env};

/// How log lines look on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One compact line per event (default).
    #[default]
    Text,
    /// Multi-line, for a developer's terminal.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logging and trace export settings of one binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names one.
    pub service_name: String,
    /// Which events are logged (`RUST_LOG` syntax).
    pub log_filter: String,
    /// `GREGOR_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// Which spans are exported (`RUST_LOG` syntax, `GREGOR_TRACE_FILTER`), independent of
    /// the log filter so quiet logs keep full traces.
    pub trace_filter: String,
    /// Export spans over OTLP/HTTP (set when `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is, unless `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`). Endpoint, headers, timeout, sampler and resource come from
    /// the standard `OTEL_*` variables.
    pub otlp: bool,
}

/// The default log filter: our own info, chatty dependencies at warn.
pub const DEFAULT_LOG_FILTER: &str = "info,rdkafka=warn,sqlx=warn,h2=warn,hyper=warn,reqwest=warn";

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: "gregor".to_owned(),
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
            log_format: LogFormat::Text,
            trace_filter: "info".to_owned(),
            otlp: false,
        }
    }
}

const SAMPLERS: &[&str] = &[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

impl TelemetryConfig {
    /// Reads `RUST_LOG`, `GREGOR_LOG_FORMAT`, `GREGOR_TRACE_FILTER` and the `OTEL_*` variables
    /// named on the fields; `service_name` is this binary's default name.
    pub fn from_env(service_name: &str, env: &Env) -> Result<Self, ConfigError> {
        let mut config = Self {
            service_name: service_name.to_owned(),
            ..Self::default()
        };
        if let Some(filter) = env.get("RUST_LOG") {
            config.log_filter = filter.to_owned();
        }
        if let Some(filter) = env.get("GREGOR_TRACE_FILTER") {
            config.trace_filter = filter.to_owned();
        }
        config.log_format = match env.get("GREGOR_LOG_FORMAT") {
            None | Some("" | "text") => LogFormat::Text,
            Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "GREGOR_LOG_FORMAT",
                    format!("{other:?} is not one of text, pretty, json"),
                ));
            }
        };
        let endpoint = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .find_map(|var| env.get(var).filter(|v| !v.is_empty()).map(|v| (var, v)));
        if let Some((var, url)) = endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                var,
                format!("{url:?} is not an http:// or https:// URL (OTLP/HTTP is used)"),
            ));
        }
        let disabled = env
            .get("OTEL_SDK_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let exporter = env.get("OTEL_TRACES_EXPORTER").unwrap_or("otlp");
        if !matches!(exporter, "otlp" | "none") {
            return Err(ConfigError::invalid(
                "OTEL_TRACES_EXPORTER",
                format!("{exporter:?} is not supported (otlp or none)"),
            ));
        }
        if let Some(protocol) = env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            && protocol != "http/protobuf"
        {
            return Err(ConfigError::invalid(
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                format!("{protocol:?} is not supported (http/protobuf)"),
            ));
        }
        config.otlp = endpoint.is_some() && !disabled && exporter == "otlp";
        if let Some(sampler) = env.get("OTEL_TRACES_SAMPLER") {
            if !SAMPLERS.contains(&sampler) {
                return Err(ConfigError::invalid(
                    "OTEL_TRACES_SAMPLER",
                    format!("{sampler:?} is not one of {}", SAMPLERS.join(", ")),
                ));
            }
            if sampler.ends_with("traceidratio") {
                let arg = env.get("OTEL_TRACES_SAMPLER_ARG").unwrap_or("1.0");
                if !arg.parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r)) {
                    return Err(ConfigError::invalid(
                        "OTEL_TRACES_SAMPLER_ARG",
                        format!("{arg:?} is not a ratio between 0 and 1"),
                    ));
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
        TelemetryConfig::from_env("svc", &Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn export_is_on_only_with_an_endpoint() {
        assert!(!read(&[]).expect("valid").otlp);
        let on = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]).expect("valid");
        assert!(on.otlp);
        assert_eq!(on.service_name, "svc");
        let off = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ])
        .expect("valid");
        assert!(!off.otlp);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (pairs, var) in [
            (vec![("GREGOR_LOG_FORMAT", "xml")], "GREGOR_LOG_FORMAT"),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![("OTEL_TRACES_SAMPLER", "sometimes")],
                "OTEL_TRACES_SAMPLER",
            ),
            (
                vec![
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![("OTEL_TRACES_EXPORTER", "jaeger")],
                "OTEL_TRACES_EXPORTER",
            ),
        ] {
            let err = read(&pairs).expect_err("refused");
            assert_eq!(err.var(), var, "{err}");
        }
    }
}
