//! The error model through the real server: every refusal of the resume and
//! control scenarios carries `google.rpc.ErrorInfo` (domain `reprise.v1`, a
//! reason from the proto's `ErrorReason`, the ids it is about), and
//! GetExecution's resume points name the very reason Resume from that stage
//! is refused with, in every state the scenario passes through.
//! (The permission scenarios' reasons are asserted in auth.rs.)

use std::time::Duration;

use reprise::proto as pb;
use tonic::Code;

use crate::helpers::*;

crate::on_both_backends!(
    resume_points_and_resume_refusals_share_one_vocabulary,
    control_refusals_carry_their_reason_and_execution,
    invalid_missing_duplicate_and_stale_requests_carry_their_reason,
);

use pb::ErrorReason as R;

/// For every stage of execution `id`: a Resume preview from it is accepted
/// exactly when GetExecution calls the stage resumable, and otherwise is
/// refused with the reason the resume point names. Returns the points.
async fn points_agree_with_resume(app: &TestApp, id: &str) -> Vec<R> {
    let e = app.get(id).await;
    let mut reasons = Vec::new();
    for stage in &e.stages {
        let point = stage.resume_point.clone().expect("GetExecution sets resume points");
        let preview = pb::ResumeRequest { validate_only: true, ..resume_request(id, &stage.name) };
        match app.executions.clone().resume(preview).await {
            Ok(_) => assert!(point.resumable, "{}: Resume accepts it, the point says {point:?}", stage.name),
            Err(refused) => {
                assert!(!point.resumable, "{}: the point says resumable, Resume says {refused:?}", stage.name);
                let (reason, metadata) = error_info(&refused);
                assert_eq!(reason as i32, point.block, "{}: same state, same reason", stage.name);
                assert_eq!(refused.code(), Code::FailedPrecondition);
                assert_eq!(metadata.get("execution_id").map(String::as_str), Some(id));
                assert_eq!(point.message, refused.message(), "{}: same words too", stage.name);
            }
        }
        reasons.push(R::try_from(point.block).expect("an ErrorReason value"));
    }
    reasons
}

async fn resume_points_and_resume_refusals_share_one_vocabulary(app: TestApp) {
    let q = queue();
    let p = app
        .create_pipeline(
            "vocabulary",
            vec![
                workflows("build", &q, &["compile"]),
                workflows("deploy", &q, &["eu", "us"]),
                workflows("verify", &q, &["smoke"]),
            ],
        )
        .await;
    let worker = app.worker(&q, |t| {
        if t.workflow_name == "us" { Script::Fail(Duration::ZERO) } else { Script::Succeed(Duration::ZERO) }
    });
    let failed = app.start(&p.id).await;
    let failed = app.wait_final(&failed.id).await;
    assert_eq!(status(&failed), pb::ExecutionStatus::Failed);
    // No worker from here on: the resume stays RUNNING.
    drop(worker);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // FAILED: build and deploy are points, verify was never reached.
    assert_eq!(points_agree_with_resume(&app, &failed.id).await, [R::Unspecified, R::Unspecified, R::StageNotReached]);
    let (_, metadata) = assert_refused(
        app.executions.clone().resume(resume_request(&failed.id, "verify")).await,
        Code::FailedPrecondition,
        R::StageNotReached,
    );
    assert_eq!(
        (metadata["stage_name"].as_str(), metadata["stage_index"].as_str(), metadata["attempt"].as_str()),
        ("verify", "2", "1")
    );

    let resumed = app.executions.clone().resume(resume_request(&failed.id, "deploy")).await.unwrap();
    let resumed = resumed.into_inner().execution.unwrap();

    // The original: a later execution of the chain exists.
    assert_eq!(points_agree_with_resume(&app, &failed.id).await, [R::NotLatestInChain; 3]);
    let (_, metadata) = assert_refused(
        app.executions.clone().resume(resume_request(&failed.id, "deploy")).await,
        Code::FailedPrecondition,
        R::NotLatestInChain,
    );
    assert_eq!(metadata["latest_execution_id"], resumed.id);

    // The resume, RUNNING and then PAUSED: not resumable.
    assert_eq!(points_agree_with_resume(&app, &resumed.id).await, [R::ExecutionNotResumable; 3]);
    let (_, metadata) = assert_refused(
        app.executions.clone().resume(resume_request(&resumed.id, "build")).await,
        Code::FailedPrecondition,
        R::ExecutionNotResumable,
    );
    assert_eq!((metadata["status"].as_str(), metadata["attempt"].as_str()), ("RUNNING", "2"));
    app.executions.clone().pause(pb::PauseRequest { execution_id: resumed.id.clone() }).await.unwrap();
    assert_eq!(points_agree_with_resume(&app, &resumed.id).await, [R::ExecutionNotResumable; 3]);
    let refused = app.executions.clone().resume(resume_request(&resumed.id, "build")).await.unwrap_err();
    assert_eq!(error_info(&refused).1["status"], "PAUSED");

    // ABORTED at attempt 2 is resumable, until the chain's limit is 2.
    let abort = pb::AbortRequest { execution_id: resumed.id.clone(), reason: String::new() };
    app.executions.clone().abort(abort).await.unwrap();
    let reasons = points_agree_with_resume(&app, &resumed.id).await;
    assert_eq!(reasons, [R::Unspecified, R::Unspecified, R::StageNotReached]);
    let limits = reprise::domain::resume::ChainLimits { max_attempts: Some(2), max_age_ms: None };
    let app = app.restart_with(reprise::engine::Settings { chain_limits: limits, ..test_settings() }).await;
    assert_eq!(points_agree_with_resume(&app, &resumed.id).await, [R::ChainLimitReached; 3]);
    let (_, metadata) = assert_refused(
        app.executions.clone().resume(resume_request(&resumed.id, "deploy")).await,
        Code::FailedPrecondition,
        R::ChainLimitReached,
    );
    assert_eq!(metadata["max_attempts"], "2");
}

