//! Units of work on one connection: [`Tx`] writes, [`Snapshot`] reads,
//! [`Conn`] single statements on the pool. Each counts its statements and
//! tells the store what its errors say about the database.
//!
//! On SQLite the writes of a process run on one dedicated connection under
//! an async mutex (the write turn). After a COMMIT or ROLLBACK fails, SQLite
//! may or may not have rolled back by itself while the driver still believes
//! a transaction open; such a connection is closed and replaced before
//! anyone writes again, so no connection ever carries an open transaction
//! into the next unit of work — which is what lost acknowledged writes on a
//! full disk (later "transactions" became savepoints of one never committed).

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult, IsolationLevel,
    QueryResult, Statement, TransactionTrait,
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
    // The driver runs each connection on a thread of its own and hands rows
    // over through a bounded channel: at its default of 50 the thread waits
    // for the reader three times on a 200-stage execution's stages. 1,024
    // rows of room covers any read the service makes in one go (pages are
    // at most 1,000 rows) and bounds what a slow reader holds back.
    o.create_if_missing(true)
        .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .row_buffer_size(1024)
}

/// Called as a PostgreSQL connection goes back to the pool: its socket
/// buffers back to their default 8 KiB. A connection otherwise keeps the
/// largest it ever needed — the biggest row it read (a pipeline version's
/// definition, megabytes) and the biggest statement it sent — for the rest
/// of its life: after 20,000 adversarial requests the server held 15 MiB
/// in them, growing with each of the pool's connections that met a big
/// one. A buffer still at its default size is left as it is, so this costs
/// nothing after ordinary statements.
pub(super) fn shrink_after_use(
    conn: &mut sea_orm::sqlx::PgConnection,
    _: sea_orm::sqlx::pool::PoolConnectionMetadata,
) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, sea_orm::sqlx::Error>> + Send + '_>> {
    use sea_orm::sqlx::Connection;
    conn.shrink_buffers();
    Box::pin(std::future::ready(Ok(true)))
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
    /// PRAGMAs set at run time (tests), applied again to a new connection.
    pragmas: Arc<std::sync::Mutex<Vec<String>>>,
    conn: Arc<Mutex<WriterConn>>,
    held: Held,
    /// Commits so far, and whether a checkpoint runs now (see
    /// [`super::Store::checkpoint_now_and_then`]).
    pub(super) commits: AtomicU64,
    pub(super) checkpointing: AtomicBool,
    /// Checkpoints run beside the writer so far.
    pub(super) checkpoints: AtomicU64,
}

/// The WAL size (pages) at which the writer checkpoints by itself, in the
/// commit that crosses it (SQLite's default is 1,000). The checkpoints run
/// beside it (see [`super::Store::checkpoint_now_and_then`]) leave it little
/// to copy then, but only the writer's own lets the WAL start over while
/// writes keep coming: this bounds the WAL file (16 MiB of 4 KiB pages).
const WRITER_AUTOCHECKPOINT: &str = "4000";

/// How long committed transactions held SQLite's one writer, in all: with
/// one writer, that time per transaction bounds how many commit per second
/// whatever the number of callers (see [`super::Store::writer_held`]).
#[derive(Debug, Default)]
pub(crate) struct Held {
    transactions: AtomicU64,
    held_ns: AtomicU64,
    begin_ns: AtomicU64,
    commit_ns: AtomicU64,
}

/// [`Held`] as read at one moment; subtract two to see a stretch of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterHeld {
    /// Transactions committed.
    pub transactions: u64,
    /// From taking the writer to releasing it, in all.
    pub held: Duration,
    /// Of that, in BEGIN IMMEDIATE.
    pub begin: Duration,
    /// Of that, in COMMIT.
    pub commit: Duration,
}

impl std::ops::Sub for WriterHeld {
    type Output = WriterHeld;
    fn sub(self, earlier: WriterHeld) -> WriterHeld {
        WriterHeld {
            transactions: self.transactions - earlier.transactions,
            held: self.held.saturating_sub(earlier.held),
            begin: self.begin.saturating_sub(earlier.begin),
            commit: self.commit.saturating_sub(earlier.commit),
        }
    }
}

