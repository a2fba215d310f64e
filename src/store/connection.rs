//! Units of work on one connection: [`Tx`] writes, [`Snapshot`] reads,
//! [`Conn`] single statements on the pool. Each counts its statements and
//! tells the store what its errors say about the database.
//!
//! On SQLite the writes of a process run on one dedicated connection under
//! an async mutex (the write turn). A unit that ends while others wait for
//! the turn leaves its changes in the open transaction and waits for the
//! COMMIT; the next unit runs inside a SAVEPOINT of that transaction, and
//! the last one of such a group, finding nobody waiting, commits for all
//! (group commit: one BEGIN and one COMMIT for many units — those two are
//! what bounded SQLite's writes per second). Nobody is answered before that
//! COMMIT returned; when it fails, or a unit's failure may have ended
//! SQLite's transaction (a full disk), every unit of the group is told it
//! failed. A caller cancelled while it waits for the turn (a unit may have
//! left a group open for it) or midway through a unit of a group has a task
//! commit that group, and a COMMIT that units wait on runs in a task of its
//! own: nobody is left waiting for an answer.
//!
//! After a COMMIT or ROLLBACK fails, SQLite may or may not have rolled back
//! by itself while the driver still believes a transaction open; such a
//! connection is closed and replaced before anyone writes again, so no
//! connection ever carries an open transaction into the next unit of work —
//! which is what lost acknowledged writes on a full disk (later
//! "transactions" became savepoints of one never committed). A group is
//! that same shape made on purpose: its savepoints are inside a transaction
//! the group commits, and whoever takes the turn next joins a group left
//! open (a unit of work) or commits it first (a single statement, a PRAGMA).

use std::{
    sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult, IsolationLevel,
    QueryResult, Statement, TransactionTrait,
};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

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
        StoreError::Rejected(why) | StoreError::Corrupt(why) | StoreError::Duplicate(why) | StoreError::Stale(why) => {
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
    /// Units waiting for the write turn now: a unit that ends while one
    /// does leaves its changes for the group's COMMIT.
    queued: AtomicUsize,
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

/// The most units of work one COMMIT carries: the first of a group waits
/// for the last, so this bounds what grouping adds to a unit's latency.
const GROUP_MOST: usize = 16;

/// How long units of work held SQLite's one writer, in all: with one
/// writer, that time per unit bounds how many commit per second whatever
/// the number of callers (see [`super::Store::writer_held`]).
#[derive(Debug, Default)]
pub(crate) struct Held {
    transactions: AtomicU64,
    commits: AtomicU64,
    held_ns: AtomicU64,
    begin_ns: AtomicU64,
    commit_ns: AtomicU64,
}

/// [`Held`] as read at one moment; subtract two to see a stretch of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterHeld {
    /// Units of work that ended with a commit (their own or their group's).
    pub transactions: u64,
    /// COMMITs run: fewer than units when units were committed in groups.
    pub commits: u64,
    /// From taking the writer to releasing it, in all.
    pub held: Duration,
    /// Of that, in BEGIN IMMEDIATE (a unit that joins a group sends its
    /// SAVEPOINT with its first statement: that is in neither figure).
    pub begin: Duration,
    /// Of that, in COMMIT (a unit that leaves the COMMIT to the next sends
    /// its RELEASE with its last writes, before this).
    pub commit: Duration,
}

