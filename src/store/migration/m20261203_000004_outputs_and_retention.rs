//! Sealed secret variables on executions; task output as a followable resource: how many characters an attempt
//! produced (the row keeps the last 65,536); and the indexes retention
//! walks oldest first: heads of chains by when they ended, heads of each
//! pipeline's chains by when they began, audit events by time.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for sql in [
            "ALTER TABLE tasks ADD COLUMN output_chars BIGINT NOT NULL DEFAULT 0",
            // Secret variable values, sealed with the server's secrets key.
            "ALTER TABLE executions ADD COLUMN secrets TEXT NULL",
            "UPDATE tasks SET output_chars = length(output)",
            "CREATE INDEX ix_executions_heads_ended ON executions (ended_at) WHERE resumed_by_execution_id IS NULL",
            "CREATE INDEX ix_executions_heads_pipeline ON executions (pipeline_id, chain_created_at) \
             WHERE resumed_by_execution_id IS NULL",
            "CREATE INDEX ix_audit_at ON audit_events (at)",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for sql in [
            "DROP INDEX IF EXISTS ix_audit_at",
            "DROP INDEX IF EXISTS ix_executions_heads_pipeline",
            "DROP INDEX IF EXISTS ix_executions_heads_ended",
            "ALTER TABLE tasks DROP COLUMN output_chars",
            "ALTER TABLE executions DROP COLUMN secrets",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
