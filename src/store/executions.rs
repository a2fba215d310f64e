//! Execution rows: insert (idempotent on the request id), lock, read, update.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, QueryResult, Value};

use super::{
    Result, corrupt,
    sql::{Columns, Part, get as col, statement},
};
use crate::domain::{
    execution::{Execution, Millis, ResumeOrigin, StageMark},
    status::ExecutionStatus,
};

pub(crate) const COLUMNS: &str = "id, pipeline_id, pipeline_version, application, status, status_message, variables, artifacts, \
    request_id, request_fingerprint, triggered_by, chain_id, attempt, revision, created_at, started_at, ended_at, \
    resumed_from_execution_id, resume_stage_index, resume_stage_name, resumed_by_execution_id, chain_created_at, \
    resume_reason, end_stage_index, end_stage_name, secrets";

/// Filters of the executions list.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub application: Option<String>,
    pub pipeline_id: Option<String>,
    pub status: Option<ExecutionStatus>,
    /// Only these applications (what the caller may read); None means all.
    pub readable: Option<Vec<String>>,
}

/// The revision [`insert`] gives a new execution.
pub const FIRST_REVISION: i64 = 0;

/// Inserts a new execution in its final state, unless its request id is
/// taken: false then (the caller reads the one that holds it). On
/// PostgreSQL a concurrent insert of the same request id waits for the other
/// transaction, so exactly one of any number of concurrent starts inserts.
pub async fn insert(c: &impl ConnectionTrait, e: &Execution, fingerprint: &str) -> Result<bool> {
    let origin = e.resumed_from.as_ref();
    let values: Vec<Value> = vec![
        e.id.clone().into(),
        e.pipeline_id.clone().into(),
        e.pipeline_version.into(),
        e.application.clone().into(),
        e.status.as_str().into(),
        e.status_message.clone().into(),
        to_json(&e.variables)?.into(),
        to_json(&e.artifacts)?.into(),
        e.request_id.clone().into(),
        fingerprint.to_owned().into(),
        e.triggered_by.clone().into(),
        e.chain_id.clone().into(),
        e.attempt.into(),
        FIRST_REVISION.into(),
        e.created_at.into(),
        e.started_at.into(),
        e.ended_at.into(),
        origin.map(|o| o.execution_id.clone()).into(),
        origin.map(|o| o.stage_index as i32).into(),
        origin.map(|o| o.stage_name.clone()).into(),
        e.resumed_by.clone().into(),
        e.chain_created_at.into(),
        origin.map(|o| o.reason.clone()).unwrap_or_default().into(),
        e.end_stage.as_ref().map(|m| m.index as i32).into(),
        e.end_stage.as_ref().map(|m| m.name.clone()).into(),
        e.sealed_secrets.clone().into(),
    ];
    let placeholders = super::sql::value_rows(1, values.len(), 1);
    let sql = format!("INSERT INTO executions ({COLUMNS}) VALUES {placeholders} ON CONFLICT (request_id) DO NOTHING");
    let r = c.execute_raw(statement(c, &sql, values)).await?;
    Ok(r.rows_affected() == 1)
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
    Ok(lock_revision(c, key).await?.map(|(e, _)| e))
}

/// [`lock`], with the revision the lock gave the execution: the revision
/// before it (one less) is the state a view read earlier may show.
pub async fn lock_revision(c: &impl ConnectionTrait, key: Key<'_>) -> Result<Option<(Execution, i64)>> {
    let (which, id) = match key {
        Key::Id(id) => ("$1", id),
        Key::OfTask(id) => ("(SELECT execution_id FROM tasks WHERE id = $1)", id),
    };
    let sql = format!("UPDATE executions SET revision = revision + 1 WHERE id = {which} RETURNING {COLUMNS}");
    let row = c.query_one_raw(statement(c, &sql, vec![id.into()])).await?;
    row.map(|r| Ok((from_row(&r)?, col::<i64>(&r, "revision")?))).transpose()
}

/// What a resume reads right after its lock, returned with it.
#[derive(Debug)]
pub struct LockedForResume {
    pub execution: Execution,
    /// The revision the lock gave it (see [`lock_revision`]).
    pub revision: i64,
    /// Whether the request id names an execution already (a retry, or a
    /// reuse the caller must be told about): only then is it read.
    pub request_taken: bool,
    /// The pipeline's latest version, for the answer.
    pub latest_version: Option<i64>,
}

