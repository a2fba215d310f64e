//! The command-line client: `reprise apply`, `pipelines`, `start`, `get`,
//! `list`, `watch`, `logs`, `abort`, `resume`, `history`, `approve`,
//! `reject`, `pause`, `continue`, `completions`: subcommands of the same
//! binary that call a server over gRPC.
//!
//! - `mod.rs`: the clap arguments and dispatch, exit codes;
//! - `connect.rs`: the channel, TLS and the bearer token;
//! - `error.rs`: what a failure prints and its exit code;
//! - `output.rs`: tables, proto3 JSON and YAML;
//! - `style.rs`: colours and the terminal's width;
//! - `yaml.rs`: pipeline files to `CreatePipelineRequest`, with shorthands;
//! - `pipelines.rs`: `apply`, `pipelines list|get`, APPLICATION/NAME to an id;
//! - `executions.rs`: start, get, list and the controls (abort, pause, continue, approve, reject);
//! - `resume.rs`: `resume` and `history`;
//! - `watch.rs`: the live progress display, reconnecting;
//! - `logs.rs`: workflow output, paged or followed.

mod connect;
mod error;
mod executions;
mod logs;
mod output;
mod pipelines;
mod resume;
mod style;
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
    /// How to print the answer: columns for people, or the response as proto3 JSON or YAML.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// The client subcommands, flattened into `reprise`'s own.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create or update a pipeline from a YAML file; a new version only when the file changes it.
    Apply(pipelines::ApplyArgs),
    /// List pipelines, or show one (by APPLICATION/NAME or id).
    #[command(subcommand)]
    Pipelines(pipelines::PipelinesCommand),
    /// Start an execution of a pipeline.
    Start(executions::StartArgs),
    /// Show an execution: its state, stages and workflows.
    Get(ExecutionArgs),
    /// List the latest execution of each chain, newest first.
    List(executions::ListArgs),
    /// Follow an execution until it ends, reconnecting if the server restarts; exits 0 if it SUCCEEDED, 1 otherwise.
    Watch(watch::WatchArgs),
    /// Print the output of an execution's workflows; -f follows it as it is produced.
    Logs(logs::LogsArgs),
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
    /// Print a completion script for a shell, e.g. `reprise completions bash > /etc/bash_completion.d/reprise`.
    Completions(CompletionsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
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
    style::init();
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
        ClientCommand::Pipelines(command) => pipelines::pipelines(command).await,
        ClientCommand::Logs(args) => logs::logs(args).await,
        ClientCommand::Completions(args) => {
            let mut command = <crate::cli::Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut command, "reprise", &mut out);
            output::print(&String::from_utf8_lossy(&out));
            Ok(Exit::Success)
        }
        ClientCommand::Start(args) => executions::start(args).await,
        ClientCommand::Get(args) => executions::get(args).await,
        ClientCommand::List(args) => executions::list(args).await,
        ClientCommand::Watch(args) => watch::watch(args).await,
        ClientCommand::Abort(args) => executions::control(args.target, Control::Abort { reason: args.reason }).await,
        ClientCommand::Resume(args) => resume::resume(args).await,
        ClientCommand::History(args) => resume::history(args).await,
        ClientCommand::Approve(args) => {
            let watch = args.watch;
            executions::control_then(
                args.target,
                Control::Approve { stage: args.stage, comment: args.comment },
                watch.watch.then_some(watch.follow),
            )
            .await
        }
        ClientCommand::Reject(args) => {
            let watch = args.watch;
            executions::control_then(
                args.target,
                Control::Reject { stage: args.stage, comment: args.comment },
                watch.watch.then_some(watch.follow),
            )
            .await
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
