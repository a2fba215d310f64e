//! The `reprise` client subcommands: the real binary against the test server.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use reprise::proto as pb;
use serde_json::Value;

use crate::helpers::*;

crate::on_both_backends!(
    apply_creates_then_writes_new_versions,
    start_list_and_get,
    a_failed_run_is_resumed_from_a_stage_with_its_history,
    bad_input_exits_2_and_names_the_field,
    server_refusals_exit_1_with_the_message,
    the_token_is_sent_as_a_bearer_token,
    logs_show_what_workers_stored_and_get_shows_the_tail,
    logs_follow_streams_output_as_it_arrives,
    pipelines_by_name_and_an_unchanged_apply,
    yaml_shorthands_and_a_cel_error_with_its_position,
    watch_outlives_a_server_restart,
    watch_flags_on_start_and_approve,
    yaml_output_completions_colours_and_width,
    watch_on_a_terminal_redraws_in_place,
);

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs `reprise ARGS --server ADDRESS` and waits for it (at most a minute).
async fn reprise(app: &TestApp, args: &[&str]) -> Run {
    reprise_at(&app.address, args, None).await
}

/// Runs `reprise ARGS --server SERVER`, with REPRISE_TOKEN set to `token` if given.
async fn reprise_at(server: &str, args: &[&str], token: Option<&str>) -> Run {
    reprise_env(server, args, token, &[]).await
}

/// The command `reprise_at` runs, with extra environment variables, not yet started.
fn command(server: &str, args: &[&str], token: Option<&str>, env: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_reprise"));
    match token {
        Some(token) => command.env("REPRISE_TOKEN", token),
        None => command.env_remove("REPRISE_TOKEN"),
    };
    for variable in ["REPRISE_OUTPUT", "NO_COLOR", "CLICOLOR_FORCE", "CLICOLOR", "COLUMNS"] {
        command.env_remove(variable);
    }
    command
        .args(args)
        .args(["--server", server])
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Waits (at most a minute) for a command started with `command`.
async fn finish(child: tokio::process::Child, what: &str) -> Run {
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("reprise {what} did not finish within a minute"))
        .expect("run the reprise binary");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `reprise ARGS --server SERVER` with extra environment variables.
async fn reprise_env(server: &str, args: &[&str], token: Option<&str>, env: &[(&str, &str)]) -> Run {
    let child = command(server, args, token, env).spawn().expect("start the reprise binary");
    finish(child, &format!("{args:?}")).await
}

/// A pipeline file: `build` (one workflow) then `ship` (two), all on `queue`.
fn pipeline_yaml(name: &str, queue: &str, description: &str) -> String {
    format!(
        r#"
application: shop
name: {name}
definition:
  description: {description}
  variables:
    - name: region
      defaultValue: eu
  stages:
    - name: build
      environment: {{name: ci, type: ENVIRONMENT_TYPE_NON_PROD}}
      workflows:
        workflows:
          - {{name: compile, taskQueue: {queue}, command: "true", timeout: 600s}}
    - name: ship
      environment: {{name: prod-eu, type: ENVIRONMENT_TYPE_PROD}}
      workflows:
        workflows:
          - {{name: a, task_queue: {queue}, command: "true"}}
          - {{name: b, task_queue: {queue}, command: "true", maxAttempts: 2}}
"#
    )
}

fn write(dir: &Path, file: &str, text: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, text).expect("write the pipeline file");
    path.display().to_string()
}

/// Applies a pipeline file and returns the pipeline id.
async fn apply(app: &TestApp, file: &str) -> String {
    let run = reprise(app, &["apply", "-f", file, "--output", "json"]).await.ok();
    run.json()["pipeline"]["id"].as_str().expect("pipeline id").to_owned()
}

