//! Tasks: the rows that carry workflows to workers. Claims are one statement
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so replicas never hand out the
//! same task twice. Every query on the hot path goes through an index that
//! holds only open tasks, so its cost does not grow with finished work.

use sea_orm::{ConnectionTrait, QueryResult, Value};

use super::{
    Result, corrupt,
    sql::{Columns, Part, chunk_rows, get, statement, value_rows},
};
use crate::domain::{
    execution::{Millis, StageRun, WorkflowRun},
    status::WorkflowStatus,
};

const COLUMNS: &str = "id, execution_id, stage_index, workflow_index, name, task_queue, command, timeout_ms, status, \
    attempt, max_attempts, exit_code, output, status_message, created_at, started_at, ended_at, lease_token, \
    lease_owner, lease_expires_at, deadline_at, output_chars";
const WIDTH: usize = 22;

/// How much of an attempt's output a task row keeps: its last characters.
pub const KEPT_OUTPUT_CHARS: i64 = 65_536;

/// SQL for `output` with `$text` appended in place of its last `$replaces`
/// characters, cut to the kept tail.
fn appended_output(c: &impl ConnectionTrait, text: usize, replaces: usize) -> String {
    appended(super::is_pg(c), "output", &format!("${text}"), &format!("${replaces}"))
}

/// [`appended_output`] of any SQL expressions: the kept `output`, the
/// `text` to append and how many characters it `replaces`.
fn appended(pg: bool, output: &str, text: &str, replaces: &str) -> String {
    if pg {
        format!(
            "right(left({output}, char_length({output}) - CAST({replaces} AS INTEGER)) || {text}, {KEPT_OUTPUT_CHARS})"
        )
    } else {
        format!("substr(substr({output}, 1, length({output}) - {replaces}) || {text}, -{KEPT_OUTPUT_CHARS})")
    }
}

/// Output to add to what a task keeps: `text` goes in place of the last
/// `replaces` characters kept (a secret cut between two pieces of output is
/// masked over the seam, see `engine::tasks`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Piece<'a> {
    pub text: &'a str,
    pub replaces: i64,
}

impl Piece<'_> {
    /// By how many characters the attempt's output grows.
    fn added(&self) -> i64 {
        self.text.chars().count() as i64 - self.replaces
    }
}

/// What a heartbeat tells of the output the server has received for the
/// attempt, in the worker's characters (before masking and cutting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// This many more.
    Add(i64),
    /// This many in all.
    Now(i64),
}

/// How many characters of output the attempt holding `lease_token` has
/// sent (see [`Received`]) and the last `tail` characters of what is kept
/// of it ("" for 0; what a secret cut by the seam is masked across), its
/// row locked until the transaction ends; None if the lease is not held.
pub async fn output_received(
    c: &impl ConnectionTrait,
    id: &str,
    lease_token: &str,
    tail: i64,
) -> Result<Option<(i64, String)>> {
    let lock = if super::is_pg(c) { " FOR UPDATE" } else { "" };
    let sql = format!(
        "SELECT output_received, {} AS tail FROM tasks \
         WHERE id = $1 AND lease_token = $2 AND status = 'RUNNING'{lock}",
        kept_tail(c, "$3")
    );
    let row = c.query_one_raw(statement(c, &sql, vec![id.into(), lease_token.into(), tail.into()])).await?;
    row.map(|r| Ok((get::<i64>(&r, "output_received")?, get::<String>(&r, "tail")?))).transpose()
}

/// The last `chars` characters a task keeps of its output ("" if none).
pub async fn output_tail(c: &impl ConnectionTrait, id: &str, chars: i64) -> Result<String> {
    let sql = format!("SELECT {} AS tail FROM tasks WHERE id = $1", kept_tail(c, "$2"));
    let row = c.query_one_raw(statement(c, &sql, vec![id.into(), chars.into()])).await?;
    Ok(row.map(|r| get::<String>(&r, "tail")).transpose()?.unwrap_or_default())
}

/// The last `chars` (a parameter) characters of the kept output, "" for 0
/// (SQLite's `substr(x, -0)` would be all of it).
fn kept_tail(c: &impl ConnectionTrait, chars: &str) -> String {
    if super::is_pg(c) {
        format!("right(output, CAST({chars} AS INTEGER))")
    } else {
        format!("CASE WHEN {chars} > 0 THEN substr(output, -{chars}) ELSE '' END")
    }
}

pub async fn get_one(c: &impl ConnectionTrait, id: &str) -> Result<Option<WorkflowRun>> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = $1");
    let row = c.query_one_raw(statement(c, &sql, vec![id.into()])).await?;
    row.as_ref().map(from_row).transpose()
}

