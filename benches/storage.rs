//! What history costs in the database, what a watch streams per change, and
//! how fast retention deletes while transitions go on (issue 20).
//!
//! Run with `cargo bench --bench storage`. Always measures SQLite (a temp
//! file database); also PostgreSQL when `REPRISE_TEST_POSTGRES_URL` names a
//! server (a fresh `reprise_bench_<time>_<uuid>` database is created there and
//! dropped at the end). `REPRISE_BENCH_QUICK=1` runs a tenth of every count,
//! for trying the bench out; its figures are not the ones to quote.
//!
//! All traffic goes over real gRPC through the generated clients to an
//! in-process server; tasks are completed by scripted gRPC workers. Worker
//! output is pseudo-random printable text (one line per 100 characters), so
//! PostgreSQL's TOAST compression finds little to squeeze: real logs, which
//! repeat themselves, take less there (SQLite does not compress).
//!
//! Per backend:
//! 1. bytes per finished execution (after 50 unmeasured executions that
//!    allocate every table's first pages): a 5-stage pipeline of 2 parallel
//!    workflows per stage, run 300 times with no output, 300 times with
//!    1 KiB of output per task and 100 times with 64 KiB (the cap) per task.
//!    The database is measured before and after each series: on SQLite
//!    `page_count × page_size` after `PRAGMA wal_checkpoint(TRUNCATE)` (the
//!    whole file: executions, stages, tasks, audit events, indexes); on
//!    PostgreSQL the sum of `pg_total_relation_size` of executions, stages,
//!    tasks and audit_events (indexes and TOAST included) after `VACUUM
//!    (ANALYZE)` of those tables. Printed per execution, with a growth table
//!    at 1,000 and 10,000 executions a day.
//! 2. WatchExecution bytes per change: a watch of one 10-stage × 4-workflow
//!    execution whose 40 workflows each report 64 KiB of output; messages,
//!    protobuf bytes streamed and bytes per message, beside the size of
//!    GetExecution of the final execution in the BASIC and FULL views.
//! 3. retention throughput: 3,000 finished (SUCCEEDED) chains of a 2-stage ×
//!    2-workflow pipeline are run first; then a transitions workload (a
//!    20-stage pipeline of 1 workflow per stage, one poller parked in
//!    PollTask, the bench completing each task and timing until the next
//!    stage's task reaches the poller, as in benches/transitions.rs) runs
//!    alone, and then again while `Engine::sweep` deletes those chains with
//!    the default batch (50 chains per transaction, 5 ms between batches).
//!    The age cutoff falls between the prefill and the workload, so exactly
//!    the prefilled chains go; the bench checks that. Printed: rows deleted
//!    per second (executions + stages + tasks) and the transition latency
//!    with and without the sweep, side by side.
//!
//! Timings are from a shared machine (server, clients and workers in one
//! process); read them as orders of magnitude. Nothing here is a timed
//! assertion: the bench fails only when something is functionally wrong
//! (an execution that does not succeed, a sweep that deletes the wrong chains).

mod common;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use prost::Message as _;
use reprise::{
    domain::retention::Policy,
    engine::{SweepOptions, Swept},
    proto::{self as pb, execution_service_client::ExecutionServiceClient, worker_service_client::WorkerServiceClient},
    store::{self, Store},
};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tokio::{sync::mpsc, task::JoinHandle, task::JoinSet};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use common::*;

/// Executions per size series, and the output each task reports.
const SIZE_SERIES: [(&str, usize, usize); 3] =
    [("no output", 300, 0), ("1 KiB per task", 300, 1024), ("64 KiB per task", 100, 64 * 1024)];
const SIZE_STAGES: usize = 5;
const SIZE_WIDTH: usize = 2;
/// Executions run (and not measured) before the first series.
const WARMUP_EXECUTIONS: usize = 50;
/// Executions running at once while the size series run.
const IN_FLIGHT: usize = 8;
/// Scripted worker slots serving a queue.
const SLOTS: usize = 4;