async fn apply_creates_then_writes_new_versions(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let q = queue();
    let file = write(dir.path(), "deploy.yaml", &pipeline_yaml("deploy", &q, "first"));
    let created = reprise(&app, &["apply", "-f", &file]).await.ok();
    assert!(created.stdout.contains("shop/deploy created") && created.stdout.contains("version 1"), "{created:#?}");

    let file = write(dir.path(), "deploy.yaml", &pipeline_yaml("deploy", &q, "second"));
    let updated = reprise(&app, &["apply", "-f", &file, "-o", "json"]).await.ok().json();
    assert_eq!(updated["pipeline"]["version"], "2", "{updated:#}");
    assert_eq!(updated["pipeline"]["definition"]["description"], "second");
    let id = updated["pipeline"]["id"].as_str().unwrap();

    let stored = app
        .pipelines
        .clone()
        .get_pipeline(pb::GetPipelineRequest { pipeline_id: id.into(), version: 0 })
        .await
        .unwrap()
        .into_inner()
        .pipeline
        .unwrap();
    assert_eq!((stored.version, stored.name.as_str()), (2, "deploy"));
    let definition = stored.definition.unwrap();
    assert_eq!(definition.variables[0].default_value.as_deref(), Some("eu"));
    let Some(pb::stage::Kind::Workflows(ship)) = &definition.stages[1].kind else { panic!("ship: {definition:?}") };
    assert_eq!(ship.workflows[1].task_queue, q, "snake_case field names work too");
    assert_eq!(ship.workflows[1].max_attempts, 2);

    let again = reprise(&app, &["apply", "-f", &file]).await.ok();
    assert!(again.stdout.contains("unchanged") && again.stdout.contains("version 2"), "{again:#?}");
}

async fn start_list_and_get(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let q = queue();
    let pipeline = apply(&app, &write(dir.path(), "p.yaml", &pipeline_yaml("deploy", &q, "x"))).await;
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));

    let started = reprise(&app, &["start", &pipeline, "--var", "region=us", "--artifact", "web=1.2.3"]).await.ok();
    assert!(started.stdout.contains("Request ID:"), "the generated request id is printed: {started:#?}");
    let id = started.stdout.lines().find_map(|l| l.strip_prefix("Execution:")).expect("execution id").trim().to_owned();
    let done = app.wait_final(&id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
    assert_eq!(done.variables["region"], "us");
    assert_eq!(done.artifacts["web"], "1.2.3");

    // A retry with the same request id returns the same execution.
    let first = reprise(&app, &["start", &pipeline, "--request-id", "deploy-42", "-o", "json"]).await.ok().json();
    let retry = reprise(&app, &["start", &pipeline, "--request-id", "deploy-42", "-o", "json"]).await.ok().json();
    assert_eq!(first["execution"]["id"], retry["execution"]["id"]);
    assert_eq!(first["execution"]["requestId"], "deploy-42");
    let second = first["execution"]["id"].as_str().unwrap().to_owned();
    app.wait_final(&second).await;

    let listed = reprise(&app, &["list", "--application", "shop", "--output", "json"]).await.ok().json();
    let ids: Vec<&str> = listed["executions"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&id.as_str()) && ids.contains(&second.as_str()), "{listed:#}");
    let limited = reprise(&app, &["list", "--limit", "1", "-o", "json"]).await.ok().json();
    assert_eq!(limited["executions"].as_array().unwrap().len(), 1, "{limited:#}");
    let none = reprise(&app, &["list", "--status", "failed", "-o", "json"]).await.ok().json();
    assert!(none.get("executions").is_none(), "{none:#}");

    let table = reprise(&app, &["list", "--pipeline", &pipeline]).await.ok().stdout;
    let header = table.lines().next().unwrap();
    for column in ["ID", "PIPELINE", "STATUS", "ATTEMPT", "STARTED", "ENDED"] {
        assert!(header.contains(column), "{table}");
    }
    assert!(table.contains(&id) && table.contains("shop/deploy v1") && table.contains("SUCCEEDED"), "{table}");

    let got = reprise(&app, &["get", &id]).await.ok().stdout;
    assert!(got.contains("STAGE") && got.contains("CARRIED FROM"), "{got}");
    assert!(
        got.lines().any(|l| l.starts_with("ship") && l.contains("SUCCEEDED") && l.contains("2/2 succeeded")),
        "{got}"
    );
    assert!(got.contains("region=us") && got.contains("web=1.2.3"), "{got}");
    let got = reprise(&app, &["get", &id, "-o", "json"]).await.ok().json();
    assert_eq!(got["execution"]["status"], "EXECUTION_STATUS_SUCCEEDED");
    assert_eq!(got["execution"]["stages"][1]["workflows"].as_array().unwrap().len(), 2);
}

