//! What 5,000 idle WatchExecution streams cost the server: its resident
//! memory, and the GetExecution latency other callers see meanwhile, beside
//! the same figures with no stream open and after the streams closed
//! (issue 19; targets: p99 within 2× of the no-stream figure, memory back
//! within 2× of idle after the streams close).
//!
//! Run with `cargo bench --bench watchers`. Always measures SQLite (a temp
//! file database); also PostgreSQL when `REPRISE_TEST_POSTGRES_URL` names a
//! server (a fresh `reprise_bench_<time>_<uuid>` database is created there and
//! dropped at the end).
//!
//! The server runs in the bench process with `Settings::default()` and
//! `ServeOptions::default()` except one raised limit: 10,000 watch streams
//! per caller (the default is 100). Authentication is off, so every stream
//! belongs to the same (anonymous) caller; the per-connection limit
//! (`max_concurrent_streams`, 1,000) is left as it is and the streams are
//! spread over 10 connections of 500.
//!
//! The watchers run in a child process (this binary started again with
//! `REPRISE_WATCHERS_CLIENT` set), so the bench process's VmRSS
//! (/proc/self/status) is the server's, plus four GetExecution callers and
//! the bench's bookkeeping; the child's VmRSS is printed apart. The child
//! opens 5,000 streams over real gRPC with the generated client, each on one
//! of 5 executions waiting at an approval gate (nothing changes: idle), and
//! waits for each stream's first message so that every stream is known to
//! be open; it then holds them, counting any further message, until told to
//! close them all.
//!
//! Per backend, GetExecution (BASIC view) of a sixth execution waiting at its
//! approval gate, 4 concurrent callers on their own connections, 2,000
//! measured calls (after 100 unmeasured) each time:
//! (a) with no stream open; (b) with 5,000 streams open (2 s after the last
//! opened); (c) after all of them closed (6 s later: the server gives freed
//! memory back every 5 s, `src/memory.rs`). Resident memory at idle (after
//! a), with the streams open, and after they closed.
//!
//! Each backend runs in a fresh process of its own (this binary again, with
//! `REPRISE_WATCHERS_BACKEND` set), so neither starts from memory the
//! allocator kept from the other. After (c), as a diagnostic only, the bench
//! calls glibc's `malloc_trim(0)` and reads VmRSS once more: what that gives
//! back was freed memory the allocator held, not memory still in use.
//!
//! Nothing here is a timed
//! assertion: the bench fails only when something functional breaks (a
//! stream refused or ending on its own, a call failing).

