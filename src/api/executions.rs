use prost::Message as _;
use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{
    Context, convert,
    error::{invalid, to_status, violations},
};
use crate::{
    domain::{
        access::{Action, Caller},
        inputs,
        resume::StageRef,
    },
    engine::{Attempt, Control, Decision, Error, NotAllowed, ResumeRequest, StartRequest},
    proto::{self as pb, execution_service_server::ExecutionService},
    store::executions::ListFilter,
};

pub struct ExecutionApi(pub Context);

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchExecutionResponse, Status>> + Send>>;
type OutputStream = Pin<Box<dyn Stream<Item = Result<pb::WatchTaskOutputResponse, Status>> + Send>>;

impl ExecutionApi {
    fn decision(
        &self,
        execution_id: String,
        stage_name: String,
        comment: String,
        caller: Caller,
    ) -> Result<Decision, Status> {
        let limits = self.0.limits();
        Ok(Decision {
            execution_id: convert::id("execution_id", &execution_id)?,
            stage_name: convert::name("stage_name", stage_name, limits, false)?,
            comment: convert::text("comment", comment, limits.max_comment_bytes)?,
            caller,
        })
    }
}

#[tonic::async_trait]
impl ExecutionService for ExecutionApi {
    async fn start_execution(
        &self,
        request: Request<pb::StartExecutionRequest>,
    ) -> Result<Response<pb::StartExecutionResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let limits = self.0.limits();
        let pipeline_id = convert::id("pipeline_id", &r.pipeline_id)?;
        if r.pipeline_version < 0 {
            return Err(invalid("pipeline_version", "must not be negative; 0 means the latest"));
        }
        let (variables, artifacts) = (r.variables, r.artifacts);
        inputs::check_variables(&variables, limits).map_err(violations)?;
        inputs::check_artifacts(&artifacts, limits).map_err(violations)?;
        let start = StartRequest {
            pipeline_id: pipeline_id.clone(),
            pipeline_version: (r.pipeline_version > 0).then_some(r.pipeline_version),
            variables,
            artifacts,
            request_id: convert::token("request_id", r.request_id, limits.max_request_id_bytes)?,
            caller: caller.clone(),
        };
        let engine = self.0.engine.clone();
        let attempt = Attempt::new("execution.start.denied").pipeline(&pipeline_id);
        let d = self.0.attempt(&caller, attempt, async move { engine.start(start).await }).await?;
        Ok(Response::new(pb::StartExecutionResponse { execution: Some(convert::execution_detail(&d)) }))
    }

    async fn get_execution(
        &self,
        request: Request<pb::GetExecutionRequest>,
    ) -> Result<Response<pb::GetExecutionResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let id = convert::id("execution_id", &r.execution_id)?;
        let view = convert::OutputView::of(r.view)?;
        let engine = &self.0.engine;
        let d = engine.execution_for(&caller, &id).await.map_err(to_status)?;
        let execution = self.0.encoded.execution(&id, &d, view, engine.resume_points(&d));
        let allowed_actions = engine.allowed_controls(&caller, &d).into_iter().map(allowance).collect();
        Ok(Response::new(pb::GetExecutionResponse {
            execution: None,
            allowed_actions,
            encoded_execution: Some(execution),
        }))
    }

    async fn list_executions(
        &self,
        request: Request<pb::ListExecutionsRequest>,
    ) -> Result<Response<pb::ListExecutionsResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let limits = self.0.limits();
        let filter = ListFilter {
            application: convert::name("application", r.application, limits, false)?,
            pipeline_id: convert::optional_id("pipeline_id", &r.pipeline_id)?,
            status: convert::status_filter(r.status)?,
            readable: None,
        };
        let size = convert::page_size(r.page_size)?;
        let before = convert::page_token_id(&r.page_token, limits)?;
        let page = self.0.engine.list_executions(&caller, &filter, before.as_deref(), size).await.map_err(to_status)?;
        Ok(Response::new(pb::ListExecutionsResponse {
            executions: page.items.iter().map(convert::execution).collect(),
            next_page_token: convert::next_page_token(page.next),
        }))
    }

    async fn abort(&self, request: Request<pb::AbortRequest>) -> Result<Response<pb::AbortResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let id = convert::id("execution_id", &r.execution_id)?;
        let reason = convert::text("reason", r.reason, self.0.limits().max_reason_bytes)?;
        let (engine, who) = (self.0.engine.clone(), caller.clone());
        let attempt = Attempt::new("execution.abort.denied").execution(&id);
        let d = self.0.attempt(&caller, attempt, async move { engine.abort(&id, &reason, &who).await }).await?;
        Ok(Response::new(pb::AbortResponse { execution: Some(convert::execution_detail(&d)) }))
    }

    async fn pause(&self, request: Request<pb::PauseRequest>) -> Result<Response<pb::PauseResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let id = convert::id("execution_id", &request.into_inner().execution_id)?;
        let (engine, who) = (self.0.engine.clone(), caller.clone());
        let attempt = Attempt::new("execution.pause.denied").execution(&id);
        let d = self.0.attempt(&caller, attempt, async move { engine.pause(&id, &who).await }).await?;
        Ok(Response::new(pb::PauseResponse { execution: Some(convert::execution_detail(&d)) }))
    }

    async fn r#continue(
        &self,
        request: Request<pb::ContinueRequest>,
    ) -> Result<Response<pb::ContinueResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let id = convert::id("execution_id", &request.into_inner().execution_id)?;
        let (engine, who) = (self.0.engine.clone(), caller.clone());
        let attempt = Attempt::new("execution.continue.denied").execution(&id);
        let d = self.0.attempt(&caller, attempt, async move { engine.continue_execution(&id, &who).await }).await?;
        Ok(Response::new(pb::ContinueResponse { execution: Some(convert::execution_detail(&d)) }))
    }

    async fn approve(&self, request: Request<pb::ApproveRequest>) -> Result<Response<pb::ApproveResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let decision = self.decision(r.execution_id, r.stage_name, r.comment, caller.clone())?;
        let attempt = Attempt::new("execution.approve.denied")
            .execution(&decision.execution_id)
            .detail("stage", decision.stage_name.clone());
        let engine = self.0.engine.clone();
        let d = self.0.attempt(&caller, attempt, async move { engine.approve(decision).await }).await?;
        Ok(Response::new(pb::ApproveResponse { execution: Some(convert::execution_detail(&d)) }))
    }

    async fn reject(&self, request: Request<pb::RejectRequest>) -> Result<Response<pb::RejectResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let decision = self.decision(r.execution_id, r.stage_name, r.comment, caller.clone())?;
        let attempt = Attempt::new("execution.reject.denied")
            .execution(&decision.execution_id)
            .detail("stage", decision.stage_name.clone());
        let engine = self.0.engine.clone();
        let d = self.0.attempt(&caller, attempt, async move { engine.reject(decision).await }).await?;
        Ok(Response::new(pb::RejectResponse { execution: Some(convert::execution_detail(&d)) }))
    }

    async fn resume(&self, request: Request<pb::ResumeRequest>) -> Result<Response<pb::ResumeResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let limits = self.0.limits();
        let execution_id = convert::id("execution_id", &r.execution_id)?;
        let stage = match r.from_stage {
            Some(pb::resume_request::FromStage::StageName(name)) if !name.is_empty() => {
                StageRef::Name(convert::required_name("stage_name", name, limits)?)
            }
            Some(pb::resume_request::FromStage::StageIndex(i)) => StageRef::Index(i as i64),
            _ => return Err(invalid("stage_name", "set stage_name or stage_index: the stage to resume from")),
        };
        let unchangeable = [("variables", !r.variables.is_empty()), ("artifacts", !r.artifacts.is_empty())];
        if let Some((field, _)) = unchangeable.iter().find(|(_, set)| *set) {
            return Err(invalid(
                field,
                "a resume runs with the original inputs and pinned pipeline version and cannot change them; leave it empty, or start a new execution",
            ));
        }
        let reason = convert::text("reason", r.reason, limits.max_reason_bytes)?;
        let attempt = Attempt::new("execution.resume.denied").execution(&execution_id).detail(
            "stage",
            match &stage {
                StageRef::Name(n) => serde_json::json!(n),
                StageRef::Index(i) => serde_json::json!(i),
            },
        );
        let resume = ResumeRequest {
            execution_id,
            stage,
            request_id: convert::token("request_id", r.request_id, limits.max_request_id_bytes)?,
            validate_only: r.validate_only,
            reason,
            pipeline_version: (r.pipeline_version != 0).then_some(r.pipeline_version),
            caller: caller.clone(),
        };
        let engine = self.0.engine.clone();
        let outcome = self.0.attempt(&caller, attempt, async move { engine.resume(resume).await }).await?;
        Ok(Response::new(convert::resume_outcome(outcome)))
    }

    async fn list_history(
        &self,
        request: Request<pb::ListHistoryRequest>,
    ) -> Result<Response<pb::ListHistoryResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let id = convert::id("execution_id", &r.execution_id)?;
        let size = convert::page_size(r.page_size)?;
        let before = match convert::page_token(&r.page_token, self.0.limits())? {
            None => None,
            Some(k) => Some(k.parse::<i32>().map_err(|_| invalid("page_token", "not a token this server issued"))?),
        };
        let (chain_id, page) = self.0.engine.history(&caller, &id, before, size).await.map_err(to_status)?;
        Ok(Response::new(pb::ListHistoryResponse {
            entries: page.items.iter().map(convert::history_entry).collect(),
            next_page_token: convert::next_page_token(page.next),
            chain_id,
        }))
    }

    async fn list_workflows(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let id = convert::id("execution_id", &r.execution_id)?;
        let view = convert::OutputView::of(r.view)?;
        let stage = match r.stage_index {
            None => None,
            Some(i) => Some(usize::try_from(i).map_err(|_| invalid("stage_index", "must not be negative"))?),
        };
        let size = match r.page_size {
            0 => 100,
            s if s < 0 => return Err(invalid("page_size", "must not be negative")),
            s => s.min(1000) as u64,
        };
        let after = match convert::page_token(&r.page_token, self.0.limits())? {
            None => None,
            Some(key) => Some(
                key.split_once('.')
                    .and_then(|(s, w)| Some((s.parse().ok()?, w.parse().ok()?)))
                    .ok_or_else(|| invalid("page_token", "not a token this server issued"))?,
            ),
        };
        let page = self.0.engine.workflows(&caller, &id, stage, after, size).await.map_err(to_status)?;
        // A FULL page of big outputs ends early rather than pass what a
        // default client accepts; the token continues after the last one sent.
        let mut workflows = Vec::with_capacity(page.items.len());
        let mut bytes = 0;
        let mut next = page.next;
        for (stage_name, w) in &page.items {
            let item = pb::StageWorkflow {
                stage_index: w.stage_index as i32,
                stage_name: stage_name.clone(),
                workflow: Some(convert::workflow_view(w, view)),
            };
            bytes += item.encoded_len() + 8;
            if bytes > convert::RESPONSE_BUDGET && !workflows.is_empty() {
                let sent = &page.items[workflows.len() - 1].1;
                next = Some(format!("{}.{}", sent.stage_index, sent.workflow_index));
                break;
            }
            workflows.push(item);
        }
        Ok(Response::new(pb::ListWorkflowsResponse { workflows, next_page_token: convert::next_page_token(next) }))
    }

    async fn get_task_output(
        &self,
        request: Request<pb::GetTaskOutputRequest>,
    ) -> Result<Response<pb::GetTaskOutputResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let task_id = convert::id("task_id", &r.task_id)?;
        if r.offset < 0 || r.max_chars < 0 {
            return Err(invalid(if r.offset < 0 { "offset" } else { "max_chars" }, "must not be negative"));
        }
        let max = if r.max_chars == 0 { 16 * 1024 } else { r.max_chars as usize };
        let page = self.0.engine.task_output(&caller, &task_id, r.offset, max).await.map_err(to_status)?;
        Ok(Response::new(pb::GetTaskOutputResponse {
            output: page.output,
            first_offset: page.first_offset,
            next_offset: page.next_offset,
            total_chars: page.total_chars,
            complete: page.complete,
            status: convert::workflow_status(page.status) as i32,
        }))
    }

    type WatchTaskOutputStream = OutputStream;

    async fn watch_task_output(
        &self,
        request: Request<pb::WatchTaskOutputRequest>,
    ) -> Result<Response<Self::WatchTaskOutputStream>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let task_id = convert::id("task_id", &r.task_id)?;
        if r.offset < 0 {
            return Err(invalid("offset", "must not be negative"));
        }
        let permit = self.0.streams.open(&caller.subject)?;
        let lifetime = self.0.streams.limits.max_lifetime;
        let Context { engine, shutdown, .. } = self.0.clone();
        let mut changes = engine.events().watch_output(&task_id);
        let mut page =
            engine.task_output(&caller, &task_id, r.offset, crate::engine::MAX_PAGE_CHARS).await.map_err(to_status)?;
        let ends = tokio::time::Instant::now() + lifetime;
        let stream = async_stream::try_stream! {
            let _permit = permit;
            loop {
                if !page.output.is_empty() || page.complete {
                    yield pb::WatchTaskOutputResponse {
                        output: std::mem::take(&mut page.output),
                        offset: page.first_offset,
                        status: convert::workflow_status(page.status) as i32,
                    };
                }
                if page.complete || shutdown.is_cancelled() {
                    break;
                }
                let more = page.next_offset < page.total_chars;
                if !more {
                    let relayed = engine.events().is_relayed();
                    let recheck = engine.settings().recheck;
                    let woken = tokio::select! {
                        changed = changes.changed() => if changed.is_err() { Woken::Gone } else { Woken::Changed },
                        _ = tokio::time::sleep(recheck), if !relayed => Woken::Changed,
                        _ = tokio::time::sleep_until(ends) => Woken::Lifetime,
                        _ = shutdown.cancelled() => Woken::Gone,
                    };
                    match woken {
                        Woken::Gone => break,
                        Woken::Lifetime => Err(super::error::stream_lifetime(&format!(
                            "the stream reached its maximum lifetime of {} s; reconnect from offset {}",
                            lifetime.as_secs(),
                            page.next_offset
                        )))?,
                        _ => {}
                    }
                }
                let offset = page.next_offset;
                page = engine.task_output(&caller, &task_id, offset, crate::engine::MAX_PAGE_CHARS).await.map_err(to_status)?;
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    type WatchExecutionStream = WatchStream;

    async fn watch_execution(
        &self,
        request: Request<pb::WatchExecutionRequest>,
    ) -> Result<Response<Self::WatchExecutionStream>, Status> {
        let principal = self.0.principal(&request)?;
        let caller = self.0.caller(&request).await?;
        let id = convert::id("execution_id", &request.into_inner().execution_id)?;
        let permit = self.0.streams.open(&caller.subject)?;
        let lifetime = self.0.streams.limits.max_lifetime;
        let Context { engine, shutdown, encoded, .. } = self.0.clone();
        // Fail fast on an unknown id instead of opening an empty stream.
        let (mut watch, mut detail) = engine.watch(&caller, &id).await.map_err(to_status)?;
        let mut access = engine.events().access_changes();
        let ends = tokio::time::Instant::now() + lifetime;
        let expires = principal.expires_at.map(|exp| {
            let left = exp - crate::engine::now() / 1000;
            tokio::time::Instant::now() + std::time::Duration::from_secs(left.max(0) as u64)
        });
        let stream = async_stream::try_stream! {
            let _permit = permit;
            let mut last = None;
            loop {
                let snapshot = encoded.execution(&id, &detail, convert::OutputView::None, Vec::new());
                if last.as_ref() != Some(&snapshot) {
                    yield pb::WatchExecutionResponse { execution: None, encoded_execution: Some(snapshot.clone()) };
                    last = Some(snapshot);
                }
                if detail.execution.status.is_final() || shutdown.is_cancelled() {
                    break;
                }
                // Woken by the commit that changes it (here or, announced,
                // on another replica), by a change to access anywhere, by
                // the credential's expiry or the stream's end of life; a
                // recheck only while announcements from other replicas do
                // not arrive.
                let recheck = engine.settings().recheck;
                let relayed = engine.events().is_relayed();
                let woken = tokio::select! {
                    changed = watch.changes.changed() => if changed.is_err() { Woken::Gone } else { Woken::Changed },
                    _ = access.changed() => Woken::Access,
                    _ = tokio::time::sleep(recheck), if !relayed => Woken::Changed,
                    _ = sleep_until(expires) => Woken::Expired,
                    _ = tokio::time::sleep_until(ends) => Woken::Lifetime,
                    _ = shutdown.cancelled() => Woken::Gone,
                };
                match woken {
                    Woken::Gone => break,
                    Woken::Expired => Err(super::error::unauthenticated(
                        "unauthenticated: the token this stream was opened with has expired; reconnect with a new one",
                    ))?,
                    Woken::Lifetime => Err(super::error::stream_lifetime(&format!(
                        "the stream reached its maximum lifetime of {} s; reconnect to go on watching",
                        lifetime.as_secs()
                    )))?,
                    Woken::Changed | Woken::Access => {}
                }
                let changed = woken == Woken::Changed;
                // Access is checked again while the stream lives: a caller
                // whose grants were taken away stops seeing the execution.
                if !caller.unrestricted {
                    let now = engine.caller(&caller.subject).await.map_err(to_status)?;
                    let application = detail.execution.application.as_str();
                    if now.authorize(&Action::Read { application }).is_err() {
                        Err(to_status(Error::not_found("execution", &id)))?;
                    }
                }
                if changed {
                    let stamp = *watch.changes.borrow_and_update();
                    detail = if relayed {
                        engine.execution_after(&id, stamp).await.map_err(to_status)?
                    } else {
                        engine.execution(&id).await.map_err(to_status)?
                    };
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Sleeps until `at`, or forever when there is no such moment.
/// One entry of GetExecution's `allowed_actions`.
fn allowance((control, allowed): (Control, Result<(), NotAllowed>)) -> pb::ActionAllowance {
    let action = match control {
        Control::Resume => pb::ExecutionAction::Resume,
        Control::Abort => pb::ExecutionAction::Abort,
        Control::Pause => pb::ExecutionAction::Pause,
        Control::Continue => pb::ExecutionAction::Continue,
        Control::Approve => pb::ExecutionAction::Approve,
        Control::Reject => pb::ExecutionAction::Reject,
    };
    let (allowed, reason, message) = match allowed {
        Ok(()) => (true, String::new(), String::new()),
        Err(n) => (false, n.reason.to_owned(), n.message),
    };
    pb::ActionAllowance { action: action as i32, allowed, reason, message }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What ended a watch stream's wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woken {
    Changed,
    Access,
    Expired,
    Lifetime,
    Gone,
}
