//! Whether an execution's cost stays flat as it grows: per stage along a
//! long execution, per workflow across a wide stage, per resume across a
//! large execution, and for an idle server across a large store.
//!
//! Run with `cargo bench --bench scale`. Always measures SQLite (a temp file
//! database); also PostgreSQL when `REPRISE_TEST_POSTGRES_URL` names a server
//! (a fresh `reprise_bench_<time>_<uuid>` database is created there and dropped at
//! the end). `REPRISE_BENCH_QUICK=1` runs smaller sizes (for trying changes;
//! the output says so); `REPRISE_BENCH_RESUME_ONLY=1` runs only the resume
//! figure (3). Every figure is a ratio of two measurements taken in
//! the same run on the same database, so the machine's speed cancels out:
//!
//! 1. per-stage time, last tenth ÷ first tenth of the stages, of a
//!    200-stage × 100-workflow execution and of a 500 × 1 one (target ≤ 1.2);
//! 2. one stage of 1,000 workflows, start to its last report, ÷ 10 × the same
//!    for a stage of 100 (target ≤ 1.5);
//! 3. Resume RPC latency of a 200 × 100 execution that failed in its last
//!    stage, resumed from stage 199, ÷ that of a 10 × 1 one from stage 9
//!    (target ≤ 3);
//! 4. the server's CPU time while idle (metrics sampler on, pollers parked)
//!    with 1,000,000 executions stored ÷ with 10,000 (target ≤ 2).
//!
//! Workers are scripted gRPC no-op workers (`common::workers`) in this
//! process: they PollTask, then CompleteTask at once. Times come from what
//! the workers saw (a stage starts when its first task arrives, an execution
//! ends when the report that ended it is answered), so the bench's own
//! waiting never adds to a figure. Nothing watches the executions while they
//! run (a watcher's reads would be measured with them).

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use reprise::{
    domain::{limits::Limits, status::ExecutionStatus},
    engine::{Engine, Settings},
    proto::{self as pb, execution_service_client::ExecutionServiceClient},
    server::ServeOptions,
    store,
};

use common::{
    seed::{count_executions, rows, seed, table_bytes},
    workers::{Script, Workers},
    *,
};

/// Polling slots of the no-op workers.
const POLLERS: usize = 32;
/// The fan-out figure: one stage of FAN_LARGE workflows vs FAN_LARGE / FAN_SMALL of FAN_SMALL.
const FAN_SMALL: usize = 100;
const FAN_LARGE: usize = 1000;
const FAN_SMALL_RUNS: usize = 5;
const FAN_LARGE_RUNS: usize = 3;
/// Measured resumes per execution size and way (one more runs first, not
/// recorded): as many of an execution nobody read on this server, and of one
/// read with GetExecution right before (as a console or CLI user does).
/// Fifteen, not seven: the median of a 1–7 ms call on a shared 2-core
/// machine moved the ratio by ±0.5 from run to run with seven.
const RESUME_REPEATS: usize = 15;
/// Runs of the long one-workflow execution: its stages take about 1 ms,
/// so one run lasts half a second and one busy moment of a shared machine
/// moved a tenth by a third; the figure is the median run's ratio.
const LONG_RUNS: usize = 3;
/// The small execution resumed from its last stage.
const RESUME_SMALL: (usize, usize) = (10, 1);
/// Idle: windows measured per store size (the median is the figure), and
/// how long each lasts.
const IDLE_WINDOWS: usize = 3;
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// Workers parked in PollTask on an empty queue while the server idles.
const IDLE_POLLERS: usize = 8;
/// How often the metrics sampler reads the store (the CLI uses 10 s; more
/// often here so that a sample's cost shows in a 10 s window).
const METRICS_EVERY: Duration = Duration::from_secs(1);
/// How often the bench looks (in-process, one row) whether an execution ended.
const FINAL_POLL: Duration = Duration::from_millis(20);

const TARGET_STAGES: f64 = 1.2;
const TARGET_FAN: f64 = 1.5;
const TARGET_RESUME: f64 = 3.0;
const TARGET_IDLE: f64 = 2.0;