/// [`lock`] for a resume, with what the resume reads next in the same
/// round trip. None if the execution does not exist.
pub async fn lock_for_resume(
    c: &impl ConnectionTrait,
    id: &str,
    request_id: Option<&str>,
) -> Result<Option<LockedForResume>> {
    let sql = format!(
        "UPDATE executions SET revision = revision + 1 WHERE id = $1 RETURNING {COLUMNS}, \
         EXISTS (SELECT 1 FROM executions r WHERE r.request_id = $2) AS request_taken, \
         (SELECT p.latest_version FROM pipelines p WHERE p.id = executions.pipeline_id) AS latest_version"
    );
    let values = vec![id.into(), request_id.map(str::to_owned).into()];
    let Some(row) = c.query_one_raw(statement(c, &sql, values)).await? else { return Ok(None) };
    Ok(Some(LockedForResume {
        execution: from_row(&row)?,
        revision: col::<i64>(&row, "revision")?,
        request_taken: col::<bool>(&row, "request_taken")?,
        latest_version: col::<Option<i64>>(&row, "latest_version")?,
    }))
}

/// Writes the fields a transition may change.
pub async fn update(c: &impl ConnectionTrait, e: &Execution) -> Result<()> {
    let part = update_part(e);
    c.execute_raw(statement(c, &part.sql, part.values)).await?;
    Ok(())
}

/// The statement of [`update`], for a batch.
pub fn update_part(e: &Execution) -> Part {
    // Placeholders in order: SQLite binds them as anonymous ones, which is
    // cheaper (see `sql::statement`), also in a batch's statement list.
    let (set, mut values) = decided_columns(e, 1);
    values.push(e.id.clone().into());
    Part { sql: format!("UPDATE executions SET {set} WHERE id = ${}", values.len()), values }
}

/// The columns of an execution's row that its progress changes (status,
/// times, where it ended), as `column = $n, …` numbered from `first`, and
/// their values.
pub(crate) fn decided_columns(e: &Execution, first: usize) -> (String, Vec<Value>) {
    let columns = [
        "status",
        "status_message",
        "started_at",
        "ended_at",
        "resumed_by_execution_id",
        "end_stage_index",
        "end_stage_name",
    ];
    let set = columns.iter().enumerate().map(|(i, c)| format!("{c} = ${}", first + i)).collect::<Vec<_>>().join(", ");
    let values = vec![
        e.status.as_str().into(),
        e.status_message.clone().into(),
        e.started_at.into(),
        e.ended_at.into(),
        e.resumed_by.clone().into(),
        e.end_stage.as_ref().map(|m| m.index as i32).into(),
        e.end_stage.as_ref().map(|m| m.name.clone()).into(),
    ];
    (set, values)
}

pub async fn get(c: &impl ConnectionTrait, id: &str) -> Result<Option<Execution>> {
    Ok(get_with_revision(c, id).await?.map(|(e, _)| e))
}

/// The execution and its revision (bumped by every change to it).
pub async fn get_with_revision(c: &impl ConnectionTrait, id: &str) -> Result<Option<(Execution, i64)>> {
    let sql = format!("SELECT {COLUMNS} FROM executions WHERE id = $1");
    let row = c.query_one_raw(statement(c, &sql, vec![id.into()])).await?;
    row.map(|r| Ok((from_row(&r)?, col::<i64>(&r, "revision")?))).transpose()
}

/// What tells whether a view of an execution is current: its revision
/// (bumped by every unit of work on it) and how many of its workflows are
/// running (a claim changes that without a unit of work). Between two
/// revisions workflows only ever go from queued to running, so the pair
/// changes whenever what the execution shows does. None if it does not exist.
pub async fn view_key(c: &impl ConnectionTrait, id: &str) -> Result<Option<(i64, i64)>> {
    let sql = "SELECT revision, (SELECT count(*) FROM tasks WHERE execution_id = $1 AND status IN ('QUEUED', 'RUNNING') \
        AND status = 'RUNNING') AS running FROM executions WHERE id = $1";
    let row = c.query_one_raw(statement(c, sql, vec![id.into()])).await?;
    row.map(|r| Ok((col::<i64>(&r, "revision")?, col::<i64>(&r, "running")?))).transpose()
}

/// The execution a task belongs to.
pub async fn of_task(c: &impl ConnectionTrait, task_id: &str) -> Result<Option<String>> {
    let row =
        c.query_one_raw(statement(c, "SELECT execution_id FROM tasks WHERE id = $1", vec![task_id.into()])).await?;
    row.map(|r| col::<String>(&r, "execution_id")).transpose()
}

/// The execution started with this request id, and that request's fingerprint.
pub async fn find_by_request_id(c: &impl ConnectionTrait, request_id: &str) -> Result<Option<(Execution, String)>> {
    let sql = format!("SELECT {COLUMNS} FROM executions WHERE request_id = $1");
    let row = c.query_one_raw(statement(c, &sql, vec![request_id.into()])).await?;
    row.map(|r| Ok((from_row(&r)?, col::<String>(&r, "request_fingerprint")?))).transpose()
}

/// A page of a chain, newest attempt first, strictly before attempt `before`.
pub async fn chain(
    c: &impl ConnectionTrait,
    chain_id: &str,
    before: Option<i32>,
    limit: u64,
) -> Result<Vec<Execution>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM executions WHERE chain_id = $1 AND attempt < $2 ORDER BY attempt DESC LIMIT {limit}"
    );
    let rows = c.query_all_raw(statement(c, &sql, vec![chain_id.into(), before.unwrap_or(i32::MAX).into()])).await?;
    rows.iter().map(from_row).collect()
}

