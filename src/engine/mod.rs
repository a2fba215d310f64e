//! Use cases. Each one that changes state is one unit of work
//! ([`Engine::unit`]): this process's turn on the execution, one
//! transaction on one connection, the domain deciding, the difference
//! written, and only after a successful COMMIT the answer and the wake-ups
//! (pollers, watchers, timers, other replicas).

mod access;
mod actions;
mod at_once;
mod audit;
mod authorize;
mod coalesce;
mod control;
mod dispatch;
mod error;
mod events;
mod idempotency;
mod known;
mod locks;
mod outputs;
mod pipelines;
mod query;
mod reports;
mod resume;
pub mod retention;
mod save;
pub mod secrets;
mod start;
mod tasks;
pub mod timers;
mod views;
mod work;

use std::{sync::Arc, time::Duration};

use crate::{
    domain::{execution::Millis, limits::Limits, resume::ChainLimits, retention::Policy},
    store::{Store, pipelines::DefinitionCache},
};

pub use actions::{Control, NotAllowed};
pub use at_once::AtOnceCounts;
pub use audit::{Attempt, Audit};
pub use control::Decision;
pub use dispatch::ClaimCounts;
pub use error::{Error, Result};
pub use events::Events;
pub use outputs::{MAX_PAGE_CHARS, OutputPage};
pub use pipelines::{NewPipeline, PipelineUpdate};
pub use query::Page;
pub use resume::{PlannedStage, ResumeOutcome, ResumeRequest};
pub use retention::{SweepOptions, Swept};
pub use start::StartRequest;
pub use tasks::{Beat, ClaimedTask, Completion, NextTask, Outcome};
pub use views::Watch;

/// Tunables of the engine; defaults suit production, tests shorten them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a task lease lasts without a heartbeat.
    pub lease: Duration,
    /// How often to look again for changes made by another replica while
    /// the channel that announces them is down.
    pub recheck: Duration,
    /// Optional bounds on resume chains.
    pub chain_limits: ChainLimits,
    /// Sizes, counts and depths callers may send.
    pub limits: Limits,
    /// What retention deletes (by default nothing), and how often it looks.
    pub retention: Policy,
    pub retention_interval: Duration,
    /// The key secret variables are sealed with; without one, pipelines
    /// that declare secrets cannot start.
    pub secrets: Option<Arc<secrets::Sealer>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            recheck: Duration::from_secs(1),
            chain_limits: ChainLimits::default(),
            limits: Limits::default(),
            retention: Policy::default(),
            retention_interval: Duration::from_secs(600),
            secrets: None,
        }
    }
}

/// The use cases, over one database. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    settings: Settings,
    events: Events,
    dispatch: dispatch::Dispatcher,
    definitions: DefinitionCache,
    views: views::Views,
    locks: locks::Locks,
    reports: reports::Reports,
    known: known::Knowns,
    callers: access::Callers,
}

impl Engine {
    pub fn new(store: Store, settings: Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                settings,
                events: Events::default(),
                dispatch: dispatch::Dispatcher::default(),
                definitions: DefinitionCache::default(),
                views: views::Views::default(),
                locks: locks::Locks::default(),
                reports: reports::Reports::default(),
                known: known::Knowns::default(),
                callers: access::Callers::default(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    pub fn definitions(&self) -> &DefinitionCache {
        &self.inner.definitions
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