/// The sizes of one run: the issue's, or smaller ones with `REPRISE_BENCH_QUICK`.
#[derive(Clone, Copy)]
struct Sizes {
    quick: bool,
    /// Only the resume figure (`REPRISE_BENCH_RESUME_ONLY`).
    resume_only: bool,
    /// The wide execution (stages, workflows per stage).
    wide: (usize, usize),
    /// Stages of the 1-workflow execution.
    long: usize,
    /// Stored executions for the idle figure: the small store, the large one.
    stored: (i64, i64),
}

impl Sizes {
    fn from_env() -> Sizes {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0");
        let resume_only = set("REPRISE_BENCH_RESUME_ONLY");
        if set("REPRISE_BENCH_QUICK") {
            Sizes { quick: true, resume_only, wide: (50, 40), long: 100, stored: (10_000, 100_000) }
        } else {
            Sizes { quick: false, resume_only, wide: (200, 100), long: 500, stored: (10_000, 1_000_000) }
        }
    }

    /// The longest wait of the bench for one execution to end.
    fn wait_limit(&self) -> Duration {
        Duration::from_secs(if self.quick { 120 } else { 900 })
    }
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let sizes = Sizes::from_env();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    eprintln!("reprise scale bench: server, clients and workers in one process, {cores} cores");
    if sizes.quick {
        eprintln!("REPRISE_BENCH_QUICK is set: smaller sizes than the issue's (see the report)");
    }
    install_metrics();
    let reports = on_each_backend(|backend| bench_backend(backend, sizes)).await?;
    print_report(&reports, sizes);
    println!("\n(bench ran in {:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// The Prometheus recorder, as `--metrics-listen` installs it (once per
/// process), so the sampler's gauges are recorded as in production.
fn install_metrics() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let address = "127.0.0.1:0".parse().expect("an address");
        if let Err(e) = reprise::metrics::install(address) {
            eprintln!("warning: no metrics recorder ({e:#}); the sampler still reads the store");
        }
    });
}

// ---- one backend ---------------------------------------------------------

/// Stage times of one execution, as the workers saw them.
#[derive(Default)]
struct StageTimes {
    times: Vec<Duration>,
    /// SQL statements the server sent during each stage.
    statements: Vec<u64>,
    total: Duration,
}

impl StageTimes {
    /// The first and the last tenth of the stages.
    fn tenths(&self) -> (&[Duration], &[Duration]) {
        let tenth = (self.times.len() / 10).max(1).min(self.times.len());
        (&self.times[..tenth], &self.times[self.times.len() - tenth..])
    }

    fn statement_tenths(&self) -> (f64, f64) {
        let tenth = (self.statements.len() / 10).max(1).min(self.statements.len());
        let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len().max(1) as f64;
        (mean(&self.statements[..tenth]), mean(&self.statements[self.statements.len() - tenth..]))
    }

    /// Median of the last tenth ÷ median of the first.
    fn ratio(&self) -> f64 {
        let (first, last) = self.tenths();
        ratio(p50(last), p50(first))
    }

    /// The same with means (a few slow stages weigh in).
    fn mean_ratio(&self) -> f64 {
        let (first, last) = self.tenths();
        ratio(mean(last), mean(first))
    }

    /// The median of each tenth, first to last: whether a ratio off its
    /// target is a trend or one slow stretch of a shared machine.
    fn tenth_medians(&self) -> Vec<Duration> {
        let tenth = (self.times.len() / 10).max(1);
        self.times.chunks(tenth).take(10).map(p50).collect()
    }

    /// The least-squares line through every stage's time: where it ends ÷
    /// where it starts. Every stage weighs in, so one slow tenth moves it
    /// less than it moves the ratio of two tenths.
    fn trend(&self) -> f64 {
        let n = self.times.len() as f64;
        if n < 2.0 {
            return 1.0;
        }
        let ys: Vec<f64> = self.times.iter().map(Duration::as_secs_f64).collect();
        let (mean_x, mean_y) = ((n - 1.0) / 2.0, ys.iter().sum::<f64>() / n);
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (i, y) in ys.iter().enumerate() {
            let dx = i as f64 - mean_x;
            sxy += dx * (y - mean_y);
            sxx += dx * dx;
        }
        let slope = sxy / sxx;
        let start = mean_y - slope * mean_x;
        (start + slope * (n - 1.0)) / start
    }
}

