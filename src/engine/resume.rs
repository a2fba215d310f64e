//! Resume: a new execution in the same chain that carries over the stages
//! before the chosen one and runs the rest, created in one transaction on
//! the locked original.

use crate::domain::{Reason, Refusal};
use serde_json::json;

use super::{Audit, Engine, Error, Result, authorize, new_id, now, start::Created, work::Unit};
use crate::{
    domain::{
        access::Caller,
        execution::{ExecutionDetail, ExecutionState},
        progress::{self, Changes},
        resume::{self, Block, NewAttempt, Planned, ResolveError, StageRef},
    },
    store::{executions, stages},
};

#[derive(Debug, Clone)]
pub struct ResumeRequest {
    pub execution_id: String,
    pub stage: StageRef,
    pub request_id: Option<String>,
    pub validate_only: bool,
    /// Why the caller resumes (recorded with the new execution).
    pub reason: String,
    /// The version the caller believes is pinned; anything else is refused,
    /// as a resume cannot change it.
    pub pipeline_version: Option<i64>,
    pub caller: Caller,
}

#[derive(Debug, Clone)]
pub struct PlannedStage {
    pub index: usize,
    pub name: String,
    pub planned: Planned,
}

#[derive(Debug, Clone)]
pub struct ResumeOutcome {
    /// The new execution; None for a validation-only call.
    pub execution: Option<ExecutionDetail>,
    pub plan: Vec<PlannedStage>,
    pub pipeline_version: i64,
    pub latest_pipeline_version: i64,
    /// Workflow stages that were running when the resumed execution was aborted.
    pub not_rolled_back: Vec<String>,
}

impl ResumeRequest {
    fn fingerprint(&self) -> String {
        let stage = match &self.stage {
            StageRef::Name(n) => serde_json::json!({ "name": n }),
            StageRef::Index(i) => serde_json::json!({ "index": i }),
        };
        serde_json::json!(["resume", self.execution_id, stage, self.reason]).to_string()
    }
}

impl Engine {
    /// Resumes an execution. The original is locked first, then the request
    /// id is looked up and the rules checked, all in one transaction: any
    /// number of concurrent calls with one request id get the one execution
    /// created, and of calls with different ids exactly one wins.
    pub async fn resume(&self, request: ResumeRequest) -> Result<ResumeOutcome> {
        let mut unit = self.unit(Some(&request.execution_id)).await?;
        let result = self.resume_in(&mut unit, &request).await;
        let (outcome, created) = self.finish(unit, result).await?;
        match created {
            Some(Created::New(detail)) => {
                let e = &detail.execution;
                metrics::counter!(crate::metrics::RESUMES).increment(1);
                tracing::info!(execution_id = %e.id, resumed = %request.execution_id, chain_id = %e.chain_id,
                    attempt = e.attempt, stage = %e.resumed_from.as_ref().map(|o| o.stage_name.as_str()).unwrap_or(""),
                    actor = %request.caller.subject, "execution resumed");
                Ok(ResumeOutcome { execution: Some(*detail), ..outcome })
            }
            Some(Created::Earlier(id)) => {
                let view = self.view(&id).await?;
                Ok(ResumeOutcome { execution: Some((*view.detail).clone()), ..outcome })
            }
            None => Ok(outcome),
        }
    }