const WATCH_STAGES: usize = 10;
const WATCH_WIDTH: usize = 4;
const WATCH_OUTPUT: usize = 64 * 1024;

const PREFILL_CHAINS: usize = 3000;
const PREFILL_STAGES: usize = 2;
const PREFILL_WIDTH: usize = 2;
const WORKLOAD_STAGES: usize = 20;
/// Transitions measured for the no-retention figure.
const BASELINE_TRANSITIONS: usize = 400;

/// Bounds every wait of the bench so a lost wake-up cannot hang it.
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// Pause (outside the measured window) letting the poller park in PollTask.
const SETTLE: Duration = Duration::from_millis(3);

const DAYS_PER_YEAR: f64 = 365.0;

fn quick() -> bool {
    std::env::var("REPRISE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A count, or a tenth of it in quick mode.
fn scaled(n: usize) -> usize {
    if quick() { (n / 10).max(1) } else { n }
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    eprintln!("reprise storage bench: server, clients and workers in one process, {cores} cores");
    if quick() {
        eprintln!("REPRISE_BENCH_QUICK: a tenth of every count; do not quote these figures");
    }
    let reports = on_each_backend(bench_backend).await?;
    print_report(&reports);
    println!("\n(bench ran in {:.1} s on {cores} cores)", started.elapsed().as_secs_f64());
    Ok(())
}

// ---- one backend ---------------------------------------------------------

struct SizeSeries {
    label: &'static str,
    executions: usize,
    output_per_task: usize,
    bytes: i64,
    /// PostgreSQL: growth per table (name, bytes).
    tables: Vec<(&'static str, i64)>,
    took: Duration,
}

struct WatchFigures {
    messages: usize,
    bytes: usize,
    largest: usize,
    basic: usize,
    full: usize,
    output_reported: usize,
}

struct RetentionFigures {
    prefill: Duration,
    swept: Swept,
    sweep: Duration,
    baseline: Vec<Duration>,
    during: Vec<Duration>,
    before_bytes: i64,
    after_bytes: i64,
}

struct BackendReport {
    name: &'static str,
    sizes: Vec<SizeSeries>,
    watch: WatchFigures,
    retention: RetentionFigures,
}

async fn bench_backend(backend: Backend) -> anyhow::Result<BackendReport> {
    let name = backend.name();
    let (sizes, watch) = {
        let db_guard = BenchDb::create(&backend).await?;
        let db = store::connect(db_guard.url()).await.context("store::connect")?;
        let server = Server::start(db).await?;
        let result = async {
            // Unmeasured: the first rows allocate every table's and index's
            // first pages, which would weigh on the first series.
            eprintln!("[{name}] warm-up: {} executions", scaled(WARMUP_EXECUTIONS));
            size_series(&server, "warm-up", scaled(WARMUP_EXECUTIONS), 1024).await?;
            let mut sizes = Vec::new();
            for (label, executions, output) in SIZE_SERIES {
                let executions = scaled(executions);
                eprintln!("[{name}] bytes per execution: {executions} × {SIZE_STAGES}×{SIZE_WIDTH}, {label}");
                sizes.push(size_series(&server, label, executions, output).await?);
            }
            eprintln!("[{name}] watch of a {WATCH_STAGES}×{WATCH_WIDTH} execution, {WATCH_OUTPUT} chars per workflow");
            let watch = watch_bytes(&server).await?;
            anyhow::Ok((sizes, watch))
        }
        .await;
        server.stop().await;
        drop(db_guard);
        result.with_context(|| format!("{name} bench"))?
    };
    // Retention on a database of its own, so the sweep deletes exactly the
    // prefilled chains.
    let db_guard = BenchDb::create(&backend).await?;
    let db = store::connect(db_guard.url()).await.context("store::connect")?;
    let server = Server::start(db).await?;
    eprintln!("[{name}] retention: {} chains, then transitions with and without a sweep", scaled(PREFILL_CHAINS));
    let retention = retention(&server).await;
    server.stop().await;
    drop(db_guard);
    let retention = retention.with_context(|| format!("{name} retention bench"))?;
    Ok(BackendReport { name, sizes, watch, retention })
}

// ---- database size -------------------------------------------------------------

const PG_TABLES: [&str; 4] = ["executions", "stages", "tasks", "audit_events"];

/// The database's size now: (total, per table where known).
async fn db_bytes(store: &Store) -> anyhow::Result<(i64, Vec<(&'static str, i64)>)> {
    let conn = store.connection();
    match conn.get_database_backend() {
        DbBackend::Postgres => {
            conn.execute_unprepared(&format!("VACUUM (ANALYZE) {}", PG_TABLES.join(", "))).await?;
            let mut tables = Vec::new();
            for table in PG_TABLES {
                let sql = format!("SELECT pg_total_relation_size('{table}')::bigint");
                let row = conn
                    .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
                    .await?
                    .context("no row from pg_total_relation_size")?;
                tables.push((table, row.try_get_by_index::<i64>(0)?));
            }
            Ok((tables.iter().map(|(_, b)| b).sum(), tables))
        }
        _ => {
            // The WAL's pages into the file; retried while a reader holds a snapshot.
            let mut checkpointed = false;
            for _ in 0..50 {
                if store.sqlite_writer_pragma("wal_checkpoint(TRUNCATE)").await? == Some(0) {
                    checkpointed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !checkpointed {
                eprintln!("warning: wal_checkpoint(TRUNCATE) stayed busy; the size may miss WAL pages");
            }
            let pragma = |p: &'static str| async move {
                store.sqlite_writer_pragma(p).await?.with_context(|| format!("PRAGMA {p} gave nothing"))
            };
            let pages = pragma("page_count").await?;
            let page_size = pragma("page_size").await?;
            Ok((pages * page_size, vec![]))
        }
    }
}

async fn size_series(
    server: &Server,
    label: &'static str,
    executions: usize,
    output: usize,
) -> anyhow::Result<SizeSeries> {
    let queue = queue_name();
    let pipeline = create_bench_pipeline(&server.channel, SIZE_STAGES, SIZE_WIDTH, &queue).await?;
    let stop = CancellationToken::new();
    let workers = spawn_workers(server, &queue, SLOTS, output, &stop);
    let (before, tables_before) = db_bytes(server.engine.store()).await?;
    let started = Instant::now();
    let ran = run_executions(&server.channel, &pipeline, executions, IN_FLIGHT).await;
    let took = started.elapsed();
    stop_workers(stop, workers).await;
    ran?;
    let (after, tables_after) = db_bytes(server.engine.store()).await?;
    let tables = tables_after.iter().zip(&tables_before).map(|((name, a), (_, b))| (*name, a - b)).collect();
    Ok(SizeSeries { label, executions, output_per_task: output, bytes: after - before, tables, took })
}

// ---- watch ---------------------------------------------------------------------

async fn watch_bytes(server: &Server) -> anyhow::Result<WatchFigures> {
    let queue = queue_name();
    let pipeline = create_bench_pipeline(&server.channel, WATCH_STAGES, WATCH_WIDTH, &queue).await?;
    let execution_id = start_execution(&server.channel, &pipeline).await?;
    let mut client = ExecutionServiceClient::new(server.channel.clone());
    let mut stream =
        client.watch_execution(pb::WatchExecutionRequest { execution_id: execution_id.clone() }).await?.into_inner();
    // The workers start once the watch is open, so it sees every change.
    let stop = CancellationToken::new();
    let workers = spawn_workers(server, &queue, WATCH_WIDTH, WATCH_OUTPUT, &stop);
    let watched = within("watching the execution to its end", async {
        let (mut messages, mut bytes, mut largest) = (0, 0, 0);
        while let Some(item) = stream.next().await {
            let item = item?;
            let size = item.encoded_len();
            messages += 1;
            bytes += size;
            largest = largest.max(size);
            let execution = item.execution.context("no execution in a watch message")?;
            let status = pb::ExecutionStatus::try_from(execution.status)?;
            if is_final(status) {
                ensure!(status == pb::ExecutionStatus::Succeeded, "the watched execution ended {status:?}");
                return Ok((messages, bytes, largest));
            }
        }
        bail!("the watch ended before the execution was final")
    })
    .await;
    stop_workers(stop, workers).await;
    let (messages, bytes, largest) = watched?;
    let get = |view: pb::ExecutionView| {
        let (mut client, id) = (client.clone(), execution_id.clone());
        async move {
            let response =
                client.get_execution(pb::GetExecutionRequest { execution_id: id, view: view as i32 }).await?;
            anyhow::Ok(response.into_inner().encoded_len())
        }
    };
    let basic = get(pb::ExecutionView::Basic).await.context("GetExecution BASIC")?;
    let full = get(pb::ExecutionView::Full).await.context("GetExecution FULL (a default client)")?;
    Ok(WatchFigures {
        messages,
        bytes,
        largest,
        basic,
        full,
        output_reported: WATCH_STAGES * WATCH_WIDTH * WATCH_OUTPUT,
    })
}

// ---- retention -----------------------------------------------------------------

async fn retention(server: &Server) -> anyhow::Result<RetentionFigures> {
    let chains = scaled(PREFILL_CHAINS);
    let queue = queue_name();
    let pipeline = create_bench_pipeline(&server.channel, PREFILL_STAGES, PREFILL_WIDTH, &queue).await?;
    let stop = CancellationToken::new();
    let workers = spawn_workers(server, &queue, SLOTS, 0, &stop);
    let started = Instant::now();
    let ran = run_executions(&server.channel, &pipeline, chains, IN_FLIGHT * 2).await;
    let prefill = started.elapsed();
    stop_workers(stop, workers).await;
    ran?;

    // The age cutoff: between the last prefilled execution's end and the
    // workload's first one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cutoff = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (before_bytes, _) = db_bytes(server.engine.store()).await?;

    let workload_queue = queue_name();
    let workload_pipeline = create_bench_pipeline(&server.channel, WORKLOAD_STAGES, 1, &workload_queue).await?;
    let baseline_target = scaled(BASELINE_TRANSITIONS);
    let baseline = transitions_workload(
        server.channel.clone(),
        workload_pipeline.clone(),
        workload_queue.clone(),
        Some(baseline_target),
        None,
    )
    .await
    .context("workload without retention")?;

    // With retention: the workload runs first alone a moment, then beside the sweep.
    let sweeping = CancellationToken::new();
    let workload = tokio::spawn(transitions_workload(
        server.channel.clone(),
        workload_pipeline,
        workload_queue,
        None,
        Some(sweeping.clone()),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let policy = Policy { chains_for_ms: Some(cutoff.elapsed().as_millis() as i64), ..Policy::default() };
    let sweep_started = Instant::now();
    let swept = server.engine.sweep(&policy, SweepOptions::default()).await;
    let sweep_ended = Instant::now();
    sweeping.cancel();
    let samples = workload.await.context("workload task")?.context("workload with retention")?;
    let swept = swept.context("sweep")?;
    let sweep = sweep_ended - sweep_started;
    ensure!(
        swept.chains == chains as u64 && swept.executions == chains as u64,
        "the sweep deleted {} chains / {} executions, expected exactly the {chains} prefilled",
        swept.chains,
        swept.executions
    );
    let (stages, tasks) = ((chains * PREFILL_STAGES) as u64, (chains * PREFILL_STAGES * PREFILL_WIDTH) as u64);
    ensure!(
        swept.stages == stages && swept.tasks == tasks,
        "the sweep deleted {} stages / {} tasks, expected {stages} / {tasks}",
        swept.stages,
        swept.tasks
    );
    // Only transitions that began while the sweep ran.
    let during: Vec<Duration> =
        samples.into_iter().filter(|(at, _)| *at >= sweep_started && *at < sweep_ended).map(|(_, d)| d).collect();
    let (after_bytes, _) = db_bytes(server.engine.store()).await?;
    Ok(RetentionFigures {
        prefill,
        swept,
        sweep,
        baseline: baseline.into_iter().map(|(_, d)| d).collect(),
        during,
        before_bytes,
        after_bytes,
    })
}

/// Runs executions of the 1-workflow-per-stage pipeline one after another,
/// completing each task itself and timing CompleteTask sent → the next
/// stage's task received by the parked poller. Ends after an execution once
/// `target` transitions were measured, or once `stop` is cancelled.
async fn transitions_workload(
    channel: Channel,
    pipeline: String,
    queue: String,
    target: Option<usize>,
    stop: Option<CancellationToken>,
) -> anyhow::Result<Vec<(Instant, Duration)>> {
    let (pipeline, queue) = (pipeline.as_str(), queue.as_str());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop_poller = CancellationToken::new();
    let poller = spawn_poller(
        WorkerServiceClient::new(channel.clone()),
        queue.to_owned(),
        "bench-poller".into(),
        tx,
        stop_poller.clone(),
    );
    let mut completer = WorkerServiceClient::new(channel.clone());
    let mut samples = Vec::new();
    let run = async {
        let mut execution = 0;
        loop {
            let done_by_target = target.is_some_and(|t| samples.len() >= t);
            let done_by_stop = stop.as_ref().is_some_and(|s| s.is_cancelled());
            if done_by_target || done_by_stop {
                break;
            }
            let execution_id = start_execution(&channel, pipeline).await?;
            let (mut current, _) = receive(&mut rx).await?;
            for stage in 0..WORKLOAD_STAGES {
                ensure!(current.execution_id == execution_id, "a task of another execution arrived");
                tokio::time::sleep(SETTLE).await;
                let started = Instant::now();
                complete(&mut completer, &current, String::new()).await?;
                if stage + 1 == WORKLOAD_STAGES {
                    break;
                }
                let (next, at) = receive(&mut rx).await?;
                // Execution 0 warms up and is not recorded.
                if execution > 0 {
                    samples.push((started, at - started));
                }
                current = next;
            }
            let status = within("workload execution's end", wait_final(&channel, &execution_id)).await?;
            ensure!(status == pb::ExecutionStatus::Succeeded, "a workload execution ended {status:?}");
            execution += 1;
        }
        anyhow::Ok(())
    };
    let result = run.await;
    stop_poller.cancel();
    let _ = poller.await;
    result.map(|()| samples)
}

/// A poller that sits in PollTask and forwards every task it gets, stamped.
fn spawn_poller(
    mut client: WorkerServiceClient<Channel>,
    queue: String,
    id: String,
    tx: mpsc::UnboundedSender<(pb::Task, Instant)>,
    stop: CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        loop {
            let polled = tokio::select! {
                r = client.poll_task(poll_request(&queue, &id)) => r,
                _ = stop.cancelled() => return Ok(()),
            };
            let at = Instant::now();
            let Some(task) = polled.context("PollTask failed")?.into_inner().task else { continue };
            if tx.send((task, at)).is_err() {
                return Ok(());
            }
        }
    })
}

async fn receive(rx: &mut mpsc::UnboundedReceiver<(pb::Task, Instant)>) -> anyhow::Result<(pb::Task, Instant)> {
    within("waiting for a polled task", async { rx.recv().await.context("the poller stopped") }).await
}

// ---- pipelines, executions, workers ------------------------------------------------

async fn create_bench_pipeline(channel: &Channel, stages: usize, width: usize, queue: &str) -> anyhow::Result<String> {
    let stages = (0..stages)
        .map(|s| pb::Stage {
            name: format!("s{s:02}"),
            environment: Some(pb::Environment { name: "bench".into(), r#type: pb::EnvironmentType::NonProd as i32 }),
            kind: Some(pb::stage::Kind::Workflows(pb::WorkflowStage {
                workflows: (0..width)
                    .map(|w| pb::Workflow {
                        name: format!("w{w}"),
                        task_queue: queue.into(),
                        command: "./deploy.sh".into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    common::create_pipeline(channel, stages).await
}

/// Follows WatchExecution until the execution is final; returns its status.
async fn wait_final(channel: &Channel, execution_id: &str) -> anyhow::Result<pb::ExecutionStatus> {
    let request = pb::WatchExecutionRequest { execution_id: execution_id.into() };
    let mut stream = ExecutionServiceClient::new(channel.clone()).watch_execution(request).await?.into_inner();
    while let Some(item) = stream.next().await {
        let execution = item?.execution.context("no execution in a watch message")?;
        let status = pb::ExecutionStatus::try_from(execution.status)?;
        if is_final(status) {
            return Ok(status);
        }
    }
    bail!("watch of {execution_id} ended before the execution was final")
}

/// Starts `count` executions, `in_flight` at a time, and waits for each to
/// succeed.
async fn run_executions(channel: &Channel, pipeline: &str, count: usize, in_flight: usize) -> anyhow::Result<()> {
    let mut running = JoinSet::new();
    let (mut started, mut finished) = (0, 0);
    while finished < count {
        while started < count && running.len() < in_flight {
            let (channel, pipeline) = (channel.clone(), pipeline.to_owned());
            running.spawn(async move {
                let id = start_execution(&channel, &pipeline).await?;
                let status = within("an execution's end", wait_final(&channel, &id)).await?;
                ensure!(status == pb::ExecutionStatus::Succeeded, "execution {id} ended {status:?}");
                anyhow::Ok(())
            });
            started += 1;
        }
        running.join_next().await.context("no execution running")?.context("execution task")??;
        finished += 1;
    }
    Ok(())
}

/// Scripted workers: poll over gRPC and complete every task at once with
/// `output` characters of output.
fn spawn_workers(
    server: &Server,
    queue: &str,
    slots: usize,
    output: usize,
    stop: &CancellationToken,
) -> Vec<JoinHandle<anyhow::Result<()>>> {
    let seed = Arc::new(AtomicU64::new(0x9E37_79B9_7F4A_7C15));
    (0..slots)
        .map(|i| {
            let (mut client, queue, stop, seed) = (server.workers(), queue.to_owned(), stop.clone(), seed.clone());
            let id = format!("bench-worker-{i}");
            tokio::spawn(async move {
                loop {
                    let polled = tokio::select! {
                        r = client.poll_task(poll_request(&queue, &id)) => r,
                        _ = stop.cancelled() => return Ok(()),
                    };
                    if let Some(task) = polled.context("PollTask failed")?.into_inner().task {
                        let text = noise(output, seed.fetch_add(0x6A09_E667_F3BC_C909, Ordering::Relaxed));
                        complete(&mut client, &task, text).await?;
                    }
                }
            })
        })
        .collect()
}

async fn stop_workers(stop: CancellationToken, workers: Vec<JoinHandle<anyhow::Result<()>>>) {
    stop.cancel();
    for w in workers {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: scripted worker: {e:#}"),
            Err(e) => eprintln!("warning: scripted worker task: {e}"),
        }
    }
}

/// `len` characters of printable pseudo-random text, a line per 100.
fn noise(len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ._-:/=";
    let mut x = seed | 1;
    let mut out = String::with_capacity(len);
    for i in 0..len {
        if i % 100 == 99 {
            out.push('\n');
            continue;
        }
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        out.push(ALPHABET[((v >> 32) as usize) % ALPHABET.len()] as char);
    }
    out
}

async fn complete(client: &mut WorkerServiceClient<Channel>, task: &pb::Task, output: String) -> anyhow::Result<()> {
    let request = pb::CompleteTaskRequest {
        task_id: task.task_id.clone(),
        lease_token: task.lease_token.clone(),
        outcome: pb::TaskOutcome::Succeeded as i32,
        exit_code: 0,
        output,
        message: String::new(),
        output_offset: None,
        ..Default::default()
    };
    client.complete_task(request).await.context("CompleteTask")?;
    Ok(())
}

fn poll_request(queue: &str, worker_id: &str) -> pb::PollTaskRequest {
    pb::PollTaskRequest {
        task_queue: queue.into(),
        worker_id: worker_id.into(),
        wait: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
    }
}

async fn within<T>(what: &str, f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    match tokio::time::timeout(WAIT_LIMIT, f).await {
        Ok(r) => r,
        Err(_) => bail!("{what}: nothing within {} s", WAIT_LIMIT.as_secs()),
    }
}

// ---- the report ------------------------------------------------------------------

/// Decimal units, as disks are sold.
fn human(bytes: f64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut v = bytes;
    let mut unit = 0;
    while v.abs() >= 1000.0 && unit + 1 < units.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{v:.0} B") } else { format!("{v:.1} {}", units[unit]) }
}

fn trio(s: &[Duration]) -> String {
    format!("{} / {} / {} ms", ms(p50(s)), ms(p99(s)), ms(max(s)))
}

fn print_report(reports: &[BackendReport]) {
    println!();
    println!("== Reprise storage (release build; server, clients and workers share one process) ==");
    println!(
        "Worker output is pseudo-random text (little for PostgreSQL's TOAST to compress). Timings come from a \
         shared machine: read them as orders of magnitude."
    );

    println!();
    println!(
        "1. Database bytes per finished execution ({SIZE_STAGES} stages × {SIZE_WIDTH} parallel workflows = {} tasks)",
        SIZE_STAGES * SIZE_WIDTH
    );
    println!(
        "   SQLite: page_count × page_size after wal_checkpoint(TRUNCATE), whole file. PostgreSQL: \
         pg_total_relation_size of {} after VACUUM (ANALYZE).",
        PG_TABLES.join(", ")
    );
    println!(
        "   {:<9} {:<17} {:>10} {:>14} {:>15}   run",
        "backend", "output", "executions", "bytes/exec", "output/exec"
    );
    for r in reports {
        for s in &r.sizes {
            println!(
                "   {:<9} {:<17} {:>10} {:>14} {:>15}   {:.1} s ({:.0} executions/s)",
                r.name,
                s.label,
                s.executions,
                human(s.bytes as f64 / s.executions as f64),
                human((s.output_per_task * SIZE_STAGES * SIZE_WIDTH) as f64),
                s.took.as_secs_f64(),
                s.executions as f64 / s.took.as_secs_f64().max(1e-9),
            );
            if !s.tables.is_empty() {
                let per: Vec<String> =
                    s.tables.iter().map(|(t, b)| format!("{t} {}", human(*b as f64 / s.executions as f64))).collect();
                println!("   {:<9} {:<17} per table: {}", "", "", per.join(", "));
            }
        }
    }
    println!();
    println!("   Growth (bytes/exec × executions/day; a year = {DAYS_PER_YEAR} days):");
    println!(
        "   {:<9} {:<17} {:>14} {:>14} {:>14} {:>14}",
        "backend", "output", "1k/day: day", "1k/day: year", "10k/day: day", "10k/day: year"
    );
    for r in reports {
        for s in &r.sizes {
            let per = s.bytes as f64 / s.executions as f64;
            println!(
                "   {:<9} {:<17} {:>14} {:>14} {:>14} {:>14}",
                r.name,
                s.label,
                human(per * 1e3),
                human(per * 1e3 * DAYS_PER_YEAR),
                human(per * 1e4),
                human(per * 1e4 * DAYS_PER_YEAR),
            );
        }
    }

    println!();
    println!(
        "2. WatchExecution of one {WATCH_STAGES}×{WATCH_WIDTH} execution, every workflow reporting {} of output \
         ({} in all); protobuf bytes, gRPC framing not counted",
        human(WATCH_OUTPUT as f64),
        human((WATCH_STAGES * WATCH_WIDTH * WATCH_OUTPUT) as f64)
    );
    println!(
        "   {:<9} {:>9} {:>14} {:>14} {:>14} {:>16} {:>16}",
        "backend", "messages", "streamed", "per message", "largest", "GetExec BASIC", "GetExec FULL"
    );
    for r in reports {
        let w = &r.watch;
        println!(
            "   {:<9} {:>9} {:>14} {:>14} {:>14} {:>16} {:>16}",
            r.name,
            w.messages,
            human(w.bytes as f64),
            human(w.bytes as f64 / w.messages.max(1) as f64),
            human(w.largest as f64),
            human(w.basic as f64),
            human(w.full as f64),
        );
    }
    for r in reports {
        let w = &r.watch;
        println!(
            "   {}: the watch streamed {:.2}% of the output the workers reported; {} messages each carrying the FULL \
             view would have been {}",
            r.name,
            100.0 * w.bytes as f64 / w.output_reported as f64,
            w.messages,
            human((w.messages * w.full) as f64),
        );
    }

    println!();
    println!(
        "3. Retention: {} finished chains of {PREFILL_STAGES}×{PREFILL_WIDTH} deleted by Engine::sweep (batches of \
         {} chains, {} ms apart) while a {WORKLOAD_STAGES}-stage × 1-workflow transitions workload runs",
        reports.first().map_or(0, |r| r.retention.swept.chains),
        SweepOptions::default().batch,
        SweepOptions::default().pause.as_millis(),
    );
    println!(
        "   {:<9} {:>11} {:>9} {:>11} {:>13} {:>12}   {:<31} {:<31}",
        "backend",
        "rows",
        "sweep",
        "rows/s",
        "chains/s",
        "prefill",
        "transition w/o sweep p50/p99/max",
        "transition during sweep"
    );
    for r in reports {
        let t = &r.retention;
        let rows = t.swept.executions + t.swept.stages + t.swept.tasks;
        let secs = t.sweep.as_secs_f64().max(1e-9);
        println!(
            "   {:<9} {:>11} {:>7.2} s {:>11.0} {:>13.0} {:>10.1} s   {:<31} {:<31}",
            r.name,
            rows,
            secs,
            rows as f64 / secs,
            t.swept.chains as f64 / secs,
            t.prefill.as_secs_f64(),
            trio(&t.baseline),
            trio(&t.during),
        );
    }
    for r in reports {
        let t = &r.retention;
        println!(
            "   {}: {} executions + {} stages + {} tasks deleted; transitions measured: {} without, {} during the \
             sweep; database {} before, {} after (SQLite keeps freed pages in the file for reuse; VACUUM returns only \
             PostgreSQL's trailing empty pages)",
            r.name,
            t.swept.executions,
            t.swept.stages,
            t.swept.tasks,
            t.baseline.len(),
            t.during.len(),
            human(t.before_bytes as f64),
            human(t.after_bytes as f64),
        );
        if !t.baseline.is_empty() && !t.during.is_empty() {
            println!(
                "   {}: transition p50 during / without the sweep: {:.2}×, p99: {:.2}×",
                r.name,
                ratio(p50(&t.during), p50(&t.baseline)),
                ratio(p99(&t.during), p99(&t.baseline)),
            );
        }
    }
}