/// The statements that insert new tasks (queued, or already leased to a
/// waiting worker). On PostgreSQL one statement of one parameter, the rows
/// as JSON: its text is the same for any number of tasks (prepared once per
/// connection) and binding it costs one value, where a multi-row VALUES of
/// 22 parameters a row cost more to parse and bind than to run (a 100-wide
/// stage's dispatch, a resume of one). On SQLite multi-row VALUES, as few
/// as the parameter limit allows.
pub fn insert_parts(c: &impl ConnectionTrait, tasks: &[WorkflowRun]) -> Vec<Part> {
    if tasks.is_empty() {
        return Vec::new();
    }
    if super::is_pg(c) {
        let rows: Vec<JsonRow> = tasks.iter().map(JsonRow::from).collect();
        let json = serde_json::to_string(&rows).expect("task rows serialize");
        let sql = format!(
            "INSERT INTO tasks ({COLUMNS}) SELECT {COLUMNS} FROM json_to_recordset(CAST($1 AS json)) AS r(\
             id text, execution_id text, stage_index integer, workflow_index integer, name text, task_queue text, \
             command text, timeout_ms bigint, status text, attempt integer, max_attempts integer, exit_code integer, \
             output text, status_message text, created_at bigint, started_at bigint, ended_at bigint, \
             lease_token text, lease_owner text, lease_expires_at bigint, deadline_at bigint, output_chars bigint)"
        );
        return vec![Part { sql, values: vec![json.into()] }];
    }
    tasks
        .chunks(chunk_rows(WIDTH))
        .map(|chunk| {
            let mut values = Vec::with_capacity(chunk.len() * WIDTH);
            for w in chunk {
                values.extend(row_values(w));
            }
            Part { sql: format!("INSERT INTO tasks ({COLUMNS}) VALUES {}", value_rows(chunk.len(), WIDTH, 1)), values }
        })
        .collect()
}

/// A task row as `json_to_recordset` reads it (names as in [`COLUMNS`]).
#[derive(serde::Serialize)]
struct JsonRow<'a> {
    id: &'a str,
    execution_id: &'a str,
    stage_index: usize,
    workflow_index: usize,
    name: &'a str,
    task_queue: &'a str,
    command: &'a str,
    timeout_ms: i64,
    status: &'static str,
    attempt: i32,
    max_attempts: i32,
    exit_code: Option<i32>,
    output: &'a str,
    status_message: &'a str,
    created_at: Millis,
    started_at: Option<Millis>,
    ended_at: Option<Millis>,
    lease_token: Option<&'a str>,
    lease_owner: Option<&'a str>,
    lease_expires_at: Option<Millis>,
    deadline_at: Option<Millis>,
    output_chars: i64,
}

impl<'a> From<&'a WorkflowRun> for JsonRow<'a> {
    fn from(w: &'a WorkflowRun) -> Self {
        JsonRow {
            id: &w.task_id,
            execution_id: &w.execution_id,
            stage_index: w.stage_index,
            workflow_index: w.workflow_index,
            name: &w.name,
            task_queue: &w.task_queue,
            command: &w.command,
            timeout_ms: w.timeout_ms,
            status: w.status.as_str(),
            attempt: w.attempt,
            max_attempts: w.max_attempts,
            exit_code: w.exit_code,
            output: &w.output,
            status_message: &w.status_message,
            created_at: w.created_at,
            started_at: w.started_at,
            ended_at: w.ended_at,
            lease_token: w.lease_token.as_deref(),
            lease_owner: w.lease_owner.as_deref(),
            lease_expires_at: w.lease_expires_at,
            deadline_at: w.deadline_at,
            output_chars: w.output_chars,
        }
    }
}

/// What a worker reported about a task.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    pub status: WorkflowStatus,
    pub exit_code: Option<i32>,
    pub output: Piece<'a>,
    pub message: &'a str,
}

/// Records a running task's end if `lease_token` still holds it; the task as
/// it now is, or None when the lease is not held (nothing is written then).
/// A report that arrives after the workflow's deadline records the expiry
/// the timer would have (whichever of the two comes first).
async fn report(
    c: &impl ConnectionTrait,
    id: &str,
    lease_token: &str,
    r: &Report<'_>,
    now: Millis,
) -> Result<Option<WorkflowRun>> {
    let sql = format!(
        "UPDATE tasks SET \
         status = CASE WHEN deadline_at <= $7 THEN 'EXPIRED' ELSE $3 END, exit_code = $4, \
         output = {output}, output_chars = output_chars + $8, \
         status_message = CASE WHEN deadline_at <= $7 \
           THEN 'ran past its timeout of ' || CAST(timeout_ms AS TEXT) || ' ms' ELSE $6 END, \
         ended_at = $7, lease_expires_at = NULL \
         WHERE id = $1 AND lease_token = $2 AND status = 'RUNNING' RETURNING {COLUMNS}",
        output = appended_output(c, 5, 9),
    );
    let values = vec![
        id.into(),
        lease_token.into(),
        r.status.as_str().into(),
        r.exit_code.into(),
        r.output.text.to_owned().into(),
        r.message.to_owned().into(),
        now.into(),
        r.output.added().into(),
        r.output.replaces.into(),
    ];
    let row = c.query_one_raw(statement(c, &sql, values)).await?;
    row.as_ref().map(from_row).transpose()
}

