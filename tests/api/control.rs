//! Steering executions: the final states other than success and failure
//! (expiry, rejection, abort), approvals, pause and continue, skip
//! conditions, and WatchExecution.

use std::time::Duration;

use reprise::proto as pb;
use tonic::Code;

use crate::helpers::*;

crate::on_both_backends!(
    watchers_of_an_execution_with_variables_are_sent_each_change_once,
    a_workflow_running_past_its_timeout_expires_the_execution_and_its_worker_is_told,
    a_workflow_running_past_its_timeout_cancels_its_siblings_and_expires_the_stage,
    a_rejected_approval_ends_the_execution_and_records_who_decided_and_why,
    an_approval_left_undecided_past_its_timeout_expires_the_execution,
    aborting_a_running_stage_ends_the_execution_at_once_and_rolls_nothing_back,
    an_approved_stage_lets_the_execution_run_to_success,
    approve_refuses_a_stage_name_that_is_not_the_waiting_stage,
    approving_when_no_approval_is_waiting_is_refused,
    a_paused_execution_finishes_its_running_stage_but_starts_no_new_one_until_continued,
    pause_continue_and_abort_of_a_finished_execution_are_refused_naming_its_state,
    skip_conditions_decide_per_execution_which_stages_run,
    a_pipeline_whose_every_stage_is_skipped_succeeds_at_once,
    watch_starts_with_the_current_state_and_ends_after_a_final_state,
    watching_an_unknown_execution_is_not_found,
);

// ---- final states --------------------------------------------------------

async fn a_workflow_running_past_its_timeout_expires_the_execution_and_its_worker_is_told(app: TestApp) {
    let q = queue();
    let deploy = with_limits(workflows("deploy", &q, &["migrate"]), Duration::from_millis(300), 1);
    let p = app.create_pipeline("deploy", vec![deploy, workflows("after", &q, &["x"])]).await;
    let worker = app.worker(&q, |_| Script::RunUntilCancelled);
    let e = app.start(&p.id).await;

    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Expired, "{done:#?}");
    assert_eq!(stage_status(&done, "deploy"), pb::StageStatus::Expired);
    assert_eq!(stage_status(&done, "after"), pb::StageStatus::NotRun);
    let migrate = workflow(&done, "deploy", "migrate");
    assert_eq!(migrate.status, pb::WorkflowStatus::Expired as i32, "{migrate:#?}");
    assert_eq!(migrate.attempt, 1, "an expired workflow is not offered again");
    assert!(migrate.status_message.contains("timeout"), "{}", migrate.status_message);
    assert!(done.status_message.contains("migrate"), "{}", done.status_message);
    assert!(done.end_time.is_some());

    eventually("the worker learns of the expiry through its heartbeat", || {
        worker.seen.lock().unwrap().cancelled == ["migrate"]
    })
    .await;
    assert_eq!(stages_given(&worker, &e.id), ["deploy"], "no task of a later stage");
}

/// A timeout ends its stage at once: the other workflows are cancelled and
/// their workers hear it on the next heartbeat.
async fn a_workflow_running_past_its_timeout_cancels_its_siblings_and_expires_the_stage(app: TestApp) {
    let q = queue();
    let deploy = with_limits(workflows("deploy", &q, &["migrate", "warm_cache"]), Duration::from_secs(60), 1);
    let deploy = with_workflow_timeout(deploy, "migrate", Duration::from_millis(300));
    let p = app.create_pipeline("deploy", vec![deploy, workflows("after", &q, &["x"])]).await;
    let worker = app.worker(&q, |_| Script::RunUntilCancelled);
    let e = app.start(&p.id).await;

    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Expired, "{done:#?}");
    assert_eq!(stage_status(&done, "deploy"), pb::StageStatus::Expired);
    assert_eq!(stage_status(&done, "after"), pb::StageStatus::NotRun);
    assert_eq!(workflow(&done, "deploy", "migrate").status, pb::WorkflowStatus::Expired as i32);
    assert_eq!(workflow(&done, "deploy", "warm_cache").status, pb::WorkflowStatus::Cancelled as i32);
    eventually("both workers learn of it through their heartbeats", || {
        let mut cancelled = worker.seen.lock().unwrap().cancelled.clone();
        cancelled.sort();
        cancelled == ["migrate", "warm_cache"]
    })
    .await;
}

