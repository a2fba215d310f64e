//! The test harness: a real server on 127.0.0.1:0 over a fresh database
//! (a temp SQLite file, or a fresh PostgreSQL database when
//! `REPRISE_TEST_POSTGRES_URL` is set), generated clients, and scripted
//! workers that really poll the WorkerService.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use reprise::{
    engine::{Engine, Settings},
    proto::{
        self as pb, execution_service_client::ExecutionServiceClient, pipeline_service_client::PipelineServiceClient,
        worker_service_client::WorkerServiceClient,
    },
    store,
};
use sea_orm::{ConnectionTrait, Database};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The environment variable naming a PostgreSQL server for the tests.
pub const POSTGRES_ENV: &str = "REPRISE_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Defines each listed test twice, once per backend. The PostgreSQL variant
/// passes with a notice when the variable is unset, unless
/// `REPRISE_TEST_REQUIRE_POSTGRES` is set (CI), where it fails.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    if let Some(app) = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await {
                        super::$test(app).await;
                    }
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    if let Some(app) = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await {
                        super::$test(app).await;
                    }
                }
            )+
        }
    };
}

/// A database that exists for one test.
enum TestDb {
    Sqlite { _dir: tempfile::TempDir, url: String },
    Postgres { admin_url: String, name: String, url: String },
}

impl TestDb {
    async fn create(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("reprise.db").display());
                Some(TestDb::Sqlite { _dir: dir, url })
            }
            Backend::Postgres => {
                let Ok(admin_url) = std::env::var(POSTGRES_ENV) else {
                    if std::env::var("REPRISE_TEST_REQUIRE_POSTGRES").is_ok() {
                        panic!(
                            "{POSTGRES_ENV} is not set but REPRISE_TEST_REQUIRE_POSTGRES is: refusing to skip PostgreSQL"
                        );
                    }
                    eprintln!("skipped: set {POSTGRES_ENV} to run this test on PostgreSQL");
                    return None;
                };
                let name = format!("reprise_t_{}", uuid::Uuid::new_v4().simple());
                let admin =
                    Database::connect(&admin_url).await.expect("PostgreSQL reachable at REPRISE_TEST_POSTGRES_URL");
                admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
                admin.close().await.ok();
                let url = replace_database(&admin_url, &name);
                Some(TestDb::Postgres { admin_url, name, url })
            }
        }
    }

    fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin_url, name, .. } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs outside any runtime we may block, so use a thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                rt.block_on(async {
                    let admin = Database::connect(&admin_url).await.ok()?;
                    admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.ok()?;
                    admin.close().await.ok()
                })
            })
            .join();
        }
    }
}