/// A running task whose lease or deadline passed, ended by a timer: the
/// task as it now is, or None if it is no longer running.
pub async fn end_running(
    c: &impl ConnectionTrait,
    id: &str,
    status: WorkflowStatus,
    message: &str,
    now: Millis,
) -> Result<Option<WorkflowRun>> {
    let sql = format!(
        "UPDATE tasks SET status = $2, status_message = $3, ended_at = $4, lease_expires_at = NULL \
         WHERE id = $1 AND status = 'RUNNING' RETURNING {COLUMNS}"
    );
    let values = vec![id.into(), status.as_str().into(), message.into(), now.into()];
    let row = c.query_one_raw(statement(c, &sql, values)).await?;
    row.as_ref().map(from_row).transpose()
}

/// Offers a running task whose lease expired to workers again.
pub async fn requeue(c: &impl ConnectionTrait, id: &str, message: &str) -> Result<bool> {
    let sql = "UPDATE tasks SET status = 'QUEUED', status_message = $2, lease_token = NULL, lease_owner = NULL, \
        lease_expires_at = NULL, deadline_at = NULL WHERE id = $1 AND status = 'RUNNING'";
    let r = c.execute_raw(statement(c, sql, vec![id.into(), message.into()])).await?;
    Ok(r.rows_affected() == 1)
}

/// Gives back a lease that was granted to a worker that never received it
/// (its poll ended first): the task is queued again as if never handed out.
pub async fn release(c: &impl ConnectionTrait, id: &str, lease_token: &str) -> Result<bool> {
    let sql = "UPDATE tasks SET status = 'QUEUED', attempt = attempt - 1, lease_token = NULL, lease_owner = NULL, \
        lease_expires_at = NULL, deadline_at = NULL, started_at = NULL, output = '', output_chars = 0, \
        output_received = 0 WHERE id = $1 AND lease_token = $2 AND status = 'RUNNING'";
    let r = c.execute_raw(statement(c, sql, vec![id.into(), lease_token.into()])).await?;
    Ok(r.rows_affected() == 1)
}

/// The statement that cancels the open workflows of an execution (of one
/// stage when given). Only open rows are touched, through their own index.
pub fn cancel_open_part(execution_id: &str, stage: Option<usize>, message: &str, now: Millis) -> Part {
    let mut sql = "UPDATE tasks SET status = 'CANCELLED', status_message = $2, ended_at = $3 \
        WHERE execution_id = $1 AND status IN ('QUEUED', 'RUNNING')"
        .to_owned();
    let mut values: Vec<Value> = vec![execution_id.into(), message.into(), now.into()];
    if let Some(stage) = stage {
        sql.push_str(" AND stage_index = $4");
        values.push((stage as i32).into());
    }
    Part { sql, values }
}

