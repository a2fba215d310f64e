//! Executions and their stages: insert, lock, load whole, save what changed.

use std::collections::BTreeMap;

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, Iterable, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
};

use super::{
    Result, corrupt,
    entity::{execution, stage, task},
    pipelines::DefinitionCache,
    tasks,
};
use crate::domain::{
    execution::{Execution, ExecutionDetail, ResumeOrigin, StageRun},
    status::{ExecutionStatus, StageStatus},
};

/// Filters of the executions list.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub application: Option<String>,
    pub pipeline_id: Option<String>,
    pub status: Option<ExecutionStatus>,
    /// Only these applications (what the caller may read); None means all.
    pub readable: Option<Vec<String>>,
}

/// Inserts a new execution with its stages (all pending); tasks come later.
pub async fn insert(c: &impl ConnectionTrait, detail: &ExecutionDetail, fingerprint: &str) -> Result<()> {
    let e = &detail.execution;
    execution::Entity::insert(execution::ActiveModel {
        id: Set(e.id.clone()),
        pipeline_id: Set(e.pipeline_id.clone()),
        pipeline_version: Set(e.pipeline_version),
        application: Set(e.application.clone()),
        status: Set(e.status.as_str().into()),
        status_message: Set(e.status_message.clone()),
        variables: Set(to_json(&e.variables)?),
        artifacts: Set(to_json(&e.artifacts)?),
        request_id: Set(e.request_id.clone()),
        request_fingerprint: Set(fingerprint.into()),
        triggered_by: Set(e.triggered_by.clone()),
        chain_id: Set(e.chain_id.clone()),
        attempt: Set(e.attempt),
        revision: Set(0),
        created_at: Set(e.created_at),
        started_at: Set(e.started_at),
        ended_at: Set(e.ended_at),
        resumed_from_execution_id: Set(e.resumed_from.as_ref().map(|o| o.execution_id.clone())),
        resume_stage_index: Set(e.resumed_from.as_ref().map(|o| o.stage_index as i32)),
        resume_stage_name: Set(e.resumed_from.as_ref().map(|o| o.stage_name.clone())),
        resumed_by_execution_id: Set(e.resumed_by.clone()),
    })
    .exec_without_returning(c)
    .await?;
    if !detail.stages.is_empty() {
        stage::Entity::insert_many(detail.stages.iter().map(|s| stage_model(&e.id, s)))
            .exec_without_returning(c)
            .await?;
    }
    Ok(())
}

/// Which execution a writer locks.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    Id(&'a str),
    /// The execution a task belongs to (a worker's report names only the task).
    OfTask(&'a str),
}

/// Takes the write lock on one execution for the rest of the transaction by
/// bumping its revision, and returns its row in the same statement; every
/// writer does this first, so writers of one execution queue behind each
/// other on any backend. None if it does not exist.
pub async fn lock(c: &impl ConnectionTrait, key: Key<'_>) -> Result<Option<Execution>> {
    let which = match key {
        Key::Id(id) => execution::Column::Id.eq(id),
        Key::OfTask(task_id) => execution::Column::Id.in_subquery(
            Query::select()
                .column(task::Column::ExecutionId)
                .from(task::Entity)
                .and_where(task::Column::Id.eq(task_id))
                .to_owned(),
        ),
    };
    let rows = execution::Entity::update_many()
        .col_expr(execution::Column::Revision, Expr::col(execution::Column::Revision).add(1))
        .filter(which)
        .exec_with_returning(c)
        .await?;
    rows.into_iter().next().map(from_model).transpose()
}

/// Links `id` to the execution that resumed it, unless another resume did
/// first; false means someone else won.
pub async fn mark_resumed(c: &impl ConnectionTrait, id: &str, by: &str) -> Result<bool> {
    let r = execution::Entity::update_many()
        .col_expr(execution::Column::ResumedByExecutionId, Expr::value(by))
        .filter(execution::Column::Id.eq(id))
        .filter(execution::Column::ResumedByExecutionId.is_null())
        .exec(c)
        .await?;
    Ok(r.rows_affected == 1)
}

/// A page of a chain, newest attempt first, strictly before attempt `before`.
pub async fn chain(
    c: &impl ConnectionTrait,
    chain_id: &str,
    before: Option<i32>,
    limit: u64,
) -> Result<Vec<Execution>> {
    let mut q = execution::Entity::find()
        .filter(execution::Column::ChainId.eq(chain_id))
        .order_by_desc(execution::Column::Attempt)
        .limit(limit);
    if let Some(b) = before {
        q = q.filter(execution::Column::Attempt.lt(b));
    }
    q.all(c).await?.into_iter().map(from_model).collect()
}