async fn a_rejected_approval_ends_the_execution_and_records_who_decided_and_why(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("deploy", three_stages_with_a_gate(&q, Duration::from_secs(60))).await;
    let worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let e = app.start(&p.id).await;
    app.wait_until(&e.id, |e| stage_status(e, "gate") == pb::StageStatus::WaitingApproval).await;

    let rejected = reject(&app, &e.id, "gate", "error rate too high").await.expect("reject");
    assert_eq!(status(&rejected), pb::ExecutionStatus::Rejected, "{rejected:#?}");
    let gate = stage(&rejected, "gate");
    assert_eq!(gate.status, pb::StageStatus::Rejected as i32);
    assert!(!gate.decided_by.is_empty(), "who decided is recorded");
    assert_eq!(gate.decided_by, e.triggered_by, "the caller who decided (the same client started it)");
    assert_eq!(gate.decision_comment, "error rate too high");
    assert!(gate.end_time.is_some());
    assert_eq!(stage_status(&rejected, "ship"), pb::StageStatus::NotRun);
    assert!(rejected.status_message.contains("error rate too high"), "{}", rejected.status_message);

    let done = app.wait_until(&e.id, |e| is_final(e.status)).await;
    assert_eq!(done, get_as_watched(&app, &e.id).await, "the watch ends on the stored final state");
    assert_eq!(status(&done), pb::ExecutionStatus::Rejected);
    assert_eq!(stage(&done, "gate").decision_comment, "error rate too high");
    assert_eq!(stages_given(&worker, &e.id), ["build"]);
}

async fn an_approval_left_undecided_past_its_timeout_expires_the_execution(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("deploy", three_stages_with_a_gate(&q, Duration::from_millis(300))).await;
    let worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let e = app.start(&p.id).await;

    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Expired, "{done:#?}");
    assert_eq!(stage_status(&done, "build"), pb::StageStatus::Succeeded);
    assert_eq!(stage_status(&done, "gate"), pb::StageStatus::Expired);
    assert_eq!(stage_status(&done, "ship"), pb::StageStatus::NotRun);
    assert_eq!(stage(&done, "gate").decided_by, "", "nobody decided");
    assert!(done.status_message.contains("gate"), "{}", done.status_message);
    assert_eq!(stages_given(&worker, &e.id), ["build"]);
}

async fn aborting_a_running_stage_ends_the_execution_at_once_and_rolls_nothing_back(app: TestApp) {
    let q = queue();
    let p = app
        .create_pipeline("deploy", vec![workflows("deploy", &q, &["rollout"]), workflows("after", &q, &["x"])])
        .await;
    let worker = app.worker(&q, |_| Script::RunUntilCancelled);
    let e = app.start(&p.id).await;
    app.wait_until(&e.id, |e| workflow_running(e, "deploy", "rollout")).await;

    let request = pb::AbortRequest { execution_id: e.id.clone(), reason: "bad canary".into() };
    let aborted =
        app.executions.clone().abort(request).await.expect("abort").into_inner().execution.expect("execution");
    assert_eq!(status(&aborted), pb::ExecutionStatus::Aborted, "ABORTED at once: {aborted:#?}");
    assert!(aborted.status_message.contains("bad canary"), "{}", aborted.status_message);
    assert!(aborted.end_time.is_some());
    let deploy = stage(&aborted, "deploy");
    assert_eq!(deploy.status, pb::StageStatus::Aborted as i32);
    assert!(deploy.status_message.contains("nothing was rolled back"), "{}", deploy.status_message);
    assert_eq!(workflow(&aborted, "deploy", "rollout").status, pb::WorkflowStatus::Cancelled as i32);
    assert_eq!(stage_status(&aborted, "after"), pb::StageStatus::NotRun);

    eventually("the worker's next heartbeat says cancelled", || worker.seen.lock().unwrap().cancelled == ["rollout"])
        .await;
    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Aborted);
    assert_eq!(stages_given(&worker, &e.id), ["deploy"]);
    assert!(worker.seen.lock().unwrap().refused.is_empty(), "the worker never reported");
}

// ---- approvals -------------------------------------------------------------

