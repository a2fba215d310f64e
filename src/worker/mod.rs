//! The reference worker: long-polls a task queue and runs each task as a shell
//! script. Runs as `reprise worker` and inside `reprise dev`.
//!
//! - `mod.rs`: connecting and the poll loop of each concurrency slot;
//! - `task.rs`: one leased task (heartbeats, deadline, reporting);
//! - `shell.rs`: the script process itself;
//! - `tail.rs`: the bounded output buffer.

mod backoff;
mod bearer;
mod shell;
mod tail;
mod task;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, error, info, warn};

use crate::proto::worker_service_client::WorkerServiceClient;
use crate::proto::{PollTaskRequest, Task};
use bearer::{Bearer, Client};

/// How long one PollTask waits on the server for a task.
const POLL_WAIT: Duration = Duration::from_secs(30);
/// Extra time we give a poll before deciding the server stalled.
const POLL_SLACK: Duration = Duration::from_secs(10);
/// Retry pacing when the server is unreachable: quick at first, so `reprise
/// dev` starts promptly, but never a busy loop.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const CONNECT_FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Settings of one worker process.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The Reprise server, e.g. "http://127.0.0.1:50051".
    pub server: String,
    /// The task queue to poll.
    pub queue: String,
    /// How many tasks run at once (at least 1).
    pub concurrency: usize,
    /// Shown in logs and sent in PollTask so executions record who ran them.
    pub worker_id: String,
    /// Bearer token (a JWT with a RUN_TASKS grant) when the server requires authentication.
    pub token: Option<String>,
    /// Variables of the worker's environment that tasks get besides PATH,
    /// HOME, LANG, LC_ALL, TZ and TMPDIR (and their own REPRISE_* inputs).
    pub task_env_allow: Vec<String>,
}

/// Runs until `shutdown` is cancelled; then stops polling, lets running tasks
/// finish (or kills them if they are cancelled by the server), and returns.
///
/// Waits for the server if it is not up yet, since `reprise dev` starts both
/// at once.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    validate(&config)?;
    let Some(channel) = connect(&config.server, &shutdown).await? else {
        info!("worker stopped before it connected");
        return Ok(());
    };
    run_with_channel(channel, config, shutdown).await
}

/// Like [`run`] on a channel the caller built, e.g. one to an in-process
/// server in tests.
pub async fn run_with_channel(
    channel: Channel,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    validate(&config)?;
    let client = WorkerServiceClient::with_interceptor(channel, Bearer::new(config.token.as_deref())?);
    let inherited = Arc::new(shell::Inherited::from_worker_environment(&config.task_env_allow));
    let config = Arc::new(config);
    info!(
        worker_id = %config.worker_id,
        queue = %config.queue,
        concurrency = config.concurrency,
        "worker started"
    );

    // Dropping the set aborts the slots, which kills their processes.
    let mut slots = JoinSet::new();
    for slot in 0..config.concurrency {
        slots.spawn(run_slot(client.clone(), config.clone(), inherited.clone(), slot, shutdown.clone()));
    }
    let mut crashed = 0usize;
    while let Some(joined) = slots.join_next().await {
        if let Err(err) = joined {
            error!(error = %err, "worker slot crashed");
            crashed += 1;
        }
    }
    info!(worker_id = %config.worker_id, "worker stopped");
    anyhow::ensure!(crashed == 0, "{crashed} worker slot(s) crashed");
    Ok(())
}

fn validate(config: &WorkerConfig) -> anyhow::Result<()> {
    anyhow::ensure!(config.concurrency >= 1, "worker concurrency must be at least 1");
    anyhow::ensure!(!config.queue.is_empty(), "worker task queue must not be empty");
    for name in &config.task_env_allow {
        anyhow::ensure!(
            !name.is_empty() && !name.contains(['=', '\0']),
            "--task-env-allow {name:?} is not an environment variable name"
        );
        // REPRISE_* is the worker's own configuration (its token among it);
        // a task gets its REPRISE_* inputs from the server only.
        anyhow::ensure!(
            !name.starts_with("REPRISE_"),
            "--task-env-allow {name}: REPRISE_* variables configure the worker and are never passed to tasks"
        );
    }
    Ok(())
}

