//! Use cases. Each one that changes state opens one transaction, asks the
//! domain what to do, persists the difference and commits; then it wakes
//! whoever waits on the change (pollers, watchers, timers).

mod access;
mod audit;
mod authorize;
mod control;
mod error;
mod idempotency;
mod notify;
mod pipelines;
mod progress;
mod query;
mod resume;
mod start;
mod tasks;
mod timers;

use std::{sync::Arc, time::Duration};

use sea_orm::{DatabaseTransaction, DbBackend};

use crate::{
    domain::{
        execution::{ExecutionDetail, Millis},
        limits::Limits,
        resume::ChainLimits,
    },
    store::{
        self, Db,
        executions::{self, Key, Scope},
        pipelines::DefinitionCache,
    },
};

pub use audit::{Attempt, Audit};
pub use control::Decision;
pub use error::{Error, Result};
pub use notify::Notifier;
pub use pipelines::{NewPipeline, PipelineUpdate};
pub use query::Page;
pub use resume::{PlannedStage, ResumeOutcome, ResumeRequest};
pub use start::StartRequest;
pub use tasks::{Beat, ClaimedTask, Completion, Outcome};

/// Tunables of the engine; defaults suit production, tests shorten them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a task lease lasts without a heartbeat.
    pub lease: Duration,
    /// Longest sleep of the timer loop and of watchers between checks, which
    /// bounds how late a change made by another replica is noticed.
    pub recheck: Duration,
    /// Optional bounds on resume chains.
    pub chain_limits: ChainLimits,
    /// Sizes, counts and depths callers may send.
    pub limits: Limits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            recheck: Duration::from_secs(1),
            chain_limits: ChainLimits::default(),
            limits: Limits::default(),
        }
    }
}

/// The use cases, over one database. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    settings: Settings,
    notifier: Notifier,
    definitions: DefinitionCache,
    /// Present on SQLite only: see [`Engine::write_turn`].
    write_turn: Option<tokio::sync::Mutex<()>>,
}

impl Engine {
    pub fn new(db: Db, settings: Settings) -> Self {
        let write_turn = (db.get_database_backend() == DbBackend::Sqlite).then(tokio::sync::Mutex::default);
        let (notifier, definitions) = (Notifier::default(), DefinitionCache::default());
        Self { inner: Arc::new(Inner { db, settings, notifier, definitions, write_turn }) }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn notifier(&self) -> &Notifier {
        &self.inner.notifier
    }

    pub fn definitions(&self) -> &DefinitionCache {
        &self.inner.definitions
    }

    /// This process's turn to write. SQLite lets one writer in at a time and
    /// makes the others sleep and retry (1, 2, 5, 10 … ms, never woken when
    /// the lock frees); queueing this process's writers here instead hands
    /// the lock on the moment it is released. None on PostgreSQL, which
    /// locks rows, not the database.
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.inner.write_turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        }
    }

    /// A write transaction, with the turn that must outlive it.
    async fn begin(&self) -> Result<(Option<tokio::sync::MutexGuard<'_, ()>>, DatabaseTransaction)> {
        let turn = self.write_turn().await;
        Ok((turn, store::begin(self.db()).await?))
    }

    /// Runs `change` on one execution inside one transaction: lock, load
    /// (the workflows of `scope`), change in memory, save what differs,
    /// commit, then announce. An error from `change` rolls everything back.
    async fn change<T>(
        &self,
        key: Key<'_>,
        scope: Scope<'_>,
        audit: Option<Audit>,
        change: impl FnOnce(&mut ExecutionDetail, Millis) -> Result<T>,
    ) -> Result<(T, ExecutionDetail)> {
        let started = std::time::Instant::now();
        let (turn, txn) = self.begin().await?;
        let Some(execution) = executions::lock(&txn, key).await? else {
            txn.rollback().await.map_err(store::StoreError::from)?;
            return Err(match key {
                Key::Id(id) => Error::not_found("execution", id),
                Key::OfTask(id) => Error::not_found("task", id),
            });
        };
        let before = executions::detail_of(&txn, execution, self.definitions(), scope).await?;
        let mut after = before.clone();
        let out = match change(&mut after, now()) {
            Ok(out) => out,
            Err(e) => {
                txn.rollback().await.map_err(store::StoreError::from)?;
                return Err(e);
            }
        };
        executions::save(&txn, &before, &after).await?;
        if let Some(audit) = audit {
            audit.record(&txn, Some(&after.execution.application), Some(&after.execution.id)).await?;
        }
        txn.commit().await.map_err(store::StoreError::from)?;
        drop(turn);
        self.notifier().announce(&before, &after);
        observe_stages(&before, &after, started);
        Ok((out, after))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or_default()
}

/// Time-ordered ids: keyset pagination by id is then also by age.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Logs each stage change in a span naming the execution, its chain and the
/// stage, and times transitions (a stage ended and the next one started).
pub(crate) fn observe_stages(before: &ExecutionDetail, after: &ExecutionDetail, started: std::time::Instant) {
    let e = &after.execution;
    let mut ended = false;
    let mut began = false;
    for (old, new) in before.stages.iter().zip(&after.stages) {
        if old.status == new.status {
            continue;
        }
        ended |= old.status.is_active();
        began |= new.status.is_active();
        tracing::info_span!("stage", execution_id = %e.id, chain_id = %e.chain_id, stage = %new.name, index = new.index)
            .in_scope(|| tracing::info!(from = %old.status, to = %new.status, "stage changed"));
    }
    if ended && began {
        metrics::histogram!(crate::metrics::STAGE_TRANSITION).record(started.elapsed().as_secs_f64());
    }
    if before.execution.status != e.status {
        tracing::info!(execution_id = %e.id, chain_id = %e.chain_id, from = %before.execution.status, to = %e.status, "execution changed");
    }
}
