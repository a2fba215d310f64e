//! Units of work on one connection: [`Tx`] writes, [`Snapshot`] reads,
//! [`Conn`] single statements on the pool. Each counts its statements and
//! tells the store what its errors say about the database.
//!
//! On SQLite the writes of a process run on one dedicated connection under
//! an async mutex (the write turn). The transaction is driven by plain
//! `BEGIN IMMEDIATE` / `COMMIT` / `ROLLBACK` statements, so nothing else
//! keeps a belief about whether one is open: after a COMMIT fails SQLite may
//! or may not have rolled back by itself, so the connection is rolled back
//! and replaced; a transaction dropped midway (a panic) is rolled back by the
//! next writer before it begins. A pooled connection therefore never carries
//! an open transaction into the next unit of work, which is what lost
//! acknowledged writes on a full disk.

use std::time::Duration;

use sea_orm::{
    AccessMode, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    ExecResult, IsolationLevel, QueryResult, Statement, TransactionTrait,
};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Result, Store, StoreError, error::Cause};

/// SQLite connection settings shared by the pool and the writer.
pub(super) fn sqlite_options(
    o: sea_orm::sqlx::sqlite::SqliteConnectOptions,
) -> sea_orm::sqlx::sqlite::SqliteConnectOptions {
    // WAL lets readers run beside the one writer; NORMAL syncs the WAL at
    // checkpoints, which survives a process crash (not a power loss before
    // the next checkpoint). Foreign keys on for the deferred checks.
    o.create_if_missing(true)
        .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
}

/// One process per SQLite file: the write turn, the caches and the
/// wake-ups live in the process, so a second process on the same file would
/// neither wait its turn nor hear of the first one's changes. Several
/// replicas need PostgreSQL. The lock is an advisory `flock` on a file
/// beside the database, released when the store is dropped or the process dies.
pub(crate) struct ProcessLock {
    _file: std::fs::File,
}

