//! Group commit of task reports. The workflows of one stage tend to report
//! together, and reports of one execution take turns on it: instead of
//! each waiting for the one before to commit, whoever gets the turn takes
//! every report queued for the execution meanwhile and commits them as one
//! transaction. Should any of them fail, the group is rolled back and each
//! report runs again on its own, so every caller gets its own answer and
//! nothing is acknowledged that was not committed.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use tokio::sync::oneshot;

use super::{Engine, Error, Result, dispatch::Eager, locks::Turn, tasks::Completion};
use crate::{
    domain::execution::WorkflowRun,
    store::{Cause, StoreError},
};

/// A report waiting for its execution's turn, and where its answer goes.
struct Queued {
    completion: Completion,
    /// The reporter, if it is ready for its next task.
    eager: Option<Eager>,
    answer: oneshot::Sender<Result<WorkflowRun>>,
}

/// Reports queued per execution.
#[derive(Default)]
pub(super) struct Reports {
    queued: Mutex<HashMap<String, Vec<Queued>>>,
    /// Reports committed with at least one other (for the benches).
    grouped: std::sync::atomic::AtomicU64,
}

impl Reports {
    fn push(&self, execution_id: &str, queued: Queued) {
        let mut map = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(execution_id.to_owned()).or_default().push(queued);
    }

    fn take(&self, execution_id: &str) -> Vec<Queued> {
        let mut map = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(execution_id).unwrap_or_default()
    }
}

impl Engine {
    /// Task reports committed together with at least one other, since start.
    pub fn grouped_reports(&self) -> u64 {
        self.inner.reports.grouped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits `c` for the task's execution, with whatever other reports of
    /// that execution are waiting when its turn comes. `eager` goes with it
    /// into the unit that commits it; whatever that unit leases it has
    /// been handed by the time the answer comes.
    pub(super) async fn report(&self, execution_id: &str, c: Completion, eager: Option<Eager>) -> Result<WorkflowRun> {
        let (answer, answered) = oneshot::channel();
        self.inner.reports.push(execution_id, Queued { completion: c, eager, answer });
        let started = Instant::now();
        let turn = self.inner.locks.turn(execution_id).await;
        let group = self.inner.reports.take(execution_id);
        if group.is_empty() {
            // Taken by an earlier turn, which may need this one back to run
            // it alone: never wait for the answer holding the turn.
            drop(turn);
        } else {
            self.commit_group(turn, started, execution_id, group).await;
        }
        // Ours went with this group or an earlier one; its committer is a
        // detached task that answers every report it took.
        answered.await.map_err(|_| {
            Error::Store(StoreError::unavailable(Cause::Busy, "the report was not committed; send it again"))
        })?
    }

    async fn commit_group(&self, turn: Turn, started: Instant, id: &str, mut group: Vec<Queued>) {
        if group.len() == 1 {
            let mut q = group.into_iter().next().expect("one report");
            let _ = q.answer.send(self.report_alone(Some((turn, started)), id, &q.completion, q.eager.take()).await);
            return;
        }
        // Should the group fail, its reporters get no next task (their
        // reports, run again alone, may still be accepted): they poll.
        let eager = group.iter_mut().filter_map(|q| q.eager.take()).collect();
        if let Some(runs) = self.try_group(turn, started, id, &group, eager).await {
            self.inner.reports.grouped.fetch_add(group.len() as u64, std::sync::atomic::Ordering::Relaxed);
            for (q, run) in group.into_iter().zip(runs) {
                let _ = q.answer.send(Ok(run));
            }
            return;
        }
        for q in group {
            let _ = q.answer.send(self.report_alone(None, id, &q.completion, None).await);
        }
    }

    /// All of `group` in one transaction, or None (rolled back) if any of
    /// them failed. Each report's writes reach the database before the next
    /// one reads the execution.
    async fn try_group(
        &self,
        turn: Turn,
        started: Instant,
        id: &str,
        group: &[Queued],
        eager: Vec<Eager>,
    ) -> Option<Vec<WorkflowRun>> {
        let mut unit = self.unit_in(Some(turn), started).await.ok()?;
        unit.eager = eager;
        let result = async {
            let mut runs = Vec::with_capacity(group.len());
            for q in group {
                runs.push(self.complete_in(&mut unit, id, &q.completion).await?);
                std::mem::take(&mut unit.batch).run(&unit.tx).await?;
            }
            Ok(runs)
        }
        .await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, execution_id = %id, "a report of a group failed; each runs alone");
        }
        self.finish(unit, result).await.ok()
    }

    /// One report in a unit of its own: in the turn given (taken at the
    /// time given), or after waiting for one.
    async fn report_alone(
        &self,
        turn: Option<(Turn, Instant)>,
        id: &str,
        c: &Completion,
        eager: Option<Eager>,
    ) -> Result<WorkflowRun> {
        let mut unit = match turn {
            Some((turn, started)) => self.unit_in(Some(turn), started).await?,
            None => self.unit(Some(id)).await?,
        };
        unit.eager.extend(eager);
        let result = self.complete_in(&mut unit, id, c).await;
        self.finish(unit, result).await
    }
}