async fn a_failed_run_is_resumed_from_a_stage_with_its_history(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let q = queue();
    let pipeline = apply(&app, &write(dir.path(), "p.yaml", &pipeline_yaml("deploy", &q, "x"))).await;
    // `ship/b` fails the first time it runs and succeeds after.
    let b_runs = Arc::new(AtomicUsize::new(0));
    let worker = app.worker(&q, {
        let b_runs = b_runs.clone();
        move |t| match t.workflow_name.as_str() {
            "b" if b_runs.fetch_add(1, Ordering::SeqCst) == 0 => Script::Fail(Duration::ZERO),
            _ => Script::Succeed(Duration::from_millis(100)),
        }
    });

    let started = reprise(&app, &["start", &pipeline, "-o", "json"]).await.ok().json();
    let first = started["execution"]["id"].as_str().unwrap().to_owned();
    let watched = reprise(&app, &["watch", &first]).await;
    assert_eq!(watched.code, 1, "watch exits 1 when the execution fails: {watched:#?}");
    assert!(watched.stdout.contains(&format!("execution {first}: FAILED")), "{watched:#?}");
    assert!(watched.stdout.contains("stage ship: FAILED"), "{watched:#?}");

    let got = reprise(&app, &["get", &first]).await.ok().stdout;
    assert!(got.contains("Resumable from:") && got.contains("ship/b"), "{got}");

    // The dry run prints the plan and creates nothing.
    let plan = reprise(&app, &["resume", &first, "--from-stage", "ship", "--dry-run"]).await.ok().stdout;
    assert!(plan.contains("nothing was created"), "{plan}");
    let build = plan.lines().find(|l| l.starts_with("build")).expect("build in the plan");
    assert!(build.contains("CARRY OVER") && build.contains(&first), "{plan}");
    let ship = plan.lines().find(|l| l.starts_with("ship")).expect("ship in the plan");
    assert!(ship.contains("RUN") && ship.contains("workflows: a, b"), "{plan}");
    let history = reprise(&app, &["history", &first, "-o", "json"]).await.ok().json();
    assert_eq!(history["entries"].as_array().unwrap().len(), 1, "a dry run creates nothing: {history:#}");
    let dry_json =
        reprise(&app, &["resume", &first, "--from-stage", "ship", "--dry-run", "-o", "json"]).await.ok().json();
    assert!(dry_json.get("execution").is_none(), "{dry_json:#}");
    assert_eq!(dry_json["plan"][0]["action"], "PLANNED_ACTION_CARRY_OVER");

    let resumed = reprise(
        &app,
        &[
            "resume",
            &first,
            "--from-stage",
            "ship",
            "--request-id",
            "resume-1",
            "--reason",
            "fixed the canary",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    let second = resumed["execution"]["id"].as_str().unwrap().to_owned();
    assert_eq!(resumed["execution"]["attempt"], 2);
    assert_eq!(resumed["execution"]["resumedFrom"]["reason"], "fixed the canary", "{resumed:#}");
    let watched = reprise(&app, &["watch", &second]).await;
    assert_eq!(watched.code, 0, "watch exits 0 when the execution succeeds: {watched:#?}");
    assert!(watched.stdout.contains("stage build: SUCCEEDED (1/1 succeeded; carried over)"), "{watched:#?}");
    let last = watched.stdout.lines().last().unwrap_or_default();
    assert!(last.contains(&format!("execution {second}: SUCCEEDED")), "the final state comes last: {watched:#?}");
    assert_eq!(worker.counts()[&("build".to_string(), "compile".to_string())], 1, "build was carried over, not rerun");

    let table = reprise(&app, &["history", &second]).await.ok().stdout;
    for column in ["ATTEMPT", "EXECUTION", "STATUS", "RESUMED FROM", "TRIGGERED BY", "STARTED", "ENDED"] {
        assert!(table.contains(column), "{table}");
    }
    let row = |id: &str| {
        let row = table.lines().skip(1).find(|l| l.split_whitespace().nth(1) == Some(id));
        row.unwrap_or_else(|| panic!("no row for {id}: {table}")).to_owned()
    };
    assert!(
        row(&second).starts_with('2')
            && row(&second).contains("SUCCEEDED")
            && row(&second).contains(&format!("{first} at ship")),
        "{table}"
    );
    assert!(row(&first).starts_with('1') && row(&first).contains("FAILED"), "{table}");

    // The latest of the chain is what `list` shows, and the old one cannot be resumed again.
    let listed = reprise(&app, &["list", "-o", "json"]).await.ok().json();
    assert_eq!(listed["executions"][0]["id"], second.as_str(), "{listed:#}");
    let again = reprise(&app, &["resume", &first, "--from-stage", "ship"]).await;
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(again.stderr.contains("FAILED_PRECONDITION"), "{again:#?}");
}

async fn bad_input_exits_2_and_names_the_field(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let bad_enum = pipeline_yaml("deploy", "q", "x").replace("ENVIRONMENT_TYPE_PROD", "PRODUCTION");
    let run = reprise(&app, &["apply", "-f", &write(dir.path(), "bad.yaml", &bad_enum)]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("definition.stages[1].environment.type") && run.stderr.contains("PRODUCTION"),
        "{run:#?}"
    );
    assert!(run.stdout.is_empty(), "{run:#?}");

    let typo = pipeline_yaml("deploy", "q", "x").replace("taskQueue", "taskQeue");
    let run = reprise(&app, &["apply", "-f", &write(dir.path(), "typo.yaml", &typo)]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("definition.stages[0].workflows.workflows[0]") && run.stderr.contains("taskQeue"),
        "{run:#?}"
    );

    // Refused by the server: INVALID_ARGUMENT is bad input too, with its field violations.
    let no_stages = "application: shop\nname: empty\ndefinition:\n  description: nothing to do\n";
    let run = reprise(&app, &["apply", "-f", &write(dir.path(), "empty.yaml", no_stages)]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("INVALID_ARGUMENT") && run.stderr.contains("- definition.stages"), "{run:#?}");

    let run = reprise(&app, &["apply", "-f", &dir.path().join("missing.yaml").display().to_string()]).await;
    assert_eq!(run.code, 2, "{run:#?}");

    let pipeline = apply(&app, &write(dir.path(), "p.yaml", &pipeline_yaml("deploy", "q", "x"))).await;
    let run = reprise(&app, &["start", &pipeline, "--var", "colour=red"]).await;
    assert_eq!(run.code, 2, "an undeclared variable: {run:#?}");
    assert!(run.stderr.contains("colour"), "{run:#?}");
    let run = reprise(&app, &["start", &pipeline, "--var", "no-equals-sign"]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    let run = reprise(&app, &["list", "--status", "sideways"]).await;
    assert_eq!(run.code, 2, "{run:#?}");
}

async fn server_refusals_exit_1_with_the_message(app: TestApp) {
    let missing = uuid::Uuid::now_v7().to_string();
    let run = reprise(&app, &["get", &missing]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.starts_with("error: ") && run.stderr.contains("NOT_FOUND"), "{run:#?}");
    let run = reprise(&app, &["watch", &missing]).await;
    assert_eq!(run.code, 1, "{run:#?}");

    let q = queue();
    let p = app
        .create_pipeline("gated", vec![approval("gate", Duration::from_secs(3600)), workflows("ship", &q, &["a"])])
        .await;
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let e = app.start(&p.id).await;
    app.wait_until(&e.id, |e| stage_status(e, "gate") == pb::StageStatus::WaitingApproval).await;
    let paused = reprise(&app, &["pause", &e.id]).await.ok();
    assert!(paused.stdout.contains("PAUSED"), "{paused:#?}");
    reprise(&app, &["continue", &e.id]).await.ok();
    let approved = reprise(&app, &["approve", &e.id, "--comment", "looks good", "-o", "json"]).await.ok().json();
    assert_eq!(approved["execution"]["stages"][0]["decisionComment"], "looks good");
    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
    let run = reprise(&app, &["abort", &e.id, "--reason", "too late"]).await;
    assert_eq!(run.code, 1, "aborting an ended execution is refused: {run:#?}");
    assert!(run.stderr.contains("FAILED_PRECONDITION"), "{run:#?}");

    let e = app.start(&p.id).await;
    app.wait_until(&e.id, |e| stage_status(e, "gate") == pb::StageStatus::WaitingApproval).await;
    let rejected = reprise(&app, &["reject", &e.id, "--comment", "no"]).await.ok();
    assert!(rejected.stdout.contains("REJECTED"), "{rejected:#?}");
    let e = app.start(&p.id).await;
    let aborted = reprise(&app, &["abort", &e.id, "--reason", "wrong build"]).await.ok();
    assert!(aborted.stdout.contains("ABORTED") && aborted.stdout.contains("wrong build"), "{aborted:#?}");
    let watched = reprise(&app, &["watch", &e.id]).await;
    assert_eq!(watched.code, 1, "{watched:#?}");
}

async fn the_token_is_sent_as_a_bearer_token(app: TestApp) {
    use reprise::auth::{Authenticator, JwtConfig, Verifier};
    const SECRET: &str = "cli-test-secret-cli-test-secret-cli!";
    let config = JwtConfig { hs256_secret: Some(SECRET.into()), ..Default::default() };
    let verifier = Verifier::new(&config).expect("verifier");
    let options = reprise::server::ServeOptions {
        auth: Authenticator::Enabled { verifier: Some(Arc::new(verifier)), certificates: None },
        tls: None,
        metrics_sampling: None,
        ..Default::default()
    };
    let (address, engine, _stop) = app.secured(options).await;
    engine.bootstrap_admin("root").await.expect("bootstrap admin");
    let server = format!("http://{address}");
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let claims = serde_json::json!({ "sub": "root", "exp": exp });
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();

    let run = reprise_at(&server, &["list"], None).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("UNAUTHENTICATED"), "{run:#?}");
    reprise_at(&server, &["list"], Some(&token)).await.ok();
    let dir = tempfile::tempdir().unwrap();
    let token_file = write(dir.path(), "token", &format!("{token}\n"));
    reprise_at(&server, &["list", "--token-file", &token_file], None).await.ok();
    let bad_file = write(dir.path(), "bad", "not-a-jwt");
    let run = reprise_at(&server, &["list", "--token-file", &bad_file], None).await;
    assert_eq!(run.code, 1, "{run:#?}");

    // A token on the command line is readable by every user of the machine: refused, and not echoed.
    let run = reprise_at(&server, &["list", "--token", &token], None).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("REPRISE_TOKEN") && run.stderr.contains("--token-file"), "{run:#?}");
    assert!(!run.stderr.contains(&token), "{run:#?}");
}

/// The id on the `Execution:` line of `start`'s table.
fn execution_id(run: &Run) -> String {
    run.stdout.lines().find_map(|l| l.strip_prefix("Execution:")).expect("execution id").trim().to_owned()
}

/// Starts `pipeline` with `ship/b` failing, as a worker would report
/// "connection refused", and waits for it to fail; returns its id.
async fn failed_run(app: &TestApp, pipeline: &str) -> String {
    let started = reprise(app, &["start", pipeline, "-o", "json"]).await.ok().json();
    let id = started["execution"]["id"].as_str().unwrap().to_owned();
    assert_eq!(status(&app.wait_final(&id).await), pb::ExecutionStatus::Failed);
    id
}

async fn logs_show_what_workers_stored_and_get_shows_the_tail(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let q = queue();
    apply(&app, &write(dir.path(), "p.yaml", &pipeline_yaml("deploy", &q, "x"))).await;
    let _worker = app.worker(&q, |t| match t.workflow_name.as_str() {
        "b" => Script::Fail(Duration::ZERO),
        _ => Script::Succeed(Duration::ZERO),
    });
    let id = failed_run(&app, "shop/deploy").await;

    // Every workflow that ran, each under its header, in stage order.
    let all = reprise(&app, &["logs", &id]).await.ok().stdout;
    let headers: Vec<&str> = all.lines().filter(|l| l.starts_with("==> ")).collect();
    assert_eq!(headers, ["==> build/compile <==", "==> ship/a <==", "==> ship/b <=="], "{all}");
    assert!(all.contains("compile attempt 1") && all.contains("b attempt 1"), "{all}");

    // One workflow: just its output, as the worker stored it.
    let one = reprise(&app, &["logs", &id, "--stage", "ship", "--workflow", "b"]).await.ok().stdout;
    assert_eq!(one, "b attempt 1\n");
    let by_index = reprise(&app, &["logs", &id, "--stage", "1", "--workflow", "b"]).await.ok().stdout;
    assert_eq!(by_index, one);
    let stage = reprise(&app, &["logs", &id, "--stage", "ship"]).await.ok().stdout;
    assert!(stage.contains("==> ship/a <==") && !stage.contains("build/compile"), "{stage}");
    let json = reprise(&app, &["logs", &id, "-o", "json"]).await;
    assert_eq!(json.code, 2, "logs is text: {json:#?}");
    let none = reprise(&app, &["logs", &id, "--workflow", "nope"]).await;
    assert_eq!(none.code, 2, "{none:#?}");
    assert!(none.stderr.contains("ship/b"), "the error lists what exists: {none:#?}");

    // `get` and `watch` show the end of the failed workflow's output.
    let got = reprise(&app, &["get", &id]).await.ok().stdout;
    let tail = got.split("--- ship/b: last 1 line(s) of output").nth(1).unwrap_or_else(|| panic!("{got}"));
    assert!(tail.contains(&format!("reprise logs {id} --stage ship --workflow b")), "{got}");
    assert!(tail.contains("\nb attempt 1\n"), "{got}");
    let watched = reprise(&app, &["watch", &id]).await;
    assert_eq!(watched.code, 1, "{watched:#?}");
    assert!(
        watched.stdout.contains("--- ship/b: last 1 line(s)") && watched.stdout.contains("b attempt 1"),
        "{watched:#?}"
    );
    assert!(!watched.stdout.contains("--- ship/a"), "only failed workflows: {watched:#?}");
}

async fn logs_follow_streams_output_as_it_arrives(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("follow", vec![workflows("run", &q, &["w"])]).await;
    let e = app.start(&p.id).await;
    let task = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(10)).await.expect("a task");
    let child = command(&app.address, &["logs", &e.id, "-f"], None, &[]).spawn().unwrap();
    let send = |output: &str| {
        let request = pb::HeartbeatRequest {
            task_id: task.task_id.clone(),
            lease_token: task.lease_token.clone(),
            output: output.into(),
            output_offset: None,
        };
        let mut client = app.workers.clone();
        async move { client.heartbeat(request).await.expect("heartbeat") }
    };
    send("connecting to us-east\n").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    send("connection refused to ").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send("us-east\n").await;
    complete_task(&app.workers, &task.task_id, &task.lease_token, pb::TaskOutcome::Failed, "giving up")
        .await
        .expect("complete");
    let run = finish(child, "logs -f").await;
    assert_eq!(run.code, 1, "the execution failed, so -f exits 1 as watch does: {run:#?}");
    assert_eq!(
        run.stdout, "run/w | connecting to us-east\nrun/w | connection refused to us-east\nrun/w | giving up\n",
        "{run:#?}"
    );
    let single = reprise(&app, &["logs", &e.id, "-f", "--stage", "run", "--workflow", "w"]).await;
    assert_eq!(single.stdout, "connecting to us-east\nconnection refused to us-east\ngiving up\n", "{single:#?}");
}