impl ProcessLock {
    pub(crate) async fn take(url: &str) -> Result<ProcessLock> {
        let path = url.strip_prefix("sqlite://").unwrap_or(url).split('?').next().unwrap_or_default();
        let lock_path = format!("{path}.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Rejected(format!("cannot open the lock file {lock_path}: {e}")))?;
        // A store of this process may still be closing (a restart): wait a little.
        for _ in 0..50 {
            if try_lock(&file) {
                return Ok(ProcessLock { _file: file });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(StoreError::Rejected(format!(
            "another reprise process is using the SQLite database {path} (it holds {lock_path}); one process per \
             SQLite file — stop it, or use PostgreSQL to run several replicas"
        )))
    }
}

#[cfg(unix)]
fn try_lock(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor this function borrows.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(not(unix))]
fn try_lock(_: &std::fs::File) -> bool {
    true
}

/// A transaction that could not even begin says nothing about the request:
/// the database cannot be reached, is refusing connections, or is busy.
fn not_begun(e: DbErr) -> StoreError {
    match StoreError::from(e) {
        StoreError::Rejected(why) | StoreError::Corrupt(why) | StoreError::Duplicate(why) => {
            StoreError::unavailable(Cause::Unreachable, format!("cannot begin a transaction: {why}"))
        }
        unavailable => unavailable,
    }
}

/// SQLite's one writer connection and whether it may still be inside a transaction.
pub(crate) struct Writer {
    url: String,
    conn: Arc<Mutex<WriterConn>>,
}

pub(crate) struct WriterConn {
    db: DatabaseConnection,
    /// A transaction was begun and not seen to end: roll back before reuse.
    dirty: bool,
}

impl Writer {
    pub(crate) async fn open(url: &str) -> Result<Writer> {
        let db = open_writer(url).await?;
        Ok(Writer { url: url.to_owned(), conn: Arc::new(Mutex::new(WriterConn { db, dirty: false })) })
    }

    pub(crate) async fn pragma(&self, pragma: &str) -> Result<Option<i64>> {
        let guard = self.conn.lock().await;
        let stmt = Statement::from_string(DbBackend::Sqlite, format!("PRAGMA {pragma}"));
        let row = guard.db.query_one_raw(stmt).await.map_err(StoreError::from)?;
        Ok(row.and_then(|r| r.try_get_by_index::<i64>(0).ok()))
    }

    pub(crate) async fn close(&self) {
        self.conn.lock().await.db.close_by_ref().await.ok();
    }
}

/// A pool of exactly one connection that never expires: every statement of a
/// transaction runs on the same connection, and nothing closes it between two.
async fn open_writer(url: &str) -> Result<DatabaseConnection> {
    let mut o = ConnectOptions::new(url.to_owned());
    o.max_connections(1)
        .min_connections(1)
        .idle_timeout(None::<Duration>)
        .max_lifetime(None::<Duration>)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(sqlite_options);
    Database::connect(o).await.map_err(StoreError::from)
}

impl WriterConn {
    /// Makes sure no transaction is open. A ROLLBACK that succeeds, or that
    /// fails because none is active (SQLite rolls back by itself after some
    /// errors, e.g. a full disk), leaves the connection in autocommit; any
    /// other failure leaves us unsure, so the connection is replaced
    /// (closing it ends whatever it had open).
    async fn end_transaction(&mut self, url: &str) -> Result<()> {
        match self.db.execute_unprepared("ROLLBACK").await {
            Ok(_) => {
                self.dirty = false;
                Ok(())
            }
            Err(e) if e.to_string().contains("no transaction is active") => {
                self.dirty = false;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "the SQLite writer could not roll back; opening a new connection");
                self.reset(url).await
            }
        }
    }

    /// Replaces the connection with a fresh one.
    async fn reset(&mut self, url: &str) -> Result<()> {
        let fresh = open_writer(url).await?;
        let old = std::mem::replace(&mut self.db, fresh);
        old.close_by_ref().await.ok();
        self.dirty = false;
        Ok(())
    }
}

enum TxKind {
    Sqlite(OwnedMutexGuard<WriterConn>),
    Postgres(DatabaseTransaction),
}

/// A write transaction on one connection (see the module docs). Dropped
/// without a commit, it rolls back.
pub struct Tx {
    store: Store,
    kind: Option<TxKind>,
}

impl Tx {
    pub(super) async fn begin(store: &Store) -> Result<Tx> {
        let kind = match &store.inner.writer {
            Some(writer) => {
                let mut guard = writer.conn.clone().lock_owned().await;
                if guard.dirty {
                    tracing::warn!("the SQLite writer was left inside a transaction; rolling it back");
                    guard.end_transaction(&writer.url).await?;
                }
                guard.db.execute_unprepared("BEGIN IMMEDIATE").await.map_err(not_begun)?;
                guard.dirty = true;
                TxKind::Sqlite(guard)
            }
            None => TxKind::Postgres(store.inner.pool.begin().await.map_err(not_begun)?),
        };
        Ok(Tx { store: store.clone(), kind: Some(kind) })
    }

    /// Commits. Nothing is acknowledged before this returns Ok; when it
    /// fails, nothing of the transaction is kept and the connection is not
    /// reused as it was.
    pub async fn commit(mut self) -> Result<()> {
        let store = self.store.clone();
        let kind = self.kind.take().expect("a transaction ends once");
        store.count(2); // BEGIN and COMMIT
        let result = match kind {
            TxKind::Sqlite(mut guard) => match guard.db.execute_unprepared("COMMIT").await {
                Ok(_) => {
                    guard.dirty = false;
                    Ok(())
                }
                Err(e) => {
                    let error = StoreError::from(e);
                    let url = &store.inner.writer.as_ref().expect("sqlite writer").url;
                    if let Err(reset) = guard.end_transaction(url).await {
                        tracing::error!(error = %reset, "could not reopen the SQLite writer after a failed COMMIT");
                    }
                    Err(error)
                }
            },
            TxKind::Postgres(txn) => txn.commit().await.map_err(StoreError::from),
        };
        let result = store.observe(result);
        if result.is_ok() {
            store.set_writable(true);
        }
        result
    }

    /// Rolls back; a connection that cannot be rolled back is replaced.
    pub async fn rollback(mut self) {
        let kind = self.kind.take().expect("a transaction ends once");
        self.store.count(2); // BEGIN and ROLLBACK
        roll_back(&self.store, kind).await;
    }

    fn target(&self) -> &dyn DynConnection {
        match self.kind.as_ref().expect("an open transaction") {
            TxKind::Sqlite(guard) => &guard.db,
            TxKind::Postgres(txn) => txn,
        }
    }
}

async fn roll_back(store: &Store, kind: TxKind) {
    match kind {
        TxKind::Sqlite(mut guard) => {
            let url = &store.inner.writer.as_ref().expect("sqlite writer").url;
            if let Err(e) = guard.end_transaction(url).await {
                tracing::error!(error = %e, "could not reopen the SQLite writer after a failed ROLLBACK");
            }
        }
        TxKind::Postgres(txn) => {
            let _ = txn.rollback().await;
        }
    }
}

impl Drop for Tx {
    /// A transaction abandoned midway (a panic, a cancelled task) is rolled
    /// back before anyone else may write: the SQLite turn is held until then.
    fn drop(&mut self) {
        let Some(kind) = self.kind.take() else { return };
        let store = self.store.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { roll_back(&store, kind).await });
            }
            // No runtime to run it on: SQLite's writer stays marked dirty and
            // the next writer rolls it back; PostgreSQL's transaction rolls
            // back when its connection is dropped.
            Err(_) => drop(kind),
        }
    }
}

