//! Starting an execution: bind inputs, pin the version, start the first stage.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Audit, Engine, Error, Result, authorize, new_id, now, progress};
use crate::{
    domain::{
        access::Caller,
        execution::{Execution, ExecutionDetail, StageRun},
        inputs,
        status::ExecutionStatus,
    },
    store::{StoreError, executions},
};

#[derive(Debug, Clone)]
pub struct StartRequest {
    pub pipeline_id: String,
    /// None means the latest version.
    pub pipeline_version: Option<i64>,
    pub variables: BTreeMap<String, String>,
    pub artifacts: BTreeMap<String, String>,
    /// None means not idempotent (the server picks an id).
    pub request_id: Option<String>,
    pub caller: Caller,
}

impl StartRequest {
    /// What makes two starts "the same request" for idempotency.
    fn fingerprint(&self) -> String {
        serde_json::json!([self.pipeline_id, self.pipeline_version, self.variables, self.artifacts]).to_string()
    }
}

impl Engine {
    /// Creates the execution and starts its first stage in one transaction.
    /// A retry with the same request id returns the first call's execution.
    pub async fn start(&self, request: StartRequest) -> Result<ExecutionDetail> {
        let started = std::time::Instant::now();
        let fingerprint = request.fingerprint();
        if let Some(existing) = self.replay(&request, &fingerprint).await? {
            return Ok(existing);
        }
        let pipeline = self.pipeline_for(&request.caller, &request.pipeline_id, request.pipeline_version).await?;
        authorize::execute(&request.caller, &pipeline.application, &pipeline.definition, 0)?;
        let variables =
            inputs::bind_variables(&pipeline.definition.variables, &request.variables).map_err(Error::Invalid)?;
        inputs::check_artifacts(&request.artifacts, &self.settings().limits).map_err(Error::Invalid)?;

        let id = new_id();
        let now = now();
        let before = ExecutionDetail {
            execution: Execution {
                id: id.clone(),
                pipeline_id: pipeline.id.clone(),
                pipeline_version: pipeline.version,
                application: pipeline.application.clone(),
                status: ExecutionStatus::Queued,
                status_message: String::new(),
                variables,
                artifacts: request.artifacts.clone(),
                request_id: request.request_id.clone().unwrap_or_else(|| format!("server:{id}")),
                triggered_by: request.caller.subject.clone(),
                chain_id: id.clone(),
                attempt: 1,
                resumed_from: None,
                resumed_by: None,
                created_at: now,
                started_at: None,
                ended_at: None,
            },
            stages: pipeline
                .definition
                .stages
                .iter()
                .enumerate()
                .map(|(index, s)| StageRun::pending(index, &s.name))
                .collect(),
            workflows: Vec::new(),
            definition: std::sync::Arc::new(pipeline.definition),
        };
        let mut after = before.clone();
        progress::advance(&mut after, now);

        let (turn, txn) = self.begin().await?;
        let audit = Audit::new(
            &request.caller,
            "execution.start",
            json!({ "pipeline_id": pipeline.id, "pipeline_version": pipeline.version, "request_id": before.execution.request_id }),
        );
        let inserted = async {
            executions::insert(&txn, &before, &fingerprint).await?;
            executions::save(&txn, &before, &after).await?;
            audit.record(&txn, Some(&pipeline.application), Some(&id)).await
        }
        .await;
        match inserted {
            Ok(()) => txn.commit().await?,
            Err(StoreError::Duplicate(_)) => {
                // A concurrent call with the same request id won the insert.
                txn.rollback().await?;
                drop(turn);
                return self.replay(&request, &fingerprint).await?.ok_or_else(|| {
                    Error::Conflict("a concurrent start with this request id is in progress; retry".into())
                });
            }
            Err(e) => return Err(e.into()),
        }
        drop(turn);
        self.notifier().announce(&before, &after);
        super::observe_stages(&before, &after, started);
        tracing::info!(execution_id = %id, pipeline_id = %after.execution.pipeline_id,
            version = after.execution.pipeline_version, actor = %request.caller.subject, "execution started");
        Ok(after)
    }

    /// The execution an earlier call with this request id created, if any.
    async fn replay(&self, request: &StartRequest, fingerprint: &str) -> Result<Option<ExecutionDetail>> {
        match self.earlier(request.request_id.as_deref(), fingerprint, &request.caller).await? {
            Some(existing) => Ok(Some(self.execution(&existing.id).await?)),
            None => Ok(None),
        }
    }
}
