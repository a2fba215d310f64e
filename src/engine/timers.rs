//! Deadlines: expired leases are offered again (or fail the workflow after
//! `max_attempts`), workflows past their timeout and approvals past theirs
//! expire. Each fix is its own unit of work; the scheduler loop drives them.

use super::{Engine, Result, new_id, now, work::Unit};
use crate::{
    domain::{
        execution::Millis,
        progress::{self, Changes},
        status::{ExecutionStatus, StageStatus, WorkflowStatus},
    },
    store::{
        executions::{self, Key},
        stages, tasks,
    },
};

/// How many due items one pass handles; the loop comes back for the rest.
pub const BATCH: u64 = 100;

/// What a task timer did.
enum Fired {
    Requeued { queue: String },
    Ended(WorkflowStatus),
}

impl Engine {
    /// Handles everything due now; returns how many changes it made.
    pub async fn fire_due_timers(&self) -> Result<usize> {
        let now = now();
        let reader = self.store().reader();
        let due_tasks = tasks::due(&reader, now, BATCH).await?;
        let due_approvals = stages::approvals_due(&reader, now, BATCH).await?;
        let mut fired = 0;
        for (task_id, execution_id) in due_tasks {
            fired += usize::from(self.fire_task_timer(&execution_id, &task_id).await?);
        }
        for execution_id in due_approvals {
            fired += usize::from(self.expire_approval(&execution_id).await?);
        }
        Ok(fired)
    }

    /// The next instant a timer is due, as the database says.
    pub async fn next_timer(&self) -> Result<Option<Millis>> {
        let reader = self.store().reader();
        let task = tasks::next_due(&reader).await?;
        let approval = stages::next_approval_deadline(&reader).await?;
        Ok(task.into_iter().chain(approval).min())
    }

    async fn fire_task_timer(&self, execution_id: &str, task_id: &str) -> Result<bool> {
        let mut unit = self.unit(Some(execution_id)).await?;
        let result = self.fire_task_timer_in(&mut unit, execution_id, task_id).await;
        let fired = self.finish(unit, result).await?;
        match &fired {
            Some(Fired::Requeued { queue }) => {
                tracing::warn!(execution_id, task_id, queue, "lease expired: the task is offered again");
            }
            Some(Fired::Ended(status)) => tracing::warn!(execution_id, task_id, %status, "task timer fired"),
            None => {}
        }
        Ok(fired.is_some())
    }

    async fn fire_task_timer_in(&self, unit: &mut Unit, execution_id: &str, task_id: &str) -> Result<Option<Fired>> {
        let Some(execution) = executions::lock(&unit.tx, Key::Id(execution_id)).await? else {
            return Ok(None);
        };
        let Some(w) = tasks::get_one(&unit.tx, task_id).await? else { return Ok(None) };
        if w.status != WorkflowStatus::Running {
            return Ok(None); // reported, or handled by another replica, first
        }
        let now = now();
        let expired = w.deadline_at.is_some_and(|t| t <= now);
        let lease_lost = w.lease_expires_at.is_some_and(|t| t <= now);
        let (status, message) = if expired {
            (WorkflowStatus::Expired, format!("ran past its timeout of {} ms", w.timeout_ms))
        } else if lease_lost && w.attempt < w.max_attempts {
            metrics::counter!(crate::metrics::LEASE_EXPIRIES).increment(1);
            let message = format!("lease of attempt {} expired; offered again", w.attempt);
            tasks::requeue(&unit.tx, task_id, &message).await?;
            unit.after.queued(&w.task_queue, 1);
            unit.after.changed(execution_id);
            return Ok(Some(Fired::Requeued { queue: w.task_queue }));
        } else if lease_lost {
            metrics::counter!(crate::metrics::LEASE_EXPIRIES).increment(1);
            (WorkflowStatus::Failed, format!("lease expired on all {} attempts: no worker finished it", w.attempt))
        } else {
            return Ok(None);
        };
        let Some(run) = tasks::end_running(&unit.tx, task_id, status, &message, now).await? else {
            return Ok(None);
        };
        self.workflow_ended(unit, execution, &run, now).await?;
        Ok(Some(Fired::Ended(status)))
    }

    async fn expire_approval(&self, execution_id: &str) -> Result<bool> {
        let mut unit = self.unit(Some(execution_id)).await?;
        let result = self.expire_approval_in(&mut unit, execution_id).await;
        let fired = self.finish(unit, result).await?;
        if fired {
            tracing::warn!(execution_id, "approval expired");
        }
        Ok(fired)
    }

    async fn expire_approval_in(&self, unit: &mut Unit, execution_id: &str) -> Result<bool> {
        let Some((execution, revision)) = executions::lock_revision(&unit.tx, Key::Id(execution_id)).await? else {
            return Ok(false);
        };
        let before = self.state_of(unit, execution, revision).await?;
        let now = now();
        let Some(index) =
            before.waiting_approval().filter(|s| s.deadline_at.is_some_and(|t| t <= now)).map(|s| s.index)
        else {
            return Ok(false);
        };
        let mut after = before.clone();
        let mut changes = Changes::default();
        let stage = &mut after.stages[index];
        stage.status = StageStatus::Expired;
        stage.status_message = "no decision before the approval timeout".into();
        stage.ended_at = Some(now);
        let message = format!("approval {:?} expired without a decision", stage.name);
        progress::finish(&mut after, ExecutionStatus::Expired, message, Some(index), now, &mut changes);
        let _ = new_id;
        self.save(unit, &before, &after, changes, now).await?;
        Ok(true)
    }
}
