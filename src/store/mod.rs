//! Persistence with sea-orm on SQLite (embedded default) or PostgreSQL.
//!
//! Everything that writes goes through a [`Tx`]: one connection, one
//! transaction, committed or rolled back as a whole, and never handed back
//! to anyone while a transaction may still be open on it. Reads of several
//! rows that must agree go through a [`Snapshot`]. Repository functions take
//! either and speak domain types; entities stay inside this module.

pub mod access;
pub mod audit;
mod connection;
mod entity;
mod error;
pub mod executions;
mod migration;
mod nodelay;
pub mod pipelines;
pub mod retention;
mod sql;

pub use sql::{Batch, Part};
pub mod stages;
pub mod tasks;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use sea_orm_migration::MigratorTrait;

pub use connection::{Conn, Single, Snapshot, Tx, WriterHeld};
pub use error::{Cause, StoreError};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How the store reaches its database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Longest wait for a pooled connection before a call gives up with
    /// UNAVAILABLE. While the database is known to be down calls do not wait
    /// at all.
    pub acquire_timeout: Duration,
    /// Connections of the pool (PostgreSQL; SQLite readers).
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { acquire_timeout: Duration::from_secs(5), max_connections: 16 }
    }
}

/// SQLite: commits of the writer between two checkpoints beside it (a
/// transition writes a few pages, a resume about thirty): what the writer's
/// own checkpoint finds left to copy is at most that many commits' pages.
const CHECKPOINT_EVERY: u64 = 16;

/// How long a pooled PostgreSQL connection may sit idle before it is tested
/// (a round trip) on its way out of the pool. The driver would test it on
/// every checkout: one round trip more on each statement of the hot path (a
/// transition is one statement). A connection in use within this time that
/// broke meanwhile (the database restarted) fails its next statement, which
/// answers UNAVAILABLE and is retried; the pool then drops it.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(5);

/// The database: a pool, and on SQLite its one writer connection.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: DbBackend,
    /// Reads everywhere; writes too on PostgreSQL (one pooled connection per
    /// transaction).
    pool: DatabaseConnection,
    /// SQLite lets one writer in at a time: all writes of this process queue
    /// here (a fair async mutex, handed on the moment it is released) on one
    /// dedicated connection, instead of sleeping in SQLite's busy handler.
    writer: Option<connection::Writer>,
    /// False while the database is known to refuse work (the health watcher
    /// and failed calls set it): calls then fail at once instead of waiting
    /// for a connection that will not come.
    up: AtomicBool,
    /// False after a commit failed for want of space, until one succeeds.
    writable: AtomicBool,
    /// Set when a call found the database unreachable or full, cleared when
    /// a health probe commits: until then the probe runs (an ordinary small
    /// commit may slip into a full file's last free page).
    doubted: AtomicBool,
    /// Statements sent, BEGIN and COMMIT included (the benches read it).
    statements: AtomicU64,
    url: String,
    /// SQLite: this process is the only one using the file (until closed).
    lock: std::sync::Mutex<Option<connection::ProcessLock>>,
}

impl Store {
    pub fn backend(&self) -> DbBackend {
        self.inner.backend
    }

    pub fn is_postgres(&self) -> bool {
        self.inner.backend == DbBackend::Postgres
    }

    /// Statements sent to the database by this process so far.
    pub fn statements(&self) -> u64 {
        self.inner.statements.load(Ordering::Relaxed)
    }

