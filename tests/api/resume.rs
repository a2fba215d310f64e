//! Resume and ListHistory through the real server and real test workers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use reprise::proto as pb;
use tonic::Code;

use crate::helpers::*;

crate::on_both_backends!(
    resuming_from_a_failed_parallel_stage_reruns_all_its_workflows_and_nothing_before,
    resume_from_the_first_stage_runs_everything_again,
    resume_refuses_unreached_unknown_and_out_of_range_stages,
    resume_by_status_table,
    a_resume_runs_the_pinned_version_with_the_original_inputs,
    chains_of_resumes_show_in_history_and_only_the_latest_can_be_resumed,
    concurrent_resumes_create_exactly_one_execution_and_retries_are_idempotent,
    history_pages_through_a_long_chain,
    validate_only_returns_the_plan_and_creates_nothing,
    an_aborted_resume_can_be_resumed_again_and_reports_what_was_not_rolled_back,
    get_execution_marks_valid_resume_points,
    resume_refuses_changed_inputs,
    chain_limits_refuse_resumes_past_them,
    a_resume_sees_the_changes_made_since_the_execution_was_last_read,
);

/// A 4-stage pipeline whose stage 3 is four parallel workflows.
async fn four_stage_pipeline(app: &TestApp, q: &str) -> pb::Pipeline {
    app.create_pipeline(
        "deploy",
        vec![
            workflows("build", q, &["compile"]),
            workflows("test", q, &["unit"]),
            workflows("rollout", q, &["eu", "us", "asia", "au"]),
            workflows("verify", q, &["smoke"]),
        ],
    )
    .await
}

async fn resume(app: &TestApp, id: &str, stage: &str) -> Result<pb::ResumeResponse, tonic::Status> {
    app.executions.clone().resume(resume_request(id, stage)).await.map(|r| r.into_inner())
}

/// A worker on which `us` of stage "rollout" fails until `fixed` is set.
fn flaky_worker(app: &TestApp, q: &str) -> (TestWorker, Arc<AtomicBool>) {
    let fixed = Arc::new(AtomicBool::new(false));
    let flag = fixed.clone();
    let worker = app.worker(q, move |t| {
        if t.stage_name == "rollout" && t.workflow_name == "us" && !flag.load(Ordering::SeqCst) {
            Script::Fail(Duration::ZERO)
        } else {
            Script::Succeed(Duration::ZERO)
        }
    });
    (worker, fixed)
}

async fn failed_run(app: &TestApp, q: &str) -> (pb::Execution, TestWorker, Arc<AtomicBool>) {
    let p = four_stage_pipeline(app, q).await;
    let (worker, fixed) = flaky_worker(app, q);
    let e = app.start(&p.id).await;
    let failed = app.wait_final(&e.id).await;
    assert_eq!(status(&failed), pb::ExecutionStatus::Failed, "{failed:#?}");
    (failed, worker, fixed)
}

