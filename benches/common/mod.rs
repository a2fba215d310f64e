//! What both benchmarks need: a throw-away database per backend, the
//! one-commit floor, an in-process server, and percentiles for the report.

#![allow(dead_code)] // each bench uses its own subset

pub mod h2load;
pub mod seed;
pub mod workers;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use reprise::{
    engine::{Engine, Settings},
    proto::{
        self as pb, execution_service_client::ExecutionServiceClient, pipeline_service_client::PipelineServiceClient,
        worker_service_client::WorkerServiceClient,
    },
    server::ServeOptions,
    store::Store,
};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const POSTGRES_ENV: &str = "REPRISE_TEST_POSTGRES_URL";

pub const FLOOR_WARMUP: usize = 50;
pub const FLOOR_ITERATIONS: usize = 1000;

#[derive(Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// The backends a run measures: SQLite, and PostgreSQL when
    /// `REPRISE_TEST_POSTGRES_URL` is set (saying so when it is not).
    /// `REPRISE_BENCH_ONLY=sqlite|postgres` narrows it, for trying a change.
    pub fn all() -> Vec<Backend> {
        let only = std::env::var("REPRISE_BENCH_ONLY").unwrap_or_default();
        let mut backends = Vec::new();
        if only != "postgres" {
            backends.push(Backend::Sqlite);
        }
        match std::env::var(POSTGRES_ENV) {
            Ok(url) if only != "sqlite" => backends.push(Backend::Postgres(url)),
            Ok(_) => {}
            Err(_) => eprintln!("PostgreSQL skipped: set {POSTGRES_ENV}=postgres://user@host:port/db to include it"),
        }
        if !only.is_empty() {
            eprintln!("REPRISE_BENCH_ONLY={only}: the other backend is not measured");
        }
        backends
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// Runs `bench` on each of [`Backend::all`]: a failure on SQLite ends the
/// run; one on PostgreSQL is reported and its figures left out.
pub async fn on_each_backend<R, Fut>(mut bench: impl FnMut(Backend) -> Fut) -> anyhow::Result<Vec<R>>
where
    Fut: std::future::Future<Output = anyhow::Result<R>>,
{
    let mut reports = Vec::new();
    for backend in Backend::all() {
        match backend {
            Backend::Sqlite => reports.push(bench(backend).await?),
            Backend::Postgres(_) => match bench(backend).await {
                Ok(report) => reports.push(report),
                Err(e) => eprintln!("PostgreSQL bench failed: {e:#}"),
            },
        }
    }
    Ok(reports)
}

/// A database that exists for the bench only.
pub enum BenchDb {
    Sqlite { _dir: tempfile::TempDir, url: String },
    Postgres { admin_url: String, name: String, url: String },
}

impl BenchDb {
    pub async fn create(backend: &Backend) -> anyhow::Result<BenchDb> {
        Ok(match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("reprise-bench.db").display());
                BenchDb::Sqlite { _dir: dir, url }
            }
            Backend::Postgres(admin_url) => {
                let name = format!("reprise_bench_{}_{}", unix_seconds(), uuid::Uuid::new_v4().simple());
                let admin = Database::connect(admin_url.as_str())
                    .await
                    .with_context(|| format!("connecting to PostgreSQL at {POSTGRES_ENV}"))?;
                drop_leftovers(&admin).await;
                admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.context("create bench database")?;
                admin.close().await.ok();
                let url = replace_database(admin_url, &name);
                BenchDb::Postgres { admin_url: admin_url.clone(), name, url }
            }
        })
    }

    pub fn url(&self) -> &str {
        match self {
            BenchDb::Sqlite { url, .. } | BenchDb::Postgres { url, .. } => url,
        }
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Drops the databases of bench runs that were killed before they could
/// (no session on them, created over an hour ago, or named before names
/// carried the time). A running bench always holds a session on its own.
async fn drop_leftovers(admin: &sea_orm::DatabaseConnection) {
    let sql = "SELECT d.datname AS name FROM pg_database d WHERE d.datname LIKE 'reprise\\_bench\\_%' \
               AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)";
    let Ok(rows) = admin.query_all_raw(Statement::from_string(DbBackend::Postgres, sql)).await else { return };
    let hour_ago = unix_seconds().saturating_sub(3600);
    for row in rows {
        let Ok(name) = row.try_get::<String>("", "name") else { continue };
        let created = name.strip_prefix("reprise_bench_").and_then(|r| r.split('_').next()?.parse::<u64>().ok());
        if created.is_some_and(|at| at > hour_ago) {
            continue;
        }
        if admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}")).await.is_ok() {
            eprintln!("dropped {name}, left behind by a bench run that was stopped");
        }
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let BenchDb::Postgres { admin_url, name, .. } = self {
            let (admin_url, db_name) = (admin_url.clone(), name.clone());
            // Drop may run inside the runtime, which must not block: use a thread.
            let dropped = std::thread::spawn(move || {
                let name = db_name;
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                rt.block_on(async {
                    let admin = Database::connect(admin_url.as_str()).await.ok()?;
                    let r = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                    admin.close().await.ok();
                    r.ok()
                })
            })
            .join();
            if !matches!(dropped, Ok(Some(_))) {
                eprintln!("warning: could not drop bench database {name}; drop it by hand");
            }
        }
    }
}

