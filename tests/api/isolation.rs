//! What a task can see, and where credentials may go, through the binary as
//! an operator runs it: `reprise dev` with authentication configured and
//! every credential in its environment runs a task that goes looking for
//! them (the reported attack: `env`, then the parent's command line and
//! environment from /proc); and credentials typed on a command line are
//! refused.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use jsonwebtoken::{EncodingKey, Header, encode};
use reprise::proto::{
    self as pb, execution_service_client::ExecutionServiceClient, pipeline_service_client::PipelineServiceClient,
};
use serde_json::json;
use tokio::process::{Child, Command};
use tonic::{Request, transport::Channel};

use crate::helpers::*;

crate::on_both_backends!(a_task_sees_its_inputs_and_no_credential_of_the_worker_or_the_server);

pub const SECRET: &str = "isolation-test-hs256-secret-0123456789";

/// A token for `subject` signed with [`SECRET`]; `claims` are added to or replace the defaults.
pub fn token_with(subject: &str, claims: serde_json::Value) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut all = json!({ "sub": subject, "exp": now + 600 });
    for (key, value) in claims.as_object().expect("claims are an object") {
        all[key] = value.clone();
    }
    encode(&Header::default(), &all, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A `reprise serve` or `reprise dev` process; killed when dropped.
pub struct Process {
    _child: Child,
    pub pid: u32,
    pub channel: Channel,
    log: PathBuf,
    _binary_dir: Option<tempfile::TempDir>,
}

impl Process {
    /// Starts `reprise ARGS --listen 127.0.0.1:PORT` with only PATH and
    /// `env` in its environment, and waits until it accepts connections.
    /// With `unprivileged`, a test running as root starts it as user
    /// `nobody`, from a copy of the binary that nobody may run.
    pub async fn start(args: &[&str], env: &[(&str, &str)], unprivileged: bool) -> Process {
        let log_dir = std::env::temp_dir();
        let log = log_dir.join(format!("reprise-process-{}.log", uuid::Uuid::new_v4().simple()));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_reprise"));
        let mut command;
        let mut binary_dir = None;
        match unprivileged {
            true if running_as_root() => {
                let dir = binary_dir.insert(shared_dir());
                let copy = dir.path().join("reprise");
                std::fs::copy(&binary, &copy).expect("copy the binary where nobody may run it");
                std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
                command = Command::new(&copy);
                command.uid(65534).gid(65534);
            }
            _ => command = Command::new(&binary),
        }
        let child = command
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("start reprise");
        let pid = child.id().expect("pid");
        let endpoint = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        for _ in 0..600 {
            if let Ok(channel) = endpoint.connect().await {
                return Process { _child: child, pid, channel, log, _binary_dir: binary_dir };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "reprise {args:?} did not come up on port {port}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// What the process logged so far (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A directory every user may write (an unprivileged server keeps its SQLite file there).
pub fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// The database a server process uses: the test's PostgreSQL database, or a
/// SQLite file of its own in `dir` (processes do not share a SQLite file).
pub fn process_database(app: &TestApp, dir: &Path) -> String {
    match app.backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("reprise.db").display()),
        Backend::Postgres => app.db_url().to_owned(),
    }
}

/// Polls GetExecution until the execution has ended; fails after a minute.
pub async fn wait_ended(channel: &Channel, token: &str, id: &str) -> pb::Execution {
    let mut client = ExecutionServiceClient::new(channel.clone());
    for _ in 0..600 {
        let request = authed(pb::GetExecutionRequest { execution_id: id.into(), ..Default::default() }, token);
        let execution = client.get_execution(request).await.expect("get").into_inner().execution.unwrap();
        if is_final(execution.status) {
            return execution;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("execution {id} did not end within a minute");
}

/// The lines of `output` between the marker lines `== from` and the next `== `.
fn section<'a>(output: &'a str, from: &str) -> &'a str {
    let start = output.find(&format!("== {from}\n")).unwrap_or_else(|| panic!("no {from} section in {output}"));
    let rest = &output[start + from.len() + 4..];
    &rest[..rest.find("\n== ").map_or(rest.len(), |end| end + 1)]
}

/// The reported attack, plus the environment of the worker's own process.
const SNOOP: &str = r#"echo "== env"; env
echo "== cmdline"; tr '\0' ' ' < /proc/$PPID/cmdline; echo
echo "== environ"; tr '\0' '\n' < /proc/$PPID/environ 2>&1
echo "== mem"; head -c 64 /proc/$PPID/mem 2>&1 | tr -cd '[:print:]\n'
echo "== end""#;

async fn a_task_sees_its_inputs_and_no_credential_of_the_worker_or_the_server(app: TestApp) {
    let dir = shared_dir();
    let database_url = process_database(&app, dir.path());
    let (worker_token, caller) =
        (token_with("root", json!({"jti": "worker"})), token_with("root", json!({"jti": "caller"})));
    let q = queue();
    let env = [
        ("REPRISE_DATABASE_URL", database_url.as_str()),
        ("REPRISE_AUTH_HS256_SECRET", SECRET),
        ("REPRISE_BOOTSTRAP_ADMIN", "root"),
        ("REPRISE_TOKEN", worker_token.as_str()),
        ("REPRISE_TASK_ENV_ALLOW", "ISOLATION_ALLOWED"),
        ("ISOLATION_ALLOWED", "passed-on-purpose"),
        ("ISOLATION_NOT_ALLOWED", "kept-from-tasks"),
    ];
    // As root a task could read anything; the shell worker's isolation is
    // for a worker of an ordinary user, as the image runs it.
    let dev = Process::start(&["dev", "--queue", &q], &env, true).await;

    let mut stage = workflows("snoop", &q, &["look"]);
    if let Some(pb::stage::Kind::Workflows(w)) = &mut stage.kind {
        w.workflows[0].command = SNOOP.into();
    }
    let variables = vec![pb::Variable {
        name: "region".into(),
        default_value: None,
        description: String::new(),
        ..Default::default()
    }];
    let create = pb::CreatePipelineRequest {
        application: "shop".into(),
        name: "snoop".into(),
        definition: Some(pb::PipelineDefinition { description: String::new(), variables, stages: vec![stage] }),
    };
    let mut pipelines = PipelineServiceClient::new(dev.channel.clone());
    let pipeline =
        pipelines.create_pipeline(authed(create, &caller)).await.expect("create").into_inner().pipeline.unwrap();
    let start = pb::StartExecutionRequest {
        pipeline_id: pipeline.id,
        variables: [("region".to_string(), "eu-west-9".to_string())].into(),
        artifacts: [("web".to_string(), "1.2.3".to_string())].into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let mut executions = ExecutionServiceClient::new(dev.channel.clone());
    let started = executions.start_execution(authed(start, &caller)).await.expect("start").into_inner();
    let done = wait_ended(&dev.channel, &caller, &started.execution.unwrap().id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{done:#?}\nlog: {}", dev.log());
    let output = &workflow_of(&done, "snoop", "look").output;

    // Nothing secret anywhere in what the task could print.
    let database_name =
        database_url.split('?').next().unwrap().rsplit('/').find(|p| !p.is_empty() && *p != "reprise.db");
    for secret in [SECRET, &worker_token, &caller, &database_url, database_name.unwrap()] {
        assert!(!output.contains(secret), "the task's output holds {secret:?}:\n{output}");
    }
    // Its environment: its inputs, and of the worker's only what is allowed.
    let env = section(output, "env");
    for expected in [
        "REPRISE_VAR_REGION=eu-west-9\n",
        "REPRISE_ARTIFACT_WEB=1.2.3\n",
        "REPRISE_STAGE=snoop\n",
        "REPRISE_WORKFLOW=look\n",
        "REPRISE_EXECUTION_ID=",
        "ISOLATION_ALLOWED=passed-on-purpose\n",
        "PATH=",
    ] {
        assert!(env.contains(expected), "{expected:?} should reach the task:\n{env}");
    }
    for kept in
        ["ISOLATION_NOT_ALLOWED", "REPRISE_TOKEN", "REPRISE_AUTH", "REPRISE_DATABASE", "REPRISE_TASK_ENV", "RUST_LOG"]
    {
        assert!(!env.contains(kept), "{kept} should not reach the task:\n{env}");
    }
    // The command line holds no credential; the worker's environment and
    // memory cannot be read (it is non-dumpable).
    assert!(section(output, "cmdline").contains("dev --queue"), "{output}");
    assert!(section(output, "environ").contains("Permission denied"), "{output}");
    assert!(section(output, "mem").contains("Permission denied"), "{output}");

    // Even a reader allowed to read it (root) finds the credentials blanked
    // in the process's environment block.
    if let Ok(environ) = std::fs::read(format!("/proc/{}/environ", dev.pid)) {
        let environ = String::from_utf8_lossy(&environ);
        assert!(environ.contains("ISOLATION_NOT_ALLOWED=kept-from-tasks"), "read the real block: {environ}");
        for secret in [SECRET, &worker_token, &database_url] {
            assert!(!environ.contains(secret), "/proc/PID/environ holds {secret:?}");
        }
    }
}

/// Runs the binary with `args` and an environment of PATH only; (exit code, stderr).
async fn run_binary(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_reprise"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output).await.expect("exits").expect("runs");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn credentials_typed_on_a_command_line_are_refused_with_where_they_go() {
    let cases: [(&[&str], &str, &str, &str); 7] = [
        (&["serve", "--auth-hs256-secret", SECRET], SECRET, "REPRISE_AUTH_HS256_SECRET", "--auth-hs256-secret-file"),
        (
            &["dev", "--auth-hs256-secret=dev-secret-0123456789abcdef-0123"],
            "dev-secret",
            "REPRISE_AUTH_HS256_SECRET",
            "--auth-hs256-secret-file",
        ),
        (&["worker", "--token", "wrk.tok.en"], "wrk.tok.en", "REPRISE_TOKEN", "--token-file"),
        (&["dev", "--token=dev.tok.en"], "dev.tok.en", "REPRISE_TOKEN", "--token-file"),
        (&["list", "--token", "cli.tok.en"], "cli.tok.en", "REPRISE_TOKEN", "--token-file"),
        (
            &["serve", "--database-url", "postgres://app:pw-in-url@127.0.0.1:1/db"],
            "pw-in-url",
            "REPRISE_DATABASE_URL",
            "--database-url-file",
        ),
        (
            &["serve", "--database-url", "postgres://127.0.0.1:1/db?sslpassword=pw-param"],
            "pw-param",
            "REPRISE_DATABASE_URL",
            "--database-url-file",
        ),
    ];
    for (args, secret, env, file_flag) in cases {
        let (code, stderr) = run_binary(args).await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains(env) && stderr.contains(file_flag),
            "{args:?} should name {env} and {file_flag}: {stderr}"
        );
        assert!(stderr.contains("command line"), "{args:?}: {stderr}");
        assert!(!stderr.contains(secret), "{args:?}: the refusal repeats the secret: {stderr}");
    }

    // A worker's own configuration is never passed to tasks, not even on request.
    let (code, stderr) =
        run_binary(&["worker", "--task-env-allow", "PWD,REPRISE_TOKEN", "--server", "http://127.0.0.1:1"]).await;
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("REPRISE_TOKEN") && stderr.contains("never passed to tasks"), "{stderr}");
}
