//! Safe retries: a request id names one request. A retry of the same request
//! gets what the first call created; reusing the id for another request is
//! refused.

use sea_orm::ConnectionTrait;

use super::{Engine, Error, Result, authorize};
use crate::{
    domain::{access::Caller, execution::Execution, quote},
    store::executions,
};

impl Engine {
    /// The execution an earlier call with `request_id` created, if it was the
    /// same request (`fingerprint`) and `caller` may read it. Read on the
    /// unit's own connection, after its lock, so a concurrent call that
    /// committed first is seen.
    pub(super) async fn earlier(
        &self,
        c: &impl ConnectionTrait,
        request_id: Option<&str>,
        fingerprint: &str,
        caller: &Caller,
    ) -> Result<Option<Execution>> {
        let Some(request_id) = request_id else { return Ok(None) };
        let Some((existing, stored)) = executions::find_by_request_id(c, request_id).await? else {
            return Ok(None);
        };
        let readable = authorize::read(caller, &existing.application).is_ok();
        if stored != fingerprint {
            let by = if readable { format!(" by execution {}", existing.id) } else { String::new() };
            return Err(Error::AlreadyExists(format!(
                "request_id {} was already used{by} for a different request; use a new request id",
                quote(request_id)
            )));
        }
        // The same request: it named the execution it resumes, or the
        // pipeline it starts; one the caller may not read is not found.
        let (what, id) = match &existing.resumed_from {
            Some(origin) => ("execution", origin.execution_id.as_str()),
            None => ("pipeline", existing.pipeline_id.as_str()),
        };
        authorize::read_or_hide(caller, &existing.application, what, id)?;
        Ok(Some(existing))
    }
}
