//! tonic handlers: thin adapters that decode a request, call the engine and
//! encode the answer. The only code (with the worker) that sees proto types.

mod access;
mod convert;
mod encoded;
pub mod error;
mod executions;
mod pipelines;
mod streams;
mod workers;

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

use crate::{
    auth::Principal,
    domain::{
        access::Caller,
        limits::{self, Limits, Text},
    },
    engine::{self, Attempt, Engine},
};

pub use access::AccessApi;
pub use convert::canonical_definition;
pub use executions::ExecutionApi;
pub use pipelines::PipelineApi;
pub use streams::{StreamLimits, Streams};
pub use workers::WorkerApi;

/// What every handler needs.
#[derive(Clone)]
pub struct Context {
    pub engine: Engine,
    /// Cancelled on shutdown: long polls and watches return early.
    pub shutdown: CancellationToken,
    /// The open watch streams and their limits.
    pub streams: std::sync::Arc<Streams>,
    /// Executions as GetExecution and WatchExecution send them, encoded once per view.
    pub encoded: std::sync::Arc<encoded::EncodedViews>,
}

impl Context {
    /// Who authenticated the request. The auth interceptor put the
    /// principal there; without one the request did not pass it.
    fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        request
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| error::unauthenticated("unauthenticated: the request carried no identity"))
    }

    /// The caller of a request, with its grants.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let principal = self.principal(request)?;
        // The subject is stored (who triggered what) and looked up: one no
        // column can hold, or of any length, is not a usable identity.
        if let Err(v) = limits::text("subject", &principal.subject, self.limits().max_subject_bytes, Text::Name, true) {
            return Err(error::unauthenticated(&format!(
                "unauthenticated: the identity's subject {} is not usable: {}",
                limits::quote(&principal.subject),
                v.description
            )));
        }
        if principal.unrestricted {
            return Ok(Caller::unrestricted(&principal.subject));
        }
        self.engine.caller(&principal.subject).await.map_err(error::to_status)
    }

    fn limits(&self) -> &Limits {
        &self.engine.settings().limits
    }

    /// [`detached`] for a change `caller` attempts: a refusal for want of
    /// permission is written to the audit trail (`attempt` says what and on
    /// what) before the caller hears of it.
    async fn attempt<T, F>(&self, caller: &Caller, attempt: Attempt, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: Future<Output = engine::Result<T>> + Send + 'static,
    {
        let (engine, caller) = (self.engine.clone(), caller.clone());
        detached(async move {
            let result = work.await;
            if let Err(e) = &result
                && let Some(why) = e.denial()
                && let Err(failed) = engine.record_denied(&caller, attempt, why).await
            {
                tracing::warn!(error = %failed, "could not record a refused attempt in the audit trail");
            }
            result
        })
        .await
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
            Err(error::internal("the server failed while handling the request; it was not applied"))
        }
    }
}