    pub(crate) fn count(&self, n: u64) {
        self.inner.statements.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether the database accepted work last time anyone looked.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// Whether a call found the database down or full since the last health
    /// probe committed: the probe is due.
    pub fn is_doubted(&self) -> bool {
        self.inner.doubted.load(Ordering::Relaxed)
    }

    /// Whether the store is reachable and its last commit succeeded: what
    /// readiness reports.
    pub fn is_ready(&self) -> bool {
        self.is_up() && self.is_writable()
    }

    /// Records what the last attempt to use the database showed.
    pub fn set_up(&self, up: bool) {
        if !up {
            self.inner.doubted.store(true, Ordering::Relaxed);
        }
        let was = self.inner.up.swap(up, Ordering::Relaxed);
        if was && !up {
            tracing::error!("the database is not accepting work; calls answer UNAVAILABLE until it does");
        } else if !was && up {
            tracing::info!("the database accepts work again");
        }
    }

    /// Fails fast while the database is known to be down.
    fn check_up(&self) -> Result<()> {
        if self.is_up() {
            Ok(())
        } else {
            Err(StoreError::unavailable(
                Cause::Unreachable,
                "the database is not accepting work right now; retry shortly",
            ))
        }
    }

    /// The pool, for single-statement reads (each one is its own snapshot).
    pub fn reader(&self) -> Conn<'_> {
        Conn::pool(self)
    }

    /// Starts a write transaction on one connection. On SQLite this waits for
    /// the process's write turn; the turn is held until the transaction ends.
    pub async fn write(&self) -> Result<Tx> {
        self.check_up()?;
        let tx = Tx::begin(self).await;
        self.observe(tx)
    }

    /// A unit of work that opens no transaction, on PostgreSQL: its reads
    /// go to the pool and its one write is its last statement, which is its
    /// own transaction — one round trip where BEGIN, the statement and
    /// COMMIT are three. None on SQLite.
    pub fn at_once(&self) -> Result<Option<Tx>> {
        if !self.is_postgres() {
            return Ok(None);
        }
        self.check_up()?;
        Ok(Some(Tx::at_once(self)))
    }

    /// A connection for one write statement (its own transaction): on SQLite
    /// the writer, under the write turn.
    pub async fn single(&self) -> Result<Single> {
        self.check_up()?;
        let single = Single::begin(self).await;
        self.observe(single)
    }

    /// Starts a read-only transaction whose reads all see one consistent state
    /// (REPEATABLE READ on PostgreSQL; a read transaction on SQLite's WAL).
    pub async fn snapshot(&self) -> Result<Snapshot> {
        self.check_up()?;
        let snapshot = Snapshot::begin(self).await;
        self.observe(snapshot)
    }

    /// The health check: a write transaction that needs room to grow (a row
    /// inserted and deleted again), so it fails while the database cannot
    /// store more, and succeeds once it can.
    pub async fn probe(&self) -> Result<()> {
        let tx = Tx::begin(self).await;
        let tx = self.observe(tx)?;
        let backend = self.backend();
        let blob = if self.is_postgres() { "repeat('x', 16384)" } else { "zeroblob(16384)" };
        let wrote = async {
            tx.execute_unprepared(&format!("INSERT INTO store_probe (id, filler) VALUES (1, {blob})")).await?;
            tx.execute_raw(sea_orm::Statement::from_string(backend, "DELETE FROM store_probe")).await
        }
        .await;
        match wrote {
            Ok(_) => {
                let committed = tx.commit().await;
                if committed.is_ok() {
                    self.set_up(true);
                    self.inner.doubted.store(false, Ordering::Relaxed);
                }
                committed
            }
            Err(e) => {
                tx.rollback().await;
                self.observe(Err(StoreError::from(e)))
            }
        }
    }

