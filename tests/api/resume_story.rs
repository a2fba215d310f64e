//! Resume, completed: history says why each attempt ended and why each
//! resume happened, a run stopped between stages goes on from the next one,
//! the audit trail of a chain is found from any of its executions, a
//! fail-fast stage ends at its first failure, and the smaller rules.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use reprise::proto::{self as pb, access_service_client::AccessServiceClient};

use crate::helpers::*;

crate::on_both_backends!(
    a_chain_of_three_attempts_tells_in_its_history_why_each_ended_and_was_resumed,
    a_run_paused_then_aborted_between_stages_goes_on_from_the_next_stage,
    a_fail_fast_stage_cancels_its_running_sibling_and_its_resume_reruns_both,
    the_smaller_rules_of_resume,
);

fn resume_request(id: &str, stage: &str, reason: &str) -> pb::ResumeRequest {
    pb::ResumeRequest {
        execution_id: id.into(),
        from_stage: Some(pb::resume_request::FromStage::StageName(stage.into())),
        request_id: uuid::Uuid::new_v4().to_string(),
        reason: reason.into(),
        ..Default::default()
    }
}

async fn resume(app: &TestApp, id: &str, stage: &str, reason: &str) -> pb::ResumeResponse {
    app.executions.clone().resume(resume_request(id, stage, reason)).await.expect("resume").into_inner()
}

async fn audit_actions(app: &TestApp, request: pb::ListAuditEventsRequest) -> Vec<(String, String)> {
    let events = AccessServiceClient::new(app.channel.clone())
        .list_audit_events(request)
        .await
        .expect("list audit events")
        .into_inner()
        .events;
    events.into_iter().map(|e| (e.action, e.execution_id)).collect()
}

async fn a_chain_of_three_attempts_tells_in_its_history_why_each_ended_and_was_resumed(app: TestApp) {
    let q = queue();
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let p = app
        .create_pipeline("story", vec![workflows("build", &q, &["w"]), approval("gate", Duration::from_secs(600))])
        .await;
    // 1: rejected at the gate.
    let first = app.start(&p.id).await;
    app.at_gate(&first.id).await;
    let reject = pb::RejectRequest {
        execution_id: first.id.clone(),
        stage_name: "gate".into(),
        comment: "error rate 5%".into(),
    };
    app.executions.clone().reject(reject).await.unwrap();
    // 2: resumed, then aborted at the gate.
    let second = resume(&app, &first.id, "gate", "error rate fixed by config 42").await.execution.unwrap();
    app.at_gate(&second.id).await;
    let abort = pb::AbortRequest { execution_id: second.id.clone(), reason: "freeze window".into() };
    app.executions.clone().abort(abort).await.unwrap();
    // 3: resumed again, approved, succeeds.
    let third = resume(&app, &second.id, "gate", "freeze over").await.execution.unwrap();
    assert_eq!(third.resumed_from.as_ref().unwrap().reason, "freeze over", "GetExecution shows the reason");
    app.at_gate(&third.id).await;
    let approve =
        pb::ApproveRequest { execution_id: third.id.clone(), stage_name: "gate".into(), comment: String::new() };
    app.executions.clone().approve(approve).await.unwrap();
    app.wait_final(&third.id).await;

    // The history alone tells the story.
    let request = pb::ListHistoryRequest { execution_id: third.id.clone(), page_size: 10, page_token: String::new() };
    let mut history = app.executions.clone().list_history(request).await.unwrap().into_inner().entries;
    history.sort_by_key(|h| h.attempt);
    let gate = |h: &pb::HistoryEntry| h.end_stage.as_ref().map(|s| (s.name.clone(), s.index));
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].status, pb::ExecutionStatus::Rejected as i32);
    assert!(history[0].status_message.contains("error rate 5%"), "{}", history[0].status_message);
    assert_eq!(gate(&history[0]), Some(("gate".into(), Some(1))));
    assert_eq!(history[0].resume_reason, "");
    assert_eq!(history[1].status, pb::ExecutionStatus::Aborted as i32);
    assert!(history[1].status_message.contains("freeze window"), "{}", history[1].status_message);
    assert_eq!(gate(&history[1]), Some(("gate".into(), Some(1))));
    assert_eq!(history[1].resume_reason, "error rate fixed by config 42");
    assert_eq!(history[2].status, pb::ExecutionStatus::Succeeded as i32);
    assert_eq!(gate(&history[2]), None);
    assert_eq!(history[2].resume_reason, "freeze over");

    // The chain's audit trail, from the chain and from the first attempt.
    let by_chain = audit_actions(
        &app,
        pb::ListAuditEventsRequest { chain_id: first.chain_id.clone(), page_size: 100, ..Default::default() },
    )
    .await;
    let actions: Vec<&str> = by_chain.iter().map(|(a, _)| a.as_str()).collect();
    for action in ["execution.start", "execution.reject", "execution.resume", "execution.abort", "execution.approve"] {
        assert!(actions.contains(&action), "{action} in the chain's trail: {actions:?}");
    }
    assert_eq!(actions.iter().filter(|a| **a == "execution.resume").count(), 2);
    let of_first = audit_actions(
        &app,
        pb::ListAuditEventsRequest { execution_id: first.id.clone(), page_size: 100, ..Default::default() },
    )
    .await;
    assert!(
        of_first.iter().any(|(a, id)| a == "execution.resume" && id == &second.id),
        "the resume of the first attempt is found from it: {of_first:?}"
    );
}