pub fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// One single-row INSERT + COMMIT per transaction, on a scratch table,
/// through the store's own write transaction (the SQLite writer connection,
/// a pooled PostgreSQL one): the cheapest durable write the engine can do.
pub async fn floor(store: &Store) -> anyhow::Result<Vec<Duration>> {
    floor_paced(store, None, FLOOR_ITERATIONS).await
}

/// [`floor`], `iterations` times, each after `pause` if given: a write
/// that starts from a quiet process, as a bench's measured call does after
/// a settle pause (waking idle threads and cores costs some of its time).
pub async fn floor_paced(store: &Store, pause: Option<Duration>, iterations: usize) -> anyhow::Result<Vec<Duration>> {
    let db = store.connection();
    let backend = db.get_database_backend();
    db.execute_unprepared("DROP TABLE IF EXISTS bench_floor").await?;
    db.execute_unprepared("CREATE TABLE bench_floor (id BIGINT PRIMARY KEY, payload TEXT NOT NULL)").await?;
    let sql = match backend {
        DbBackend::Postgres => "INSERT INTO bench_floor (id, payload) VALUES ($1, $2)",
        _ => "INSERT INTO bench_floor (id, payload) VALUES (?, ?)",
    };
    let payload = "x".repeat(64);
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..FLOOR_WARMUP + iterations {
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
        let started = Instant::now();
        let txn = store.write().await?;
        txn.execute_raw(Statement::from_sql_and_values(backend, sql, [(i as i64).into(), payload.clone().into()]))
            .await?;
        txn.commit().await?;
        if i >= FLOOR_WARMUP {
            samples.push(started.elapsed());
        }
    }
    db.execute_unprepared("DROP TABLE bench_floor").await?;
    Ok(samples)
}

/// The settings bench servers run with unless a bench says otherwise.
pub fn bench_settings() -> Settings {
    Settings { lease: Duration::from_secs(30), recheck: Duration::from_secs(1), ..Settings::default() }
}

pub struct Server {
    pub engine: Engine,
    pub address: String,
    pub channel: Channel,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub async fn start(db: Store) -> anyhow::Result<Server> {
        Self::start_with(db, bench_settings(), ServeOptions::default()).await
    }

    /// A server with its own settings and serving options (limits, metrics).
    pub async fn start_with(db: Store, settings: Settings, options: ServeOptions) -> anyhow::Result<Server> {
        let engine = Engine::new(db, settings);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(reprise::server::serve_with(listener, engine.clone(), options, shutdown.clone()));
        let channel = Channel::from_shared(address.clone())?.connect().await?;
        Ok(Server { engine, address, channel, shutdown, handle })
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(10), self.handle).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("warning: server ended with an error: {e:#}"),
            Ok(Err(e)) => eprintln!("warning: server task failed: {e}"),
            Err(_) => eprintln!("warning: server did not stop within 10 s"),
        }
        drop(self.channel);
        self.engine.store().close().await;
    }

    pub fn workers(&self) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::new(self.channel.clone())
    }
}

