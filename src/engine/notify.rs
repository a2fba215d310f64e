//! In-process wake-ups: pollers waiting on a queue, watchers of an
//! execution, and the timer loop. The database stays the source of truth;
//! these only shorten waits.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{Notify, broadcast};

use crate::domain::{execution::ExecutionDetail, status::WorkflowStatus};

pub struct Notifier {
    queues: Mutex<HashMap<String, Arc<Notify>>>,
    executions: broadcast::Sender<String>,
    timers: Notify,
}

impl Default for Notifier {
    fn default() -> Self {
        Self { queues: Mutex::default(), executions: broadcast::channel(1024).0, timers: Notify::new() }
    }
}

impl Notifier {
    /// The wake-up of one task queue.
    pub fn queue(&self, name: &str) -> Arc<Notify> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.entry(name.to_owned()).or_default().clone()
    }

    pub fn task_queued(&self, queue: &str) {
        self.queue(queue).notify_waiters();
    }

    pub fn subscribe_executions(&self) -> broadcast::Receiver<String> {
        self.executions.subscribe()
    }

    pub fn execution_changed(&self, id: &str) {
        let _ = self.executions.send(id.to_owned());
    }

    /// Wakes the timer loop so it recomputes its next deadline.
    pub fn deadlines_changed(&self) {
        self.timers.notify_one();
    }

    pub async fn timers_woken(&self) {
        self.timers.notified().await
    }

    /// Tells everyone what a committed change affects.
    pub fn announce(&self, before: &ExecutionDetail, after: &ExecutionDetail) {
        for w in &after.workflows {
            let was_queued =
                before.workflows.iter().any(|b| b.task_id == w.task_id && b.status == WorkflowStatus::Queued);
            if w.status == WorkflowStatus::Queued && !was_queued {
                self.task_queued(&w.task_queue);
            }
        }
        if before.stages.iter().map(|s| s.deadline_at).ne(after.stages.iter().map(|s| s.deadline_at)) {
            self.deadlines_changed();
        }
        self.execution_changed(&after.execution.id);
    }
}
