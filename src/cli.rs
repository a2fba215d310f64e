//! Command-line interface. Every flag can also come from a `REPRISE_`
//! environment variable, which is how containers configure it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

pub use crate::auth::CertificateName;

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
    /// Database URL: `sqlite://FILE` (created if missing) or `postgres://…`. One that holds
    /// a password is accepted only from the environment or --database-url-file.
    #[arg(long, env = "REPRISE_DATABASE_URL", hide_env_values = true, default_value = "sqlite://reprise.db")]
    pub database_url: String,
    /// Read the database URL from this file (for a URL that holds a password).
    #[arg(long, env = "REPRISE_DATABASE_URL_FILE", conflicts_with = "database_url")]
    pub database_url_file: Option<PathBuf>,
    /// How long a task lease lasts without a heartbeat.
    #[arg(long, env = "REPRISE_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,
    /// How often to look again for changes made by another replica while the
    /// channel that announces them (PostgreSQL LISTEN) is down.
    #[arg(long, env = "REPRISE_RECHECK", default_value = "1s", value_parser = parse_duration)]
    pub recheck: Duration,
    /// Longest wait for a database connection before a call answers
    /// UNAVAILABLE. While the database is known to be down calls do not wait.
    #[arg(long, env = "REPRISE_DATABASE_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub database_acquire_timeout: Duration,
    /// Watch streams one caller may hold open at once; beyond, RESOURCE_EXHAUSTED.
    #[arg(long, env = "REPRISE_WATCH_STREAMS_PER_CALLER", default_value_t = 100)]
    pub watch_streams_per_caller: usize,
    /// The longest a watch stream lives; it then ends UNAVAILABLE and clients reconnect.
    #[arg(long, env = "REPRISE_WATCH_MAX_LIFETIME", default_value = "1h", value_parser = parse_duration)]
    pub watch_max_lifetime: Duration,
    /// Concurrent calls (HTTP/2 streams) one connection may have open.
    #[arg(long, env = "REPRISE_MAX_CONCURRENT_STREAMS", default_value_t = 1000)]
    pub max_concurrent_streams: u32,
    /// Connections in the PostgreSQL pool (SQLite readers: 8).
    #[arg(long, env = "REPRISE_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// Most executions a resume chain may have (the original included); unlimited if unset.
    #[arg(long, env = "REPRISE_CHAIN_MAX_ATTEMPTS")]
    pub chain_max_attempts: Option<u32>,
    /// Oldest a chain may be, from its first attempt, to be resumed; unlimited if unset.
    #[arg(long, env = "REPRISE_CHAIN_MAX_AGE", value_parser = parse_duration)]
    pub chain_max_age: Option<Duration>,
    /// Serve Prometheus metrics on this address at /metrics, e.g. 0.0.0.0:9090 (off when unset).
    #[arg(long, env = "REPRISE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The key secret variables are sealed with: 32 bytes, base64 (`openssl rand -base64 32`).
    /// Only from the environment: on the command line it is refused (use --secrets-key-file).
    /// `dev` keeps one in `<database file>.secrets-key` when none is given.
    #[arg(long, env = "REPRISE_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,
    /// Read the secrets key from this file.
    #[arg(long, env = "REPRISE_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// How big a pipeline may be. Every other limit is fixed (see the README).
#[derive(Debug, Args, Clone)]
pub struct LimitArgs {
    /// Most stages a pipeline may have.
    #[arg(long, env = "REPRISE_MAX_STAGES", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_stages: u32,
    /// Most workflows one stage may have.
    #[arg(long, env = "REPRISE_MAX_WORKFLOWS_PER_STAGE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_workflows_per_stage: u32,
    /// Most workflows a pipeline may have in all its stages.
    #[arg(long, env = "REPRISE_MAX_WORKFLOWS", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_workflows: u32,
}

/// What the server deletes, and when. Unset, everything is kept forever.
#[derive(Debug, Args, Clone)]
pub struct RetentionArgs {
    /// Delete a finished chain (every execution of it) once its latest execution ended this
    /// long ago, e.g. 90d. A chain that may still be resumed is kept (see --chain-max-age).
    #[arg(long, env = "REPRISE_RETAIN_CHAINS_FOR", value_parser = parse_duration)]
    pub retain_chains_for: Option<Duration>,
    /// Keep at most this many chains per pipeline, deleting the oldest finished ones beyond.
    #[arg(long, env = "REPRISE_RETAIN_CHAINS_PER_PIPELINE", value_parser = clap::value_parser!(u32).range(1..))]
    pub retain_chains_per_pipeline: Option<u32>,
    /// Delete audit events older than this, e.g. 400d (kept forever if unset).
    #[arg(long, env = "REPRISE_RETAIN_AUDIT_FOR", value_parser = parse_duration)]
    pub retain_audit_for: Option<Duration>,
    /// Log what retention would delete, and delete nothing.
    #[arg(long, env = "REPRISE_RETENTION_DRY_RUN")]
    pub retention_dry_run: bool,
    /// How often retention looks for what to delete.
    #[arg(long, env = "REPRISE_RETENTION_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub retention_interval: Duration,
}

