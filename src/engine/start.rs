//! Starting an execution: bind inputs, pin the version, start the first stage.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Audit, Engine, Error, Result, authorize, new_id, now, secrets::Sealer, work::Unit};
use crate::{
    domain::{
        Reason, Refusal,
        access::Caller,
        execution::{Execution, ExecutionDetail, ExecutionState, StageRun},
        inputs,
        progress::{self, Changes},
        status::ExecutionStatus,
    },
    store::pipelines,
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
    /// What makes two starts "the same request" for idempotency. It is
    /// stored: the values of secret variables go in as keyed digests.
    fn fingerprint(&self, secret: &[&str], sealer: Option<&Sealer>) -> String {
        let variables: BTreeMap<&String, String> = self
            .variables
            .iter()
            .map(|(k, v)| match sealer.filter(|_| secret.contains(&k.as_str())) {
                Some(s) => (k, format!("digest:{}", s.digest(v))),
                None => (k, v.clone()),
            })
            .collect();
        serde_json::json!([self.pipeline_id, self.pipeline_version, variables, self.artifacts]).to_string()
    }
}

impl Engine {
    /// Creates the execution and starts its first stage in one transaction.
    /// Any number of calls with the same request id, at once or later, get
    /// the one execution the first created.
    pub async fn start(&self, request: StartRequest) -> Result<ExecutionDetail> {
        let mut unit = self.unit(None).await?;
        let result = self.start_in(&mut unit, &request).await;
        match self.finish(unit, result).await? {
            Created::New(detail) => {
                let e = &detail.execution;
                tracing::info!(execution_id = %e.id, pipeline_id = %e.pipeline_id, version = e.pipeline_version,
                    actor = %request.caller.subject, "execution started");
                Ok(*detail)
            }
            Created::Earlier(id) => Ok((*self.view(&id).await?.detail).clone()),
        }
    }

    async fn start_in(&self, unit: &mut Unit, request: &StartRequest) -> Result<Created> {
        let pipeline = pipelines::get(&unit.tx, &request.pipeline_id, request.pipeline_version).await?;
        let pipeline = match pipeline {
            Some(p) => p,
            None => return Err(self.missing_pipeline(&unit.tx, &request.pipeline_id, request.pipeline_version).await),
        };
        let sealer = self.settings().secrets.as_deref();
        let fingerprint = request.fingerprint(&pipeline.definition.secret_names(), sealer);
        if let Some(existing) =
            self.earlier(&unit.tx, request.request_id.as_deref(), &fingerprint, &request.caller).await?
        {
            return Ok(Created::Earlier(existing.id));
        }
        authorize::read_or_hide(&request.caller, &pipeline.application, "pipeline", &pipeline.id)?;
        authorize::execute(&request.caller, &pipeline.application, &pipeline.definition, 0)?;
        let mut variables =
            inputs::bind_variables(&pipeline.definition.variables, &request.variables).map_err(Error::Invalid)?;
        inputs::check_artifacts(&request.artifacts, &self.settings().limits).map_err(Error::Invalid)?;

        let id = new_id();
        let secret_names = pipeline.definition.secret_names();
        let secrets: BTreeMap<String, String> =
            secret_names.iter().filter_map(|name| variables.remove_entry(*name)).collect();
        let sealed_secrets = match (secrets.is_empty(), sealer) {
            (true, _) => None,
            (false, Some(sealer)) => Some(sealer.seal(&id, &secrets).map_err(|e| Error::Conflict(e.to_string()))?),
            (false, None) => {
                return Err(Error::Refused(
                    Refusal::new(
                        Reason::SecretsKeyMissing,
                        format!(
                            "pipeline {} declares secret variables and this server has no secrets key to seal them \
                             with; an operator sets --secrets-key-file (or REPRISE_SECRETS_KEY)",
                            pipeline.id
                        ),
                    )
                    .with("pipeline_id", &pipeline.id),
                ));
            }
        };
        let now = now();
        let definition = self.definitions().pinned(&pipeline.id, pipeline.version, pipeline.definition);
        let mut state = ExecutionState {
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
                chain_created_at: now,
                resumed_from: None,
                resumed_by: None,
                end_stage: None,
                created_at: now,
                started_at: None,
                ended_at: None,
                sealed_secrets,
            },
            stages: definition.stages.iter().enumerate().map(|(i, s)| StageRun::pending(i, &s.name)).collect(),
            definition,
        };
        let mut changes = Changes::default();
        progress::advance(&mut state, now, &mut new_id, &mut changes);
        let Some(detail) = self.create(unit, state, changes, &fingerprint, now).await? else {
            // Another call with this request id inserted first (and has
            // committed: the insert waited for it).
            let existing = self
                .earlier(&unit.tx, request.request_id.as_deref(), &fingerprint, &request.caller)
                .await?
                .ok_or_else(|| {
                    Error::Conflict("a concurrent start with this request id is in progress; retry".into())
                })?;
            return Ok(Created::Earlier(existing.id));
        };
        let audit = Audit::new(
            &request.caller,
            "execution.start",
            json!({ "pipeline_id": pipeline.id, "pipeline_version": pipeline.version, "request_id": detail.execution.request_id }),
        );
        unit.batch.push(audit.on(&detail.execution).part());
        Ok(Created::New(Box::new(detail)))
    }
}

/// What a start or resume call answers with.
pub(super) enum Created {
    /// Created by this call, as it was committed.
    New(Box<ExecutionDetail>),
    /// Created earlier by a call with the same request id.
    Earlier(String),
}