impl std::ops::Sub for WriterHeld {
    type Output = WriterHeld;
    fn sub(self, earlier: WriterHeld) -> WriterHeld {
        WriterHeld {
            transactions: self.transactions - earlier.transactions,
            commits: self.commits - earlier.commits,
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
            commits: self.commits.load(Ordering::Relaxed),
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
    /// The open transaction of units that ended and wait for its COMMIT.
    group: Option<Group>,
}

/// Units of work whose changes are in the writer's open transaction,
/// waiting to be told whether its COMMIT succeeded.
struct Group {
    txn: DatabaseTransaction,
    waiting: Vec<oneshot::Sender<Result<()>>>,
    /// Units whose changes it holds.
    units: u64,
    /// A unit of it was abandoned midway (cancelled inside its own end, so
    /// how its SAVEPOINT ended was not seen): the COMMIT is checked to have
    /// ended the transaction before anyone is told it succeeded.
    abandoned: bool,
    /// Where the SAVEPOINT of the unit that joined it last stands: one of
    /// [`UNIT_DUE`], [`UNIT_OPEN`], [`UNIT_ENDED`].
    unit: AtomicU8,
}

/// The unit that joined the group has sent nothing yet: its SAVEPOINT goes
/// with its first statement.
const UNIT_DUE: u8 = 0;
/// Its SAVEPOINT was sent, and neither released nor rolled back to.
const UNIT_OPEN: u8 = 1;
/// Its RELEASE was sent (its changes are the group's), or no unit joined.
const UNIT_ENDED: u8 = 2;

/// The SAVEPOINT of a unit that joined a group. Its statements travel with
/// the unit's own — the SAVEPOINT before its first, the RELEASE after its
/// last writes ([`Tx::run_last`]) — rather than each in a round trip to
/// SQLite's thread of its own: those two were a quarter of the time a
/// grouped unit held the writer.
const UNIT_SAVEPOINT: &str = "SAVEPOINT reprise_unit";
const UNIT_RELEASE: &str = "RELEASE reprise_unit";
const UNIT_ROLLBACK: &str = "ROLLBACK TO reprise_unit; RELEASE reprise_unit";

impl Writer {
    /// Another writer holds the turn now (a probe that waited was busy, not down).
    pub(crate) fn is_busy(&self) -> bool {
        self.conn.try_lock().is_err()
    }

    pub(crate) async fn open(url: &str) -> Result<Writer> {
        let pragmas = Arc::new(std::sync::Mutex::new(Vec::new()));
        let db = open_writer(url, pragmas.clone()).await?;
        let conn = Arc::new(Mutex::new(WriterConn { db, dirty: false, group: None }));
        Ok(Writer {
            pragmas,
            conn,
            queued: AtomicUsize::new(0),
            held: Held::default(),
            commits: AtomicU64::new(0),
            checkpointing: AtomicBool::new(false),
            checkpoints: AtomicU64::new(0),
        })
    }

    pub(crate) fn held(&self) -> WriterHeld {
        self.held.read()
    }

    /// Waits for the write turn, counted as waiting meanwhile (a unit that
    /// ends while someone waits leaves its group open for them). A wait
    /// cancelled after such a unit counted on it has a task commit the group.
    async fn take(&self, store: &Store) -> Turn {
        struct Waiting<'a> {
            writer: &'a Writer,
            store: &'a Store,
            cancelled: bool,
        }
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.writer.queued.fetch_sub(1, Ordering::AcqRel);
                if self.cancelled {
                    flush_soon(self.store.clone());
                }
            }
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let mut waiting = Waiting { writer: self, store, cancelled: true };
        let guard = self.conn.clone().lock_owned().await;
        waiting.cancelled = false;
        drop(waiting);
        Turn { guard: Some(guard), store: store.clone() }
    }

    /// Waits for the write turn and commits the group left open, if any:
    /// for what is not a unit of work and so cannot join it (a single
    /// statement, a PRAGMA, closing).
    async fn take_alone(&self, store: &Store) -> Turn {
        let mut turn = self.take(store).await;
        let _ = commit_group(store, &mut turn).await;
        turn
    }

    /// Runs a PRAGMA on the writer (after committing any open group).
    pub(crate) async fn pragma(store: &Store, pragma: &str) -> Result<Option<i64>> {
        let writer = store.inner.writer.as_ref().expect("SQLite");
        let turn = writer.take_alone(store).await;
        writer.run_pragma(&turn, pragma).await
    }

    async fn run_pragma(&self, guard: &WriterConn, pragma: &str) -> Result<Option<i64>> {
        let stmt = Statement::from_string(DbBackend::Sqlite, format!("PRAGMA {pragma}"));
        let row = guard.db.query_one_raw(stmt).await.map_err(StoreError::from)?;
        if pragma.contains('=') {
            self.pragmas.lock().unwrap_or_else(|p| p.into_inner()).push(pragma.to_owned());
        }
        Ok(row.and_then(|r| r.try_get_by_index::<i64>(0).ok()))
    }

    /// Closes the writer (after committing any open group).
    pub(crate) async fn close(store: &Store) {
        let writer = store.inner.writer.as_ref().expect("SQLite");
        writer.take_alone(store).await.db.close_by_ref().await.ok();
    }
}

/// The write turn, held. Dropped with a group open that it did not hand on
/// (its unit was cancelled or panicked midway), a task commits the group,
/// so the units waiting for that COMMIT are answered.
struct Turn {
    guard: Option<OwnedMutexGuard<WriterConn>>,
    store: Store,
}

