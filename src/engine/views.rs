//! Bounded caches of what reads and the worker protocol need again and
//! again: an execution as shown (keyed by its revision, so a read that
//! finds the same revision in the database reuses it), an execution's
//! immutable inputs (what a claimed task's environment is made of), and the
//! execution a task belongs to. Every one of them is a bounded cache.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use moka::sync::Cache;

use super::{
    Engine, Error, Result,
    coalesce::Coalesced,
    secrets::{self, Sealer},
    tasks::env_name,
};
use crate::{
    domain::{
        execution::{Execution, ExecutionDetail, ExecutionState, StageRun, WorkflowRun},
        pipeline::Definition,
    },
    store::{executions, stages, tasks},
};

/// An execution as shown, with what tells whether it is still current.
#[derive(Clone)]
pub(super) struct Cached {
    /// The revision and running workflows it shows (see `executions::view_key`).
    pub key: (i64, i64),
    /// It shows every change announced up to this stamp.
    pub stamp: u64,
    pub detail: Arc<ExecutionDetail>,
}

pub(super) struct Views {
    details: Cache<String, Cached>,
    inputs: Cache<String, Arc<Inputs>>,
    tasks: Cache<String, String>,
    /// One load of an execution at a time: readers woken by the same change
    /// share it instead of each reading the execution again.
    loading: super::locks::Locks,
    /// Callers asking at once whether a view is current share one query.
    keys: Coalesced<crate::store::Result<Option<(i64, i64)>>>,
}

