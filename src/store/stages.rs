//! Stage rows, with the counts of their workflows.

use sea_orm::{ConnectionTrait, QueryResult, Value};

use super::{
    Result, corrupt,
    sql::{Columns, Part, chunk_rows, get, statement, value_rows},
};
use crate::domain::{
    execution::{CountsDelta, FailureNote, Millis, StageRun, WorkflowCounts},
    status::StageStatus,
};

pub(crate) const COLUMNS: &str = "execution_id, stage_index, name, status, status_message, started_at, ended_at, deadline_at, \
    decided_by, decision_comment, carried_from_execution_id, wf_total, wf_open, wf_failed, wf_expired, wf_cancelled, \
    failure_workflow, failure_message";
const WIDTH: usize = 18;

/// Every stage of an execution, in order.
pub async fn of_execution(c: &impl ConnectionTrait, execution_id: &str) -> Result<Vec<StageRun>> {
    if !super::is_pg(c) {
        return of_execution_as_json(c, execution_id).await;
    }
    let sql = format!("SELECT {COLUMNS} FROM stages WHERE execution_id = $1 ORDER BY stage_index");
    let rows = c.query_all_raw(statement(c, &sql, vec![execution_id.into()])).await?;
    rows.iter().map(from_row).collect()
}

/// [`of_execution`] on SQLite: every stage in one row, as a JSON array of
/// [`Row`]s. The driver hands over each row separately, some 5 µs a row, so
/// 200 stages took about 1 ms as rows and take about half as one.
async fn of_execution_as_json(c: &impl ConnectionTrait, execution_id: &str) -> Result<Vec<StageRun>> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let fields = COLUMNS.strip_prefix("execution_id, ").expect("COLUMNS begins with execution_id");
        format!(
            "SELECT json_group_array(json_array({fields}) ORDER BY stage_index) AS stages \
             FROM stages WHERE execution_id = $1"
        )
    });
    let Some(row) = c.query_one_raw(statement(c, &SQL, vec![execution_id.into()])).await? else {
        return Ok(Vec::new());
    };
    let json: Option<String> = get(&row, "stages")?;
    let rows: Vec<Row> = match json {
        Some(json) => serde_json::from_str(&json).map_err(|e| corrupt(format!("stages as JSON: {e}")))?,
        None => Vec::new(),
    };
    rows.into_iter().map(Row::into_stage).collect()
}

/// A stage row's values as stored (COLUMNS in order, without
/// execution_id), read from its columns or, on SQLite, from a JSON array.
#[derive(serde::Deserialize)]
struct Row {
    stage_index: i64,
    name: String,
    status: String,
    status_message: String,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    deadline_at: Option<i64>,
    decided_by: String,
    decision_comment: String,
    carried_from_execution_id: Option<String>,
    wf_total: i64,
    wf_open: i64,
    wf_failed: i64,
    wf_expired: i64,
    wf_cancelled: i64,
    failure_workflow: Option<String>,
    failure_message: String,
}

impl Row {
    fn into_stage(self) -> Result<StageRun> {
        let n = |v: i64| v.clamp(0, u32::MAX as i64) as u32;
        let index = self.stage_index;
        Ok(StageRun {
            index: usize::try_from(index).map_err(|_| corrupt(format!("stage index {index}")))?,
            status: StageStatus::parse(&self.status)
                .ok_or_else(|| corrupt(format!("stage status {:?}", self.status)))?,
            name: self.name.into(),
            status_message: self.status_message,
            started_at: self.started_at,
            ended_at: self.ended_at,
            deadline_at: self.deadline_at,
            decided_by: self.decided_by,
            decision_comment: self.decision_comment,
            carried_from: self.carried_from_execution_id,
            counts: WorkflowCounts {
                total: n(self.wf_total),
                open: n(self.wf_open),
                failed: n(self.wf_failed),
                expired: n(self.wf_expired),
                cancelled: n(self.wf_cancelled),
            },
            first_failure: self
                .failure_workflow
                .map(|workflow| FailureNote { workflow, message: self.failure_message }),
        })
    }
}

/// One stage of an execution.
pub async fn get_one(c: &impl ConnectionTrait, execution_id: &str, index: usize) -> Result<Option<StageRun>> {
    let sql = format!("SELECT {COLUMNS} FROM stages WHERE execution_id = $1 AND stage_index = $2");
    let row = c.query_one_raw(statement(c, &sql, vec![execution_id.into(), (index as i32).into()])).await?;
    row.as_ref().map(from_row).transpose()
}

