//! Scripted gRPC workers: no-op workers that poll a queue over gRPC
//! (PollTask) and report every task at once (CompleteTask), succeeding or
//! failing it as their [`Script`] says.

use std::{sync::Arc, time::Instant};

use anyhow::Context as _;
use reprise::proto as pb;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Server;

/// What a scripted worker does with each task, and what it tells the bench.
pub trait Script: Send + Sync {
    /// Called as the task arrives: true fails it, false succeeds it.
    fn fails(&self, task: &pb::Task) -> bool;

    /// Called once its CompleteTask was answered (accepted or refused), with
    /// the instant the answer came: when the report that may have ended the
    /// stage (or the execution) was committed.
    fn reported(&self, _task: &pb::Task, _at: Instant) {}
}

/// A plain rule: which tasks fail.
impl<F: Fn(&pb::Task) -> bool + Send + Sync> Script for F {
    fn fails(&self, task: &pb::Task) -> bool {
        self(task)
    }
}

/// Workers that poll a queue over gRPC and complete every task at once,
/// as their script says.
pub struct Workers {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// How a worker gets its next task after a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Always by PollTask (what a worker written before
    /// CompleteTaskRequest.next_task_queue does).
    Poll,
    /// Asked for with the report (next_task_queue); PollTask when the
    /// answer carries none.
    WithReport,
}

impl Workers {
    /// Workers that ask for their next task with each report.
    pub fn start(server: &Server, queue: &str, slots: usize, script: Arc<dyn Script>) -> Workers {
        Workers::start_with(server, queue, slots, script, Next::WithReport)
    }

    pub fn start_with(server: &Server, queue: &str, slots: usize, script: Arc<dyn Script>, next: Next) -> Workers {
        let stop = CancellationToken::new();
        let tasks = (0..slots)
            .map(|i| {
                let (mut client, queue, stop, script) =
                    (server.workers(), queue.to_owned(), stop.clone(), script.clone());
                let id = format!("bench-worker-{i}");
                tokio::spawn(async move {
                    let mut handed: Option<pb::Task> = None;
                    loop {
                        let task = match handed.take() {
                            Some(task) => task,
                            None => {
                                let request = pb::PollTaskRequest {
                                    task_queue: queue.clone(),
                                    worker_id: id.clone(),
                                    wait: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
                                };
                                let polled = tokio::select! {
                                    r = client.poll_task(request) => r,
                                    _ = stop.cancelled() => return anyhow::Ok(()),
                                };
                                let Some(task) = polled.context("PollTask failed")?.into_inner().task else {
                                    continue;
                                };
                                task
                            }
                        };
                        let outcome =
                            if script.fails(&task) { pb::TaskOutcome::Failed } else { pb::TaskOutcome::Succeeded };
                        let request = pb::CompleteTaskRequest {
                            task_id: task.task_id.clone(),
                            lease_token: task.lease_token.clone(),
                            outcome: outcome as i32,
                            exit_code: if outcome == pb::TaskOutcome::Succeeded { 0 } else { 1 },
                            output: String::new(),
                            message: String::new(),
                            output_offset: None,
                            next_task_queue: if next == Next::WithReport && !stop.is_cancelled() {
                                queue.clone()
                            } else {
                                String::new()
                            },
                            worker_id: id.clone(),
                        };
                        let answer = client.complete_task(request).await;
                        script.reported(&task, Instant::now());
                        let answer = answer.map(|a| {
                            handed = a.into_inner().next_task;
                        });
                        // A stage that failed may refuse its other workflows' late reports.
                        if let Err(status) = answer
                            && !matches!(
                                status.code(),
                                tonic::Code::FailedPrecondition | tonic::Code::NotFound | tonic::Code::Aborted
                            )
                        {
                            return Err(status).context("CompleteTask failed");
                        }
                    }
                })
            })
            .collect();
        Workers { stop, tasks }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            if let Ok(Err(e)) = t.await {
                eprintln!("warning: scripted worker: {e:#}");
            }
        }
    }
}