mod common;

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use reprise::{
    api::StreamLimits,
    engine::{Engine, Settings},
    proto::{self as pb, execution_service_client::ExecutionServiceClient},
    server::ServeOptions,
    store,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::{Semaphore, mpsc},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use common::*;

/// Set in the child process: the server's address.
const CLIENT_ENV: &str = "REPRISE_WATCHERS_CLIENT";
/// Set in the child process: the executions to watch, comma-separated.
const IDS_ENV: &str = "REPRISE_WATCHERS_IDS";
/// Set in a backend's process: which backend it measures.
const BACKEND_ENV: &str = "REPRISE_WATCHERS_BACKEND";

const CONNECTIONS: usize = 10;
const PER_CONNECTION: usize = 500;
const STREAMS: usize = CONNECTIONS * PER_CONNECTION;
/// Executions the streams are spread over.
const WATCHED: usize = 5;
/// Streams being opened at once (until their first message).
const OPENING: usize = 64;
/// The per-caller stream limit the bench's server runs with.
const PER_CALLER: usize = 10_000;

const CALLERS: usize = 4;
const CALLS: usize = 2000;
const WARMUP_CALLS: usize = 100;

/// After the last stream opened, before measuring.
const SETTLE_OPEN: Duration = Duration::from_secs(2);
/// After the streams closed, before measuring.
const SETTLE_CLOSED: Duration = Duration::from_secs(6);
/// Bounds every wait so a lost stream cannot hang the bench.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

fn main() -> anyhow::Result<()> {
    // The allocator's settings of the `reprise` binary (src/memory.rs).
    reprise::memory::configure();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if std::env::var_os(CLIENT_ENV).is_some() {
        return runtime.block_on(client_main());
    }
    if let Ok(name) = std::env::var(BACKEND_ENV) {
        let backend = match name.as_str() {
            "postgres" => Backend::Postgres(std::env::var(POSTGRES_ENV).context("no PostgreSQL URL")?),
            _ => Backend::Sqlite,
        };
        let report = runtime.block_on(bench_backend(backend))?;
        println!("report {}", serde_json::to_string(&report)?);
        return Ok(());
    }
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    eprintln!(
        "reprise watchers bench: server and GetExecution callers in this process, {STREAMS} watchers in a child; \
         {cores} cores"
    );
    let mut reports = vec![backend_process("sqlite").await?];
    match std::env::var(POSTGRES_ENV) {
        Ok(_) => reports.push(backend_process("postgres").await?),
        Err(_) => eprintln!("PostgreSQL skipped: set {POSTGRES_ENV}=postgres://user@host:port/db to include it"),
    }
    print_report(&reports);
    println!("\n(bench ran in {:.1} s on {cores} cores)", started.elapsed().as_secs_f64());
    Ok(())
}

// ---- one backend ---------------------------------------------------------

/// Runs one backend in a process of its own (this binary again), so that
/// its memory figures start from a fresh process, not from what the
/// allocator kept from the other backend's run.
async fn backend_process(name: &str) -> anyhow::Result<Report> {
    // spawn + wait_with_output, not output(): that would capture stderr too,
    // and the backend's progress and errors belong on ours.
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .env(BACKEND_ENV, name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the {name} bench process"))?
        .wait_with_output()
        .await
        .with_context(|| format!("running the {name} bench process"))?;
    ensure!(output.status.success(), "the {name} bench process ended with {}", output.status);
    let stdout = String::from_utf8(output.stdout)?;
    let json = stdout
        .lines()
        .find_map(|l| l.strip_prefix("report "))
        .with_context(|| format!("no report from the {name} bench process"))?;
    Ok(serde_json::from_str(json)?)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Report {
    name: String,
    relayed: bool,
    idle_calls: Vec<Duration>,
    open_calls: Vec<Duration>,
    after_calls: Vec<Duration>,
    /// Bench process VmRSS, KiB.
    rss_start: u64,
    rss_idle: u64,
    rss_open: u64,
    rss_open_after_calls: u64,
    rss_closed: u64,
    rss_closed_after_calls: u64,
    /// After `malloc_trim(0)` (glibc): what the allocator kept but nothing uses.
    rss_trimmed: Option<u64>,
    /// The child's VmRSS with every stream open, KiB.
    client_rss: u64,
    open_took: Duration,
    updates: u64,
}

async fn bench_backend(backend: Backend) -> anyhow::Result<Report> {
    let name = backend.name();
    let db_guard = BenchDb::create(&backend).await?;
    let db = store::connect(db_guard.url()).await.context("store::connect")?;
    let engine = Engine::new(db, Settings::default());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let options =
        ServeOptions { streams: StreamLimits { per_caller: PER_CALLER, ..Default::default() }, ..Default::default() };
    let handle = tokio::spawn(reprise::server::serve_with(listener, engine.clone(), options, shutdown.clone()));
    let result = async {
        let channel = Channel::from_shared(address.clone())?.connect().await?;
        let rss_start = rss_kib(None)?;
        eprintln!("[{name}] {} executions waiting at an approval gate", WATCHED + 1);
        let pipeline = create_gated_pipeline(&channel).await?;
        let mut ids = Vec::new();
        for _ in 0..=WATCHED {
            ids.push(start_waiting(&channel, &pipeline).await?);
        }
        let probe = ids.pop().expect("one more than watched");
        let callers = connect_callers(&address).await?;

        eprintln!("[{name}] (a) GetExecution, no stream: {CALLERS} callers × {} calls", CALLS / CALLERS);
        let idle_calls = get_calls(&callers, &probe).await?;
        let rss_idle = rss_kib(None)?;

        eprintln!("[{name}] (b) opening {STREAMS} watch streams ({CONNECTIONS} connections × {PER_CONNECTION})");
        let mut child = Watchers::spawn(&address, &ids).await?;
        let opened = child.opened().await?;
        tokio::time::sleep(SETTLE_OPEN).await;
        let rss_open = rss_kib(None)?;
        eprintln!("[{name}] (b) GetExecution with {STREAMS} streams open");
        let open_calls = get_calls(&callers, &probe).await?;
        let rss_open_after_calls = rss_kib(None)?;
        let relayed = engine.events().is_relayed();

        eprintln!("[{name}] (c) closing the streams, waiting {} s", SETTLE_CLOSED.as_secs());
        let updates = child.close().await?;
        tokio::time::sleep(SETTLE_CLOSED).await;
        let rss_closed = rss_kib(None)?;
        let after_calls = get_calls(&callers, &probe).await?;
        let rss_closed_after_calls = rss_kib(None)?;
        let rss_trimmed = trim().then(|| rss_kib(None)).transpose()?;
        // Every watched execution is still where it was: the streams changed nothing.
        for id in &ids {
            let stage = first_stage(&channel, id).await?;
            ensure!(stage == pb::StageStatus::WaitingApproval, "execution {id} left its approval gate: {stage:?}");
        }
        anyhow::Ok(Report {
            name: name.to_owned(),
            relayed,
            idle_calls,
            open_calls,
            after_calls,
            rss_start,
            rss_idle,
            rss_open,
            rss_open_after_calls,
            rss_closed,
            rss_closed_after_calls,
            rss_trimmed,
            client_rss: opened.rss_kib,
            open_took: opened.took,
            updates,
        })
    }
    .await;
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(10), handle).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("warning: server ended with an error: {e:#}"),
        Ok(Err(e)) => eprintln!("warning: server task failed: {e}"),
        Err(_) => eprintln!("warning: server did not stop within 10 s"),
    }
    engine.store().close().await;
    drop(db_guard);
    result
}

async fn create_gated_pipeline(channel: &Channel) -> anyhow::Result<String> {
    let environment = Some(pb::Environment { name: "bench".into(), r#type: pb::EnvironmentType::NonProd as i32 });
    let stages = vec![
        pb::Stage {
            name: "gate".into(),
            environment: environment.clone(),
            skip_condition: None,
            kind: Some(pb::stage::Kind::Approval(pb::ApprovalStage {
                timeout: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
                instructions: "never approved: the bench only watches".into(),
            })),
        },
        pb::Stage {
            name: "deploy".into(),
            environment,
            skip_condition: None,
            kind: Some(pb::stage::Kind::Workflows(pb::WorkflowStage {
                workflows: vec![pb::Workflow {
                    name: "w".into(),
                    task_queue: queue_name(),
                    command: "true".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
        },
    ];
    common::create_pipeline(channel, stages).await
}

/// Starts an execution and waits until its approval stage is waiting.
async fn start_waiting(channel: &Channel, pipeline_id: &str) -> anyhow::Result<String> {
    let id = start_execution(channel, pipeline_id).await?;
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        if first_stage(channel, &id).await? == pb::StageStatus::WaitingApproval {
            return Ok(id);
        }
        ensure!(Instant::now() < deadline, "execution {id} never reached its approval gate");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn first_stage(channel: &Channel, id: &str) -> anyhow::Result<pb::StageStatus> {
    let request = pb::GetExecutionRequest { execution_id: id.into(), ..Default::default() };
    let execution = ExecutionServiceClient::new(channel.clone())
        .get_execution(request)
        .await?
        .into_inner()
        .execution
        .context("no execution")?;
    Ok(match execution.stages.first() {
        Some(stage) => pb::StageStatus::try_from(stage.status)?,
        None => pb::StageStatus::Pending,
    })
}

async fn connect_callers(address: &str) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for _ in 0..CALLERS {
        channels.push(Channel::from_shared(address.to_owned())?.connect().await?);
    }
    Ok(channels)
}

/// GetExecution of `id` from every caller at once; the measured samples of all.
async fn get_calls(callers: &[Channel], id: &str) -> anyhow::Result<Vec<Duration>> {
    let mut set = JoinSet::new();
    for channel in callers {
        let mut client = ExecutionServiceClient::new(channel.clone());
        let id = id.to_owned();
        set.spawn(async move {
            let per_caller = CALLS / CALLERS;
            let warmup = WARMUP_CALLS / CALLERS;
            let mut samples = Vec::with_capacity(per_caller);
            for i in 0..warmup + per_caller {
                let request = pb::GetExecutionRequest { execution_id: id.clone(), ..Default::default() };
                let started = Instant::now();
                let execution = client.get_execution(request).await.context("GetExecution")?.into_inner().execution;
                let took = started.elapsed();
                ensure!(execution.is_some_and(|e| e.id == id), "GetExecution answered without the execution");
                if i >= warmup {
                    samples.push(took);
                }
            }
            anyhow::Ok(samples)
        });
    }
    let mut all = Vec::with_capacity(CALLS);
    while let Some(joined) = set.join_next().await {
        all.extend(joined??);
    }
    Ok(all)
}

// ---- the watchers' process ----------------------------------------------

struct Watchers {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

struct Opened {
    took: Duration,
    rss_kib: u64,
}

impl Watchers {
    async fn spawn(address: &str, ids: &[String]) -> anyhow::Result<Watchers> {
        let exe = std::env::current_exe()?;
        let mut child = tokio::process::Command::new(exe)
            .env(CLIENT_ENV, address)
            .env(IDS_ENV, ids.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the watchers' process")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        Ok(Watchers { child, stdin, lines })
    }

    async fn line(&mut self) -> anyhow::Result<Vec<String>> {
        let line = tokio::time::timeout(WAIT_LIMIT, self.lines.next_line())
            .await
            .context("the watchers' process said nothing in time")??
            .context("the watchers' process ended")?;
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        if words.first().map(String::as_str) == Some("error") {
            bail!("watchers: {}", line.trim_start_matches("error").trim());
        }
        Ok(words)
    }

    /// Waits until every stream is open (its first message received).
    async fn opened(&mut self) -> anyhow::Result<Opened> {
        let words = self.line().await?;
        match words.as_slice() {
            [w, n, ms, rss] if w == "opened" => {
                let n: usize = n.parse()?;
                ensure!(n == STREAMS, "only {n} of {STREAMS} streams opened");
                Ok(Opened { took: Duration::from_millis(ms.parse()?), rss_kib: rss.parse()? })
            }
            _ => bail!("unexpected line from the watchers: {words:?}"),
        }
    }

    /// Closes every stream and the connections; the messages received after
    /// the first of each stream.
    async fn close(mut self) -> anyhow::Result<u64> {
        self.stdin.write_all(b"close\n").await?;
        self.stdin.flush().await?;
        let words = self.line().await?;
        let updates = match words.as_slice() {
            [w, updates] if w == "closed" => updates.parse()?,
            _ => bail!("unexpected line from the watchers: {words:?}"),
        };
        drop(self.stdin);
        let status = tokio::time::timeout(WAIT_LIMIT, self.child.wait()).await.context("watchers did not exit")??;
        ensure!(status.success(), "the watchers' process ended with {status}");
        Ok(updates)
    }
}

/// The child: opens the streams, reports, holds them until told to close.
async fn client_main() -> anyhow::Result<()> {
    match watch_all().await {
        Ok(()) => Ok(()),
        Err(e) => {
            println!("error {}", format!("{e:#}").replace('\n', " "));
            Err(e)
        }
    }
}

async fn watch_all() -> anyhow::Result<()> {
    let address = std::env::var(CLIENT_ENV)?;
    let ids: Vec<String> = std::env::var(IDS_ENV)?.split(',').map(String::from).collect();
    ensure!(!ids.is_empty(), "no executions to watch");
    let started = Instant::now();
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(Channel::from_shared(address.clone())?.connect().await?);
    }
    let stop = CancellationToken::new();
    let opening = Arc::new(Semaphore::new(OPENING));
    let updates = Arc::new(AtomicUsize::new(0));
    let (opened_tx, mut opened_rx) = mpsc::channel::<anyhow::Result<()>>(STREAMS);
    let mut holders = JoinSet::new();
    for (c, channel) in channels.iter().enumerate() {
        for s in 0..PER_CONNECTION {
            let id = ids[(c * PER_CONNECTION + s) % ids.len()].clone();
            let mut client = ExecutionServiceClient::new(channel.clone());
            let (stop, opening, updates, opened_tx) =
                (stop.clone(), opening.clone(), updates.clone(), opened_tx.clone());
            holders.spawn(async move {
                let permit = opening.acquire_owned().await?;
                let opened = async {
                    let request = pb::WatchExecutionRequest { execution_id: id.clone() };
                    let mut stream =
                        client.watch_execution(request).await.context("WatchExecution refused")?.into_inner();
                    let first = stream.message().await.context("the stream's first message")?;
                    ensure!(first.is_some(), "the stream of {id} ended before its first message");
                    anyhow::Ok(stream)
                }
                .await;
                drop(permit);
                let mut stream = match opened {
                    Ok(stream) => {
                        opened_tx.send(Ok(())).await.ok();
                        stream
                    }
                    Err(e) => {
                        let message = format!("{e:#}");
                        opened_tx.send(Err(e)).await.ok();
                        bail!("{message}");
                    }
                };
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        message = stream.message() => match message {
                            Ok(Some(_)) => { updates.fetch_add(1, Ordering::Relaxed); }
                            Ok(None) => bail!("a stream of {id} ended while it was held"),
                            Err(e) => bail!("a stream of {id} failed while it was held: {e}"),
                        },
                    }
                }
                drop(stream);
                anyhow::Ok(())
            });
        }
    }
    drop(opened_tx);
    let mut opened = 0;
    while opened < STREAMS {
        match tokio::time::timeout(WAIT_LIMIT, opened_rx.recv()).await {
            Ok(Some(Ok(()))) => opened += 1,
            Ok(Some(Err(e))) => return Err(e.context(format!("after {opened} streams opened"))),
            Ok(None) => bail!("only {opened} streams opened"),
            Err(_) => bail!("only {opened} streams opened within {} s", WAIT_LIMIT.as_secs()),
        }
    }
    println!("opened {opened} {} {}", started.elapsed().as_millis(), rss_kib(None)?);

    // Hold until the parent says close (or goes away).
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = stdin.next_line() => match line? {
                Some(l) if l.trim() == "close" => break,
                Some(_) => continue,
                None => break,
            },
            // A stream that ends or fails while held is a functional failure.
            Some(joined) = holders.join_next() => {
                joined??;
                bail!("a stream stopped being held before close");
            }
        }
    }
    stop.cancel();
    while let Some(joined) = holders.join_next().await {
        joined??;
    }
    drop(channels);
    println!("closed {}", updates.load(Ordering::Relaxed));
    Ok(())
}

// ---- the report ------------------------------------------------------------

fn mib(kib: u64) -> String {
    format!("{:.0} MB", kib as f64 / 1024.0)
}

fn print_report(reports: &[Report]) {
    println!("\n== {STREAMS} idle WatchExecution streams ({CONNECTIONS} connections × {PER_CONNECTION}) ==");
    println!(
        "server options: watch streams per caller raised to {PER_CALLER} (default 100; auth off, so one caller \
         holds them all); max_concurrent_streams per connection left at its default (1,000); Settings::default()"
    );
    println!("GetExecution: {CALLERS} concurrent callers, {CALLS} measured calls, p50 / p99");
    println!("memory: VmRSS of each backend's own process (server + 4 callers); the watchers run in a child process\n");
    let width = 44;
    print!("{:width$}", "");
    for r in reports {
        print!("{:>26}", &r.name);
    }
    println!();
    let row = |label: &str, f: &dyn Fn(&Report) -> String| {
        print!("{label:width$}");
        for r in reports {
            print!("{:>26}", f(r));
        }
        println!();
    };
    row("GetExecution, no stream (a)", &|r| pair(&r.idle_calls));
    row(&format!("GetExecution, {STREAMS} streams open (b)"), &|r| pair(&r.open_calls));
    row("GetExecution, after they closed (c)", &|r| pair(&r.after_calls));
    row("  p99 (b) / (a)   [target ≤ 2×]", &|r| format!("{:.2}×", ratio(p99(&r.open_calls), p99(&r.idle_calls))));
    row("  p99 (c) / (a)", &|r| format!("{:.2}×", ratio(p99(&r.after_calls), p99(&r.idle_calls))));
    row("  max (a) / (b) / (c)", &|r| {
        format!("{} / {} / {} ms", ms(max(&r.idle_calls)), ms(max(&r.open_calls)), ms(max(&r.after_calls)))
    });
    row("RSS at the backend's start", &|r| mib(r.rss_start));
    row("RSS idle (after a)", &|r| mib(r.rss_idle));
    row(&format!("RSS with {STREAMS} streams open"), &|r| mib(r.rss_open));
    row("  … after the calls of (b)", &|r| mib(r.rss_open_after_calls));
    row("  per stream (open − idle)", &|r| {
        format!("{:.1} KiB", r.rss_open.saturating_sub(r.rss_idle) as f64 / STREAMS as f64)
    });
    row(&format!("RSS {} s after they closed", SETTLE_CLOSED.as_secs()), &|r| mib(r.rss_closed));
    row("  … after the calls of (c)", &|r| mib(r.rss_closed_after_calls));
    row("  after / idle   [target ≤ 2×]", &|r| format!("{:.2}×", r.rss_closed as f64 / r.rss_idle.max(1) as f64));
    row("  … after malloc_trim(0) (diagnostic)", &|r| r.rss_trimmed.map_or("-".into(), mib));
    row("watchers' process RSS, streams open", &|r| mib(r.client_rss));
    row(&format!("time to open {STREAMS} streams"), &|r| format!("{:.2} s", r.open_took.as_secs_f64()));
    row("messages after the first (idle: 0)", &|r| r.updates.to_string());
    row("watchers woken by changes only", &|r| if r.relayed { "yes".into() } else { "no: recheck every 1 s".into() });
}
