//! Executions survive a server restart: the database is the source of truth,
//! leases held by vanished workers run out, queued work waits for a worker.

use std::time::Duration;

use reprise::proto as pb;

use crate::helpers::*;

crate::on_both_backends!(
    a_restart_in_the_middle_of_a_run_loses_nothing_and_repeats_nothing,
    an_execution_queued_on_a_task_no_worker_polls_survives_a_restart,
);

async fn a_restart_in_the_middle_of_a_run_loses_nothing_and_repeats_nothing(app: TestApp) {
    let q = queue();
    let stages = vec![workflows("one", &q, &["w1"]), workflows("two", &q, &["w2"]), workflows("three", &q, &["w3"])];
    let p = app.create_pipeline("deploy", stages).await;
    // Finishes stage one, then takes stage two's task and dies with it.
    let before = app.worker(&q, |t| match t.stage_name.as_str() {
        "one" => Script::Succeed(Duration::ZERO),
        _ => Script::Vanish,
    });
    let e = app.start(&p.id).await;
    let held = app
        .wait_until(&e.id, |e| {
            e.stages
                .iter()
                .any(|s| s.name == "two" && s.workflows.iter().any(|w| w.status == pb::WorkflowStatus::Running as i32))
        })
        .await;
    assert_eq!(stage_status(&held, "one"), pb::StageStatus::Succeeded);
    assert_eq!(workflow_of(&held, "two", "w2").attempt, 1);
    // The watch can see the lease before the worker has recorded the task.
    let recorded = async {
        while !before.counts().contains_key(&("two".to_owned(), "w2".to_owned())) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), recorded).await.expect("the first worker recorded stage two's task");
    let first_counts = before.counts();
    drop(before);

    let app = app.restart().await;
    let after = app.worker(&q, |_| Script::Succeed(Duration::ZERO));

    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{done:#?}");
    for stage in ["one", "two", "three"] {
        assert_eq!(stage_status(&done, stage), pb::StageStatus::Succeeded, "{stage}: {done:#?}");
    }
    let later_counts = after.counts();
    let handed = |stage: &str, w: &str| {
        let key = (stage.to_owned(), w.to_owned());
        first_counts.get(&key).copied().unwrap_or(0) + later_counts.get(&key).copied().unwrap_or(0)
    };
    assert_eq!(handed("one", "w1"), 1, "stage one's workflow was handed out exactly once overall");
    assert_eq!(workflow_of(&done, "one", "w1").attempt, 1);
    assert_eq!(handed("two", "w2"), 2, "stage two's task: the vanished lease, then the new worker");
    assert_eq!(workflow_of(&done, "two", "w2").attempt, 2, "re-offered after its lease expired");
    let second_try =
        after.seen.lock().unwrap().tasks.iter().find(|t| t.stage_name == "two").cloned().expect("re-offered");
    assert_eq!(second_try.attempt, 2);
    assert_eq!(handed("three", "w3"), 1);
    assert_eq!(workflow_of(&done, "three", "w3").attempt, 1);
}

async fn an_execution_queued_on_a_task_no_worker_polls_survives_a_restart(app: TestApp) {
    let q = queue();
    let p = app
        .create_pipeline("deploy", vec![workflows("build", &q, &["compile"]), workflows("ship", &q, &["push"])])
        .await;
    let e = app.start(&p.id).await;
    let queued = pb::WorkflowStatus::Queued as i32;
    assert_eq!(workflow_of(&e, "build", "compile").status, queued);

    let app = app.restart().await;
    let survived = app.get(&e.id).await;
    assert_eq!(status(&survived), pb::ExecutionStatus::Running, "{survived:#?}");
    assert_eq!(stage_status(&survived, "build"), pb::StageStatus::Running);
    assert_eq!(stage_status(&survived, "ship"), pb::StageStatus::Pending);
    let w = workflow_of(&survived, "build", "compile");
    assert_eq!((w.status, w.attempt), (queued, 0), "still waiting for a worker");

    let worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{done:#?}");
    assert_eq!(workflow_of(&done, "build", "compile").attempt, 1);
    assert_eq!(worker.task_count(), 2);
    assert!(worker.seen.lock().unwrap().tasks.iter().all(|t| t.attempt == 1));
}