async fn an_approved_stage_lets_the_execution_run_to_success(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("deploy", three_stages_with_a_gate(&q, Duration::from_secs(60))).await;
    let worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let e = app.start(&p.id).await;
    let waiting = app.wait_until(&e.id, |e| stage_status(e, "gate") == pb::StageStatus::WaitingApproval).await;
    assert_eq!(status(&waiting), pb::ExecutionStatus::Running, "waiting for approval counts as running");
    assert_eq!(stage_status(&waiting, "ship"), pb::StageStatus::Pending);

    let approved = approve(&app, &e.id, "gate", "canary looks fine").await.expect("approve");
    let gate = stage(&approved, "gate");
    assert_eq!(gate.status, pb::StageStatus::Succeeded as i32, "{approved:#?}");
    assert!(!gate.decided_by.is_empty(), "who decided is recorded");
    assert_eq!(gate.decided_by, e.triggered_by, "the caller who decided (the same client started it)");
    assert_eq!(gate.decision_comment, "canary looks fine");

    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{done:#?}");
    assert_eq!(stage_status(&done, "ship"), pb::StageStatus::Succeeded);
    assert_eq!(stage(&done, "gate").decision_comment, "canary looks fine");
    assert_eq!(stages_given(&worker, &e.id), ["build", "ship"]);
}

async fn approve_refuses_a_stage_name_that_is_not_the_waiting_stage(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("deploy", three_stages_with_a_gate(&q, Duration::from_secs(60))).await;
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let e = app.start(&p.id).await;
    app.wait_until(&e.id, |e| stage_status(e, "gate") == pb::StageStatus::WaitingApproval).await;

    let other = approve(&app, &e.id, "ship", "").await.expect_err("a stage that is not waiting");
    assert_eq!(other.code(), Code::FailedPrecondition, "{other:?}");
    assert!(other.message().contains("ship") && other.message().contains("gate"), "{}", other.message());

    let unknown = approve(&app, &e.id, "nope", "").await.expect_err("a stage the pipeline lacks");
    assert_eq!(unknown.code(), Code::InvalidArgument, "{unknown:?}");
    assert!(unknown.message().contains("nope"), "{}", unknown.message());

    let still = app.get(&e.id).await;
    assert_eq!(stage_status(&still, "gate"), pb::StageStatus::WaitingApproval, "refusals decided nothing");
    assert_eq!(stage(&still, "gate").decided_by, "");
}

async fn approving_when_no_approval_is_waiting_is_refused(app: TestApp) {
    let q = queue();
    // No worker: the first stage stays running and the gate is never reached.
    let p = app.create_pipeline("deploy", three_stages_with_a_gate(&q, Duration::from_secs(60))).await;
    let e = app.start(&p.id).await;
    assert_eq!(stage_status(&e, "build"), pb::StageStatus::Running);

    let refused = approve(&app, &e.id, "", "").await.expect_err("nothing is waiting");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("no approval is waiting"), "{}", refused.message());
    assert!(refused.message().contains("build"), "names the running stage: {}", refused.message());

    let named = approve(&app, &e.id, "gate", "").await.expect_err("the gate is not waiting yet");
    assert_eq!(named.code(), Code::FailedPrecondition, "{named:?}");

    let still = app.get(&e.id).await;
    assert_eq!(stage_status(&still, "gate"), pb::StageStatus::Pending);
    assert_eq!(status(&still), pb::ExecutionStatus::Running);
}

// ---- pause and continue ----------------------------------------------------

