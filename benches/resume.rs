//! What a resume costs, and whether ListHistory stays flat as the executions
//! table grows.
//!
//! Run with `cargo bench --bench resume`. Always measures SQLite (temp file
//! databases); also PostgreSQL when `REPRISE_TEST_POSTGRES_URL` names a
//! server (fresh `reprise_bench_<time>_<uuid>` databases are created there and
//! dropped at the end).
//!
//! Per backend, on a first (small) database:
//! 1. floor: one single-row INSERT + COMMIT per transaction (`store::begin`,
//!    so BEGIN IMMEDIATE on SQLite like the engine's writes);
//! 2. Resume RPC latency and throughput with 1 and 16 concurrent callers,
//!    each call resuming a distinct REJECTED execution of a 1-stage approval
//!    pipeline from stage 0 (the resume puts the approval back to waiting in
//!    its transaction); plus, with 1 caller, FAILED executions of a 4-stage
//!    pipeline (stage 2 = 4 parallel workflows, one failed by a scripted gRPC
//!    worker) resumed from stage 0 (dispatches 1 task) and from stage 2
//!    (carries 2 stages over, dispatches 4 tasks);
//! 4. end to end: a 20-stage × 4-workflow pipeline whose original run fails
//!    in its last stage (so all 20 stages ran), then resumed from stage
//!    index 10 (carries stages 0..=9 over, runs 10..=19), scripted gRPC
//!    workers that ask for their next task with each report, and the same
//!    with workers that only poll;
//! 5. GetExecution (BASIC, FULL) of the last resumed 20×4 execution beside
//!    the health Check, both driven by h2load (skipped if it is missing).
//!
//! On a second database:
//! 3. ListHistory (first page of 50) with exactly 10,000 and then 1,000,000
//!    executions, seeded with bulk SQL straight into `executions` (chains of
//!    1 to 1,000 attempts; block 0 is a 1,000-attempt chain that is also
//!    paged through end to end), then Resume latency again on that table.

mod common;