/// A cache of what the engine keeps per execution: at most 16 MiB by
/// `weigh`'s estimate of each entry, an entry gone after 10 minutes unread.
pub(super) fn per_execution<V>(weigh: impl Fn(&String, &V) -> u32 + Send + Sync + 'static) -> Cache<String, V>
where
    V: Clone + Send + Sync + 'static,
{
    Cache::builder().max_capacity(16 * 1024 * 1024).weigher(weigh).time_to_idle(Duration::from_secs(600)).build()
}

impl Default for Views {
    fn default() -> Self {
        Views {
            // Weighed by size: a big execution takes the room of many small ones.
            details: per_execution(|_, c: &Cached| weight(&c.detail)),
            // Weighed too: a start may bind 100 variables of 4 KiB each.
            inputs: per_execution(|_, i: &Arc<Inputs>| i.weight()),
            tasks: Cache::builder().max_capacity(20_000).time_to_idle(Duration::from_secs(3600)).build(),
            loading: super::locks::Locks::default(),
            keys: Coalesced::default(),
        }
    }
}

/// The entry, its key and the cache's bookkeeping, in bytes.
const CACHED: usize = 256;

/// A string's heap block, with the allocator's 16 bytes beside it.
fn text(s: &str) -> usize {
    if s.is_empty() { 0 } else { s.len() + 16 }
}

fn maybe(s: &Option<String>) -> usize {
    s.as_deref().map_or(0, text)
}

/// A map of strings: its entries, and a B-tree node (room for 11) per 6.
fn map(m: &BTreeMap<String, String>) -> usize {
    m.iter().map(|(k, v)| text(k) + text(v)).sum::<usize>() + m.len().div_ceil(6) * 600
}

/// What a cached view takes in memory, in bytes: its structs, and each
/// string's heap block with the allocator's own 16 bytes beside it (the
/// definition it points to is weighed by the definitions cache). The
/// earlier estimate, 1 KiB and 256 bytes a stage and a workflow, was about
/// half of what heaptrack found cached views of one-workflow executions to
/// hold (some 3.4 KB each), so 16 MiB of weight meant twice that in memory.
fn weight(d: &ExecutionDetail) -> u32 {
    let e = &d.execution;
    let execution = size_of::<ExecutionDetail>()
        + text(&e.id) * 2
        + text(&e.pipeline_id)
        + text(&e.application)
        + text(&e.status_message)
        + text(&e.request_id)
        + text(&e.triggered_by)
        + text(&e.chain_id)
        + maybe(&e.resumed_by)
        + maybe(&e.sealed_secrets)
        + e.resumed_from.as_ref().map_or(0, |r| text(&r.execution_id) + text(&r.stage_name) + text(&r.reason))
        + e.end_stage.as_ref().map_or(0, |m| text(&m.name))
        + map(&e.variables)
        + map(&e.artifacts);
    let stages: usize = d
        .stages
        .iter()
        .map(|s| {
            size_of::<StageRun>()
                + text(&s.name)
                + text(&s.status_message)
                + text(&s.decided_by)
                + text(&s.decision_comment)
                + maybe(&s.carried_from)
                + s.first_failure.as_ref().map_or(0, |f| text(&f.workflow) + text(&f.message))
        })
        .sum();
    let workflows: usize = d
        .workflows
        .iter()
        .map(|w| {
            size_of::<WorkflowRun>()
                + text(&w.task_id)
                + text(&w.execution_id)
                + text(&w.name)
                + text(&w.task_queue)
                + text(&w.command)
                + text(&w.output)
                + text(&w.status_message)
                + maybe(&w.lease_token)
                + maybe(&w.lease_owner)
        })
        .sum();
    (CACHED + execution + stages + workflows).min(u32::MAX as usize) as u32
}

impl Views {
    fn get(&self, id: &str) -> Option<Cached> {
        self.details.get(id)
    }

    fn put(&self, id: &str, cached: Cached) {
        // Never replace a later view with an earlier one (a slow read racing a write).
        if self.details.get(id).is_none_or(|c| c.stamp <= cached.stamp) {
            self.details.insert(id.to_owned(), cached);
        }
    }

    /// An execution retention deleted: nothing of it is served again.
    pub fn forget(&self, id: &str) {
        self.details.invalidate(id);
        self.inputs.invalidate(id);
    }

    pub fn task_of(&self, task_id: &str, execution_id: &str) {
        self.tasks.insert(task_id.to_owned(), execution_id.to_owned());
    }

    pub fn execution_of(&self, task_id: &str) -> Option<String> {
        self.tasks.get(task_id)
    }
}

/// What an execution was started with; never changes.
pub(crate) struct Inputs {
    pub application: String,
    pub variables: BTreeMap<String, String>,
    pub artifacts: BTreeMap<String, String>,
    pub definition: Arc<Definition>,
    /// The secret variables, opened; only tasks of workflows that list one get it.
    secrets: BTreeMap<String, String>,
    /// Their values, longest first, to mask in what workers report.
    masks: Vec<String>,
}

impl Inputs {
    /// The inputs of `e`, its secrets opened with `sealer`. Secrets that do
    /// not open are logged and left out: the tasks that need them fail,
    /// and nothing else stops.
    pub fn of(e: &Execution, definition: Arc<Definition>, sealer: Option<&Sealer>) -> Inputs {
        let secrets = match (&e.sealed_secrets, sealer) {
            (None, _) => BTreeMap::new(),
            (Some(sealed), Some(sealer)) => sealer.open(&e.id, sealed).unwrap_or_else(|err| {
                tracing::error!(execution_id = %e.id, error = %err, "secret variables do not open; its tasks run without them");
                BTreeMap::new()
            }),
            (Some(_), None) => {
                tracing::error!(execution_id = %e.id,
                    "execution holds secret variables and this server has no secrets key; its tasks run without them");
                BTreeMap::new()
            }
        };
        Inputs {
            application: e.application.clone(),
            variables: e.variables.clone(),
            artifacts: e.artifacts.clone(),
            definition,
            masks: secrets::masking_order(secrets.values().cloned()),
            secrets,
        }
    }

    /// What it takes in memory, in bytes, as [`weight`] counts (the
    /// definition is the definitions cache's to weigh).
    fn weight(&self) -> u32 {
        let masks: usize = self.masks.iter().map(|m| size_of::<String>() + text(m)).sum();
        let own = CACHED
            + size_of::<Inputs>()
            + text(&self.application)
            + map(&self.variables)
            + map(&self.artifacts)
            + map(&self.secrets)
            + masks;
        own.min(u32::MAX as usize) as u32
    }

    /// `text` with this execution's secret values masked.
    pub fn mask<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        secrets::mask(text, &self.masks)
    }

    /// How far back before a new piece of output a secret may have begun:
    /// one character less than the longest secret (0 without secrets).
    pub fn mask_reach(&self) -> usize {
        self.masks.iter().map(|m| m.chars().count()).max().unwrap_or(0).saturating_sub(1)
    }

    /// The environment a task of this execution runs with.
    pub fn environment(&self, stage: &str, workflow: &str, execution_id: &str) -> BTreeMap<String, String> {
        let wanted = self
            .definition
            .stages
            .iter()
            .find(|s| &*s.name == stage)
            .and_then(|s| s.workflows().iter().find(|w| w.name == workflow))
            .map_or(&[][..], |w| w.secrets.as_slice());
        let secrets = wanted.iter().filter_map(|name| self.secrets.get_key_value(name));
        let mut env: BTreeMap<String, String> = self
            .variables
            .iter()
            .chain(secrets)
            .map(|(k, v)| (format!("REPRISE_VAR_{}", k.to_uppercase()), v.clone()))
            .chain(self.artifacts.iter().map(|(k, v)| (format!("REPRISE_ARTIFACT_{}", env_name(k)), v.clone())))
            .collect();
        env.insert("REPRISE_EXECUTION_ID".into(), execution_id.to_owned());
        env.insert("REPRISE_STAGE".into(), stage.to_owned());
        env.insert("REPRISE_WORKFLOW".into(), workflow.to_owned());
        env
    }
}