/// Connects, retrying until the server answers. `None` if shutdown came first.
async fn connect(server: &str, shutdown: &CancellationToken) -> anyhow::Result<Option<Channel>> {
    let endpoint = Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("invalid server address {server:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)));
    let mut delays = backoff::jittered(CONNECT_FIRST_BACKOFF, MAX_BACKOFF);
    let mut attempt = 0u32;
    loop {
        attempt = attempt.saturating_add(1);
        let error = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(None),
            connected = endpoint.connect() => match connected {
                Ok(channel) => {
                    info!(server, "connected to server");
                    return Ok(Some(channel));
                }
                Err(err) => err,
            },
        };
        let backoff = delays.next().unwrap_or(MAX_BACKOFF);
        warn!(
            server,
            attempt,
            error = %describe_error(&error),
            retry_in_ms = backoff.as_millis() as u64,
            "cannot reach server; retrying"
        );
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

/// One unit of concurrency: poll, run, repeat. A task that has started is
/// always seen through, even after shutdown, so its result is reported.
/// Each report asks for the slot's next task (unless shutting down), which
/// spares a poll when the report itself dispatches one.
async fn run_slot(
    client: Client,
    config: Arc<WorkerConfig>,
    inherited: Arc<shell::Inherited>,
    slot: usize,
    shutdown: CancellationToken,
) {
    let fresh = || backoff::jittered(FIRST_BACKOFF, MAX_BACKOFF);
    let mut delays = fresh();
    let ask = task::Next { queue: &config.queue, worker_id: &config.worker_id, shutdown: &shutdown };
    let mut next = None;
    loop {
        // A task that came with the last report is already leased to this
        // slot: it runs even during shutdown, like any task that reached us.
        if let Some(task) = next.take() {
            next = task::execute(client.clone(), task, &inherited, &ask).await;
            continue;
        }
        // Abandoning a poll on shutdown is safe: a task leased in that instant
        // comes back to the queue when its lease expires.
        let polled = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            polled = poll(client.clone(), &config) => polled,
        };
        match polled {
            Ok(Some(task)) => {
                delays = fresh();
                next = task::execute(client.clone(), task, &inherited, &ask).await;
            }
            Ok(None) => delays = fresh(),
            Err(status) => {
                let backoff = delays.next().unwrap_or(MAX_BACKOFF);
                warn!(
                    slot,
                    queue = %config.queue,
                    code = ?status.code(),
                    error = %describe(&status),
                    retry_in_ms = backoff.as_millis() as u64,
                    "polling for tasks failed"
                );
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
    debug!(slot, "worker slot stopped");
}

/// One long poll; `None` when no task arrived in time.
async fn poll(mut client: Client, config: &WorkerConfig) -> Result<Option<Task>, Status> {
    let request = PollTaskRequest {
        task_queue: config.queue.clone(),
        worker_id: config.worker_id.clone(),
        wait: Some(prost_types::Duration { seconds: POLL_WAIT.as_secs() as i64, nanos: 0 }),
    };
    match tokio::time::timeout(POLL_WAIT + POLL_SLACK, client.poll_task(request)).await {
        Ok(response) => Ok(response?.into_inner().task),
        Err(_) => Err(Status::deadline_exceeded("poll task got no answer in time")),
    }
}

/// A status message with its causes: transport failures hide the useful
/// part ("connection refused") in the source chain.
fn describe(status: &Status) -> String {
    let mut text = status.message().to_owned();
    append_causes(&mut text, std::error::Error::source(status));
    text
}

/// An error with its causes, skipping causes that repeat what is already said.
fn describe_error(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    append_causes(&mut text, error.source());
    text
}

fn append_causes(text: &mut String, mut source: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
}