/// The workflows an execution shows: its own, and for each carried-over
/// stage those of the execution where that stage ran.
pub async fn of_view(c: &impl ConnectionTrait, execution_id: &str, stages: &[StageRun]) -> Result<Vec<WorkflowRun>> {
    let own_from = stages.iter().position(|s| s.carried_from.is_none()).unwrap_or(stages.len());
    let mut sql = format!("SELECT {COLUMNS} FROM tasks WHERE (execution_id = $1 AND stage_index >= $2)");
    let mut values: Vec<Value> = vec![execution_id.into(), (own_from as i32).into()];
    // Carried stages form a prefix; group them by the execution they ran in.
    let mut sources: Vec<(&str, Vec<usize>)> = Vec::new();
    for s in &stages[..own_from] {
        let Some(source) = s.carried_from.as_deref() else { continue };
        match sources.iter_mut().find(|(id, _)| *id == source) {
            Some((_, indexes)) => indexes.push(s.index),
            None => sources.push((source, vec![s.index])),
        }
    }
    for (source, indexes) in sources {
        values.push(source.into());
        sql.push_str(&format!(" OR (execution_id = ${} AND stage_index IN (", values.len()));
        for (i, index) in indexes.iter().enumerate() {
            values.push((*index as i32).into());
            sql.push_str(&format!("{}${}", if i == 0 { "" } else { ", " }, values.len()));
        }
        sql.push_str("))");
    }
    sql.push_str(" ORDER BY stage_index, workflow_index");
    let rows = c.query_all_raw(statement(c, &sql, values)).await?;
    rows.iter().map(from_row).collect()
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
    origin: &str,
) -> Result<Option<WorkflowRun>> {
    let update = "UPDATE tasks SET status = 'RUNNING', attempt = attempt + 1, lease_token = $1, lease_owner = $2, \
         lease_expires_at = $3, deadline_at = $4 + timeout_ms, started_at = COALESCE(started_at, $4), \
         output = '', output_chars = 0, output_received = 0 \
         WHERE id = (SELECT id FROM tasks WHERE task_queue = $5 AND status = 'QUEUED' ORDER BY id LIMIT 1";
    let mut values: Vec<Value> =
        vec![lease_token.into(), worker.into(), (now + lease_ms).into(), now.into(), queue.into()];
    let sql = if super::is_pg(c) {
        // The same statement tells the other replicas: the execution's
        // watchers, and their timers (the lease must expire somewhere if
        // this replica dies), signed so that this replica knows it as its own.
        values.push(super::EVENTS_CHANNEL.into());
        values.push(format!("r {origin}\nc ").into());
        values.push(format!("\nd {}", now + lease_ms).into());
        format!(
            "WITH claimed AS ({update} FOR UPDATE SKIP LOCKED) RETURNING {COLUMNS}), \
             told AS (SELECT pg_notify($6, $7 || execution_id || $8) FROM claimed) \
             SELECT claimed.* FROM claimed LEFT JOIN told ON true"
        )
    } else {
        format!("{update}) RETURNING {COLUMNS}")
    };
    let row = c.query_one_raw(statement(c, &sql, values)).await?;
    row.as_ref().map(from_row).transpose()
}

/// Extends a running task's lease if `lease_token` still holds it, and
/// appends `output` the worker sent with it. On PostgreSQL new output is
/// announced to the other replicas (for followers of the output).
pub async fn extend_lease(
    c: &impl ConnectionTrait,
    id: &str,
    lease_token: &str,
    until: Millis,
    output: Piece<'_>,
    received: Received,
) -> Result<bool> {
    if output.text.is_empty() && received == Received::Add(0) {
        let sql = "UPDATE tasks SET lease_expires_at = $3 WHERE id = $1 AND lease_token = $2 AND status = 'RUNNING'";
        let r = c.execute_raw(statement(c, sql, vec![id.into(), lease_token.into(), until.into()])).await?;
        return Ok(r.rows_affected() == 1);
    }
    let update = format!(
        "UPDATE tasks SET lease_expires_at = $3, output = {}, output_chars = output_chars + $5, \
         output_received = CASE WHEN $7 = 1 THEN $8 ELSE output_received + $8 END \
         WHERE id = $1 AND lease_token = $2 AND status = 'RUNNING'",
        appended_output(c, 4, 6)
    );
    let (set, n): (i32, i64) = match received {
        Received::Add(n) => (0, n),
        Received::Now(n) => (1, n),
    };
    let mut values: Vec<Value> = vec![
        id.into(),
        lease_token.into(),
        until.into(),
        output.text.into(),
        output.added().into(),
        output.replaces.into(),
        set.into(),
        n.into(),
    ];
    if super::is_pg(c) {
        values.push(super::EVENTS_CHANNEL.into());
        let sql = format!(
            "WITH u AS ({update} RETURNING id), n AS (SELECT 1 AS one FROM u, pg_notify($9, 'o ' || u.id)) \
             SELECT count(*) AS n FROM u LEFT JOIN n ON true"
        );
        let row = c.query_one_raw(statement(c, &sql, values)).await?;
        return Ok(row.map(|r| get::<i64>(&r, "n")).transpose()?.unwrap_or(0) > 0);
    }
    let r = c.execute_raw(statement(c, &update, values)).await?;
    Ok(r.rows_affected() == 1)
}

/// What a task's output page needs: the kept output, how many characters
/// the attempt produced, the status and the execution it belongs to.
pub async fn output_of(c: &impl ConnectionTrait, id: &str) -> Result<Option<(String, i64, WorkflowStatus, String)>> {
    let sql = "SELECT output, output_chars, status, execution_id FROM tasks WHERE id = $1";
    let row = c.query_one_raw(statement(c, sql, vec![id.into()])).await?;
    let Some(r) = row else { return Ok(None) };
    let status: String = get(&r, "status")?;
    let status = WorkflowStatus::parse(&status).ok_or_else(|| corrupt(format!("task status {status:?}")))?;
    Ok(Some((get(&r, "output")?, get(&r, "output_chars")?, status, get(&r, "execution_id")?)))
}

