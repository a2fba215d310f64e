//! Executions from start to every final state, through real workers.

use std::time::Duration;

use reprise::proto as pb;

use crate::helpers::*;

crate::on_both_backends!(
    a_pipeline_of_workflow_stages_succeeds,
    a_failing_workflow_fails_the_execution_after_its_siblings_end,
    parallel_workflows_run_at_the_same_time,
);

async fn a_pipeline_of_workflow_stages_succeeds(app: TestApp) {
    let q = queue();
    let p = app
        .create_pipeline("deploy", vec![workflows("build", &q, &["compile"]), workflows("ship", &q, &["a", "b"])])
        .await;
    let worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let e = app.start(&p.id).await;
    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{done:#?}");
    assert_eq!(stage_status(&done, "build"), pb::StageStatus::Succeeded);
    assert_eq!(stage_status(&done, "ship"), pb::StageStatus::Succeeded);
    assert_eq!(worker.task_count(), 3);
    assert!(done.end_time.is_some() && done.start_time.is_some());
}

async fn a_failing_workflow_fails_the_execution_after_its_siblings_end(app: TestApp) {
    let q = queue();
    let p = app
        .create_pipeline("deploy", vec![workflows("ship", &q, &["good", "bad"]), workflows("after", &q, &["x"])])
        .await;
    let _worker = app.worker(&q, |t| match t.workflow_name.as_str() {
        "bad" => Script::Fail(Duration::ZERO),
        _ => Script::Succeed(Duration::from_millis(300)),
    });
    let e = app.start(&p.id).await;
    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Failed);
    assert_eq!(stage_status(&done, "ship"), pb::StageStatus::Failed);
    assert_eq!(stage_status(&done, "after"), pb::StageStatus::NotRun);
    let ship = &done.stages[0];
    let good = ship.workflows.iter().find(|w| w.name == "good").unwrap();
    assert_eq!(good.status, pb::WorkflowStatus::Succeeded as i32, "the sibling ran to its end");
    assert!(done.status_message.contains("bad"), "{}\n{done:#?}", done.status_message);
}

async fn parallel_workflows_run_at_the_same_time(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("deploy", vec![workflows("fanout", &q, &["a", "b", "c", "d"])]).await;
    let worker = app.worker(&q, |_| Script::Succeed(Duration::from_millis(500)));
    let e = app.start(&p.id).await;
    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
    assert_eq!(worker.max_running(), 4, "all four workflows held a lease at once");
}
