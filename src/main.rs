//! The `reprise` binary: parses the command line, sets up logging, runs.

use clap::{CommandFactory, FromArgMatches};
use reprise::{
    auth::{Authenticator, CertificateIdentity, JwtConfig, Verifier, tls::TlsFiles},
    cli::{AuthArgs, Cli, Command, RetentionArgs, ServeArgs},
    credentials::{self, option},
    domain::{limits::Limits, resume::ChainLimits, retention::Policy},
    engine::secrets::Sealer,
    engine::{Engine, Settings},
    server::ServeOptions,
    store, telemetry, worker,
};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    if let Err(why) = credentials::refuse_on_command_line(&matches) {
        Cli::command().error(clap::error::ErrorKind::ArgumentConflict, why).exit();
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if !matches!(cli.command, Command::Client(_)) {
        // Before the runtime starts any thread: scrubbing writes to memory
        // that reading the environment reads. Tasks run by this process (or
        // anything else of its user) must not read its credentials back
        // through /proc/PID/environ or /proc/PID/mem.
        credentials::scrub_environment(&credentials::credential_variables());
        credentials::forbid_inspection()
            .map_err(|e| anyhow::anyhow!("cannot make the process non-dumpable (prctl PR_SET_DUMPABLE): {e}"))?;
        // Before the runtime's threads make their arenas: what is freed goes
        // back to the system (src/memory.rs).
        reprise::memory::configure();
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run_cli(cli))
}

