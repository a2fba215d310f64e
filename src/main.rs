//! The `reprise` binary: parses the command line, sets up logging, runs.

use clap::Parser;
use reprise::{
    auth::{Authenticator, JwtConfig, Verifier, tls::TlsFiles},
    cli::{AuthArgs, Cli, Command, ServeArgs},
    domain::resume::ChainLimits,
    engine::{Engine, Settings},
    server::ServeOptions,
    store, telemetry, worker,
};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Client commands only call a server: no log set-up, their own exit codes.
    if let Command::Client(command) = cli.command {
        std::process::exit(reprise::client::main(command).await);
    }
    let telemetry = telemetry::init("info,sqlx=warn,sea_orm=warn", cli.otlp_endpoint.as_deref())?;
    reprise::panic::install_hook();
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    let outcome = run(cli.command, shutdown).await;
    telemetry.shutdown();
    outcome
}

async fn run(command: Command, shutdown: CancellationToken) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args, false, shutdown).await,
        Command::Client(_) => unreachable!("client commands return from main before logging starts"),
        Command::Worker(args) => {
            let config = worker::WorkerConfig {
                server: args.server,
                queue: args.queue,
                concurrency: args.concurrency.max(1),
                worker_id: args.worker_id.unwrap_or_else(default_worker_id),
                token: args.token,
            };
            worker::run(config, shutdown).await
        }
        Command::Dev(args) => {
            // The port is bound before the worker starts, so its first
            // connection is accepted rather than refused.
            let server = prepare(args.serve, true).await?;
            let config = worker::WorkerConfig {
                server: format!("http://{}", server.listener.local_addr()?),
                queue: args.queue,
                concurrency: args.concurrency.max(1),
                worker_id: format!("dev-{}", default_worker_id()),
                token: args.token,
            };
            tracing::info!(queue = %config.queue, "dev mode: server and built-in worker in one process");
            let worker = tokio::spawn(worker::run(config, shutdown.clone()));
            let served = server.serve(shutdown.clone()).await;
            shutdown.cancel();
            worker.await??;
            served
        }
    }
}

async fn serve(args: ServeArgs, dev: bool, shutdown: CancellationToken) -> anyhow::Result<()> {
    prepare(args, dev).await?.serve(shutdown).await
}

/// A server with its database migrated and its port bound, not yet serving.
struct Prepared {
    listener: TcpListener,
    engine: Engine,
    options: ServeOptions,
}

impl Prepared {
    async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        reprise::server::serve_with(self.listener, self.engine, self.options, shutdown).await
    }
}

async fn prepare(args: ServeArgs, dev: bool) -> anyhow::Result<Prepared> {
    let mut options = serve_options(&args.auth, dev)?;
    if let Some(address) = args.metrics_listen {
        reprise::metrics::install(address)?;
        options.metrics_sampling = Some(std::time::Duration::from_secs(10));
    }
    let db = store::connect(&args.database_url).await?;
    tracing::info!(database = %redact(&args.database_url), "database ready, migrations applied");
    let chain_limits = ChainLimits {
        max_attempts: args.chain_max_attempts,
        max_age_ms: args.chain_max_age.map(|d| d.as_millis() as i64),
    };
    let engine =
        Engine::new(db, Settings { lease: args.lease, recheck: args.recheck, chain_limits, ..Settings::default() });
    if let Some(admin) = &args.auth.bootstrap_admin {
        engine.bootstrap_admin(admin).await?;
    }
    let listener = TcpListener::bind(args.listen).await?;
    Ok(Prepared { listener, engine, options })
}

/// Authentication and TLS from the flags. `serve` refuses to run without
/// authentication unless told `--insecure-no-auth`; `dev` runs without it
/// (and says so) unless authentication is configured.
fn serve_options(args: &AuthArgs, dev: bool) -> anyhow::Result<ServeOptions> {
    let jwt = JwtConfig {
        hs256_secret: args.auth_hs256_secret.clone(),
        public_key_file: args.auth_public_key_file.clone(),
        jwks_file: args.auth_jwks_file.clone(),
        issuer: args.auth_issuer.clone(),
        audience: args.auth_audience.clone(),
    };
    let tls_files = TlsFiles {
        cert_file: args.tls_cert_file.clone(),
        key_file: args.tls_key_file.clone(),
        client_ca_file: args.tls_client_ca_file.clone(),
    };
    let tls = tls_files.server_config()?;
    let mutual_tls = args.tls_client_ca_file.is_some();
    let auth = if jwt.is_configured() || mutual_tls {
        let verifier = if jwt.is_configured() { Some(Arc::new(Verifier::new(&jwt)?)) } else { None };
        Authenticator::Enabled { verifier, accept_client_certificates: mutual_tls }
    } else if args.insecure_no_auth || dev {
        tracing::warn!(
            "AUTHENTICATION IS OFF: every caller may start, resume and abort anything; never run like this in production"
        );
        Authenticator::Disabled
    } else {
        anyhow::bail!(
            "no authentication is configured: set --auth-hs256-secret, --auth-public-key-file, --auth-jwks-file or \
             --tls-client-ca-file (or --insecure-no-auth to run without, never in production)"
        );
    };
    Ok(ServeOptions { auth, tls, metrics_sampling: None })
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
