//! The long fuzz run (issue 9): by default 100,000 generated adversarial
//! requests (the generator of `tests/api/fuzz_gen.rs`, shared with the fuzz
//! test) against a server with bearer tokens and one without, on SQLite and
//! then on PostgreSQL when `REPRISE_TEST_POSTGRES_URL` is set. Prints the
//! answers by status code, the rules broken (none, or it exits 1), and the
//! server's resident memory under ordinary load and after the run, with
//! their ratio (the issue's target: at most 2×).
//!
//! ```sh
//! cargo bench --bench fuzz_long                    # 100,000 per backend, 60 s of ordinary load
//! cargo bench --bench fuzz_long -- 300000 16 20    # requests, concurrency, seconds of ordinary load
//! ```
//!
//! The servers run in a child process (this binary again, with
//! `REPRISE_FUZZ_SERVER` set to the database URL): both servers on one
//! engine, as one process may hold a SQLite file, with the allocator set
//! up as the `reprise` binary sets it (`reprise::memory::configure`). So
//! the child's VmRSS is the server's alone; the generator's, in this
//! process, is printed apart. The child answers `stats` on its standard
//! input with its VmRSS as it is and after `malloc_trim` (the server trims
//! every 5 s by itself: the second is what it holds), and stops on `stop`.
//!
//! Per backend: ordinary load first — 64 callers, each on its own
//! connection (half as the admin on the secured server, half on the open
//! one), each starting an execution of its own one-stage pipeline, polling
//! and completing its task, reading the execution and a page of the
//! pipeline's executions, for the given seconds; then the adversarial run,
//! 10,000 requests at a time; then, 3 s after it, the memory again.

#[path = "../tests/api/fuzz_gen.rs"]
mod fuzz_gen;

mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use common::{Backend, BenchDb, POSTGRES_ENV, mib, rss_kib};
use fuzz_gen::{ADMIN, Endpoint, Tally, authed, can_run_a_pipeline, run, seed_over, serve_options};
use reprise::{
    engine::{Engine, Settings},
    proto::{
        self as pb, execution_service_client::ExecutionServiceClient, pipeline_service_client::PipelineServiceClient,
        worker_service_client::WorkerServiceClient,
    },
    store,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, transport::Channel};

const ROUND: usize = 10_000;
/// The child's environment variable: serve on this database URL.
const SERVER_ENV: &str = "REPRISE_FUZZ_SERVER";
/// Callers of the ordinary load.
const CALLERS: usize = 64;
/// The issue's bound: memory after the run within this many times ordinary.
const TARGET_RATIO: f64 = 2.0;

fn main() -> anyhow::Result<()> {
    if let Ok(url) = std::env::var(SERVER_ENV) {
        // As the `reprise` binary does, before the runtime's threads start.
        reprise::memory::configure();
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return runtime.block_on(server_main(&url));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench_main())
}