async fn pipelines_by_name_and_an_unchanged_apply(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let q = queue();
    let file = write(dir.path(), "p.yaml", &pipeline_yaml("deploy", &q, "x"));
    let id = apply(&app, &file).await;
    let again = reprise(&app, &["apply", "-f", &file]).await.ok();
    assert_eq!(again.stdout.trim(), format!("pipeline shop/deploy unchanged: id {id}, version 1"), "{again:#?}");
    let json = reprise(&app, &["apply", "-f", &file, "-o", "json"]).await.ok().json();
    assert_eq!(json["pipeline"]["version"], "1", "no version was written: {json:#}");
    let mut pipelines = app.pipelines.clone();
    let stored = pipelines.get_pipeline(pb::GetPipelineRequest { pipeline_id: id.clone(), version: 0 });
    assert_eq!(stored.await.unwrap().into_inner().pipeline.unwrap().latest_version, 1);

    let listed = reprise(&app, &["pipelines", "list", "--application", "shop"]).await.ok().stdout;
    assert!(listed.lines().next().unwrap().starts_with("PIPELINE"), "{listed}");
    assert!(listed.lines().any(|l| l.starts_with("shop/deploy") && l.contains(&id)), "{listed}");
    let got = reprise(&app, &["pipelines", "get", "shop/deploy"]).await.ok().stdout;
    assert!(got.contains(&id) && got.contains("region=eu"), "{got}");
    assert!(got.lines().any(|l| l.starts_with("ship") && l.contains("workflows: a, b") && l.contains("PROD")), "{got}");
    let by_id = reprise(&app, &["pipelines", "get", &id, "-o", "json"]).await.ok().json();
    assert_eq!(by_id["pipeline"]["name"], "deploy");

    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let started = reprise(&app, &["start", "shop/deploy"]).await.ok();
    let execution = execution_id(&started);
    app.wait_final(&execution).await;
    let listed = reprise(&app, &["list", "--pipeline", "shop/deploy", "-o", "json"]).await.ok().json();
    assert_eq!(listed["executions"][0]["id"], execution.as_str(), "{listed:#}");
    let missing = reprise(&app, &["start", "shop/nope"]).await;
    assert_eq!(missing.code, 1, "{missing:#?}");
    assert!(missing.stderr.contains("pipeline shop/nope not found"), "{missing:#?}");
    let bad = reprise(&app, &["start", "shop/a/b"]).await;
    assert_eq!(bad.code, 2, "{bad:#?}");
}