/// Counts the end of one of a stage's workflows (and, for a failure, notes
/// it if it is the stage's first), returning the stage as it now is.
pub async fn count_end(
    c: &impl ConnectionTrait,
    execution_id: &str,
    index: usize,
    delta: CountsDelta,
    failure: Option<&FailureNote>,
) -> Result<Option<StageRun>> {
    let sql = format!(
        "UPDATE stages SET wf_open = wf_open + $3, wf_failed = wf_failed + $4, wf_expired = wf_expired + $5, \
         wf_cancelled = wf_cancelled + $6, \
         failure_message = CASE WHEN failure_workflow IS NULL AND $7 IS NOT NULL THEN $8 ELSE failure_message END, \
         failure_workflow = COALESCE(failure_workflow, $7) \
         WHERE execution_id = $1 AND stage_index = $2 RETURNING {COLUMNS}"
    );
    let values = vec![
        execution_id.into(),
        (index as i32).into(),
        delta.open.into(),
        delta.failed.into(),
        delta.expired.into(),
        delta.cancelled.into(),
        failure.map(|f| f.workflow.clone()).into(),
        failure.map(|f| f.message.clone()).unwrap_or_default().into(),
    ];
    let row = c.query_one_raw(statement(c, &sql, values)).await?;
    row.as_ref().map(from_row).transpose()
}

/// The statements that insert a new execution's stage rows, as few as the
/// parameter limits allow.
pub fn insert_parts(execution_id: &str, stages: &[StageRun]) -> Vec<Part> {
    upsert_parts(execution_id, stages.iter(), false)
}

/// The statement that copies the stages before `before` of execution
/// `from` to execution `to`, as carried over by a resume: inside the
/// database, so a resume costs the same however many stages it carries.
/// Each keeps the execution that ran it (`from` itself unless `from`
/// carried it over too).
pub fn carry_part(to: &str, from: &str, before: usize) -> Part {
    // The selected values follow COLUMNS, column for column.
    let sql = format!(
        "INSERT INTO stages ({COLUMNS}) \
         SELECT $1, stage_index, name, status, status_message, started_at, ended_at, deadline_at, decided_by, \
         decision_comment, COALESCE(carried_from_execution_id, $2), wf_total, wf_open, wf_failed, wf_expired, \
         wf_cancelled, failure_workflow, failure_message FROM stages WHERE execution_id = $3 AND stage_index < $4"
    );
    // Placeholders in order ($2 and $3 both name `from`): SQLite binds a
    // statement list anonymously only when every statement's run in order.
    Part { sql, values: vec![to.into(), from.into(), from.into(), (before as i32).into()] }
}

/// The statements that write the stages of `after` that differ from
/// `before` (same length and order).
pub fn changed_parts(execution_id: &str, before: &[StageRun], after: &[StageRun]) -> Vec<Part> {
    upsert_parts(execution_id, before.iter().zip(after).filter(|(b, a)| b != a).map(|(_, a)| a), true)
}

fn upsert_parts<'a>(execution_id: &str, rows: impl Iterator<Item = &'a StageRun>, update: bool) -> Vec<Part> {
    let rows: Vec<&StageRun> = rows.collect();
    let mut parts = Vec::new();
    for chunk in rows.chunks(chunk_rows(WIDTH)) {
        let mut values = Vec::with_capacity(chunk.len() * WIDTH);
        for s in chunk {
            values.extend(row_values(execution_id, s));
        }
        let mut sql = format!("INSERT INTO stages ({COLUMNS}) VALUES {}", value_rows(chunk.len(), WIDTH, 1));
        if update {
            sql.push_str(
                " ON CONFLICT (execution_id, stage_index) DO UPDATE SET status = excluded.status, \
                 status_message = excluded.status_message, started_at = excluded.started_at, \
                 ended_at = excluded.ended_at, deadline_at = excluded.deadline_at, decided_by = excluded.decided_by, \
                 decision_comment = excluded.decision_comment, wf_total = excluded.wf_total, \
                 wf_open = excluded.wf_open, wf_failed = excluded.wf_failed, wf_expired = excluded.wf_expired, \
                 wf_cancelled = excluded.wf_cancelled, failure_workflow = excluded.failure_workflow, \
                 failure_message = excluded.failure_message",
            );
        }
        parts.push(Part { sql, values });
    }
    parts
}

fn row_values(execution_id: &str, s: &StageRun) -> [Value; WIDTH] {
    [
        execution_id.to_owned().into(),
        (s.index as i32).into(),
        s.name.to_string().into(),
        s.status.as_str().into(),
        s.status_message.clone().into(),
        s.started_at.into(),
        s.ended_at.into(),
        s.deadline_at.into(),
        s.decided_by.clone().into(),
        s.decision_comment.clone().into(),
        s.carried_from.clone().into(),
        (s.counts.total as i32).into(),
        (s.counts.open as i32).into(),
        (s.counts.failed as i32).into(),
        (s.counts.expired as i32).into(),
        (s.counts.cancelled as i32).into(),
        s.first_failure.as_ref().map(|f| f.workflow.clone()).into(),
        s.first_failure.as_ref().map(|f| f.message.clone()).unwrap_or_default().into(),
    ]
}