impl Turn {
    /// Lets the turn go with the group open, for the unit waiting for it.
    fn hand_on(mut self) {
        self.guard.take();
    }
}

impl std::ops::Deref for Turn {
    type Target = WriterConn;
    fn deref(&self) -> &WriterConn {
        self.guard.as_ref().expect("a held turn")
    }
}

impl std::ops::DerefMut for Turn {
    fn deref_mut(&mut self) -> &mut WriterConn {
        self.guard.as_mut().expect("a held turn")
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else { return };
        let Some(group) = guard.group.as_mut() else { return };
        group.abandoned = true;
        let store = self.store.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = commit_group(&store, &mut guard).await;
            });
        }
    }
}

/// Commits a group that may have been left for a unit that gave up waiting.
fn flush_soon(store: Store) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let writer = store.inner.writer.as_ref().expect("SQLite");
            let mut turn = writer.take(&store).await;
            let _ = commit_group(&store, &mut turn).await;
        });
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
        if !out_of_transaction(&self.db).await? {
            tracing::warn!("the SQLite writer may still be inside a transaction; replacing the connection");
        }
        self.dirty = false;
        Ok(())
    }
}

/// Whether the driver sees the writer outside any transaction. A connection
/// it sees inside one (it lost count of savepoints, so a COMMIT only
/// released one of them) is closed, which rolls back whatever it held.
async fn out_of_transaction(db: &DatabaseConnection) -> Result<bool> {
    use sea_orm::sqlx::Connection;
    let pool = db.get_sqlite_connection_pool();
    let mut conn = pool.acquire().await.map_err(|e| StoreError::unavailable(Cause::Unreachable, e.to_string()))?;
    if conn.is_in_transaction() {
        conn.close_on_drop();
        return Ok(false);
    }
    Ok(true)
}

enum TxKind {
    Sqlite(Writing),
    Postgres(DatabaseTransaction),
    /// PostgreSQL, no transaction opened: reads go to the pool, and the one
    /// write is a single statement that is its own transaction (see
    /// [`Store::at_once`]).
    AtOnce,
}