use std::{
    collections::HashSet,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use reprise::{
    proto::{self as pb, execution_service_client::ExecutionServiceClient},
    store,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use common::{
    seed::{chain_len, count_executions, rows, seed, seeded_id, table_bytes},
    workers::{Next, Script, Workers},
    *,
};

/// Resumes before the measured series (connections, caches), not recorded.
const RESUME_WARMUP: usize = 20;
const RESUME_ONE_CALLER: usize = 300;
const CALLERS: usize = 16;
const RESUME_PER_CALLER: usize = 30;
/// 4-stage failed executions per resume point (stage 0 and stage 2).
const FAILED_PER_POINT: usize = 50;
/// Resumes measured on the 1M-row database, 1 caller.
const RESUME_LARGE: usize = 150;
/// Concurrent callers while preparing pools (not measured).
const PREP_CONCURRENCY: usize = 8;

const E2E_STAGES: usize = 20;
const E2E_WIDTH: usize = 4;
/// The stage index the end-to-end resume starts from.
const E2E_RESUME_FROM: usize = 10;
/// Measured runs; one more runs first as warm-up.
const E2E_RUNS: usize = 5;
const E2E_SLOTS: usize = 4;

const HISTORY_SMALL: i64 = 10_000;
const HISTORY_LARGE: i64 = 1_000_000;
const HISTORY_PAGE: i32 = 50;
const HISTORY_WARMUP: usize = 50;
const HISTORY_RANDOM: usize = 500;
const HISTORY_LONG: usize = 300;
const HISTORY_PAGINGS: usize = 10;
/// The seeded chain of 1,000 attempts: seeded rows 0..=999.
const LONG_CHAIN: i64 = 1000;

/// Bounds every wait of the bench so a lost wake-up cannot hang it.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    eprintln!("reprise resume bench: server, clients and workers in one process, {cores} cores");
    let reports = on_each_backend(bench_backend).await?;
    print_report(&reports);
    println!("\n(bench ran in {:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

// ---- the server ------------------------------------------------------------

impl Server {
    fn db(&self) -> &DatabaseConnection {
        self.engine.store().connection()
    }

    fn executions(&self) -> ExecutionServiceClient<Channel> {
        ExecutionServiceClient::new(self.channel.clone())
    }

    /// A client on a connection of its own.
    async fn own_executions_client(&self) -> anyhow::Result<ExecutionServiceClient<Channel>> {
        Ok(ExecutionServiceClient::new(Channel::from_shared(self.address.clone())?.connect().await?))
    }

    async fn create_pipeline(&self, stages: Vec<pb::Stage>) -> anyhow::Result<String> {
        create_pipeline(&self.channel, stages).await
    }

    async fn start_execution(&self, pipeline_id: &str) -> anyhow::Result<pb::Execution> {
        let request = pb::StartExecutionRequest {
            pipeline_id: pipeline_id.into(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        self.executions().start_execution(request).await?.into_inner().execution.context("no execution in the response")
    }

    /// Follows WatchExecution until the execution is final; returns its status.
    async fn wait_final(&self, execution_id: &str) -> anyhow::Result<pb::ExecutionStatus> {
        within("waiting for a final state", async {
            let request = pb::WatchExecutionRequest { execution_id: execution_id.into() };
            let mut stream = self.executions().watch_execution(request).await?.into_inner();
            while let Some(item) = stream.next().await {
                let execution = item?.execution.context("no execution in a watch message")?;
                let status = pb::ExecutionStatus::try_from(execution.status)?;
                if is_final(status) {
                    return Ok(status);
                }
            }
            bail!("watch of {execution_id} ended before the execution was final")
        })
        .await
    }
}

async fn within<T>(what: &str, f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    match tokio::time::timeout(WAIT_LIMIT, f).await {
        Ok(r) => r,
        Err(_) => bail!("{what}: nothing within {} s (a lost wake-up?)", WAIT_LIMIT.as_secs()),
    }
}

/// Runs `f` over `items` with at most `concurrency` at a time.
async fn for_each_concurrent<T, F, Fut>(items: Vec<T>, concurrency: usize, f: F) -> anyhow::Result<()>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let queue = Arc::new(Mutex::new(items));
    let f = Arc::new(f);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (queue, f) = (queue.clone(), f.clone());
            tokio::spawn(async move {
                loop {
                    let Some(item) = queue.lock().unwrap().pop() else { return anyhow::Ok(()) };
                    f(item).await?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

// ---- one backend ---------------------------------------------------------

#[derive(Default)]
struct Series {
    samples: Vec<Duration>,
    wall: Duration,
    errors: Vec<String>,
    /// SQL statements the store ran during the series (BEGIN and COMMIT included).
    statements: u64,
    /// SQLite: how long the series' units of work held the one writer.
    writer: Option<store::WriterHeld>,
}

impl Series {
    fn throughput(&self) -> f64 {
        self.samples.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn statements_per_call(&self) -> f64 {
        self.statements as f64 / self.samples.len().max(1) as f64
    }
}

struct HistoryReport {
    rows: i64,
    seed_time: Duration,
    table_bytes: Option<i64>,
    random: Vec<Duration>,
    random_entries: f64,
    long_first: Vec<Duration>,
    /// The same first pages as ListHistory's two store queries in-process,
    /// without gRPC.
    random_engine: Vec<Duration>,
    long_first_engine: Vec<Duration>,
    long_pages: Vec<Duration>,
    long_whole: Vec<Duration>,
    plans: Vec<String>,
}

struct BackendReport {
    name: &'static str,
    floor: Vec<Duration>,
    prep: Duration,
    one: Series,
    many: Series,
    four_from_0: Series,
    four_from_2: Series,
    e2e_original: Vec<Duration>,
    e2e_resumed: Vec<Duration>,
    /// The same with workers that only poll (no next_task_queue in reports).
    e2e_polled_original: Vec<Duration>,
    e2e_polled_resumed: Vec<Duration>,
    /// GetExecution of a 20×4 execution and the no-op floor, by h2load.
    reads: Option<Reads>,
    history: Vec<HistoryReport>,
    large_resume: Series,
    large_resume_rows: i64,
}

async fn bench_backend(backend: Backend) -> anyhow::Result<BackendReport> {
    let name = backend.name();

    // The small database: floor, Resume, end to end.
    let small = BenchDb::create(&backend).await?;
    let db = store::connect(small.url()).await.context("store::connect")?;
    eprintln!("[{name}] floor: {FLOOR_ITERATIONS} × INSERT + COMMIT");
    let floor = floor(&db).await?;
    let server = Server::start(db).await?;
    let first = async {
        let prep_started = Instant::now();
        let approval = server.create_pipeline(vec![approval_stage("gate")]).await?;
        let pool_size = RESUME_WARMUP + RESUME_ONE_CALLER + CALLERS * RESUME_PER_CALLER;
        eprintln!("[{name}] preparing {pool_size} REJECTED executions and {} FAILED 4-stage executions", 2 * FAILED_PER_POINT);
        let mut pool = rejected_pool(&server, &approval, pool_size).await?;
        let mut failed = failed_pool(&server, 2 * FAILED_PER_POINT).await?;
        let prep = prep_started.elapsed();
        eprintln!("[{name}] pools ready in {:.1} s", prep.as_secs_f64());

        let warmup: Vec<_> = pool.drain(..RESUME_WARMUP).collect();
        resume_series(&server, warmup, 1, 0).await?;
        eprintln!("[{name}] Resume, 1 caller × {RESUME_ONE_CALLER}");
        let one = resume_series(&server, pool.drain(..RESUME_ONE_CALLER).collect(), 1, 0).await?;
        eprintln!("[{name}] Resume, {CALLERS} callers × {RESUME_PER_CALLER}");
        let many = resume_series(&server, std::mem::take(&mut pool), CALLERS, 0).await?;
        eprintln!("[{name}] Resume of FAILED 4-stage executions from stage 0 and 2, 1 caller × {FAILED_PER_POINT} each");
        let four_from_0 = resume_series(&server, failed.drain(..FAILED_PER_POINT).collect(), 1, 0).await?;
        let four_from_2 = resume_series(&server, std::mem::take(&mut failed), 1, 2).await?;

        eprintln!("[{name}] end to end {E2E_STAGES}×{E2E_WIDTH}, original run then resume from index {E2E_RESUME_FROM}, × {E2E_RUNS} (+1 warm-up)");
        let (e2e_polled_original, e2e_polled_resumed, _) = e2e(&server, Next::Poll).await?;
        let (e2e_original, e2e_resumed, resumed) = e2e(&server, Next::WithReport).await?;
        let reads = reads(&server, &resumed).await?;
        let e2e = [e2e_original, e2e_resumed, e2e_polled_original, e2e_polled_resumed];
        anyhow::Ok((prep, one, many, four_from_0, four_from_2, e2e, reads))
    }
    .await;
    server.stop().await;
    drop(small);
    let (prep, one, many, four_from_0, four_from_2, e2e, reads) = first?;
    let [e2e_original, e2e_resumed, e2e_polled_original, e2e_polled_resumed] = e2e;

    // The history database: 10k then 1M seeded executions.
    let big = BenchDb::create(&backend).await?;
    let db = store::connect(big.url()).await.context("store::connect")?;
    let server = Server::start(db).await?;
    let second = async {
        let pipeline = server.create_pipeline(vec![approval_stage("gate")]).await?;
        let base = reprise::engine::now() - 30 * 24 * 3600 * 1000;
        let mut history = Vec::new();
        let mut seeded = 0;
        for target in [HISTORY_SMALL, HISTORY_LARGE] {
            eprintln!("[{name}] seeding executions {seeded}..{target}");
            let started = Instant::now();
            seed(server.db(), &pipeline, base, seeded, target).await?;
            let seed_time = started.elapsed();
            seeded = target;
            let rows = count_executions(server.db()).await?;
            eprintln!("[{name}] {rows} executions (seeded in {:.1} s); ListHistory", seed_time.as_secs_f64());
            let mut report = history_series(&server, base, seeded).await?;
            report.rows = rows;
            report.seed_time = seed_time;
            report.table_bytes = table_bytes(server.db()).await.ok();
            report.plans =
                plans(server.db(), &seeded_id(base, 0)).await.unwrap_or_else(|e| vec![format!("(no plan: {e:#})")]);
            history.push(report);
        }
        eprintln!("[{name}] Resume on the 1M-row table, 1 caller × {RESUME_LARGE}");
        let mut pool = rejected_pool(&server, &pipeline, RESUME_WARMUP + RESUME_LARGE).await?;
        let rows = count_executions(server.db()).await?;
        resume_series(&server, pool.drain(..RESUME_WARMUP).collect(), 1, 0).await?;
        let large_resume = resume_series(&server, pool, 1, 0).await?;
        anyhow::Ok((history, large_resume, rows))
    }
    .await;
    server.stop().await;
    drop(big);
    let (history, large_resume, large_resume_rows) = second?;

    Ok(BackendReport {
        name,
        floor,
        prep,
        one,
        many,
        four_from_0,
        four_from_2,
        e2e_original,
        e2e_resumed,
        e2e_polled_original,
        e2e_polled_resumed,
        reads,
        history,
        large_resume,
        large_resume_rows,
    })
}

// ---- 2. Resume -----------------------------------------------------------------

/// `n` executions of the 1-stage approval pipeline, each started and
/// rejected: REJECTED, latest of its chain, resumable from stage 0.
async fn rejected_pool(server: &Server, pipeline: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let ids = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let client = server.executions();
    let (pipeline, out) = (pipeline.to_owned(), ids.clone());
    for_each_concurrent((0..n).collect(), PREP_CONCURRENCY, move |_| {
        let (mut client, pipeline, out) = (client.clone(), pipeline.clone(), out.clone());
        async move {
            let request = pb::StartExecutionRequest {
                pipeline_id: pipeline,
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            };
            let e = client.start_execution(request).await?.into_inner().execution.context("no execution")?;
            let reject =
                pb::RejectRequest { execution_id: e.id.clone(), stage_name: String::new(), comment: "bench".into() };
            let r = client.reject(reject).await?.into_inner().execution.context("no execution")?;
            ensure!(r.status == pb::ExecutionStatus::Rejected as i32, "rejected execution is {:?}", r.status);
            out.lock().unwrap().push(e.id);
            Ok(())
        }
    })
    .await?;
    let ids = std::mem::take(&mut *ids.lock().unwrap());
    Ok(ids)
}

/// `n` FAILED executions of a 4-stage pipeline whose stage 2 has 4 parallel
/// workflows, one of which the scripted worker fails.
async fn failed_pool(server: &Server, n: usize) -> anyhow::Result<Vec<String>> {
    let queue = queue_name();
    let pipeline = server
        .create_pipeline(vec![
            workflow_stage("build", &queue, &names("compile", 1)),
            workflow_stage("test", &queue, &names("unit", 1)),
            workflow_stage("rollout", &queue, &["eu".into(), "us".into(), "asia".into(), "au".into()]),
            workflow_stage("verify", &queue, &names("smoke", 1)),
        ])
        .await?;
    let workers = Workers::start(
        server,
        &queue,
        8,
        Arc::new(|t: &pb::Task| t.stage_name == "rollout" && t.workflow_name == "us"),
    );
    let result = async {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(server.start_execution(&pipeline).await?.id);
        }
        for id in &ids {
            let status = server.wait_final(id).await?;
            ensure!(status == pb::ExecutionStatus::Failed, "4-stage execution ended {status:?}");
        }
        Ok(ids)
    }
    .await;
    // Stop the workers: the resumes below dispatch tasks nobody runs.
    workers.stop().await;
    result
}

/// Resumes every execution of `pool` from `stage_index`, with `callers`
/// concurrent callers each on its own connection, taking executions from a
/// shared queue. Latency per call and wall time of the whole series.
async fn resume_series(server: &Server, pool: Vec<String>, callers: usize, stage_index: i32) -> anyhow::Result<Series> {
    let queue = Arc::new(Mutex::new(pool));
    let mut clients = Vec::with_capacity(callers);
    for _ in 0..callers {
        clients.push(server.own_executions_client().await?);
    }
    let gate = Arc::new(tokio::sync::Barrier::new(callers + 1));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let (queue, gate) = (queue.clone(), gate.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut errors = Vec::new();
                gate.wait().await;
                loop {
                    let Some(id) = queue.lock().unwrap().pop() else { break };
                    let request = pb::ResumeRequest {
                        execution_id: id.clone(),
                        from_stage: Some(pb::resume_request::FromStage::StageIndex(stage_index)),
                        request_id: uuid::Uuid::new_v4().to_string(),
                        ..Default::default()
                    };
                    let started = Instant::now();
                    let result = client.resume(request).await;
                    let elapsed = started.elapsed();
                    match result {
                        Ok(r) => match r.into_inner().execution {
                            Some(e) if e.attempt == 2 => samples.push(elapsed),
                            other => errors.push(format!("resume of {id} returned {:?}", other.map(|e| e.attempt))),
                        },
                        Err(status) => errors.push(format!("resume of {id}: {:?} {}", status.code(), status.message())),
                    }
                }
                (samples, errors)
            })
        })
        .collect();
    let statements = server.engine.store().statements();
    let writer = server.engine.store().writer_held();
    gate.wait().await;
    let started = Instant::now();
    let mut series = Series::default();
    for t in tasks {
        let (samples, errors) = t.await?;
        series.samples.extend(samples);
        series.errors.extend(errors);
    }
    series.wall = started.elapsed();
    series.statements = server.engine.store().statements() - statements;
    series.writer = server.engine.store().writer_held().zip(writer).map(|(after, before)| after - before);
    for e in series.errors.iter().take(3) {
        eprintln!("  error: {e}");
    }
    Ok(series)
}

// ---- 4. end to end -------------------------------------------------------------

/// Original runs of a 20×4 pipeline that fail in their last stage (so every
/// stage ran), each then resumed from stage E2E_RESUME_FROM and run to
/// success: their times, and the last resumed execution.
async fn e2e(server: &Server, next: Next) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, String)> {
    let queue = queue_name();
    let stages = (0..E2E_STAGES).map(|s| workflow_stage(&format!("s{s:02}"), &queue, &names("w", E2E_WIDTH))).collect();
    let pipeline = server.create_pipeline(stages).await?;
    let originals: Arc<Mutex<HashSet<String>>> = Arc::default();
    let fail: Arc<dyn Script> = {
        let originals = originals.clone();
        let last = format!("s{:02}", E2E_STAGES - 1);
        let victim = format!("w{}", E2E_WIDTH - 1);
        Arc::new(move |t: &pb::Task| {
            t.stage_name == last && t.workflow_name == victim && originals.lock().unwrap().contains(&t.execution_id)
        })
    };
    let workers = Workers::start_with(server, &queue, E2E_SLOTS, fail, next);
    let result = async {
        let (mut original, mut resumed, mut last) = (Vec::new(), Vec::new(), String::new());
        for run in 0..=E2E_RUNS {
            let started = Instant::now();
            let request = pb::StartExecutionRequest {
                pipeline_id: pipeline.clone(),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            };
            let mut client = server.executions();
            let e = client.start_execution(request).await?.into_inner().execution.context("no execution")?;
            // Registered long before its last stage can be dispatched.
            originals.lock().unwrap().insert(e.id.clone());
            let status = server.wait_final(&e.id).await?;
            let took = started.elapsed();
            ensure!(status == pb::ExecutionStatus::Failed, "original run ended {status:?}");

            let started = Instant::now();
            let request = pb::ResumeRequest {
                execution_id: e.id.clone(),
                from_stage: Some(pb::resume_request::FromStage::StageIndex(E2E_RESUME_FROM as i32)),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            };
            let r = client.resume(request).await?.into_inner().execution.context("no execution")?;
            let status = server.wait_final(&r.id).await?;
            let took_resumed = started.elapsed();
            ensure!(status == pb::ExecutionStatus::Succeeded, "resumed run ended {status:?}");
            let done = client
                .get_execution(pb::GetExecutionRequest { execution_id: r.id.clone(), ..Default::default() })
                .await?
                .into_inner()
                .execution
                .context("no execution")?;
            let carried = done.stages.iter().filter(|s| s.carried_over).count();
            ensure!(carried == E2E_RESUME_FROM, "{carried} stages carried over, expected {E2E_RESUME_FROM}");
            if run > 0 {
                original.push(took);
                resumed.push(took_resumed);
            }
            last = r.id;
        }
        Ok((original, resumed, last))
    }
    .await;
    workers.stop().await;
    result
}

// ---- 5. GetExecution beside the no-op call, by h2load -------------------------

const READ_CALLERS: usize = 16;
const READ_REQUESTS: usize = 20_000;

struct Reads {
    noop: h2load::Load,
    basic: h2load::Load,
    full: h2load::Load,
}

/// GetExecution (BASIC and FULL) of `execution_id` and the health Check
/// (the server's cheapest call), each by h2load from 16 connections; None
/// when h2load is not installed.
async fn reads(server: &Server, execution_id: &str) -> anyhow::Result<Option<Reads>> {
    if !h2load::available() {
        eprintln!("h2load not found (Debian package nghttp2-client): GetExecution vs the no-op call skipped");
        return Ok(None);
    }
    let get =
        |view: pb::ExecutionView| pb::GetExecutionRequest { execution_id: execution_id.into(), view: view as i32 };
    // The calls must succeed for their rate to mean anything.
    for view in [pb::ExecutionView::Basic, pb::ExecutionView::Full] {
        server.executions().get_execution(get(view)).await.context("GetExecution before h2load")?;
    }
    let (address, method) = (&server.address, "/reprise.v1.ExecutionService/GetExecution");
    let noop = tonic_health::pb::HealthCheckRequest { service: String::new() };
    let run = |what: &'static str| eprintln!("  h2load: {what}, {READ_CALLERS} connections × {READ_REQUESTS} requests");
    run("health Check (warm-up)");
    h2load::unary(address, "/grpc.health.v1.Health/Check", &noop, READ_CALLERS, READ_REQUESTS / 4).await?;
    run("health Check");
    let noop = h2load::unary(address, "/grpc.health.v1.Health/Check", &noop, READ_CALLERS, READ_REQUESTS).await?;
    run("GetExecution BASIC");
    let basic = h2load::unary(address, method, &get(pb::ExecutionView::Basic), READ_CALLERS, READ_REQUESTS).await?;
    run("GetExecution FULL");
    let full = h2load::unary(address, method, &get(pb::ExecutionView::Full), READ_CALLERS, READ_REQUESTS).await?;
    Ok(Some(Reads { noop, basic, full }))
}

// ---- 3. ListHistory over a large table -------------------------------------------

/// The plans of ListHistory's two queries (the execution by id, then the
/// page of its chain), as the store issues them.
async fn plans(db: &DatabaseConnection, chain_id: &str) -> anyhow::Result<Vec<String>> {
    let backend = db.get_database_backend();
    let queries = [
        format!("SELECT * FROM executions WHERE id = '{chain_id}'"),
        format!("SELECT * FROM executions WHERE chain_id = '{chain_id}' ORDER BY attempt DESC LIMIT 51"),
        format!(
            "SELECT * FROM executions WHERE chain_id = '{chain_id}' AND attempt < 500 ORDER BY attempt DESC LIMIT 51"
        ),
    ];
    let mut out = Vec::new();
    for q in queries {
        let (sql, column) = match backend {
            DbBackend::Postgres => (format!("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) {q}"), "QUERY PLAN"),
            _ => (format!("EXPLAIN QUERY PLAN {q}"), "detail"),
        };
        out.push(q.replace(chain_id, "<id>"));
        for row in db.query_all_raw(Statement::from_string(backend, sql)).await? {
            out.push(format!("    {}", row.try_get::<String>("", column)?));
        }
    }
    Ok(out)
}

/// A small deterministic generator for picking executions.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as i64
    }
}

async fn list_history(
    client: &mut ExecutionServiceClient<Channel>,
    id: &str,
    token: String,
) -> anyhow::Result<pb::ListHistoryResponse> {
    let request = pb::ListHistoryRequest { execution_id: id.into(), page_size: HISTORY_PAGE, page_token: token };
    Ok(client.list_history(request).await?.into_inner())
}

/// ListHistory's first page for random seeded executions and for the
/// 1,000-attempt chain, and paging through that chain.
async fn history_series(server: &Server, base: i64, seeded: i64) -> anyhow::Result<HistoryReport> {
    let mut client = server.executions();
    let long_id = seeded_id(base, LONG_CHAIN - 1);

    // Sanity: the seeded long chain reads back whole.
    let page = list_history(&mut client, &long_id, String::new()).await?;
    ensure!(page.chain_id == seeded_id(base, 0), "chain id {} != {}", page.chain_id, seeded_id(base, 0));
    ensure!(page.entries.len() == HISTORY_PAGE as usize, "first page has {} entries", page.entries.len());
    ensure!(page.entries[0].attempt == LONG_CHAIN as i32, "newest attempt is {}", page.entries[0].attempt);

    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..HISTORY_WARMUP {
        list_history(&mut client, &seeded_id(base, rng.below(seeded)), String::new()).await?;
    }
    let mut random = Vec::with_capacity(HISTORY_RANDOM);
    let mut entries = 0usize;
    for _ in 0..HISTORY_RANDOM {
        let g = rng.below(seeded);
        let id = seeded_id(base, g);
        let started = Instant::now();
        let page = list_history(&mut client, &id, String::new()).await?;
        random.push(started.elapsed());
        ensure!(
            !page.entries.is_empty() && page.entries.len() as i64 <= chain_len(g),
            "seeded execution {g}: {} entries in a chain of at most {}",
            page.entries.len(),
            chain_len(g)
        );
        entries += page.entries.len();
    }

    let mut long_first = Vec::with_capacity(HISTORY_LONG);
    for _ in 0..HISTORY_LONG {
        let started = Instant::now();
        list_history(&mut client, &long_id, String::new()).await?;
        long_first.push(started.elapsed());
    }

    // The same two queries ListHistory makes (the execution, then the page of
    // its chain), in-process without gRPC: what the database part costs.
    let db = server.db();
    let history = |id: String| async move {
        let e = store::executions::get(db, &id).await?.with_context(|| format!("no execution {id}"))?;
        let page = store::executions::chain(db, &e.chain_id, None, HISTORY_PAGE as u64 + 1).await?;
        ensure!(!page.is_empty(), "empty chain of {id}");
        anyhow::Ok(())
    };
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..HISTORY_WARMUP {
        history(seeded_id(base, rng.below(seeded))).await?;
    }
    let mut random_engine = Vec::with_capacity(HISTORY_RANDOM);
    for _ in 0..HISTORY_RANDOM {
        let id = seeded_id(base, rng.below(seeded));
        let started = Instant::now();
        history(id).await?;
        random_engine.push(started.elapsed());
    }
    let mut long_first_engine = Vec::with_capacity(HISTORY_LONG);
    for _ in 0..HISTORY_LONG {
        let started = Instant::now();
        history(long_id.clone()).await?;
        long_first_engine.push(started.elapsed());
    }

    let (mut long_pages, mut long_whole) = (Vec::new(), Vec::new());
    for _ in 0..HISTORY_PAGINGS {
        let started = Instant::now();
        let (mut token, mut seen) = (String::new(), 0usize);
        loop {
            let page_started = Instant::now();
            let page = list_history(&mut client, &long_id, token).await?;
            long_pages.push(page_started.elapsed());
            seen += page.entries.len();
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        long_whole.push(started.elapsed());
        ensure!(seen == LONG_CHAIN as usize, "paging saw {seen} entries of the long chain");
    }

    Ok(HistoryReport {
        rows: 0,
        seed_time: Duration::ZERO,
        table_bytes: None,
        random,
        random_entries: entries as f64 / HISTORY_RANDOM as f64,
        long_first,
        random_engine,
        long_first_engine,
        long_pages,
        long_whole,
        plans: Vec::new(),
    })
}

// ---- the report ------------------------------------------------------------------

fn series_line(label: &str, s: &Series, floor: Duration) -> String {
    let errors = if s.errors.is_empty() { String::new() } else { format!("   {} ERRORS", s.errors.len()) };
    format!(
        "  {label:<44} {:>5}  {:>8}  {:>8}  {:>8}  {:>7.0}/s  {:>5.1}×  {:>5.1}{errors}",
        s.samples.len(),
        ms(p50(&s.samples)),
        ms(p99(&s.samples)),
        ms(max(&s.samples)),
        s.throughput(),
        ratio(p50(&s.samples), floor),
        s.statements_per_call(),
    )
}

fn print_report(reports: &[BackendReport]) {
    println!();
    println!("== Reprise Resume and ListHistory (release build; server, clients and workers share one process) ==");
    for r in reports {
        let floor = p50(&r.floor);
        println!();
        println!("--- {} ---", r.name);
        println!(
            "1. floor, single-row INSERT + COMMIT × {}:   p50 {}   p99 {}",
            r.floor.len(),
            ms(floor),
            ms(p99(&r.floor))
        );
        println!();
        println!(
            "2. Resume RPC (each on a distinct resumable execution; pools prepared in {:.1} s)",
            r.prep.as_secs_f64()
        );
        println!(
            "  {:<44} {:>5}  {:>8}  {:>8}  {:>8}  {:>9}  {:>6}  {:>5}",
            "", "calls", "p50 ms", "p99 ms", "max ms", "resumes", "p50/floor", "SQL/call"
        );
        println!("{}", series_line("REJECTED 1-stage approval, stage 0, 1 caller", &r.one, floor));
        println!("{}", series_line(&format!("  same, {CALLERS} concurrent callers"), &r.many, floor));
        if let Some(held) = r.many.writer.filter(|h| h.transactions > 0) {
            let per = |d: Duration| d.as_secs_f64() * 1e6 / held.transactions as f64;
            println!(
                "    SQLite's one writer held per unit of work: {:.0} µs (BEGIN {:.0}, COMMIT {:.0}, the rest — its \
                 statements, with them a grouped unit's SAVEPOINT and RELEASE — {:.0}): at most {:.0} units/s; \
                 {:.1} units per COMMIT",
                per(held.held),
                per(held.begin),
                per(held.commit),
                per(held.held.saturating_sub(held.begin + held.commit)),
                1e6 / per(held.held).max(1e-9),
                held.transactions as f64 / held.commits.max(1) as f64
            );
        }
        println!("{}", series_line("FAILED 4-stage, from stage 0 (1 task), 1 caller", &r.four_from_0, floor));
        println!("{}", series_line("FAILED 4-stage, from stage 2 (carry 2, 4 tasks)", &r.four_from_2, floor));
        println!(
            "{}",
            series_line(
                &format!("REJECTED approval on a {}-row table, 1 caller", rows(r.large_resume_rows)),
                &r.large_resume,
                floor
            )
        );
        println!();
        println!("3. ListHistory, page_size {HISTORY_PAGE}, through gRPC (p50 / p99)");
        let header: Vec<String> = r.history.iter().map(|h| format!("{} executions", rows(h.rows))).collect();
        println!(
            "  {:<44} {:>26} {:>26}",
            "",
            header.first().cloned().unwrap_or_default(),
            header.get(1).cloned().unwrap_or_default()
        );
        let line = |label: &str, f: &dyn Fn(&HistoryReport) -> String| {
            let cells: Vec<String> = r.history.iter().map(f).collect();
            println!(
                "  {label:<44} {:>26} {:>26}",
                cells.first().cloned().unwrap_or_default(),
                cells.get(1).cloned().unwrap_or_default()
            );
        };
        line(&format!("first page, random execution × {HISTORY_RANDOM}"), &|h| pair(&h.random));
        line("  (mean entries per page)", &|h| format!("{:.1}", h.random_entries));
        line("  same, store queries in-process (no gRPC)", &|h| pair(&h.random_engine));
        line(&format!("first page, {LONG_CHAIN}-attempt chain × {HISTORY_LONG}"), &|h| pair(&h.long_first));
        line("  same, store queries in-process (no gRPC)", &|h| pair(&h.long_first_engine));
        line(&format!("each page paging that chain ({HISTORY_PAGINGS}×20 pages)"), &|h| pair(&h.long_pages));
        line(&format!("whole chain, {} pages (p50 / max)", LONG_CHAIN / HISTORY_PAGE as i64), &|h| {
            format!("{} / {} ms", ms(p50(&h.long_whole)), ms(max(&h.long_whole)))
        });
        line("seeding time (rows added)", &|h| format!("{:.1} s", h.seed_time.as_secs_f64()));
        line("executions table + indexes", &|h| {
            h.table_bytes.map_or("?".into(), |b| format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0)))
        });
        if let (Some(a), Some(b)) = (r.history.first(), r.history.get(1)) {
            println!(
                "  growth {}→{} (p50): random first page {:.2}× (in-process {:.2}×), long chain first page {:.2}× (in-process {:.2}×)",
                rows(a.rows),
                rows(b.rows),
                ratio(p50(&b.random), p50(&a.random)),
                ratio(p50(&b.random_engine), p50(&a.random_engine)),
                ratio(p50(&b.long_first), p50(&a.long_first)),
                ratio(p50(&b.long_first_engine), p50(&a.long_first_engine)),
            );
        }
        if let Some(h) = r.history.last() {
            println!("  query plans at {} rows:", rows(h.rows));
            for line in &h.plans {
                println!("    {line}");
            }
        }
        println!();
        let (o, s) = (p50(&r.e2e_original), p50(&r.e2e_resumed));
        println!(
            "4. end to end {E2E_STAGES} stages × {E2E_WIDTH} workflows, {E2E_SLOTS} scripted gRPC worker slots, median of {E2E_RUNS} (+1 warm-up):"
        );
        println!(
            "  original run (all {E2E_STAGES} stages; fails in the last): {} ms  ({}..{})",
            ms(o),
            ms(r.e2e_original.iter().copied().min().unwrap_or_default()),
            ms(max(&r.e2e_original))
        );
        println!(
            "  resume from stage index {E2E_RESUME_FROM} (carries {E2E_RESUME_FROM}, runs {}): {} ms  ({}..{}), Resume sent → SUCCEEDED",
            E2E_STAGES - E2E_RESUME_FROM,
            ms(s),
            ms(r.e2e_resumed.iter().copied().min().unwrap_or_default()),
            ms(max(&r.e2e_resumed))
        );
        println!(
            "  resumed / original: {:.2} (stages run: {:.2}); per stage run: original {} ms, resumed {} ms",
            ratio(s, o),
            (E2E_STAGES - E2E_RESUME_FROM) as f64 / E2E_STAGES as f64,
            ms(o / E2E_STAGES as u32),
            ms(s / (E2E_STAGES - E2E_RESUME_FROM) as u32),
        );
        println!(
            "  (workers above ask for their next task with each report; workers that only poll: original {} ms, resumed {} ms ({}..{}))",
            ms(p50(&r.e2e_polled_original)),
            ms(p50(&r.e2e_polled_resumed)),
            ms(r.e2e_polled_resumed.iter().copied().min().unwrap_or_default()),
            ms(max(&r.e2e_polled_resumed))
        );
        println!();
        match &r.reads {
            None => println!(
                "5. GetExecution vs the no-op call: skipped (h2load not installed; apt-get install nghttp2-client)"
            ),
            Some(reads) => {
                println!(
                    "5. h2load, {READ_CALLERS} connections, one call in flight each, {READ_REQUESTS} calls (target: GetExecution ≥ 25% of the no-op):"
                );
                let line = |label: &str, l: &h2load::Load| {
                    println!(
                        "  {label:<44} {:>8.0}/s  {:>6.0} bytes/answer  {:>5.1}% of the no-op",
                        l.per_second,
                        l.bytes_per_response,
                        100.0 * l.per_second / reads.noop.per_second
                    )
                };
                line("no-op: grpc.health.v1.Health/Check", &reads.noop);
                line("GetExecution of the resumed 20×4, BASIC", &reads.basic);
                line("GetExecution of the resumed 20×4, FULL", &reads.full);
            }
        }
    }
    if reports.len() > 1 {
        println!();
        println!("--- side by side ---");
        println!("  {:<52} {}", "", reports.iter().map(|r| format!("{:>22}", r.name)).collect::<String>());
        let line = |label: &str, f: &dyn Fn(&BackendReport) -> String| {
            println!("  {label:<52} {}", reports.iter().map(|r| format!("{:>22}", f(r))).collect::<String>());
        };
        line("floor INSERT+COMMIT p50 / p99", &|r| pair(&r.floor));
        line("Resume, 1 caller p50 / p99", &|r| pair(&r.one.samples));
        line("Resume, 1 caller throughput", &|r| format!("{:.0}/s", r.one.throughput()));
        line(&format!("Resume, {CALLERS} callers p50 / p99"), &|r| pair(&r.many.samples));
        line(&format!("Resume, {CALLERS} callers throughput"), &|r| format!("{:.0}/s", r.many.throughput()));
        for (i, label) in
            ["ListHistory first page @10k p50 / p99", "ListHistory first page @1M p50 / p99"].iter().enumerate()
        {
            line(label, &|r| r.history.get(i).map_or("-".into(), |h| pair(&h.random)));
        }
        line("1000-chain first page @10k / @1M p50", &|r| {
            format!(
                "{} / {} ms",
                r.history.first().map_or("-".into(), |h| ms(p50(&h.long_first))),
                r.history.get(1).map_or("-".into(), |h| ms(p50(&h.long_first)))
            )
        });
        for (i, label) in ["  in-process @10k p50 / p99", "  in-process @1M p50 / p99"].iter().enumerate() {
            line(label, &|r| r.history.get(i).map_or("-".into(), |h| pair(&h.random_engine)));
        }
        line("seeding 1M rows (10k + 990k)", &|r| {
            format!("{:.1} s", r.history.iter().map(|h| h.seed_time.as_secs_f64()).sum::<f64>())
        });
        line("GetExecution 20×4 BASIC ÷ no-op (h2load)", &|r| {
            r.reads.as_ref().map_or("-".into(), |x| format!("{:.0}%", 100.0 * x.basic.per_second / x.noop.per_second))
        });
        line("e2e 20×4: original / resumed from 10", &|r| {
            format!("{} / {} ms", ms(p50(&r.e2e_original)), ms(p50(&r.e2e_resumed)))
        });
        line("  the same, workers that only poll", &|r| {
            format!("{} / {} ms", ms(p50(&r.e2e_polled_original)), ms(p50(&r.e2e_polled_resumed)))
        });
    }
}
