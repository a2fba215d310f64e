//! `reprise watch` (and `--watch` of start, resume and approve): follows
//! WatchExecution until the execution reaches a final state. On a terminal,
//! one line per stage redrawn in place as messages arrive; to a pipe or file,
//! one line per change; with `--output json|yaml`, every message.
//!
//! A server restart or rollout must not fail a CI job gated on `watch`: when
//! the stream breaks or ends early it is opened again, after a backoff with
//! jitter (so many watchers do not come back at the same instant), until the
//! execution is final, the server stays out of reach for `--reconnect-for`,
//! or `--timeout` passes. The server sends the current state first on every
//! stream, so nothing is missed in between.

use std::{
    io::IsTerminal as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use backon::BackoffBuilder as _;
use clap::Args;
use tonic::{Code, Status};

use super::{
    ClientOptions, ExecutionArgs,
    connect::Client,
    error::{Exit, Failure, Result},
    output::{self, Format, Table},
    style,
};
use crate::proto as pb;

/// How long and how patiently to follow an execution.
#[derive(Debug, Clone, Copy, Args)]
pub struct FollowOptions {
    /// While the server cannot be reached (a restart, a rollout), keep trying for this long
    /// (e.g. 30s, 10m, 1h30m) before giving up with exit 1.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub reconnect_for: Duration,
    /// Give up with exit 1 after following for this long, whatever the state; no limit when unset.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions { reconnect_for: Duration::from_secs(600), timeout: None }
    }
}

/// `--watch` of the commands that start or change an execution.
#[derive(Debug, Clone, Copy, Args)]
pub struct WatchFlag {
    /// Then follow the execution as `reprise watch` does, and exit as it does (0 only if it SUCCEEDED).
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub follow: FollowOptions,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub target: ExecutionArgs,
    #[command(flatten)]
    pub follow: FollowOptions,
}

/// The delays between attempts to reach the server again: from 250 ms,
/// doubling up to 10 s, each plus a random part of itself.
pub fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Whether a failed call may work when tried again later. Refusals about
/// the request or the caller will not; anything about reaching the server may.
pub fn retryable(status: &Status) -> bool {
    !matches!(
        status.code(),
        Code::NotFound
            | Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::Unimplemented
            | Code::OutOfRange
    )
}

pub async fn watch(args: WatchArgs) -> Result<Exit> {
    let mut client = connect_patiently(&args.target.client, args.follow).await?;
    follow_and_report(&mut client, &args.target.execution, args.target.client.output, args.follow).await
}

/// Connects, retrying with backoff for `--reconnect-for` when the server is
/// not there yet (a watch started during a rollout).
pub async fn connect_patiently(options: &ClientOptions, follow: FollowOptions) -> Result<Client> {
    let started = Instant::now();
    let mut delays = reconnect_backoff();
    loop {
        match Client::connect(options).await {
            Ok(client) => return Ok(client),
            Err(failure) if failure.exit == Exit::Failed && started.elapsed() < follow.reconnect_for => {
                let delay = delays.next().unwrap_or(Duration::from_secs(10));
                eprintln!("{}; retrying in {}", failure.message, humantime::format_duration(round(delay)));
                tokio::time::sleep(delay).await;
            }
            Err(failure) if failure.exit == Exit::Failed => {
                return Err(Failure::failed(format!(
                    "{}; gave up after --reconnect-for {}",
                    failure.message,
                    humantime::format_duration(follow.reconnect_for)
                )));
            }
            Err(failure) => return Err(failure),
        }
    }
}

/// Shows the execution until it is final; exits 0 if it SUCCEEDED, 1
/// otherwise, after the end of the output of the workflows that failed.
pub async fn follow_and_report(client: &mut Client, id: &str, format: Format, options: FollowOptions) -> Result<Exit> {
    let display = match format {
        Format::Json | Format::Yaml => Display::Document(format),
        Format::Table if std::io::stdout().is_terminal() => Display::Screen { drawn: 0 },
        Format::Table => Display::Lines { last: vec![] },
    };
    // The screen is redrawn every second too, so running stages' elapsed times move.
    let screen = matches!(display, Display::Screen { .. });
    let shown = Arc::new(Mutex::new((display, None::<pb::Execution>)));
    let ticker = screen.then(|| tokio::spawn(tick(shown.clone())));
    let followed = follow(client, id, options, |message| {
        let mut shown = shown.lock().unwrap_or_else(|p| p.into_inner());
        if let Display::Document(format) = shown.0 {
            output::print(&output::document(format, message)?);
        }
        if let Some(execution) = &message.execution {
            output::print(&shown.0.update(execution));
            shown.1 = Some(execution.clone());
        }
        Ok(())
    })
    .await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    let last = followed?;
    if last.status == pb::ExecutionStatus::Succeeded as i32 {
        return Ok(Exit::Success);
    }
    if format == Format::Table {
        // Watch messages carry no output; the execution itself carries each workflow's tail.
        let request = pb::GetExecutionRequest { execution_id: last.id.clone(), ..Default::default() };
        if let Ok(response) = client.executions.get_execution(request).await
            && let Some(e) = response.into_inner().execution
        {
            output::print(&output::failure_tails(&e, output::TAIL_LINES));
        }
    }
    Ok(Exit::Failed)
}