/// A unit of work on SQLite's writer, holding the write turn.
struct Writing {
    /// The unit's own transaction; None when it joined the open group's,
    /// whose transaction its statements then run in (its SAVEPOINT's state
    /// is the group's `unit`).
    txn: Option<DatabaseTransaction>,
    turn: Turn,
    /// A statement failed in a way that may have ended SQLite's whole
    /// transaction (a full disk, I/O): the group cannot be trusted to commit.
    poisoned: AtomicBool,
    /// When it took the writer, and when its BEGIN (or SAVEPOINT) returned.
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
            Some(_) => TxKind::Sqlite(begin_writing(store).await?),
            None => {
                let pool = store.inner.pool.clone();
                TxKind::Postgres(uncancelled(async move { pool.begin().await }).await.map_err(not_begun)?)
            }
        };
        Ok(Tx { store: store.clone(), kind: Some(kind) })
    }

    pub(super) fn at_once(store: &Store) -> Tx {
        Tx { store: store.clone(), kind: Some(TxKind::AtOnce) }
    }

    /// Commits. Nothing is acknowledged before this returns Ok; when it
    /// fails, nothing of the transaction is kept and the connection is not
    /// reused as it was.
    pub async fn commit(mut self) -> Result<()> {
        let store = self.store.clone();
        let kind = self.kind.take().expect("a transaction ends once");
        if matches!(kind, TxKind::AtOnce) {
            return Ok(()); // its statement committed itself
        }
        store.count(2); // BEGIN and COMMIT (or SAVEPOINT and RELEASE)
        let result = match kind {
            TxKind::Sqlite(writing) => commit_writing(&store, writing).await,
            TxKind::Postgres(txn) => txn.commit().await.map_err(StoreError::from),
            TxKind::AtOnce => unreachable!("returned above"),
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
        match kind {
            TxKind::Sqlite(writing) => {
                self.store.count(2); // BEGIN and ROLLBACK
                rollback_writing(&self.store, writing).await
            }
            TxKind::Postgres(txn) => {
                self.store.count(2);
                let _ = txn.rollback().await;
            }
            TxKind::AtOnce => {}
        }
    }

    /// Whether this unit sends its write as one statement of its own (see
    /// [`Store::at_once`]).
    pub fn is_at_once(&self) -> bool {
        matches!(self.kind, Some(TxKind::AtOnce))
    }

    fn target(&self) -> &dyn DynConnection {
        match self.kind.as_ref().expect("an open transaction") {
            TxKind::Sqlite(Writing { txn: Some(txn), .. }) | TxKind::Postgres(txn) => txn,
            TxKind::Sqlite(Writing { txn: None, turn, .. }) => {
                &turn.group.as_ref().expect("a unit joins an open group").txn
            }
            TxKind::AtOnce => &self.store.inner.pool,
        }
    }

    /// `sql`, after the unit's SAVEPOINT if it joined a group and this is
    /// its first statement.
    fn joining<'a>(&self, sql: &'a str) -> std::borrow::Cow<'a, str> {
        if let Some(group) = self.joined_group()
            && group.unit.compare_exchange(UNIT_DUE, UNIT_OPEN, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            return format!("{UNIT_SAVEPOINT};\n{sql}").into();
        }
        sql.into()
    }

    /// The group whose transaction this unit joined, if it joined one.
    fn joined_group(&self) -> Option<&Group> {
        match &self.kind {
            Some(TxKind::Sqlite(Writing { txn: None, turn, .. })) => turn.group.as_ref(),
            _ => None,
        }
    }

    fn joined(&self, mut stmt: Statement) -> Statement {
        if let std::borrow::Cow::Owned(sql) = self.joining(&stmt.sql) {
            stmt.sql = sql;
        }
        stmt
    }

    /// Runs the unit's last writes; a unit that joined a group releases its
    /// SAVEPOINT in the same round trip (see [`UNIT_SAVEPOINT`]).
    pub async fn run_last(&self, batch: super::Batch) -> Result<()> {
        let Some(group) = self.joined_group() else { return batch.run(self).await };
        if group.unit.load(Ordering::Acquire) == UNIT_DUE && !batch.has_statements() {
            return Ok(()); // nothing written: nothing to release
        }
        batch.run_then(self, Some(UNIT_RELEASE)).await?;
        group.unit.store(UNIT_ENDED, Ordering::Release);
        Ok(())
    }

    /// Refuses a statement that is not a query on a unit sent at once: a
    /// write before its last statement would commit alone.
    fn writable(&self) -> Result<(), DbErr> {
        if self.is_at_once() {
            return Err(DbErr::Custom("a unit sent as one statement writes only with that statement".into()));
        }
        Ok(())
    }
}

