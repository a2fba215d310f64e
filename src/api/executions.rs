use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{
    Context, convert, detached,
    error::{invalid, to_status},
};
use crate::{
    domain::{access::Caller, resume::StageRef},
    engine::{Decision, ResumeRequest, StartRequest},
    proto::{self as pb, execution_service_server::ExecutionService},
    store::executions::ListFilter,
};

pub struct ExecutionApi(pub Context);

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchExecutionResponse, Status>> + Send>>;

impl ExecutionApi {
    fn decision(execution_id: String, stage_name: String, comment: String, caller: Caller) -> Result<Decision, Status> {
        Ok(Decision {
            execution_id: convert::required("execution_id", execution_id)?,
            stage_name: (!stage_name.is_empty()).then_some(stage_name),
            comment,
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
        if r.pipeline_version < 0 {
            return Err(super::error::invalid("pipeline_version", "must not be negative; 0 means the latest"));
        }
        let start = StartRequest {
            pipeline_id: convert::required("pipeline_id", r.pipeline_id)?,
            pipeline_version: (r.pipeline_version > 0).then_some(r.pipeline_version),
            variables: convert::map(r.variables),
            artifacts: convert::map(r.artifacts),
            request_id: (!r.request_id.is_empty()).then_some(r.request_id),
            caller,
        };
        let engine = self.0.engine.clone();
        let d = detached(async move { engine.start(start).await }).await?;
        Ok(Response::new(pb::StartExecutionResponse { execution: Some(convert::execution_detail(&d)) }))
    }

    async fn get_execution(
        &self,
        request: Request<pb::GetExecutionRequest>,
    ) -> Result<Response<pb::GetExecutionResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let id = convert::required("execution_id", request.into_inner().execution_id)?;
        let engine = &self.0.engine;
        let d = engine.execution_for(&caller, &id).await.map_err(to_status)?;
        let points = engine.resume_points(&d);
        let execution = convert::with_resume_points(convert::execution_detail(&d), points);
        Ok(Response::new(pb::GetExecutionResponse { execution: Some(execution) }))
    }

    async fn list_executions(
        &self,
        request: Request<pb::ListExecutionsRequest>,
    ) -> Result<Response<pb::ListExecutionsResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let filter = ListFilter {
            application: (!r.application.is_empty()).then_some(r.application),
            pipeline_id: (!r.pipeline_id.is_empty()).then_some(r.pipeline_id),
            status: convert::status_filter(r.status)?,
            readable: None,
        };
        let size = convert::page_size(r.page_size)?;
        let before = convert::page_token(&r.page_token)?;
        let page = self.0.engine.list_executions(&caller, &filter, before.as_deref(), size).await.map_err(to_status)?;
        Ok(Response::new(pb::ListExecutionsResponse {
            executions: page.items.iter().map(convert::execution).collect(),
            next_page_token: convert::next_page_token(page.next),
        }))
    }