/// The environment every bench stage targets (NON_PROD).
pub fn environment() -> Option<pb::Environment> {
    Some(pb::Environment { name: "bench".into(), r#type: pb::EnvironmentType::NonProd as i32 })
}

/// A stage of no-op workflows (`true`) named `workflows`, all on `queue`.
pub fn workflow_stage(name: &str, queue: &str, workflows: &[String]) -> pb::Stage {
    pb::Stage {
        name: name.into(),
        environment: environment(),
        skip_condition: None,
        kind: Some(pb::stage::Kind::Workflows(pb::WorkflowStage {
            workflows: workflows
                .iter()
                .map(|w| pb::Workflow {
                    name: w.clone(),
                    task_queue: queue.into(),
                    command: "true".into(),
                    timeout: None,
                    max_attempts: 0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })),
    }
}

/// An approval stage that waits a day.
pub fn approval_stage(name: &str) -> pb::Stage {
    pb::Stage {
        name: name.into(),
        environment: environment(),
        skip_condition: None,
        kind: Some(pb::stage::Kind::Approval(pb::ApprovalStage {
            timeout: Some(prost_types::Duration { seconds: 24 * 3600, nanos: 0 }),
            instructions: "bench".into(),
        })),
    }
}

/// `prefix0`, `prefix1`, … `prefix{n-1}`.
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Creates a pipeline (application "bench", a fresh name) over gRPC; its id.
pub async fn create_pipeline(channel: &Channel, stages: Vec<pb::Stage>) -> anyhow::Result<String> {
    let request = pb::CreatePipelineRequest {
        application: "bench".into(),
        name: format!("bench-{}", uuid::Uuid::new_v4().simple()),
        definition: Some(pb::PipelineDefinition { stages, ..Default::default() }),
    };
    let pipeline = PipelineServiceClient::new(channel.clone())
        .create_pipeline(request)
        .await?
        .into_inner()
        .pipeline
        .context("no pipeline in the response")?;
    Ok(pipeline.id)
}

/// Starts an execution of `pipeline_id` with a fresh request id; its id.
pub async fn start_execution(channel: &Channel, pipeline_id: &str) -> anyhow::Result<String> {
    let request = pb::StartExecutionRequest {
        pipeline_id: pipeline_id.into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let execution = ExecutionServiceClient::new(channel.clone())
        .start_execution(request)
        .await?
        .into_inner()
        .execution
        .context("no execution in the response")?;
    Ok(execution.id)
}

pub fn is_final(status: pb::ExecutionStatus) -> bool {
    use pb::ExecutionStatus as S;
    matches!(status, S::Succeeded | S::Failed | S::Aborted | S::Expired | S::Rejected)
}

pub fn queue_name() -> String {
    format!("bench-{}", uuid::Uuid::new_v4().simple())
}

pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

pub fn p50(s: &[Duration]) -> Duration {
    percentile(s, 50.0)
}

pub fn p99(s: &[Duration]) -> Duration {
    percentile(s, 99.0)
}

pub fn max(s: &[Duration]) -> Duration {
    s.iter().copied().max().unwrap_or_default()
}

pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v < 1.0 {
        format!("{v:.3}")
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

pub fn pair(s: &[Duration]) -> String {
    format!("{} / {} ms", ms(p50(s)), ms(p99(s)))
}

pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// Resident memory (VmRSS) in KiB of process `pid`, or of this one (None).
pub fn rss_kib(pid: Option<u32>) -> anyhow::Result<u64> {
    let path = pid.map_or("/proc/self/status".to_owned(), |pid| format!("/proc/{pid}/status"));
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// Gives this process's free heap pages back to the system, as the server
/// does every few seconds (`reprise::memory::trim`); false where the
/// allocator cannot (not glibc).
pub fn trim() -> bool {
    reprise::memory::trim();
    cfg!(all(target_os = "linux", target_env = "gnu"))
}

/// KiB as MiB, one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