    async fn resume_in(&self, unit: &mut Unit, request: &ResumeRequest) -> Result<(ResumeOutcome, Option<Created>)> {
        let old_id = request.execution_id.as_str();
        let tx = &unit.tx;
        let not_found = || Error::not_found("execution", old_id);
        // Lock first: a resume racing this one has committed or not started.
        let locked =
            executions::lock_for_resume(tx, old_id, request.request_id.as_deref()).await?.ok_or_else(not_found)?;
        let (execution, revision, latest) = (locked.execution, locked.revision, locked.latest_version);
        authorize::read_execution(&request.caller, &execution)?;
        authorize::execute_somewhere(&request.caller, &execution.application)?;
        let fingerprint = request.fingerprint();
        let request_id = request.request_id.as_deref().filter(|_| locked.request_taken);
        if let Some(existing) = self.earlier(tx, request_id, &fingerprint, &request.caller).await? {
            let Some(origin) = &existing.resumed_from else {
                return Err(Error::AlreadyExists(format!(
                    "request_id {} was used to start execution {}; use a new request id",
                    crate::domain::quote(&existing.request_id),
                    existing.id
                )));
            };
            let old = self.state_of(unit, execution, revision).await?;
            let outcome = self.outcome(&old, origin.stage_index, latest);
            return Ok((outcome, Some(Created::Earlier(existing.id))));
        }
        let old = self.state_of(unit, execution, revision).await?;
        if let Some(asked) = request.pipeline_version.filter(|v| *v != old.execution.pipeline_version) {
            return Err(Error::invalid(
                "pipeline_version",
                format!(
                    "a resume runs the pinned version {} and cannot change it; leave it 0, or start a new execution to run version {asked}",
                    old.execution.pipeline_version
                ),
            ));
        }
        resume::check_execution(&old.execution, self.settings().chain_limits, now())
            .map_err(|(_, refusal)| Error::Refused(refusal))?;
        let from = resume::resolve_stage(&old, &request.stage).map_err(|e| match e {
            ResolveError::Invalid(v) => Error::Invalid(vec![v]),
            ResolveError::Refused(r) => Error::Refused(r),
        })?;
        authorize::execute(&request.caller, &old.execution.application, &old.definition, from)?;
        let outcome = self.outcome(&old, from, latest);
        if request.validate_only {
            return Ok((outcome, None));
        }

        let id = new_id();
        let now = now();
        let attempt = NewAttempt {
            request_id: request.request_id.clone().unwrap_or_else(|| format!("server:{id}")),
            id,
            actor: request.caller.subject.clone(),
            reason: request.reason.clone(),
            now,
        };
        let mut new = resume::successor(&old, from, attempt);
        // The frozen secrets go with the chain, sealed again for the new execution.
        new.execution.sealed_secrets = match (&old.execution.sealed_secrets, self.settings().secrets.as_deref()) {
            (None, _) => None,
            (Some(sealed), Some(sealer)) => {
                let values = sealer
                    .open(&old.execution.id, sealed)
                    .and_then(|values| sealer.seal(&new.execution.id, &values))
                    .map_err(|e| {
                        Error::Refused(
                            Refusal::new(Reason::SecretsUnreadable, format!("{e}; it cannot be resumed with them"))
                                .with("execution_id", &old.execution.id),
                        )
                    })?;
                Some(values)
            }
            (Some(_), None) => {
                return Err(Error::Refused(
                    Refusal::new(
                        Reason::SecretsKeyMissing,
                        format!(
                            "execution {} holds secret variables and this server has no secrets key to open them; \
                             an operator sets --secrets-key-file (or REPRISE_SECRETS_KEY)",
                            old.execution.id
                        ),
                    )
                    .with("execution_id", &old.execution.id),
                ));
            }
        };
        let mut changes = Changes::default();
        progress::advance(&mut new, now, &mut new_id, &mut changes);
        let detail = match self.create(unit, new, changes, &fingerprint, now).await {
            Ok(Some(detail)) => detail,
            // Request id taken by an execution of another chain (a
            // different request), or another replica resumed it first.
            Ok(None) | Err(Error::Store(crate::store::StoreError::Duplicate(_))) => {
                return Err(Error::Conflict(format!(
                    "a concurrent resume of execution {old_id} won; GetExecution shows the execution that resumed it"
                )));
            }
            Err(e) => return Err(e),
        };
        let mut resumed = old.execution.clone();
        resumed.resumed_by = Some(detail.execution.id.clone());
        unit.batch.push(executions::update_part(&resumed));
        unit.after.changed(old_id);
        let stage = &detail.execution.resumed_from.as_ref().map(|o| o.stage_name.clone()).unwrap_or_default();
        let audit = Audit::new(
            &request.caller,
            "execution.resume",
            json!({ "resumed_execution_id": old_id, "stage": stage, "stage_index": from, "reason": request.reason }),
        );
        unit.batch.push(audit.on(&detail.execution).related(old_id).part());
        Ok((outcome, Some(Created::New(Box::new(detail)))))
    }

    /// The locked execution with every stage: the stages of the cached view
    /// when it shows the state the lock found (`revision`, the one the lock
    /// gave it, is one past it), else read in the unit's transaction. Every
    /// write of a stage row bumps the revision in its transaction, so a view
    /// of the revision before the lock has the stages as they are now; a
    /// resume of a 200-stage execution then reads none of them.
    pub(super) async fn state_of(
        &self,
        unit: &Unit,
        execution: crate::domain::execution::Execution,
        revision: i64,
    ) -> Result<ExecutionState> {
        if let Some(seen) = self.view_at(&execution.id, revision - 1) {
            let state = &seen.detail.state;
            return Ok(ExecutionState {
                execution,
                definition: state.definition.clone(),
                stages: state.stages.clone(),
            });
        }
        let definition = self.definitions().pinned_by(&unit.tx, &execution).await?;
        let stages = stages::of_execution(&unit.tx, &execution.id).await?;
        Ok(ExecutionState { execution, definition, stages })
    }

    /// For each stage of `d`: None if it is a valid resume point now, else
    /// why not, with the reason in words.
    pub fn resume_points(&self, d: &ExecutionDetail) -> Vec<Option<(Block, String)>> {
        let state = &d.state;
        let execution_block = resume::check_execution(&d.execution, self.settings().chain_limits, now()).err();
        resume::resume_points(state, execution_block.as_ref().map(|(b, _)| *b))
            .into_iter()
            .enumerate()
            .map(|(index, block)| {
                block.map(|b| match (&execution_block, b) {
                    (Some((_, refusal)), _) => (b, refusal.message.clone()),
                    (None, Block::NeverReached) => (b, resume::never_reached_message(state, index)),
                    (None, _) => (b, String::new()),
                })
            })
            .collect()
    }

    /// What resuming `old` from `from` does, for the answer (`latest`: the
    /// pipeline's latest version, read with the lock).
    fn outcome(&self, old: &ExecutionState, from: usize, latest: Option<i64>) -> ResumeOutcome {
        let latest = latest.unwrap_or(old.execution.pipeline_version);
        let plan = resume::plan(old, from)
            .into_iter()
            .zip(&old.stages)
            .map(|(planned, s)| PlannedStage { index: s.index, name: s.name.to_string(), planned })
            .collect();
        ResumeOutcome {
            execution: None,
            plan,
            pipeline_version: old.execution.pipeline_version,
            latest_pipeline_version: latest,
            not_rolled_back: resume::not_rolled_back(old),
        }
    }
}
