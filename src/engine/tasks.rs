//! The worker protocol: lease a task, heartbeat it, report its result.

use std::{collections::BTreeMap, time::Duration};

use tokio::time::Instant;

use super::{Engine, Error, Result, authorize, new_id, now, progress};
use crate::{
    domain::{
        access::Caller,
        execution::{Millis, WorkflowRun},
        status::WorkflowStatus,
    },
    store::{
        executions::{self, Key, Scope},
        tasks,
    },
};

/// The server keeps at most this much of a task's output.
const MAX_OUTPUT: usize = 64 * 1024;

/// A task leased to a worker, with what it needs to run.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub run: WorkflowRun,
    pub stage_name: String,
    pub environment: BTreeMap<String, String>,
    pub lease: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Beat {
    pub cancelled: bool,
    pub lease_expires_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub task_id: String,
    pub lease_token: String,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub output: String,
    pub message: String,
}

impl Engine {
    /// Leases the oldest task of `queue`, waiting up to `wait` for one. Woken
    /// at once by a task queued on this replica, and by PostgreSQL's NOTIFY
    /// for one queued on another; the recheck interval bounds a lost wake-up.
    pub async fn poll(
        &self,
        caller: &Caller,
        queue: &str,
        worker: &str,
        wait: Duration,
    ) -> Result<Option<ClaimedTask>> {
        authorize::run_tasks(caller)?;
        let deadline = Instant::now() + wait;
        let wakeup = self.notifier().queue(queue);
        loop {
            let notified = wakeup.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(task) = self.try_claim(queue, worker).await? {
                return Ok(Some(task));
            }
            let recheck = Instant::now() + self.settings().recheck;
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(recheck.min(deadline)) => {}
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    async fn try_claim(&self, queue: &str, worker: &str) -> Result<Option<ClaimedTask>> {
        let lease = self.settings().lease;
        let token = new_id();
        let turn = self.write_turn().await;
        let claimed = tasks::claim(self.db(), queue, worker, &token, now(), lease.as_millis() as i64).await?;
        drop(turn);
        let Some(run) = claimed else { return Ok(None) };
        self.notifier().deadlines_changed();
        self.notifier().execution_changed(&run.execution_id);
        // The execution's row and its cached definition are all a worker
        // needs besides the task: no need to read the other stages and tasks.
        let e = executions::get(self.db(), &run.execution_id)
            .await?
            .ok_or_else(|| Error::not_found("execution", &run.execution_id))?;
        let definition = self.definitions().pinned_by(self.db(), &e).await?;
        let stage_name = definition.stages[run.stage_index].name.clone();
        let mut environment: BTreeMap<String, String> = e
            .variables
            .iter()
            .map(|(k, v)| (format!("REPRISE_VAR_{}", k.to_uppercase()), v.clone()))
            .chain(e.artifacts.iter().map(|(k, v)| (format!("REPRISE_ARTIFACT_{}", env_name(k)), v.clone())))
            .collect();
        environment.insert("REPRISE_EXECUTION_ID".into(), e.id.clone());
        environment.insert("REPRISE_STAGE".into(), stage_name.clone());
        environment.insert("REPRISE_WORKFLOW".into(), run.name.clone());
        tracing::info!(task_id = %run.task_id, execution_id = %e.id, workflow = %run.name, attempt = run.attempt, worker, "task leased");
        Ok(Some(ClaimedTask { run, stage_name, environment, lease }))
    }

    /// Extends the lease; says `cancelled` when the task was cancelled or
    /// expired under this lease, refuses when the lease is no longer held.
    pub async fn heartbeat(&self, caller: &Caller, task_id: &str, lease_token: &str) -> Result<Beat> {
        authorize::run_tasks(caller)?;
        let until = now() + self.settings().lease.as_millis() as i64;
        let turn = self.write_turn().await;
        let extended = tasks::extend_lease(self.db(), task_id, lease_token, until).await?;
        drop(turn);
        if extended {
            return Ok(Beat { cancelled: false, lease_expires_at: until });
        }
        let task = tasks::get(self.db(), task_id).await?.ok_or_else(|| Error::not_found("task", task_id))?;
        let ours = task.lease_token.as_deref() == Some(lease_token);
        match task.status {
            WorkflowStatus::Cancelled | WorkflowStatus::Expired if ours => {
                Ok(Beat { cancelled: true, lease_expires_at: task.lease_expires_at.unwrap_or_default() })
            }
            _ => Err(stale(&task, lease_token)),
        }
    }

    /// Records a task's result and, when it was the stage's last, moves the
    /// execution on (next stage dispatched) in the same transaction.
    pub async fn complete(&self, caller: &Caller, c: Completion) -> Result<()> {
        authorize::run_tasks(caller)?;
        let scope = Scope::Open { task: Some(&c.task_id) };
        let (run, _) = self
            .change(Key::OfTask(&c.task_id), scope, None, |d, now| {
                let w = d
                    .workflows
                    .iter_mut()
                    .find(|w| w.task_id == c.task_id)
                    .ok_or_else(|| Error::not_found("task", &c.task_id))?;
                if w.status != WorkflowStatus::Running || w.lease_token.as_deref() != Some(c.lease_token.as_str()) {
                    return Err(stale(w, &c.lease_token));
                }
                w.exit_code = c.exit_code;
                w.output = tail(&c.output, MAX_OUTPUT).to_owned();
                w.lease_expires_at = None;
                let stage = w.stage_index;
                if w.deadline_at.is_some_and(|t| t <= now) {
                    // Reported after its timeout (a worker that enforces the
                    // timeout reports just then): the same expiry the timer
                    // would record, whichever of the two comes first.
                    progress::expire_workflow(d, &c.task_id, now);
                    let run = d.workflows.iter().find(|w| w.task_id == c.task_id).cloned();
                    progress::settle_stage(d, stage, now);
                    return run.ok_or_else(|| Error::not_found("task", &c.task_id));
                }
                w.status = match c.outcome {
                    Outcome::Succeeded => WorkflowStatus::Succeeded,
                    Outcome::Failed => WorkflowStatus::Failed,
                };
                w.status_message = c.message.clone();
                w.ended_at = Some(now);
                let run = w.clone();
                progress::settle_stage(d, stage, now);
                Ok(run)
            })
            .await?;
        tracing::info!(task_id = %run.task_id, execution_id = %run.execution_id, workflow = %run.name,
            status = %run.status, exit_code = ?run.exit_code, "task completed");
        Ok(())
    }

    /// Wakes pollers of every queue with waiting tasks (after a restart).
    pub async fn wake_all_queues(&self) -> Result<()> {
        for queue in tasks::queues_with_work(self.db()).await? {
            self.notifier().task_queued(&queue);
        }
        Ok(())
    }
}

/// Why a report or heartbeat under `token` is refused.
fn stale(task: &WorkflowRun, token: &str) -> Error {
    let ours = task.lease_token.as_deref() == Some(token);
    let message = match task.status {
        WorkflowStatus::Running if !ours => format!(
            "lease is stale: task {} was handed to another worker (attempt {}) after this lease expired; drop the result",
            task.task_id, task.attempt
        ),
        WorkflowStatus::Queued => format!(
            "lease is stale: the lease of task {} expired and the task was queued again; drop the result",
            task.task_id
        ),
        WorkflowStatus::Cancelled => {
            format!("task {} was cancelled ({}); drop the result", task.task_id, task.status_message)
        }
        status => format!("task {} already ended as {status}; a result is accepted once", task.task_id),
    };
    Error::refused("LEASE_NOT_HELD", message)
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn env_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}
