//! Tasks: the rows that carry workflows to workers. Claims are one statement
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so replicas never hand out the
//! same task twice.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, FromQueryResult, Iterable, QueryFilter, QueryOrder,
    QuerySelect, Statement,
    sea_query::{Expr, ExprTrait, OnConflict},
};

use super::{Result, corrupt, entity::task, is_postgres};
use crate::domain::{
    execution::{Millis, WorkflowRun},
    status::WorkflowStatus,
};

pub async fn of_execution(c: &impl ConnectionTrait, execution_id: &str) -> Result<Vec<WorkflowRun>> {
    of_execution_matching(c, execution_id, Condition::all()).await
}

/// The open workflows of an execution, every workflow of the stages in
/// `running_stages`, and `also` if given.
pub async fn open_of_execution(
    c: &impl ConnectionTrait,
    execution_id: &str,
    running_stages: Vec<i32>,
    also: Option<&str>,
) -> Result<Vec<WorkflowRun>> {
    let open = [WorkflowStatus::Queued.as_str(), WorkflowStatus::Running.as_str()];
    let mut wanted =
        Condition::any().add(task::Column::Status.is_in(open)).add(task::Column::StageIndex.is_in(running_stages));
    if let Some(id) = also {
        wanted = wanted.add(task::Column::Id.eq(id));
    }
    of_execution_matching(c, execution_id, wanted).await
}

/// The workflows of an execution that match `wanted`, in stage and workflow order.
async fn of_execution_matching(
    c: &impl ConnectionTrait,
    execution_id: &str,
    wanted: Condition,
) -> Result<Vec<WorkflowRun>> {
    task::Entity::find()
        .filter(task::Column::ExecutionId.eq(execution_id))
        .filter(wanted)
        .order_by_asc(task::Column::StageIndex)
        .order_by_asc(task::Column::WorkflowIndex)
        .all(c)
        .await?
        .into_iter()
        .map(from_model)
        .collect()
}

pub async fn get(c: &impl ConnectionTrait, id: &str) -> Result<Option<WorkflowRun>> {
    task::Entity::find_by_id(id.to_owned()).one(c).await?.map(from_model).transpose()
}

/// Inserts workflows new in `after` and updates those that changed, in one
/// statement (a report that ends a stage also queues the next one's tasks).
pub async fn save(c: &impl ConnectionTrait, before: &[WorkflowRun], after: &[WorkflowRun]) -> Result<()> {
    let changed: Vec<_> =
        after.iter().filter(|w| before.iter().find(|b| b.task_id == w.task_id) != Some(*w)).map(to_model).collect();
    if !changed.is_empty() {
        let rest = task::Column::iter().filter(|column| !matches!(column, task::Column::Id));
        task::Entity::insert_many(changed)
            .on_conflict(OnConflict::column(task::Column::Id).update_columns(rest).to_owned())
            .exec_without_returning(c)
            .await?;
    }
    announce_queued(c, before, after).await
}

/// The PostgreSQL channel that carries "a task was queued on QUEUE" between replicas.
pub const QUEUED_CHANNEL: &str = "reprise_task_queued";

/// On PostgreSQL, tells every replica's waiting pollers that tasks were
/// queued. NOTIFY is transactional: it is delivered only if this commits.
async fn announce_queued(c: &impl ConnectionTrait, before: &[WorkflowRun], after: &[WorkflowRun]) -> Result<()> {
    if !is_postgres(c) {
        return Ok(());
    }
    let mut queues: Vec<&str> = after
        .iter()
        .filter(|w| w.status == WorkflowStatus::Queued)
        .filter(|w| !before.iter().any(|b| b.task_id == w.task_id && b.status == WorkflowStatus::Queued))
        .map(|w| w.task_queue.as_str())
        .collect();
    queues.sort_unstable();
    queues.dedup();
    for queue in queues {
        let stmt = Statement::from_sql_and_values(
            c.get_database_backend(),
            "SELECT pg_notify($1, $2)",
            [QUEUED_CHANNEL.into(), queue.into()],
        );
        c.execute_raw(stmt).await?;
    }
    Ok(())
}

/// Leases the oldest queued task of `queue` to a worker, in one statement
/// that also returns the leased task. None if the queue is empty.
pub async fn claim(
    c: &impl ConnectionTrait,
    queue: &str,
    worker: &str,
    lease_token: &str,
    now: Millis,
    lease_ms: i64,
) -> Result<Option<WorkflowRun>> {
    let (sql, lock) = if is_postgres(c) { (CLAIM_PG, " FOR UPDATE SKIP LOCKED") } else { (CLAIM_SQLITE, "") };
    let sql = sql.replace("{lock}", lock);
    let stmt = Statement::from_sql_and_values(
        c.get_database_backend(),
        sql,
        [lease_token.into(), worker.into(), (now + lease_ms).into(), now.into(), queue.into()],
    );
    let Some(row) = c.query_one_raw(stmt).await? else { return Ok(None) };
    from_model(task::Model::from_query_result(&row, "")?).map(Some)
}

const CLAIM_PG: &str = "UPDATE tasks SET status = 'RUNNING', attempt = attempt + 1, lease_token = $1, \
    lease_owner = $2, lease_expires_at = $3, deadline_at = $4 + timeout_ms, started_at = COALESCE(started_at, $4) \
    WHERE id = (SELECT id FROM tasks WHERE task_queue = $5 AND status = 'QUEUED' ORDER BY id LIMIT 1{lock}) \
    RETURNING *";