async fn bench_main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let total: usize = args.first().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let concurrency: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(16);
    let ordinary = Duration::from_secs(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(60));
    let mut backends = vec![Backend::Sqlite];
    match std::env::var(POSTGRES_ENV) {
        Ok(url) => backends.push(Backend::Postgres(url)),
        Err(_) => println!("(set {POSTGRES_ENV} to fuzz PostgreSQL too)"),
    }
    let mut failed = false;
    let mut summaries = Vec::new();
    for backend in backends {
        let (ok, summary) = fuzz(&backend, total, concurrency, ordinary).await?;
        failed |= !ok;
        summaries.push(summary);
    }
    println!(
        "\n== server resident memory (its own process; after malloc_trim, what it holds — it trims every 5 s by \
         itself)"
    );
    println!(
        "{:<10} {:>26} {:>26} {:>8}  target ≤ {TARGET_RATIO}×",
        "backend",
        format!("ordinary load ({CALLERS} callers)"),
        format!("after {total} adversarial"),
        "ratio"
    );
    for s in &summaries {
        let ratio = s.after as f64 / s.ordinary.max(1) as f64;
        let verdict = if ratio <= TARGET_RATIO { "within" } else { "OVER" };
        println!("{:<10} {:>26} {:>26} {:>7.2}×  {verdict}", s.backend, mib(s.ordinary), mib(s.after), ratio);
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

struct Summary {
    backend: &'static str,
    /// Server VmRSS after trim at the end of the ordinary load, KiB.
    ordinary: u64,
    /// Server VmRSS after trim once the adversarial run is over, KiB.
    after: u64,
}

// ---- the servers' process ------------------------------------------------------

/// The child: both servers on one engine, the bootstrap admin made, then
/// `ready SECURED OPEN`; answers `stats` until `stop` (or its input ends).
async fn server_main(url: &str) -> anyhow::Result<()> {
    // Logs and panics as `serve` has them: warnings and errors, one line each.
    let _telemetry = reprise::telemetry::init("warn", None, reprise::telemetry::LogFormat::Text)?;
    reprise::panic::install_hook();
    let stop = CancellationToken::new();
    let settings = Settings { lease: Duration::from_secs(30), recheck: Duration::from_secs(1), ..Settings::default() };
    let engine = Engine::new(store::connect(url).await?, settings);
    engine.bootstrap_admin(ADMIN).await?;
    let mut served = tokio::task::JoinSet::new();
    let mut addresses = Vec::new();
    for secured in [true, false] {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        addresses.push(format!("http://{}", listener.local_addr()?));
        let (engine, stop) = (engine.clone(), stop.clone());
        served.spawn(async move {
            if secured {
                reprise::server::serve_with(listener, engine, serve_options(), stop).await
            } else {
                reprise::server::serve(listener, engine, stop).await
            }
        });
    }
    println!("ready {} {}", addresses[0], addresses[1]);
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = input.next_line() => match line?.as_deref().map(str::trim) {
                Some("stats") => {
                    let raw = rss_kib(None)?;
                    common::trim();
                    let (definitions, weight) = engine.definitions().size();
                    println!("stats {raw} {} {definitions} {weight} {}", rss_kib(None)?, engine.parked_queues());
                }
                Some("stop") | None => break,
                Some(_) => continue,
            },
            Some(ended) = served.join_next() => {
                ended??;
                bail!("a server stopped by itself");
            }
        }
    }
    stop.cancel();
    while let Some(ended) = served.join_next().await {
        ended??;
    }
    engine.store().close().await;
    println!("stopped");
    Ok(())
}

/// The parent's handle on the servers' process.
struct Servers {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// The secured server's address and the open one's.
    addresses: [String; 2],
    secured: Channel,
    open: Channel,
}

/// What the servers' process reports.
struct Stats {
    /// VmRSS as it is and after malloc_trim, KiB.
    raw: u64,
    trimmed: u64,
    definitions: u64,
    weight: u64,
    parked: u64,
}

impl Servers {
    async fn start(url: &str) -> anyhow::Result<Servers> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .env(SERVER_ENV, url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the servers' process")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("the servers' process did not start in time")??
            .context("the servers' process ended")?;
        let (secured, open) = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["ready", secured, open] => (secured.to_string(), open.to_string()),
            _ => bail!("unexpected line from the servers: {line}"),
        };
        let addresses = [secured, open];
        let secured = Channel::from_shared(addresses[0].clone())?.connect().await?;
        let open = Channel::from_shared(addresses[1].clone())?.connect().await?;
        Ok(Servers { child, stdin, lines, addresses, secured, open })
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn stats(&mut self) -> anyhow::Result<Stats> {
        self.stdin.write_all(b"stats\n").await?;
        self.stdin.flush().await?;
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .context("the servers' process did not answer in time")??
            .context("the servers' process ended")?;
        let numbers: Vec<u64> = line.split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
        match (line.starts_with("stats "), numbers.as_slice()) {
            (true, &[raw, trimmed, definitions, weight, parked]) => {
                Ok(Stats { raw, trimmed, definitions, weight, parked })
            }
            _ => bail!("unexpected line from the servers: {line}"),
        }
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.stdin.write_all(b"stop\n").await?;
        self.stdin.flush().await?;
        drop(self.stdin);
        drop((self.secured, self.open));
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("the servers' process did not stop")??;
        anyhow::ensure!(status.success(), "the servers' process ended with {status}");
        Ok(())
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "server {} (after malloc_trim {}); queues waited on: {}; definitions cached: {} (weighing {:.1} MiB)",
            mib(self.raw),
            mib(self.trimmed),
            self.parked,
            self.definitions,
            self.weight as f64 / 1024.0 / 1024.0
        )
    }
}

