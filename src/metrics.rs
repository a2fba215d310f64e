//! Prometheus metrics: RPCs by method and code with latencies (a tower layer
//! on the server), stage transitions, lease expiries and resumes (counted
//! where they happen), executions by status and tasks waiting per queue
//! (sampled from the database, so every replica reports the shared truth),
//! and on SQLite the COMMITs of its one writer and the units they carried.

use std::{
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use metrics_exporter_prometheus::PrometheusBuilder;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;
use tower::{Layer, Service};

use crate::{domain::status::ExecutionStatus, engine::Engine, store};

pub const RPC_REQUESTS: &str = "reprise_rpc_requests_total";
pub const RPC_DURATION: &str = "reprise_rpc_duration_seconds";
pub const STAGE_TRANSITION: &str = "reprise_stage_transition_seconds";
pub const LEASE_EXPIRIES: &str = "reprise_lease_expiries_total";
pub const RESUMES: &str = "reprise_resumes_total";
pub const RETENTION_DELETED: &str = "reprise_retention_rows_deleted_total";
pub const EXECUTIONS: &str = "reprise_executions";
pub const CLAIMS: &str = "reprise_task_claims_total";
pub const HANDED_AT_DISPATCH: &str = "reprise_tasks_handed_at_dispatch_total";
pub const TASKS_WAITING: &str = "reprise_tasks_waiting";
pub const SQLITE_COMMITS: &str = "reprise_sqlite_commits_total";
pub const SQLITE_UNITS: &str = "reprise_sqlite_units_committed_total";
pub const REPORTS_AT_ONCE: &str = "reprise_reports_sent_at_once_total";

/// Serves `/metrics` on `address` from now on.
pub fn install(address: SocketAddr) -> anyhow::Result<()> {
    let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
    PrometheusBuilder::new()
        .with_http_listener(address)
        .set_buckets(&buckets)?
        .install()
        .map_err(|e| anyhow::anyhow!("metrics endpoint on {address}: {e}"))?;
    metrics::describe_counter!(RPC_REQUESTS, "gRPC calls by method and status code");
    metrics::describe_histogram!(
        RPC_DURATION,
        metrics::Unit::Seconds,
        "gRPC call duration to its final status (a stream's whole life), by method"
    );
    metrics::describe_histogram!(
        STAGE_TRANSITION,
        metrics::Unit::Seconds,
        "duration of the transaction that ends a stage and dispatches the next"
    );
    metrics::describe_counter!(LEASE_EXPIRIES, "task leases that expired (worker vanished)");
    metrics::describe_counter!(RESUMES, "executions resumed");
    metrics::describe_counter!(
        RETENTION_DELETED,
        "rows retention deleted, by table (executions, stages, tasks, audit_events)"
    );
    metrics::describe_counter!(CLAIMS, "task claims by whether they found a task (found=true|false)");
    metrics::describe_counter!(
        HANDED_AT_DISPATCH,
        "tasks leased by the transaction that queued them, to a parked worker or to a worker whose report it committed (no claim needed)"
    );
    metrics::describe_gauge!(
        EXECUTIONS,
        "executions not yet final, by status (QUEUED, RUNNING, PAUSED); read through an index of active executions only"
    );
    metrics::describe_gauge!(TASKS_WAITING, "tasks queued and not yet leased, by task queue");
    metrics::describe_counter!(SQLITE_COMMITS, "COMMITs on SQLite's one writer connection");
    metrics::describe_counter!(
        SQLITE_UNITS,
        "units of work those COMMITs carried (units that waited for the writer are committed together; \
         units ÷ commits near 1 means writes do not queue)"
    );
    metrics::describe_counter!(
        REPORTS_AT_ONCE,
        "units of task reports sent to PostgreSQL as one self-committing statement, by outcome (committed, or \
         stale: the execution had changed since this replica last wrote it, nothing was written, and the reports \
         went the usual way)"
    );
    tracing::info!(%address, "serving Prometheus metrics on /metrics");
    Ok(())
}

/// Samples executions by status and waiting tasks per queue until shutdown.
/// Only commits change them: a sample is skipped (no statement) when this
/// replica has learnt of no change since the last one, unless other
/// replicas' announcements are not arriving.
pub async fn sample(engine: Engine, every: Duration, shutdown: CancellationToken) {
    let mut seen_queues: Vec<String> = Vec::new();
    let mut sampled_at = None;
    loop {
        let stamp = engine.events().stamp();
        let unchanged = sampled_at == Some(stamp) && engine.events().is_relayed();
        if unchanged {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            continue;
        }
        sampled_at = Some(stamp);
        match store::executions::count_active(&engine.store().reader()).await {
            Ok(counts) => {
                for status in [ExecutionStatus::Queued, ExecutionStatus::Running, ExecutionStatus::Paused] {
                    let n = counts.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
                    metrics::gauge!(EXECUTIONS, "status" => status.as_str()).set(n as f64);
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not sample executions"),
        }
        match store::tasks::waiting_by_queue(&engine.store().reader()).await {
            Ok(waiting) => {
                for queue in &seen_queues {
                    if !waiting.iter().any(|(q, _)| q == queue) {
                        metrics::gauge!(TASKS_WAITING, "queue" => queue.clone()).set(0.0);
                    }
                }
                seen_queues = waiting.iter().map(|(q, _)| q.clone()).collect();
                for (queue, n) in waiting {
                    metrics::gauge!(TASKS_WAITING, "queue" => queue).set(n as f64);
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not sample task queues"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Counts and times every gRPC call.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, RB> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            match response.await {
                // An error answer is "trailers-only": its grpc-status is in
                // the headers. Otherwise it comes in the trailers at the end
                // of the body (a stream's, after its last message).
                Ok(response) => {
                    let code = status_code(response.headers());
                    let call = Call { method, started, code };
                    Ok(response.map(|inner| MeteredBody { inner, call: Some(call) }))
                }
                Err(e) => {
                    Call { method, started, code: Some("TRANSPORT_ERROR") }.record();
                    Err(e)
                }
            }
        })
    }
}

/// One call being answered; recorded once, when its body ends or is dropped.
struct Call {
    method: String,
    started: Instant,
    /// Known once headers or trailers carried a grpc-status.
    code: Option<&'static str>,
}

impl Call {
    fn record(self) {
        // A body dropped before its trailers: the client went away mid-call.
        let code = self.code.unwrap_or("CANCELLED");
        metrics::counter!(RPC_REQUESTS, "method" => self.method.clone(), "code" => code).increment(1);
        metrics::histogram!(RPC_DURATION, "method" => self.method).record(self.started.elapsed().as_secs_f64());
    }
}

/// The `method` label of a call: its path when it names a method this
/// server has, else "other". Labels are kept forever by the recorder, so a
/// path a caller makes up must not become one.
fn method_label(path: &str) -> String {
    static KNOWN: std::sync::OnceLock<std::collections::HashSet<String>> = std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        let mut known: std::collections::HashSet<String> = [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        if let Ok(pool) = prost_reflect::DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET) {
            for service in pool.services() {
                known.extend(service.methods().map(|m| format!("/{}/{}", service.full_name(), m.name())));
            }
        }
        known
    });
    if known.contains(path) { path.to_owned() } else { "other".to_owned() }
}

fn status_code(headers: &http::HeaderMap) -> Option<&'static str> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(code_name(tonic::Code::from_i32(code)))
}

/// A response body that reports its call's final status and duration.
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> http_body::Body for MeteredBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(trailers), Some(call)) = (frame.trailers_ref(), self.call.as_mut()) {
                    call.code = status_code(trailers).or(call.code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.as_mut() {
                    call.code = call.code.or(Some("TRANSPORT_ERROR"));
                }
            }
            Poll::Ready(None) => {
                if let Some(mut call) = self.call.take() {
                    call.code = call.code.or(Some("UNKNOWN")); // ended without a grpc-status
                    call.record();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.record();
        }
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
