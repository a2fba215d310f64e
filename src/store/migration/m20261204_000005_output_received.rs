//! How many characters of output the server has received for a task's
//! attempt, as the worker counts them (before masking and cutting): a
//! heartbeat sent again after its answer was lost says where its piece
//! begins, and what the server already has is skipped.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for sql in [
            "ALTER TABLE tasks ADD COLUMN output_received BIGINT NOT NULL DEFAULT 0",
            "UPDATE tasks SET output_received = output_chars",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection().execute_unprepared("ALTER TABLE tasks DROP COLUMN output_received").await?;
        Ok(())
    }
}