/// Running tasks whose lease or deadline has passed: (task id, execution id).
pub async fn due(c: &impl ConnectionTrait, now: Millis, limit: u64) -> Result<Vec<(String, String)>> {
    let sql = format!(
        "SELECT id, execution_id FROM tasks WHERE status = 'RUNNING' AND lease_expires_at <= $1 \
         UNION SELECT id, execution_id FROM tasks WHERE status = 'RUNNING' AND deadline_at <= $1 LIMIT {limit}"
    );
    let rows = c.query_all_raw(statement(c, &sql, vec![now.into()])).await?;
    rows.iter().map(|r| Ok((get(r, "id")?, get(r, "execution_id")?))).collect()
}

/// The earliest lease expiry or deadline among running tasks.
pub async fn next_due(c: &impl ConnectionTrait) -> Result<Option<Millis>> {
    let sql = "SELECT (SELECT min(lease_expires_at) FROM tasks WHERE status = 'RUNNING') AS l, \
        (SELECT min(deadline_at) FROM tasks WHERE status = 'RUNNING') AS d";
    let row = c.query_one_raw(statement(c, sql, Vec::new())).await?;
    let Some(row) = row else { return Ok(None) };
    let (l, d): (Option<i64>, Option<i64>) = (get(&row, "l")?, get(&row, "d")?);
    Ok(l.into_iter().chain(d).min())
}

/// Queues that have tasks waiting, to wake pollers after a restart.
pub async fn queues_with_work(c: &impl ConnectionTrait) -> Result<Vec<String>> {
    let sql = "SELECT DISTINCT task_queue FROM tasks WHERE status = 'QUEUED'";
    let rows = c.query_all_raw(statement(c, sql, Vec::new())).await?;
    rows.iter().map(|r| get(r, "task_queue")).collect()
}

/// How many tasks wait in each queue.
pub async fn waiting_by_queue(c: &impl ConnectionTrait) -> Result<Vec<(String, i64)>> {
    let sql = "SELECT task_queue, count(*) AS n FROM tasks WHERE status = 'QUEUED' GROUP BY task_queue";
    let rows = c.query_all_raw(statement(c, sql, Vec::new())).await?;
    rows.iter().map(|r| Ok((get(r, "task_queue")?, get(r, "n")?))).collect()
}

fn row_values(w: &WorkflowRun) -> [Value; WIDTH] {
    [
        w.task_id.clone().into(),
        w.execution_id.clone().into(),
        (w.stage_index as i32).into(),
        (w.workflow_index as i32).into(),
        w.name.clone().into(),
        w.task_queue.clone().into(),
        w.command.clone().into(),
        w.timeout_ms.into(),
        w.status.as_str().into(),
        w.attempt.into(),
        w.max_attempts.into(),
        w.exit_code.into(),
        w.output.clone().into(),
        w.status_message.clone().into(),
        w.created_at.into(),
        w.started_at.into(),
        w.ended_at.into(),
        w.lease_token.clone().into(),
        w.lease_owner.clone().into(),
        w.lease_expires_at.into(),
        w.deadline_at.into(),
        w.output_chars.into(),
    ]
}

fn from_row(r: &QueryResult) -> Result<WorkflowRun> {
    from_prefixed(r, "")
}

/// A row whose columns carry `p` before their names (a join of several tables).
pub(crate) fn from_prefixed(r: &QueryResult, p: &str) -> Result<WorkflowRun> {
    let c = Columns::new(r, p);
    let status: String = c.get("status")?;
    Ok(WorkflowRun {
        status: WorkflowStatus::parse(&status).ok_or_else(|| corrupt(format!("task status {status:?}")))?,
        task_id: c.get("id")?,
        execution_id: c.get("execution_id")?,
        stage_index: c.get::<i32>("stage_index")? as usize,
        workflow_index: c.get::<i32>("workflow_index")? as usize,
        name: c.get("name")?,
        task_queue: c.get("task_queue")?,
        command: c.get("command")?,
        timeout_ms: c.get("timeout_ms")?,
        attempt: c.get("attempt")?,
        max_attempts: c.get("max_attempts")?,
        exit_code: c.get("exit_code")?,
        output: c.get("output")?,
        status_message: c.get("status_message")?,
        created_at: c.get("created_at")?,
        started_at: c.get("started_at")?,
        ended_at: c.get("ended_at")?,
        lease_token: c.get("lease_token")?,
        lease_owner: c.get("lease_owner")?,
        lease_expires_at: c.get("lease_expires_at")?,
        deadline_at: c.get("deadline_at")?,
        output_chars: c.get("output_chars")?,
    })
}