    /// The underlying connection pool, for benches and tests that seed data
    /// in bulk; the service itself never writes through it.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.inner.pool
    }

    /// SQLite: every [`CHECKPOINT_EVERY`] commits of the writer, copies the
    /// WAL back into the database file on a reader connection, in the
    /// background (PASSIVE: it waits for nobody and nobody waits for it).
    /// Left to the writer (SQLite's automatic checkpoint), the commit that
    /// crossed 1,000 WAL pages copied them itself, holding the one writer
    /// meanwhile: 3–5 ms every few dozen commits, the p99 of every write
    /// (a Resume's went from 4.1 to 0.9 ms without it). Only after commits:
    /// an idle server runs none.
    pub(crate) fn checkpoint_now_and_then(&self) {
        let (Some(writer), Ok(runtime)) = (&self.inner.writer, tokio::runtime::Handle::try_current()) else { return };
        if !(writer.commits.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(CHECKPOINT_EVERY)
            || writer.checkpointing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.count(1);
        let store = self.clone();
        runtime.spawn(async move {
            let checkpoint = sea_orm::Statement::from_string(DbBackend::Sqlite, "PRAGMA wal_checkpoint(PASSIVE)");
            let result = store.inner.pool.query_one_raw(checkpoint).await;
            let writer = store.inner.writer.as_ref().expect("SQLite");
            match result {
                Ok(_) => {
                    writer.checkpoints.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a WAL checkpoint beside the writer failed; the writer's own will do")
                }
            }
            writer.checkpointing.store(false, Ordering::Release);
        });
    }

    /// SQLite: checkpoints run beside the writer so far (for tests).
    pub fn background_checkpoints(&self) -> u64 {
        self.inner.writer.as_ref().map_or(0, |w| w.checkpoints.load(Ordering::Relaxed))
    }

    /// SQLite: how long committed transactions held the one writer so far
    /// (None on PostgreSQL, where transactions run side by side).
    pub fn writer_held(&self) -> Option<connection::WriterHeld> {
        self.inner.writer.as_ref().map(|w| w.held())
    }

    /// SQLite: whether a writer of this process holds the write turn now.
    pub fn writer_is_busy(&self) -> bool {
        self.inner.writer.as_ref().is_some_and(|w| w.is_busy())
    }

    /// SQLite only, for tests: runs a PRAGMA on the writer connection (e.g.
    /// `max_page_count`, to make the database refuse to grow).
    #[doc(hidden)]
    pub async fn sqlite_writer_pragma(&self, pragma: &str) -> Result<Option<i64>> {
        match &self.inner.writer {
            Some(_) => connection::Writer::pragma(self, pragma).await,
            None => Ok(None),
        }
    }

    /// Closes the connections and lets another process open the database.
    pub async fn close(&self) {
        if self.inner.writer.is_some() {
            connection::Writer::close(self).await;
        }
        self.inner.pool.close_by_ref().await.ok();
        self.inner.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Opens the database (creating a SQLite file if needed) and applies pending
/// migrations.
pub async fn connect(url: &str) -> Result<Store> {
    connect_with(url, StoreOptions::default()).await
}

pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Store> {
    let sqlite = url.starts_with("sqlite");
    let mut pool_options = ConnectOptions::new(url.to_owned());
    pool_options
        .max_connections(if sqlite { 8 } else { options.max_connections })
        .min_connections(1)
        .acquire_timeout(options.acquire_timeout)
        .sqlx_logging(false);
    if sqlite {
        // A file does not hang up: nothing to test a connection for.
        pool_options.test_before_acquire(false).map_sqlx_sqlite_opts(connection::sqlite_options);
    } else {
        pool_options.test_before_acquire_if_idle_for(IDLE_BEFORE_PING);
        let port = url.parse::<sea_orm::sqlx::postgres::PgConnectOptions>().map_or(5432, |o| o.get_port());
        pool_options.map_sqlx_postgres_pool_opts(move |o| {
            o.after_release(connection::shrink_after_use).after_connect(move |_, _| {
                nodelay::set_for_peer_port(port);
                Box::pin(std::future::ready(Ok(())))
            })
        });
    }
    let lock = if sqlite { Some(connection::ProcessLock::take(url).await?) } else { None };
    let pool = Database::connect(pool_options).await.map_err(StoreError::from)?;
    let backend = pool.get_database_backend();
    migrate(&pool).await?;
    let writer = if backend == DbBackend::Sqlite { Some(connection::Writer::open(url).await?) } else { None };
    Ok(Store {
        inner: Arc::new(Inner {
            backend,
            pool,
            writer,
            up: AtomicBool::new(true),
            writable: AtomicBool::new(true),
            doubted: AtomicBool::new(false),
            statements: AtomicU64::new(0),
            url: url.to_owned(),
            lock: std::sync::Mutex::new(lock),
        }),
    })
}

/// Applies pending migrations. On PostgreSQL an advisory lock makes replicas
/// that start together take turns: one migrates, the others then find
/// nothing to do (without it they race on the DDL and all but one fail).
async fn migrate(db: &DatabaseConnection) -> Result<()> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(migration::Migrator::up(db, None).await?);
    }
    const LOCK: i64 = 0x0072_6570_7269_7365; // "reprise" in ASCII
    let to_err = |e: sea_orm::sqlx::Error| StoreError::from(DbErr::Custom(format!("migration lock: {e}")));
    let mut lock = db.get_postgres_connection_pool().acquire().await.map_err(to_err)?;
    sea_orm::sqlx::query("SELECT pg_advisory_lock($1)").bind(LOCK).execute(&mut *lock).await.map_err(to_err)?;
    let migrated = migration::Migrator::up(db, None).await;
    sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK).execute(&mut *lock).await.map_err(to_err)?;
    Ok(migrated?)
}

