//! Secret variables: bound at start, sealed apart from the execution, given
//! only to the workflows that list them, masked in what workers report,
//! never returned by any read, kept by a resume.

use std::time::Duration;

use prost::Message;
use reprise::{engine::Settings, proto as pb};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::*;

crate::on_both_backends!(
    a_secret_reaches_only_its_workflow_and_no_read_shows_it,
    a_secret_split_across_reports_is_masked_where_the_pieces_meet,
    a_secret_split_across_pieces_sent_from_offsets_is_masked_where_they_meet,
    a_resume_keeps_the_frozen_secret,
    secrets_are_refused_where_they_would_leak,
    without_a_secrets_key_a_pipeline_with_secrets_cannot_start,
);

const SECRET: &str = "hunter2-Zebra-4417";

fn variables() -> Vec<pb::Variable> {
    vec![
        pb::Variable { name: "region".into(), default_value: Some("eu".into()), ..Default::default() },
        pb::Variable { name: "db_password".into(), secret: true, ..Default::default() },
    ]
}

/// A stage of two workflows; only `uses` lists the secret.
fn deploy(q: &str) -> pb::Stage {
    let mut stage = workflows("deploy", q, &["uses", "other"]);
    if let Some(pb::stage::Kind::Workflows(w)) = &mut stage.kind {
        w.workflows[0].secrets = vec!["db_password".into()];
    }
    stage
}