async fn run_cli(cli: Cli) -> anyhow::Result<()> {
    // Client commands only call a server: no log set-up, their own exit codes.
    if let Command::Client(command) = cli.command {
        std::process::exit(reprise::client::main(command).await);
    }
    let telemetry = telemetry::init("info,sqlx=warn,sea_orm=warn", cli.otlp_endpoint.as_deref(), cli.log_format)?;
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
                token: credentials::value_or_file(args.token, args.token_file.as_deref(), option("token"))?,
                task_env_allow: args.tasks.allowed(),
            };
            worker::run(config, shutdown).await
        }
        Command::Dev(args) => {
            // The port is bound before the worker starts, so its first
            // connection is accepted rather than refused.
            let token = credentials::value_or_file(args.token, args.token_file.as_deref(), option("token"))?;
            let server = prepare(args.serve, true).await?;
            let config = worker::WorkerConfig {
                server: format!("http://{}", server.listener.local_addr()?),
                queue: args.queue,
                concurrency: args.concurrency.max(1),
                worker_id: format!("dev-{}", default_worker_id()),
                token,
                task_env_allow: args.tasks.allowed(),
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
    // Bound first: a port in use fails at once, naming it, rather than after
    // the migrations; and connections made meanwhile wait instead of being refused.
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (--listen / REPRISE_LISTEN): {e}", args.listen))?;
    let mut options = serve_options(&args.auth, dev)?;
    if let reprise::auth::Authenticator::Enabled { verifier: Some(verifier), .. } = &options.auth {
        verifier.start().await?;
    }
    options.streams = reprise::api::StreamLimits {
        per_caller: args.watch_streams_per_caller.max(1),
        max_lifetime: args.watch_max_lifetime.max(std::time::Duration::from_secs(1)),
    };
    options.max_concurrent_streams = args.max_concurrent_streams.max(1);
    options.web = args.web.clone();
    if let Some(address) = args.metrics_listen {
        reprise::metrics::install(address)?;
        options.metrics_sampling = Some(std::time::Duration::from_secs(10));
    }
    let database_url = match &args.database_url_file {
        Some(path) => credentials::read_file(path, option("database_url"))?,
        None => args.database_url.clone(),
    };
    let store_options = store::StoreOptions {
        acquire_timeout: args.database_acquire_timeout,
        max_connections: args.database_max_connections.max(2),
    };
    let db = store::connect_with(&database_url, store_options)
        .await
        .map_err(|e| anyhow::anyhow!("database {}: {e:#}", credentials::redact_url(&database_url)))?;
    tracing::info!(database = %credentials::redact_url(&database_url), "database ready, migrations applied");
    let chain_limits = ChainLimits {
        max_attempts: args.chain_max_attempts,
        max_age_ms: args.chain_max_age.map(|d| d.as_millis() as i64),
    };
    let retention = retention_policy(&args.retention, chain_limits);
    let secrets = secrets_sealer(&args, &database_url, dev)?;
    let engine = Engine::new(
        db,
        Settings {
            lease: args.lease,
            recheck: args.recheck,
            chain_limits,
            retention,
            retention_interval: args.retention.retention_interval,
            secrets,
            limits: Limits {
                max_stages: args.limits.max_stages as usize,
                max_workflows_per_stage: args.limits.max_workflows_per_stage as usize,
                max_workflows: args.limits.max_workflows as usize,
                ..Limits::default()
            },
        },
    );
    if let Some(admin) = &args.auth.bootstrap_admin {
        engine.bootstrap_admin(admin).await?;
    }
    Ok(Prepared { listener, engine, options })
}

/// The key secret variables are sealed with: from the environment or a
/// file; `dev` on a SQLite file keeps its own next to the database.
fn secrets_sealer(args: &ServeArgs, database_url: &str, dev: bool) -> anyhow::Result<Option<Arc<Sealer>>> {
    let key =
        credentials::value_or_file(args.secrets_key.clone(), args.secrets_key_file.as_deref(), option("secrets_key"))?;
    let key = match key {
        Some(key) => Some(key),
        None if dev => dev_secrets_key(database_url)?,
        None => None,
    };
    match key {
        Some(key) => Ok(Some(Arc::new(Sealer::from_key(key.as_bytes())?))),
        None => {
            tracing::info!(
                "no secrets key (REPRISE_SECRETS_KEY or --secrets-key-file): pipelines with secret variables cannot start"
            );
            Ok(None)
        }
    }
}

/// `dev`'s own secrets key, kept (mode 0600) in `<database file>.secrets-key`.
fn dev_secrets_key(database_url: &str) -> anyhow::Result<Option<String>> {
    let Some(path) = database_url.strip_prefix("sqlite://").map(|p| p.split('?').next().unwrap_or(p)) else {
        return Ok(None);
    };
    if path.is_empty() || path.contains(":memory:") {
        return Ok(None);
    }
    let key_path = std::path::PathBuf::from(format!("{path}.secrets-key"));
    if key_path.exists() {
        return Ok(Some(credentials::read_file(&key_path, option("secrets_key"))?));
    }
    let key = Sealer::generate_key()?;
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    std::io::Write::write_all(&mut file.open(&key_path)?, key.as_bytes())?;
    tracing::info!(path = %key_path.display(), "dev: created a secrets key for secret variables");
    Ok(Some(key))
}

/// The retention policy from the flags, with a word on what it keeps.
fn retention_policy(args: &RetentionArgs, limits: ChainLimits) -> Policy {
    let ms = |d: std::time::Duration| d.as_millis().min(i64::MAX as u128) as i64;
    let policy = Policy {
        chains_for_ms: args.retain_chains_for.map(ms),
        chains_per_pipeline: args.retain_chains_per_pipeline,
        audit_for_ms: args.retain_audit_for.map(ms),
        dry_run: args.retention_dry_run,
    };
    if policy.deletes_chains() && limits.max_age_ms.is_none() && limits.max_attempts.is_none() {
        tracing::warn!(
            "retention keeps every chain that may still be resumed, and without --chain-max-age failed chains \
             may be resumed forever: only succeeded chains will be deleted"
        );
    }
    if !policy.is_enabled() {
        tracing::info!("retention is off: executions, outputs and audit events are kept forever");
    }
    policy
}

/// Authentication and TLS from the flags. `serve` refuses to run without
/// authentication unless told `--insecure-no-auth`; `dev` runs without it
/// (and says so) unless authentication is configured.
fn serve_options(args: &AuthArgs, dev: bool) -> anyhow::Result<ServeOptions> {
    let jwt = JwtConfig {
        hs256_secret: credentials::value_or_file(
            args.auth_hs256_secret.clone(),
            args.auth_hs256_secret_file.as_deref(),
            option("auth_hs256_secret"),
        )?,
        public_key_file: args.auth_public_key_file.clone(),
        jwks_file: args.auth_jwks_file.clone(),
        jwks_url: args.auth_jwks_url.clone(),
        jwks_refresh: args.auth_jwks_refresh,
        issuer: args.auth_issuer.clone(),
        audience: args.auth_audience.clone(),
        leeway: args.auth_leeway,
    };
    let tls_files = TlsFiles {
        cert_file: args.tls_cert_file.clone(),
        key_file: args.tls_key_file.clone(),
        client_ca_file: args.tls_client_ca_file.clone(),
        client_certificate_optional: args.tls_open_health_and_reflection,
    };
    let tls = tls_files.server_config()?;
    let mutual_tls = args.tls_client_ca_file.is_some();
    let auth = if jwt.is_configured() || mutual_tls {
        let verifier = if jwt.is_configured() { Some(Arc::new(Verifier::new(&jwt)?)) } else { None };
        let certificates = mutual_tls.then(|| CertificateIdentity {
            name: args.tls_client_identity,
            prefix: args.tls_client_subject_prefix.clone(),
        });
        if mutual_tls && args.tls_client_subject_prefix.is_empty() {
            tracing::warn!(
                "--tls-client-subject-prefix is empty: a certificate named like a token subject (CN=admin) gets that subject's rights"
            );
        }
        Authenticator::Enabled { verifier, certificates }
    } else if args.insecure_no_auth || dev {
        tracing::warn!(
            "AUTHENTICATION IS OFF: every caller may start, resume and abort anything; never run like this in production"
        );
        Authenticator::Disabled
    } else {
        anyhow::bail!(
            "no authentication is configured: set REPRISE_AUTH_HS256_SECRET (or --auth-hs256-secret-file), \
             --auth-public-key-file, --auth-jwks-file, --auth-jwks-url or --tls-client-ca-file (or --insecure-no-auth to run \
             without, never in production)"
        );
    };
    Ok(ServeOptions { auth, tls, ..ServeOptions::default() })
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
