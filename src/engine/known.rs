//! What this replica last wrote of an execution that is running a stage:
//! the revision its commit left, and the execution's row and the running
//! stage's row exactly as the database holds them after that commit. A
//! report of that stage can then be decided before anything is written and
//! sent, with all it leads to, as one statement that writes only while the
//! execution is still at that revision (PostgreSQL: no BEGIN, no separate
//! report statement, no COMMIT — one round trip instead of four). Whatever
//! else changes the execution (another replica, a timer, a person) bumps
//! its revision, and the report is then decided the usual way.

use std::{sync::Arc, time::Duration};

use moka::sync::Cache;

use crate::domain::{
    execution::{Execution, StageRun},
    status::{ExecutionStatus, StageStatus},
};

/// An execution as this replica's last commit on it left it.
pub(super) struct Known {
    pub revision: i64,
    pub execution: Execution,
    /// Its running stage.
    pub stage: StageRun,
}

impl Known {
    /// What a unit that committed `execution` at `revision` knows, if the
    /// execution is running a stage.
    pub fn after(revision: i64, execution: &Execution, stages: &[StageRun]) -> Option<Known> {
        if execution.status != ExecutionStatus::Running {
            return None;
        }
        let stage = stages.iter().find(|s| s.status == StageStatus::Running)?;
        Some(Known { revision, execution: execution.clone(), stage: stage.clone() })
    }

    /// Bytes it holds, roughly: its strings and maps.
    fn weight(&self) -> u32 {
        let e = &self.execution;
        let map = |m: &std::collections::BTreeMap<String, String>| {
            m.iter().map(|(k, v)| k.len() + v.len() + 64).sum::<usize>()
        };
        let bytes: usize = 1024
            + map(&e.variables)
            + map(&e.artifacts)
            + e.sealed_secrets.as_ref().map_or(0, String::len)
            + e.status_message.len()
            + self.stage.status_message.len()
            + self.stage.decision_comment.len();
        bytes.min(u32::MAX as usize) as u32
    }
}

pub(super) struct Knowns {
    known: Cache<String, Arc<Known>>,
    /// Executions whose last report sent at once found the revision moved
    /// on: their next report goes the usual way (a report that raced a
    /// change does not make the next one pay a wasted round trip too).
    missed: Cache<String, ()>,
    /// Reports sent at once, and sent but found the execution changed.
    pub sent: std::sync::atomic::AtomicU64,
    pub stale: std::sync::atomic::AtomicU64,
}

impl Default for Knowns {
    fn default() -> Self {
        Knowns {
            known: super::views::per_execution(|_, k: &Arc<Known>| k.weight()),
            missed: Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(60)).build(),
            sent: Default::default(),
            stale: Default::default(),
        }
    }
}

impl Knowns {
    /// What is known of `id`, unless its last report sent at once missed.
    pub fn get(&self, id: &str) -> Option<Arc<Known>> {
        if self.missed.remove(id).is_some() {
            return None;
        }
        self.known.get(id)
    }

    /// A report sent at once found `id` changed: forget it.
    pub fn missed(&self, id: &str) {
        self.stale.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.known.invalidate(id);
        self.missed.insert(id.to_owned(), ());
    }

    pub fn forget(&self, id: &str) {
        self.known.invalidate(id);
    }

    pub fn forget_all(&self) {
        self.known.invalidate_all();
    }

    /// After a commit that changed `changed`: what it knows replaces what was
    /// known of them, the others are forgotten.
    pub fn committed(&self, changed: &[String], known: Option<(String, Known)>) {
        let kept = known.as_ref().map(|(id, _)| id.as_str());
        for c in changed.iter().filter(|c| Some(c.as_str()) != kept) {
            self.known.invalidate(c);
        }
        if let Some((id, known)) = known {
            self.known.insert(id, Arc::new(known));
        }
    }
}
