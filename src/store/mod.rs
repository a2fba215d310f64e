//! Persistence with sea-orm on SQLite (embedded default) or PostgreSQL.
//! Repository functions take `&impl ConnectionTrait` so the engine owns the
//! transaction; they speak domain types and keep entities to themselves.

pub mod access;
pub mod audit;
mod entity;
pub mod executions;
mod migration;
pub mod pipelines;
pub mod tasks;

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, SqlErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

pub use sea_orm::DatabaseConnection as Db;

/// Storage failures, classified once at this edge.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the write: someone else wrote the same key first.
    #[error("unique constraint violated: {0}")]
    Duplicate(String),
    /// A stored value the code cannot read back (a bug or a foreign write).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Db(DbErr),
}

impl From<DbErr> for StoreError {
    fn from(e: DbErr) -> Self {
        match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(msg)) => StoreError::Duplicate(msg),
            _ => StoreError::Db(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Opens the database (creating a SQLite file if needed) and applies pending migrations.
pub async fn connect(url: &str) -> Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(if url.starts_with("sqlite") { 8 } else { 16 })
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            // WAL lets readers run beside the one writer; the busy timeout
            // makes writers queue instead of failing at once.
            o.create_if_missing(true)
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    let db = Database::connect(options).await?;
    migrate(&db).await?;
    Ok(db)
}

/// Applies pending migrations. On PostgreSQL an advisory lock makes replicas
/// that start together take turns: one migrates, the others then find
/// nothing to do (without it they race on the DDL and all but one fail).
async fn migrate(db: &DatabaseConnection) -> Result<()> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(migration::Migrator::up(db, None).await?);
    }
    const LOCK: i64 = 0x0072_6570_7269_7365; // "reprise" in ASCII
    let to_err = |e: sea_orm::sqlx::Error| StoreError::Db(DbErr::Custom(format!("migration lock: {e}")));
    let mut lock = db.get_postgres_connection_pool().acquire().await.map_err(to_err)?;
    sea_orm::sqlx::query("SELECT pg_advisory_lock($1)").bind(LOCK).execute(&mut *lock).await.map_err(to_err)?;
    let migrated = migration::Migrator::up(db, None).await;
    sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK).execute(&mut *lock).await.map_err(to_err)?;
    Ok(migrated?)
}

/// Starts a write transaction. On SQLite it is IMMEDIATE: it takes the write
/// lock up front, so two writers queue on the busy timeout instead of one
/// failing when it upgrades a read lock.
pub async fn begin(db: &DatabaseConnection) -> Result<DatabaseTransaction> {
    let options = TransactionOptions {
        sqlite_transaction_mode: (db.get_database_backend() == DbBackend::Sqlite)
            .then_some(SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    Ok(db.begin_with_options(options).await?)
}

/// A cheap round trip, for the health check.
pub async fn ping(db: &DatabaseConnection) -> Result<()> {
    Ok(db.ping().await?)
}

/// Calls `on_queue` with the queue name each time any replica queues a task
/// (PostgreSQL only; returns at once on SQLite, where there is one process).
/// Returns when the listening connection fails, so the caller can retry.
pub async fn listen_for_queued_tasks(db: &DatabaseConnection, on_queue: impl Fn(&str)) -> Result<()> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let pool = db.get_postgres_connection_pool();
    let to_err = |e: sea_orm::sqlx::Error| StoreError::Db(DbErr::Custom(format!("listen: {e}")));
    let mut listener = sea_orm::sqlx::postgres::PgListener::connect_with(pool).await.map_err(to_err)?;
    listener.listen(tasks::QUEUED_CHANNEL).await.map_err(to_err)?;
    loop {
        let notification = listener.recv().await.map_err(to_err)?;
        on_queue(notification.payload());
    }
}

pub(crate) fn is_postgres(c: &impl ConnectionTrait) -> bool {
    c.get_database_backend() == DbBackend::Postgres
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
