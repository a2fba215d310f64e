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
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_reprise"));
    match token {
        Some(token) => command.env("REPRISE_TOKEN", token),
        None => command.env_remove("REPRISE_TOKEN"),
    };
    command
        .args(args)
        .args(["--server", server])
        .env_remove("REPRISE_OUTPUT")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("reprise {args:?} did not finish within a minute"))
        .expect("run the reprise binary");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
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
    assert!(again.stdout.contains("updated") && again.stdout.contains("version 3"), "{again:#?}");
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