/// Takes the write turn and begins: inside the open group's transaction if
/// there is one (a SAVEPOINT), else a transaction of its own.
async fn begin_writing(store: &Store) -> Result<Writing> {
    let writer = store.inner.writer.as_ref().expect("SQLite");
    let mut turn = writer.take(store).await;
    let taken = Instant::now();
    let writing = |txn, turn| Writing { txn, turn, poisoned: AtomicBool::new(false), taken, begun: Instant::now() };
    if let Some(group) = &turn.group {
        // Its SAVEPOINT goes with its first statement.
        group.unit.store(UNIT_DUE, Ordering::Release);
        return Ok(writing(None, turn));
    }
    if turn.dirty {
        turn.settle().await?;
    }
    let options = sea_orm::TransactionOptions {
        sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    // Dirty before BEGIN: a begin cancelled halfway may leave the
    // connection inside a transaction; the next writer settles it.
    turn.dirty = true;
    let txn = turn.db.begin_with_options(options).await.map_err(not_begun)?;
    Ok(writing(Some(txn), turn))
}

/// Ends a unit that succeeded: its changes join the group's, and either it
/// waits for the next unit to commit them (someone waits for the turn) or
/// it commits the group itself.
async fn commit_writing(store: &Store, writing: Writing) -> Result<()> {
    let writer = store.inner.writer.as_ref().expect("SQLite");
    let Writing { txn, mut turn, poisoned, taken, begun } = writing;
    let poisoned = poisoned.into_inner();
    let committing = Instant::now();
    if let Some(txn) = txn {
        let unit = UNIT_ENDED.into();
        turn.group = Some(Group { txn, waiting: Vec::new(), units: 1, abandoned: false, unit });
    } else {
        // Released with its last writes, unless it wrote nothing since.
        let group = turn.group.as_ref().expect("a unit joins an open group");
        let released = if group.unit.load(Ordering::Acquire) == UNIT_OPEN {
            let released = group.txn.execute_unprepared(UNIT_RELEASE).await.map(|_| ()).map_err(StoreError::from);
            if released.is_ok() {
                group.unit.store(UNIT_ENDED, Ordering::Release);
            }
            released
        } else {
            Ok(())
        };
        let failed = match released {
            Err(e) => Some(e),
            Ok(()) if poisoned => Some(StoreError::unavailable(
                Cause::Busy,
                "a statement of this change failed and the transaction it was part of may have ended; retry",
            )),
            Ok(()) => None,
        };
        if let Some(e) = failed {
            fail_group(store, &mut turn, &e).await;
            return Err(e);
        }
        if let Some(group) = turn.group.as_mut() {
            group.units += 1;
        }
    }
    let group = turn.group.as_mut().expect("the unit's changes are in the group");
    // A transaction that may have ended is committed (or fails) now, not joined.
    if !poisoned && writer.queued.load(Ordering::Acquire) > 0 && group.waiting.len() + 1 < GROUP_MOST {
        let (tell, told) = oneshot::channel();
        group.waiting.push(tell);
        writer.held.record(taken, begun, committing);
        turn.hand_on();
        return told.await.unwrap_or_else(|_| {
            Err(StoreError::unavailable(
                Cause::Unreachable,
                "the transaction of this change ended without a COMMIT; retry",
            ))
        });
    }
    let result = commit_group(store, &mut turn).await;
    if result.is_ok() {
        writer.held.record(taken, begun, committing);
    }
    result
}

/// Ends a unit that failed: only its own changes are undone (its SAVEPOINT)
/// unless its failure may have ended the group's transaction.
async fn rollback_writing(store: &Store, writing: Writing) {
    let Writing { txn, mut turn, poisoned, .. } = writing;
    let Some(txn) = txn else { return rollback_joined(store, turn, poisoned.into_inner()).await };
    if txn.rollback().await.is_ok() {
        turn.dirty = false;
    } else if let Err(e) = turn.settle().await {
        tracing::error!(error = %e, "could not check the SQLite writer after a failed ROLLBACK");
    }
}

/// [`rollback_writing`] of a unit that joined a group: back to its
/// SAVEPOINT if it sent one. A unit abandoned after its RELEASE (its caller
/// gone between its last writes and its commit) has its changes in the
/// group's already; they are committed with it, as those of a caller that
/// gave up waiting for the group's COMMIT are.
async fn rollback_joined(store: &Store, mut turn: Turn, poisoned: bool) {
    let writer = store.inner.writer.as_ref().expect("SQLite");
    let group = turn.group.as_mut().expect("a unit joins an open group");
    let rolled_back = match group.unit.load(Ordering::Acquire) {
        UNIT_OPEN => {
            // No such savepoint: the call that carried it was cancelled
            // before it ran (nothing of the unit was written) or after its RELEASE.
            let undone = match group.txn.execute_unprepared(UNIT_ROLLBACK).await {
                Ok(_) => true,
                Err(e) => e.to_string().contains("no such savepoint"),
            };
            if undone {
                group.unit.store(UNIT_ENDED, Ordering::Release);
            }
            undone
        }
        UNIT_ENDED if !poisoned => {
            group.units += 1; // released: its changes are the group's
            true
        }
        _ => true,
    };
    if !rolled_back || poisoned {
        let why = StoreError::unavailable(
            Cause::Busy,
            "a change committed in the same transaction failed and took this one with it; retry",
        );
        fail_group(store, &mut turn, &why).await;
    } else if writer.queued.load(Ordering::Acquire) > 0 {
        turn.hand_on();
    } else {
        // Nobody will take the group on: commit it for those who wait.
        let _ = commit_group(store, &mut turn).await;
    }
}

/// Commits the open group, if any, and tells each of its units. With units
/// waiting on it, the COMMIT and the telling run in a task of their own: a
/// cancelled caller must not leave them without an answer.
async fn commit_group(store: &Store, conn: &mut WriterConn) -> Result<()> {
    let Some(group) = conn.group.take() else { return Ok(()) };
    let alone = group.waiting.is_empty();
    let store = store.clone();
    let db = conn.db.clone();
    let commit = async move {
        // The SAVEPOINT of a unit abandoned midway: its changes are undone
        // before the others commit (as the driver does for its own).
        if group.unit.load(Ordering::Acquire) == UNIT_OPEN {
            let _ = group.txn.execute_unprepared(UNIT_ROLLBACK).await;
        }
        let mut result = group.txn.commit().await.map_err(StoreError::from);
        if result.is_ok() && group.abandoned {
            result = match out_of_transaction(&db).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(StoreError::unavailable(
                    Cause::Unreachable,
                    "the writer's transaction did not end at its COMMIT; nothing of it was kept, retry",
                )),
                Err(e) => Err(e),
            };
        }
        let result = store.observe(result);
        if result.is_ok() {
            store.set_writable(true);
            store.checkpoint_now_and_then();
            if let Some(writer) = &store.inner.writer {
                writer.held.commits.fetch_add(1, Ordering::Relaxed);
            }
            metrics::counter!(crate::metrics::SQLITE_COMMITS).increment(1);
            metrics::counter!(crate::metrics::SQLITE_UNITS).increment(group.units);
        }
        for unit in group.waiting {
            let _ = unit.send(result.clone());
        }
        result
    };
    let result = if alone { commit.await } else { uncancelled(commit).await };
    match &result {
        Ok(()) => conn.dirty = false,
        Err(_) => {
            if let Err(settle) = conn.settle().await {
                tracing::error!(error = %settle, "could not check the SQLite writer after a failed COMMIT");
            }
        }
    }
    result
}