async fn yaml_shorthands_and_a_cel_error_with_its_position(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
application: shop
name: short
definition:
  stages:
    - name: build
      environment: {name: ci, type: non_prod}
      workflows:
        - {name: compile, command: "true", timeout: 1h30m}
    - name: gate
      environment: {name: prod, type: PROD}
      approval: {timeout: 10m}
"#;
    let id = apply(&app, &write(dir.path(), "short.yaml", text)).await;
    let mut pipelines = app.pipelines.clone();
    let stored = pipelines.get_pipeline(pb::GetPipelineRequest { pipeline_id: id, version: 0 });
    let definition = stored.await.unwrap().into_inner().pipeline.unwrap().definition.unwrap();
    assert_eq!(definition.stages[0].environment.as_ref().unwrap().r#type, pb::EnvironmentType::NonProd as i32);
    let Some(pb::stage::Kind::Workflows(w)) = &definition.stages[0].kind else { panic!("{definition:?}") };
    assert_eq!(w.workflows[0].timeout.unwrap().seconds, 5400);
    let Some(pb::stage::Kind::Approval(a)) = &definition.stages[1].kind else { panic!("{definition:?}") };
    assert_eq!(a.timeout.unwrap().seconds, 600);

    let bad_cel = text.replace(
        "approval: {timeout: 10m}",
        "approval: {timeout: 10m}\n      skipCondition: {expression: 'region == \"eu\" &&& x'}",
    );
    let run = reprise(&app, &["apply", "-f", &write(dir.path(), "cel.yaml", &bad_cel)]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("skip_condition") && run.stderr.contains("column"), "{run:#?}");
}

async fn watch_outlives_a_server_restart(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("restart", vec![workflows("run", &q, &["w"])]).await;
    let e = app.start(&p.id).await;
    // No worker yet: the execution cannot end, and --timeout bounds the watch.
    let bounded = reprise(&app, &["watch", &e.id, "--timeout", "1s"]).await;
    assert_eq!(bounded.code, 1, "{bounded:#?}");
    assert!(bounded.stderr.contains("gave up after --timeout 1s"), "{bounded:#?}");
    let documents = reprise(&app, &["watch", &e.id, "--timeout", "1s", "-o", "yaml"]).await;
    assert!(documents.stdout.starts_with("---\nexecution:\n"), "{documents:#?}");
    let watcher = command(&app.address, &["watch", &e.id, "--reconnect-for", "1m"], None, &[]).spawn().unwrap();
    // The watch has its first message before the server goes away.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let app = app.restart_in_place(Duration::from_secs(2)).await;
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::from_millis(200)));
    let run = finish(watcher, "watch across a restart").await;
    assert_eq!(run.code, 0, "the watch went on after the restart: {run:#?}");
    assert!(run.stderr.contains("reconnecting in"), "{run:#?}");
    let last = run.stdout.lines().last().unwrap_or_default();
    assert!(last.contains(&format!("execution {}: SUCCEEDED", e.id)), "{run:#?}");

    // Bounded: with nothing listening, it gives up after --reconnect-for.
    let mut app = app;
    let e = app.start(&p.id).await;
    app.stop().await;
    let run = reprise_at(&app.address, &["watch", &e.id, "--reconnect-for", "2s"], None).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("--reconnect-for"), "{run:#?}");
}