/// Redraws the screen each second while the execution is not final.
async fn tick(shown: Arc<Mutex<(Display, Option<pb::Execution>)>>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    loop {
        every.tick().await;
        let mut shown = shown.lock().unwrap_or_else(|p| p.into_inner());
        let (display, last) = &mut *shown;
        if let Some(execution) = last.as_ref().filter(|e| !is_final(e.status)) {
            output::print(&display.update(execution));
        }
    }
}

/// Why one stream stopped.
enum Stopped {
    /// The execution reached a final state.
    Final,
    /// The stream ended or broke before that.
    Early(String),
}

/// Follows WatchExecution through reconnections, calling `on` with every
/// message, and returns the final execution.
pub async fn follow(
    client: &mut Client,
    id: &str,
    options: FollowOptions,
    mut on: impl FnMut(&pb::WatchExecutionResponse) -> Result<()>,
) -> Result<pb::Execution> {
    let started = Instant::now();
    let mut delays = reconnect_backoff();
    let mut lost_since: Option<Instant> = None;
    let mut last: Option<pb::Execution> = None;
    loop {
        let mut received = false;
        let once = stream_once(client, id, &mut on, &mut last, &mut received);
        let stopped = match options.timeout {
            Some(limit) => match tokio::time::timeout(limit.saturating_sub(started.elapsed()), once).await {
                Ok(stopped) => stopped?,
                Err(_) => {
                    return Err(Failure::failed(format!(
                        "gave up after --timeout {} (last seen {})",
                        humantime::format_duration(limit),
                        last_seen(&last)
                    )));
                }
            },
            None => once.await?,
        };
        let why = match stopped {
            Stopped::Final => return Ok(last.expect("a final state was seen")),
            Stopped::Early(why) => why,
        };
        if received {
            lost_since = None;
            delays = reconnect_backoff();
        }
        let since = *lost_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= options.reconnect_for {
            return Err(Failure::failed(format!(
                "lost execution {id}: {why}; gave up after --reconnect-for {} (last seen {})",
                humantime::format_duration(options.reconnect_for),
                last_seen(&last)
            )));
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(10));
        eprintln!(
            "{}",
            style::dim(&format!("watch: {why}; reconnecting in {}", humantime::format_duration(round(delay))))
        );
        tokio::time::sleep(delay).await;
    }
}

/// One WatchExecution stream, until it ends. A refusal that a retry will not
/// change is the command's failure.
async fn stream_once(
    client: &mut Client,
    id: &str,
    on: &mut impl FnMut(&pb::WatchExecutionResponse) -> Result<()>,
    last: &mut Option<pb::Execution>,
    received: &mut bool,
) -> Result<Stopped> {
    let request = pb::WatchExecutionRequest { execution_id: id.to_owned() };
    let broken = |status: Status| -> Result<Stopped> {
        if retryable(&status) {
            Ok(Stopped::Early(super::error::Failure::from_status(&status).message))
        } else {
            Err(status.into())
        }
    };
    let mut stream = match client.executions.watch_execution(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return broken(status),
    };
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                *received = true;
                on(&message)?;
                if let Some(execution) = message.execution {
                    let done = is_final(execution.status);
                    *last = Some(execution);
                    if done {
                        return Ok(Stopped::Final);
                    }
                }
            }
            Ok(None) => return Ok(Stopped::Early("the stream ended before the execution finished".into())),
            Err(status) => return broken(status),
        }
    }
}

fn last_seen(last: &Option<pb::Execution>) -> String {
    last.as_ref().map_or_else(|| "nothing yet".into(), |e| output::execution_status(e.status))
}

/// A delay to the millisecond, for messages.
fn round(delay: Duration) -> Duration {
    Duration::from_millis(delay.as_millis() as u64)
}

pub fn is_final(status: i32) -> bool {
    use pb::ExecutionStatus as S;
    matches!(S::try_from(status), Ok(S::Succeeded | S::Failed | S::Aborted | S::Expired | S::Rejected))
}

/// How progress is shown.
enum Display {
    /// A terminal: the whole frame, redrawn over the previous one.
    Screen { drawn: usize },
    /// A pipe or file: the lines that changed, one per change.
    Lines { last: Vec<String> },
    /// Printed by the caller as JSON or YAML documents.
    Document(Format),
}