// ---- ordinary load ---------------------------------------------------------------

/// A request as caller `i` sends it: as the admin on the secured server
/// (even callers), without a token on the open one (odd).
fn as_caller<T>(message: T, i: usize) -> Request<T> {
    if i.is_multiple_of(2) { authed(message, ADMIN) } else { Request::new(message) }
}

/// One caller's one-stage pipeline on a queue of its own.
async fn ordinary_pipeline(channel: &Channel, i: usize, queue: &str) -> anyhow::Result<String> {
    let stage = pb::Stage {
        name: "build".into(),
        environment: Some(pb::Environment { name: "staging".into(), r#type: pb::EnvironmentType::NonProd as i32 }),
        kind: Some(pb::stage::Kind::Workflows(pb::WorkflowStage {
            workflows: vec![pb::Workflow {
                name: "compile".into(),
                task_queue: queue.into(),
                command: "make".into(),
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    let request = pb::CreatePipelineRequest {
        application: "shop".into(),
        name: format!("ordinary-{i}"),
        definition: Some(pb::PipelineDefinition { stages: vec![stage], ..Default::default() }),
    };
    let created = PipelineServiceClient::new(channel.clone()).create_pipeline(as_caller(request, i)).await?;
    Ok(created.into_inner().pipeline.context("no pipeline")?.id)
}

/// One execution run through by caller `i`: started, its task polled and
/// completed, the execution and a page of its pipeline's executions read.
async fn ordinary_cycle(channel: &Channel, i: usize, pipeline_id: &str, queue: &str) -> anyhow::Result<()> {
    let mut executions = ExecutionServiceClient::new(channel.clone());
    let mut workers = WorkerServiceClient::new(channel.clone());
    let start = pb::StartExecutionRequest { pipeline_id: pipeline_id.into(), ..Default::default() };
    let execution = executions.start_execution(as_caller(start, i)).await?.into_inner().execution.context("none")?;
    let poll = pb::PollTaskRequest {
        task_queue: queue.into(),
        worker_id: format!("ordinary-{i}"),
        wait: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
    };
    let task = workers.poll_task(as_caller(poll, i)).await?.into_inner().task.context("no task handed out")?;
    let complete = pb::CompleteTaskRequest {
        task_id: task.task_id,
        lease_token: task.lease_token,
        outcome: pb::TaskOutcome::Succeeded as i32,
        output: "compiled 12 files\n".repeat(8),
        ..Default::default()
    };
    workers.complete_task(as_caller(complete, i)).await?;
    let get = pb::GetExecutionRequest { execution_id: execution.id, ..Default::default() };
    executions.get_execution(as_caller(get, i)).await?;
    let list = pb::ListExecutionsRequest { pipeline_id: pipeline_id.into(), page_size: 10, ..Default::default() };
    executions.list_executions(as_caller(list, i)).await?;
    Ok(())
}

/// [`CALLERS`] callers, each on its own connection, for `length`; the
/// cycles run and the server's peak VmRSS (sampled every second, KiB).
async fn ordinary_load(servers: &Servers, length: Duration) -> anyhow::Result<(u64, u64)> {
    let deadline = Instant::now() + length;
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..CALLERS {
        let channel = Channel::from_shared(servers.addresses[i % 2].clone())?.connect().await?;
        let queue = format!("ordinary-{i}-{}", uuid::Uuid::new_v4().simple());
        let pipeline_id = ordinary_pipeline(&channel, i, &queue).await?;
        callers.spawn(async move {
            let mut cycles = 0u64;
            while Instant::now() < deadline {
                ordinary_cycle(&channel, i, &pipeline_id, &queue)
                    .await
                    .with_context(|| format!("ordinary caller {i}, cycle {cycles}"))?;
                cycles += 1;
            }
            anyhow::Ok(cycles)
        });
    }
    let pid = servers.pid();
    let mut peak = 0;
    let mut cycles = 0;
    let mut sample = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = sample.tick() => peak = peak.max(pid.map_or(Ok(0), |p| rss_kib(Some(p)))?),
            ended = callers.join_next() => match ended {
                Some(n) => cycles += n??,
                None => break,
            },
        }
    }
    Ok((cycles, peak))
}

// ---- one backend -------------------------------------------------------------------

/// One backend: whether no rule was broken and pipelines still run, and
/// the memory figures.
async fn fuzz(
    backend: &Backend,
    total: usize,
    concurrency: usize,
    ordinary: Duration,
) -> anyhow::Result<(bool, Summary)> {
    let db = BenchDb::create(backend).await?;
    let mut servers = Servers::start(db.url()).await?;
    let targets = seed_over(&servers.secured).await;
    let endpoints = [Endpoint::secured(servers.secured.clone()), Endpoint::open(servers.open.clone())];
    println!("\n== {} — {total} requests, {concurrency} at a time", backend.name());
    println!("before: {}; generator (this process) {}", servers.stats().await?, mib(rss_kib(None)?));

    let (cycles, peak) = ordinary_load(&servers, ordinary).await?;
    let under_load = servers.stats().await?;
    println!(
        "ordinary load, {CALLERS} callers for {} s ({cycles} executions run through, {:.0}/s): peak server {}; at \
         its end {under_load}",
        ordinary.as_secs(),
        cycles as f64 / ordinary.as_secs_f64(),
        mib(peak)
    );

    let started = Instant::now();
    let mut tally = Tally::default();
    let mut peak = 0;
    let mut sent = 0;
    let mut round = 0u64;
    while sent < total {
        let n = ROUND.min(total - sent);
        let done = run(&endpoints, targets.clone(), 1000 + round, n, concurrency).await;
        sent += n;
        round += 1;
        tally.absorb(done);
        let stats = servers.stats().await?;
        peak = peak.max(stats.raw);
        println!(
            "{sent:>7} sent in {:>6.1} s; {stats}; generator {}",
            started.elapsed().as_secs_f64(),
            mib(rss_kib(None)?)
        );
    }
    let elapsed = started.elapsed();
    let ran = can_run_a_pipeline(&servers.secured, true).await.and(can_run_a_pipeline(&servers.open, false).await);
    // Give long polls cut off by the client a moment to wind down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = servers.stats().await?;
    println!("after: {after}; peak seen {}; generator {}", mib(peak), mib(rss_kib(None)?));
    println!(
        "{} requests in {:.1} s ({:.0}/s); by status code:",
        tally.sent,
        elapsed.as_secs_f64(),
        tally.sent as f64 / elapsed.as_secs_f64()
    );
    for (code, n) in &tally.by_code {
        println!("  {code:<20} {n:>7}");
    }
    println!("by method: {:?}", tally.by_method);
    println!("queues still waited on after the run: {}", after.parked);
    match &ran {
        Ok(()) => println!("after the run: a new pipeline ran to SUCCEEDED on both servers"),
        Err(e) => println!("after the run: FAILED to run a pipeline: {e}"),
    }
    if !tally.broken.is_empty() {
        println!("BROKEN RULES ({} shown):", tally.broken.len());
        for b in &tally.broken {
            println!("  {b}");
        }
    }
    servers.stop().await?;
    drop(db);
    let summary = Summary { backend: backend.name(), ordinary: under_load.trimmed, after: after.trimmed };
    Ok((tally.broken.is_empty() && ran.is_ok(), summary))
}