/// Ids of executions with an approval waiting past its deadline.
pub async fn approvals_due(c: &impl ConnectionTrait, now: Millis, limit: u64) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT execution_id FROM stages WHERE status = 'WAITING_APPROVAL' AND deadline_at <= $1 LIMIT {limit}"
    );
    let rows = c.query_all_raw(statement(c, &sql, vec![now.into()])).await?;
    rows.iter().map(|r| get(r, "execution_id")).collect()
}

/// The earliest approval deadline still to come.
pub async fn next_approval_deadline(c: &impl ConnectionTrait) -> Result<Option<Millis>> {
    let sql = "SELECT min(deadline_at) AS d FROM stages WHERE status = 'WAITING_APPROVAL'";
    let row = c.query_one_raw(statement(c, sql, Vec::new())).await?;
    Ok(row.map(|r| get::<Option<i64>>(&r, "d")).transpose()?.flatten())
}

fn from_row(r: &QueryResult) -> Result<StageRun> {
    from_prefixed(r, "")
}

/// A row whose columns carry `p` before their names (a join of several tables).
pub(crate) fn from_prefixed(r: &QueryResult, p: &str) -> Result<StageRun> {
    let c = Columns::new(r, p);
    let n = |column: &str| c.get::<i32>(column).map(i64::from);
    Row {
        stage_index: n("stage_index")?,
        name: c.get("name")?,
        status: c.get("status")?,
        status_message: c.get("status_message")?,
        started_at: c.get("started_at")?,
        ended_at: c.get("ended_at")?,
        deadline_at: c.get("deadline_at")?,
        decided_by: c.get("decided_by")?,
        decision_comment: c.get("decision_comment")?,
        carried_from_execution_id: c.get("carried_from_execution_id")?,
        wf_total: n("wf_total")?,
        wf_open: n("wf_open")?,
        wf_failed: n("wf_failed")?,
        wf_expired: n("wf_expired")?,
        wf_cancelled: n("wf_cancelled")?,
        failure_workflow: c.get("failure_workflow")?,
        failure_message: c.get("failure_message")?,
    }
    .into_stage()
}

#[cfg(test)]
mod tests {
    use sea_orm::{Database, DbBackend, Statement};

    use super::*;
    use crate::store::sql::Batch;

    fn stage(index: usize, status: StageStatus) -> StageRun {
        StageRun { status, ..StageRun::pending(index, &format!("s{index}").into()) }
    }

    /// The one-row JSON read gives what the row-by-row read gives, field
    /// for field: NULLs, text that JSON must escape, counts, failures.
    #[tokio::test]
    async fn stages_read_as_json_are_the_stages_read_as_rows() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        db.execute_unprepared(
            "CREATE TABLE stages (execution_id TEXT NOT NULL, stage_index INTEGER NOT NULL, name TEXT NOT NULL, \
             status TEXT NOT NULL, status_message TEXT NOT NULL, started_at BIGINT, ended_at BIGINT, \
             deadline_at BIGINT, decided_by TEXT NOT NULL, decision_comment TEXT NOT NULL, \
             carried_from_execution_id TEXT, wf_total INTEGER NOT NULL, wf_open INTEGER NOT NULL, \
             wf_failed INTEGER NOT NULL, wf_expired INTEGER NOT NULL, wf_cancelled INTEGER NOT NULL, \
             failure_workflow TEXT, failure_message TEXT NOT NULL, PRIMARY KEY (execution_id, stage_index))",
        )
        .await
        .unwrap();
        let full = StageRun {
            status_message: "quote \" backslash \\ newline \n tab \t ünïcode ✓ \u{1}".into(),
            started_at: Some(1_733_000_000_000),
            ended_at: Some(i64::MAX),
            deadline_at: Some(-1),
            decided_by: "alice@example.com".into(),
            decision_comment: "[\"not json\"]".into(),
            carried_from: Some("01a2-origin".into()),
            counts: WorkflowCounts { total: 1000, open: 0, failed: 3, expired: 2, cancelled: 995 },
            first_failure: Some(FailureNote { workflow: "eu".into(), message: "exit 1…".into() }),
            ..stage(2, StageStatus::Failed)
        };
        // Inserted out of order: the read orders them.
        let stages = vec![full, stage(0, StageStatus::Succeeded), stage(1, StageStatus::Skipped)];
        let mut batch = Batch::default();
        batch.extend(insert_parts("e1", &stages));
        batch.extend(insert_parts("e2", &[stage(0, StageStatus::Running)]));
        batch.run(&db).await.unwrap();

        let as_json = of_execution(&db, "e1").await.unwrap();
        let sql = format!("SELECT {COLUMNS} FROM stages WHERE execution_id = 'e1' ORDER BY stage_index");
        let rows = db.query_all_raw(Statement::from_string(DbBackend::Sqlite, sql)).await.unwrap();
        let as_rows: Vec<StageRun> = rows.iter().map(from_row).collect::<Result<_>>().unwrap();
        assert_eq!(as_json, as_rows);
        assert_eq!(as_json.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(as_json[2], stages[0]);
        assert!(of_execution(&db, "none").await.unwrap().is_empty());
    }
}
