//! Runs one task's shell script and reports how it ended, independent of gRPC
//! so it can be tested on its own.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::tail::OutputSink;

/// How long we keep reading output after the script ended. Something that
/// escaped the process group (a daemon) may hold the pipe open forever.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Variables of the worker's own environment that every task gets, when set.
pub(crate) const ALWAYS_INHERITED: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// What a task's process gets from the worker's environment: the variables
/// of [`ALWAYS_INHERITED`] and those the operator allowed, nothing else. The
/// worker's credentials (REPRISE_TOKEN …) and everything else the worker or
/// `reprise dev`'s server was started with stay out of reach.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inherited(Vec<(String, OsString)>);

impl Inherited {
    /// Reads the allowed variables once, when the worker starts.
    pub(crate) fn from_worker_environment(allowed: &[String]) -> Self {
        let names = ALWAYS_INHERITED.iter().copied().chain(allowed.iter().map(String::as_str));
        let mut pairs: Vec<(String, OsString)> = Vec::new();
        for name in names {
            if pairs.iter().any(|(n, _)| n == name) {
                continue;
            }
            if let Some(value) = std::env::var_os(name) {
                pairs.push((name.to_owned(), value));
            }
        }
        Inherited(pairs)
    }

    #[cfg(test)]
    pub(crate) fn of(pairs: &[(&str, &str)]) -> Self {
        Inherited(pairs.iter().map(|(n, v)| (n.to_string(), OsString::from(v))).collect())
    }
}

/// How a script run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Termination {
    /// The shell exited with this status code.
    Exited(i32),
    /// The shell was killed by this signal, not by us.
    Signaled(i32),
    /// We killed it because its time ran out; holds how long it ran.
    TimedOut(Duration),
    /// We killed it because the caller cancelled it.
    Cancelled,
    /// It never started.
    SpawnFailed(String),
}

/// The end of a script run with the tail of its combined stdout and stderr
/// that nobody took from the sink while it ran.
#[derive(Debug)]
pub(crate) struct RunResult {
    pub(crate) termination: Termination,
    pub(crate) output: String,
}

/// Runs `sh -c command` in an environment of `inherited` plus the task's
/// own `env` (its REPRISE_* inputs from the server), which wins on a clash.
///
/// The script gets its own process group so that on timeout or cancellation
/// its children die with it; stragglers left behind after a normal exit are
/// killed too, because a task must not outlive its lease. `timeout` counts
/// from now; `Some(ZERO)` means the deadline already passed, so nothing runs.
pub(crate) async fn run_shell(
    command: &str,
    inherited: &Inherited,
    env: &BTreeMap<String, String>,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
    tail: &OutputSink,
) -> RunResult {
    if timeout.is_some_and(|t| t.is_zero()) {
        return RunResult { termination: Termination::TimedOut(Duration::ZERO), output: String::new() };
    }
    if cancel.is_cancelled() {
        return RunResult { termination: Termination::Cancelled, output: String::new() };
    }
    let started = Instant::now();
    let (mut child, mut output, mut group) = match spawn(command, inherited, env) {
        Ok(spawned) => spawned,
        Err(err) => {
            return RunResult { termination: Termination::SpawnFailed(err.to_string()), output: String::new() };
        }
    };

    let deadline = timeout.map(|t| started + t);
    let mut buf = vec![0u8; 8 * 1024];
    let mut output_open = true;
    let ended = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break Ended::Cancelled,
            status = child.wait() => break Ended::Exited(status),
            _ = sleep_until(deadline), if deadline.is_some() => break Ended::TimedOut,
            read = output.read(&mut buf), if output_open => match read {
                Ok(0) | Err(_) => output_open = false,
                Ok(n) => tail.push(&buf[..n]),
            },
        }
    };
    let elapsed = started.elapsed();

    group.kill().await;
    // The shell itself is usually dead by now (group kill); this covers a
    // missing `kill` binary and reaps it either way.
    let _ = child.start_kill();
    let termination = match ended {
        Ended::Exited(Ok(status)) => termination_of(status),
        Ended::Exited(Err(err)) => Termination::SpawnFailed(format!("waiting for the process: {err}")),
        Ended::TimedOut => {
            let _ = child.wait().await;
            Termination::TimedOut(elapsed)
        }
        Ended::Cancelled => {
            let _ = child.wait().await;
            Termination::Cancelled
        }
    };

    if output_open {
        let drain = async {
            while let Ok(n) = output.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.push(&buf[..n]);
            }
        };
        let _ = tokio::time::timeout(DRAIN_GRACE, drain).await;
    }

    RunResult { termination, output: tail.take_rest() }
}

