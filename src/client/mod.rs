//! The command-line client: `reprise apply`, `start`, `get`, `list`, `watch`,
//! `abort`, `resume`, `history`, `approve`, `reject`, `pause`, `continue`,
//! subcommands of the same binary that call a server over gRPC.
//!
//! - `mod.rs`: the clap arguments and dispatch, exit codes;
//! - `connect.rs`: the channel, TLS and the bearer token;
//! - `error.rs`: what a failure prints and its exit code;
//! - `output.rs`: tables and proto3 JSON;
//! - `yaml.rs`: pipeline files to `CreatePipelineRequest`;
//! - `pipelines.rs`: `apply`;
//! - `executions.rs`: start, get, list and the controls (abort, pause, continue, approve, reject);
//! - `resume.rs`: `resume` and `history`;
//! - `watch.rs`: the live progress display.

mod connect;
mod error;
mod executions;
mod output;
mod pipelines;
mod resume;
mod watch;
pub mod yaml;

use std::path::PathBuf;

use clap::{Args, Subcommand};

pub use error::{Exit, Failure};
pub use output::Format;

/// How to reach the server and how to show its answers; every client command takes these.
#[derive(Debug, Clone, Args)]
pub struct ClientOptions {
    /// The Reprise server, e.g. http://127.0.0.1:50051 (https:// for TLS).
    #[arg(long, env = "REPRISE_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Bearer token (a JWT) sent as `authorization: Bearer`, when the server requires
    /// authentication. Only from the environment: on the command line it is refused (use --token-file).
    #[arg(long, env = "REPRISE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the bearer token from this file.
    #[arg(long, env = "REPRISE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed an https server's certificate; the public roots when unset.
    #[arg(long, env = "REPRISE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// How to print the answer: columns for people, or the response as proto3 JSON.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// The client subcommands, flattened into `reprise`'s own.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a pipeline from a YAML file, or write a new version of it if the application already has one of that name.
    Apply(pipelines::ApplyArgs),
    /// Start an execution of a pipeline.
    Start(executions::StartArgs),
    /// Show an execution: its state, stages and workflows.
    Get(ExecutionArgs),
    /// List the latest execution of each chain, newest first.
    List(executions::ListArgs),
    /// Follow an execution until it ends; exits 0 if it SUCCEEDED, 1 otherwise.
    Watch(ExecutionArgs),
    /// Abort an execution: no new stage starts, running workflows are cancelled.
    Abort(executions::AbortArgs),
    /// Resume a failed, aborted, expired or rejected execution from a stage it reached.
    Resume(resume::ResumeArgs),
    /// List every execution of an execution's chain (the original and each resume).
    History(ExecutionArgs),
    /// Approve the approval stage that is waiting.
    Approve(executions::DecisionArgs),
    /// Reject the approval stage that is waiting; the execution becomes REJECTED.
    Reject(executions::DecisionArgs),
    /// Pause an execution: the running stage finishes, no new stage starts.
    Pause(ExecutionArgs),
    /// Continue a paused execution.
    Continue(ExecutionArgs),
}

/// A command about one execution.
#[derive(Debug, Clone, Args)]
pub struct ExecutionArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    /// The execution id.
    pub execution: String,
}

/// Runs a client command and returns the process exit code; failures are
/// printed to stderr.
pub async fn main(command: ClientCommand) -> i32 {
    let exit = match run(command).await {
        Ok(exit) => exit,
        Err(failure) => {
            eprint!("{}", failure.render());
            failure.exit
        }
    };
    output::print("");
    exit as i32
}

/// Runs a client command; Ok carries the exit code of a command that worked
/// (`watch` exits 1 when the execution did not succeed).
pub async fn run(command: ClientCommand) -> error::Result<Exit> {
    use executions::Control;
    match command {
        ClientCommand::Apply(args) => pipelines::apply(args).await,
        ClientCommand::Start(args) => executions::start(args).await,
        ClientCommand::Get(args) => executions::get(args).await,
        ClientCommand::List(args) => executions::list(args).await,
        ClientCommand::Watch(args) => watch::watch(args).await,
        ClientCommand::Abort(args) => executions::control(args.target, Control::Abort { reason: args.reason }).await,
        ClientCommand::Resume(args) => resume::resume(args).await,
        ClientCommand::History(args) => resume::history(args).await,
        ClientCommand::Approve(args) => {
            executions::control(args.target, Control::Approve { stage: args.stage, comment: args.comment }).await
        }
        ClientCommand::Reject(args) => {
            executions::control(args.target, Control::Reject { stage: args.stage, comment: args.comment }).await
        }
        ClientCommand::Pause(args) => executions::control(args, Control::Pause).await,
        ClientCommand::Continue(args) => executions::control(args, Control::Continue).await,
    }
}

/// `NAME=VALUE` of `--var` and `--artifact`.
fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ClientCommand,
    }

    fn parse(args: &[&str]) -> Result<ClientCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("reprise").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn pairs_split_at_the_first_equals_sign() {
        assert_eq!(parse_pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_pair("a="), Ok(("a".into(), String::new())));
        assert!(parse_pair("a").is_err());
        assert!(parse_pair("=b").is_err());
    }

    #[test]
    fn start_takes_repeated_vars_and_artifacts() {
        let ClientCommand::Start(args) =
            parse(&["start", "p1", "--var", "a=1", "--var", "b=2", "--artifact", "web=1.2.3", "-o", "json"]).unwrap()
        else {
            panic!("start")
        };
        assert_eq!(args.pipeline_id, "p1");
        assert_eq!(args.vars, vec![("a".into(), "1".into()), ("b".into(), "2".into())]);
        assert_eq!(args.artifacts, vec![("web".into(), "1.2.3".into())]);
        assert_eq!(args.client.output, Format::Json);
    }

    #[test]
    fn list_parses_statuses_by_short_name() {
        let ClientCommand::List(args) = parse(&["list", "--status", "failed", "--limit", "5"]).unwrap() else {
            panic!("list")
        };
        assert_eq!(args.status, Some(crate::proto::ExecutionStatus::Failed));
        assert_eq!(args.limit, 5);
        assert!(parse(&["list", "--status", "broken"]).is_err());
        assert!(parse(&["list", "--limit", "0"]).is_err());
    }

    #[test]
    fn resume_needs_a_stage() {
        assert!(parse(&["resume", "e1"]).is_err());
        let ClientCommand::Resume(args) = parse(&["resume", "e1", "--from-stage", "ship", "--dry-run"]).unwrap() else {
            panic!("resume")
        };
        assert!(args.dry_run);
        assert_eq!(args.from_stage, "ship");
    }
}