async fn watch_flags_on_start_and_approve(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let q = queue();
    apply(&app, &write(dir.path(), "p.yaml", &pipeline_yaml("deploy", &q, "x"))).await;
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::from_millis(100)));
    let run = reprise(&app, &["start", "shop/deploy", "--watch"]).await.ok();
    let id = execution_id(&run);
    assert!(run.stdout.contains(&format!("execution {id}: SUCCEEDED")), "{run:#?}");
    assert!(run.stdout.contains("stage ship: SUCCEEDED (2/2 succeeded; took "), "elapsed time per stage: {run:#?}");

    let gated = app
        .create_pipeline("gated", vec![approval("gate", Duration::from_secs(3600)), workflows("ship", &q, &["a"])])
        .await;
    let e = app.start(&gated.id).await;
    app.wait_until(&e.id, |e| stage_status(e, "gate") == pb::StageStatus::WaitingApproval).await;
    let run = reprise(&app, &["approve", &e.id, "--watch"]).await.ok();
    assert!(run.stdout.contains(&format!("execution {}: SUCCEEDED", e.id)), "{run:#?}");
    let e = app.start(&gated.id).await;
    app.wait_until(&e.id, |e| stage_status(e, "gate") == pb::StageStatus::WaitingApproval).await;
    let run = reprise(&app, &["reject", &e.id, "--watch"]).await;
    assert_eq!(run.code, 1, "a rejected execution did not succeed: {run:#?}");

    // Resume --watch follows the new execution.
    let failing = app.create_pipeline("failing", vec![workflows("ship", &q, &["a"])]).await;
    let e = app.start(&failing.id).await;
    reprise(&app, &["abort", &e.id, "--reason", "wrong build"]).await.ok();
    app.wait_final(&e.id).await;
    let run = reprise(&app, &["resume", &e.id, "--from-stage", "ship", "--watch"]).await.ok();
    assert!(run.stdout.contains("SUCCEEDED"), "{run:#?}");
}