enum Ended {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Starts the shell with stdout and stderr on one pipe, so the output keeps
/// the order in which the script wrote it.
fn spawn(
    command: &str,
    inherited: &Inherited,
    env: &BTreeMap<String, String>,
) -> std::io::Result<(Child, pipe::Receiver, ProcessGroup)> {
    let (reader, writer) = std::io::pipe()?;
    let output = pipe::Receiver::from_owned_fd(reader.into())?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env_clear()
        .envs(inherited.0.iter().map(|(n, v)| (n, v)))
        .envs(env)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .kill_on_drop(true)
        .process_group(0);
    let child = cmd.spawn()?;
    // Our copies of the write end must go, or the pipe never reports EOF.
    drop(cmd);
    let group = ProcessGroup { pgid: child.id(), armed: true };
    Ok((child, output, group))
}

fn termination_of(status: ExitStatus) -> Termination {
    match (status.code(), status.signal()) {
        (Some(code), _) => Termination::Exited(code),
        (None, Some(signal)) => Termination::Signaled(signal),
        // Neither code nor signal cannot happen for a reaped child on unix.
        (None, None) => Termination::Exited(-1),
    }
}

/// The script's process group. Killing it on drop extends `kill_on_drop` to
/// the script's children when the task future is abandoned.
struct ProcessGroup {
    pgid: Option<u32>,
    armed: bool,
}

impl ProcessGroup {
    async fn kill(&mut self) {
        self.armed = false;
        let Some(pgid) = self.pgid else { return };
        // No libc in our dependencies, so use kill(1). It fails harmlessly
        // when the group is already gone.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{pgid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pgid) = self.pgid {
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pgid}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The conventional name of a signal, for people reading failure messages.
pub(crate) fn signal_name(signal: i32) -> Option<&'static str> {
    // Only the numbers POSIX systems agree on.
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards every test against hanging if killing does not work.
    const TEST_LIMIT: Duration = Duration::from_secs(20);

    async fn run(
        command: &str,
        env: &[(&str, &str)],
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> RunResult {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let inherited = Inherited::from_worker_environment(&[]);
        tokio::time::timeout(TEST_LIMIT, run_shell(command, &inherited, &env, timeout, cancel, &OutputSink::new()))
            .await
            .expect("run_shell did not return in time")
    }

    /// True while the process exists and is not a zombie (nothing may reap
    /// orphans in a container, so zombies count as dead).
    fn alive(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => false,
            Ok(stat) => {
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z') && !state.starts_with('X')
            }
        }
    }

