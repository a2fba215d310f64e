//! Writing a decision down: the rows of `after` that differ from `before`,
//! the set-wise cancellation the domain asked for, and the workflows it
//! queued — leased right away to workers parked on this replica.

use std::ops::Range;

use super::{
    Engine, Result, new_id,
    tasks::ClaimedTask,
    work::{Observed, Unit},
};
use crate::{
    domain::{
        execution::{ExecutionDetail, ExecutionState, Millis, StageRun, WorkflowRun},
        progress::Changes,
        status::WorkflowStatus,
    },
    store::{executions, stages, tasks},
};

impl Engine {
    /// Writes what a decision changed in the unit's transaction and notes
    /// what must happen once it commits.
    pub(super) async fn save(
        &self,
        unit: &mut Unit,
        before: &ExecutionState,
        after: &ExecutionState,
        changes: Changes,
        now: Millis,
    ) -> Result<()> {
        self.save_within(unit, before, after, 0..after.stages.len(), changes, now).await
    }

    /// [`Engine::save`] of a decision that changed no stage outside
    /// `stages`: the others are not compared (see
    /// [`crate::domain::progress::touched_by_report`]). Comparing every
    /// stage was most of a report's CPU in a long execution (2,000 stages:
    /// a fifth of it, in memcmp).
    pub(super) async fn save_within(
        &self,
        unit: &mut Unit,
        before: &ExecutionState,
        after: &ExecutionState,
        stages: Range<usize>,
        changes: Changes,
        now: Millis,
    ) -> Result<()> {
        debug_assert_eq!(before.stages[..stages.start], after.stages[..stages.start], "stages before {stages:?}");
        debug_assert_eq!(before.stages[stages.end..], after.stages[stages.end..], "stages after {stages:?}");
        let id = after.execution.id.as_str();
        // A unit sent at once writes the execution's row with its check of
        // the revision (see `tasks::report_at_once`).
        if before.execution != after.execution && !unit.tx.is_at_once() {
            unit.batch.push(executions::update_part(&after.execution));
        }
        unit.batch.extend(stages::changed_parts(id, &before.stages[stages.clone()], &after.stages[stages.clone()]));
        if let Some(cancel) = &changes.cancel_open {
            unit.batch.push(tasks::cancel_open_part(id, cancel.stage, &cancel.message, now));
        }
        self.dispatch(unit, after, changes.queued, now).await?;
        self.note_deadlines(unit, &before.stages[stages.clone()], &after.stages[stages.clone()]);
        observe(unit, before, after, stages);
        unit.after.changed(id);
        Ok(())
    }

    /// Inserts a new execution in its final state — the row, every stage, the
    /// tasks of the stage it started — in one go: the one create path of
    /// start and resume. None if its request id is taken already.
    pub(super) async fn create(
        &self,
        unit: &mut Unit,
        state: ExecutionState,
        changes: Changes,
        fingerprint: &str,
        now: Millis,
    ) -> Result<Option<ExecutionDetail>> {
        if !executions::insert(&unit.tx, &state.execution, fingerprint).await? {
            return Ok(None);
        }
        let id = state.execution.id.clone();
        // A resume's carried stages are copied from its origin in the database.
        let carried = match &state.execution.resumed_from {
            Some(origin) => {
                unit.batch.push(stages::carry_part(&id, &origin.execution_id, origin.stage_index));
                origin.stage_index
            }
            None => 0,
        };
        debug_assert!(state.stages[..carried].iter().all(|s| s.carried_from.is_some()), "carried as planned");
        unit.batch.extend(stages::insert_parts(&id, &state.stages[carried..]));
        let workflows = self.dispatch(unit, &state, changes.queued, now).await?;
        // What the new execution did: carried stages were not done by it
        // (no "stage changed" line for each of a resume's 199 carried stages).
        let pending: Vec<StageRun> = (state.stages.iter().enumerate())
            .map(|(i, s)| if i < carried { s.clone() } else { StageRun::pending(s.index, &s.name) })
            .collect();
        let before = ExecutionState {
            execution: state.execution.clone(),
            definition: state.definition.clone(),
            stages: pending,
        };
        self.note_deadlines(unit, &before.stages, &state.stages);
        observe(unit, &before, &state, 0..state.stages.len());
        unit.after.changed(&id);
        // The rows just written are what the database holds once this
        // commits: the first report of the new execution can go at once too.
        if self.store().is_postgres() {
            let known = super::known::Known::after(executions::FIRST_REVISION, &state.execution, &state.stages);
            unit.after.known = known.map(|k| (id.clone(), k));
        }
        Ok(Some(ExecutionDetail { state, workflows }))
    }