const CLAIM_SQLITE: &str = "UPDATE tasks SET status = 'RUNNING', attempt = attempt + 1, lease_token = ?1, \
    lease_owner = ?2, lease_expires_at = ?3, deadline_at = ?4 + timeout_ms, started_at = COALESCE(started_at, ?4) \
    WHERE id = (SELECT id FROM tasks WHERE task_queue = ?5 AND status = 'QUEUED' ORDER BY id LIMIT 1{lock}) \
    RETURNING *";

/// Extends a running task's lease if `lease_token` still holds it.
pub async fn extend_lease(c: &impl ConnectionTrait, id: &str, lease_token: &str, until: Millis) -> Result<bool> {
    let r = task::Entity::update_many()
        .col_expr(task::Column::LeaseExpiresAt, Expr::value(until))
        .filter(task::Column::Id.eq(id))
        .filter(task::Column::LeaseToken.eq(lease_token))
        .filter(task::Column::Status.eq(WorkflowStatus::Running.as_str()))
        .exec(c)
        .await?;
    Ok(r.rows_affected == 1)
}

/// Running tasks whose lease or deadline has passed: (task id, execution id).
pub async fn due(c: &impl ConnectionTrait, now: Millis, limit: u64) -> Result<Vec<(String, String)>> {
    Ok(task::Entity::find()
        .select_only()
        .column(task::Column::Id)
        .column(task::Column::ExecutionId)
        .filter(task::Column::Status.eq(WorkflowStatus::Running.as_str()))
        .filter(task::Column::LeaseExpiresAt.lte(now).or(task::Column::DeadlineAt.lte(now)))
        .limit(limit)
        .into_tuple::<(String, String)>()
        .all(c)
        .await?)
}

/// The earliest lease expiry or deadline among running tasks.
pub async fn next_due(c: &impl ConnectionTrait) -> Result<Option<Millis>> {
    let (lease, deadline) = task::Entity::find()
        .select_only()
        .column_as(task::Column::LeaseExpiresAt.min(), "l")
        .column_as(task::Column::DeadlineAt.min(), "d")
        .filter(task::Column::Status.eq(WorkflowStatus::Running.as_str()))
        .into_tuple::<(Option<i64>, Option<i64>)>()
        .one(c)
        .await?
        .unwrap_or((None, None));
    Ok(lease.into_iter().chain(deadline).min())
}

/// Queues that have tasks waiting, to wake pollers after a restart.
pub async fn queues_with_work(c: &impl ConnectionTrait) -> Result<Vec<String>> {
    Ok(task::Entity::find()
        .select_only()
        .column(task::Column::TaskQueue)
        .distinct()
        .filter(task::Column::Status.eq(WorkflowStatus::Queued.as_str()))
        .into_tuple::<String>()
        .all(c)
        .await?)
}

fn to_model(w: &WorkflowRun) -> task::ActiveModel {
    task::ActiveModel {
        id: Set(w.task_id.clone()),
        execution_id: Set(w.execution_id.clone()),
        stage_index: Set(w.stage_index as i32),
        workflow_index: Set(w.workflow_index as i32),
        name: Set(w.name.clone()),
        task_queue: Set(w.task_queue.clone()),
        command: Set(w.command.clone()),
        timeout_ms: Set(w.timeout_ms),
        status: Set(w.status.as_str().into()),
        attempt: Set(w.attempt),
        max_attempts: Set(w.max_attempts),
        exit_code: Set(w.exit_code),
        output: Set(w.output.clone()),
        status_message: Set(w.status_message.clone()),
        created_at: Set(w.created_at),
        started_at: Set(w.started_at),
        ended_at: Set(w.ended_at),
        lease_token: Set(w.lease_token.clone()),
        lease_owner: Set(w.lease_owner.clone()),
        lease_expires_at: Set(w.lease_expires_at),
        deadline_at: Set(w.deadline_at),
    }
}

fn from_model(m: task::Model) -> Result<WorkflowRun> {
    Ok(WorkflowRun {
        status: WorkflowStatus::parse(&m.status).ok_or_else(|| corrupt(format!("task status {:?}", m.status)))?,
        task_id: m.id,
        execution_id: m.execution_id,
        stage_index: m.stage_index as usize,
        workflow_index: m.workflow_index as usize,
        name: m.name,
        task_queue: m.task_queue,
        command: m.command,
        timeout_ms: m.timeout_ms,
        attempt: m.attempt,
        max_attempts: m.max_attempts,
        exit_code: m.exit_code,
        output: m.output,
        status_message: m.status_message,
        created_at: m.created_at,
        started_at: m.started_at,
        ended_at: m.ended_at,
        lease_token: m.lease_token,
        lease_owner: m.lease_owner,
        lease_expires_at: m.lease_expires_at,
        deadline_at: m.deadline_at,
    })
}

/// How many tasks wait in each queue.
pub async fn waiting_by_queue(c: &impl ConnectionTrait) -> Result<Vec<(String, i64)>> {
    Ok(task::Entity::find()
        .select_only()
        .column(task::Column::TaskQueue)
        .column_as(task::Column::Id.count(), "n")
        .filter(task::Column::Status.eq(WorkflowStatus::Queued.as_str()))
        .group_by(task::Column::TaskQueue)
        .into_tuple()
        .all(c)
        .await?)
}
