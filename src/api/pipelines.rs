use prost::Message as _;
use tonic::{Request, Response, Status};

use super::{
    Context, convert,
    error::{invalid, to_status},
};
use crate::{
    engine::{Attempt, NewPipeline, PipelineUpdate},
    proto::{self as pb, pipeline_service_server::PipelineService},
};

pub struct PipelineApi(pub Context);

#[tonic::async_trait]
impl PipelineService for PipelineApi {
    async fn create_pipeline(
        &self,
        request: Request<pb::CreatePipelineRequest>,
    ) -> Result<Response<pb::CreatePipelineResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let limits = self.0.limits();
        let application = convert::required_name("application", r.application, limits)?;
        let name = convert::required_name("name", r.name, limits)?;
        let new = NewPipeline { application, name, definition: convert::definition(r.definition, limits)? };
        let attempt =
            Attempt::new("pipeline.create.denied").application(&new.application).detail("name", new.name.clone());
        let (engine, who) = (self.0.engine.clone(), caller.clone());
        let p = self.0.attempt(&caller, attempt, async move { engine.create_pipeline(&who, new).await }).await?;
        Ok(Response::new(pb::CreatePipelineResponse { pipeline: Some(convert::pipeline(p)) }))
    }

    async fn update_pipeline(
        &self,
        request: Request<pb::UpdatePipelineRequest>,
    ) -> Result<Response<pb::UpdatePipelineResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let pipeline_id = convert::id("pipeline_id", &r.pipeline_id)?;
        if r.expected_version.checked_add(1).is_none() {
            return Err(invalid("expected_version", "the version you read, from 1; GetPipeline tells the latest"));
        }
        let update = PipelineUpdate {
            pipeline_id: pipeline_id.clone(),
            expected_version: r.expected_version,
            definition: convert::definition(r.definition, self.0.limits())?,
        };
        let attempt = Attempt::new("pipeline.update.denied").pipeline(&pipeline_id);
        let (engine, who) = (self.0.engine.clone(), caller.clone());
        let p = self.0.attempt(&caller, attempt, async move { engine.update_pipeline(&who, update).await }).await?;
        Ok(Response::new(pb::UpdatePipelineResponse { pipeline: Some(convert::pipeline(p)) }))
    }

    async fn get_pipeline(
        &self,
        request: Request<pb::GetPipelineRequest>,
    ) -> Result<Response<pb::GetPipelineResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let id = convert::id("pipeline_id", &r.pipeline_id)?;
        if r.version < 0 {
            return Err(invalid("version", "must not be negative; 0 means the latest"));
        }
        let version = (r.version > 0).then_some(r.version);
        let p = self.0.engine.pipeline_for(&caller, &id, version).await.map_err(to_status)?;
        Ok(Response::new(pb::GetPipelineResponse { pipeline: Some(convert::pipeline(p)) }))
    }

    /// BASIC (the default) lists pipelines without their definitions. FULL
    /// reads each definition in turn and ends the page early, with a
    /// `next_page_token`, before the response would pass the size budget:
    /// what other callers stored never makes a response too big to receive.
    async fn list_pipelines(
        &self,
        request: Request<pb::ListPipelinesRequest>,
    ) -> Result<Response<pb::ListPipelinesResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let limits = self.0.limits();
        let full = match pb::PipelineView::try_from(r.view) {
            Ok(pb::PipelineView::Unspecified | pb::PipelineView::Basic) => false,
            Ok(pb::PipelineView::Full) => true,
            Err(_) => return Err(invalid("view", "set PIPELINE_VIEW_BASIC or PIPELINE_VIEW_FULL")),
        };
        let size = convert::page_size(r.page_size)?;
        let after = convert::page_token_id(&r.page_token, limits)?;
        let application = convert::name("application", r.application, limits, false)?;
        let engine = &self.0.engine;
        let page = engine
            .list_pipelines(&caller, application.as_deref(), after.as_deref(), size, false)
            .await
            .map_err(to_status)?;
        if !full {
            return Ok(Response::new(pb::ListPipelinesResponse {
                pipelines: page.items.into_iter().map(convert::pipeline_basic).collect(),
                next_page_token: convert::next_page_token(page.next),
            }));
        }
        let mut pipelines = Vec::new();
        let mut bytes = 0;
        let mut next = page.next;
        for (i, basic) in page.items.iter().enumerate() {
            let p = match engine.pipeline(&basic.id, Some(basic.version)).await {
                Ok(p) => convert::pipeline(p),
                Err(crate::engine::Error::NotFound(_)) => continue, // deleted since the page was read
                Err(e) => return Err(to_status(e)),
            };
            let len = p.encoded_len();
            let entry = 1 + prost::length_delimiter_len(len) + len;
            if !pipelines.is_empty() && bytes + entry > limits.max_list_response_bytes {
                // The rest goes on the next page, after the last one sent.
                next = Some(page.items[i - 1].id.clone());
                break;
            }
            bytes += entry;
            pipelines.push(p);
        }
        Ok(Response::new(pb::ListPipelinesResponse { pipelines, next_page_token: convert::next_page_token(next) }))
    }
}