fn replace_database(url: &str, name: &str) -> String {
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

/// Engine settings for tests: short leases so expiry tests run in seconds.
pub fn test_settings() -> Settings {
    let sealer = reprise::engine::secrets::Sealer::from_key(&[7u8; 32]).expect("a 32-byte key");
    Settings {
        lease: Duration::from_millis(1500),
        recheck: Duration::from_millis(200),
        secrets: Some(Arc::new(sealer)),
        ..Settings::default()
    }
}

/// A running server with clients.
pub struct TestApp {
    pub backend: Backend,
    pub address: String,
    pub channel: Channel,
    pub pipelines: PipelineServiceClient<Channel>,
    pub executions: ExecutionServiceClient<Channel>,
    pub workers: WorkerServiceClient<Channel>,
    pub engine: Engine,
    settings: Settings,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    db: Option<TestDb>,
    db_url: String,
}

impl TestApp {
    /// A server on a fresh database; None when the backend is not configured.
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, test_settings()).await
    }

    pub async fn spawn_with(backend: Backend, settings: Settings) -> Option<TestApp> {
        // REPRISE_TEST_LOG=debug (or any filter) shows the server's log.
        if let Ok(filter) = std::env::var("REPRISE_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let db = TestDb::create(backend).await?;
        Some(Self::boot(backend, db, settings).await)
    }

    async fn boot(backend: Backend, db: TestDb, settings: Settings) -> TestApp {
        let mut app = Self::serve(backend, db.url(), settings).await;
        app.db = Some(db);
        app
    }

    /// Another server process on the same database, as a second replica.
    pub async fn replica(&self, settings: Settings) -> TestApp {
        Self::serve(self.backend, &self.db_url, settings).await
    }

    /// A server on a database the test manages itself (a private instance).
    pub async fn on_url(backend: Backend, db_url: &str, settings: Settings) -> TestApp {
        Self::serve(backend, db_url, settings).await
    }

    async fn serve(backend: Backend, db_url: &str, settings: Settings) -> TestApp {
        Self::serve_on(backend, db_url, settings, "127.0.0.1:0").await
    }

    async fn serve_on(backend: Backend, db_url: &str, settings: Settings, bind: &str) -> TestApp {
        let conn = store::connect(db_url).await.expect("connect and migrate");
        let engine = Engine::new(conn, settings.clone());
        let listener = TcpListener::bind(bind).await.expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn({
            let (engine, shutdown) = (engine.clone(), shutdown.clone());
            async move { reprise::server::serve(listener, engine, shutdown).await.expect("server failed") }
        });
        let channel = Channel::from_shared(address.clone()).expect("uri").connect().await.expect("connect");
        TestApp {
            backend,
            pipelines: PipelineServiceClient::new(channel.clone()),
            executions: ExecutionServiceClient::new(channel.clone()),
            workers: WorkerServiceClient::new(channel.clone()),
            channel,
            address,
            engine,
            settings,
            shutdown,
            server: Some(server),
            db: None,
            db_url: db_url.to_owned(),
        }
    }

    /// Another server on the same database with authentication and TLS as
    /// given; returns its address (host:port) and the engine behind it. It
    /// stops when the returned token is cancelled or the app is dropped.
    pub async fn secured(&self, options: reprise::server::ServeOptions) -> (String, Engine, CancellationToken) {
        // The same engine (one process per SQLite file), served a second time.
        let engine = self.engine.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let stop = self.shutdown.child_token();
        tokio::spawn({
            let (engine, stop) = (engine.clone(), stop.clone());
            async move { reprise::server::serve_with(listener, engine, options, stop).await.expect("server failed") }
        });
        (address, engine, stop)
    }

    /// Stops the server gracefully and starts a new one on the same database,
    /// as an operator restarting the process would.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        self.engine.store().close().await;
        let db = self.db.take().expect("database");
        Self::boot(self.backend, db, self.settings.clone()).await
    }

    /// Like [`TestApp::restart`], but the new server listens on the same
    /// address, as a restarted process or a rolled-out pod behind one
    /// Service does: clients that reconnect find it there. `down` is how
    /// long nothing listens in between.
    pub async fn restart_in_place(mut self, down: Duration) -> TestApp {
        let bind = self.address.trim_start_matches("http://").to_owned();
        self.stop().await;
        self.engine.store().close().await;
        tokio::time::sleep(down).await;
        let db = self.db.take().expect("database");
        let mut app = Self::serve_on(self.backend, db.url(), self.settings.clone(), &bind).await;
        app.db = Some(db);
        app
    }

    /// The URL of the test's database (for servers started as processes).
    pub fn db_url(&self) -> &str {
        &self.db_url
    }

    /// Restarts on the same database with other engine settings.
    pub async fn restart_with(mut self, settings: Settings) -> TestApp {
        self.settings = settings;
        self.restart().await
    }

    /// Stops the server; the database stays until the app is dropped.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
    }

    pub async fn create_pipeline(&self, name: &str, stages: Vec<pb::Stage>) -> pb::Pipeline {
        self.create_pipeline_with(name, vec![], stages).await
    }

    pub async fn create_pipeline_with(
        &self,
        name: &str,
        variables: Vec<pb::Variable>,
        stages: Vec<pb::Stage>,
    ) -> pb::Pipeline {
        let request = pb::CreatePipelineRequest {
            application: "shop".into(),
            name: name.into(),
            definition: Some(pb::PipelineDefinition { description: String::new(), variables, stages }),
        };
        self.pipelines
            .clone()
            .create_pipeline(request)
            .await
            .expect("create pipeline")
            .into_inner()
            .pipeline
            .expect("pipeline")
    }

    pub async fn start(&self, pipeline_id: &str) -> pb::Execution {
        self.start_with(pipeline_id, &[]).await
    }

    pub async fn start_with(&self, pipeline_id: &str, variables: &[(&str, &str)]) -> pb::Execution {
        let request = pb::StartExecutionRequest {
            pipeline_id: pipeline_id.into(),
            variables: variables.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        self.executions
            .clone()
            .start_execution(request)
            .await
            .expect("start")
            .into_inner()
            .execution
            .expect("execution")
    }

    pub async fn get(&self, id: &str) -> pb::Execution {
        let request = pb::GetExecutionRequest { execution_id: id.into(), ..Default::default() };
        self.executions.clone().get_execution(request).await.expect("get").into_inner().execution.expect("execution")
    }

    /// Follows WatchExecution until the execution reaches a final state,
    /// then reads it whole (the FULL view: every output the server keeps).
    pub async fn wait_final(&self, id: &str) -> pb::Execution {
        self.wait_until(id, |e| is_final(e.status)).await;
        self.get_full(id).await
    }

    /// Follows WatchExecution until the stage named "gate" waits for approval.
    pub async fn at_gate(&self, id: &str) {
        self.wait_until(id, |e| stage_status(e, "gate") == pb::StageStatus::WaitingApproval).await;
    }

    /// The `n` column of a `SELECT count(*) AS n …` run on the test's database.
    pub async fn sql_count(&self, sql: &str) -> i64 {
        use sea_orm::ConnectionTrait as _;
        let db = self.engine.store().connection();
        let statement = sea_orm::Statement::from_string(db.get_database_backend(), sql);
        let row = db.query_one_raw(statement).await.unwrap().expect("a row");
        row.try_get::<i64>("", "n").unwrap()
    }

    /// GetExecution in the FULL view.
    pub async fn get_full(&self, id: &str) -> pb::Execution {
        let request = pb::GetExecutionRequest { execution_id: id.into(), view: pb::ExecutionView::Full as i32 };
        self.executions.clone().get_execution(request).await.expect("get").into_inner().execution.expect("execution")
    }

    /// Follows WatchExecution until `done` holds; fails after 30 s.
    pub async fn wait_until(&self, id: &str, done: impl Fn(&pb::Execution) -> bool) -> pb::Execution {
        let watch = async {
            let request = pb::WatchExecutionRequest { execution_id: id.into() };
            let mut stream = self.executions.clone().watch_execution(request).await.expect("watch").into_inner();
            let mut last = None;
            while let Some(item) = stream.next().await {
                let execution = item.expect("watch item").execution.expect("execution");
                if done(&execution) {
                    return execution;
                }
                last = Some(execution);
            }
            panic!("watch ended before the condition held; last seen: {last:#?}");
        };
        tokio::time::timeout(Duration::from_secs(30), watch).await.expect("condition not reached within 30 s")
    }

    /// A worker that polls `queue` and answers each task with `script`.
    pub fn worker(&self, queue: &str, script: impl Fn(&pb::Task) -> Script + Send + Sync + 'static) -> TestWorker {
        TestWorker::start(self.workers.clone(), queue, Arc::new(script))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `check` (state a test worker or process leaves) until it holds; fails after 10 s.
pub async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: did not happen within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn is_final(status: i32) -> bool {
    use pb::ExecutionStatus as S;
    [S::Succeeded, S::Failed, S::Aborted, S::Expired, S::Rejected].iter().any(|s| *s as i32 == status)
}

/// What a scripted worker does with a task.
#[derive(Debug, Clone)]
pub enum Script {
    /// Wait this long (heartbeating), then report success.
    Succeed(Duration),
    /// Wait this long, then report failure.
    Fail(Duration),
    /// Take the task and never report or heartbeat (a worker that died).
    Vanish,
    /// Heartbeat until the server says cancelled, never report.
    RunUntilCancelled,
}

/// What a scripted worker saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub tasks: Vec<pb::Task>,
    pub running: usize,
    pub max_running: usize,
    pub cancelled: Vec<String>,
    pub refused: Vec<tonic::Status>,
}

/// A worker that really polls the WorkerService and follows a script.
pub struct TestWorker {
    pub seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
}

pub type ScriptFn = Arc<dyn Fn(&pb::Task) -> Script + Send + Sync>;

impl TestWorker {
    pub fn start(client: WorkerServiceClient<Channel>, queue: &str, script: ScriptFn) -> TestWorker {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = CancellationToken::new();
        let queue = queue.to_owned();
        tokio::spawn({
            let (seen, stop) = (seen.clone(), stop.clone());
            async move {
                loop {
                    let request = pb::PollTaskRequest {
                        task_queue: queue.clone(),
                        worker_id: "test-worker".into(),
                        wait: Some(prost_types::Duration { seconds: 5, nanos: 0 }),
                    };
                    let mut poller = client.clone();
                    let polled = tokio::select! {
                        r = poller.poll_task(request) => r,
                        _ = stop.cancelled() => return,
                    };
                    let Ok(response) = polled else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let Some(task) = response.into_inner().task else { continue };
                    seen.lock().unwrap().tasks.push(task.clone());
                    let script = script(&task);
                    tokio::spawn(run_task(client.clone(), task, script, seen.clone()));
                }
            }
        });
        TestWorker { seen, stop }
    }

    pub fn task_count(&self) -> usize {
        self.seen.lock().unwrap().tasks.len()
    }

    /// How many tasks each (stage, workflow) pair was handed out.
    pub fn counts(&self) -> HashMap<(String, String), usize> {
        let mut out = HashMap::new();
        for t in &self.seen.lock().unwrap().tasks {
            *out.entry((t.stage_name.clone(), t.workflow_name.clone())).or_default() += 1;
        }
        out
    }

    pub fn max_running(&self) -> usize {
        self.seen.lock().unwrap().max_running
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn run_task(mut client: WorkerServiceClient<Channel>, task: pb::Task, script: Script, seen: Arc<Mutex<Seen>>) {
    {
        let mut s = seen.lock().unwrap();
        s.running += 1;
        s.max_running = s.max_running.max(s.running);
    }
    let outcome = match script {
        Script::Vanish => None,
        Script::RunUntilCancelled => {
            heartbeat_for(&mut client, &task, Duration::from_secs(60), &seen).await;
            None
        }
        Script::Succeed(d) => heartbeat_for(&mut client, &task, d, &seen).await.then_some(pb::TaskOutcome::Succeeded),
        Script::Fail(d) => heartbeat_for(&mut client, &task, d, &seen).await.then_some(pb::TaskOutcome::Failed),
    };
    seen.lock().unwrap().running -= 1;
    if let Some(outcome) = outcome {
        let request = pb::CompleteTaskRequest {
            task_id: task.task_id.clone(),
            lease_token: task.lease_token.clone(),
            outcome: outcome as i32,
            exit_code: if outcome == pb::TaskOutcome::Succeeded { 0 } else { 1 },
            output: format!("{} attempt {}", task.workflow_name, task.attempt),
            message: String::new(),
            output_offset: None,
            ..Default::default()
        };
        if let Err(status) = client.complete_task(request).await {
            seen.lock().unwrap().refused.push(status);
        }
    }
}

/// Heartbeats for `d`; false if the task was cancelled or the lease lost.
async fn heartbeat_for(
    client: &mut WorkerServiceClient<Channel>,
    task: &pb::Task,
    d: Duration,
    seen: &Arc<Mutex<Seen>>,
) -> bool {
    let end = tokio::time::Instant::now() + d;
    loop {
        let now = tokio::time::Instant::now();
        if now >= end {
            return true;
        }
        tokio::time::sleep((end - now).min(Duration::from_millis(300))).await;
        let request = pb::HeartbeatRequest {
            task_id: task.task_id.clone(),
            lease_token: task.lease_token.clone(),
            ..Default::default()
        };
        match client.heartbeat(request).await {
            Ok(r) if r.get_ref().cancelled => {
                seen.lock().unwrap().cancelled.push(task.workflow_name.clone());
                return false;
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

// ---- pipeline builders -------------------------------------------------

pub fn env(kind: pb::EnvironmentType) -> Option<pb::Environment> {
    Some(pb::Environment { name: "env".into(), r#type: kind as i32 })
}

/// A workflow stage of parallel workflows on queue `queue`.
pub fn workflows(name: &str, queue: &str, workflows: &[&str]) -> pb::Stage {
    pb::Stage {
        name: name.into(),
        environment: env(pb::EnvironmentType::NonProd),
        skip_condition: None,
        kind: Some(pb::stage::Kind::Workflows(pb::WorkflowStage {
            workflows: workflows
                .iter()
                .map(|w| pb::Workflow {
                    name: w.to_string(),
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

pub fn approval(name: &str, timeout: Duration) -> pb::Stage {
    pb::Stage {
        name: name.into(),
        environment: env(pb::EnvironmentType::Prod),
        skip_condition: None,
        kind: Some(pb::stage::Kind::Approval(pb::ApprovalStage {
            timeout: prost_types::Duration::try_from(timeout).ok(),
            instructions: "look at the canary".into(),
        })),
    }
}

/// Sets every workflow's timeout and max attempts in a stage.
pub fn with_limits(mut stage: pb::Stage, timeout: Duration, max_attempts: i32) -> pb::Stage {
    if let Some(pb::stage::Kind::Workflows(w)) = &mut stage.kind {
        for w in &mut w.workflows {
            w.timeout = prost_types::Duration::try_from(timeout).ok();
            w.max_attempts = max_attempts;
        }
    }
    stage
}

pub fn skip_when(mut stage: pb::Stage, expression: &str) -> pb::Stage {
    stage.skip_condition =
        Some(pb::SkipCondition { condition: Some(pb::skip_condition::Condition::Expression(expression.into())) });
    stage
}

pub fn stage_status(e: &pb::Execution, name: &str) -> pb::StageStatus {
    let stage = e.stages.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no stage {name}"));
    pb::StageStatus::try_from(stage.status).expect("stage status")
}

pub fn status(e: &pb::Execution) -> pb::ExecutionStatus {
    pb::ExecutionStatus::try_from(e.status).expect("status")
}

/// A unique queue name per test, so workers of parallel tests never mix.
pub fn queue() -> String {
    format!("q-{}", uuid::Uuid::new_v4().simple())
}

// ---- direct worker calls and error details (workers, requests, durability) ----

/// One PollTask on `queue` that waits up to `wait`; None when no task came.
pub async fn poll_once(mut client: WorkerServiceClient<Channel>, queue: String, wait: Duration) -> Option<pb::Task> {
    let request = pb::PollTaskRequest {
        task_queue: queue,
        worker_id: "direct-caller".into(),
        wait: prost_types::Duration::try_from(wait).ok(),
    };
    client.poll_task(request).await.expect("poll").into_inner().task
}

/// CompleteTask under `lease_token`, reporting `outcome` with `output`.
pub async fn complete_task(
    client: &WorkerServiceClient<Channel>,
    task_id: &str,
    lease_token: &str,
    outcome: pb::TaskOutcome,
    output: &str,
) -> Result<pb::CompleteTaskResponse, tonic::Status> {
    let request = pb::CompleteTaskRequest {
        task_id: task_id.into(),
        lease_token: lease_token.into(),
        outcome: outcome as i32,
        exit_code: if outcome == pb::TaskOutcome::Succeeded { 0 } else { 1 },
        output: output.into(),
        message: String::new(),
        output_offset: None,
        ..Default::default()
    };
    client.clone().complete_task(request).await.map(tonic::Response::into_inner)
}

/// Resume of execution `id` from the stage named `stage`, under a new request id.
pub fn resume_request(id: &str, stage: &str) -> pb::ResumeRequest {
    pb::ResumeRequest {
        execution_id: id.into(),
        from_stage: Some(pb::resume_request::FromStage::StageName(stage.into())),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    }
}

/// CompleteTask of `task`, succeeded, with `output` that begins `offset`
/// characters into what the worker sent.
pub fn succeeded_from(task: &pb::Task, output: &str, offset: i64) -> pb::CompleteTaskRequest {
    pb::CompleteTaskRequest {
        task_id: task.task_id.clone(),
        lease_token: task.lease_token.clone(),
        outcome: pb::TaskOutcome::Succeeded as i32,
        output: output.into(),
        output_offset: Some(offset),
        ..Default::default()
    }
}

/// Heartbeat under `lease_token`.
pub async fn heartbeat(
    client: &WorkerServiceClient<Channel>,
    task_id: &str,
    lease_token: &str,
) -> Result<pb::HeartbeatResponse, tonic::Status> {
    let request =
        pb::HeartbeatRequest { task_id: task_id.into(), lease_token: lease_token.into(), ..Default::default() };
    client.clone().heartbeat(request).await.map(tonic::Response::into_inner)
}

/// The fields named by the BadRequest detail of `status`.
pub fn bad_request_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// Asserts `result` is INVALID_ARGUMENT with a BadRequest detail naming `field`
/// (and the message naming it too); returns the status.
#[track_caller]
pub fn assert_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) -> tonic::Status {
    let status = result.expect_err(&format!("expected INVALID_ARGUMENT naming {field}"));
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}: {status:?}");
    let fields = bad_request_fields(&status);
    assert!(fields.iter().any(|f| f == field), "BadRequest should name {field:?}, names {fields:?}: {status:?}");
    assert!(status.message().contains(field), "message should name {field:?}: {:?}", status.message());
    status
}

/// Asserts `result` failed with `code`; returns the status.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: tonic::Code) -> tonic::Status {
    let status = result.expect_err(&format!("expected {code:?}"));
    assert_eq!(status.code(), code, "{status:?}");
    status
}

/// The workflow `workflow` of stage `stage` of an execution.
pub fn workflow_of<'a>(e: &'a pb::Execution, stage: &str, workflow: &str) -> &'a pb::WorkflowExecution {
    let s = e.stages.iter().find(|s| s.name == stage).unwrap_or_else(|| panic!("no stage {stage}"));
    s.workflows
        .iter()
        .find(|w| w.name == workflow)
        .unwrap_or_else(|| panic!("no workflow {workflow} in {stage}: {e:#?}"))
}

/// The `google.rpc.ErrorInfo` of `status`: asserts it is there, in the
/// domain `reprise.v1`, with a reason that names an `ErrorReason` value;
/// returns that value and the metadata.
#[track_caller]
pub fn error_info(status: &tonic::Status) -> (pb::ErrorReason, HashMap<String, String>) {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    let info = details.error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "reprise.v1", "{status:?}");
    let reason = pb::ErrorReason::from_str_name(&format!("ERROR_REASON_{}", info.reason))
        .unwrap_or_else(|| panic!("reason {:?} is no ErrorReason value", info.reason));
    (reason, info.metadata.clone())
}

/// Asserts `status` has `code` and the ErrorInfo reason `reason`; for a
/// FAILED_PRECONDITION also a PreconditionFailure of the same type. Returns
/// the ErrorInfo metadata.
#[track_caller]
pub fn assert_reason(status: &tonic::Status, code: tonic::Code, reason: pb::ErrorReason) -> HashMap<String, String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), code, "{status:?}");
    let (got, metadata) = error_info(status);
    assert_eq!(got, reason, "{status:?}");
    if code == tonic::Code::FailedPrecondition {
        let details = status.get_error_details();
        let failure = details.precondition_failure().unwrap_or_else(|| panic!("no PreconditionFailure: {status:?}"));
        let wire = reason.as_str_name().trim_start_matches("ERROR_REASON_");
        assert_eq!(failure.violations[0].r#type, wire, "{status:?}");
    }
    metadata
}

/// Asserts `result` failed with `code` and reason `reason`; returns the status
/// and the ErrorInfo metadata.
#[track_caller]
pub fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    reason: pb::ErrorReason,
) -> (tonic::Status, HashMap<String, String>) {
    let status = result.expect_err(&format!("expected {code:?} {reason:?}"));
    let metadata = assert_reason(&status, code, reason);
    (status, metadata)
}
