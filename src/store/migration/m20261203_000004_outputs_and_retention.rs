//! Task output as a followable resource: how many characters an attempt
//! produced (the row keeps the last 65,536), and an index of the heads of
//! chains by when they ended, which retention walks oldest first.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for sql in [
            "ALTER TABLE tasks ADD COLUMN output_chars BIGINT NOT NULL DEFAULT 0",
            "UPDATE tasks SET output_chars = length(output)",
            "CREATE INDEX ix_executions_heads_ended ON executions (ended_at) WHERE resumed_by_execution_id IS NULL",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for sql in ["DROP INDEX IF EXISTS ix_executions_heads_ended", "ALTER TABLE tasks DROP COLUMN output_chars"] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
