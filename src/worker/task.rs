//! Runs one leased task: keeps the lease alive while the script runs, then
//! reports the result unless the server has taken the task back.

use std::time::{Duration, SystemTime};

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::describe;
use super::shell::{self, Inherited, RunResult, Termination};
use super::tail::OutputSink;
use crate::proto::{CompleteTaskRequest, HeartbeatRequest, Task, TaskOutcome};

use super::bearer::Client;

/// Assumed when the server sends no lease duration.
const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Keeps very short leases from turning heartbeats into a busy loop.
const MIN_HEARTBEAT_PERIOD: Duration = Duration::from_millis(100);
/// Reporting is retried a few times; after that the lease expires and the
/// server hands the task out again, so the work is not lost.
const COMPLETE_ATTEMPTS: u32 = 5;
const COMPLETE_FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// A CompleteTask call that hangs this long is treated as a transport failure.
const COMPLETE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a slot takes its next task from, asked for with each report.
pub(super) struct Next<'a> {
    pub queue: &'a str,
    pub worker_id: &'a str,
    /// Once cancelled, reports ask for nothing more.
    pub shutdown: &'a CancellationToken,
}

/// Runs the task to the end and reports it; returns the next task if the
/// server leased one with its answer. Never fails: every problem is either
/// reported to the server or logged.
pub(super) async fn execute(client: Client, task: Task, inherited: &Inherited, next: &Next<'_>) -> Option<Task> {
    let span = info_span!(
        "task",
        task_id = %task.task_id,
        execution_id = %task.execution_id,
        stage = %task.stage_name,
        workflow = %task.workflow_name,
        attempt = task.attempt,
    );
    execute_in_span(client, task, inherited, next).instrument(span).await
}

async fn execute_in_span(client: Client, task: Task, inherited: &Inherited, next: &Next<'_>) -> Option<Task> {
    let timeout = time_left(&task);
    let period = heartbeat_period(&task);
    info!(timeout_ms = timeout.map(|t| t.as_millis() as u64), heartbeat_ms = period.as_millis() as u64, "task started");
    debug!(command = %task.command, "task command");

    let started = Instant::now();
    let kill = CancellationToken::new();
    let output = OutputSink::new();
    let run = shell::run_shell(&task.command, inherited, &task.environment, timeout, &kill, &output);
    tokio::pin!(run);
    let result = tokio::select! {
        biased;
        result = &mut run => result,
        abandon = keep_lease(client.clone(), &task, period, &output) => {
            kill.cancel();
            let result = run.await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match abandon {
                Abandon::Cancelled => {
                    info!(elapsed_ms, "task cancelled by the server; process killed");
                }
                Abandon::LeaseLost(status) => warn!(
                    elapsed_ms,
                    code = ?status.code(),
                    error = %describe(&status),
                    "lease lost; process killed"
                ),
            }
            debug!(output = %result.output, "output of the abandoned task");
            return None;
        }
    };

    let report = Report::of(result);
    let outcome = report.outcome.as_str_name().trim_start_matches("TASK_OUTCOME_");
    let elapsed_ms = started.elapsed().as_millis() as u64;
    // A reason only when there is one: an empty `reason=` reads as a lost value.
    if report.message.is_empty() {
        info!(outcome = %outcome, exit_code = report.exit_code, elapsed_ms, "task finished");
    } else {
        info!(outcome = %outcome, exit_code = report.exit_code, reason = %report.message, elapsed_ms, "task finished");
    }
    complete(client, &task, report, output.rest_offset(), next).await
}

/// Why we stopped a task without reporting it.
enum Abandon {
    /// The server said the execution was aborted or the workflow expired.
    Cancelled,
    /// The server gave the lease to someone else (or forgot the task).
    LeaseLost(Status),
}

/// Heartbeats until the server wants the task stopped, each one carrying the
/// output written since the one before, so people can follow the task live.
/// Transient failures are only logged: the lease outlives a few missed
/// heartbeats, and the output a failed one carried goes again with the next
/// (or the report), from the same offset, so the server keeps it once
/// whether or not it had stored it.
async fn keep_lease(mut client: Client, task: &Task, period: Duration, output: &OutputSink) -> Abandon {
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (piece, offset) = output.take();
        let request = HeartbeatRequest {
            task_id: task.task_id.clone(),
            lease_token: task.lease_token.clone(),
            output: piece,
            output_offset: Some(offset),
        };
        // A heartbeat may take up to two periods (the lease is three): cut
        // sooner, a loaded server dropped the output it carried for nothing.
        match tokio::time::timeout(period * 2, client.heartbeat(request)).await {
            Ok(Ok(response)) => {
                output.acknowledge();
                if response.into_inner().cancelled {
                    return Abandon::Cancelled;
                }
                debug!("heartbeat sent");
            }
            Ok(Err(status)) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
                return Abandon::LeaseLost(status);
            }
            Ok(Err(status)) => warn!(code = ?status.code(), error = %describe(&status), "heartbeat failed"),
            Err(_) => warn!(timeout_ms = (period * 2).as_millis() as u64, "heartbeat timed out"),
        }
    }
}

