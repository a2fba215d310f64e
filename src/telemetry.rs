//! Logging and tracing setup, in one place.
//!
//! Logs go to stderr, as text for people (coloured only when stderr is a
//! terminal and `NO_COLOR` is unset, so a file or a pipe gets no escape
//! codes) or as one JSON object per line for log collectors
//! (`--log-format json`). `RUST_LOG` overrides the default filter.
//!
//! Traces go over OTLP/gRPC when `--otlp-endpoint` or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set (and `OTEL_SDK_DISABLED` is not `true`); the exporter reads the
//! other standard variables itself (`OTEL_EXPORTER_OTLP_HEADERS`,
//! `…_TIMEOUT`), the resource `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES`. Incoming W3C `traceparent` headers are
//! continued (see [`parent_of`]). A collector that cannot be reached is one
//! warning, not an error per batch (see [`Quiet`]).

use std::{
    io::IsTerminal as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use opentelemetry::{propagation::Extractor, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};
use tracing_subscriber::{EnvFilter, Layer as _, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Keeps the trace exporter alive; flush it with [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// The OpenTelemetry SDK logs its own failures (every failed batch) through
/// `tracing`; [`Quiet`] says it once instead.
const SDK_LOGS_OFF: [&str; 3] = ["opentelemetry=off", "opentelemetry_sdk=off", "opentelemetry_otlp=off"];

pub fn init(default_filter: &str, otlp_endpoint: Option<&str>, format: LogFormat) -> anyhow::Result<Telemetry> {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    if !std::env::var("RUST_LOG").is_ok_and(|f| f.contains("opentelemetry")) {
        for directive in SDK_LOGS_OFF {
            filter = filter.add_directive(directive.parse()?);
        }
    }
    let endpoint = otlp_endpoint.map(str::to_owned).or_else(standard_endpoint);
    let provider =
        endpoint.as_deref().map(|endpoint| exporting_provider(endpoint, otlp_endpoint.is_some())).transpose()?;
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    }
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("reprise")));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = match format {
        LogFormat::Text => fmt::layer().with_target(false).with_ansi(ansi).with_writer(std::io::stderr).boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let _ = tracing_subscriber::registry().with(filter).with(logs).with(otel).try_init();
    if let Some(endpoint) = endpoint {
        tracing::info!(endpoint, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

/// The collector named by the standard variables, unless the SDK is disabled.
fn standard_endpoint() -> Option<String> {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none")
    {
        return None;
    }
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// A batch exporter to `endpoint`. With `explicit` (the flag), the endpoint
/// is given to the exporter; otherwise it reads the standard variables itself.
fn exporting_provider(endpoint: &str, explicit: bool) -> anyhow::Result<SdkTracerProvider> {
    let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    let exporter = if explicit { builder.with_endpoint(endpoint).build()? } else { builder.build()? };
    // OTEL_SERVICE_NAME, when set, names the service; "reprise" otherwise.
    let resource = if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        Resource::builder().build()
    } else {
        Resource::builder().with_service_name("reprise").build()
    };
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(Quiet::new(exporter, endpoint.to_owned()))
        .with_resource(resource)
        .build())
}

/// An exporter that says once (a warning) that the collector cannot be
/// reached, and once (info) that it can again, instead of an error per batch.
#[derive(Debug)]
pub struct Quiet<E> {
    inner: E,
    endpoint: String,
    failing: Arc<AtomicBool>,
}

impl<E> Quiet<E> {
    pub fn new(inner: E, endpoint: String) -> Self {
        Quiet { inner, endpoint, failing: Arc::new(AtomicBool::new(false)) }
    }
}

impl<E: SpanExporter> SpanExporter for Quiet<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        match &result {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                endpoint = %self.endpoint,
                error = %e,
                "cannot export traces to the OTLP collector; spans are dropped until it answers (said once)"
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "exporting traces to the OTLP collector again")
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The trace context of an incoming request (its W3C `traceparent` and
/// `tracestate` headers), to continue in the request's span. Without a
/// propagator installed (no tracing), an empty context.
pub fn parent_of(headers: &tonic::codegen::http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)))
}

/// Reads propagation fields from HTTP/2 headers.
struct Headers<'a>(&'a tonic::codegen::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

impl Telemetry {
    /// Flushes spans not yet exported.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("trace export shutdown: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt as _;

    #[test]
    fn a_traceparent_header_is_continued() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let mut headers = tonic::codegen::http::HeaderMap::new();
        headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        let parent = parent_of(&headers);
        let span = parent.span();
        let context = span.span_context();
        assert!(context.is_remote());
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
    }
}