    /// Waits (bounded) for the process to die; SIGKILL is delivered
    /// asynchronously, so an immediate check could race.
    async fn wait_dead(pid: u32) -> bool {
        let give_up = Instant::now() + Duration::from_secs(5);
        while Instant::now() < give_up {
            if !alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Waits until the script has written its background child's pid.
    async fn read_pid(path: &std::path::Path) -> u32 {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(path)
                && text.ends_with('\n')
                && let Ok(pid) = text.trim().parse()
            {
                return pid;
            }
            assert!(Instant::now() < give_up, "script never wrote its child pid");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn success_captures_stdout_and_stderr_in_order() {
        let result = run("echo one; echo two >&2; echo three", &[], None, &CancellationToken::new()).await;
        assert_eq!(result.termination, Termination::Exited(0));
        assert_eq!(result.output, "one\ntwo\nthree\n");
    }

    #[tokio::test]
    async fn failure_reports_the_exit_code() {
        let result = run("echo boom >&2; exit 3", &[], None, &CancellationToken::new()).await;
        assert_eq!(result.termination, Termination::Exited(3));
        assert_eq!(result.output, "boom\n");
    }

    #[tokio::test]
    async fn death_by_signal_is_reported() {
        let result = run("kill -s TERM $$", &[], None, &CancellationToken::new()).await;
        assert_eq!(result.termination, Termination::Signaled(15));
        assert_eq!(signal_name(15), Some("SIGTERM"));
    }

    #[tokio::test]
    async fn environment_is_passed_through() {
        let result = run(
            r#"echo "$REPRISE_WORKFLOW:$REPRISE_VAR_COLOR"; test -n "$PATH""#,
            &[("REPRISE_WORKFLOW", "build"), ("REPRISE_VAR_COLOR", "blue green")],
            None,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(result.termination, Termination::Exited(0));
        assert_eq!(result.output, "build:blue green\n");
    }

    #[tokio::test]
    async fn a_task_sees_only_the_allowed_worker_variables_and_its_own() {
        let inherited = Inherited::of(&[("PATH", "/usr/bin:/bin"), ("ALLOWED", "yes")]);
        let env = [("REPRISE_VAR_REGION".to_string(), "eu".to_string())].into();
        let result = run_shell("env", &inherited, &env, None, &CancellationToken::new(), &OutputSink::new()).await;
        assert_eq!(result.termination, Termination::Exited(0));
        let mut names: Vec<&str> = result.output.lines().filter_map(|l| l.split_once('=')).map(|(n, _)| n).collect();
        names.sort_unstable();
        // sh adds PWD (and some shells SHLVL and _) of its own.
        names.retain(|n| !["PWD", "OLDPWD", "SHLVL", "_"].contains(n));
        assert_eq!(names, ["ALLOWED", "PATH", "REPRISE_VAR_REGION"], "{}", result.output);
        assert!(result.output.contains("ALLOWED=yes\n") && result.output.contains("REPRISE_VAR_REGION=eu\n"));
    }

    #[test]
    fn only_allowed_variables_are_read_from_the_worker_environment() {
        let allowed = ["CARGO_PKG_NAME".to_string(), "PATH".to_string(), "NOT_SET_ANYWHERE_42".to_string()];
        let Inherited(pairs) = Inherited::from_worker_environment(&allowed);
        let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.iter().all(|n| ALWAYS_INHERITED.contains(n) || allowed.iter().any(|a| a == n)), "{names:?}");
        assert_eq!(names.iter().filter(|n| **n == "PATH").count(), 1, "no duplicates: {names:?}");
        assert!(!names.contains(&"NOT_SET_ANYWHERE_42"));
    }

    #[tokio::test]
    async fn output_keeps_only_the_tail() {
        let result =
            run("head -c 300000 /dev/zero | tr '\\0' x; echo; echo END", &[], None, &CancellationToken::new()).await;
        assert_eq!(result.termination, Termination::Exited(0));
        assert_eq!(result.output.len(), super::super::tail::OUTPUT_TAIL_LIMIT);
        assert!(result.output.ends_with("x\nEND\n"));
    }

    #[tokio::test]
    async fn spawn_failure_is_reported() {
        let result = run("true", &[("BAD\0NAME", "x")], None, &CancellationToken::new()).await;
        assert!(matches!(result.termination, Termination::SpawnFailed(_)), "{:?}", result.termination);
    }

    #[tokio::test]
    async fn timeout_kills_the_process_and_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        let script = format!("echo started; sleep 30 & echo $! > '{}'; wait", pid_file.display());
        let result = run(&script, &[], Some(Duration::from_millis(200)), &CancellationToken::new()).await;
        assert!(matches!(result.termination, Termination::TimedOut(_)), "{:?}", result.termination);
        assert_eq!(result.output, "started\n");
        // On a very slow machine the script may be killed before it forks.
        if let Ok(text) = std::fs::read_to_string(&pid_file)
            && let Ok(pid) = text.trim().parse::<u32>()
        {
            assert!(wait_dead(pid).await, "background child {pid} survived");
        }
    }

    #[tokio::test]
    async fn expired_deadline_runs_nothing() {
        let result = run("echo ran", &[], Some(Duration::ZERO), &CancellationToken::new()).await;
        assert_eq!(result.termination, Termination::TimedOut(Duration::ZERO));
        assert_eq!(result.output, "");
    }

    #[tokio::test]
    async fn cancellation_kills_the_process_and_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > '{}'; wait", pid_file.display());
        let cancel = CancellationToken::new();
        let canceller = {
            let cancel = cancel.clone();
            let pid_file = pid_file.clone();
            tokio::spawn(async move {
                let pid = read_pid(&pid_file).await;
                cancel.cancel();
                pid
            })
        };
        let result = run(&script, &[], None, &cancel).await;
        assert_eq!(result.termination, Termination::Cancelled);
        let pid = canceller.await.expect("canceller task");
        assert!(wait_dead(pid).await, "background child {pid} survived");
    }

    #[tokio::test]
    async fn stragglers_are_killed_after_a_normal_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > '{}'", pid_file.display());
        let result = run(&script, &[], None, &CancellationToken::new()).await;
        assert_eq!(result.termination, Termination::Exited(0));
        let pid = read_pid(&pid_file).await;
        assert!(wait_dead(pid).await, "background child {pid} survived");
    }
}
