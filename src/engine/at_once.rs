//! Reports sent at once: decided from what this replica last wrote of the
//! execution ([`super::known`]) and written — the tasks' ends, the stage's
//! counts, what follows (the next stage's tasks, leased to the workers
//! waiting for them) — by one statement that is its own transaction.

use std::time::Instant;

use super::{
    Engine, Result,
    dispatch::Eager,
    locks::Turn,
    now,
    tasks::{Completion, Outcome, task_reports},
};
use crate::{
    domain::{
        execution::{ExecutionState, WorkflowCounts, WorkflowRun},
        status::WorkflowStatus,
    },
    store::tasks::{self, Expected},
};

/// Units of reports sent at once since start (for tests and benches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtOnceCounts {
    /// Sent and committed.
    pub committed: u64,
    /// Sent, and found the execution changed since it was known: nothing
    /// was written and the reports went the usual way.
    pub stale: u64,
}

/// What became of reports offered to [`Engine::report_at_once`].
pub(super) enum AtOnce {
    /// Sent: the reports' answer.
    Sent(Result<Vec<WorkflowRun>>),
    /// Nothing was written (not sent, or the execution had changed since it
    /// was known): the reports go the usual way, in this turn, with the
    /// reporters that are still ready for a next task.
    Declined(Turn, Vec<Eager>),
}

impl Engine {
    pub fn reports_at_once(&self) -> AtOnceCounts {
        use std::sync::atomic::Ordering::Relaxed;
        AtOnceCounts { committed: self.inner.known.sent.load(Relaxed), stale: self.inner.known.stale.load(Relaxed) }
    }

    /// Another replica changed execution `id`: what this one knew of it is
    /// out of date (a report decided from it would be sent in vain).
    pub fn changed_elsewhere(&self, id: &str) {
        self.inner.known.forget(id);
        self.events().execution_changed(id);
    }

    /// Announcements from other replicas were missed: nothing known holds.
    pub fn forget_known(&self) {
        self.inner.known.forget_all();
    }

    /// Sends `reports` (of execution `id`, in its `turn` taken at `started`)
    /// at once when they can be decided without reading anything: the
    /// execution is known, every report is a success of its running stage,
    /// and every piece of output is kept as sent (no secret in it or across
    /// its seam with what is kept, not over the size kept).
    pub(super) async fn report_at_once(
        &self,
        turn: Turn,
        started: Instant,
        id: &str,
        reports: &[&Completion],
        eager: Vec<Eager>,
    ) -> AtOnce {
        if !self.store().is_postgres() {
            return AtOnce::Declined(turn, eager);
        }
        let Some(known) = self.inner.known.get(id) else { return AtOnce::Declined(turn, eager) };
        let Ok(inputs) = self.inputs(id).await else { return AtOnce::Declined(turn, eager) };
        // Kept as sent: no secret to mask in it or across its seam, and not
        // over the size kept (the statement then leaves out what was received).
        let kept_bytes = self.settings().limits.kept_output_bytes;
        let plain = |c: &&Completion| {
            c.outcome == Outcome::Succeeded
                && (c.output.is_empty()
                    || (inputs.mask_reach() == 0
                        && matches!(inputs.mask(&c.output), std::borrow::Cow::Borrowed(_))
                        && c.output.len() <= kept_bytes))
        };
        if !reports.iter().all(plain) || (known.stage.counts.open as usize) < reports.len() {
            return AtOnce::Declined(turn, eager);
        }
        let mut unit = match self.unit_at_once(turn, started) {
            Ok(unit) => unit,
            Err(turn) => return AtOnce::Declined(turn, eager),
        };
        unit.eager = eager;
        let now = now();
        let decided = async {
            // Nothing is read here: every report's output is kept as sent.
            let kept = self.kept(&unit.tx, &inputs, reports, false).await?;
            let definition = self.definitions().pinned_by(&unit.tx, &known.execution).await?;
            let held = ExecutionState::around_running_stage(known.execution.clone(), definition, known.stage.clone());
            let mut counted = known.stage.clone();
            for _ in reports {
                counted.counts.apply(WorkflowCounts::delta_of_end(WorkflowStatus::Succeeded));
            }
            let after = self.decide_end(&mut unit, &held, counted, &[], now, Some(known.revision + 1)).await?;
            Ok::<_, super::Error>((kept, after))
        }
        .await;
        let (kept, after) = match decided {
            Ok(decided) => decided,
            Err(e) => {
                tracing::debug!(error = %e, execution_id = %id, "reports not sent at once");
                let eager = std::mem::take(&mut unit.eager);
                return AtOnce::Declined(unit.into_turn().expect("a unit sent at once has a turn"), eager);
            }
        };
        let reported = task_reports(reports, &kept, true);
        let expected =
            Expected { revision: known.revision, stage_index: known.stage.index, execution: &after.execution };
        let sent = self
            .finish_at_once(unit, |tx, batch| async move {
                tasks::report_at_once(&tx, expected, &reported, batch, now).await
            })
            .await;
        match sent {
            Ok(result) => {
                if result.is_ok() {
                    self.inner.known.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    metrics::counter!(crate::metrics::REPORTS_AT_ONCE, "outcome" => "committed").increment(1);
                }
                AtOnce::Sent(result)
            }
            Err(turn) => {
                tracing::debug!(execution_id = %id, "the execution changed since it was known; reports go the usual way");
                self.inner.known.missed(id);
                metrics::counter!(crate::metrics::REPORTS_AT_ONCE, "outcome" => "stale").increment(1);
                AtOnce::Declined(turn.expect("a unit sent at once has a turn"), Vec::new())
            }
        }
    }
}
