//! tonic handlers: thin adapters that decode a request, call the engine and
//! encode the answer. The only code (with the worker) that sees proto types.

mod access;
mod convert;
mod error;
mod executions;
mod pipelines;
mod workers;

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

use crate::{
    auth::Principal,
    domain::access::Caller,
    engine::{self, Engine},
};

pub use access::AccessApi;
pub use executions::ExecutionApi;
pub use pipelines::PipelineApi;
pub use workers::WorkerApi;

/// What every handler needs.
#[derive(Clone)]
pub struct Context {
    pub engine: Engine,
    /// Cancelled on shutdown: long polls and watches return early.
    pub shutdown: CancellationToken,
}

impl Context {
    /// The caller of a request, with its grants. The auth interceptor put
    /// the principal there; without one the request did not pass it.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let principal = request
            .extensions()
            .get::<Principal>()
            .ok_or_else(|| Status::unauthenticated("unauthenticated: the request carried no identity"))?;
        if principal.unrestricted {
            return Ok(Caller::unrestricted(&principal.subject));
        }
        self.engine.caller(&principal.subject).await.map_err(error::to_status)
    }
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