/// What we tell the server about a finished run.
struct Report {
    outcome: TaskOutcome,
    exit_code: i32,
    message: String,
    output: String,
}

impl Report {
    fn of(result: RunResult) -> Self {
        let failed = |exit_code: i32, message: String| Report {
            outcome: TaskOutcome::Failed,
            exit_code,
            message,
            output: String::new(),
        };
        let mut report = match result.termination {
            Termination::Exited(0) => {
                Report { outcome: TaskOutcome::Succeeded, exit_code: 0, message: String::new(), output: String::new() }
            }
            Termination::Exited(code) => failed(code, format!("exit status {code}")),
            // 128 + signal is what shells report, so scripts and people know it.
            Termination::Signaled(signal) => failed(
                128 + signal,
                match shell::signal_name(signal) {
                    Some(name) => format!("killed by signal {signal} ({name})"),
                    None => format!("killed by signal {signal}"),
                },
            ),
            Termination::TimedOut(elapsed) if elapsed.is_zero() => {
                failed(0, "timed out after 0ms: the deadline passed before the task started".to_owned())
            }
            Termination::TimedOut(elapsed) => failed(0, format!("timed out after {}", human(elapsed))),
            // Only reachable if someone cancels without abandoning the task.
            Termination::Cancelled => failed(0, "cancelled by the worker".to_owned()),
            Termination::SpawnFailed(err) => failed(0, format!("could not start sh: {err}")),
        };
        report.output = result.output;
        report
    }
}

/// Reports the result, retrying transient failures, and asks for the next
/// task unless shutting down. Refusals mean the server moved on (lease
/// expired, task cancelled or already reported).
async fn complete(
    mut client: Client,
    task: &Task,
    report: Report,
    output_offset: Option<i64>,
    next: &Next<'_>,
) -> Option<Task> {
    let mut request = CompleteTaskRequest {
        task_id: task.task_id.clone(),
        lease_token: task.lease_token.clone(),
        outcome: report.outcome as i32,
        exit_code: report.exit_code,
        output: report.output,
        message: report.message,
        output_offset,
        next_task_queue: String::new(),
        worker_id: next.worker_id.to_owned(),
    };
    let mut delays = super::backoff::jittered(COMPLETE_FIRST_BACKOFF, COMPLETE_FIRST_BACKOFF * 16);
    for attempt in 1..=COMPLETE_ATTEMPTS {
        request.next_task_queue = if next.shutdown.is_cancelled() { String::new() } else { next.queue.to_owned() };
        let call = tokio::time::timeout(COMPLETE_CALL_TIMEOUT, client.complete_task(request.clone()));
        let status = match call.await {
            Ok(Ok(answer)) => {
                let next_task = answer.into_inner().next_task;
                debug!(next_task = next_task.is_some(), "result reported");
                return next_task;
            }
            Ok(Err(status)) => status,
            Err(_) => Status::deadline_exceeded("complete task call timed out"),
        };
        if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) {
            info!(
                code = ?status.code(),
                error = %describe(&status),
                "server no longer wants the result"
            );
            return None;
        }
        if !is_transient(&status) || attempt == COMPLETE_ATTEMPTS {
            error!(
                attempt,
                code = ?status.code(),
                error = %describe(&status),
                "could not report the result; the server will retry the task when the lease expires"
            );
            return None;
        }
        let backoff = delays.next().unwrap_or(COMPLETE_FIRST_BACKOFF);
        warn!(
            attempt,
            code = ?status.code(),
            error = %describe(&status),
            retry_in_ms = backoff.as_millis() as u64,
            "reporting the result failed; retrying"
        );
        tokio::time::sleep(backoff).await;
    }
    None
}

/// Errors where the same request may well succeed a moment later; transport
/// failures surface as UNAVAILABLE or UNKNOWN.
fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Aborted | Code::ResourceExhausted
    )
}

/// How long until the task's deadline; zero if it already passed.
fn time_left(task: &Task) -> Option<Duration> {
    let deadline = task.deadline?;
    match SystemTime::try_from(deadline) {
        Ok(at) => Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)),
        Err(err) => {
            warn!(error = %err, "ignoring invalid task deadline");
            None
        }
    }
}

/// A third of the lease leaves room for two lost heartbeats.
fn heartbeat_period(task: &Task) -> Duration {
    let lease =
        task.lease_duration.and_then(|d| Duration::try_from(d).ok()).filter(|d| !d.is_zero()).unwrap_or(DEFAULT_LEASE);
    (lease / 3).max(MIN_HEARTBEAT_PERIOD)
}

/// A short duration for failure messages, e.g. "250ms", "12.5s", "1h2m3s".
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    let secs = d.as_secs();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 3_600 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{}h{}m{}s", secs / 3_600, secs % 3_600 / 60, secs % 60)
    }
}
