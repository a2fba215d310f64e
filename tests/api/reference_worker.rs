//! The reference worker (`reprise worker`, built into `dev`) against a real
//! server: shell commands with the execution's inputs in their environment,
//! exit codes and output reported, timeouts and cancellations killing the
//! process.

use std::time::Duration;

use reprise::{proto as pb, worker};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

crate::on_both_backends!(
    shell_tasks_see_the_inputs_and_report_exit_code_and_output,
    a_task_past_its_timeout_is_killed_and_the_execution_expires,
    an_abort_kills_the_running_process,
    its_output_can_be_followed_while_the_task_runs,
);

/// Runs the reference worker on `queue` until dropped.
struct ReferenceWorker(CancellationToken);

impl ReferenceWorker {
    fn start(app: &TestApp, queue: &str) -> ReferenceWorker {
        let stop = CancellationToken::new();
        let config = worker::WorkerConfig {
            server: app.address.clone(),
            queue: queue.into(),
            concurrency: 2,
            worker_id: "reference".into(),
            token: None,
            task_env_allow: vec![],
        };
        tokio::spawn(worker::run_with_channel(app.channel.clone(), config, stop.clone()));
        ReferenceWorker(stop)
    }
}

impl Drop for ReferenceWorker {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

fn shell(name: &str, queue: &str, command: &str) -> pb::Stage {
    let mut stage = workflows(name, queue, &[name]);
    if let Some(pb::stage::Kind::Workflows(w)) = &mut stage.kind {
        w.workflows[0].command = command.into();
    }
    stage
}

fn region() -> pb::Variable {
    pb::Variable { name: "region".into(), default_value: None, description: String::new(), ..Default::default() }
}

async fn shell_tasks_see_the_inputs_and_report_exit_code_and_output(app: TestApp) {
    let q = queue();
    let stages = vec![
        shell("inputs", &q, r#"echo "to $REPRISE_VAR_REGION image $REPRISE_ARTIFACT_IMAGE stage $REPRISE_STAGE""#),
        shell("fails", &q, "echo going down >&2; exit 3"),
    ];
    let p = app.create_pipeline_with("shell", vec![region()], stages).await;
    let _worker = ReferenceWorker::start(&app, &q);
    let request = pb::StartExecutionRequest {
        pipeline_id: p.id,
        variables: [("region".to_string(), "eu".to_string())].into(),
        artifacts: [("image".to_string(), "shop:1.2.3".to_string())].into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let e = app.executions.clone().start_execution(request).await.unwrap().into_inner().execution.unwrap();
    let done = app.wait_final(&e.id).await;

    assert_eq!(status(&done), pb::ExecutionStatus::Failed, "{done:#?}");
    let inputs = workflow_of(&done, "inputs", "inputs");
    assert_eq!(inputs.status, pb::WorkflowStatus::Succeeded as i32);
    assert_eq!(inputs.output.trim(), "to eu image shop:1.2.3 stage inputs");
    let fails = workflow_of(&done, "fails", "fails");
    assert_eq!(fails.status, pb::WorkflowStatus::Failed as i32);
    assert_eq!(fails.exit_code, 3);
    assert!(fails.output.contains("going down"), "stderr is in the output: {:?}", fails.output);
}

async fn a_task_past_its_timeout_is_killed_and_the_execution_expires(app: TestApp) {
    let q = queue();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("finished");
    let slow = shell("slow", &q, &format!("sleep 5; touch {}", marker.display()));
    let p = app.create_pipeline("slow", vec![with_limits(slow, Duration::from_secs(1), 1)]).await;
    let _worker = ReferenceWorker::start(&app, &q);
    let done = app.wait_final(&app.start(&p.id).await.id).await;

    assert_eq!(status(&done), pb::ExecutionStatus::Expired, "{done:#?}");
    tokio::time::sleep(Duration::from_secs(5)).await; // past the point where `sleep 5` would have ended
    assert!(!marker.exists(), "the timed-out command was killed before it finished");
}

async fn an_abort_kills_the_running_process(app: TestApp) {
    let q = queue();
    let dir = tempfile::tempdir().unwrap();
    let (started, marker) = (dir.path().join("started"), dir.path().join("finished"));
    let command = format!("touch {}; sleep 5; touch {}", started.display(), marker.display());
    let p = app.create_pipeline("long", vec![shell("long", &q, &command)]).await;
    let _worker = ReferenceWorker::start(&app, &q);
    let e = app.start(&p.id).await;
    eventually("the command starts", || started.exists()).await;

    let request = pb::AbortRequest { execution_id: e.id.clone(), reason: "stop".into() };
    app.executions.clone().abort(request).await.expect("abort");
    tokio::time::sleep(Duration::from_secs(6)).await; // past the point where `sleep 5` would have ended
    assert!(!marker.exists(), "the worker heard of the cancellation on a heartbeat and killed the command");
    let aborted = app.get(&e.id).await;
    assert_eq!(status(&aborted), pb::ExecutionStatus::Aborted);
    assert_eq!(workflow_of(&aborted, "long", "long").status, pb::WorkflowStatus::Cancelled as i32);
}

async fn its_output_can_be_followed_while_the_task_runs(app: TestApp) {
    let q = queue();
    let stages = vec![shell("slow", &q, "echo started; sleep 4; echo finished")];
    let p = app.create_pipeline_with("slow", vec![], stages).await;
    let _worker = ReferenceWorker::start(&app, &q);
    let e = app.start(&p.id).await;
    let running =
        app.wait_until(&e.id, |e| workflow_of(e, "slow", "slow").status == pb::WorkflowStatus::Running as i32).await;
    let task_id = workflow_of(&running, "slow", "slow").task_id.clone();
    // The heartbeats carry what the process printed so far.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let request = pb::GetTaskOutputRequest { task_id: task_id.clone(), offset: 0, max_chars: 0 };
        let page = app.executions.clone().get_task_output(request).await.unwrap().into_inner();
        if page.output.contains("started") {
            assert_eq!(page.status, pb::WorkflowStatus::Running as i32, "seen before the task ended");
            assert!(!page.output.contains("finished") && !page.complete);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the output showed within 10 s: {page:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = app.wait_final(&e.id).await;
    assert_eq!(workflow_of(&done, "slow", "slow").output, "started\nfinished\n", "each line once, in order");
}