async fn resuming_from_a_failed_parallel_stage_reruns_all_its_workflows_and_nothing_before(app: TestApp) {
    let q = queue();
    let (failed, worker, fixed) = failed_run(&app, &q).await;
    assert_eq!(worker.task_count(), 2 + 4, "build, test and the four rollouts ran once");
    fixed.store(true, Ordering::SeqCst);

    let resumed = resume(&app, &failed.id, "rollout").await.expect("resume").execution.expect("execution");
    assert_eq!(resumed.attempt, 2);
    assert_eq!(resumed.chain_id, failed.id);
    let done = app.wait_final(&resumed.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{done:#?}");

    let counts = worker.counts();
    for stage_workflow in [("build", "compile"), ("test", "unit")] {
        let key = (stage_workflow.0.to_string(), stage_workflow.1.to_string());
        assert_eq!(counts[&key], 1, "{stage_workflow:?} was not dispatched again");
    }
    for w in ["eu", "us", "asia", "au"] {
        assert_eq!(counts[&("rollout".to_string(), w.to_string())], 2, "{w} re-ran with its whole stage");
    }
    assert_eq!(counts[&("verify".to_string(), "smoke".to_string())], 1);

    for carried in &done.stages[..2] {
        assert!(carried.carried_over, "{} carried over", carried.name);
        assert_eq!(carried.carried_from_execution_id, failed.id);
        assert_eq!(carried.status, pb::StageStatus::Succeeded as i32);
        assert_eq!(carried.workflows.len(), 1, "results carried with the stage");
    }
    assert!(!done.stages[2].carried_over);
    let origin = done.resumed_from.as_ref().expect("origin");
    assert_eq!(
        (origin.execution_id.as_str(), origin.stage_name.as_str(), origin.stage_index),
        (failed.id.as_str(), "rollout", Some(2))
    );

    let original = app.get(&failed.id).await;
    assert_eq!(status(&original), pb::ExecutionStatus::Failed, "the original keeps its status");
    assert_eq!(original.resumed_by_execution_id, resumed.id);
}

async fn resume_from_the_first_stage_runs_everything_again(app: TestApp) {
    let q = queue();
    let (failed, worker, fixed) = failed_run(&app, &q).await;
    fixed.store(true, Ordering::SeqCst);
    let request = pb::ResumeRequest {
        from_stage: Some(pb::resume_request::FromStage::StageIndex(0)),
        ..resume_request(&failed.id, "")
    };
    let resumed =
        app.executions.clone().resume(request).await.expect("resume").into_inner().execution.expect("execution");
    let done = app.wait_final(&resumed.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
    assert!(done.stages.iter().all(|s| !s.carried_over));
    assert_eq!(worker.counts()[&("build".to_string(), "compile".to_string())], 2);
}

async fn resume_refuses_unreached_unknown_and_out_of_range_stages(app: TestApp) {
    let q = queue();
    let (failed, worker, _) = failed_run(&app, &q).await;
    let before = worker.task_count();

    let never = resume(&app, &failed.id, "verify").await.unwrap_err();
    assert_eq!(never.code(), Code::FailedPrecondition, "{never:?}");
    assert!(never.message().contains("\"rollout\""), "names the furthest stage reached: {}", never.message());

    let unknown = resume(&app, &failed.id, "nope").await.unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(
        unknown.message().contains("stage_name") && unknown.message().contains("\"rollout\""),
        "{}",
        unknown.message()
    );

    let request = pb::ResumeRequest {
        from_stage: Some(pb::resume_request::FromStage::StageIndex(9)),
        ..resume_request(&failed.id, "")
    };
    let out_of_range = app.executions.clone().resume(request).await.unwrap_err();
    assert_eq!(out_of_range.code(), Code::InvalidArgument);
    assert!(out_of_range.message().contains("stage_index"), "{}", out_of_range.message());

    let missing = app
        .executions
        .clone()
        .resume(pb::ResumeRequest { from_stage: None, ..resume_request(&failed.id, "") })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);

    let no_such = resume(&app, &uuid::Uuid::now_v7().to_string(), "build").await.unwrap_err();
    assert_eq!(no_such.code(), Code::NotFound);
    let malformed = resume(&app, "no-such-execution", "build").await;
    assert_invalid(malformed, "execution_id");

    assert_eq!(app.get(&failed.id).await.resumed_by_execution_id, "", "refusals changed nothing");
    assert_eq!(worker.task_count(), before);
}

/// Every execution status × Resume, through the server.
async fn resume_by_status_table(app: TestApp) {
    let q = queue();
    let p = app
        .create_pipeline(
            "table",
            vec![
                workflows("work", &q, &["w"]),
                approval("gate", Duration::from_secs(60)),
                workflows("end", &q, &["w"]),
            ],
        )
        .await;
    let _worker = app.worker(&q, |t| match t.workflow_name.as_str() {
        _ if t.stage_name == "end" => Script::RunUntilCancelled,
        _ => Script::Succeed(Duration::ZERO),
    });
    let waiting = |e: &pb::Execution| stage_status(e, "gate") == pb::StageStatus::WaitingApproval;

    // RUNNING (waiting for approval), then PAUSED.
    let running = app.start(&p.id).await;
    app.wait_until(&running.id, waiting).await;
    let r = resume(&app, &running.id, "work").await.unwrap_err();
    assert_eq!(r.code(), Code::FailedPrecondition);
    assert!(r.message().contains("RUNNING") && r.message().contains("Abort"), "{}", r.message());
    app.executions.clone().pause(pb::PauseRequest { execution_id: running.id.clone() }).await.unwrap();
    let r = resume(&app, &running.id, "work").await.unwrap_err();
    assert_eq!(r.code(), Code::FailedPrecondition);
    assert!(r.message().contains("PAUSED") && r.message().contains("Continue"), "{}", r.message());

    // REJECTED is resumable.
    let rejected = app.start(&p.id).await;
    app.wait_until(&rejected.id, waiting).await;
    let reject =
        pb::RejectRequest { execution_id: rejected.id.clone(), stage_name: String::new(), comment: "no".into() };
    app.executions.clone().reject(reject).await.unwrap();
    assert!(resume(&app, &rejected.id, "gate").await.is_ok());

    // ABORTED is resumable.
    let aborted = app.start(&p.id).await;
    app.wait_until(&aborted.id, waiting).await;
    app.executions
        .clone()
        .abort(pb::AbortRequest { execution_id: aborted.id.clone(), reason: "test".into() })
        .await
        .unwrap();
    assert!(resume(&app, &aborted.id, "work").await.is_ok());

    // SUCCEEDED is not.
    let ok_pipeline = app.create_pipeline("ok", vec![workflows("work", &q, &["w"])]).await;
    let succeeded = app.start(&ok_pipeline.id).await;
    app.wait_final(&succeeded.id).await;
    let r = resume(&app, &succeeded.id, "work").await.unwrap_err();
    assert_eq!(r.code(), Code::FailedPrecondition);
    assert!(r.message().contains("SUCCEEDED"), "{}", r.message());

    // EXPIRED (approval timeout) is resumable.
    let short = app.create_pipeline("short", vec![approval("gate", Duration::from_millis(200))]).await;
    let expired = app.start(&short.id).await;
    assert_eq!(status(&app.wait_final(&expired.id).await), pb::ExecutionStatus::Expired);
    assert!(resume(&app, &expired.id, "gate").await.is_ok());
}

async fn a_resume_runs_the_pinned_version_with_the_original_inputs(app: TestApp) {
    let q = queue();
    let region = vec![pb::Variable {
        name: "region".into(),
        default_value: Some("eu".into()),
        description: String::new(),
        ..Default::default()
    }];
    let p = app
        .create_pipeline_with(
            "pinned",
            region.clone(),
            vec![workflows("a", &q, &["one"]), workflows("b", &q, &["two"])],
        )
        .await;
    let fail_b = Arc::new(AtomicBool::new(true));
    let flag = fail_b.clone();
    let worker = app.worker(&q, move |t| {
        if t.stage_name == "b" && flag.load(Ordering::SeqCst) {
            Script::Fail(Duration::ZERO)
        } else {
            Script::Succeed(Duration::ZERO)
        }
    });
    let e = app.start_with(&p.id, &[("region", "us")]).await;
    app.wait_final(&e.id).await;

    let update = pb::UpdatePipelineRequest {
        pipeline_id: p.id.clone(),
        expected_version: 1,
        definition: Some(pb::PipelineDefinition {
            description: "v2".into(),
            variables: region,
            stages: vec![
                workflows("a", &q, &["one"]),
                workflows("b", &q, &["two", "three"]),
                workflows("c", &q, &["four"]),
            ],
        }),
    };
    app.pipelines.clone().update_pipeline(update).await.expect("update");
    fail_b.store(false, Ordering::SeqCst);

    let response = resume(&app, &e.id, "b").await.expect("resume");
    assert_eq!((response.pipeline_version, response.latest_pipeline_version), (1, 2), "says a newer version exists");
    let done = app.wait_final(&response.execution.unwrap().id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
    assert_eq!(done.pipeline_version, 1);
    assert_eq!(done.stages.len(), 2, "the old version's stages");
    assert_eq!(done.variables["region"], "us");
    let b_tasks: Vec<_> = worker.seen.lock().unwrap().tasks.iter().filter(|t| t.stage_name == "b").cloned().collect();
    assert_eq!(b_tasks.len(), 2, "stage b has one workflow in v1: once per attempt");
    assert!(b_tasks.iter().all(|t| t.environment["REPRISE_VAR_REGION"] == "us"));
}

async fn chains_of_resumes_show_in_history_and_only_the_latest_can_be_resumed(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("chain", vec![workflows("a", &q, &["ok"]), workflows("b", &q, &["bad"])]).await;
    let _worker = app.worker(&q, |t| {
        if t.stage_name == "b" { Script::Fail(Duration::ZERO) } else { Script::Succeed(Duration::ZERO) }
    });
    let first = app.start(&p.id).await;
    app.wait_final(&first.id).await;
    let mut ids = vec![first.id.clone()];
    for _ in 0..3 {
        let next = resume(&app, ids.last().unwrap(), "b").await.expect("resume").execution.unwrap();
        assert_eq!(status(&app.wait_final(&next.id).await), pb::ExecutionStatus::Failed);
        ids.push(next.id);
    }

    let stale = resume(&app, &ids[1], "b").await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert!(stale.message().contains(&ids[2]), "names the execution that resumed it: {}", stale.message());

    let history = app
        .executions
        .clone()
        .list_history(pb::ListHistoryRequest { execution_id: ids[1].clone(), ..Default::default() })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(history.chain_id, first.id);
    let attempts: Vec<_> = history.entries.iter().map(|h| (h.execution_id.clone(), h.attempt)).collect();
    let mut want: Vec<_> = ids.iter().cloned().zip(1..).collect();
    want.reverse();
    assert_eq!(attempts, want, "newest first");
    assert!(history.entries[3].resumed_from.is_none());
    let origin = history.entries[0].resumed_from.as_ref().unwrap();
    assert_eq!((origin.execution_id.as_str(), origin.stage_name.as_str()), (ids[2].as_str(), "b"));
    assert!(history.entries.iter().all(|h| h.triggered_by == "anonymous" && h.end_time.is_some()));

    let list = app
        .executions
        .clone()
        .list_executions(pb::ListExecutionsRequest { pipeline_id: p.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.executions.len(), 1, "one row per chain");
    assert_eq!((list.executions[0].id.as_str(), list.executions[0].resume_count), (ids[3].as_str(), 3));
    assert_eq!(app.get(&ids[0]).await.id, ids[0], "older attempts are still readable");
}

async fn concurrent_resumes_create_exactly_one_execution_and_retries_are_idempotent(app: TestApp) {
    let q = queue();
    let (failed, _worker, _) = failed_run(&app, &q).await;
    let calls = (0..20).map(|_| {
        let mut client = app.executions.clone();
        let request = resume_request(&failed.id, "rollout");
        tokio::spawn(async move { client.resume(request).await })
    });
    let mut created = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            Ok(r) => created.push(r.into_inner().execution.unwrap().id),
            Err(s) => assert!(matches!(s.code(), Code::FailedPrecondition | Code::Aborted), "{s:?}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one resume won: {created:?}");
    let history = app
        .executions
        .clone()
        .list_history(pb::ListHistoryRequest { execution_id: failed.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.entries.len(), 2);

    // A retry of the winning request returns the same execution.
    let latest = created[0].clone();
    app.executions.clone().abort(pb::AbortRequest { execution_id: latest.clone(), reason: String::new() }).await.ok();
    app.wait_final(&latest).await;
    let request = resume_request(&latest, "rollout");
    let first = app.executions.clone().resume(request.clone()).await.unwrap().into_inner().execution.unwrap();
    let again = app.executions.clone().resume(request.clone()).await.unwrap().into_inner().execution.unwrap();
    assert_eq!(first.id, again.id);
    let reused =
        pb::ResumeRequest { from_stage: Some(pb::resume_request::FromStage::StageName("build".into())), ..request };
    assert_eq!(app.executions.clone().resume(reused).await.unwrap_err().code(), Code::AlreadyExists);
}

async fn history_pages_through_a_long_chain(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("long", vec![approval("gate", Duration::from_secs(600))]).await;
    let mut id = app.start(&p.id).await.id;
    let mut ids = vec![id.clone()];
    for _ in 0..11 {
        let reject = pb::RejectRequest { execution_id: id.clone(), stage_name: "gate".into(), comment: String::new() };
        app.executions.clone().reject(reject).await.expect("reject");
        id = resume(&app, &id, "gate").await.expect("resume").execution.unwrap().id;
        ids.push(id.clone());
    }
    let _ = q;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .executions
            .clone()
            .list_history(pb::ListHistoryRequest { execution_id: ids[0].clone(), page_size: 5, page_token: token })
            .await
            .expect("page")
            .into_inner();
        assert!(page.entries.len() <= 5);
        seen.extend(page.entries.iter().map(|e| e.attempt));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, (1..=12).rev().collect::<Vec<_>>());
}

async fn validate_only_returns_the_plan_and_creates_nothing(app: TestApp) {
    let q = queue();
    let (failed, worker, _) = failed_run(&app, &q).await;
    let before = worker.task_count();
    let request = pb::ResumeRequest { validate_only: true, ..resume_request(&failed.id, "rollout") };
    let preview = app.executions.clone().resume(request).await.expect("preview").into_inner();
    assert!(preview.execution.is_none());
    let actions: Vec<_> = preview.plan.iter().map(|s| (s.name.as_str(), s.action)).collect();
    use pb::PlannedAction::{CarryOver, Run};
    assert_eq!(
        actions,
        [("build", CarryOver as i32), ("test", CarryOver as i32), ("rollout", Run as i32), ("verify", Run as i32)]
    );
    assert_eq!(preview.plan[0].carried_from_execution_id, failed.id);
    assert_eq!(preview.plan[2].workflows, ["eu", "us", "asia", "au"]);
    assert_eq!(app.get(&failed.id).await.resumed_by_execution_id, "");
    let history = app
        .executions
        .clone()
        .list_history(pb::ListHistoryRequest { execution_id: failed.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.entries.len(), 1);
    assert_eq!(worker.task_count(), before);

    let bad = pb::ResumeRequest { validate_only: true, ..resume_request(&failed.id, "verify") };
    assert_eq!(app.executions.clone().resume(bad).await.unwrap_err().code(), Code::FailedPrecondition);
}

async fn an_aborted_resume_can_be_resumed_again_and_reports_what_was_not_rolled_back(app: TestApp) {
    let q = queue();
    let (failed, _worker, _) = failed_run(&app, &q).await;
    drop(_worker);
    // The resumed run hangs in "rollout" until aborted.
    let hanging = app.worker(&q, |_| Script::RunUntilCancelled);
    let resumed = resume(&app, &failed.id, "rollout").await.unwrap().execution.unwrap();
    app.wait_until(&resumed.id, |e| {
        e.stages[2].workflows.iter().all(|w| w.status == pb::WorkflowStatus::Running as i32)
    })
    .await;
    let aborted = app
        .executions
        .clone()
        .abort(pb::AbortRequest { execution_id: resumed.id.clone(), reason: "bad canary".into() })
        .await;
    assert_eq!(status(&aborted.unwrap().into_inner().execution.unwrap()), pb::ExecutionStatus::Aborted);
    drop(hanging);

    let _ok = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let again = resume(&app, &resumed.id, "rollout").await.expect("resume the aborted resume");
    assert_eq!(again.stages_not_rolled_back, ["rollout"]);
    let done = app.wait_final(&again.execution.unwrap().id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
    assert_eq!(done.attempt, 3);
    assert_eq!(done.stages[0].carried_from_execution_id, failed.id, "carried over from where it really ran");
}

async fn get_execution_marks_valid_resume_points(app: TestApp) {
    let q = queue();
    let (failed, worker, _) = failed_run(&app, &q).await;
    // No worker from here on, so the resumed execution stays RUNNING
    // (otherwise it fails again at once and is itself resumable).
    drop(worker);
    tokio::time::sleep(Duration::from_millis(200)).await; // the server drops the worker's waiting poll
    let points = |e: &pb::Execution| -> Vec<(bool, i32)> {
        e.stages
            .iter()
            .map(|s| s.resume_point.as_ref().map(|p| (p.resumable, p.block)).expect("resume point"))
            .collect()
    };
    use pb::ErrorReason as B;
    let got = app.get(&failed.id).await;
    assert_eq!(points(&got), [(true, 0), (true, 0), (true, 0), (false, B::StageNotReached as i32)]);
    let resumed = resume(&app, &failed.id, "rollout").await.unwrap().execution.unwrap();
    let old = app.get(&failed.id).await;
    assert_eq!(points(&old)[0], (false, B::NotLatestInChain as i32));
    let new = app.get(&resumed.id).await;
    assert_eq!(status(&new), pb::ExecutionStatus::Running);
    // What blocks the whole execution comes first, as in Resume's refusal.
    let not_resumable = (false, B::ExecutionNotResumable as i32);
    assert_eq!(points(&new), [not_resumable; 4]);
}

async fn resume_refuses_changed_inputs(app: TestApp) {
    let q = queue();
    let (failed, _worker, _) = failed_run(&app, &q).await;
    let mut request = resume_request(&failed.id, "rollout");
    request.variables.insert("region".into(), "us".into());
    let err = app.executions.clone().resume(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("variables"), "{}", err.message());
    let mut request = resume_request(&failed.id, "rollout");
    request.pipeline_version = 2;
    assert_eq!(app.executions.clone().resume(request).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(app.get(&failed.id).await.resumed_by_execution_id, "");
}

async fn chain_limits_refuse_resumes_past_them(app: TestApp) {
    let limits = reprise::domain::resume::ChainLimits { max_attempts: Some(2), max_age_ms: None };
    let app = app.restart_with(reprise::engine::Settings { chain_limits: limits, ..test_settings() }).await;
    let p = app.create_pipeline("limited", vec![approval("gate", Duration::from_secs(600))]).await;
    let first = app.start(&p.id).await;
    let reject =
        |id: &str| pb::RejectRequest { execution_id: id.into(), stage_name: String::new(), comment: String::new() };
    app.executions.clone().reject(reject(&first.id)).await.unwrap();
    let second = resume(&app, &first.id, "gate").await.expect("attempt 2 is within the limit").execution.unwrap();
    app.executions.clone().reject(reject(&second.id)).await.unwrap();
    let refused = resume(&app, &second.id, "gate").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("limit of 2 attempts"), "{}", refused.message());
    let point = app.get(&second.id).await.stages[0].resume_point.clone().unwrap();
    assert_eq!((point.resumable, point.block), (false, pb::ErrorReason::ChainLimitReached as i32));

    let aged = reprise::domain::resume::ChainLimits { max_attempts: None, max_age_ms: Some(0) };
    let app = app.restart_with(reprise::engine::Settings { chain_limits: aged, ..test_settings() }).await;
    let refused = resume(&app, &second.id, "gate").await.unwrap_err();
    assert!(refused.message().contains("older than its limit"), "{}", refused.message());
}

/// A resume reuses the stages of a view read earlier only while the
/// execution is unchanged since: read while "test" runs, then left to fail
/// in "rollout" unread, it must be resumable from "rollout", which the view
/// read earlier shows as never reached.
async fn a_resume_sees_the_changes_made_since_the_execution_was_last_read(app: TestApp) {
    let q = queue();
    let p = four_stage_pipeline(&app, &q).await;
    let _worker = app.worker(&q, |t| match t.stage_name.as_str() {
        "test" => Script::Succeed(Duration::from_millis(600)),
        "rollout" if t.workflow_name == "us" => Script::Fail(Duration::ZERO),
        _ => Script::Succeed(Duration::ZERO),
    });
    let e = app.start(&p.id).await;
    let seen = app.wait_until(&e.id, |e| stage_status(e, "test") == pb::StageStatus::Running).await;
    assert_eq!(stage_status(&seen, "rollout"), pb::StageStatus::Pending);
    // Wait for the failure without reading the execution through the API.
    let failed = format!("SELECT count(*) AS n FROM executions WHERE id = '{}' AND status = 'FAILED'", e.id);
    for _ in 0..200 {
        if app.sql_count(&failed).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(app.sql_count(&failed).await, 1, "the execution failed in rollout");

    let answer = resume(&app, &e.id, "rollout").await.expect("rollout was reached before the resume");
    let carried: Vec<_> = answer.plan.iter().map(|s| (s.name.as_str(), s.action, s.carried_status)).collect();
    let (carry, run) = (pb::PlannedAction::CarryOver as i32, pb::PlannedAction::Run as i32);
    let succeeded = pb::StageStatus::Succeeded as i32;
    assert_eq!(
        carried,
        [("build", carry, succeeded), ("test", carry, succeeded), ("rollout", run, 0), ("verify", run, 0)]
    );
    let resumed = answer.execution.expect("execution");
    assert_eq!(stage_status(&resumed, "test"), pb::StageStatus::Succeeded, "the answer shows the stage as it ended");
}