/// One Resume call: its latency and the statements the server sent meanwhile.
struct Resumed {
    took: Duration,
    statements: u64,
    /// Read with GetExecution just before (not timed): the server had a
    /// current view of it in memory.
    read_first: bool,
}

fn resume_times(r: &[Resumed], read_first: bool) -> Vec<Duration> {
    r.iter().filter(|r| r.read_first == read_first).map(|r| r.took).collect()
}

fn resume_statements(r: &[Resumed], read_first: bool) -> f64 {
    let r: Vec<&Resumed> = r.iter().filter(|r| r.read_first == read_first).collect();
    r.iter().map(|r| r.statements).sum::<u64>() as f64 / r.len().max(1) as f64
}

/// One-stage executions of one width, start to last report.
#[derive(Default)]
struct Fan {
    times: Vec<Duration>,
    /// Over the measured runs: statements, claims, workflows.
    statements: u64,
    claims_found: u64,
    claims_empty: u64,
    workflows: u64,
}

impl Fan {
    fn line(&self, width: usize) -> String {
        let per = |n: u64| n as f64 / self.workflows.max(1) as f64;
        format!(
            "{width} workflows p50 {} ms ({}..{}); per workflow {:.1} statements, {:.2} claims found, {:.2} empty",
            ms(p50(&self.times)),
            ms(self.times.iter().copied().min().unwrap_or_default()),
            ms(max(&self.times)),
            per(self.statements),
            per(self.claims_found),
            per(self.claims_empty),
        )
    }
}

struct Idle {
    executions: i64,
    table_bytes: Option<i64>,
    seed_time: Duration,
    /// CPU time the whole process used in each idle window.
    cpu: Vec<Duration>,
}

struct BackendReport {
    name: &'static str,
    wide: StageTimes,
    /// [`LONG_RUNS`] runs of the long execution.
    long: Vec<StageTimes>,
    fan_small: Fan,
    fan_large: Fan,
    resume_small: Vec<Resumed>,
    resume_wide: Vec<Resumed>,
    idle: Vec<Idle>,
}

impl BackendReport {
    fn fan_ratio(&self) -> f64 {
        ratio(p50(&self.fan_large.times), p50(&self.fan_small.times) * (FAN_LARGE / FAN_SMALL) as u32)
    }

    /// The median of the long execution's runs' ratios.
    fn long_ratio(&self) -> f64 {
        let mut ratios: Vec<f64> = self.long.iter().map(StageTimes::ratio).collect();
        ratios.sort_by(f64::total_cmp);
        ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN)
    }

    fn resume_ratio(&self, read_first: bool) -> f64 {
        ratio(p50(&resume_times(&self.resume_wide, read_first)), p50(&resume_times(&self.resume_small, read_first)))
    }

    fn idle_ratio(&self) -> f64 {
        match (self.idle.first(), self.idle.last()) {
            (Some(a), Some(b)) => ratio(p50(&b.cpu), p50(&a.cpu)),
            _ => f64::NAN,
        }
    }
}

/// Default limits, raised where the bench's sizes need it (they do not
/// with today's defaults: 500 stages, 1,000 per stage, 20,000 in all).
fn settings(sizes: Sizes) -> Settings {
    let d = Limits::default();
    let limits = Limits {
        max_stages: d.max_stages.max(sizes.long).max(sizes.wide.0),
        max_workflows_per_stage: d.max_workflows_per_stage.max(FAN_LARGE).max(sizes.wide.1),
        max_workflows: d.max_workflows.max(sizes.wide.0 * sizes.wide.1),
        ..d
    };
    Settings { limits, ..bench_settings() }
}