async fn yaml_output_completions_colours_and_width(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let q = queue();
    apply(&app, &write(dir.path(), "p.yaml", &pipeline_yaml("deploy", &q, "x"))).await;
    let _worker = app.worker(&q, |t| match t.workflow_name.as_str() {
        "b" => Script::Fail(Duration::ZERO),
        _ => Script::Succeed(Duration::ZERO),
    });
    let id = failed_run(&app, "shop/deploy").await;

    let yaml = reprise(&app, &["get", &id, "-o", "yaml"]).await.ok().stdout;
    let value: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"));
    assert_eq!(value["execution"]["id"], id.as_str());
    assert_eq!(value["execution"]["status"], "EXECUTION_STATUS_FAILED");

    let plain = reprise(&app, &["get", &id]).await.ok().stdout;
    assert!(!plain.contains('\x1b'), "no colours into a pipe: {plain:?}");
    let forced = reprise_env(&app.address, &["get", &id], None, &[("CLICOLOR_FORCE", "1")]).await.ok().stdout;
    assert!(forced.contains("\x1b[") && forced.contains("FAILED"), "{forced:?}");
    let no_color =
        reprise_env(&app.address, &["get", &id], None, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).await.ok().stdout;
    assert!(!no_color.contains('\x1b'), "NO_COLOR wins: {no_color:?}");

    let wide = reprise(&app, &["history", &id]).await.ok().stdout;
    assert!(wide.lines().any(|l| l.chars().count() > 60), "{wide}");
    let narrow = reprise_env(&app.address, &["history", &id], None, &[("COLUMNS", "60")]).await.ok().stdout;
    assert!(narrow.lines().all(|l| l.chars().count() <= 60), "{narrow}");
    assert!(narrow.contains('…'), "{narrow}");

    for shell in ["bash", "zsh", "fish"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_reprise")).args(["completions", shell]).output();
        let output = output.expect("run reprise completions");
        assert!(output.status.success(), "{output:?}");
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(script.contains("logs") && script.contains("pipelines"), "{shell}: {script}");
    }
}