async fn a_paused_execution_finishes_its_running_stage_but_starts_no_new_one_until_continued(app: TestApp) {
    let (q1, q2) = (queue(), queue());
    let p = app.create_pipeline("deploy", vec![workflows("one", &q1, &["a"]), workflows("two", &q2, &["b"])]).await;
    let first = app.worker(&q1, |_| Script::Succeed(Duration::from_millis(600)));
    let e = app.start(&p.id).await;
    app.wait_until(&e.id, |e| workflow_running(e, "one", "a")).await;

    let paused = pause(&app, &e.id).await.expect("pause");
    assert_eq!(status(&paused), pb::ExecutionStatus::Paused, "{paused:#?}");
    assert_eq!(stage_status(&paused, "one"), pb::StageStatus::Running, "the running stage goes on");
    let again = pause(&app, &e.id).await.expect("pausing twice is fine");
    assert_eq!(status(&again), pb::ExecutionStatus::Paused);

    let one_done = app.wait_until(&e.id, |e| stage_status(e, "one") == pb::StageStatus::Succeeded).await;
    assert_eq!(status(&one_done), pb::ExecutionStatus::Paused, "{one_done:#?}");
    assert_eq!(stage_status(&one_done, "two"), pb::StageStatus::Pending);
    // Long-poll stage two's queue for a while: no task may be offered.
    let poll = pb::PollTaskRequest {
        task_queue: q2.clone(),
        worker_id: "probe".into(),
        wait: Some(prost_types::Duration { seconds: 0, nanos: 500_000_000 }),
    };
    let offered = app.workers.clone().poll_task(poll).await.expect("poll").into_inner().task;
    assert!(offered.is_none(), "a paused execution started stage two: {offered:#?}");
    let still = app.get(&e.id).await;
    assert_eq!(status(&still), pb::ExecutionStatus::Paused);
    assert_eq!(stage_status(&still, "two"), pb::StageStatus::Pending);
    assert!(stage(&still, "two").workflows.is_empty());

    let continued = resume_paused(&app, &e.id).await.expect("continue");
    assert_eq!(status(&continued), pb::ExecutionStatus::Running, "{continued:#?}");
    assert_eq!(stage_status(&continued, "two"), pb::StageStatus::Running);
    let second = app.worker(&q2, |_| Script::Succeed(Duration::ZERO));
    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{done:#?}");
    assert_eq!(stages_given(&first, &e.id), ["one"]);
    assert_eq!(stages_given(&second, &e.id), ["two"]);
}

async fn pause_continue_and_abort_of_a_finished_execution_are_refused_naming_its_state(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("deploy", vec![workflows("ship", &q, &["a"])]).await;
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let e = app.start(&p.id).await;
    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);

    let refusals = [
        ("Pause", pause(&app, &e.id).await.map(|_| ())),
        ("Continue", resume_paused(&app, &e.id).await.map(|_| ())),
        ("Abort", abort(&app, &e.id).await.map(|_| ())),
    ];
    for (command, result) in refusals {
        let refused = result.expect_err(command);
        assert_eq!(refused.code(), Code::FailedPrecondition, "{command}: {refused:?}");
        assert!(refused.message().contains("SUCCEEDED"), "{command}: {}", refused.message());
    }
    assert_eq!(app.get_full(&e.id).await, done, "nothing changed");
}

// ---- skip conditions -------------------------------------------------------

