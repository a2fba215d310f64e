//! Pipelines and their immutable versions.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};

use super::{
    Result, corrupt,
    entity::{pipeline, pipeline_version},
};
use crate::domain::{
    execution::{Execution, Millis},
    pipeline::Definition,
};

/// A pipeline at one version.
#[derive(Debug, Clone)]
pub struct PipelineRecord {
    pub id: String,
    pub application: String,
    pub name: String,
    pub version: i64,
    pub latest_version: i64,
    pub definition: Definition,
    pub created_at: Millis,
    pub version_created_at: Millis,
}

pub async fn insert(
    c: &impl ConnectionTrait,
    id: &str,
    application: &str,
    name: &str,
    definition: &Definition,
    now: Millis,
) -> Result<()> {
    pipeline::Entity::insert(pipeline::ActiveModel {
        id: Set(id.into()),
        application: Set(application.into()),
        name: Set(name.into()),
        latest_version: Set(1),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(c)
    .await?;
    insert_version(c, id, 1, definition, now).await
}

/// Moves the latest version from `expected` to `expected + 1` and stores the
/// new definition; false if `expected` was not the latest (a concurrent update).
pub async fn add_version(
    c: &impl ConnectionTrait,
    id: &str,
    expected: i64,
    definition: &Definition,
    now: Millis,
) -> Result<bool> {
    let updated = pipeline::Entity::update_many()
        .col_expr(pipeline::Column::LatestVersion, Expr::value(expected + 1))
        .col_expr(pipeline::Column::UpdatedAt, Expr::value(now))
        .filter(pipeline::Column::Id.eq(id))
        .filter(pipeline::Column::LatestVersion.eq(expected))
        .exec(c)
        .await?;
    if updated.rows_affected == 0 {
        return Ok(false);
    }
    insert_version(c, id, expected + 1, definition, now).await?;
    Ok(true)
}

async fn insert_version(
    c: &impl ConnectionTrait,
    id: &str,
    version: i64,
    definition: &Definition,
    now: Millis,
) -> Result<()> {
    let json = serde_json::to_string(definition).map_err(corrupt)?;
    pipeline_version::Entity::insert(pipeline_version::ActiveModel {
        pipeline_id: Set(id.into()),
        version: Set(version),
        definition: Set(json),
        created_at: Set(now),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// The pipeline at `version`, or at its latest when `version` is None.
/// `Ok(None)` when the pipeline or that version does not exist.
pub async fn get(c: &impl ConnectionTrait, id: &str, version: Option<i64>) -> Result<Option<PipelineRecord>> {
    let Some(head) = pipeline::Entity::find_by_id(id.to_owned()).one(c).await? else {
        return Ok(None);
    };
    let version = version.unwrap_or(head.latest_version);
    let Some(row) = pipeline_version::Entity::find_by_id((id.to_owned(), version)).one(c).await? else {
        return Ok(None);
    };
    record(head, row).map(Some)
}

/// Parsed definitions of pinned versions. A version never changes once
/// written, so every load of every execution on it can share one parsed
/// copy instead of reading and parsing the JSON again on each transition.
///
/// Bounded in entries and in bytes (twice the stored JSON's length stands
/// in for a parsed definition's size in memory, small strings and all): a
/// definition may be megabytes, and callers choose how many versions exist.
/// The least recently used go first.
pub struct DefinitionCache {
    parsed: Mutex<Lru>,
    max_entries: usize,
    max_bytes: usize,
}

/// The cached versions, each with its weight and when it was last used.
#[derive(Default)]
struct Lru {
    entries: HashMap<(String, i64), (Arc<Definition>, usize, u64)>,
    bytes: usize,
    clock: u64,
}

impl Default for DefinitionCache {
    /// 64 MiB, so that a quarter of it holds the largest definition the
    /// default limits accept (20,000 workflows in 2 MiB encoded: at most
    /// about 5 MB of JSON, weighed twice):
    /// a version too big to cache is read and parsed again on every report
    /// of its executions' tasks — for a 200 × 100 pipeline, 2.7 MB of JSON
    /// per CompleteTask. Only versions in use take the room.
    fn default() -> Self {
        Self::new(1024, 64 * 1024 * 1024)
    }
}

impl DefinitionCache {
    /// A cache of at most `max_entries` versions and about `max_bytes` of memory.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self { parsed: Mutex::default(), max_entries, max_bytes }
    }

    /// How many versions and bytes are cached now.
    pub fn size(&self) -> (usize, usize) {
        let lru = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        (lru.entries.len(), lru.bytes)
    }

    /// Shares a definition just read with a pipeline version, for the
    /// executions that will pin it.
    pub fn pinned(&self, pipeline_id: &str, version: i64, definition: Definition) -> Arc<Definition> {
        let key = (pipeline_id.to_owned(), version);
        if let Some(found) = self.get(&key) {
            return found;
        }
        let bytes = 2 * serde_json::to_string(&definition).map_or(0, |s| s.len());
        let definition = Arc::new(definition);
        self.put(key, definition.clone(), bytes);
        definition
    }

    /// The pipeline version `execution` is pinned to; its absence is corruption.
    pub async fn pinned_by(&self, c: &impl ConnectionTrait, execution: &Execution) -> Result<Arc<Definition>> {
        let key = (execution.pipeline_id.clone(), execution.pipeline_version);
        if let Some(found) = self.get(&key) {
            return Ok(found);
        }
        let row = pipeline_version::Entity::find_by_id(key.clone())
            .one(c)
            .await?
            .ok_or_else(|| corrupt(format!("execution {} pins missing pipeline {} v{}", execution.id, key.0, key.1)))?;
        let definition = Arc::new(parse(&row)?);
        self.put(key, definition.clone(), 2 * row.definition.len());
        Ok(definition)
    }

    fn get(&self, key: &(String, i64)) -> Option<Arc<Definition>> {
        let mut lru = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        lru.clock += 1;
        let now = lru.clock;
        lru.entries.get_mut(key).map(|(definition, _, used)| {
            *used = now;
            definition.clone()
        })
    }

    fn put(&self, key: (String, i64), definition: Arc<Definition>, bytes: usize) {
        if bytes > self.max_bytes / 4 {
            return; // one version would crowd out the others
        }
        let mut lru = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        lru.clock += 1;
        let now = lru.clock;
        if let Some((_, old, _)) = lru.entries.insert(key, (definition, bytes, now)) {
            lru.bytes -= old;
        }
        lru.bytes += bytes;
        while lru.entries.len() > self.max_entries || lru.bytes > self.max_bytes {
            // A linear scan for the oldest: the cache holds at most a few
            // thousand versions and fills only on a miss (a database read).
            let Some(oldest) = lru.entries.iter().min_by_key(|(_, (_, _, used))| *used).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some((_, weight, _)) = lru.entries.remove(&oldest) {
                lru.bytes -= weight;
            }
        }
    }
}

/// Whether the pipeline exists at all (to tell "no such pipeline" from "no such version").
pub async fn latest_version(c: &impl ConnectionTrait, id: &str) -> Result<Option<i64>> {
    Ok(pipeline::Entity::find_by_id(id.to_owned()).one(c).await?.map(|p| p.latest_version))
}

/// A page of pipelines at their latest versions, ordered by id after `after`,
/// limited to the `readable` applications when given. Without `definitions`
/// the versions are not read and each record's definition is empty.
pub async fn list(
    c: &impl ConnectionTrait,
    application: Option<&str>,
    readable: Option<&[String]>,
    after: Option<&str>,
    limit: u64,
    definitions: bool,
) -> Result<Vec<PipelineRecord>> {
    let mut query = pipeline::Entity::find().order_by_asc(pipeline::Column::Id).limit(limit);
    if let Some(app) = application {
        query = query.filter(pipeline::Column::Application.eq(app));
    }
    if let Some(apps) = readable {
        query = query.filter(pipeline::Column::Application.is_in(apps.iter().map(String::as_str)));
    }
    if let Some(after) = after {
        query = query.filter(pipeline::Column::Id.gt(after));
    }
    let heads = query.all(c).await?;
    let mut out = Vec::with_capacity(heads.len());
    if !definitions {
        return Ok(heads
            .into_iter()
            .map(|head| PipelineRecord {
                id: head.id,
                application: head.application,
                name: head.name,
                version: head.latest_version,
                latest_version: head.latest_version,
                definition: Definition::default(),
                created_at: head.created_at,
                // The head is updated exactly when a version is added.
                version_created_at: head.updated_at,
            })
            .collect());
    }
    for head in heads {
        let key = (head.id.clone(), head.latest_version);
        let row = pipeline_version::Entity::find_by_id(key)
            .one(c)
            .await?
            .ok_or_else(|| corrupt(format!("pipeline {} has no row for its latest version", head.id)))?;
        out.push(record(head, row)?);
    }
    Ok(out)
}

fn parse(row: &pipeline_version::Model) -> Result<Definition> {
    serde_json::from_str(&row.definition)
        .map_err(|e| corrupt(format!("pipeline {} v{}: {e}", row.pipeline_id, row.version)))
}

fn record(head: pipeline::Model, row: pipeline_version::Model) -> Result<PipelineRecord> {
    let definition = parse(&row)?;
    Ok(PipelineRecord {
        id: head.id,
        application: head.application,
        name: head.name,
        version: row.version,
        latest_version: head.latest_version,
        definition,
        created_at: head.created_at,
        version_created_at: row.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> (String, i64) {
        (name.to_owned(), 1)
    }

    #[test]
    fn the_definition_cache_keeps_the_recently_used_within_its_bounds() {
        let d = || Arc::new(Definition::default());
        // By count: the least recently used go first.
        let cache = DefinitionCache::new(3, 1_000_000);
        for i in 0..5 {
            cache.put(key(&format!("p{i}")), d(), 100);
        }
        assert_eq!(cache.size(), (3, 300));
        assert!(cache.get(&key("p1")).is_none() && cache.get(&key("p2")).is_some());
        cache.put(key("p5"), d(), 100);
        assert!(cache.get(&key("p2")).is_some(), "used lately, kept");
        assert!(cache.get(&key("p3")).is_none(), "the oldest went");
        // By bytes, and one too big for a quarter of the budget is not kept.
        let cache = DefinitionCache::new(100, 1000);
        for i in 0..10 {
            cache.put(key(&format!("q{i}")), d(), 200);
        }
        assert_eq!(cache.size(), (5, 1000));
        cache.put(key("huge"), d(), 251);
        assert!(cache.get(&key("huge")).is_none());
        assert_eq!(cache.size(), (5, 1000));
    }
}