impl Display {
    /// What to print for the execution as it is now.
    fn update(&mut self, execution: &pb::Execution) -> String {
        match self {
            Display::Screen { drawn } => {
                let frame = frame(execution);
                // Cursor up over the previous frame, then clear to the end of the screen.
                let clear = if *drawn > 0 { format!("\x1b[{drawn}A\r\x1b[J") } else { String::new() };
                *drawn = frame.lines().count();
                clear + &frame
            }
            Display::Lines { last } => {
                let lines = change_lines(execution);
                let mut out = String::new();
                for (i, line) in lines.iter().enumerate() {
                    if last.get(i) != Some(line) {
                        out.push_str(&format!("{} {line}\n", chrono::Local::now().format("%H:%M:%S")));
                    }
                }
                *last = lines;
                out
            }
            Display::Document(_) => String::new(),
        }
    }
}

/// The screen: the execution's state, then a line per stage.
fn frame(e: &pb::Execution) -> String {
    let mut table = Table::new(&["STAGE", "STATUS", "ELAPSED", "WORKFLOWS"]).status_column(1);
    for s in &e.stages {
        let status = if s.carried_over {
            format!("{} (carried over)", output::stage_status(s.status))
        } else {
            output::stage_status(s.status)
        };
        let took = output::elapsed(s.start_time.as_ref(), s.end_time.as_ref());
        table.row(vec![s.name.clone(), status, took, output::workflow_summary(s)]);
    }
    format!("Execution {}: {}\n\n{}", e.id, style::status(&output::status_line(e)), table.render())
}

/// One line per stage, stage order, then one for the execution: printed
/// again whenever it changes. The execution line comes last so its final
/// state is the last line printed.
fn change_lines(e: &pb::Execution) -> Vec<String> {
    let mut lines: Vec<String> = e
        .stages
        .iter()
        .map(|s| {
            let mut notes = vec![output::workflow_summary(s)];
            if s.carried_over {
                notes.push("carried over".into());
            } else if s.end_time.is_some() {
                // Only once it ended: a running time would change the line every second.
                notes.push(format!("took {}", output::elapsed(s.start_time.as_ref(), s.end_time.as_ref())));
            }
            notes.retain(|n| !n.is_empty() && n != "took ");
            let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
            format!("stage {}: {}{notes}", s.name, style::status(&output::stage_status(s.status)))
        })
        .collect();
    lines.push(format!("execution {}: {}", e.id, style::status(&output::status_line(e))));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execution(status: pb::ExecutionStatus, stages: &[(&str, pb::StageStatus, pb::WorkflowStatus)]) -> pb::Execution {
        pb::Execution {
            id: "e1".into(),
            status: status as i32,
            stages: stages
                .iter()
                .map(|(name, s, w)| pb::StageExecution {
                    name: name.to_string(),
                    status: *s as i32,
                    workflows: vec![pb::WorkflowExecution {
                        name: "w".into(),
                        status: *w as i32,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn strip_time(text: &str) -> Vec<String> {
        text.lines().map(|l| l.split_once(' ').map(|(_, rest)| rest.to_owned()).unwrap_or_default()).collect()
    }

    #[test]
    fn lines_print_only_what_changed() {
        use pb::{ExecutionStatus as E, StageStatus as S, WorkflowStatus as W};
        let mut display = Display::Lines { last: vec![] };
        let first = display
            .update(&execution(E::Running, &[("build", S::Running, W::Running), ("ship", S::Pending, W::Queued)]));
        assert_eq!(
            strip_time(&first),
            [
                "stage build: RUNNING (0/1 succeeded, 1 running)",
                "stage ship: PENDING (0/1 succeeded, 1 queued)",
                "execution e1: RUNNING"
            ]
        );
        let second = display
            .update(&execution(E::Running, &[("build", S::Succeeded, W::Succeeded), ("ship", S::Pending, W::Queued)]));
        assert_eq!(strip_time(&second), ["stage build: SUCCEEDED (1/1 succeeded)"]);
        let third = display.update(&execution(
            E::Succeeded,
            &[("build", S::Succeeded, W::Succeeded), ("ship", S::Succeeded, W::Succeeded)],
        ));
        assert_eq!(strip_time(&third), ["stage ship: SUCCEEDED (1/1 succeeded)", "execution e1: SUCCEEDED"]);
    }

    #[test]
    fn the_screen_is_redrawn_over_the_previous_frame() {
        use pb::{ExecutionStatus as E, StageStatus as S, WorkflowStatus as W};
        let mut display = Display::Screen { drawn: 0 };
        let first = display.update(&execution(E::Running, &[("build", S::Running, W::Running)]));
        assert_eq!(
            first,
            "Execution e1: RUNNING\n\nSTAGE  STATUS   ELAPSED  WORKFLOWS\nbuild  RUNNING  -        0/1 succeeded, 1 running\n"
        );
        let second = display.update(&execution(E::Succeeded, &[("build", S::Succeeded, W::Succeeded)]));
        assert!(second.starts_with("\x1b[4A\r\x1b[J"), "{second:?}");
        assert!(second.ends_with("build  SUCCEEDED  -        1/1 succeeded\n"), "{second:?}");
    }
}
