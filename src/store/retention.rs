//! Reading what retention may delete, and deleting it. Candidates are found
//! through partial indexes on the heads of chains (the latest execution of
//! each), oldest first; a batch is locked and re-read in the transaction
//! that deletes it, so a chain resumed meanwhile is kept.

use sea_orm::{ConnectionTrait, QueryResult, Value};

use super::{
    Result, corrupt,
    sql::{get, statement},
};
use crate::domain::{execution::Millis, retention::ChainHead, status::ExecutionStatus};

const HEAD: &str = "chain_id, status, attempt, ended_at, chain_created_at";

/// What a batch removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    pub executions: Vec<String>,
    pub stages: u64,
    pub tasks: u64,
}

/// `$first, $first+1, …` for `n` values.
fn placeholders(n: usize, first: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

fn ids(chains: &[String]) -> Vec<Value> {
    chains.iter().map(|c| c.clone().into()).collect()
}

fn head(row: &QueryResult) -> Result<ChainHead> {
    let status: String = get(row, "status")?;
    Ok(ChainHead {
        chain_id: get(row, "chain_id")?,
        status: ExecutionStatus::parse(&status).ok_or_else(|| corrupt(format!("execution status {status:?}")))?,
        attempt: get(row, "attempt")?,
        ended_at: get(row, "ended_at")?,
        chain_created_at: get(row, "chain_created_at")?,
    })
}

/// The part of a WHERE that leaves out chains that may still be resumed:
/// a head that did not succeed is kept until its chain is older than the
/// resume window (`window_start`, none: kept forever). `$n` is its value.
fn outside_window(n: usize) -> String {
    format!("(status = 'SUCCEEDED' OR chain_created_at < ${n})")
}

fn window_value(window_start: Option<Millis>) -> Value {
    window_start.unwrap_or(Millis::MIN).into()
}

/// Heads of chains whose latest execution ended before `ended_before`,
/// outside their resume window, the longest ended first.
pub async fn aged_heads(
    c: &impl ConnectionTrait,
    ended_before: Millis,
    window_start: Option<Millis>,
    limit: u64,
) -> Result<Vec<ChainHead>> {
    let sql = format!(
        "SELECT {HEAD} FROM executions WHERE resumed_by_execution_id IS NULL AND ended_at < $1 AND {} \
         ORDER BY ended_at LIMIT $3",
        outside_window(2)
    );
    let rows = c
        .query_all_raw(statement(c, &sql, vec![ended_before.into(), window_value(window_start), (limit as i64).into()]))
        .await?;
    rows.iter().map(head).collect()
}

/// How many chains [`aged_heads`] would name in all (dry runs).
pub async fn count_aged(c: &impl ConnectionTrait, ended_before: Millis, window_start: Option<Millis>) -> Result<u64> {
    let sql = format!(
        "SELECT count(*) AS n FROM executions WHERE resumed_by_execution_id IS NULL AND ended_at < $1 AND {}",
        outside_window(2)
    );
    count(c, &sql, vec![ended_before.into(), window_value(window_start)]).await
}

/// Every pipeline, for the per-pipeline rule.
pub async fn pipelines(c: &impl ConnectionTrait) -> Result<Vec<String>> {
    let rows = c.query_all_raw(statement(c, "SELECT id FROM pipelines ORDER BY id", vec![])).await?;
    rows.iter().map(|r| get(r, "id")).collect()
}

/// When the `keep`-th newest chain of a pipeline began; chains that began
/// before are beyond the newest `keep`. None: it has no more than `keep`.
async fn keep_threshold(c: &impl ConnectionTrait, pipeline_id: &str, keep: u32) -> Result<Option<Millis>> {
    let sql = "SELECT chain_created_at FROM executions WHERE pipeline_id = $1 AND resumed_by_execution_id IS NULL \
               ORDER BY chain_created_at DESC LIMIT 1 OFFSET $2";
    let offset = i64::from(keep.max(1)) - 1;
    let row = c.query_one_raw(statement(c, sql, vec![pipeline_id.into(), offset.into()])).await?;
    row.as_ref().map(|r| get(r, "chain_created_at")).transpose()
}

/// Finished heads of a pipeline's chains beyond its newest `keep`, outside
/// their resume window, oldest first.
pub async fn surplus_heads(
    c: &impl ConnectionTrait,
    pipeline_id: &str,
    keep: u32,
    window_start: Option<Millis>,
    limit: u64,
) -> Result<Vec<ChainHead>> {
    let Some(threshold) = keep_threshold(c, pipeline_id, keep).await? else { return Ok(vec![]) };
    let sql = format!(
        "SELECT {HEAD} FROM executions WHERE pipeline_id = $1 AND resumed_by_execution_id IS NULL \
         AND chain_created_at < $2 AND ended_at IS NOT NULL AND {} ORDER BY chain_created_at LIMIT $4",
        outside_window(3)
    );
    let values = vec![pipeline_id.into(), threshold.into(), window_value(window_start), (limit as i64).into()];
    let rows = c.query_all_raw(statement(c, &sql, values)).await?;
    rows.iter().map(head).collect()
}

/// How many chains [`surplus_heads`] would name in all (dry runs).
pub async fn count_surplus(
    c: &impl ConnectionTrait,
    pipeline_id: &str,
    keep: u32,
    window_start: Option<Millis>,
) -> Result<u64> {
    let Some(threshold) = keep_threshold(c, pipeline_id, keep).await? else { return Ok(0) };
    let sql = format!(
        "SELECT count(*) AS n FROM executions WHERE pipeline_id = $1 AND resumed_by_execution_id IS NULL \
         AND chain_created_at < $2 AND ended_at IS NOT NULL AND {}",
        outside_window(3)
    );
    count(c, &sql, vec![pipeline_id.into(), threshold.into(), window_value(window_start)]).await
}

/// Locks the heads of these chains as every writer of an execution does
/// (see `executions::lock`) and reads them again: a Resume that got there
/// first has made them no longer heads; one that comes after waits, then
/// finds nothing to resume.
pub async fn lock_heads(c: &impl ConnectionTrait, chains: &[String]) -> Result<Vec<ChainHead>> {
    if chains.is_empty() {
        return Ok(vec![]);
    }
    let sql = format!(
        "UPDATE executions SET revision = revision + 1 \
         WHERE resumed_by_execution_id IS NULL AND chain_id IN ({}) RETURNING {HEAD}",
        placeholders(chains.len(), 1)
    );
    let rows = c.query_all_raw(statement(c, &sql, ids(chains))).await?;
    rows.iter().map(head).collect()
}

/// Deletes whole chains: their tasks, stages and executions.
pub async fn delete_chains(c: &impl ConnectionTrait, chains: &[String]) -> Result<Deleted> {
    if chains.is_empty() {
        return Ok(Deleted::default());
    }
    let list = placeholders(chains.len(), 1);
    let of_chains = format!("SELECT id FROM executions WHERE chain_id IN ({list})");
    let tasks = c
        .execute_raw(statement(c, &format!("DELETE FROM tasks WHERE execution_id IN ({of_chains})"), ids(chains)))
        .await?
        .rows_affected();
    let stages = c
        .execute_raw(statement(c, &format!("DELETE FROM stages WHERE execution_id IN ({of_chains})"), ids(chains)))
        .await?
        .rows_affected();
    let sql = format!("DELETE FROM executions WHERE chain_id IN ({list}) RETURNING id");
    let rows = c.query_all_raw(statement(c, &sql, ids(chains))).await?;
    let executions = rows.iter().map(|r| get(r, "id")).collect::<Result<_>>()?;
    Ok(Deleted { executions, stages, tasks })
}

/// Deletes up to `limit` audit events recorded before `before`, oldest first.
pub async fn delete_audit(c: &impl ConnectionTrait, before: Millis, limit: u64) -> Result<u64> {
    let sql = "DELETE FROM audit_events WHERE id IN \
               (SELECT id FROM audit_events WHERE at < $1 ORDER BY at LIMIT $2)";
    Ok(c.execute_raw(statement(c, sql, vec![before.into(), (limit as i64).into()])).await?.rows_affected())
}

/// How many audit events were recorded before `before` (dry runs).
pub async fn count_audit(c: &impl ConnectionTrait, before: Millis) -> Result<u64> {
    count(c, "SELECT count(*) AS n FROM audit_events WHERE at < $1", vec![before.into()]).await
}

async fn count(c: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Result<u64> {
    let row = c.query_one_raw(statement(c, sql, values)).await?;
    let n: i64 = row.as_ref().map(|r| get(r, "n")).transpose()?.unwrap_or(0);
    Ok(n.max(0) as u64)
}