/// A read-only transaction whose statements all see one state.
pub struct Snapshot {
    store: Store,
    txn: DatabaseTransaction,
}

impl Snapshot {
    pub(super) async fn begin(store: &Store) -> Result<Snapshot> {
        let pool = &store.inner.pool;
        let txn = if store.is_postgres() {
            pool.begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly)).await
        } else {
            pool.begin().await
        };
        store.count(if store.is_postgres() { 2 } else { 1 });
        Ok(Snapshot { store: store.clone(), txn: txn.map_err(not_begun)? })
    }

    /// Ends the read transaction (nothing to keep: it only read).
    pub async fn end(self) {
        self.store.count(1);
        let _ = self.txn.commit().await;
    }
}

/// Single statements on the pool, each its own transaction.
pub struct Conn<'a> {
    store: &'a Store,
}

impl<'a> Conn<'a> {
    pub(super) fn pool(store: &'a Store) -> Conn<'a> {
        Conn { store }
    }
}

impl Store {
    /// While the database is known to be down, a statement on the pool
    /// fails at once instead of waiting for a connection.
    fn fail_fast(&self) -> Result<(), DbErr> {
        if self.is_up() { Ok(()) } else { Err(DbErr::Custom(super::error::KNOWN_DOWN.into())) }
    }

    pub(crate) fn set_writable(&self, writable: bool) {
        self.inner.set_writable(writable);
    }

    /// Whether the last commit (or probe) succeeded.
    pub fn is_writable(&self) -> bool {
        self.inner.writable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Updates up/writable from what an error says about the database.
    pub(crate) fn observe<T>(&self, result: Result<T>) -> Result<T> {
        match result.as_ref().err().and_then(StoreError::cause) {
            Some(Cause::Unreachable) => self.set_up(false),
            Some(Cause::Full) => self.set_writable(false),
            _ => {}
        }
        result
    }
}

/// The object-safe part of [`ConnectionTrait`] that the wrappers forward to.
#[async_trait::async_trait]
trait DynConnection: Sync {
    async fn exec(&self, stmt: Statement) -> Result<ExecResult, DbErr>;
    async fn exec_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr>;
    async fn one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr>;
    async fn all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr>;
}

#[async_trait::async_trait]
impl<C: ConnectionTrait + Sync> DynConnection for C {
    async fn exec(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.execute_raw(stmt).await
    }
    async fn exec_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.execute_unprepared(sql).await
    }
    async fn one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.query_one_raw(stmt).await
    }
    async fn all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.query_all_raw(stmt).await
    }
}