fn start_request(pipeline_id: &str, request_id: &str, secret: &str) -> pb::StartExecutionRequest {
    pb::StartExecutionRequest {
        pipeline_id: pipeline_id.into(),
        variables: [("db_password".to_string(), secret.to_string())].into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

async fn start(app: &TestApp, pipeline_id: &str, request_id: &str) -> pb::Execution {
    let request = start_request(pipeline_id, request_id, SECRET);
    app.executions.clone().start_execution(request).await.expect("start").into_inner().execution.unwrap()
}

/// Polls the two tasks of the stage, by workflow name.
async fn take_both(app: &TestApp, q: &str) -> (pb::Task, pb::Task) {
    let a = poll_once(app.workers.clone(), q.to_owned(), Duration::from_secs(10)).await.expect("a task");
    let b = poll_once(app.workers.clone(), q.to_owned(), Duration::from_secs(10)).await.expect("a task");
    if a.workflow_name == "uses" { (a, b) } else { (b, a) }
}

/// The secret is nowhere in the database in the clear.
async fn assert_not_stored(app: &TestApp) {
    let like = format!("'%{SECRET}%'");
    for (table, columns) in [
        ("executions", vec!["variables", "request_fingerprint", "status_message", "secrets"]),
        ("tasks", vec!["output", "status_message", "command"]),
        ("stages", vec!["status_message"]),
        ("audit_events", vec!["details"]),
    ] {
        let any = columns.iter().map(|c| format!("{c} LIKE {like}")).collect::<Vec<_>>().join(" OR ");
        let n = app.sql_count(&format!("SELECT count(*) AS n FROM {table} WHERE {any}")).await;
        assert_eq!(n, 0, "the secret is in the clear in {table}");
    }
}

fn assert_hidden(what: &str, message: &impl Message) {
    let bytes = message.encode_to_vec();
    let found = bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
    assert!(!found, "{what} shows the secret");
}

async fn a_secret_reaches_only_its_workflow_and_no_read_shows_it(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline_with("secretive", variables(), vec![deploy(&q)]).await;
    let e = start(&app, &p.id, "start-1").await;
    let (uses, other) = take_both(&app, &q).await;
    assert_eq!(uses.environment.get("REPRISE_VAR_DB_PASSWORD").map(String::as_str), Some(SECRET));
    assert_eq!(uses.environment.get("REPRISE_VAR_REGION").map(String::as_str), Some("eu"));
    assert!(!other.environment.contains_key("REPRISE_VAR_DB_PASSWORD"), "only the workflow that lists it");
    assert_hidden("the other workflow's task", &other);

    // What the worker echoes is masked before it is stored.
    let beat = pb::HeartbeatRequest {
        task_id: uses.task_id.clone(),
        lease_token: uses.lease_token.clone(),
        output: format!("login {SECRET}\n"),
        output_offset: None,
    };
    app.workers.clone().heartbeat(beat).await.unwrap();
    let report = pb::CompleteTaskRequest {
        task_id: uses.task_id.clone(),
        lease_token: uses.lease_token.clone(),
        outcome: pb::TaskOutcome::Failed as i32,
        exit_code: 1,
        output: format!("denied for {SECRET}\n"),
        message: format!("bad password {SECRET}"),
        output_offset: None,
        ..Default::default()
    };
    app.workers.clone().complete_task(report).await.unwrap();
    complete_task(&app.workers, &other.task_id, &other.lease_token, pb::TaskOutcome::Succeeded, "ok").await.unwrap();
    let done = app.wait_final(&e.id).await;
    let w = workflow_of(&done, "deploy", "uses");
    assert_eq!(w.output, "login ***\ndenied for ***\n");
    assert_eq!(w.status_message, "bad password ***");

    // No read shows it.
    assert_hidden("the start's answer", &e);
    assert!(!e.variables.contains_key("db_password"), "{:?}", e.variables);
    assert_eq!(e.variables.get("region").map(String::as_str), Some("eu"));
    for view in [pb::ExecutionView::Basic, pb::ExecutionView::Full] {
        let request = pb::GetExecutionRequest { execution_id: e.id.clone(), view: view as i32 };
        assert_hidden("GetExecution", &app.executions.clone().get_execution(request).await.unwrap().into_inner());
    }
    let list = pb::ListExecutionsRequest { pipeline_id: p.id.clone(), ..Default::default() };
    assert_hidden("ListExecutions", &app.executions.clone().list_executions(list).await.unwrap().into_inner());
    let history = pb::ListHistoryRequest { execution_id: e.id.clone(), ..Default::default() };
    assert_hidden("ListHistory", &app.executions.clone().list_history(history).await.unwrap().into_inner());
    let workflows = pb::ListWorkflowsRequest {
        execution_id: e.id.clone(),
        view: pb::ExecutionView::Full as i32,
        ..Default::default()
    };
    assert_hidden("ListWorkflows", &app.executions.clone().list_workflows(workflows).await.unwrap().into_inner());
    let output = pb::GetTaskOutputRequest { task_id: uses.task_id.clone(), ..Default::default() };
    assert_hidden("GetTaskOutput", &app.executions.clone().get_task_output(output).await.unwrap().into_inner());
    let watch = pb::WatchExecutionRequest { execution_id: e.id.clone() };
    let mut stream = app.executions.clone().watch_execution(watch).await.unwrap().into_inner();
    assert_hidden("WatchExecution", &stream.next().await.unwrap().unwrap());
    let pipeline = pb::GetPipelineRequest { pipeline_id: p.id.clone(), ..Default::default() };
    assert_hidden("GetPipeline", &app.pipelines.clone().get_pipeline(pipeline).await.unwrap().into_inner());
    assert_not_stored(&app).await;

    // Idempotency compares a keyed digest: the same secret is the same
    // request, another one is not.
    assert_eq!(start(&app, &p.id, "start-1").await.id, e.id);
    let other_secret = start_request(&p.id, "start-1", "another-secret");
    assert_code(app.executions.clone().start_execution(other_secret).await, Code::AlreadyExists);
}

/// Output arrives in pieces that cut the secret anywhere: across two
/// heartbeats, across a heartbeat and the report, and at the cut a report
/// longer than the kept output makes. The stored output shows none of it.
async fn a_secret_split_across_reports_is_masked_where_the_pieces_meet(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline_with("secretive", variables(), vec![deploy(&q)]).await;
    let e = start(&app, &p.id, "split-1").await;
    let (uses, other) = take_both(&app, &q).await;
    let beat = |output: String| pb::HeartbeatRequest {
        task_id: uses.task_id.clone(),
        lease_token: uses.lease_token.clone(),
        output,
        output_offset: None,
    };
    let (a, b) = SECRET.split_at(7);
    let (c, d) = SECRET.split_at(12);
    app.workers.clone().heartbeat(beat(format!("one {a}"))).await.unwrap();
    app.workers.clone().heartbeat(beat(format!("{b} two {c}"))).await.unwrap();
    // Pieces shorter than the secret: it is spread over three calls.
    app.workers.clone().heartbeat(beat(d[..2].to_owned())).await.unwrap();
    app.workers.clone().heartbeat(beat(format!("{} three {a}", &d[2..]))).await.unwrap();
    let report = pb::CompleteTaskRequest {
        task_id: uses.task_id.clone(),
        lease_token: uses.lease_token.clone(),
        outcome: pb::TaskOutcome::Succeeded as i32,
        output: format!("{b} four\n"),
        ..Default::default()
    };
    app.workers.clone().complete_task(report).await.unwrap();
    complete_task(&app.workers, &other.task_id, &other.lease_token, pb::TaskOutcome::Succeeded, "ok").await.unwrap();
    let done = app.wait_final(&e.id).await;
    assert_eq!(workflow_of(&done, "deploy", "uses").output, "one *** two *** three *** four\n");
    assert_not_stored(&app).await;

    // A report longer than what is kept is cut to its end: a secret the cut
    // falls in is masked before the cut, so no piece of it is left.
    let e = start(&app, &p.id, "split-2").await;
    let (uses, other) = take_both(&app, &q).await;
    let kept = 64 * 1024;
    let cut_in_secret = format!("{}{SECRET}{}", "x".repeat(100), "y".repeat(kept - SECRET.len() / 2));
    let report = pb::CompleteTaskRequest {
        task_id: uses.task_id.clone(),
        lease_token: uses.lease_token.clone(),
        outcome: pb::TaskOutcome::Succeeded as i32,
        output: cut_in_secret,
        ..Default::default()
    };
    app.workers.clone().complete_task(report).await.unwrap();
    complete_task(&app.workers, &other.task_id, &other.lease_token, pb::TaskOutcome::Succeeded, "ok").await.unwrap();
    let done = app.wait_final(&e.id).await;
    let output = &workflow_of(&done, "deploy", "uses").output;
    assert!(!output.contains(&SECRET[SECRET.len() / 2..]), "a piece of the secret is kept: {:?}", &output[..20]);
    assert!(output.starts_with("xxxxxx***yyy"), "masked, then cut: {:?}", &output[..20]);
}

/// Pieces sent from an offset (a worker that resends what it is not sure
/// arrived): the part the server has is left out and the secret is masked
/// across the seams, a resent piece and the report's included.
async fn a_secret_split_across_pieces_sent_from_offsets_is_masked_where_they_meet(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline_with("secretive", variables(), vec![deploy(&q)]).await;
    let e = start(&app, &p.id, "offsets-1").await;
    let (uses, other) = take_both(&app, &q).await;
    let beat = |output: String, offset: usize| pb::HeartbeatRequest {
        task_id: uses.task_id.clone(),
        lease_token: uses.lease_token.clone(),
        output,
        output_offset: Some(offset as i64),
    };
    let (a, b) = SECRET.split_at(7);
    let (c, d) = SECRET.split_at(12);
    let first = format!("one {a}");
    let second = format!("{b} two {c}");
    app.workers.clone().heartbeat(beat(first.clone(), 0)).await.unwrap();
    app.workers.clone().heartbeat(beat(second.clone(), first.len())).await.unwrap();
    // Sent again from where it began, and from inside it: nothing is added.
    app.workers.clone().heartbeat(beat(second.clone(), first.len())).await.unwrap();
    app.workers.clone().heartbeat(beat(second[3..].to_owned(), first.len() + 3)).await.unwrap();
    // Overlaps the last piece by its last two characters.
    let last = format!("{}{d} four\n", &c[c.len() - 2..]);
    let report = succeeded_from(&uses, &last, (first.len() + second.len() - 2) as i64);
    app.workers.clone().complete_task(report).await.unwrap();
    complete_task(&app.workers, &other.task_id, &other.lease_token, pb::TaskOutcome::Succeeded, "ok").await.unwrap();
    let done = app.wait_final(&e.id).await;
    assert_eq!(workflow_of(&done, "deploy", "uses").output, "one *** two *** four\n");
    assert_not_stored(&app).await;
}

async fn a_resume_keeps_the_frozen_secret(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline_with("secretive", variables(), vec![deploy(&q)]).await;
    let e = start(&app, &p.id, "start-2").await;
    let (uses, other) = take_both(&app, &q).await;
    complete_task(&app.workers, &uses.task_id, &uses.lease_token, pb::TaskOutcome::Failed, "").await.unwrap();
    complete_task(&app.workers, &other.task_id, &other.lease_token, pb::TaskOutcome::Succeeded, "").await.unwrap();
    app.wait_final(&e.id).await;

    let request = pb::ResumeRequest {
        execution_id: e.id.clone(),
        from_stage: Some(pb::resume_request::FromStage::StageName("deploy".into())),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let resumed = app.executions.clone().resume(request).await.expect("resume").into_inner();
    assert_hidden("Resume's answer", &resumed);
    let (uses, other) = take_both(&app, &q).await;
    assert_eq!(uses.execution_id, resumed.execution.unwrap().id);
    assert_eq!(uses.environment.get("REPRISE_VAR_DB_PASSWORD").map(String::as_str), Some(SECRET), "the frozen secret");
    assert!(!other.environment.contains_key("REPRISE_VAR_DB_PASSWORD"));
    // It is sealed for the new execution, not copied as it was.
    let sealed = app.sql_count("SELECT count(DISTINCT secrets) AS n FROM executions WHERE secrets IS NOT NULL").await;
    assert_eq!(sealed, 2);
    assert_not_stored(&app).await;
}

async fn secrets_are_refused_where_they_would_leak(app: TestApp) {
    let q = queue();
    let create = |variables: Vec<pb::Variable>, stages: Vec<pb::Stage>| pb::CreatePipelineRequest {
        application: "shop".into(),
        name: format!("p-{}", uuid::Uuid::new_v4().simple()),
        definition: Some(pb::PipelineDefinition { description: String::new(), variables, stages }),
    };
    // A default would be stored in the pipeline for every reader.
    let with_default = vec![pb::Variable {
        name: "token".into(),
        secret: true,
        default_value: Some("s3cret".into()),
        ..Default::default()
    }];
    let refused = app.pipelines.clone().create_pipeline(create(with_default, vec![deploy(&q)])).await;
    assert_invalid(refused, "definition.variables[0].default_value");
    // Whether a stage ran would tell something of the secret.
    let skip = skip_when(workflows("build", &q, &["w"]), "db_password == \"x\"");
    let refused = app.pipelines.clone().create_pipeline(create(variables(), vec![skip])).await;
    let status = assert_invalid(refused, "definition.stages[0].skip_condition.expression");
    assert!(status.message().contains("secret"), "{}", status.message());
    // A workflow may list only secret variables.
    let mut stage = workflows("build", &q, &["w"]);
    if let Some(pb::stage::Kind::Workflows(w)) = &mut stage.kind {
        w.workflows[0].secrets = vec!["region".into()];
    }
    let refused = app.pipelines.clone().create_pipeline(create(variables(), vec![stage])).await;
    assert_invalid(refused, "definition.stages[0].workflows.workflows[0].secrets[0]");
}

async fn without_a_secrets_key_a_pipeline_with_secrets_cannot_start(app: TestApp) {
    let app = app.restart_with(Settings { secrets: None, ..test_settings() }).await;
    let q = queue();
    let p = app.create_pipeline_with("secretive", variables(), vec![deploy(&q)]).await;
    let refused = app.executions.clone().start_execution(start_request(&p.id, "s", SECRET)).await;
    let status = assert_code(refused, Code::FailedPrecondition);
    assert!(status.message().contains("--secrets-key-file"), "{}", status.message());
    let metadata = assert_reason(&status, Code::FailedPrecondition, pb::ErrorReason::SecretsKeyMissing);
    assert_eq!(metadata["pipeline_id"], p.id);
    assert_not_stored(&app).await;
    // Pipelines without secrets are not affected.
    let plain = app.create_pipeline("plain", vec![workflows("build", &q, &["w"])]).await;
    app.start(&plain.id).await;
}