impl Held {
    fn record(&self, taken: Instant, begun: Instant, committing: Instant) {
        let ns = |d: Duration| d.as_nanos() as u64;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.held_ns.fetch_add(ns(taken.elapsed()), Ordering::Relaxed);
        self.begin_ns.fetch_add(ns(begun - taken), Ordering::Relaxed);
        self.commit_ns.fetch_add(ns(committing.elapsed()), Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> WriterHeld {
        let d = |a: &AtomicU64| Duration::from_nanos(a.load(Ordering::Relaxed));
        WriterHeld {
            transactions: self.transactions.load(Ordering::Relaxed),
            held: d(&self.held_ns),
            begin: d(&self.begin_ns),
            commit: d(&self.commit_ns),
        }
    }
}

pub(crate) struct WriterConn {
    db: DatabaseConnection,
    /// A transaction was begun and not seen to end: check before reuse.
    dirty: bool,
}

impl Writer {
    /// Another writer holds the turn now (a probe that waited was busy, not down).
    pub(crate) fn is_busy(&self) -> bool {
        self.conn.try_lock().is_err()
    }

    pub(crate) async fn open(url: &str) -> Result<Writer> {
        let pragmas = Arc::new(std::sync::Mutex::new(Vec::new()));
        let db = open_writer(url, pragmas.clone()).await?;
        let conn = Arc::new(Mutex::new(WriterConn { db, dirty: false }));
        Ok(Writer {
            pragmas,
            conn,
            held: Held::default(),
            commits: AtomicU64::new(0),
            checkpointing: AtomicBool::new(false),
            checkpoints: AtomicU64::new(0),
        })
    }

    pub(crate) fn held(&self) -> WriterHeld {
        self.held.read()
    }

    pub(crate) async fn pragma(&self, pragma: &str) -> Result<Option<i64>> {
        let guard = self.conn.lock().await;
        let stmt = Statement::from_string(DbBackend::Sqlite, format!("PRAGMA {pragma}"));
        let row = guard.db.query_one_raw(stmt).await.map_err(StoreError::from)?;
        if pragma.contains('=') {
            self.pragmas.lock().unwrap_or_else(|p| p.into_inner()).push(pragma.to_owned());
        }
        Ok(row.and_then(|r| r.try_get_by_index::<i64>(0).ok()))
    }

    pub(crate) async fn close(&self) {
        self.conn.lock().await.db.close_by_ref().await.ok();
    }
}

/// A pool of exactly one connection that never expires: a transaction holds
/// it from BEGIN to COMMIT, and nothing closes it between two statements. A
/// connection that replaces it gets the run-time PRAGMAs again.
async fn open_writer(url: &str, pragmas: Arc<std::sync::Mutex<Vec<String>>>) -> Result<DatabaseConnection> {
    use sea_orm::sqlx::{Executor, sqlite::SqlitePoolOptions};
    let options = url
        .parse::<sea_orm::sqlx::sqlite::SqliteConnectOptions>()
        .map_err(|e| StoreError::Rejected(format!("SQLite URL: {e}")))?;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _| {
            let pragmas = pragmas.lock().unwrap_or_else(|p| p.into_inner()).clone();
            Box::pin(async move {
                for pragma in pragmas {
                    conn.execute(sea_orm::sqlx::AssertSqlSafe(format!("PRAGMA {pragma}"))).await?;
                }
                Ok(())
            })
        })
        .connect_with(sqlite_options(options).pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT))
        .await
        .map_err(|e| StoreError::unavailable(Cause::Unreachable, format!("opening the SQLite writer: {e}")))?;
    Ok(sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}

impl WriterConn {
    /// Makes sure no transaction is open before the connection is used
    /// again. The driver tracks whether one is open; when a COMMIT or a
    /// ROLLBACK failed, that belief and SQLite's own state (SQLite rolls back
    /// by itself after some errors, e.g. a full disk) may disagree, and a
    /// later BEGIN would then become a savepoint inside a transaction that is
    /// never committed. So a connection the driver still believes inside a
    /// transaction is closed, and the pool opens a fresh one.
    async fn settle(&mut self) -> Result<()> {
        use sea_orm::sqlx::Connection;
        let pool = self.db.get_sqlite_connection_pool();
        let mut conn = pool.acquire().await.map_err(|e| StoreError::unavailable(Cause::Unreachable, e.to_string()))?;
        if conn.is_in_transaction() {
            tracing::warn!("the SQLite writer may still be inside a transaction; replacing the connection");
            conn.close_on_drop();
        }
        drop(conn);
        self.dirty = false;
        Ok(())
    }
}

enum TxKind {
    Sqlite(OwnedMutexGuard<WriterConn>, DatabaseTransaction, Timing),
    Postgres(DatabaseTransaction),
}

/// When a SQLite transaction took the writer and when its BEGIN returned.
struct Timing {
    taken: Instant,
    begun: Instant,
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
                let taken = Instant::now();
                if guard.dirty {
                    guard.settle().await?;
                }
                let options = sea_orm::TransactionOptions {
                    sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                    ..Default::default()
                };
                // Dirty before BEGIN: a begin cancelled halfway may leave the
                // connection inside a transaction; the next writer settles it.
                guard.dirty = true;
                let txn = guard.db.begin_with_options(options).await.map_err(not_begun)?;
                TxKind::Sqlite(guard, txn, Timing { taken, begun: Instant::now() })
            }
            None => {
                let pool = store.inner.pool.clone();
                TxKind::Postgres(uncancelled(async move { pool.begin().await }).await.map_err(not_begun)?)
            }
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
            TxKind::Sqlite(mut guard, txn, timing) => match (Instant::now(), txn.commit().await) {
                (committing, Ok(())) => {
                    guard.dirty = false;
                    if let Some(writer) = &store.inner.writer {
                        writer.held.record(timing.taken, timing.begun, committing);
                    }
                    drop(guard);
                    store.checkpoint_now_and_then();
                    Ok(())
                }
                (_, Err(e)) => {
                    let error = StoreError::from(e);
                    if let Err(settle) = guard.settle().await {
                        tracing::error!(error = %settle, "could not check the SQLite writer after a failed COMMIT");
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
        match kind {
            TxKind::Sqlite(mut guard, txn, _) => {
                let rolled_back = txn.rollback().await.is_ok();
                if rolled_back {
                    guard.dirty = false;
                } else if let Err(e) = guard.settle().await {
                    tracing::error!(error = %e, "could not check the SQLite writer after a failed ROLLBACK");
                }
            }
            TxKind::Postgres(txn) => {
                let _ = txn.rollback().await;
            }
        }
    }

    fn target(&self) -> &dyn DynConnection {
        match self.kind.as_ref().expect("an open transaction") {
            TxKind::Sqlite(_, txn, _) | TxKind::Postgres(txn) => txn,
        }
    }
}

/// Runs the BEGIN of a pooled transaction to its end even when the caller
/// is cancelled (a watcher that left, a timeout): cut between BEGIN and the
/// statements that follow it (`SET TRANSACTION` of a snapshot), a connection
/// went back to the pool inside a transaction its driver did not know of, and
/// the next caller's BEGIN failed. Run whole, an abandoned transaction is
/// dropped like any other, and rolled back.
async fn uncancelled<T: Send + 'static>(begin: impl Future<Output = T> + Send + 'static) -> T {
    match tokio::spawn(begin).await {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down, and this caller with it.
        Err(_) => std::future::pending().await,
    }
}

impl Drop for Tx {
    /// A transaction abandoned midway (a panic, a cancelled task) rolls back
    /// when its connection is next used (the driver queues the ROLLBACK); on
    /// SQLite the writer stays marked dirty until the next writer checks it.
    fn drop(&mut self) {
        drop(self.kind.take());
    }
}

/// A read-only transaction whose statements all see one state.
pub struct Snapshot {
    store: Store,
    txn: DatabaseTransaction,
}

impl Snapshot {
    pub(super) async fn begin(store: &Store) -> Result<Snapshot> {
        let pool = store.inner.pool.clone();
        let txn = if store.is_postgres() {
            uncancelled(async move {
                pool.begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly)).await
            })
            .await
        } else {
            uncancelled(async move { pool.begin().await }).await
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
                    guard.settle().await?;
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

impl Drop for Single {
    /// A write on SQLite's writer counts toward the next checkpoint as a
    /// transaction's commit does.
    fn drop(&mut self) {
        if self.guard.take().is_some() {
            self.store.checkpoint_now_and_then();
        }
    }
}