/// Authentication and TLS.
#[derive(Debug, Args, Clone)]
pub struct AuthArgs {
    /// Accept HS256 bearer tokens signed with this secret (at least 32 bytes). Only from the
    /// environment: on the command line it is refused (use --auth-hs256-secret-file).
    #[arg(long, env = "REPRISE_AUTH_HS256_SECRET", hide_env_values = true)]
    pub auth_hs256_secret: Option<String>,
    /// Read the HS256 secret from this file.
    #[arg(long, env = "REPRISE_AUTH_HS256_SECRET_FILE")]
    pub auth_hs256_secret_file: Option<PathBuf>,
    /// Accept RS256 or ES256 bearer tokens verified by the public key in this PEM file.
    #[arg(long, env = "REPRISE_AUTH_PUBLIC_KEY_FILE")]
    pub auth_public_key_file: Option<PathBuf>,
    /// Accept bearer tokens verified by the keys of this JWKS file.
    #[arg(long, env = "REPRISE_AUTH_JWKS_FILE")]
    pub auth_jwks_file: Option<PathBuf>,
    /// Tokens must carry an `iss` claim equal to this.
    #[arg(long, env = "REPRISE_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Tokens must carry an `aud` claim that includes this.
    #[arg(long, env = "REPRISE_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Clock skew allowed when checking a token's `exp` and `nbf`.
    #[arg(long, env = "REPRISE_AUTH_LEEWAY", default_value = "60s", value_parser = parse_duration)]
    pub auth_leeway: Duration,
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
    /// Verify client certificates against this CA (mutual TLS); a caller that sends no
    /// token is identified by its certificate (see --tls-client-identity).
    #[arg(long, env = "REPRISE_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Which name of a client certificate is the caller: the first URI SAN (e.g. a SPIFFE
    /// id), the first DNS SAN, the subject's CN, or `auto`: the first of those it has.
    #[arg(long, env = "REPRISE_TLS_CLIENT_IDENTITY", value_enum, default_value_t = CertificateName::Auto)]
    pub tls_client_identity: CertificateName,
    /// Put before a certificate's name to make the caller's subject, so certificate
    /// subjects never collide with token subjects (CN=admin is `cert:admin`, not `admin`).
    #[arg(long, env = "REPRISE_TLS_CLIENT_SUBJECT_PREFIX", default_value = "cert:")]
    pub tls_client_subject_prefix: String,
    /// Under mutual TLS, let connections without a client certificate reach health and
    /// reflection (kubelet gRPC probes carry none); our services still need a certificate
    /// or a token. `false`: every connection needs a client certificate.
    #[arg(
        long,
        env = "REPRISE_TLS_OPEN_HEALTH_AND_REFLECTION",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub tls_open_health_and_reflection: bool,
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
    /// Only from the environment: on the command line it is refused (use --token-file).
    #[arg(long, env = "REPRISE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the bearer token from this file.
    #[arg(long, env = "REPRISE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tasks: TaskArgs,
}

/// What the reference worker passes to the tasks it runs.
#[derive(Debug, Args, Clone, Default)]
pub struct TaskArgs {
    /// Also pass this variable of the worker's environment to tasks (repeatable; the
    /// environment variable takes a comma-separated list). Tasks otherwise get only PATH,
    /// HOME, LANG, LC_ALL, TZ, TMPDIR and their own REPRISE_* inputs.
    #[arg(long = "task-env-allow", env = "REPRISE_TASK_ENV_ALLOW", value_delimiter = ',', value_name = "NAME")]
    pub task_env_allow: Vec<String>,
}

impl TaskArgs {
    /// The allowed names; empty entries (`A,,B`, an empty variable) are skipped.
    pub fn allowed(self) -> Vec<String> {
        self.task_env_allow.into_iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect()
    }
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
    /// Bearer token of the built-in worker, when authentication is configured. Only from the
    /// environment: on the command line it is refused (use --token-file).
    #[arg(long, env = "REPRISE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the built-in worker's bearer token from this file.
    #[arg(long, env = "REPRISE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tasks: TaskArgs,
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