/// `reprise ARGS` on a pseudo-terminal (util-linux `script`), as a person runs it.
async fn on_a_terminal(app: &TestApp, args: &str, env: &[(&str, &str)]) -> String {
    let binary = env!("CARGO_BIN_EXE_reprise");
    let line = format!("{binary} {args} --server {}", app.address);
    let mut command = tokio::process::Command::new("script");
    command.args(["-qec", &line, "/dev/null"]).env("COLUMNS", "100").stdin(std::process::Stdio::null());
    for variable in ["NO_COLOR", "CLICOLOR_FORCE", "CLICOLOR", "REPRISE_TOKEN"] {
        command.env_remove(variable);
    }
    command.envs(env.iter().copied());
    let output = tokio::time::timeout(Duration::from_secs(60), command.output()).await.unwrap().expect("script(1)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn watch_on_a_terminal_redraws_in_place(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("tty", vec![workflows("run", &q, &["w"])]).await;
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::from_millis(2500)));
    let e = app.start(&p.id).await;
    let screen = on_a_terminal(&app, &format!("watch {}", e.id), &[]).await;
    assert!(screen.contains("ELAPSED"), "{screen:?}");
    // Redrawn over the previous frame (cursor up, clear), also between messages: the clock ticks.
    assert!(screen.matches("\x1b[4A").count() >= 2, "{screen:?}");
    assert!(screen.contains("\x1b[1m\x1b[32mSUCCEEDED"), "coloured on a terminal: {screen:?}");

    let e = app.start(&p.id).await;
    let plain = on_a_terminal(&app, &format!("watch {}", e.id), &[("NO_COLOR", "1")]).await;
    assert!(plain.contains("\x1b[4A") && plain.contains("SUCCEEDED"), "{plain:?}");
    assert!(!plain.contains("\x1b[1m"), "NO_COLOR: no colours, still redrawn: {plain:?}");
}
