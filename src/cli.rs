//! Command-line interface. Every flag can also come from a `REPRISE_`
//! environment variable, which is how containers configure it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "reprise",
    version,
    about = "Durable deployment pipelines over gRPC, resumable from any stage they reached"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Export traces over OTLP/gRPC to this collector, e.g. http://otel-collector:4317 (off when unset).
    #[arg(long, global = true, env = "REPRISE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (production: PostgreSQL, several replicas may share it).
    Serve(ServeArgs),
    /// Run a reference worker that executes shell tasks from a task queue.
    Worker(WorkerArgs),
    /// Run the server and a built-in worker in one process, on SQLite.
    Dev(DevArgs),
    /// Client commands (apply, start, get, list, watch, abort, resume, history, approve, reject, pause, continue).
    #[command(flatten)]
    Client(crate::client::ClientCommand),
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "REPRISE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Database URL: `sqlite://FILE` (created if missing) or `postgres://…`.
    #[arg(long, env = "REPRISE_DATABASE_URL", default_value = "sqlite://reprise.db")]
    pub database_url: String,
    /// How long a task lease lasts without a heartbeat.
    #[arg(long, env = "REPRISE_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,
    /// Longest wait before noticing changes made by another replica.
    #[arg(long, env = "REPRISE_RECHECK", default_value = "1s", value_parser = parse_duration)]
    pub recheck: Duration,
    /// Most executions a resume chain may have (the original included); unlimited if unset.
    #[arg(long, env = "REPRISE_CHAIN_MAX_ATTEMPTS")]
    pub chain_max_attempts: Option<u32>,
    /// Oldest a chain may be, from its first attempt, to be resumed; unlimited if unset.
    #[arg(long, env = "REPRISE_CHAIN_MAX_AGE", value_parser = parse_duration)]
    pub chain_max_age: Option<Duration>,
    /// Serve Prometheus metrics on this address at /metrics, e.g. 0.0.0.0:9090 (off when unset).
    #[arg(long, env = "REPRISE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Authentication and TLS.
#[derive(Debug, Args, Clone, Default)]
pub struct AuthArgs {
    /// Accept HS256 bearer tokens signed with this secret (at least 32 bytes).
    #[arg(long, env = "REPRISE_AUTH_HS256_SECRET", hide_env_values = true)]
    pub auth_hs256_secret: Option<String>,
    /// Accept RS256 or ES256 bearer tokens verified by the public key in this PEM file.
    #[arg(long, env = "REPRISE_AUTH_PUBLIC_KEY_FILE")]
    pub auth_public_key_file: Option<PathBuf>,
    /// Accept bearer tokens verified by the keys of this JWKS file.
    #[arg(long, env = "REPRISE_AUTH_JWKS_FILE")]
    pub auth_jwks_file: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "REPRISE_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "REPRISE_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Make this subject an admin at start-up (the first admin of a new installation).
    #[arg(long, env = "REPRISE_BOOTSTRAP_ADMIN")]
    pub bootstrap_admin: Option<String>,
    /// Serve without authentication: every caller may do everything. Never in production.
    #[arg(long, env = "REPRISE_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Serve TLS with this certificate (PEM).
    #[arg(long, env = "REPRISE_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(long, env = "REPRISE_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Require client certificates signed by this CA (mutual TLS); the
    /// certificate's common name is the caller's subject when it sends no token.
    #[arg(long, env = "REPRISE_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct WorkerArgs {
    /// The server to poll, e.g. http://127.0.0.1:50051.
    #[arg(long, env = "REPRISE_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// The task queue to take work from.
    #[arg(long, env = "REPRISE_QUEUE", default_value = "default")]
    pub queue: String,
    /// How many tasks to run at once.
    #[arg(long, env = "REPRISE_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// Name shown in logs; defaults to the host name and process id.
    #[arg(long, env = "REPRISE_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Bearer token for a server that requires authentication (needs a RUN_TASKS grant).
    #[arg(long, env = "REPRISE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct DevArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Task queue of the built-in worker.
    #[arg(long, env = "REPRISE_QUEUE", default_value = "default")]
    pub queue: String,
    /// How many tasks the built-in worker runs at once.
    #[arg(long, env = "REPRISE_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Bearer token of the built-in worker, when authentication is configured.
    #[arg(long, env = "REPRISE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Durations like `30s`, `500ms`, `2m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 30s, 500ms or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "d" => Ok(Duration::from_secs(n * 86400)),
        _ => Err(format!("{text:?}: unknown unit {unit:?}; use ms, s, m, h or d")),
    }
}