async fn a_run_paused_then_aborted_between_stages_goes_on_from_the_next_stage(app: TestApp) {
    let q = queue();
    let worker = app.worker(&q, |_| Script::Succeed(Duration::from_millis(400)));
    let p = app.create_pipeline("stop", vec![workflows("s0", &q, &["w"]), workflows("s1", &q, &["w"])]).await;
    let e = app.start(&p.id).await;
    app.wait_until(&e.id, |e| stage_status(e, "s0") == pb::StageStatus::Running).await;
    app.executions.clone().pause(pb::PauseRequest { execution_id: e.id.clone() }).await.unwrap();
    let paused = app
        .wait_until(&e.id, |e| {
            status(e) == pb::ExecutionStatus::Paused && stage_status(e, "s0") == pb::StageStatus::Succeeded
        })
        .await;
    assert_eq!(stage_status(&paused, "s1"), pb::StageStatus::Pending);
    app.executions
        .clone()
        .abort(pb::AbortRequest { execution_id: e.id.clone(), reason: "later".into() })
        .await
        .unwrap();
    let aborted = app.get(&e.id).await;
    assert_eq!(status(&aborted), pb::ExecutionStatus::Aborted);
    let point = |name: &str| aborted.stages.iter().find(|s| s.name == name).unwrap().resume_point.clone().unwrap();
    assert!(point("s0").resumable && point("s1").resumable, "s1 is where the run goes on: {:?}", point("s1"));

    let resumed = resume(&app, &e.id, "s1", "go on").await;
    assert!(resumed.stages_not_rolled_back.is_empty(), "nothing ran when it was aborted");
    let new_id = resumed.execution.unwrap().id;
    let done = app.wait_final(&new_id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{done:#?}");
    assert!(done.stages[0].carried_over, "s0 is carried over, not run again");
    // What the resumed execution handed out (a lease that expired on a
    // loaded machine may hand the first run's s0 out twice; that is not this).
    let ran: Vec<String> = worker
        .seen
        .lock()
        .unwrap()
        .tasks
        .iter()
        .filter(|t| t.execution_id == new_id)
        .map(|t| t.stage_name.clone())
        .collect();
    assert_eq!(ran, ["s1"], "only s1 ran in the resumed execution");
}

fn fail_fast(mut stage: pb::Stage) -> pb::Stage {
    if let Some(pb::stage::Kind::Workflows(w)) = &mut stage.kind {
        w.failure_policy = pb::FailurePolicy::FailFast as i32;
    }
    stage
}

async fn a_fail_fast_stage_cancels_its_running_sibling_and_its_resume_reruns_both(app: TestApp) {
    let q = queue();
    let fixed = Arc::new(AtomicBool::new(false));
    let flag = fixed.clone();
    let worker = app.worker(&q, move |t| match (t.workflow_name.as_str(), flag.load(Ordering::SeqCst)) {
        (_, true) => Script::Succeed(Duration::ZERO),
        ("broken", false) => Script::Fail(Duration::from_millis(200)),
        _ => Script::RunUntilCancelled,
    });
    let p = app.create_pipeline("fast", vec![fail_fast(workflows("deploy", &q, &["broken", "slow"]))]).await;
    let e = app.start(&p.id).await;
    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Failed);
    assert_eq!(workflow_of(&done, "deploy", "broken").status, pb::WorkflowStatus::Failed as i32);
    assert_eq!(workflow_of(&done, "deploy", "slow").status, pb::WorkflowStatus::Cancelled as i32);
    eventually("the running sibling hears the cancel on its heartbeat", || {
        worker.seen.lock().unwrap().cancelled.contains(&"slow".to_string())
    })
    .await;
    // The definition says so, back from the server.
    let got = app
        .pipelines
        .clone()
        .get_pipeline(pb::GetPipelineRequest { pipeline_id: p.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let stage = &got.pipeline.unwrap().definition.unwrap().stages[0];
    let Some(pb::stage::Kind::Workflows(w)) = &stage.kind else { panic!("a workflow stage") };
    assert_eq!(w.failure_policy, pb::FailurePolicy::FailFast as i32);

    fixed.store(true, Ordering::SeqCst);
    let resumed = resume(&app, &e.id, "deploy", "fixed").await.execution.unwrap();
    let done = app.wait_final(&resumed.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
    let mut ran: Vec<String> = worker
        .seen
        .lock()
        .unwrap()
        .tasks
        .iter()
        .filter(|t| t.execution_id == resumed.id)
        .map(|t| t.workflow_name.clone())
        .collect();
    ran.sort();
    ran.dedup();
    assert_eq!(ran, ["broken", "slow"], "both ran again");
}

async fn the_smaller_rules_of_resume(app: TestApp) {
    let q = queue();
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    // An approval waiting when the execution was aborted has nothing to roll back.
    let p = app.create_pipeline("gated", vec![approval("gate", Duration::from_secs(600))]).await;
    let e = app.start(&p.id).await;
    app.at_gate(&e.id).await;
    app.executions.clone().abort(pb::AbortRequest { execution_id: e.id.clone(), reason: String::new() }).await.unwrap();
    let preview = pb::ResumeRequest { validate_only: true, ..resume_request(&e.id, "gate", "") };
    let plan = app.executions.clone().resume(preview).await.unwrap().into_inner();
    assert!(plan.stages_not_rolled_back.is_empty(), "{:?}", plan.stages_not_rolled_back);

    // Naming the pinned version is accepted; another is refused.
    let pinned = pb::ResumeRequest { pipeline_version: e.pipeline_version, ..resume_request(&e.id, "gate", "") };
    let resumed = app.executions.clone().resume(pinned).await.expect("the pinned version is fine").into_inner();
    let resumed = resumed.execution.unwrap();
    // Resumed from stage 0: the index is there, not left out as a default.
    assert_eq!(resumed.resumed_from.as_ref().unwrap().stage_index, Some(0));
    app.executions
        .clone()
        .abort(pb::AbortRequest { execution_id: resumed.id.clone(), reason: String::new() })
        .await
        .unwrap();
    let other =
        pb::ResumeRequest { pipeline_version: e.pipeline_version + 1, ..resume_request(&resumed.id, "gate", "") };
    let refused = app.executions.clone().resume(other).await;
    assert_invalid(refused, "pipeline_version");
    // A reason past its limit is refused, naming the field.
    let long = resume_request(&resumed.id, "gate", &"r".repeat(5000));
    assert_invalid(app.executions.clone().resume(long).await, "reason");
}