    async fn abort(&self, request: Request<pb::AbortRequest>) -> Result<Response<pb::AbortResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let id = convert::required("execution_id", r.execution_id)?;
        let engine = self.0.engine.clone();
        let d = detached(async move { engine.abort(&id, &r.reason, &caller).await }).await?;
        Ok(Response::new(pb::AbortResponse { execution: Some(convert::execution_detail(&d)) }))
    }

    async fn pause(&self, request: Request<pb::PauseRequest>) -> Result<Response<pb::PauseResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let id = convert::required("execution_id", request.into_inner().execution_id)?;
        let engine = self.0.engine.clone();
        let d = detached(async move { engine.pause(&id, &caller).await }).await?;
        Ok(Response::new(pb::PauseResponse { execution: Some(convert::execution_detail(&d)) }))
    }

    async fn r#continue(
        &self,
        request: Request<pb::ContinueRequest>,
    ) -> Result<Response<pb::ContinueResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let id = convert::required("execution_id", request.into_inner().execution_id)?;
        let engine = self.0.engine.clone();
        let d = detached(async move { engine.continue_execution(&id, &caller).await }).await?;
        Ok(Response::new(pb::ContinueResponse { execution: Some(convert::execution_detail(&d)) }))
    }

    async fn approve(&self, request: Request<pb::ApproveRequest>) -> Result<Response<pb::ApproveResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let decision = Self::decision(r.execution_id, r.stage_name, r.comment, caller)?;
        let engine = self.0.engine.clone();
        let d = detached(async move { engine.approve(decision).await }).await?;
        Ok(Response::new(pb::ApproveResponse { execution: Some(convert::execution_detail(&d)) }))
    }

    async fn reject(&self, request: Request<pb::RejectRequest>) -> Result<Response<pb::RejectResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let decision = Self::decision(r.execution_id, r.stage_name, r.comment, caller)?;
        let engine = self.0.engine.clone();
        let d = detached(async move { engine.reject(decision).await }).await?;
        Ok(Response::new(pb::RejectResponse { execution: Some(convert::execution_detail(&d)) }))
    }

    async fn resume(&self, request: Request<pb::ResumeRequest>) -> Result<Response<pb::ResumeResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let stage = match r.from_stage {
            Some(pb::resume_request::FromStage::StageName(name)) if !name.is_empty() => StageRef::Name(name),
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
        const MAX_REASON: usize = 1024;
        if r.reason.chars().count() > MAX_REASON {
            return Err(invalid("reason", format!("at most {MAX_REASON} characters")));
        }
        let resume = ResumeRequest {
            execution_id: convert::required("execution_id", r.execution_id)?,
            stage,
            request_id: (!r.request_id.is_empty()).then_some(r.request_id),
            validate_only: r.validate_only,
            reason: r.reason,
            pipeline_version: (r.pipeline_version != 0).then_some(r.pipeline_version),
            caller,
        };
        let engine = self.0.engine.clone();
        let outcome = detached(async move { engine.resume(resume).await }).await?;
        Ok(Response::new(convert::resume_outcome(outcome)))
    }

    async fn list_history(
        &self,
        request: Request<pb::ListHistoryRequest>,
    ) -> Result<Response<pb::ListHistoryResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let id = convert::required("execution_id", r.execution_id)?;
        let size = convert::page_size(r.page_size)?;
        let before = match convert::page_token(&r.page_token)? {
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

    type WatchExecutionStream = WatchStream;

    async fn watch_execution(
        &self,
        request: Request<pb::WatchExecutionRequest>,
    ) -> Result<Response<Self::WatchExecutionStream>, Status> {
        let caller = self.0.caller(&request).await?;
        let id = convert::required("execution_id", request.into_inner().execution_id)?;
        let Context { engine, shutdown } = self.0.clone();
        // Fail fast on an unknown id instead of opening an empty stream.
        let (mut watch, mut detail) = engine.watch(&caller, &id).await.map_err(to_status)?;
        let stream = async_stream::try_stream! {
            let mut last = None;
            loop {
                let snapshot = convert::execution_detail(&detail);
                if last.as_ref() != Some(&snapshot) {
                    yield pb::WatchExecutionResponse { execution: Some(snapshot.clone()) };
                    last = Some(snapshot);
                }
                if detail.execution.status.is_final() || shutdown.is_cancelled() {
                    break;
                }
                // Woken by the commit that changes it (here or, announced,
                // on another replica); a recheck only while announcements
                // from other replicas do not arrive.
                let recheck = engine.settings().recheck;
                let relayed = engine.events().is_relayed();
                tokio::select! {
                    changed = watch.changes.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                    _ = tokio::time::sleep(recheck), if !relayed => {}
                    _ = shutdown.cancelled() => break,
                }
                let stamp = *watch.changes.borrow_and_update();
                detail = if relayed {
                    engine.execution_after(&id, stamp).await.map_err(to_status)?
                } else {
                    engine.execution(&id).await.map_err(to_status)?
                };
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