async fn skip_conditions_decide_per_execution_which_stages_run(app: TestApp) {
    let q = queue();
    let stages = vec![
        workflows("build", &q, &["compile"]),
        skip_when(workflows("canary", &q, &["probe"]), r#"region == "eu""#),
        always_skipped(workflows("legacy", &q, &["old"])),
        workflows("ship", &q, &["deploy"]),
    ];
    let p = app.create_pipeline_with("deploy", vec![region_defaulting_to_eu()], stages).await;
    let worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let eu = app.start(&p.id).await;
    let us = app.start_with(&p.id, &[("region", "us")]).await;

    let eu = app.wait_final(&eu.id).await;
    assert_eq!(status(&eu), pb::ExecutionStatus::Succeeded, "{eu:#?}");
    assert_eq!(eu.variables["region"], "eu", "the default is bound");
    assert_eq!(stage_status(&eu, "build"), pb::StageStatus::Succeeded);
    let canary = stage(&eu, "canary");
    assert_eq!(canary.status, pb::StageStatus::Skipped as i32);
    assert!(canary.status_message.contains(r#"region == "eu""#), "{}", canary.status_message);
    assert!(canary.workflows.is_empty(), "a skipped stage never dispatched anything");
    assert_eq!(stage_status(&eu, "legacy"), pb::StageStatus::Skipped);
    assert_eq!(stage_status(&eu, "ship"), pb::StageStatus::Succeeded);
    assert_eq!(stages_given(&worker, &eu.id), ["build", "ship"]);

    let us = app.wait_final(&us.id).await;
    assert_eq!(status(&us), pb::ExecutionStatus::Succeeded, "{us:#?}");
    assert_eq!(stage_status(&us, "canary"), pb::StageStatus::Succeeded);
    assert_eq!(stage_status(&us, "legacy"), pb::StageStatus::Skipped);
    assert_eq!(stages_given(&worker, &us.id), ["build", "canary", "ship"]);
}

async fn a_pipeline_whose_every_stage_is_skipped_succeeds_at_once(app: TestApp) {
    let q = queue();
    let stages = vec![
        skip_when(workflows("canary", &q, &["probe"]), r#"region == "eu""#),
        always_skipped(workflows("legacy", &q, &["old"])),
        skip_when(approval("gate", Duration::from_secs(60)), r#"region != "us""#),
    ];
    let p = app.create_pipeline_with("deploy", vec![region_defaulting_to_eu()], stages).await;
    let e = app.start(&p.id).await;
    assert_eq!(status(&e), pb::ExecutionStatus::Succeeded, "the start itself finishes it: {e:#?}");
    assert!(e.start_time.is_some() && e.end_time.is_some());
    for s in &e.stages {
        assert_eq!(s.status, pb::StageStatus::Skipped as i32, "{s:#?}");
        assert!(s.workflows.is_empty(), "{s:#?}");
    }
    assert_eq!(app.wait_until(&e.id, |e| is_final(e.status)).await, e);
}

// ---- WatchExecution --------------------------------------------------------

async fn watch_starts_with_the_current_state_and_ends_after_a_final_state(app: TestApp) {
    let q = queue();
    let p = app
        .create_pipeline("deploy", vec![workflows("build", &q, &["compile"]), workflows("ship", &q, &["deploy"])])
        .await;
    // No worker yet: the execution waits with its first task queued.
    let e = app.start(&p.id).await;
    let current = get_as_watched(&app, &e.id).await;
    assert_eq!(status(&current), pb::ExecutionStatus::Running);

    let mut stream = watch(&app, &e.id).await.expect("watch");
    let first = next_message(&mut stream).await.expect("a first message");
    assert_eq!(first, current, "the first message is the current state");

    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let mut seen = vec![first];
    while let Some(next) = next_message(&mut stream).await {
        assert!(!is_final(seen.last().unwrap().status), "a message after the final one: {next:#?}");
        assert_ne!(&next, seen.last().unwrap(), "each message is a change");
        seen.push(next);
    }
    let last = seen.last().unwrap();
    assert_eq!(status(last), pb::ExecutionStatus::Succeeded, "the stream ended on the final state: {last:#?}");
    assert_eq!(last, &get_as_watched(&app, &e.id).await);

    // Watching a finished execution gives its state once, then ends.
    let mut stream = watch(&app, &e.id).await.expect("watch");
    assert_eq!(next_message(&mut stream).await.as_ref(), Some(last));
    assert_eq!(next_message(&mut stream).await, None);
}

/// Two watchers of an execution with variables: a change is encoded once
/// for both (the variables in key order, so an unchanged state encodes to
/// the same bytes), each message is a change, and both end on the final state.
async fn watchers_of_an_execution_with_variables_are_sent_each_change_once(app: TestApp) {
    let q = queue();
    let variables: Vec<pb::Variable> = (0..12)
        .map(|i| pb::Variable {
            name: format!("v{i:02}"),
            default_value: Some(format!("value {i}")),
            ..Default::default()
        })
        .collect();
    let stages = vec![workflows("build", &q, &["a", "b"]), workflows("ship", &q, &["c"])];
    let p = app.create_pipeline_with("watched", variables, stages).await;
    let e = app.start(&p.id).await;
    let (one, two) = (watch(&app, &e.id).await.expect("watch"), watch(&app, &e.id).await.expect("watch"));
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let read = |mut stream: tonic::Streaming<pb::WatchExecutionResponse>| async move {
        let mut seen: Vec<pb::Execution> = Vec::new();
        while let Some(next) = next_message(&mut stream).await {
            assert_eq!(next.variables.len(), 12, "every message carries the variables");
            if let Some(last) = seen.last() {
                assert_ne!(&next, last, "each message is a change");
            }
            seen.push(next);
        }
        seen
    };
    let (one, two) = tokio::join!(read(one), read(two));
    let last = get_as_watched(&app, &e.id).await;
    assert_eq!(status(&last), pb::ExecutionStatus::Succeeded);
    assert_eq!(one.last(), Some(&last));
    assert_eq!(two.last(), Some(&last));
}

async fn watching_an_unknown_execution_is_not_found(app: TestApp) {
    let unknown = uuid::Uuid::now_v7().to_string();
    let status = watch(&app, &unknown).await.map(|_| ()).expect_err("unknown execution");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let empty = watch(&app, "").await.map(|_| ()).expect_err("no id");
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
}

// ---- local helpers ---------------------------------------------------------

/// build (workflows) → gate (approval with `timeout`) → ship (workflows).
fn three_stages_with_a_gate(q: &str, timeout: Duration) -> Vec<pb::Stage> {
    vec![workflows("build", q, &["compile"]), approval("gate", timeout), workflows("ship", q, &["deploy"])]
}

/// Sets the timeout of one workflow of a stage.
fn with_workflow_timeout(mut stage: pb::Stage, workflow: &str, timeout: Duration) -> pb::Stage {
    if let Some(pb::stage::Kind::Workflows(w)) = &mut stage.kind {
        let w = w.workflows.iter_mut().find(|w| w.name == workflow).expect("workflow in stage");
        w.timeout = prost_types::Duration::try_from(timeout).ok();
    }
    stage
}

fn region_defaulting_to_eu() -> pb::Variable {
    pb::Variable {
        name: "region".into(),
        default_value: Some("eu".into()),
        description: String::new(),
        ..Default::default()
    }
}

fn always_skipped(mut stage: pb::Stage) -> pb::Stage {
    stage.skip_condition = Some(pb::SkipCondition { condition: Some(pb::skip_condition::Condition::Always(true)) });
    stage
}

fn stage<'a>(e: &'a pb::Execution, name: &str) -> &'a pb::StageExecution {
    e.stages.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no stage {name}"))
}

/// A workflow of a stage; a stage not started yet has none, which fails loudly.
fn workflow<'a>(e: &'a pb::Execution, stage_name: &str, name: &str) -> &'a pb::WorkflowExecution {
    let s = stage(e, stage_name);
    s.workflows.iter().find(|w| w.name == name).unwrap_or_else(|| panic!("no workflow {name} in {s:#?}"))
}

/// Whether a worker holds the workflow's task (false while its stage has not started).
fn workflow_running(e: &pb::Execution, stage_name: &str, name: &str) -> bool {
    stage(e, stage_name).workflows.iter().any(|w| w.name == name && w.status == pb::WorkflowStatus::Running as i32)
}

/// The stages whose tasks `worker` was handed for one execution, in order, without repeats.
fn stages_given(worker: &TestWorker, execution_id: &str) -> Vec<String> {
    let mut stages: Vec<String> = Vec::new();
    for t in worker.seen.lock().unwrap().tasks.iter().filter(|t| t.execution_id == execution_id) {
        if !stages.contains(&t.stage_name) {
            stages.push(t.stage_name.clone());
        }
    }
    stages
}

/// GetExecution without the per-stage resume points, which only GetExecution
/// fills in: comparable with what WatchExecution and the commands return.
/// GetExecution as WatchExecution sends it: without resume points, and
/// without outputs (marked cut where there was some).
async fn get_as_watched(app: &TestApp, id: &str) -> pb::Execution {
    let mut e = app.get(id).await;
    for stage in &mut e.stages {
        stage.resume_point = None;
        for w in &mut stage.workflows {
            w.output_cut = w.output_cut || !w.output.is_empty();
            w.output.clear();
        }
    }
    e
}

async fn approve(app: &TestApp, id: &str, stage_name: &str, comment: &str) -> Result<pb::Execution, tonic::Status> {
    let request =
        pb::ApproveRequest { execution_id: id.into(), stage_name: stage_name.into(), comment: comment.into() };
    Ok(app.executions.clone().approve(request).await?.into_inner().execution.expect("execution"))
}

async fn reject(app: &TestApp, id: &str, stage_name: &str, comment: &str) -> Result<pb::Execution, tonic::Status> {
    let request = pb::RejectRequest { execution_id: id.into(), stage_name: stage_name.into(), comment: comment.into() };
    Ok(app.executions.clone().reject(request).await?.into_inner().execution.expect("execution"))
}

async fn pause(app: &TestApp, id: &str) -> Result<pb::Execution, tonic::Status> {
    let request = pb::PauseRequest { execution_id: id.into() };
    Ok(app.executions.clone().pause(request).await?.into_inner().execution.expect("execution"))
}

/// Calls Continue (`continue` is a keyword).
async fn resume_paused(app: &TestApp, id: &str) -> Result<pb::Execution, tonic::Status> {
    let request = pb::ContinueRequest { execution_id: id.into() };
    Ok(app.executions.clone().r#continue(request).await?.into_inner().execution.expect("execution"))
}

async fn abort(app: &TestApp, id: &str) -> Result<pb::Execution, tonic::Status> {
    let request = pb::AbortRequest { execution_id: id.into(), reason: String::new() };
    Ok(app.executions.clone().abort(request).await?.into_inner().execution.expect("execution"))
}

async fn watch(app: &TestApp, id: &str) -> Result<tonic::Streaming<pb::WatchExecutionResponse>, tonic::Status> {
    let request = pb::WatchExecutionRequest { execution_id: id.into() };
    Ok(app.executions.clone().watch_execution(request).await?.into_inner())
}

/// The next execution on a watch stream, None when the stream ended; fails after 30 s.
async fn next_message(stream: &mut tonic::Streaming<pb::WatchExecutionResponse>) -> Option<pb::Execution> {
    let item =
        tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("a watch message within 30 s");
    item.expect("watch item").map(|m| m.execution.expect("execution"))
}
