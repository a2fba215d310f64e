use tonic::{Request, Response, Status};

use super::{Context, convert, detached, error::to_status};
use crate::{
    engine::{NewPipeline, PipelineUpdate},
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
        let new =
            NewPipeline { application: r.application, name: r.name, definition: convert::definition(r.definition)? };
        let engine = self.0.engine.clone();
        let p = detached(async move { engine.create_pipeline(&caller, new).await }).await?;
        Ok(Response::new(pb::CreatePipelineResponse { pipeline: Some(convert::pipeline(p)) }))
    }

    async fn update_pipeline(
        &self,
        request: Request<pb::UpdatePipelineRequest>,
    ) -> Result<Response<pb::UpdatePipelineResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let update = PipelineUpdate {
            pipeline_id: convert::required("pipeline_id", r.pipeline_id)?,
            expected_version: r.expected_version,
            definition: convert::definition(r.definition)?,
        };
        let engine = self.0.engine.clone();
        let p = detached(async move { engine.update_pipeline(&caller, update).await }).await?;
        Ok(Response::new(pb::UpdatePipelineResponse { pipeline: Some(convert::pipeline(p)) }))
    }

    async fn get_pipeline(
        &self,
        request: Request<pb::GetPipelineRequest>,
    ) -> Result<Response<pb::GetPipelineResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let id = convert::required("pipeline_id", r.pipeline_id)?;
        if r.version < 0 {
            return Err(super::error::invalid("version", "must not be negative; 0 means the latest"));
        }
        let version = (r.version > 0).then_some(r.version);
        let p = self.0.engine.pipeline_for(&caller, &id, version).await.map_err(to_status)?;
        Ok(Response::new(pb::GetPipelineResponse { pipeline: Some(convert::pipeline(p)) }))
    }

    async fn list_pipelines(
        &self,
        request: Request<pb::ListPipelinesRequest>,
    ) -> Result<Response<pb::ListPipelinesResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let size = convert::page_size(r.page_size)?;
        let after = convert::page_token(&r.page_token)?;
        let application = (!r.application.is_empty()).then_some(r.application.as_str());
        let page =
            self.0.engine.list_pipelines(&caller, application, after.as_deref(), size).await.map_err(to_status)?;
        Ok(Response::new(pb::ListPipelinesResponse {
            pipelines: page.items.into_iter().map(convert::pipeline).collect(),
            next_page_token: convert::next_page_token(page.next),
        }))
    }
}