/// What a watcher of one execution waits on: the stamp of its latest change.
pub struct Watch {
    pub changes: tokio::sync::watch::Receiver<u64>,
}

impl Engine {
    /// The immutable inputs of an execution (cached).
    pub(super) async fn inputs(&self, execution_id: &str) -> Result<Arc<Inputs>> {
        if let Some(found) = self.inner.views.inputs.get(execution_id) {
            return Ok(found);
        }
        let reader = self.store().reader();
        let e =
            executions::get(&reader, execution_id).await?.ok_or_else(|| Error::not_found("execution", execution_id))?;
        let definition = self.definitions().pinned_by(&reader, &e).await?;
        let inputs = Arc::new(Inputs::of(&e, definition, self.settings().secrets.as_deref()));
        self.inner.views.inputs.insert(execution_id.to_owned(), inputs.clone());
        Ok(inputs)
    }

    /// The inputs of `e`, whose state the caller holds: cached ones (they
    /// never change), or built from it without a read and remembered.
    pub(super) fn inputs_of(&self, e: &Execution, definition: &Arc<Definition>) -> Arc<Inputs> {
        if let Some(found) = self.inner.views.inputs.get(&e.id) {
            return found;
        }
        let inputs = Arc::new(Inputs::of(e, definition.clone(), self.settings().secrets.as_deref()));
        self.inner.views.inputs.insert(e.id.clone(), inputs.clone());
        inputs
    }

    /// The execution as shown now: one query for what tells whether a view
    /// is current (shared by the callers asking meanwhile), and the cached
    /// view when it is; otherwise one consistent snapshot, shared with every
    /// reader asking at the same time.
    pub(super) async fn view(&self, id: &str) -> Result<Cached> {
        let engine = self.clone();
        let owned = id.to_owned();
        let read = move || {
            let (engine, id) = (engine.clone(), owned.clone());
            async move { executions::view_key(&engine.store().reader(), &id).await }
        };
        let key = match self.inner.views.keys.read(id, read).await {
            Some(answer) => answer?,
            None => executions::view_key(&self.store().reader(), id).await?,
        };
        let key = key.ok_or_else(|| Error::not_found("execution", id))?;
        let current = |c: &Cached| c.key == key;
        if let Some(found) = self.inner.views.get(id).filter(current) {
            return Ok(found);
        }
        self.load_shared(id, current).await
    }

    /// The cached view of an execution if it shows `revision`, without a query.
    pub(super) fn view_at(&self, id: &str, revision: i64) -> Option<Cached> {
        self.inner.views.get(id).filter(|c| c.key.0 == revision)
    }

    /// The execution as shown after the change stamped `stamp` (a watcher
    /// was woken by it): from the cache when it is that recent, without a query.
    pub(super) async fn view_after(&self, id: &str, stamp: u64) -> Result<Cached> {
        let current = |c: &Cached| c.stamp >= stamp;
        if let Some(found) = self.inner.views.get(id).filter(current) {
            return Ok(found);
        }
        self.load_shared(id, current).await
    }

    /// Loads the view unless another reader did while this one waited.
    async fn load_shared(&self, id: &str, current: impl Fn(&Cached) -> bool) -> Result<Cached> {
        let _turn = self.inner.views.loading.turn(id).await;
        if let Some(found) = self.inner.views.get(id).filter(|c| current(c)) {
            return Ok(found);
        }
        let cached = self.load_view(id).await?;
        self.inner.views.put(id, cached.clone());
        Ok(cached)
    }

    /// Reads an execution, its stages and workflows in one read transaction,
    /// so they agree with each other.
    async fn load_view(&self, id: &str) -> Result<Cached> {
        let stamp = self.events().stamp();
        let snapshot = self.store().snapshot().await?;
        let loaded = async {
            let (execution, revision) =
                executions::get_with_revision(&snapshot, id).await?.ok_or_else(|| Error::not_found("execution", id))?;
            let definition = self.definitions().pinned_by(&snapshot, &execution).await?;
            let stages = stages::of_execution(&snapshot, id).await?;
            let workflows = tasks::of_view(&snapshot, id, &stages).await?;
            let running = workflows
                .iter()
                .filter(|w| w.execution_id == id && w.status == crate::domain::status::WorkflowStatus::Running)
                .count() as i64;
            let detail =
                Arc::new(ExecutionDetail { state: ExecutionState { execution, definition, stages }, workflows });
            Ok::<_, Error>(Cached { key: (revision, running), stamp, detail })
        }
        .await;
        snapshot.end().await;
        loaded
    }
}
