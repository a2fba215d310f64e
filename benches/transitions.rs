//! How long a stage transition takes, compared with the cheapest durable
//! write the same database can do.
//!
//! Run with `cargo bench --bench transitions`. Always measures SQLite (a temp
//! file database); also PostgreSQL when `REPRISE_TEST_POSTGRES_URL` names a
//! server (a fresh `reprise_bench_<time>_<uuid>` database is created there and
//! dropped at the end).
//!
//! Per backend:
//! 1. floor: one single-row INSERT + COMMIT in its own transaction
//!    (`store::begin`, so BEGIN IMMEDIATE on SQLite like the engine's writes),
//!    on the connection `store::connect` opened;
//! 2. transition: from sending the CompleteTask that ends a stage's last
//!    workflow to a poller already parked in PollTask receiving the next
//!    stage's task, over real gRPC; stages of 1 and of 4 parallel workflows;
//! 3. end to end: a 20-stage pipeline of 4 parallel no-op workflows, with
//!    scripted gRPC workers (1, 4 and 8 slots that ask for their next task
//!    with each report, and 4 that only poll) and with the reference shell
//!    worker (`worker::run_with_channel`, concurrency 4) running `true`.
//!
//! Besides, for reading the figures: a gRPC round trip (health check); the
//! floor and that round trip each after the pause a transition is measured
//! after (on a virtual machine, waking idle threads and cores costs a call
//! that starts from quiet about 0.1–0.2 ms more than one of a busy loop); the
//! CompleteTask round trip, transitions early vs. late in a 50-stage
//! execution, and CompleteTask latency while several workers complete at once.
//!
//! The bench itself never sleeps inside a measured window: its only sleeps
//! are the settle pauses that let pollers park in PollTask before the clock
//! starts. Transitions over 100 ms are counted and reported; one near 1 s
//! would mean a poller was woken by the engine's recheck timer rather than
//! by the notification.

mod common;