/// What a group of reports did: the execution (locked), each reported task
/// as it now is, in the order given (None where the lease was not held:
/// nothing was written for it), and the stages of those tasks with their
/// ends counted.
#[derive(Debug)]
pub struct Reported {
    pub execution: crate::domain::execution::Execution,
    /// The revision the lock gave the execution.
    pub revision: i64,
    pub tasks: Vec<Option<WorkflowRun>>,
    pub stages: Vec<StageRun>,
}

/// One worker's report of its task's end, for [`report_counted`].
pub struct TaskReport<'a> {
    pub task_id: &'a str,
    pub lease_token: &'a str,
    pub report: Report<'a>,
    /// For [`report_at_once`]: the output is the piece as the worker sent
    /// it, beginning this many characters into what it sent; the statement
    /// keeps only what the task's row says was not received yet.
    pub received_from: Option<i64>,
}

/// Of a failure message, what a stage's and execution's "why" repeats.
pub const NOTE_CHARS: usize = 256;

/// Values per report in [`report_counted`]'s statement.
const REPORT_WIDTH: usize = 10;

/// Locks the execution, records the reports of its tasks and counts their
/// ends on their stages (a stage's first failure, in the order given, is
/// the one it repeats). On PostgreSQL one statement however many reports
/// there are (and it tells the other replicas the execution changed, once
/// this commits); on SQLite one per report and one per stage, in-process.
/// None if the execution does not exist.
pub async fn report_counted(
    c: &impl ConnectionTrait,
    execution_id: &str,
    reports: &[TaskReport<'_>],
    now: Millis,
    origin: &str,
) -> Result<Option<Reported>> {
    use super::{executions, stages};
    use crate::domain::execution::{CountsDelta, FailureNote, WorkflowCounts};
    if !super::is_pg(c) {
        let Some((execution, revision)) = executions::lock_revision(c, executions::Key::Id(execution_id)).await? else {
            return Ok(None);
        };
        let mut tasks = Vec::with_capacity(reports.len());
        let mut ends: Vec<(usize, CountsDelta, Option<FailureNote>)> = Vec::new();
        for r in reports {
            let task = report(c, r.task_id, r.lease_token, &r.report, now).await?;
            if let Some(task) = &task {
                let i = match ends.iter().position(|(index, ..)| *index == task.stage_index) {
                    Some(i) => i,
                    None => {
                        ends.push((task.stage_index, CountsDelta::default(), None));
                        ends.len() - 1
                    }
                };
                let (_, delta, failure) = &mut ends[i];
                *delta += WorkflowCounts::delta_of_end(task.status);
                if failure.is_none() && matches!(task.status, WorkflowStatus::Failed | WorkflowStatus::Expired) {
                    *failure = Some(FailureNote { workflow: task.name.clone(), message: note(&task.status_message) });
                }
            }
            tasks.push(task);
        }
        let mut counted = Vec::with_capacity(ends.len());
        for (index, delta, failure) in ends {
            counted.extend(stages::count_end(c, execution_id, index, delta, failure.as_ref()).await?);
        }
        return Ok(Some(Reported { execution, revision, tasks, stages: counted }));
    }
    let alias = |table: &str, columns: &str| {
        columns
            .split(',')
            .map(|c| c.trim())
            .map(|c| format!("{table}.{c} AS {table}_{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut execution = None;
    let mut revision = 0;
    let mut tasks: Vec<Option<WorkflowRun>> = Vec::with_capacity(reports.len());
    let mut counted: Vec<StageRun> = Vec::new();
    // Chunks keep the statement within the parameter limit; each counts its
    // own ends, so the last chunk's stage row is the stage as it now is.
    for (n, chunk) in reports.chunks(chunk_rows(REPORT_WIDTH)).enumerate() {
        let sql = format!(
            "WITH e AS (UPDATE executions SET revision = revision + 1 WHERE id = $1 RETURNING {exec}), \
             r (ord, id, lease_token, status, exit_code, output, message, added, replaces, received_from) \
               AS (VALUES {rows}), \
             t AS (UPDATE tasks SET \
               status = CASE WHEN tasks.deadline_at <= $2 THEN 'EXPIRED' ELSE r.status END, exit_code = r.exit_code, \
               output = {output}, \
               output_chars = tasks.output_chars + r.added, \
               status_message = CASE WHEN tasks.deadline_at <= $2 \
                 THEN 'ran past its timeout of ' || CAST(tasks.timeout_ms AS TEXT) || ' ms' ELSE r.message END, \
               ended_at = $2, lease_expires_at = NULL \
               FROM r WHERE tasks.id = r.id AND tasks.lease_token = r.lease_token AND tasks.status = 'RUNNING' \
               AND EXISTS (SELECT 1 FROM e) \
               RETURNING r.ord, {task_cols}), \
             f AS (SELECT DISTINCT ON (stage_index) stage_index, name, \
               CASE WHEN length(status_message) > {NOTE_CHARS} \
                 THEN left(status_message, {NOTE_CHARS}) || '…' ELSE status_message END AS message \
               FROM t WHERE status IN ('FAILED', 'EXPIRED') ORDER BY stage_index, ord), \
             a AS (SELECT execution_id, stage_index, count(*) AS ended, \
               sum(CASE WHEN status = 'FAILED' THEN 1 ELSE 0 END) AS failed, \
               sum(CASE WHEN status = 'EXPIRED' THEN 1 ELSE 0 END) AS expired \
               FROM t GROUP BY execution_id, stage_index), \
             s AS (UPDATE stages SET wf_open = wf_open - a.ended, wf_failed = wf_failed + a.failed, \
               wf_expired = wf_expired + a.expired, \
               failure_message = CASE WHEN stages.failure_workflow IS NULL AND f.name IS NOT NULL \
                 THEN f.message ELSE stages.failure_message END, \
               failure_workflow = COALESCE(stages.failure_workflow, f.name) \
               FROM a LEFT JOIN f ON f.stage_index = a.stage_index \
               WHERE stages.execution_id = a.execution_id AND stages.stage_index = a.stage_index \
               RETURNING {stage_cols}), \
             n AS (SELECT 1 AS one FROM e, pg_notify($3, $4 || e.id)) \
             SELECT {e}, t.ord AS t_ord, {t}, {s} FROM e LEFT JOIN t ON true \
             LEFT JOIN s ON s.stage_index = t.stage_index LEFT JOIN n ON true ORDER BY t.ord",
            exec = executions::COLUMNS,
            output = appended(true, "tasks.output", "r.output", "r.replaces"),
            rows = value_rows(chunk.len(), REPORT_WIDTH, 5),
            task_cols = qualified("tasks", COLUMNS),
            stage_cols = qualified("stages", stages::COLUMNS),
            e = alias("e", executions::COLUMNS),
            t = alias("t", COLUMNS),
            s = alias("s", stages::COLUMNS),
        );
        let mut values: Vec<Value> = Vec::with_capacity(4 + chunk.len() * REPORT_WIDTH);
        let told = format!("r {origin}\nc ");
        values.extend([execution_id.into(), now.into(), super::EVENTS_CHANNEL.into(), told.into()]);
        report_values(chunk, &mut values);
        let rows = c.query_all_raw(statement(c, &sql, values)).await?;
        let Some(first) = rows.first() else { return Ok(None) };
        if n == 0 {
            execution = Some(executions::from_prefixed(first, "e_")?);
            revision = get::<i64>(first, "e_revision")?;
        }
        let mut chunk_tasks: Vec<Option<WorkflowRun>> = (0..chunk.len()).map(|_| None).collect();
        for row in &rows {
            let Some(ord) = get::<Option<i32>>(row, "t_ord")? else { continue };
            let slot = chunk_tasks.get_mut(ord as usize).ok_or_else(|| corrupt(format!("report {ord} of a group")))?;
            *slot = Some(from_prefixed(row, "t_")?);
            if get::<Option<String>>(row, "s_execution_id")?.is_some() {
                let stage = stages::from_prefixed(row, "s_")?;
                counted.retain(|s| s.index != stage.index);
                counted.push(stage);
            }
        }
        tasks.extend(chunk_tasks);
    }
    let execution = execution.ok_or_else(|| corrupt("a group of no reports"))?;
    Ok(Some(Reported { execution, revision, tasks, stages: counted }))
}

/// `columns` (a comma-separated list) of `table`, each named with it.
fn qualified(table: &str, columns: &str) -> String {
    columns.split(',').map(|c| format!("{table}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

/// The rows of the reports' `r (ord, id, lease_token, status, exit_code,
/// output, message, added, replaces, received_from)`.
fn report_values(reports: &[TaskReport<'_>], values: &mut Vec<Value>) {
    for (i, r) in reports.iter().enumerate() {
        values.extend([
            (i as i32).into(),
            r.task_id.into(),
            r.lease_token.into(),
            r.report.status.as_str().into(),
            r.report.exit_code.into(),
            r.report.output.text.to_owned().into(),
            r.report.message.to_owned().into(),
            r.report.output.added().into(),
            r.report.output.replaces.into(),
            r.received_from.into(),
        ]);
    }
}

/// What a change sent at once was decided from, and leaves (see [`report_at_once`]).
pub struct Expected<'a> {
    /// The execution's revision it was decided from.
    pub revision: i64,
    /// The stage whose tasks are reported, running then.
    pub stage_index: usize,
    /// The execution's row as the change leaves it.
    pub execution: &'a crate::domain::execution::Execution,
}

/// Reports of tasks that succeeded, and `batch`, the writes that follow
/// from them — both decided beforehand from the execution as it was at
/// `expected.revision` — as one PostgreSQL statement that is its own
/// transaction. It writes only if the execution is still at that revision
/// (every change to an execution's row or stages bumps it) and every
/// report is recorded as a success of that stage (the lease held, its
/// deadline not passed); otherwise nothing, and it says
/// [`super::StoreError::Stale`]. The execution's row is written here (the
/// batch must not write it: a row is written once per statement). The
/// tasks as they now are, in the order given. None if the statement would
/// pass the parameter limit (nothing was sent).
pub async fn report_at_once(
    c: &impl ConnectionTrait,
    expected: Expected<'_>,
    reports: &[TaskReport<'_>],
    batch: super::Batch,
    now: Millis,
) -> Result<Option<Vec<WorkflowRun>>> {
    let e = expected.execution;
    let (decided, decided_values) = super::executions::decided_columns(e, 5);
    let first_report = 5 + decided_values.len();
    // Characters of a piece sent from an offset that the task's row says
    // were received already (what `engine::tasks::unseen` leaves out).
    let skip = "CAST(CASE WHEN r.received_from IS NULL THEN 0 ELSE LEAST(GREATEST(tasks.output_received - \
        r.received_from, 0), char_length(r.output)) END AS INTEGER)";
    let head = format!(
        "e AS (UPDATE executions SET revision = revision + 1, {decided} WHERE id = $1 AND revision = $3 RETURNING id), \
         r (ord, id, lease_token, status, exit_code, output, message, added, replaces, received_from) \
           AS (VALUES {rows}), \
         t AS (UPDATE tasks SET status = r.status, exit_code = r.exit_code, output = {output}, \
           output_chars = tasks.output_chars + r.added - {skip}, status_message = r.message, ended_at = $2, \
           lease_expires_at = NULL \
           FROM r WHERE tasks.id = r.id AND tasks.lease_token = r.lease_token AND tasks.status = 'RUNNING' \
           AND tasks.execution_id = $1 AND tasks.stage_index = $4 \
           AND (tasks.deadline_at IS NULL OR tasks.deadline_at > $2) AND r.status = 'SUCCEEDED' \
           AND EXISTS (SELECT 1 FROM e) \
           RETURNING r.ord, {task_cols})",
        rows = value_rows(reports.len(), REPORT_WIDTH, first_report),
        output = appended(true, "tasks.output", &format!("substr(r.output, {skip} + 1)"), "r.replaces"),
        task_cols = qualified("tasks", COLUMNS),
    );
    // The assertion's one row is the outer side of the join, and its value
    // is returned, so it is evaluated whatever `t` holds; it fails the
    // statement, and so undoes all of it, unless what was expected holds.
    // The notification is read after it (and is sent only on commit).
    let n = reports.len();
    let select = |told: &str| {
        format!(
            "SELECT g.ok AS expected, g.told, t.* FROM \
             (SELECT reprise_expect((SELECT count(*) FROM e) = 1 AND (SELECT count(*) FROM t) = {n}) AS ok, \
               {told} AS told) g \
             LEFT JOIN t ON true ORDER BY t.ord"
        )
    };
    let mut values: Vec<Value> = Vec::with_capacity(first_report + reports.len() * REPORT_WIDTH);
    values.extend([e.id.clone().into(), now.into(), expected.revision.into(), (expected.stage_index as i32).into()]);
    values.extend(decided_values);
    report_values(reports, &mut values);
    let Some((sql, values)) = batch.behind(&head, values, select) else { return Ok(None) };
    let rows = c.query_all_raw(statement(c, &sql, values)).await?;
    if rows.len() != reports.len() {
        return Err(corrupt(format!(
            "{} of {} reports came back from a change sent at once",
            rows.len(),
            reports.len()
        )));
    }
    rows.iter().map(from_row).collect::<Result<Vec<_>>>().map(Some)
}

/// What a stage's "why" repeats of a workflow's failure message.
pub fn note(message: &str) -> String {
    match message.char_indices().nth(NOTE_CHARS) {
        None => message.to_owned(),
        Some((cut, _)) => format!("{}…", &message[..cut]),
    }
}
