use tonic::{Request, Response, Status};

use super::{
    Context, convert, detached,
    error::{invalid, to_status},
};
use crate::{
    domain::{
        access::{Grant, Permission},
        pipeline::EnvironmentType,
    },
    proto::{self as pb, access_service_server::AccessService},
};

pub struct AccessApi(pub Context);

#[tonic::async_trait]
impl AccessService for AccessApi {
    async fn create_user_group(
        &self,
        request: Request<pb::CreateUserGroupRequest>,
    ) -> Result<Response<pb::CreateUserGroupResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let name = convert::required("name", request.into_inner().name)?;
        let engine = self.0.engine.clone();
        let group = detached(async move { engine.create_group(&caller, &name).await }).await?;
        Ok(Response::new(pb::CreateUserGroupResponse { group: Some(convert::user_group(group)) }))
    }

    async fn delete_user_group(
        &self,
        request: Request<pb::DeleteUserGroupRequest>,
    ) -> Result<Response<pb::DeleteUserGroupResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let id = convert::required("group_id", request.into_inner().group_id)?;
        let engine = self.0.engine.clone();
        detached(async move { engine.delete_group(&caller, &id).await }).await?;
        Ok(Response::new(pb::DeleteUserGroupResponse {}))
    }

    async fn list_user_groups(
        &self,
        request: Request<pb::ListUserGroupsRequest>,
    ) -> Result<Response<pb::ListUserGroupsResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let size = convert::page_size(r.page_size)?;
        let after = convert::page_token(&r.page_token)?;
        let page = self.0.engine.list_groups(&caller, after.as_deref(), size).await.map_err(to_status)?;
        Ok(Response::new(pb::ListUserGroupsResponse {
            groups: page.items.into_iter().map(convert::user_group).collect(),
            next_page_token: convert::next_page_token(page.next),
        }))
    }

    async fn add_group_member(
        &self,
        request: Request<pb::AddGroupMemberRequest>,
    ) -> Result<Response<pb::AddGroupMemberResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let (group_id, subject) =
            (convert::required("group_id", r.group_id)?, convert::required("subject", r.subject)?);
        let engine = self.0.engine.clone();
        let group = detached(async move { engine.add_member(&caller, &group_id, &subject).await }).await?;
        Ok(Response::new(pb::AddGroupMemberResponse { group: Some(convert::user_group(group)) }))
    }

    async fn remove_group_member(
        &self,
        request: Request<pb::RemoveGroupMemberRequest>,
    ) -> Result<Response<pb::RemoveGroupMemberResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let (group_id, subject) =
            (convert::required("group_id", r.group_id)?, convert::required("subject", r.subject)?);
        let engine = self.0.engine.clone();
        let group = detached(async move { engine.remove_member(&caller, &group_id, &subject).await }).await?;
        Ok(Response::new(pb::RemoveGroupMemberResponse { group: Some(convert::user_group(group)) }))
    }

    async fn add_grant(&self, request: Request<pb::AddGrantRequest>) -> Result<Response<pb::AddGrantResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let g = request.into_inner().grant.ok_or_else(|| invalid("grant", "required"))?;
        let permission = match pb::Permission::try_from(g.permission) {
            Ok(pb::Permission::ExecutePipeline) => Permission::ExecutePipeline,
            Ok(pb::Permission::View) => Permission::View,
            Ok(pb::Permission::RunTasks) => Permission::RunTasks,
            Ok(pb::Permission::Admin) => Permission::Admin,
            _ => return Err(invalid("grant.permission", "set one of the PERMISSION_* values")),
        };
        let environment = match pb::EnvironmentType::try_from(g.environment_type) {
            Ok(pb::EnvironmentType::Unspecified) => None,
            Ok(pb::EnvironmentType::Prod) => Some(EnvironmentType::Prod),
            Ok(pb::EnvironmentType::NonProd) => Some(EnvironmentType::NonProd),
            Err(_) => return Err(invalid("grant.environment_type", "unknown environment type")),
        };
        let grant = Grant {
            id: String::new(),
            group_id: convert::required("grant.group_id", g.group_id)?,
            permission,
            application: (!g.application.is_empty()).then_some(g.application),
            environment,
        };
        let engine = self.0.engine.clone();
        let grant = detached(async move { engine.add_grant(&caller, grant).await }).await?;
        Ok(Response::new(pb::AddGrantResponse { grant: Some(convert::grant(grant)) }))
    }

    async fn remove_grant(
        &self,
        request: Request<pb::RemoveGrantRequest>,
    ) -> Result<Response<pb::RemoveGrantResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let id = convert::required("grant_id", request.into_inner().grant_id)?;
        let engine = self.0.engine.clone();
        detached(async move { engine.remove_grant(&caller, &id).await }).await?;
        Ok(Response::new(pb::RemoveGrantResponse {}))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let r = request.into_inner();
        let size = convert::page_size(r.page_size)?;
        let before = convert::page_token(&r.page_token)?;
        let filter = crate::store::audit::AuditFilter {
            application: (!r.application.is_empty()).then_some(r.application),
            execution_id: (!r.execution_id.is_empty()).then_some(r.execution_id),
            chain_id: (!r.chain_id.is_empty()).then_some(r.chain_id),
        };
        let page = self.0.engine.list_audit(&caller, &filter, before.as_deref(), size).await.map_err(to_status)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page.items.into_iter().map(convert::audit_event).collect(),
            next_page_token: convert::next_page_token(page.next),
        }))
    }
}
