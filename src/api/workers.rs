use std::time::Duration;

use tonic::{Request, Response, Status};

use super::{
    Context, convert, detached,
    error::{invalid, to_status},
};
use crate::{
    domain::limits::{truncate_marked, without_nul},
    engine::{Completion, NextTask, Outcome},
    proto::{self as pb, worker_service_server::WorkerService},
};

const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const MAX_WAIT: Duration = Duration::from_secs(60);

pub struct WorkerApi(pub Context);

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn poll_task(&self, request: Request<pb::PollTaskRequest>) -> Result<Response<pb::PollTaskResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let limits = self.0.limits();
        let queue = convert::required_name("task_queue", r.task_queue, limits)?;
        let wait = match r.wait {
            None => DEFAULT_WAIT,
            Some(d) => convert::std_duration(d).ok_or_else(|| invalid("wait", "must not be negative"))?,
        };
        let wait = if wait.is_zero() { DEFAULT_WAIT } else { wait.min(MAX_WAIT) };
        let worker = worker_id(r.worker_id, limits)?;
        // The claim itself is one statement; if the caller goes away right
        // after it, the lease simply expires and the task is offered again.
        let task = tokio::select! {
            task = self.0.engine.poll(&caller, &queue, &worker, wait) => task.map_err(to_status)?,
            _ = self.0.shutdown.cancelled() => None,
        };
        Ok(Response::new(pb::PollTaskResponse { task: task.map(convert::task) }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let task_id = convert::id("task_id", &r.task_id)?;
        let token = convert::id("lease_token", &r.lease_token)?;
        let limits = self.0.limits();
        if r.output.len() > limits.max_output_bytes {
            return Err(invalid(
                "output",
                format!("at most {} bytes per heartbeat, got {}", limits.max_output_bytes, r.output.len()),
            ));
        }
        // Cut to what is kept by the engine, once the secrets in it are masked.
        let output = without_nul(r.output);
        let offset = output_offset(r.output_offset)?;
        let beat = self.0.engine.heartbeat(&caller, &task_id, &token, &output, offset).await.map_err(to_status)?;
        Ok(Response::new(pb::HeartbeatResponse {
            cancelled: beat.cancelled,
            lease_expire_time: Some(convert::timestamp(beat.lease_expires_at)),
        }))
    }

    /// Output and message come from a process: they are kept, not refused,
    /// when they hold NUL (replaced by U+FFFD) or are long (the output's
    /// tail is kept, the message is cut with a marker). Only an output
    /// beyond what any worker should send is refused.
    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::CompleteTaskResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let limits = self.0.limits();
        let outcome = match pb::TaskOutcome::try_from(r.outcome) {
            Ok(pb::TaskOutcome::Succeeded) => Outcome::Succeeded,
            Ok(pb::TaskOutcome::Failed) => Outcome::Failed,
            _ => return Err(invalid("outcome", "set TASK_OUTCOME_SUCCEEDED or TASK_OUTCOME_FAILED")),
        };
        if r.output.len() > limits.max_output_bytes {
            return Err(invalid(
                "output",
                format!(
                    "at most {} bytes, got {}; send the tail (the server keeps the last {} bytes)",
                    limits.max_output_bytes,
                    r.output.len(),
                    limits.kept_output_bytes
                ),
            ));
        }
        let output_offset = output_offset(r.output_offset)?;
        let worker = worker_id(r.worker_id, limits)?;
        let next =
            convert::name("next_task_queue", r.next_task_queue, limits, false)?.map(|queue| NextTask { queue, worker });
        let completion = Completion {
            task_id: convert::id("task_id", &r.task_id)?,
            lease_token: convert::id("lease_token", &r.lease_token)?,
            outcome,
            exit_code: Some(r.exit_code),
            // Cut by the engine once the secrets in them are masked (a cut
            // must not leave a part of one); the message only to a size
            // that bounds the masking's work.
            output: without_nul(r.output),
            message: without_nul(truncate_marked(&r.message, limits.max_output_bytes)),
            output_offset,
        };
        let engine = self.0.engine.clone();
        let next_task = detached(async move { engine.complete(&caller, completion, next.as_ref()).await }).await?;
        Ok(Response::new(pb::CompleteTaskResponse { next_task: next_task.map(convert::task) }))
    }
}

/// Who asks for tasks, for logs and the execution record.
fn worker_id(id: String, limits: &crate::domain::limits::Limits) -> Result<String, Status> {
    Ok(convert::token("worker_id", id, limits.max_worker_id_bytes)?.unwrap_or_else(|| "unnamed".to_owned()))
}

/// Where a piece of output begins, as the worker counts: not negative.
fn output_offset(offset: Option<i64>) -> Result<Option<i64>, Status> {
    match offset {
        Some(offset) if offset < 0 => Err(invalid(
            "output_offset",
            format!("characters already sent cannot be negative, got {offset}; leave it unset or count from 0"),
        )),
        offset => Ok(offset),
    }
}
