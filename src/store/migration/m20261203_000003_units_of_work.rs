//! What makes a transition cost the same at the first and the last stage:
//! workflow counts on the stage row (a report never reads its siblings),
//! the chain's start on every attempt (resume checks its age without reading
//! the first one), indexes that hold only open work (claims, timers and
//! cancellation touch only open rows, however much has finished), and a
//! table the health check writes to.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (table, column, type and default) — one ALTER each, as SQLite wants.
const COLUMNS: &[(&str, &str, &str)] = &[
    ("executions", "chain_created_at", "BIGINT NOT NULL DEFAULT 0"),
    ("executions", "resume_reason", "TEXT NOT NULL DEFAULT ''"),
    ("executions", "end_stage_index", "INTEGER NULL"),
    ("executions", "end_stage_name", "TEXT NULL"),
    ("stages", "wf_total", "INTEGER NOT NULL DEFAULT 0"),
    ("stages", "wf_open", "INTEGER NOT NULL DEFAULT 0"),
    ("stages", "wf_failed", "INTEGER NOT NULL DEFAULT 0"),
    ("stages", "wf_expired", "INTEGER NOT NULL DEFAULT 0"),
    ("stages", "wf_cancelled", "INTEGER NOT NULL DEFAULT 0"),
    ("stages", "failure_workflow", "TEXT NULL"),
    ("stages", "failure_message", "TEXT NOT NULL DEFAULT ''"),
    ("audit_events", "chain_id", "TEXT NULL"),
    ("audit_events", "related_execution_id", "TEXT NULL"),
];

const BACKFILL: &[&str] = &[
    "UPDATE executions SET chain_created_at = COALESCE((SELECT r.created_at FROM executions r WHERE r.id = executions.chain_id), created_at)",
    "UPDATE stages SET \
       wf_total = (SELECT count(*) FROM tasks t WHERE t.execution_id = stages.execution_id AND t.stage_index = stages.stage_index), \
       wf_open = (SELECT count(*) FROM tasks t WHERE t.execution_id = stages.execution_id AND t.stage_index = stages.stage_index AND t.status IN ('QUEUED', 'RUNNING')), \
       wf_failed = (SELECT count(*) FROM tasks t WHERE t.execution_id = stages.execution_id AND t.stage_index = stages.stage_index AND t.status = 'FAILED'), \
       wf_expired = (SELECT count(*) FROM tasks t WHERE t.execution_id = stages.execution_id AND t.stage_index = stages.stage_index AND t.status = 'EXPIRED'), \
       wf_cancelled = (SELECT count(*) FROM tasks t WHERE t.execution_id = stages.execution_id AND t.stage_index = stages.stage_index AND t.status = 'CANCELLED')",
    "UPDATE executions SET \
       end_stage_index = (SELECT min(s.stage_index) FROM stages s WHERE s.execution_id = executions.id AND s.status IN ('FAILED', 'ABORTED', 'EXPIRED', 'REJECTED')) \
     WHERE status IN ('FAILED', 'ABORTED', 'EXPIRED', 'REJECTED')",
    "UPDATE executions SET \
       end_stage_name = (SELECT s.name FROM stages s WHERE s.execution_id = executions.id AND s.stage_index = executions.end_stage_index) \
     WHERE end_stage_index IS NOT NULL",
    "UPDATE audit_events SET chain_id = (SELECT e.chain_id FROM executions e WHERE e.id = audit_events.execution_id) \
     WHERE execution_id IS NOT NULL",
];

const INDEXES: &[&str] = &[
    "DROP INDEX IF EXISTS ix_tasks_queue_status_id",
    "DROP INDEX IF EXISTS ix_tasks_status_lease",
    "DROP INDEX IF EXISTS ix_tasks_status_deadline",
    "DROP INDEX IF EXISTS ix_stages_status_deadline",
    // Claims: the oldest queued task of a queue.
    "CREATE INDEX ix_tasks_queued ON tasks (task_queue, id) WHERE status = 'QUEUED'",
    // Timers: leases and deadlines of running tasks.
    "CREATE INDEX ix_tasks_running_lease ON tasks (lease_expires_at) WHERE status = 'RUNNING'",
    "CREATE INDEX ix_tasks_running_deadline ON tasks (deadline_at) WHERE status = 'RUNNING'",
    // Cancelling an execution's open workflows.
    "CREATE INDEX ix_tasks_open ON tasks (execution_id, stage_index) WHERE status IN ('QUEUED', 'RUNNING')",
    // Approval timeouts.
    "CREATE INDEX ix_stages_waiting ON stages (deadline_at) WHERE status = 'WAITING_APPROVAL'",
    // Gauges of executions not yet final, without a scan of the history.
    "CREATE INDEX ix_executions_active ON executions (status) WHERE status IN ('QUEUED', 'RUNNING', 'PAUSED')",
    // The audit trail of a chain, and of the execution a resume resumed.
    "CREATE INDEX ix_audit_chain ON audit_events (chain_id, id)",
    "CREATE INDEX ix_audit_related ON audit_events (related_execution_id, id)",
    "CREATE TABLE store_probe (id INTEGER PRIMARY KEY, filler TEXT)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for (table, column, spec) in COLUMNS {
            db.execute_unprepared(&format!("ALTER TABLE {table} ADD COLUMN {column} {spec}")).await?;
        }
        for sql in BACKFILL.iter().chain(INDEXES) {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for sql in [
            "DROP TABLE IF EXISTS store_probe",
            "DROP INDEX IF EXISTS ix_audit_related",
            "DROP INDEX IF EXISTS ix_audit_chain",
            "DROP INDEX IF EXISTS ix_executions_active",
            "DROP INDEX IF EXISTS ix_stages_waiting",
            "DROP INDEX IF EXISTS ix_tasks_open",
            "DROP INDEX IF EXISTS ix_tasks_running_deadline",
            "DROP INDEX IF EXISTS ix_tasks_running_lease",
            "DROP INDEX IF EXISTS ix_tasks_queued",
            "CREATE INDEX ix_tasks_queue_status_id ON tasks (task_queue, status, id)",
            "CREATE INDEX ix_tasks_status_lease ON tasks (status, lease_expires_at)",
            "CREATE INDEX ix_tasks_status_deadline ON tasks (status, deadline_at)",
            "CREATE INDEX ix_stages_status_deadline ON stages (status, deadline_at)",
        ] {
            db.execute_unprepared(sql).await?;
        }
        for (table, column, _) in COLUMNS.iter().rev() {
            db.execute_unprepared(&format!("ALTER TABLE {table} DROP COLUMN {column}")).await?;
        }
        Ok(())
    }
}