async fn control_refusals_carry_their_reason_and_execution(app: TestApp) {
    let gates = app
        .create_pipeline(
            "gates",
            vec![approval("gate", Duration::from_secs(600)), approval("later", Duration::from_secs(600))],
        )
        .await;
    let e = app.start(&gates.id).await;
    let e = app.wait_until(&e.id, |e| stage_status(e, "gate") == pb::StageStatus::WaitingApproval).await;
    let approve = |stage: &str| pb::ApproveRequest {
        execution_id: e.id.clone(),
        stage_name: stage.into(),
        comment: String::new(),
    };
    let (_, metadata) = assert_refused(
        app.executions.clone().approve(approve("later")).await,
        Code::FailedPrecondition,
        R::StageNotWaiting,
    );
    assert_eq!(
        (metadata["execution_id"].as_str(), metadata["stage_name"].as_str(), metadata["waiting_stage_name"].as_str()),
        (e.id.as_str(), "later", "gate")
    );
    let refused = assert_invalid(app.executions.clone().approve(approve("nope")).await, "stage_name");
    assert_eq!(error_info(&refused).0, R::InvalidArgument);

    let q = queue();
    let _worker = app.worker(&q, |_| Script::RunUntilCancelled);
    let busy = app.create_pipeline("busy", vec![workflows("work", &q, &["w"])]).await;
    let running = app.start(&busy.id).await;
    let running = app.wait_until(&running.id, |e| stage_status(e, "work") == pb::StageStatus::Running).await;
    let approve = pb::ApproveRequest { execution_id: running.id.clone(), ..Default::default() };
    let (_, metadata) =
        assert_refused(app.executions.clone().approve(approve).await, Code::FailedPrecondition, R::NoApprovalWaiting);
    assert_eq!(metadata["execution_id"], running.id);

    let abort = pb::AbortRequest { execution_id: running.id.clone(), reason: String::new() };
    app.executions.clone().abort(abort.clone()).await.unwrap();
    let id = running.id.clone();
    let refusals = [
        app.executions.clone().abort(abort).await.map(drop),
        app.executions.clone().pause(pb::PauseRequest { execution_id: id.clone() }).await.map(drop),
        app.executions.clone().r#continue(pb::ContinueRequest { execution_id: id.clone() }).await.map(drop),
        app.executions
            .clone()
            .approve(pb::ApproveRequest { execution_id: id.clone(), ..Default::default() })
            .await
            .map(drop),
        app.executions
            .clone()
            .reject(pb::RejectRequest { execution_id: id.clone(), ..Default::default() })
            .await
            .map(drop),
    ];
    for refused in refusals {
        let (_, metadata) = assert_refused(refused, Code::FailedPrecondition, R::ExecutionFinished);
        assert_eq!((metadata["execution_id"].as_str(), metadata["status"].as_str()), (id.as_str(), "ABORTED"));
    }
}

async fn invalid_missing_duplicate_and_stale_requests_carry_their_reason(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("errors", vec![workflows("only", &q, &["w"])]).await;
    let nothing = uuid::Uuid::now_v7().to_string();
    let get = pb::GetExecutionRequest { execution_id: nothing.clone(), ..Default::default() };
    assert_refused(app.executions.clone().get_execution(get).await, Code::NotFound, R::NotFound);
    assert_refused(app.executions.clone().resume(resume_request(&nothing, "only")).await, Code::NotFound, R::NotFound);

    // A task handed out, then reported under a lease that is not its own.
    let e = app.start(&p.id).await;
    let task = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(5)).await.expect("a task");
    let other = uuid::Uuid::now_v7().to_string();
    let stale = complete_task(&app.workers, &task.task_id, &other, pb::TaskOutcome::Succeeded, "").await;
    let (_, metadata) = assert_refused(stale, Code::FailedPrecondition, R::LeaseNotHeld);
    assert_eq!(metadata["task_id"], task.task_id);
    complete_task(&app.workers, &task.task_id, &task.lease_token, pb::TaskOutcome::Failed, "boom").await.unwrap();
    let failed = app.wait_final(&e.id).await;
    assert_eq!(status(&failed), pb::ExecutionStatus::Failed);

    // A resume that would change what ran, or names no stage of the pipeline.
    let refused = assert_invalid(app.executions.clone().resume(resume_request(&failed.id, "nope")).await, "stage_name");
    assert_eq!(error_info(&refused).0, R::InvalidArgument);
    let changed = pb::ResumeRequest { pipeline_version: 2, ..resume_request(&failed.id, "only") };
    let refused = assert_invalid(app.executions.clone().resume(changed).await, "pipeline_version");
    assert_eq!(error_info(&refused).0, R::InvalidArgument);

    // A request id that started an execution cannot resume one.
    let start =
        pb::StartExecutionRequest { pipeline_id: p.id.clone(), request_id: "taken".into(), ..Default::default() };
    app.executions.clone().start_execution(start).await.unwrap();
    let reused = pb::ResumeRequest { request_id: "taken".into(), ..resume_request(&failed.id, "only") };
    assert_refused(app.executions.clone().resume(reused).await, Code::AlreadyExists, R::AlreadyExists);
}
