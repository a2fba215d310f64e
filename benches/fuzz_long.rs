//! The long fuzz run (issue 9): by default 100,000 generated adversarial
//! requests (the generator of `tests/api/fuzz_gen.rs`, shared with the fuzz
//! test) against an in-process server with bearer tokens and one without,
//! on SQLite and then on PostgreSQL when `REPRISE_TEST_POSTGRES_URL` is set.
//! Prints the answers by status code, the rules broken (none, or it exits 1),
//! and the process's resident memory (server and client share it) before,
//! every 10,000 requests, and after.
//!
//! ```sh
//! cargo bench --bench fuzz_long                 # 100,000 per backend
//! cargo bench --bench fuzz_long -- 300000 16    # requests, concurrency
//! ```

#[path = "../tests/api/fuzz_gen.rs"]
mod fuzz_gen;

mod common;

use std::time::{Duration, Instant};

use common::{Backend, BenchDb, POSTGRES_ENV};
use fuzz_gen::{Endpoint, Tally, can_run_a_pipeline, rss_kib, run, seed, serve_options};
use reprise::{
    engine::{Engine, Settings},
    store,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const ROUND: usize = 10_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs and panics as `serve` has them: warnings and errors, one line each.
    let _telemetry = reprise::telemetry::init("warn", None, reprise::telemetry::LogFormat::Text)?;
    reprise::panic::install_hook();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let total: usize = args.first().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let concurrency: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(16);
    let mut backends = vec![Backend::Sqlite];
    match std::env::var(POSTGRES_ENV) {
        Ok(url) => backends.push(Backend::Postgres(url)),
        Err(_) => println!("(set {POSTGRES_ENV} to fuzz PostgreSQL too)"),
    }
    let mut failed = false;
    for backend in backends {
        failed |= !fuzz(&backend, total, concurrency).await?;
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// Resident memory as is, and after glibc hands its free pages back to the
/// system: the second is what the process still holds, the first also what
/// its allocator keeps for reuse after the biggest requests.
fn memory() -> String {
    let resident = rss_kib();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only releases free memory.
        unsafe { malloc_trim(0) };
    }
    format!("{} (after malloc_trim {})", mib(resident), mib(rss_kib()))
}

/// A server on `engine`: with authentication (`secured`) or without. Both
/// share one engine, as one process may hold a SQLite file.
async fn server(engine: &Engine, secured: bool, stop: &CancellationToken) -> anyhow::Result<(Engine, Channel)> {
    let engine = engine.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    let (e, stop) = (engine.clone(), stop.clone());
    tokio::spawn(async move {
        let served = if secured {
            reprise::server::serve_with(listener, e, serve_options(), stop).await
        } else {
            reprise::server::serve(listener, e, stop).await
        };
        if let Err(err) = served {
            eprintln!("server failed: {err:#}");
            std::process::exit(2);
        }
    });
    Ok((engine, Channel::from_shared(address)?.connect().await?))
}

/// One backend: true if no rule was broken and pipelines still run.
async fn fuzz(backend: &Backend, total: usize, concurrency: usize) -> anyhow::Result<bool> {
    let db = BenchDb::create(backend).await?;
    let stop = CancellationToken::new();
    let settings = Settings { lease: Duration::from_secs(30), recheck: Duration::from_secs(1), ..Settings::default() };
    let engine = Engine::new(store::connect(db.url()).await?, settings);
    let (secured_engine, secured) = server(&engine, true, &stop).await?;
    let (open_engine, open) = server(&engine, false, &stop).await?;
    let targets = seed(&secured_engine, &secured).await;
    let endpoints = [Endpoint::secured(secured.clone()), Endpoint::open(open.clone())];
    println!("\n== {} — {total} requests, {concurrency} at a time", backend.name());
    println!("resident memory before: {}", memory());
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut peak = rss_kib().unwrap_or(0);
    let mut sent = 0;
    let mut round = 0u64;
    while sent < total {
        let n = ROUND.min(total - sent);
        let done = run(&endpoints, targets.clone(), 1000 + round, n, concurrency).await;
        sent += n;
        round += 1;
        tally.absorb(done);
        peak = peak.max(rss_kib().unwrap_or(0));
        let cached = |e: &Engine| e.definitions().size();
        let (n1, b1) = cached(&engine);
        println!(
            "{sent:>7} sent in {:>6.1} s; resident {}; queues waited on: {}; definitions cached: {} (weighing {:.1} MiB)",
            started.elapsed().as_secs_f64(),
            memory(),
            secured_engine.parked_queues(),
            n1,
            b1 as f64 / 1024.0 / 1024.0
        );
    }
    let elapsed = started.elapsed();
    let ran = can_run_a_pipeline(&secured, true).await.and(can_run_a_pipeline(&open, false).await);
    // Give long polls cut off by the client a moment to wind down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("resident memory after: {}; peak {}", memory(), mib(Some(peak)));
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
    let waited = secured_engine.parked_queues();
    println!("queues still waited on after the run: {waited}");
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
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    secured_engine.store().close().await;
    drop((secured_engine, open_engine, secured, open));
    drop(db);
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("resident memory once the servers stopped: {}", memory());
    Ok(tally.broken.is_empty() && ran.is_ok())
}
