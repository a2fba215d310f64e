//! Resume: a new execution in the same chain that carries over the stages
//! before the chosen one and runs the rest, created in one transaction.

use serde_json::json;

use super::{Audit, Engine, Error, Result, authorize, new_id, now, progress};
use crate::{
    domain::{
        access::Caller,
        execution::{ExecutionDetail, ResumeOrigin, StageRun},
        resume::{self, Block, Planned, ResolveError, StageRef},
        status::{ExecutionStatus, StageStatus},
    },
    store::{
        StoreError,
        executions::{self, Key, Scope},
        pipelines,
    },
};

#[derive(Debug, Clone)]
pub struct ResumeRequest {
    pub execution_id: String,
    pub stage: StageRef,
    pub request_id: Option<String>,
    pub validate_only: bool,
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
    /// Stages that were running when the resumed execution was aborted.
    pub not_rolled_back: Vec<String>,
}

impl ResumeRequest {
    fn fingerprint(&self) -> String {
        let stage = match &self.stage {
            StageRef::Name(n) => serde_json::json!({ "name": n }),
            StageRef::Index(i) => serde_json::json!({ "index": i }),
        };
        serde_json::json!(["resume", self.execution_id, stage]).to_string()
    }
}

impl Engine {
    pub async fn resume(&self, request: ResumeRequest) -> Result<ResumeOutcome> {
        let started = std::time::Instant::now();
        let fingerprint = request.fingerprint();
        if let Some(done) = self.replay_resume(&request, &fingerprint).await? {
            return Ok(done);
        }
        if request.validate_only {
            let old = self.execution(&request.execution_id).await?;
            let from = self.check_resume(&request.caller, &old, &request.stage).await?;
            return self.outcome(&old, from, None).await;
        }
        let (turn, txn) = self.begin().await?;
        let old_id = &request.execution_id;
        let Some(locked) = executions::lock(&txn, Key::Id(old_id)).await? else {
            txn.rollback().await?;
            return Err(Error::not_found("execution", old_id));
        };
        let old = executions::detail_of(&txn, locked, self.definitions(), Scope::Whole).await?;
        let from = match self.check_resume(&request.caller, &old, &request.stage).await {
            Ok(from) => from,
            Err(e) => {
                txn.rollback().await?;
                return Err(e);
            }
        };
        let (before, mut after) = successor(&old, from, &request);
        let at = after.execution.created_at;
        progress::advance(&mut after, at);
        let written = async {
            executions::insert(&txn, &before, &fingerprint).await?;
            executions::save(&txn, &before, &after).await?;
            if !executions::mark_resumed(&txn, old_id, &after.execution.id).await? {
                return Ok(false);
            }
            let details =
                json!({ "resumed_execution_id": old_id, "stage": after.stages[from].name, "stage_index": from });
            let audit = Audit::new(&request.caller, "execution.resume", details);
            audit.record(&txn, Some(&after.execution.application), Some(&after.execution.id)).await?;
            Ok::<_, StoreError>(true)
        }
        .await;
        match written {
            Ok(true) => txn.commit().await?,
            Ok(false) | Err(StoreError::Duplicate(_)) => {
                txn.rollback().await?;
                drop(turn);
                if let Some(done) = self.replay_resume(&request, &fingerprint).await? {
                    return Ok(done);
                }
                return Err(Error::Conflict(format!(
                    "a concurrent resume of execution {old_id} won; GetExecution shows the execution that resumed it"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        drop(turn);
        self.notifier().announce(&before, &after);
        self.notifier().execution_changed(old_id);
        metrics::counter!(crate::metrics::RESUMES).increment(1);
        super::observe_stages(&before, &after, started);
        tracing::info!(execution_id = %after.execution.id, resumed = %old_id, chain_id = %after.execution.chain_id,
            attempt = after.execution.attempt, stage = %after.stages[from].name, actor = %request.caller.subject, "execution resumed");
        self.outcome(&old, from, Some(after)).await
    }

    /// Why `old` cannot be resumed from `stage`, or the index to resume from.
    async fn check_resume(&self, caller: &Caller, old: &ExecutionDetail, stage: &StageRef) -> Result<usize> {
        authorize::read_execution(caller, old)?;
        authorize::execute_somewhere(caller, &old.execution.application)?;
        let first_created_at = self.chain_start(old).await?;
        resume::check_execution(old, self.settings().chain_limits, first_created_at, now())
            .map_err(|(_, r)| Error::Refused(r))?;
        let from = resume::resolve_stage(old, stage).map_err(|e| match e {
            ResolveError::Invalid(v) => Error::Invalid(vec![v]),
            ResolveError::Refused(r) => Error::Refused(r),
        })?;
        authorize::execute(caller, &old.execution.application, &old.definition, from)?;
        Ok(from)
    }

    /// When the chain's first attempt was created.
    async fn chain_start(&self, d: &ExecutionDetail) -> Result<i64> {
        if d.execution.chain_id == d.execution.id {
            return Ok(d.execution.created_at);
        }
        Ok(executions::get(self.db(), &d.execution.chain_id).await?.map_or(d.execution.created_at, |e| e.created_at))
    }

    /// For each stage of `d`: None if it is a valid resume point now, else why not.
    pub async fn resume_points(&self, d: &ExecutionDetail) -> Result<Vec<Option<(Block, String)>>> {
        let first = self.chain_start(d).await?;
        let execution_block = resume::check_execution(d, self.settings().chain_limits, first, now()).err();
        let never = |s: &StageRun| {
            let furthest = resume::furthest_reached(&d.stages).map_or("none".to_owned(), |f| format!("{:?}", f.name));
            format!("execution never reached stage {:?}; the furthest stage reached is {furthest}", s.name)
        };
        Ok(resume::resume_points(d, execution_block.as_ref().map(|(b, _)| *b))
            .into_iter()
            .zip(&d.stages)
            .map(|(block, stage)| {
                block.map(|b| match (&execution_block, b) {
                    (_, Block::NeverReached) => (b, never(stage)),
                    (Some((_, refusal)), _) => (b, refusal.message.clone()),
                    (None, _) => (b, String::new()),
                })
            })
            .collect())
    }

    async fn outcome(&self, old: &ExecutionDetail, from: usize, new: Option<ExecutionDetail>) -> Result<ResumeOutcome> {
        let latest = pipelines::latest_version(self.db(), &old.execution.pipeline_id)
            .await?
            .unwrap_or(old.execution.pipeline_version);
        let plan = resume::plan(old, from)
            .into_iter()
            .zip(&old.stages)
            .map(|(planned, s)| PlannedStage { index: s.index, name: s.name.clone(), planned })
            .collect();
        let not_rolled_back = if old.execution.status == ExecutionStatus::Aborted {
            old.stages.iter().filter(|s| s.status == StageStatus::Aborted).map(|s| s.name.clone()).collect()
        } else {
            Vec::new()
        };
        Ok(ResumeOutcome {
            execution: new,
            plan,
            pipeline_version: old.execution.pipeline_version,
            latest_pipeline_version: latest,
            not_rolled_back,
        })
    }

    /// The outcome of an earlier resume with this request id, if any.
    async fn replay_resume(&self, request: &ResumeRequest, fingerprint: &str) -> Result<Option<ResumeOutcome>> {
        let Some(existing) = self.earlier(request.request_id.as_deref(), fingerprint, &request.caller).await? else {
            return Ok(None);
        };
        let Some(origin) = &existing.resumed_from else {
            return Err(Error::AlreadyExists(format!(
                "request_id {} was used to start execution {}",
                crate::domain::limits::quote(&existing.request_id),
                existing.id
            )));
        };
        let old = self.execution(&origin.execution_id).await?;
        let new = self.execution(&existing.id).await?;
        self.outcome(&old, origin.stage_index, Some(new)).await.map(Some)
    }
}

/// The new execution of the chain, before (as inserted) and after carrying
/// over the stages before `from` with their workflows' results.
fn successor(old: &ExecutionDetail, from: usize, request: &ResumeRequest) -> (ExecutionDetail, ExecutionDetail) {
    let id = new_id();
    let now = now();
    let mut execution = old.execution.clone();
    execution.id = id.clone();
    execution.status = ExecutionStatus::Queued;
    execution.status_message = String::new();
    execution.request_id = request.request_id.clone().unwrap_or_else(|| format!("server:{id}"));
    execution.triggered_by = request.caller.subject.clone();
    execution.attempt = old.execution.attempt + 1;
    execution.resumed_from = Some(ResumeOrigin {
        execution_id: old.execution.id.clone(),
        stage_index: from,
        stage_name: old.stages[from].name.clone(),
    });
    execution.resumed_by = None;
    execution.created_at = now;
    execution.started_at = None;
    execution.ended_at = None;
    let stages = old
        .stages
        .iter()
        .map(|s| {
            if s.index < from {
                StageRun {
                    carried_from: Some(s.carried_from.clone().unwrap_or_else(|| old.execution.id.clone())),
                    ..s.clone()
                }
            } else {
                StageRun::pending(s.index, &s.name)
            }
        })
        .collect();
    let before = ExecutionDetail { execution, definition: old.definition.clone(), stages, workflows: Vec::new() };
    let mut after = before.clone();
    after.workflows = old
        .workflows
        .iter()
        .filter(|w| w.stage_index < from)
        .map(|w| {
            let mut w = w.clone();
            w.task_id = new_id();
            w.execution_id = id.clone();
            w.lease_token = None;
            w.lease_owner = None;
            w.lease_expires_at = None;
            w
        })
        .collect();
    (before, after)
}