async fn bench_backend(backend: Backend, sizes: Sizes) -> anyhow::Result<BackendReport> {
    let name = backend.name();
    let db_guard = BenchDb::create(&backend).await?;
    let db = store::connect(db_guard.url()).await.context("store::connect")?;
    let options = ServeOptions { metrics_sampling: Some(METRICS_EVERY), ..ServeOptions::default() };
    let server = Server::start_with(db, settings(sizes), options).await?;
    let result = async {
        let (stages, width) = sizes.wide;
        eprintln!("[{name}] {stages} stages × {width} workflows, failing in its last stage, {POLLERS} pollers");
        let (wide, resume_wide) = run_then_resume(&server, sizes, sizes.wide, RESUME_REPEATS).await?;
        eprintln!("[{name}] {} × {} failing in its last stage, resumed from it", RESUME_SMALL.0, RESUME_SMALL.1);
        let (_, resume_small) = run_then_resume(&server, sizes, RESUME_SMALL, RESUME_REPEATS).await?;
        if sizes.resume_only {
            let (long, fan_small, fan_large, idle) = (vec![], Fan::default(), Fan::default(), vec![]);
            return anyhow::Ok(BackendReport {
                name,
                wide,
                long,
                fan_small,
                fan_large,
                resume_small,
                resume_wide,
                idle,
            });
        }
        eprintln!("[{name}] {} stages × 1 workflow, {LONG_RUNS} times", sizes.long);
        let mut long = Vec::with_capacity(LONG_RUNS);
        for _ in 0..LONG_RUNS {
            long.push(run_then_resume(&server, sizes, (sizes.long, 1), 0).await?.0);
        }
        eprintln!("[{name}] one stage of {FAN_SMALL} workflows × {FAN_SMALL_RUNS}, of {FAN_LARGE} × {FAN_LARGE_RUNS}");
        let fan_small = fan_out(&server, sizes, FAN_SMALL, FAN_SMALL_RUNS).await?;
        let fan_large = fan_out(&server, sizes, FAN_LARGE, FAN_LARGE_RUNS).await?;
        let idle = idle_cpu(&server, sizes).await?;
        anyhow::Ok(BackendReport { name, wide, long, fan_small, fan_large, resume_small, resume_wide, idle })
    }
    .await;
    server.stop().await;
    drop(db_guard);
    result
}

// ---- what the workers see ------------------------------------------------

/// Stage `index`'s name: sortable, and its index is read back from it.
fn stage_name(index: usize) -> String {
    format!("s{index:03}")
}

fn stage_index(name: &str) -> Option<usize> {
    name.strip_prefix('s')?.parse().ok()
}

/// A worker script that fails every task of one stage name (if any) and
/// notes, per execution, when each stage's first task arrived (with the
/// server's statement count then) and when its last report was answered.
struct Clock {
    engine: Engine,
    fail_stage: Option<String>,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    first: HashMap<(String, usize), (Instant, u64)>,
    last_report: HashMap<String, Instant>,
}

impl Clock {
    fn new(engine: Engine, fail_stage: Option<String>) -> Arc<Clock> {
        Arc::new(Clock { engine, fail_stage, seen: Mutex::default() })
    }

    fn last_report(&self, execution_id: &str) -> Option<Instant> {
        self.seen.lock().unwrap().last_report.get(execution_id).copied()
    }