    /// Approval deadlines a decision set: the timer must look by then.
    fn note_deadlines(&self, unit: &mut Unit, before: &[StageRun], after: &[StageRun]) {
        for (old, new) in before.iter().zip(after) {
            if let Some(at) = new.deadline_at.filter(|_| old.deadline_at != new.deadline_at) {
                unit.after.deadline(at);
            }
        }
    }

    /// Inserts newly queued workflows. As many as there are workers parked
    /// on their queue (or reporting in this unit, ready for more) are leased
    /// to them in this transaction and handed over after the commit; the
    /// rest wait for a claim.
    pub(super) async fn dispatch(
        &self,
        unit: &mut Unit,
        state: &ExecutionState,
        mut queued: Vec<WorkflowRun>,
        now: Millis,
    ) -> Result<Vec<WorkflowRun>> {
        if queued.is_empty() {
            return Ok(queued);
        }
        let e = &state.execution;
        let inputs = self.inputs_of(e, &state.definition);
        let lease = self.settings().lease;
        let mut queues: Vec<&str> = queued.iter().map(|w| w.task_queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        let queues: Vec<String> = queues.into_iter().map(str::to_owned).collect();
        for queue in &queues {
            let on_queue: Vec<usize> = (0..queued.len()).filter(|i| &queued[*i].task_queue == queue).collect();
            let mut waiters = self.inner.dispatch.take(queue, on_queue.len());
            // Parked pollers first; then the reporters of this unit that
            // asked for a task of this queue.
            while waiters.len() < on_queue.len() {
                match unit.eager.iter().position(|e| &e.queue == queue) {
                    Some(i) => waiters.push(unit.eager.swap_remove(i).waiter),
                    None => break,
                }
            }
            let handed = waiters.len();
            for (waiter, &i) in waiters.into_iter().zip(&on_queue) {
                let w = &mut queued[i];
                w.status = WorkflowStatus::Running;
                w.attempt = 1;
                w.lease_token = Some(new_id());
                w.lease_owner = Some(waiter.worker.clone());
                w.lease_expires_at = Some(now + lease.as_millis() as i64);
                w.deadline_at = Some(now + w.timeout_ms);
                w.started_at = Some(now);
                unit.after.deadline(w.lease_expires_at.into_iter().chain(w.deadline_at).min().unwrap_or(now));
                // Its report finds the execution without a lookup; a task
                // left queued is noted when it is claimed.
                self.inner.views.task_of(&w.task_id, &w.execution_id);
                let stage_name = state.stages[w.stage_index].name.to_string();
                let task = ClaimedTask {
                    environment: inputs.environment(&stage_name, &w.name, &e.id),
                    run: w.clone(),
                    stage_name,
                    lease,
                };
                unit.after.handoffs.push((waiter, task));
            }
            if on_queue.len() > handed {
                unit.after.queued(queue, on_queue.len() - handed);
            }
        }
        unit.batch.extend(tasks::insert_parts(&unit.tx, &queued));
        Ok(queued)
    }
}

/// Notes each stage change (and the execution's) for the log, and times a
/// transition: a stage ended and the next one started in this unit.
fn observe(unit: &mut Unit, before: &ExecutionState, after: &ExecutionState, stages: Range<usize>) {
    let e = &after.execution;
    let (mut ended, mut began) = (false, false);
    for (old, new) in before.stages[stages.clone()].iter().zip(&after.stages[stages]) {
        if old.status == new.status {
            continue;
        }
        ended |= old.status.is_active();
        began |= new.status.is_active();
        unit.after.observed.push(Observed::Stage {
            execution: e.id.clone(),
            chain: e.chain_id.clone(),
            stage: new.name.to_string(),
            index: new.index,
            from: old.status.to_string(),
            to: new.status.to_string(),
        });
    }
    if ended && began {
        unit.after.observed.push(Observed::Transition(unit.started));
    }
    if before.execution.status != e.status {
        unit.after.observed.push(Observed::Execution {
            execution: e.id.clone(),
            chain: e.chain_id.clone(),
            from: before.execution.status.to_string(),
            to: e.status.to_string(),
        });
    }
}
