//! tonic handlers: thin adapters that decode a request, call the engine and
//! encode the answer. The only code (with the worker) that sees proto types.

mod convert;
mod error;
mod executions;
mod pipelines;
mod workers;

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::engine::{self, Engine};

pub use executions::ExecutionApi;
pub use pipelines::PipelineApi;
pub use workers::WorkerApi;

/// Until authentication arrives every caller is this one.
const ANONYMOUS: &str = "anonymous";

/// What every handler needs.
#[derive(Clone)]
pub struct Context {
    pub engine: Engine,
    /// Cancelled on shutdown: long polls and watches return early.
    pub shutdown: CancellationToken,
}

/// Runs a state-changing use case to completion even if the caller goes
/// away: a client deadline drops the handler future, and a transaction cut
/// off mid-way only rolls back, so the answer the caller never saw would
/// otherwise decide nothing. Detached, the change commits fully or not at all.
async fn detached<T, F>(work: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: Future<Output = engine::Result<T>> + Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(result) => result.map_err(error::to_status),
        Err(e) => {
            tracing::error!(error = %e, "use case panicked");
            Err(Status::internal("the server failed while handling the request; it was not applied"))
        }
    }
}
