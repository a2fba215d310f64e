//! Deadlines: expired leases are offered again (or fail the workflow after
//! `max_attempts`), workflows past their timeout and approvals past theirs
//! expire. Each fix is its own transaction; the scheduler loop drives them.

use super::{Engine, Result, now, progress};
use crate::{
    domain::{
        execution::Millis,
        status::{ExecutionStatus, StageStatus, WorkflowStatus},
    },
    store::{
        executions::{self, Key, Scope},
        tasks,
    },
};

/// How many due items one pass handles; the loop comes back for the rest.
const BATCH: u64 = 100;

impl Engine {
    /// Handles everything due now; returns how many changes it made.
    pub async fn fire_due_timers(&self) -> Result<usize> {
        let now = now();
        let mut fired = 0;
        for (task_id, execution_id) in tasks::due(self.db(), now, BATCH).await? {
            fired += usize::from(self.fire_task_timer(&execution_id, &task_id).await?);
        }
        for execution_id in executions::approvals_due(self.db(), now, BATCH).await? {
            fired += usize::from(self.expire_approval(&execution_id).await?);
        }
        Ok(fired)
    }

    /// The next instant a timer is due, if any.
    pub async fn next_timer(&self) -> Result<Option<Millis>> {
        let task = tasks::next_due(self.db()).await?;
        let approval = executions::next_approval_deadline(self.db()).await?;
        Ok(task.into_iter().chain(approval).min())
    }

    async fn fire_task_timer(&self, execution_id: &str, task_id: &str) -> Result<bool> {
        let (fired, _) = self
            .change(Key::Id(execution_id), Scope::Open { task: Some(task_id) }, None, |d, now| {
                let Some(w) = d.workflows.iter_mut().find(|w| w.task_id == task_id) else { return Ok(None) };
                if w.status != WorkflowStatus::Running {
                    return Ok(None); // someone else got there first
                }
                let expired = w.deadline_at.is_some_and(|t| t <= now);
                let lease_lost = w.lease_expires_at.is_some_and(|t| t <= now);
                if expired {
                    let (stage, name, attempt) = (w.stage_index, w.name.clone(), w.attempt);
                    progress::expire_workflow(d, task_id, now);
                    progress::settle_stage(d, stage, now);
                    return Ok(Some((WorkflowStatus::Expired, name, attempt)));
                } else if lease_lost && w.attempt < w.max_attempts {
                    metrics::counter!(crate::metrics::LEASE_EXPIRIES).increment(1);
                    w.status = WorkflowStatus::Queued;
                    w.status_message = format!("lease of attempt {} expired; offered again", w.attempt);
                    w.lease_token = None;
                    w.lease_owner = None;
                    w.lease_expires_at = None;
                    w.deadline_at = None;
                } else if lease_lost {
                    metrics::counter!(crate::metrics::LEASE_EXPIRIES).increment(1);
                    w.status = WorkflowStatus::Failed;
                    w.status_message = format!("lease expired on all {} attempts: no worker finished it", w.attempt);
                    w.ended_at = Some(now);
                } else {
                    return Ok(None);
                }
                let (stage, status, name, attempt) = (w.stage_index, w.status, w.name.clone(), w.attempt);
                progress::settle_stage(d, stage, now);
                Ok(Some((status, name, attempt)))
            })
            .await?;
        if let Some((status, workflow, attempt)) = &fired {
            tracing::warn!(execution_id, task_id, workflow, attempt, status = %status, "task timer fired");
        }
        Ok(fired.is_some())
    }

    async fn expire_approval(&self, execution_id: &str) -> Result<bool> {
        let (fired, _) = self
            .change(Key::Id(execution_id), Scope::Open { task: None }, None, |d, now| {
                let Some(index) =
                    d.waiting_approval().filter(|s| s.deadline_at.is_some_and(|t| t <= now)).map(|s| s.index)
                else {
                    return Ok(false);
                };
                let stage = &mut d.stages[index];
                stage.status = StageStatus::Expired;
                stage.status_message = "no decision before the approval timeout".into();
                stage.ended_at = Some(now);
                let message = format!("approval {:?} expired without a decision", stage.name);
                progress::finish(d, ExecutionStatus::Expired, message, now);
                Ok(true)
            })
            .await?;
        if fired {
            tracing::warn!(execution_id, "approval expired");
        }
        Ok(fired)
    }
}
