//! The `reprise` binary: parses the command line, sets up logging, runs.

use clap::Parser;
use reprise::{
    cli::{Cli, Command, ServeArgs},
    domain::resume::ChainLimits,
    engine::{Engine, Settings},
    store, telemetry, worker,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init("info,sqlx=warn,sea_orm=warn");
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    match cli.command {
        Command::Serve(args) => serve(args, shutdown).await,
        Command::Worker(args) => {
            let config = worker::WorkerConfig {
                server: args.server,
                queue: args.queue,
                concurrency: args.concurrency.max(1),
                worker_id: args.worker_id.unwrap_or_else(default_worker_id),
            };
            worker::run(config, shutdown).await
        }
        Command::Dev(args) => {
            let config = worker::WorkerConfig {
                server: format!("http://{}", args.serve.listen),
                queue: args.queue,
                concurrency: args.concurrency.max(1),
                worker_id: format!("dev-{}", default_worker_id()),
            };
            tracing::info!(queue = %config.queue, "dev mode: server and built-in worker in one process");
            let worker = tokio::spawn(worker::run(config, shutdown.clone()));
            let served = serve(args.serve, shutdown.clone()).await;
            shutdown.cancel();
            worker.await??;
            served
        }
    }
}

async fn serve(args: ServeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let db = store::connect(&args.database_url).await?;
    tracing::info!(database = %redact(&args.database_url), "database ready, migrations applied");
    let chain_limits = ChainLimits {
        max_attempts: args.chain_max_attempts,
        max_age_ms: args.chain_max_age.map(|d| d.as_millis() as i64),
    };
    let engine = Engine::new(db, Settings { lease: args.lease, recheck: args.recheck, chain_limits });
    let listener = TcpListener::bind(args.listen).await?;
    reprise::server::serve(listener, engine, shutdown).await
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C.
async fn on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("signal received; shutting down");
    shutdown.cancel();
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// Hides a password in a database URL before it reaches the log.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}
