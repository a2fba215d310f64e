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

/// A poller's registration on one task queue; derefs to the queue's
/// wake-up. The queue's entry lives only while someone waits on it: the
/// last registration to go removes it, so queue names callers invent
/// (PollTask takes any) leave nothing behind.
pub struct QueueWaiter<'a> {
    notifier: &'a Notifier,
    name: String,
    notify: Arc<Notify>,
}

impl std::ops::Deref for QueueWaiter<'_> {
    type Target = Notify;

    fn deref(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for QueueWaiter<'_> {
    fn drop(&mut self) {
        let mut queues = self.notifier.queues.lock().unwrap_or_else(|p| p.into_inner());
        // Registrations are only made under this lock, so the count is exact:
        // the map's own reference and ours mean we are the last.
        if queues.get(&self.name).is_some_and(|n| Arc::ptr_eq(n, &self.notify) && Arc::strong_count(n) == 2) {
            queues.remove(&self.name);
        }
    }
}

impl Notifier {
    /// Registers a poller on one task queue until the returned value is dropped.
    pub fn queue(&self, name: &str) -> QueueWaiter<'_> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let notify = queues.entry(name.to_owned()).or_default().clone();
        QueueWaiter { notifier: self, name: name.to_owned(), notify }
    }

    /// Wakes the pollers waiting on `queue`. With none waiting there is
    /// nothing to do: a poller registers before it looks for a task, so it
    /// cannot miss one queued after its look.
    pub fn task_queued(&self, queue: &str) {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(notify) = queues.get(queue) {
            notify.notify_waiters();
        }
    }

    /// How many task queues have pollers waiting (the size of the registry).
    pub fn waited_queues(&self) -> usize {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).len()
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