/// A page of the latest execution of each chain, newest first, strictly
/// before the `before` id.
pub async fn list(
    c: &impl ConnectionTrait,
    filter: &ListFilter,
    before: Option<&str>,
    limit: u64,
) -> Result<Vec<Execution>> {
    let mut sql = format!("SELECT {COLUMNS} FROM executions WHERE resumed_by_execution_id IS NULL");
    let mut values: Vec<Value> = Vec::new();
    let mut bind = |sql: &mut String, clause: &str, value: Value| {
        values.push(value);
        sql.push_str(&clause.replace('?', &format!("${}", values.len())));
    };
    if let Some(app) = &filter.application {
        bind(&mut sql, " AND application = ?", app.clone().into());
    }
    if let Some(p) = &filter.pipeline_id {
        bind(&mut sql, " AND pipeline_id = ?", p.clone().into());
    }
    if let Some(s) = filter.status {
        bind(&mut sql, " AND status = ?", s.as_str().into());
    }
    if let Some(b) = before {
        bind(&mut sql, " AND id < ?", b.to_owned().into());
    }
    if let Some(apps) = &filter.readable {
        if apps.is_empty() {
            return Ok(Vec::new());
        }
        sql.push_str(" AND application IN (");
        for (i, app) in apps.iter().enumerate() {
            bind(&mut sql, if i == 0 { "?" } else { ", ?" }, app.clone().into());
        }
        sql.push(')');
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
    let rows = c.query_all_raw(statement(c, &sql, values)).await?;
    rows.iter().map(from_row).collect()
}

/// How many executions not yet final are in each status (an index of the
/// active ones only: flat however many finished executions are stored).
pub async fn count_active(c: &impl ConnectionTrait) -> Result<Vec<(ExecutionStatus, i64)>> {
    let sql = "SELECT status, count(*) AS n FROM executions \
        WHERE status IN ('QUEUED', 'RUNNING', 'PAUSED') GROUP BY status";
    let rows = c.query_all_raw(statement(c, sql, Vec::new())).await?;
    rows.iter()
        .map(|r| {
            let s: String = col(r, "status")?;
            let status = ExecutionStatus::parse(&s).ok_or_else(|| corrupt(format!("execution status {s:?}")))?;
            Ok((status, col::<i64>(r, "n")?))
        })
        .collect()
}

fn to_json(map: &BTreeMap<String, String>) -> Result<String> {
    serde_json::to_string(map).map_err(corrupt)
}

pub(crate) fn from_row(r: &QueryResult) -> Result<Execution> {
    from_prefixed(r, "")
}

/// A row whose columns carry `p` before their names (a join of several tables).
pub(crate) fn from_prefixed(r: &QueryResult, p: &str) -> Result<Execution> {
    let c = Columns::new(r, p);
    let resumed_from = match (
        c.get::<Option<String>>("resumed_from_execution_id")?,
        c.get::<Option<i32>>("resume_stage_index")?,
        c.get::<Option<String>>("resume_stage_name")?,
    ) {
        (Some(execution_id), Some(index), Some(stage_name)) => Some(ResumeOrigin {
            execution_id,
            stage_index: index as usize,
            stage_name,
            reason: c.get("resume_reason")?,
        }),
        _ => None,
    };
    let end_stage = match (c.get::<Option<i32>>("end_stage_index")?, c.get::<Option<String>>("end_stage_name")?) {
        (Some(index), Some(name)) => Some(StageMark { index: index as usize, name }),
        _ => None,
    };
    let status: String = c.get("status")?;
    let variables: String = c.get("variables")?;
    let artifacts: String = c.get("artifacts")?;
    Ok(Execution {
        resumed_from,
        end_stage,
        resumed_by: c.get("resumed_by_execution_id")?,
        status: ExecutionStatus::parse(&status).ok_or_else(|| corrupt(format!("execution status {status:?}")))?,
        variables: serde_json::from_str(&variables).map_err(corrupt)?,
        artifacts: serde_json::from_str(&artifacts).map_err(corrupt)?,
        id: c.get("id")?,
        pipeline_id: c.get("pipeline_id")?,
        pipeline_version: c.get("pipeline_version")?,
        application: c.get("application")?,
        status_message: c.get("status_message")?,
        request_id: c.get("request_id")?,
        triggered_by: c.get("triggered_by")?,
        chain_id: c.get("chain_id")?,
        attempt: c.get("attempt")?,
        chain_created_at: c.get::<Millis>("chain_created_at")?,
        created_at: c.get("created_at")?,
        started_at: c.get("started_at")?,
        ended_at: c.get("ended_at")?,
        sealed_secrets: c.get("secrets")?,
    })
}