/// Forwards [`ConnectionTrait`] to `$target`, counting statements and
/// letting the store see each error.
macro_rules! forward_connection {
    ($ty:ty, $self:ident => $target:expr, $count:expr) => {
        #[async_trait::async_trait]
        impl ConnectionTrait for $ty {
            fn get_database_backend(&self) -> DbBackend {
                self.store.backend()
            }
            async fn execute_raw(&$self, stmt: Statement) -> Result<ExecResult, DbErr> {
                $self.store.fail_fast()?;
                $count;
                let r = $target.exec(stmt).await;
                $self.seen(&r);
                r
            }
            async fn execute_unprepared(&$self, sql: &str) -> Result<ExecResult, DbErr> {
                $self.store.fail_fast()?;
                $count;
                let r = $target.exec_unprepared(sql).await;
                $self.seen(&r);
                r
            }
            async fn query_one_raw(&$self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
                $self.store.fail_fast()?;
                $count;
                let r = $target.one(stmt).await;
                $self.seen(&r);
                r
            }
            async fn query_all_raw(&$self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
                $self.store.fail_fast()?;
                $count;
                let r = $target.all(stmt).await;
                $self.seen(&r);
                r
            }
        }

        impl $ty {
            fn seen<T>(&self, r: &Result<T, DbErr>) {
                if let Err(e) = r {
                    let _ = self.store.observe::<()>(Err(StoreError::from(e.clone())));
                }
            }
        }
    };
}

forward_connection!(Conn<'_>, self => (&self.store.inner.pool as &dyn DynConnection), self.store.count(1));
forward_connection!(Snapshot, self => (&self.txn as &dyn DynConnection), self.store.count(1));

#[async_trait::async_trait]
impl ConnectionTrait for Tx {
    fn get_database_backend(&self) -> DbBackend {
        self.store.backend()
    }
    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.tally();
        let r = self.target().exec(stmt).await;
        self.seen(&r);
        r
    }
    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.tally();
        let r = self.target().exec_unprepared(sql).await;
        self.seen(&r);
        r
    }
    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.tally();
        let r = self.target().one(stmt).await;
        self.seen(&r);
        r
    }
    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.tally();
        let r = self.target().all(stmt).await;
        self.seen(&r);
        r
    }
}

impl Tx {
    fn tally(&self) {
        self.store.count(1);
    }

    fn seen<T>(&self, r: &Result<T, DbErr>) {
        if let Err(e) = r {
            let _ = self.store.observe::<()>(Err(StoreError::from(e.clone())));
        }
    }
}

/// One write statement, which is its own transaction: on the SQLite writer
/// (under the write turn) or a pooled PostgreSQL connection.
pub struct Single {
    store: Store,
    guard: Option<OwnedMutexGuard<WriterConn>>,
}

impl Single {
    pub(super) async fn begin(store: &Store) -> Result<Single> {
        let guard = match &store.inner.writer {
            Some(writer) => {
                let mut guard = writer.conn.clone().lock_owned().await;
                if guard.dirty {
                    guard.end_transaction(&writer.url).await?;
                }
                Some(guard)
            }
            None => None,
        };
        Ok(Single { store: store.clone(), guard })
    }

    fn target(&self) -> &dyn DynConnection {
        match &self.guard {
            Some(guard) => &guard.db,
            None => &self.store.inner.pool,
        }
    }
}

forward_connection!(Single, self => self.target(), self.store.count(1));