    /// Each stage's time: from its first task's arrival to the next stage's
    /// (the last stage: to the report that ended the execution).
    fn stage_times(&self, execution_id: &str, stages: usize) -> anyhow::Result<StageTimes> {
        let seen = self.seen.lock().unwrap();
        let first = (0..stages)
            .map(|i| {
                seen.first.get(&(execution_id.to_owned(), i)).copied().with_context(|| format!("stage {i} never ran"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let end = *seen.last_report.get(execution_id).context("no report")?;
        let end_statements = self.engine.store().statements();
        let next = first.iter().skip(1).copied().chain([(end, end_statements)]);
        let (times, statements) = first.iter().zip(next).map(|(a, b)| (b.0 - a.0, b.1.saturating_sub(a.1))).unzip();
        Ok(StageTimes { times, statements, total: end - first[0].0 })
    }
}

impl Script for Clock {
    fn fails(&self, task: &pb::Task) -> bool {
        let (at, statements) = (Instant::now(), self.engine.store().statements());
        if let Some(index) = stage_index(&task.stage_name) {
            let key = (task.execution_id.clone(), index);
            self.seen.lock().unwrap().first.entry(key).or_insert((at, statements));
        }
        self.fail_stage.as_deref() == Some(task.stage_name.as_str())
    }

    fn reported(&self, task: &pb::Task, at: Instant) {
        let mut seen = self.seen.lock().unwrap();
        let last = seen.last_report.entry(task.execution_id.clone()).or_insert(at);
        *last = (*last).max(at);
    }
}

/// Waits until the execution is final, reading its row in-process (no
/// watcher, no view of its workflows built meanwhile).
async fn wait_final(server: &Server, id: &str, limit: Duration) -> anyhow::Result<ExecutionStatus> {
    let deadline = Instant::now() + limit;
    loop {
        let e = store::executions::get(&server.engine.store().reader(), id).await?.context("no execution")?;
        if e.status.is_final() {
            return Ok(e.status);
        }
        if Instant::now() > deadline {
            bail!("execution {id} still {} after {} s", e.status.as_str(), limit.as_secs());
        }
        tokio::time::sleep(FINAL_POLL).await;
    }
}

async fn pipeline(server: &Server, queue: &str, (stages, width): (usize, usize)) -> anyhow::Result<String> {
    let workflows = names("w", width);
    let stages = (0..stages).map(|i| workflow_stage(&stage_name(i), queue, &workflows)).collect();
    create_pipeline(&server.channel, stages).await
}

// ---- 1 and 3: stage times along an execution, then resumes ------------------------

/// Runs one execution of `shape` to its end and returns its stage times.
/// With `resumes` > 0 its last stage fails (every attempt), and the latest
/// execution of its chain is resumed from that stage `resumes` + 1 times
/// (the first not recorded), each resume's latency being the Resume call's.
/// No worker is parked while Resume runs (they are started after it, to run
/// the resumed stage to its failure): the figure is the resume's, not that
/// of the workers it would set off on this 2-core process.
async fn run_then_resume(
    server: &Server,
    sizes: Sizes,
    shape: (usize, usize),
    resumes: usize,
) -> anyhow::Result<(StageTimes, Vec<Resumed>)> {
    let (stages, _) = shape;
    let last = stages - 1;
    let queue = queue_name();
    let pipeline = pipeline(server, &queue, shape).await?;
    let clock = Clock::new(server.engine.clone(), (resumes > 0).then(|| stage_name(last)));
    let start_workers = || Workers::start(server, &queue, POLLERS, clock.clone());
    let workers = start_workers();
    let run = async {
        tokio::time::sleep(Duration::from_millis(200)).await; // the pollers park
        let id = start_execution(&server.channel, &pipeline).await?;
        let status = wait_final(server, &id, sizes.wait_limit()).await?;
        let want = if resumes > 0 { ExecutionStatus::Failed } else { ExecutionStatus::Succeeded };
        ensure!(status == want, "execution ended {}, expected {}", status.as_str(), want.as_str());
        let times = clock.stage_times(&id, stages)?;
        anyhow::Ok((id, times))
    }
    .await;
    workers.stop().await;
    let (mut latest, times) = run?;

    let mut client = ExecutionServiceClient::new(server.channel.clone());
    let mut samples = Vec::with_capacity(2 * resumes);
    for repeat in 0..2 * resumes + usize::from(resumes > 0) {
        let read_first = repeat % 2 == 0;
        if read_first {
            let request = pb::GetExecutionRequest { execution_id: latest.clone(), ..Default::default() };
            client.get_execution(request).await.context("GetExecution")?;
            // A person reads before resuming; and the answer to that read
            // (20,000 workflows) is still being freed when it arrives.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let request = pb::ResumeRequest {
            execution_id: latest.clone(),
            from_stage: Some(pb::resume_request::FromStage::StageIndex(last as i32)),
            request_id: uuid::Uuid::new_v4().to_string(),
            validate_only: false,
            ..Default::default()
        };
        let statements = server.engine.store().statements();
        let asked = Instant::now();
        let answer = client.resume(request).await.context("Resume")?;
        let took = asked.elapsed();
        let statements = server.engine.store().statements() - statements;
        let resumed = answer.into_inner().execution.context("no execution in the answer")?;
        let carried = resumed.stages.iter().filter(|s| s.carried_over).count();
        ensure!(carried == last, "{carried} stages carried over, expected {last}");
        let workers = start_workers();
        let status = wait_final(server, &resumed.id, sizes.wait_limit()).await;
        workers.stop().await;
        let status = status?;
        ensure!(status == ExecutionStatus::Failed, "resumed execution ended {}", status.as_str());
        if repeat > 0 {
            samples.push(Resumed { took, statements, read_first });
        }
        latest = resumed.id;
    }
    Ok((times, samples))
}

// ---- 2. fan-out and fan-in of one stage ------------------------------------------

/// One-stage executions of `width` workflows, `runs` + 1 (the first not
/// recorded): from StartExecution sent (which dispatches the stage) to the
/// answer to the report that ended it.
async fn fan_out(server: &Server, sizes: Sizes, width: usize, runs: usize) -> anyhow::Result<Fan> {
    let queue = queue_name();
    let pipeline = pipeline(server, &queue, (1, width)).await?;
    let clock = Clock::new(server.engine.clone(), None);
    let workers = Workers::start(server, &queue, POLLERS, clock.clone());
    let result = async {
        let mut fan = Fan::default();
        for run in 0..=runs {
            tokio::time::sleep(Duration::from_millis(200)).await; // the pollers park again
            let (statements, claims) = (server.engine.store().statements(), server.engine.claim_counts());
            let started = Instant::now();
            let id = start_execution(&server.channel, &pipeline).await?;
            let status = wait_final(server, &id, sizes.wait_limit()).await?;
            ensure!(status == ExecutionStatus::Succeeded, "fan-out execution ended {}", status.as_str());
            let ended = clock.last_report(&id).context("no report")?;
            if run > 0 {
                let after = server.engine.claim_counts();
                fan.times.push(ended - started);
                fan.statements += server.engine.store().statements() - statements;
                fan.claims_found += after.found - claims.found;
                fan.claims_empty += after.empty - claims.empty;
                fan.workflows += width as u64;
            }
        }
        anyhow::Ok(fan)
    }
    .await;
    workers.stop().await;
    result
}

// ---- 4. an idle server over a small and a large store ------------------------------

/// CPU time of the whole process (every thread) so far.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Seeds the store up to each size with bulk SQL, then measures the CPU the
/// process uses over idle windows, with pollers parked and the metrics
/// sampler reading the store.
async fn idle_cpu(server: &Server, sizes: Sizes) -> anyhow::Result<Vec<Idle>> {
    let name = if server.engine.store().is_postgres() { "postgres" } else { "sqlite" };
    let pipeline = create_pipeline(&server.channel, vec![approval_stage("gate")]).await?;
    let base = reprise::engine::now() - 30 * 24 * 3600 * 1000;
    let db = server.engine.store().connection();
    let idle_queue = queue_name();
    let parked = Workers::start(server, &idle_queue, IDLE_POLLERS, Arc::new(|_: &pb::Task| false));
    let result = async {
        let mut out = Vec::new();
        let mut seeded = 0;
        for target in [sizes.stored.0, sizes.stored.1] {
            let have = count_executions(db).await?;
            let add = (target - have).max(0);
            eprintln!("[{name}] seeding {add} executions (to {target}) with bulk SQL");
            let started = Instant::now();
            seed(db, &pipeline, base, seeded, seeded + add).await?;
            let seed_time = started.elapsed();
            seeded += add;
            let executions = count_executions(db).await?;
            // Let what the seeding left behind settle (checkpoints, caches).
            tokio::time::sleep(Duration::from_secs(2)).await;
            eprintln!("[{name}] idle with {executions} executions: {IDLE_WINDOWS} × {} s", IDLE_WINDOW.as_secs());
            let mut cpu = Vec::with_capacity(IDLE_WINDOWS);
            for _ in 0..IDLE_WINDOWS {
                let before = process_cpu();
                tokio::time::sleep(IDLE_WINDOW).await;
                cpu.push(process_cpu().saturating_sub(before));
            }
            out.push(Idle { executions, table_bytes: table_bytes(db).await.ok(), seed_time, cpu });
        }
        anyhow::Ok(out)
    }
    .await;
    parked.stop().await;
    result
}

// ---- the report ------------------------------------------------------------------

fn mean(s: &[Duration]) -> Duration {
    s.iter().sum::<Duration>() / s.len().max(1) as u32
}

fn verdict(value: f64, target: f64) -> &'static str {
    if value <= target { "met" } else { "MISSED" }
}

fn stage_lines(label: &str, t: &StageTimes) {
    let (first, last) = t.tenths();
    let (s_first, s_last) = t.statement_tenths();
    println!("  {label}: {} stages in {:.1} s", t.times.len(), t.total.as_secs_f64());
    println!(
        "    per stage, first tenth: p50 {} ms, mean {} ms, max {} ms; {s_first:.0} statements",
        ms(p50(first)),
        ms(mean(first)),
        ms(max(first))
    );
    println!(
        "    per stage, last tenth:  p50 {} ms, mean {} ms, max {} ms; {s_last:.0} statements",
        ms(p50(last)),
        ms(mean(last)),
        ms(max(last))
    );
    println!("    last ÷ first: {:.2} (p50), {:.2} (mean)", t.ratio(), t.mean_ratio());
    let tenths: Vec<String> = t.tenth_medians().into_iter().map(ms).collect();
    println!("    p50 of each tenth: {} ms", tenths.join(" "));
    println!("    least-squares line through every stage: ends {:.2}× where it starts", t.trend());
}

fn print_report(reports: &[BackendReport], sizes: Sizes) {
    let (stages, width) = sizes.wide;
    let (small, large) = sizes.stored;
    println!();
    println!("== Reprise at scale (release build; server, clients and workers share one process) ==");
    if sizes.quick {
        println!("QUICK SIZES (REPRISE_BENCH_QUICK): not the issue's; do not quote these figures");
    }
    for r in reports {
        println!();
        println!("--- {} ---", r.name);
        stage_lines(&format!("{stages} × {width}"), &r.wide);
        if !sizes.resume_only {
            for (i, run) in r.long.iter().enumerate() {
                stage_lines(&format!("{} × 1, run {} of {LONG_RUNS}", sizes.long, i + 1), run);
            }
            println!("  one stage, start to last report: {}", r.fan_small.line(FAN_SMALL));
            println!("  one stage, start to last report: {}", r.fan_large.line(FAN_LARGE));
        }
        for (read_first, how) in [(false, "unread"), (true, "read just before")] {
            println!(
                "  Resume from the last stage, {how}, median of {RESUME_REPEATS}: {} × {} {} ms ({:.0} statements), \
                 {stages} × {width} {} ms ({:.0} statements)",
                RESUME_SMALL.0,
                RESUME_SMALL.1,
                ms(p50(&resume_times(&r.resume_small, read_first))),
                resume_statements(&r.resume_small, read_first),
                ms(p50(&resume_times(&r.resume_wide, read_first))),
                resume_statements(&r.resume_wide, read_first),
            );
        }
        for i in &r.idle {
            println!(
                "  idle CPU with {} executions ({}, seeded in {:.1} s): {} ms per {} s (windows: {})",
                i.executions,
                i.table_bytes.map_or("?".into(), |b| format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))),
                i.seed_time.as_secs_f64(),
                ms(p50(&i.cpu)),
                IDLE_WINDOW.as_secs(),
                i.cpu.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
            );
        }
    }
    println!();
    println!("--- figures (target; met or MISSED) ---");
    let header: String = reports.iter().map(|r| format!("{:>18}", r.name)).collect();
    println!("  {:<62}{header}", "");
    let line = |label: String, target: f64, f: &dyn Fn(&BackendReport) -> f64| {
        let cells: String =
            reports.iter().map(f).map(|v| format!("{:>18}", format!("{v:.2} {}", verdict(v, target)))).collect();
        println!("  {:<62}{cells}", format!("{label} (≤ {target})"));
    };
    line(format!("per-stage time, last ÷ first tenth, {stages} × {width}"), TARGET_STAGES, &|r| r.wide.ratio());
    if !sizes.resume_only {
        line(
            format!("per-stage time, last ÷ first tenth, {} × 1, median of {LONG_RUNS}", sizes.long),
            TARGET_STAGES,
            &|r| r.long_ratio(),
        );
        line(format!("{FAN_LARGE}-workflow stage ÷ 10 × {FAN_SMALL}-workflow stage"), TARGET_FAN, &|r| r.fan_ratio());
    }
    for (read_first, how) in [(false, "unread"), (true, "read before")] {
        line(
            format!(
                "Resume {stages}×{width} from {} ÷ {}×{} from {}, {how}",
                stages - 1,
                RESUME_SMALL.0,
                RESUME_SMALL.1,
                RESUME_SMALL.0 - 1
            ),
            TARGET_RESUME,
            &|r| r.resume_ratio(read_first),
        );
    }
    if !sizes.resume_only {
        line(format!("idle CPU, {} ÷ {} executions", rows(large), rows(small)), TARGET_IDLE, &|r| r.idle_ratio());
    }
}