use std::{
    future::Future,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use reprise::{
    proto::{self as pb, execution_service_client::ExecutionServiceClient, worker_service_client::WorkerServiceClient},
    store,
    worker::{self, WorkerConfig},
};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use common::*;

/// Measured executions per transition series; one more runs first as warm-up.
const TRANSITION_EXECUTIONS: usize = 5;
const TRANSITION_STAGES: usize = 50;
const E2E_STAGES: usize = 20;
const E2E_WIDTH: usize = 4;
/// Measured runs per end-to-end series; one more runs first as warm-up.
const E2E_RUNS: usize = 5;
const PING_ITERATIONS: usize = 300;
/// Samples of the floor and of the round trip taken each after the pause a
/// one-workflow transition is measured after.
const PACED_ITERATIONS: usize = 200;
/// Transitions slower than this are listed as suspects (missed wake-up,
/// busy-timeout sleeps, recheck timer).
const SUSPECT: Duration = Duration::from_millis(100);
/// Bounds every wait of the bench so a lost wake-up cannot hang it.
const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// Pause (outside the measured window) that lets every poller re-enter
/// PollTask and park on the server before the clock starts. With several
/// pollers it is longer: on SQLite their simultaneous claims queue for the
/// one write turn before they park.
fn settle(pollers: usize) -> Duration {
    Duration::from_millis(if pollers == 1 { 3 } else { 25 })
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    eprintln!("reprise transitions bench: server, clients and workers in one process, {cores} cores");
    let reports = on_each_backend(bench_backend).await?;
    print_report(&reports);
    println!("\n(bench ran in {:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

// ---- one backend ---------------------------------------------------------

struct Transitions {
    /// CompleteTask sent → first task of the next stage received by a parked poller.
    first: Vec<Duration>,
    /// SQL statements the server sent per transition (BEGIN and COMMIT included).
    statements: Vec<u64>,
    /// CompleteTask sent → last task of the next stage received.
    all: Vec<Duration>,
    /// Round trip of that CompleteTask call.
    complete_rpc: Vec<Duration>,
    /// Index of the stage that ended, per sample.
    stage: Vec<usize>,
    /// Which measured execution (from 1), per sample.
    execution: Vec<usize>,
}

impl Transitions {
    /// Where the slowest transition happened: (execution, stage, time).
    fn slowest(&self) -> String {
        match (0..self.first.len()).max_by_key(|&i| self.first[i]) {
            Some(i) => format!("{} ms (execution {}, stage {})", ms(self.first[i]), self.execution[i], self.stage[i]),
            None => "-".into(),
        }
    }

    /// First-task samples of transitions out of stages in `range`.
    fn first_of(&self, range: std::ops::Range<usize>) -> Vec<Duration> {
        self.first.iter().zip(&self.stage).filter(|(_, s)| range.contains(s)).map(|(d, _)| *d).collect()
    }
}

/// End-to-end runs and what the workers saw meanwhile.
struct EndToEnd {
    runs: Vec<Duration>,
    /// CompleteTask round trips under load (scripted workers only).
    complete_rpc: Vec<Duration>,
}

struct BackendReport {
    name: &'static str,
    /// How tasks reached workers over the whole run of this backend.
    claims: reprise::engine::ClaimCounts,
    /// Task reports committed together with another (group commit).
    grouped: u64,
    floor: Vec<Duration>,
    /// The floor and the round trip, each after the pause a transition
    /// waits before it is measured (threads and cores idle by then).
    floor_paced: Vec<Duration>,
    ping: Vec<Duration>,
    ping_paced: Vec<Duration>,
    /// Statements sent while idle over [`IDLE_WINDOW`], pollers parked.
    idle: u64,
    one: Transitions,
    four: Transitions,
    e2e_scripted_1: EndToEnd,
    e2e_scripted: EndToEnd,
    e2e_scripted_8: EndToEnd,
    /// 4 slots that never ask for a task with their report.
    e2e_polling: EndToEnd,
    e2e_shell: EndToEnd,
}

async fn bench_backend(backend: Backend) -> anyhow::Result<BackendReport> {
    let name = backend.name();
    let db_guard = BenchDb::create(&backend).await?;
    let db = store::connect(db_guard.url()).await.context("store::connect")?;

    eprintln!("[{name}] floor: {FLOOR_ITERATIONS} × INSERT + COMMIT");
    let floor = floor(&db).await?;
    eprintln!("[{name}] floor: {PACED_ITERATIONS} × INSERT + COMMIT, each after a {} ms pause", settle(1).as_millis());
    let floor_paced = floor_paced(&db, Some(settle(1)), PACED_ITERATIONS).await?;

    let server = Server::start(db).await?;
    let result = async {
        eprintln!("[{name}] gRPC round trip (health check) × {PING_ITERATIONS}");
        let ping = grpc_ping(&server, None, PING_ITERATIONS).await?;
        eprintln!("[{name}] gRPC round trip × {PACED_ITERATIONS}, each after a {} ms pause", settle(1).as_millis());
        let ping_paced = grpc_ping(&server, Some(settle(1)), PACED_ITERATIONS).await?;
        eprintln!("[{name}] idle, {IDLE_POLLERS} pollers parked: {} s", IDLE_WINDOW.as_secs());
        let idle = idle_statements(&server).await?;
        eprintln!("[{name}] transitions, 1 workflow per stage: {TRANSITION_EXECUTIONS} × {TRANSITION_STAGES} stages");
        let one = transitions(&server, 1).await?;
        eprintln!("[{name}] transitions, 4 workflows per stage: {TRANSITION_EXECUTIONS} × {TRANSITION_STAGES} stages");
        let four = transitions(&server, 4).await?;
        eprintln!("[{name}] end to end {E2E_STAGES}×{E2E_WIDTH}, scripted gRPC workers (1 slot) × {E2E_RUNS}");
        let scripted_1 = e2e_scripted(&server, 1, true).await?;
        eprintln!("[{name}] end to end {E2E_STAGES}×{E2E_WIDTH}, scripted gRPC workers (4 slots) × {E2E_RUNS}");
        let scripted_4 = e2e_scripted(&server, 4, true).await?;
        eprintln!("[{name}] end to end {E2E_STAGES}×{E2E_WIDTH}, scripted gRPC workers (8 slots) × {E2E_RUNS}");
        let scripted_8 = e2e_scripted(&server, 8, true).await?;
        eprintln!(
            "[{name}] end to end {E2E_STAGES}×{E2E_WIDTH}, scripted gRPC workers (4 slots, polling only) × {E2E_RUNS}"
        );
        let polling = e2e_scripted(&server, 4, false).await?;
        eprintln!("[{name}] end to end {E2E_STAGES}×{E2E_WIDTH}, reference shell worker (concurrency 4) × {E2E_RUNS}");
        let e2e_shell = e2e_shell(&server, 4).await?;
        anyhow::Ok(BackendReport {
            name,
            claims: server.engine.claim_counts(),
            grouped: server.engine.grouped_reports(),
            floor,
            floor_paced,
            ping,
            ping_paced,
            idle,
            one,
            four,
            e2e_scripted_1: scripted_1,
            e2e_scripted: scripted_4,
            e2e_scripted_8: scripted_8,
            e2e_polling: polling,
            e2e_shell,
        })
    }
    .await;
    server.stop().await;
    drop(db_guard);
    result
}

// ---- the server ------------------------------------------------------------

impl Server {
    async fn create_pipeline(&self, stages: usize, width: usize, queue: &str) -> anyhow::Result<String> {
        let workflows = names("w", width);
        let stages = (0..stages).map(|s| workflow_stage(&stage_name(s), queue, &workflows)).collect();
        create_pipeline(&self.channel, stages).await
    }

    async fn start_execution(&self, pipeline_id: &str) -> anyhow::Result<String> {
        start_execution(&self.channel, pipeline_id).await
    }

    /// Follows WatchExecution until the execution is final; returns its status.
    async fn wait_final(&self, execution_id: &str) -> anyhow::Result<pb::ExecutionStatus> {
        let request = pb::WatchExecutionRequest { execution_id: execution_id.into() };
        let mut stream = ExecutionServiceClient::new(self.channel.clone()).watch_execution(request).await?.into_inner();
        while let Some(item) = stream.next().await {
            let execution = item?.execution.context("no execution in a watch message")?;
            let status = pb::ExecutionStatus::try_from(execution.status)?;
            if is_final(status) {
                return Ok(status);
            }
        }
        bail!("watch of {execution_id} ended before the execution was final")
    }
}

fn stage_name(index: usize) -> String {
    format!("s{index:02}")
}

async fn within<T>(what: &str, f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    match tokio::time::timeout(WAIT_LIMIT, f).await {
        Ok(r) => r,
        Err(_) => bail!("{what}: nothing within {} s (a lost wake-up?)", WAIT_LIMIT.as_secs()),
    }
}

/// CompleteTask that asks for nothing more (the transition series: the
/// next stage's tasks go to the parked pollers being timed).
async fn complete(client: &mut WorkerServiceClient<Channel>, task: &pb::Task) -> anyhow::Result<()> {
    complete_asking(client, task, "", "").await.map(drop)
}

/// CompleteTask that asks for the next task of `next_queue` (unless empty).
async fn complete_asking(
    client: &mut WorkerServiceClient<Channel>,
    task: &pb::Task,
    next_queue: &str,
    worker_id: &str,
) -> anyhow::Result<Option<pb::Task>> {
    let request = pb::CompleteTaskRequest {
        task_id: task.task_id.clone(),
        lease_token: task.lease_token.clone(),
        outcome: pb::TaskOutcome::Succeeded as i32,
        next_task_queue: next_queue.into(),
        worker_id: worker_id.into(),
        ..Default::default()
    };
    Ok(client.complete_task(request).await?.into_inner().next_task)
}

fn poll_request(queue: &str, worker_id: &str) -> pb::PollTaskRequest {
    pb::PollTaskRequest {
        task_queue: queue.into(),
        worker_id: worker_id.into(),
        wait: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
    }
}

// ---- baseline: a gRPC round trip ---------------------------------------

/// `iterations` health checks, each after `pause` if given.
async fn grpc_ping(server: &Server, pause: Option<Duration>, iterations: usize) -> anyhow::Result<Vec<Duration>> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut client = HealthClient::new(server.channel.clone());
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations + 20 {
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
        let started = Instant::now();
        client.check(HealthCheckRequest { service: String::new() }).await?;
        if i >= 20 {
            samples.push(started.elapsed());
        }
    }
    Ok(samples)
}

// ---- 2. transitions ----------------------------------------------------------

const IDLE_POLLERS: usize = 4;
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// Statements the server sends while nothing is due: workers parked in
/// PollTask, no execution running (the target: none).
async fn idle_statements(server: &Server) -> anyhow::Result<u64> {
    let (tx, _rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let client = WorkerServiceClient::new(server.channel.clone());
    let pollers: Vec<_> = (0..IDLE_POLLERS)
        .map(|i| spawn_poller(client.clone(), "bench-idle".into(), format!("idle-{i}"), tx.clone(), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.engine.store().statements();
    tokio::time::sleep(IDLE_WINDOW).await;
    let sent = server.engine.store().statements() - before;
    stop.cancel();
    for p in pollers {
        p.await??;
    }
    Ok(sent)
}

/// A task as a poller received it, stamped on arrival.
struct Polled {
    task: pb::Task,
    at: Instant,
}

/// A poller that sits in PollTask and forwards every task it gets, stamped.
fn spawn_poller(
    mut client: WorkerServiceClient<Channel>,
    queue: String,
    id: String,
    tx: mpsc::UnboundedSender<Polled>,
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
            if tx.send(Polled { task, at }).is_err() {
                return Ok(());
            }
        }
    })
}

async fn receive(rx: &mut mpsc::UnboundedReceiver<Polled>, n: usize) -> anyhow::Result<Vec<Polled>> {
    within("waiting for polled tasks", async {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(rx.recv().await.context("pollers stopped")?);
        }
        Ok(out)
    })
    .await
}

/// Pipelines of TRANSITION_STAGES stages of `width` workflows; `width`
/// pollers wait in PollTask; the bench completes each stage's tasks (the
/// last one on the clock) and times the next stage's tasks' arrival.
async fn transitions(server: &Server, width: usize) -> anyhow::Result<Transitions> {
    let queue = queue_name();
    let pipeline = server.create_pipeline(TRANSITION_STAGES, width, &queue).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let pollers: Vec<_> = (0..width)
        .map(|i| spawn_poller(server.workers(), queue.clone(), format!("bench-poller-{i}"), tx.clone(), stop.clone()))
        .collect();
    drop(tx);
    let mut completer = server.workers();
    let mut out = Transitions {
        first: vec![],
        statements: vec![],
        all: vec![],
        complete_rpc: vec![],
        stage: vec![],
        execution: vec![],
    };

    let run = async {
        // Execution 0 warms up caches and connections and is not recorded.
        for execution in 0..=TRANSITION_EXECUTIONS {
            let execution_id = server.start_execution(&pipeline).await?;
            let mut current = receive(&mut rx, width).await?;
            for stage in 0..TRANSITION_STAGES {
                for p in &current {
                    ensure!(p.task.execution_id == execution_id, "a task of another execution arrived");
                    ensure!(
                        p.task.stage_name == stage_name(stage),
                        "expected stage {stage}, got {}",
                        p.task.stage_name
                    );
                }
                // Let every poller get back into PollTask and park there.
                tokio::time::sleep(settle(width)).await;
                let last = current.pop().expect("width >= 1");
                for p in &current {
                    complete(&mut completer, &p.task).await?;
                }
                let statements_before = server.engine.store().statements();
                let started = Instant::now();
                complete(&mut completer, &last.task).await?;
                let rpc = started.elapsed();
                if stage + 1 == TRANSITION_STAGES {
                    break; // that completion finished the execution
                }
                let next = receive(&mut rx, width).await?;
                let statements = server.engine.store().statements() - statements_before;
                if execution > 0 {
                    out.statements.push(statements);
                    out.first.push(next.iter().map(|p| p.at).min().expect("n >= 1") - started);
                    out.all.push(next.iter().map(|p| p.at).max().expect("n >= 1") - started);
                    out.complete_rpc.push(rpc);
                    out.stage.push(stage);
                    out.execution.push(execution);
                }
                current = next;
            }
            let status = within("final state", server.wait_final(&execution_id)).await?;
            ensure!(status == pb::ExecutionStatus::Succeeded, "execution ended {status:?}");
        }
        anyhow::Ok(())
    };
    let result = run.await;
    stop.cancel();
    for p in pollers {
        let _ = p.await;
    }
    result.map(|()| out)
}

// ---- 3. end to end -------------------------------------------------------------

/// Runs E2E_RUNS (+1 warm-up) executions of a 20×4 pipeline while `workers`
/// serve its queue; returns start-to-final times.
async fn e2e_runs(server: &Server, queue: &str) -> anyhow::Result<Vec<Duration>> {
    let pipeline = server.create_pipeline(E2E_STAGES, E2E_WIDTH, queue).await?;
    let mut samples = Vec::with_capacity(E2E_RUNS);
    for run in 0..=E2E_RUNS {
        let started = Instant::now();
        let execution_id = server.start_execution(&pipeline).await?;
        let status = within("end to end run", server.wait_final(&execution_id)).await?;
        let elapsed = started.elapsed();
        ensure!(status == pb::ExecutionStatus::Succeeded, "execution ended {status:?}");
        if run > 0 {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

/// Workers that complete every task at once over gRPC; with `ask_next`,
/// each report asks for the worker's next task (a PollTask only when the
/// answer carries none).
async fn e2e_scripted(server: &Server, slots: usize, ask_next: bool) -> anyhow::Result<EndToEnd> {
    let queue = queue_name();
    let stop = CancellationToken::new();
    let workers: Vec<_> = (0..slots)
        .map(|i| {
            let (mut client, queue, stop) = (server.workers(), queue.clone(), stop.clone());
            let id = format!("bench-scripted-{i}");
            tokio::spawn(async move {
                let mut completes = Vec::new();
                let mut handed = None;
                loop {
                    let task = match handed.take() {
                        Some(task) => task,
                        None => {
                            let polled = tokio::select! {
                                r = client.poll_task(poll_request(&queue, &id)) => r,
                                _ = stop.cancelled() => return anyhow::Ok(completes),
                            };
                            match polled.context("PollTask failed")?.into_inner().task {
                                Some(task) => task,
                                None => continue,
                            }
                        }
                    };
                    let started = Instant::now();
                    let next_queue = if ask_next && !stop.is_cancelled() { queue.as_str() } else { "" };
                    handed = complete_asking(&mut client, &task, next_queue, &id).await?;
                    completes.push(started.elapsed());
                }
            })
        })
        .collect();
    let result = e2e_runs(server, &queue).await;
    stop.cancel();
    let mut complete_rpc = Vec::new();
    for w in workers {
        match w.await {
            Ok(Ok(c)) => complete_rpc.extend(c),
            Ok(Err(e)) => eprintln!("warning: scripted worker: {e:#}"),
            Err(e) => eprintln!("warning: scripted worker task: {e}"),
        }
    }
    Ok(EndToEnd { runs: result?, complete_rpc })
}

/// The reference worker (`reprise worker`) running `true` through `sh -c`.
async fn e2e_shell(server: &Server, concurrency: usize) -> anyhow::Result<EndToEnd> {
    let queue = queue_name();
    let stop = CancellationToken::new();
    let config = WorkerConfig {
        server: server.address.clone(),
        queue: queue.clone(),
        concurrency,
        worker_id: "bench-shell".into(),
        token: None,
        task_env_allow: vec![],
    };
    let worker = tokio::spawn(worker::run_with_channel(server.channel.clone(), config, stop.clone()));
    let result = e2e_runs(server, &queue).await;
    stop.cancel();
    match tokio::time::timeout(Duration::from_secs(10), worker).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("warning: reference worker: {e:#}"),
        Ok(Err(e)) => eprintln!("warning: reference worker task: {e}"),
        Err(_) => eprintln!("warning: reference worker did not stop within 10 s"),
    }
    Ok(EndToEnd { runs: result?, complete_rpc: vec![] })
}

// ---- the report ------------------------------------------------------------------

fn trio(s: &[Duration]) -> String {
    format!("{} / {} / {} ms", ms(p50(s)), ms(p99(s)), ms(max(s)))
}

fn spread(s: &[Duration]) -> String {
    let min = s.iter().copied().min().unwrap_or_default();
    format!("{} ms ({}..{})", ms(p50(s)), ms(min), ms(max(s)))
}

fn print_report(reports: &[BackendReport]) {
    println!();
    println!("== Reprise stage transitions (release build; server, clients and workers share one process) ==");
    println!(
        "floor: {FLOOR_ITERATIONS} single-row INSERT+COMMIT; transitions: {TRANSITION_EXECUTIONS} executions × \
         {} transitions (+1 warm-up execution); e2e: median of {E2E_RUNS} runs (+1 warm-up)",
        TRANSITION_STAGES - 1
    );
    println!();
    println!(
        "{:<9} {:<29} {:<29} {:<29} 20x4 e2e (scripted / shell)",
        "backend", "floor insert+commit p50/p99", "transition p50/p99 (1 wf)", "transition p50/p99 (4 wf)",
    );
    for r in reports {
        println!(
            "{:<9} {:<29} {:<29} {:<29} {} / {} ms",
            r.name,
            pair(&r.floor),
            pair(&r.one.first),
            pair(&r.four.first),
            ms(p50(&r.e2e_scripted.runs)),
            ms(p50(&r.e2e_shell.runs)),
        );
    }
    println!();
    let (early, late) = (0..10, TRANSITION_STAGES - 10..TRANSITION_STAGES);
    for r in reports {
        let floor = p50(&r.floor);
        println!("{}:", r.name);
        println!(
            "  transition p50 / floor p50:            {:.1}× (1 wf)   {:.1}× (4 wf)",
            ratio(p50(&r.one.first), floor),
            ratio(p50(&r.four.first), floor)
        );
        let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
        println!(
            "  SQL statements per transition:         {:.2} (1 wf)   {:.2} (4 wf)   (BEGIN and COMMIT included)",
            avg(&r.one.statements),
            avg(&r.four.statements)
        );
        let c = &r.claims;
        let all = (c.found + c.empty).max(1);
        println!(
            "  tasks to workers:                      {} handed at dispatch ({} with a report's answer), {} claimed, {} claims found nothing ({:.1}% of claims)",
            c.handed_at_dispatch,
            c.handed_with_report,
            c.found,
            c.empty,
            100.0 * c.empty as f64 / all as f64
        );
        println!("  reports committed in a group of two or more: {}", r.grouped);
        println!(
            "  idle, {IDLE_POLLERS} pollers parked:               {} statements in {} s (target: none)",
            r.idle,
            IDLE_WINDOW.as_secs()
        );
        println!("  (below: p50 / p99 / max)");
        println!("  floor insert+commit:                   {}", trio(&r.floor));
        println!("  transition (1 wf):                     {}", trio(&r.one.first));
        println!("  transition (4 wf):                     {}", trio(&r.four.first));
        println!("  gRPC round trip (health check):        {}", trio(&r.ping));
        let pause = settle(1).as_millis();
        println!(
            "  after a {pause} ms pause each, as a 1-wf transition is measured (the floor above runs back to back):"
        );
        println!("    floor insert+commit:                 {}", trio(&r.floor_paced));
        println!("    gRPC round trip (health check):      {}", trio(&r.ping_paced));
        println!(
            "    transition p50 / that floor p50:     {:.1}× (1 wf)   {:.1}× (4 wf)   (the target is the ratio to the floor above)",
            ratio(p50(&r.one.first), p50(&r.floor_paced)),
            ratio(p50(&r.four.first), p50(&r.floor_paced))
        );
        // A transition cannot cost less than its write and one gRPC round
        // trip (the report in, the next task out): what it costs beyond
        // those two is the service's own work.
        let unavoidable = p50(&r.floor_paced) + p50(&r.ping_paced);
        println!(
            "    transition p50 / (that floor + that round trip) p50: {:.1}× (1 wf)   {:.1}× (4 wf)   (not a target: the share of the service's own work)",
            ratio(p50(&r.one.first), unavoidable),
            ratio(p50(&r.four.first), unavoidable)
        );
        println!(
            "  CompleteTask round trip (1 wf):        {}   (the call that commits the transition)",
            trio(&r.one.complete_rpc)
        );
        println!("  CompleteTask round trip (4 wf, 4th):   {}", trio(&r.four.complete_rpc));
        println!("  4 wf: until all 4 next tasks handed:   {}", trio(&r.four.all));
        println!(
            "  transition p50 out of stages {:>2}..{:<2}:  {} ms (1 wf), {} ms (4 wf)",
            early.start,
            early.end - 1,
            ms(p50(&r.one.first_of(early.clone()))),
            ms(p50(&r.four.first_of(early.clone())))
        );
        println!(
            "  transition p50 out of stages {:>2}..{:<2}:  {} ms (1 wf), {} ms (4 wf)",
            late.start,
            late.end - 2,
            ms(p50(&r.one.first_of(late.clone()))),
            ms(p50(&r.four.first_of(late.clone())))
        );
        println!(
            "  slowest transition:                    {} (1 wf), {} (4 wf); over {} ms: {} + {} of {} + {}",
            r.one.slowest(),
            r.four.slowest(),
            SUSPECT.as_millis(),
            r.one.first.iter().filter(|d| **d > SUSPECT).count(),
            r.four.first.iter().filter(|d| **d > SUSPECT).count(),
            r.one.first.len(),
            r.four.first.len(),
        );
        println!("  20x4 e2e, median (min..max):");
        println!("    scripted, 1 slot:                    {}", spread(&r.e2e_scripted_1.runs));
        println!("    scripted, 4 slots:                   {}", spread(&r.e2e_scripted.runs));
        println!("    scripted, 8 slots:                   {}", spread(&r.e2e_scripted_8.runs));
        println!("    scripted, 4 slots, polling only:     {}", spread(&r.e2e_polling.runs));
        println!("    reference shell worker, 4:           {}", spread(&r.e2e_shell.runs));
        println!(
            "    per stage:                           scripted 4 slots {} ms, shell {} ms",
            ms(p50(&r.e2e_scripted.runs) / E2E_STAGES as u32),
            ms(p50(&r.e2e_shell.runs) / E2E_STAGES as u32),
        );
        for (label, e) in [
            ("1 slot", &r.e2e_scripted_1),
            ("4 slots", &r.e2e_scripted),
            ("8 slots", &r.e2e_scripted_8),
            ("4 polling", &r.e2e_polling),
        ] {
            println!(
                "    CompleteTask in e2e, {label:<8}:       {} (n={})",
                trio(&e.complete_rpc),
                e.complete_rpc.len()
            );
        }
        if r.name == "sqlite" {
            println!(
                "  note: SQLite has one writer; claims and completions queue for the engine's write turn, so \
                 with 4 or 8 slots CompleteTask includes waiting behind the other slots' writes."
            );
        }
        let slow = [&r.one.first, &r.four.first].into_iter().flatten().filter(|d| **d > SUSPECT).count();
        if slow > 0 {
            println!(
                "  NOTE: {slow} transition(s) took over {} ms (near 1 s would mean a poller woken by the recheck \
                 timer instead of the notification)",
                SUSPECT.as_millis()
            );
        }
    }
}