/// Rolls the open group back and tells each of its units why it failed.
async fn fail_group(store: &Store, conn: &mut WriterConn, why: &StoreError) {
    let Some(group) = conn.group.take() else { return };
    // After a failed RELEASE or ROLLBACK TO the driver may count one
    // savepoint too many, and its ROLLBACK only go back to a savepoint:
    // the connection is checked (and replaced if need be) either way.
    let _ = group.txn.rollback().await;
    if let Err(e) = conn.settle().await {
        tracing::error!(error = %e, "could not check the SQLite writer after a group failed");
    }
    let _ = store.observe::<()>(Err(why.clone()));
    let cause = why.cause().unwrap_or(Cause::Busy);
    for unit in group.waiting {
        let _ = unit.send(Err(StoreError::unavailable(
            cause,
            format!("the transaction this change was committed with failed ({why}); nothing of it was kept, retry"),
        )));
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
    /// when its connection is next used (the driver queues the ROLLBACK). On
    /// SQLite a task rolls it back and settles the group it was part of;
    /// without a runtime to run it, the writer stays marked dirty until the
    /// next writer checks it.
    fn drop(&mut self) {
        if let Some(TxKind::Sqlite(writing)) = self.kind.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let store = self.store.clone();
            runtime.spawn(async move { rollback_writing(&store, writing).await });
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
        self.writable()?;
        self.tally();
        let r = self.target().exec(self.joined(stmt)).await;
        self.seen(&r);
        r
    }
    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.writable()?;
        self.tally();
        let r = self.target().exec_unprepared(&self.joining(sql)).await;
        self.seen(&r);
        r
    }
    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.tally();
        let r = self.target().one(self.joined(stmt)).await;
        self.seen(&r);
        r
    }
    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.tally();
        let r = self.target().all(self.joined(stmt)).await;
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
            let error = StoreError::from(e.clone());
            // SQLite may end the whole transaction after a full disk or an
            // I/O error, not after a constraint that refused one statement.
            if let (StoreError::Unavailable(_), Some(TxKind::Sqlite(writing))) = (&error, &self.kind) {
                writing.poisoned.store(true, Ordering::Release);
            }
            let _ = self.store.observe::<()>(Err(error));
        }
    }
}

/// One write statement, which is its own transaction: on the SQLite writer
/// (under the write turn) or a pooled PostgreSQL connection.
pub struct Single {
    store: Store,
    turn: Option<Turn>,
}

impl Single {
    pub(super) async fn begin(store: &Store) -> Result<Single> {
        let turn = match &store.inner.writer {
            Some(writer) => {
                let mut turn = writer.take_alone(store).await;
                if turn.dirty {
                    turn.settle().await?;
                }
                Some(turn)
            }
            None => None,
        };
        Ok(Single { store: store.clone(), turn })
    }

    fn target(&self) -> &dyn DynConnection {
        match &self.turn {
            Some(turn) => &turn.db,
            None => &self.store.inner.pool,
        }
    }
}

forward_connection!(Single, self => self.target(), self.store.count(1));

impl Drop for Single {
    /// A write on SQLite's writer counts toward the next checkpoint as a
    /// transaction's commit does.
    fn drop(&mut self) {
        if self.turn.take().is_some() {
            self.store.checkpoint_now_and_then();
        }
    }
}
