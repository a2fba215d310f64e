//! `reprise_expect(ok)`: a statement's own assertion. A change sent as one
//! statement (its own transaction, no BEGIN or COMMIT) was decided from
//! what the database held; the statement checks that it still does and,
//! if not, fails with SQLSTATE `RPX01`, which undoes all of it. PostgreSQL
//! only: on SQLite such changes are never sent as one statement.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != sea_orm::DbBackend::Postgres {
            return Ok(());
        }
        m.get_connection()
            .execute_unprepared(
                "CREATE OR REPLACE FUNCTION reprise_expect(ok boolean) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$ \
                 BEGIN \
                   IF ok IS NOT TRUE THEN \
                     RAISE EXCEPTION 'what this change was decided from no longer holds; nothing was written' \
                       USING ERRCODE = 'RPX01'; \
                   END IF; \
                   RETURN true; \
                 END $$",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == sea_orm::DbBackend::Postgres {
            m.get_connection().execute_unprepared("DROP FUNCTION IF EXISTS reprise_expect(boolean)").await?;
        }
        Ok(())
    }
}