pub async fn get(c: &impl ConnectionTrait, id: &str) -> Result<Option<Execution>> {
    execution::Entity::find_by_id(id.to_owned()).one(c).await?.map(from_model).transpose()
}

/// The execution started with this request id, and that request's fingerprint.
pub async fn find_by_request_id(c: &impl ConnectionTrait, request_id: &str) -> Result<Option<(Execution, String)>> {
    let row = execution::Entity::find().filter(execution::Column::RequestId.eq(request_id)).one(c).await?;
    row.map(|m| {
        let fp = m.request_fingerprint.clone();
        from_model(m).map(|e| (e, fp))
    })
    .transpose()
}

/// How many of an execution's workflows a load reads.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every workflow: for reads, control calls that answer with the whole
    /// execution, and resume, which carries results over.
    Whole,
    /// What a scheduler step can touch: open workflows, every workflow of a
    /// running stage, and `task` (to say why a late report is refused). It
    /// keeps a transition's cost flat however far the execution has got.
    Open { task: Option<&'a str> },
}

/// One execution: its row, pinned definition, stages and the workflows of `scope`.
pub async fn load(
    c: &impl ConnectionTrait,
    id: &str,
    definitions: &DefinitionCache,
    scope: Scope<'_>,
) -> Result<Option<ExecutionDetail>> {
    let Some(execution) = get(c, id).await? else { return Ok(None) };
    detail_of(c, execution, definitions, scope).await.map(Some)
}

/// The rest of an execution whose row is in hand: definition, stages and the workflows of `scope`.
pub async fn detail_of(
    c: &impl ConnectionTrait,
    execution: Execution,
    definitions: &DefinitionCache,
    scope: Scope<'_>,
) -> Result<ExecutionDetail> {
    let id = execution.id.as_str();
    let definition = definitions.pinned_by(c, &execution).await?;
    let stages = stage::Entity::find()
        .filter(stage::Column::ExecutionId.eq(id))
        .order_by_asc(stage::Column::StageIndex)
        .all(c)
        .await?
        .into_iter()
        .map(stage_from_model)
        .collect::<Result<Vec<_>>>()?;
    let workflows = match scope {
        Scope::Whole => tasks::of_execution(c, id).await?,
        Scope::Open { task } => {
            let running = stages.iter().filter(|s| s.status == StageStatus::Running).map(|s| s.index as i32);
            tasks::open_of_execution(c, id, running.collect(), task).await?
        }
    };
    Ok(ExecutionDetail { execution, definition, stages, workflows })
}

/// Writes the rows that differ between `before` and `after` (inserting new
/// workflows), inside the caller's transaction.
pub async fn save(c: &impl ConnectionTrait, before: &ExecutionDetail, after: &ExecutionDetail) -> Result<()> {
    if before.execution != after.execution {
        let e = &after.execution;
        execution::Entity::update_many()
            .col_expr(execution::Column::Status, Expr::value(e.status.as_str()))
            .col_expr(execution::Column::StatusMessage, Expr::value(e.status_message.clone()))
            .col_expr(execution::Column::StartedAt, Expr::value(e.started_at))
            .col_expr(execution::Column::EndedAt, Expr::value(e.ended_at))
            .col_expr(execution::Column::ResumedByExecutionId, Expr::value(e.resumed_by.clone()))
            .filter(execution::Column::Id.eq(e.id.as_str()))
            .exec(c)
            .await?;
    }
    let changed: Vec<_> = before
        .stages
        .iter()
        .zip(&after.stages)
        .filter(|(old, new)| old != new)
        .map(|(_, new)| stage_model(&after.execution.id, new))
        .collect();
    if !changed.is_empty() {
        // One statement for every changed stage (one ends, the next starts).
        let key = [stage::Column::ExecutionId, stage::Column::StageIndex];
        let rest = stage::Column::iter()
            .filter(|column| !matches!(column, stage::Column::ExecutionId | stage::Column::StageIndex));
        stage::Entity::insert_many(changed)
            .on_conflict(OnConflict::columns(key).update_columns(rest).to_owned())
            .exec_without_returning(c)
            .await?;
    }
    tasks::save(c, &before.workflows, &after.workflows).await
}

/// A page of the latest execution of each chain, newest first, strictly
/// before the `before` id.
pub async fn list(
    c: &impl ConnectionTrait,
    filter: &ListFilter,
    before: Option<&str>,
    limit: u64,
) -> Result<Vec<Execution>> {
    let mut q = execution::Entity::find()
        .filter(execution::Column::ResumedByExecutionId.is_null())
        .order_by_desc(execution::Column::Id)
        .limit(limit);
    if let Some(app) = &filter.application {
        q = q.filter(execution::Column::Application.eq(app.as_str()));
    }
    if let Some(p) = &filter.pipeline_id {
        q = q.filter(execution::Column::PipelineId.eq(p.as_str()));
    }
    if let Some(s) = filter.status {
        q = q.filter(execution::Column::Status.eq(s.as_str()));
    }
    if let Some(apps) = &filter.readable {
        q = q.filter(execution::Column::Application.is_in(apps.iter().map(String::as_str)));
    }
    if let Some(b) = before {
        q = q.filter(execution::Column::Id.lt(b));
    }
    q.all(c).await?.into_iter().map(from_model).collect()
}

