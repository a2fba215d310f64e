//! A caller's W3C `traceparent` is continued by the server: the span of the
//! call belongs to the caller's trace, as a child of the caller's span. Its
//! own test binary: the tracer and the propagator are process-wide.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};
use reprise::{
    engine::{Engine, Settings},
    proto::{self as pb, pipeline_service_client::PipelineServiceClient},
};
use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};

/// Keeps every exported span.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_header_is_continued_by_the_call_span() {
    let collected = Collected::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(collected.clone()).build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .init();

    let dir = tempfile::tempdir().unwrap();
    let store = reprise::store::connect(&format!("sqlite://{}", dir.path().join("r.db").display())).await.unwrap();
    let engine = Engine::new(store, Settings::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(reprise::server::serve(listener, engine, shutdown.clone()));

    let mut client = PipelineServiceClient::connect(address).await.unwrap();
    let mut request = tonic::Request::new(pb::ListPipelinesRequest::default());
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    request.metadata_mut().insert("traceparent", format!("00-{trace}-{parent}-01").parse().unwrap());
    client.list_pipelines(request).await.expect("the call");

    let mut span = None;
    for _ in 0..50 {
        span = collected.0.lock().unwrap().iter().find(|s| s.name == "rpc").cloned();
        if span.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let span = span.expect("the server exported the call's span");
    assert_eq!(span.span_context.trace_id().to_string(), trace, "the caller's trace");
    assert_eq!(span.parent_span_id.to_string(), parent, "a child of the caller's span");
    shutdown.cancel();
}