/// Calls `on_event` with each payload any replica sends on `channel`
/// (PostgreSQL only; returns at once on SQLite, where there is one process).
/// Returns when the listening connection fails, so the caller can retry.
pub async fn listen(store: &Store, channel: &str, on_event: impl Fn(&str)) -> Result<()> {
    if !store.is_postgres() {
        return Ok(());
    }
    let pool = store.inner.pool.get_postgres_connection_pool();
    let to_err = |e: sea_orm::sqlx::Error| StoreError::unavailable(Cause::Unreachable, format!("listen: {e}"));
    let mut listener = sea_orm::sqlx::postgres::PgListener::connect_with(pool).await.map_err(to_err)?;
    listener.listen(channel).await.map_err(to_err)?;
    on_event(""); // (re)connected: anything sent while away was missed
    loop {
        let notification = listener.recv().await.map_err(to_err)?;
        on_event(notification.payload());
    }
}

impl Inner {
    fn set_writable(&self, writable: bool) {
        if !writable {
            self.doubted.store(true, Ordering::Relaxed);
        }
        let was = self.writable.swap(writable, Ordering::Relaxed);
        if was && !writable {
            tracing::error!(
                database = %self.where_it_lives(),
                "the database cannot store more: writes fail until space is freed (calls answer UNAVAILABLE, \
                 readiness is NOT_SERVING); nothing acknowledged is lost, and the server goes on by itself once \
                 writes succeed again"
            );
        } else if !was && writable {
            tracing::info!(database = %self.where_it_lives(), "the database accepts writes again");
        }
    }

    /// The database file and the free space of its file system (SQLite), or
    /// the server (PostgreSQL), for the log.
    fn where_it_lives(&self) -> String {
        let Some(path) = self.url.strip_prefix("sqlite://").map(|p| p.split('?').next().unwrap_or(p)) else {
            return "the PostgreSQL server (check its data directory's disk)".into();
        };
        let dir = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(".".as_ref());
        match free_bytes(dir) {
            Some(free) => {
                format!("{path} ({free} bytes free on its file system; SQLite needs room for its WAL and pages)")
            }
            None => path.to_owned(),
        }
    }
}

#[cfg(unix)]
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `stat` a writable statvfs.
    (unsafe { libc::statvfs(c.as_ptr(), &mut stat) } == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_bytes(_: &std::path::Path) -> Option<u64> {
    None
}

pub(crate) fn is_pg(c: &impl ConnectionTrait) -> bool {
    c.get_database_backend() == DbBackend::Postgres
}

/// The PostgreSQL channel on which replicas tell each other what changed.
pub const EVENTS_CHANNEL: &str = "reprise_events";

/// Sends `payload` to every replica listening on [`EVENTS_CHANNEL`] when
/// `tx` commits (PostgreSQL NOTIFY is transactional); nothing on SQLite.
pub async fn notify(tx: &Tx, payload: &str) -> Result<()> {
    if !is_pg(tx) || payload.is_empty() {
        return Ok(());
    }
    let stmt = sea_orm::Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [EVENTS_CHANNEL.into(), payload.into()],
    );
    tx.execute_raw(stmt).await?;
    Ok(())
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
