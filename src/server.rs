//! Serving: the gRPC services plus health and reflection on a pre-bound
//! listener, the timer loop beside them, and the drain order on shutdown.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::{ServerTlsConfig, server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    api::{AccessApi, Context, ExecutionApi, PipelineApi, StreamLimits, Streams, WorkerApi},
    auth::Authenticator,
    engine::Engine,
    metrics::{self, RpcMetricsLayer},
    proto::{
        access_service_server::AccessServiceServer, execution_service_server::ExecutionServiceServer,
        pipeline_service_server::PipelineServiceServer, worker_service_server::WorkerServiceServer,
    },
    scheduler,
};

/// The health name that reports the process alive, not the database.
pub const LIVENESS: &str = "liveness";

/// Health names that go NOT_SERVING while the database is unreachable.
const SERVICES: [&str; 5] = [
    "",
    "reprise.v1.PipelineService",
    "reprise.v1.ExecutionService",
    "reprise.v1.WorkerService",
    "reprise.v1.AccessService",
];

/// How callers reach and prove who they are.
#[derive(Clone)]
pub struct ServeOptions {
    pub auth: Authenticator,
    pub tls: Option<ServerTlsConfig>,
    /// Sample gauges (executions by status, tasks waiting) this often for
    /// the metrics endpoint; None when metrics are off.
    pub metrics_sampling: Option<Duration>,
    /// Bounds on watch streams.
    pub streams: StreamLimits,
    /// Concurrent HTTP/2 streams (calls) one connection may have open.
    pub max_concurrent_streams: u32,
    /// The console and the API over HTTP: CORS origins, console on or off.
    pub web: crate::web::WebArgs,
}

impl Default for ServeOptions {
    /// No authentication, no TLS: development and tests.
    fn default() -> Self {
        ServeOptions {
            auth: Authenticator::Disabled,
            tls: None,
            metrics_sampling: None,
            streams: StreamLimits::default(),
            max_concurrent_streams: 1000,
            web: crate::web::WebArgs::default(),
        }
    }
}

/// Serves without authentication or TLS (development and tests).
pub async fn serve(listener: TcpListener, engine: Engine, shutdown: CancellationToken) -> anyhow::Result<()> {
    serve_with(listener, engine, ServeOptions::default(), shutdown).await
}

/// Serves until `shutdown` is cancelled, then drains: health goes
/// NOT_SERVING, long polls and watches return, the timer loop stops,
/// in-flight calls finish. Health and reflection stay open to everyone;
/// our services need an authenticated caller.
pub async fn serve_with(
    listener: TcpListener,
    engine: Engine,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
    // For liveness probes: SERVING while the process runs, whatever the database.
    health.set_service_status(LIVENESS, ServingStatus::Serving).await;

    let tasks = TaskTracker::new();
    tasks.spawn(scheduler::run(engine.clone(), shutdown.clone()));
    tasks.spawn(watch_database(engine.clone(), health.clone(), shutdown.clone()));
    tasks.spawn(scheduler::relay(engine.clone(), shutdown.clone()));
    tasks.spawn(scheduler::retention(engine.clone(), shutdown.clone()));
    tasks.spawn(crate::memory::trim_periodically(shutdown.clone()));
    if let Some(every) = options.metrics_sampling {
        tasks.spawn(metrics::sample(engine.clone(), every, shutdown.clone()));
    }

    // Both reflection versions: grpcurl 1.8 speaks only v1alpha. The rich
    // error types are registered so grpcurl shows details, not raw bytes.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let streams = std::sync::Arc::new(Streams::new(options.streams));
    let context = Context { engine, shutdown: shutdown.clone(), streams, encoded: Default::default() };

    let web = crate::web::WebLayer::new(&options.web)?;
    let cors = crate::web::cors(&options.web)?;
    let scheme = if options.tls.is_some() { "https" } else { "http" };
    tracing::info!(%address, "serving gRPC, grpc-web and Connect JSON (HTTP/1.1 and HTTP/2)");
    if !options.web.no_console {
        tracing::info!("console: {scheme}://{address}/");
    }
    let drained = {
        let health = health.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tracing::info!("shutting down: refusing new work, finishing calls in flight");
            set_health(&health, ServingStatus::NotServing).await;
            health.set_service_status(LIVENESS, ServingStatus::NotServing).await;
        }
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = options.tls {
        builder = builder.tls_config(tls)?;
    }
    let auth = options.auth.interceptor();
    builder
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(Some(options.max_concurrent_streams))
        .trace_fn(|request| {
            let span = tracing::info_span!("rpc", method = %request.uri().path());
            // Continue the caller's trace (W3C traceparent); without tracing this does nothing.
            let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(
                &span,
                crate::telemetry::parent_of(request.headers()),
            );
            span
        })
        .layer(tower::util::option_layer(cors))
        .layer(web)
        .layer(RpcMetricsLayer)
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(PipelineServiceServer::with_interceptor(PipelineApi(context.clone()), auth.clone()))
        .add_service(ExecutionServiceServer::with_interceptor(ExecutionApi(context.clone()), auth.clone()))
        .add_service(WorkerServiceServer::with_interceptor(WorkerApi(context.clone()), auth.clone()))
        .add_service(AccessServiceServer::with_interceptor(AccessApi(context), auth))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), drained)
        .await?;
    tasks.close();
    tasks.wait().await;
    tracing::info!("server stopped");
    Ok(())
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// Readiness follows the store: NOT_SERVING while the database cannot be
/// reached or cannot commit (a full disk), SERVING again as soon as a probe
/// commits. While it is down the probe runs every second, and calls fail at
/// once instead of waiting for a connection.
///
/// While the store is ready the probe runs only when there is cause to
/// doubt it, so that an idle server sends no statement: a call found the
/// database unreachable or full (the probe then runs until one commits), or
/// on PostgreSQL the listening connection that carries other replicas'
/// announcements broke, as it does when the server goes away or drops this
/// process.
/// SQLite is a file in this process: it fails only when written, and a
/// write that fails marks it.
async fn watch_database(engine: Engine, health: HealthReporter, shutdown: CancellationToken) {
    let store = engine.store().clone();
    let mut serving = true;
    // A probe that only waits (behind a burst of writers on SQLite's one
    // writer, on a loaded machine) is not an outage: the store is marked
    // down after two slow probes in a row, not one.
    let mut slow = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
        let channel_lost = store.is_postgres() && !engine.events().is_relayed();
        if store.is_ready() && !store.is_doubted() && !channel_lost && slow == 0 {
            continue;
        }
        let probed = tokio::time::timeout(Duration::from_secs(5), store.probe()).await;
        // On SQLite a probe that waited behind a writer still at work was
        // busy, not down: it does not count.
        slow = match probed {
            Err(_) if store.writer_is_busy() => slow,
            Err(_) => slow + 1,
            Ok(_) => 0,
        };
        match probed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "health probe failed");
                if !matches!(e, crate::store::StoreError::Unavailable(ref u) if u.cause == crate::store::Cause::Full) {
                    store.set_up(false);
                }
            }
            Err(_) if slow >= 2 => store.set_up(false),
            Err(_) => tracing::debug!("health probe slower than 5 s; down if the next one is too"),
        }
        let ready = store.is_ready();
        if ready != serving {
            serving = ready;
            let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
            set_health(&health, status).await;
        }
    }
}