/// Ids of executions with an approval waiting past its deadline.
pub async fn approvals_due(c: &impl ConnectionTrait, now: i64, limit: u64) -> Result<Vec<String>> {
    Ok(stage::Entity::find()
        .select_only()
        .column(stage::Column::ExecutionId)
        .filter(stage::Column::Status.eq(StageStatus::WaitingApproval.as_str()))
        .filter(stage::Column::DeadlineAt.lte(now))
        .limit(limit)
        .into_tuple::<String>()
        .all(c)
        .await?)
}

/// The earliest approval deadline still ahead, for the timer's sleep.
pub async fn next_approval_deadline(c: &impl ConnectionTrait) -> Result<Option<i64>> {
    Ok(stage::Entity::find()
        .select_only()
        .column_as(stage::Column::DeadlineAt.min(), "d")
        .filter(stage::Column::Status.eq(StageStatus::WaitingApproval.as_str()))
        .into_tuple::<Option<i64>>()
        .one(c)
        .await?
        .flatten())
}

fn to_json(map: &BTreeMap<String, String>) -> Result<String> {
    serde_json::to_string(map).map_err(corrupt)
}

fn from_model(m: execution::Model) -> Result<Execution> {
    let resumed_from = match (m.resumed_from_execution_id, m.resume_stage_index, m.resume_stage_name) {
        (Some(execution_id), Some(index), Some(stage_name)) => {
            Some(ResumeOrigin { execution_id, stage_index: index as usize, stage_name })
        }
        _ => None,
    };
    Ok(Execution {
        resumed_from,
        resumed_by: m.resumed_by_execution_id,
        status: ExecutionStatus::parse(&m.status).ok_or_else(|| corrupt(format!("execution status {:?}", m.status)))?,
        variables: serde_json::from_str(&m.variables).map_err(corrupt)?,
        artifacts: serde_json::from_str(&m.artifacts).map_err(corrupt)?,
        id: m.id,
        pipeline_id: m.pipeline_id,
        pipeline_version: m.pipeline_version,
        application: m.application,
        status_message: m.status_message,
        request_id: m.request_id,
        triggered_by: m.triggered_by,
        chain_id: m.chain_id,
        attempt: m.attempt,
        created_at: m.created_at,
        started_at: m.started_at,
        ended_at: m.ended_at,
    })
}

fn stage_model(execution_id: &str, s: &StageRun) -> stage::ActiveModel {
    stage::ActiveModel {
        execution_id: Set(execution_id.into()),
        stage_index: Set(s.index as i32),
        name: Set(s.name.clone()),
        status: Set(s.status.as_str().into()),
        status_message: Set(s.status_message.clone()),
        started_at: Set(s.started_at),
        ended_at: Set(s.ended_at),
        deadline_at: Set(s.deadline_at),
        decided_by: Set(s.decided_by.clone()),
        decision_comment: Set(s.decision_comment.clone()),
        carried_from_execution_id: Set(s.carried_from.clone()),
    }
}

fn stage_from_model(m: stage::Model) -> Result<StageRun> {
    Ok(StageRun {
        index: m.stage_index as usize,
        status: StageStatus::parse(&m.status).ok_or_else(|| corrupt(format!("stage status {:?}", m.status)))?,
        name: m.name,
        status_message: m.status_message,
        started_at: m.started_at,
        ended_at: m.ended_at,
        deadline_at: m.deadline_at,
        decided_by: m.decided_by,
        decision_comment: m.decision_comment,
        carried_from: m.carried_from_execution_id,
    })
}

/// How many executions are in each status.
pub async fn count_by_status(c: &impl ConnectionTrait) -> Result<Vec<(ExecutionStatus, i64)>> {
    let rows: Vec<(String, i64)> = execution::Entity::find()
        .select_only()
        .column(execution::Column::Status)
        .column_as(execution::Column::Id.count(), "n")
        .group_by(execution::Column::Status)
        .into_tuple()
        .all(c)
        .await?;
    rows.into_iter()
        .map(|(s, n)| {
            ExecutionStatus::parse(&s).map(|s| (s, n)).ok_or_else(|| corrupt(format!("execution status {s:?}")))
        })
        .collect()
}
