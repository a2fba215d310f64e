//! The largest pipeline the default limits accept can be resumed from its
//! last stage on both databases: the carried-over stages are referenced, not
//! copied row by row into one oversized statement.

use std::time::{Duration, Instant};

use prost::Message;
use reprise::{
    domain::{
        execution::{FailureNote, StageMark, WorkflowCounts, WorkflowRun},
        limits::Limits,
        status::{ExecutionStatus, StageStatus, WorkflowStatus},
    },
    proto as pb,
    store::{
        Batch, Part,
        executions::{self, Key},
        stages, tasks,
    },
};

use crate::helpers::*;

crate::on_both_backends!(the_largest_allowed_pipeline_resumes_from_its_last_stage);

async fn the_largest_allowed_pipeline_resumes_from_its_last_stage(app: TestApp) {
    let limits = Limits::default();
    let (stage_count, width) = (limits.max_stages, limits.max_workflows / limits.max_stages);
    let q = queue();
    let names: Vec<String> = (0..width).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let stages: Vec<pb::Stage> = (0..stage_count).map(|i| workflows(&format!("s{i}"), &q, &refs)).collect();
    let p = app.create_pipeline("largest", stages).await;
    let e = app.start(&p.id).await;
    let abort = pb::AbortRequest { execution_id: e.id.clone(), reason: "seeded below".into() };
    app.executions.clone().abort(abort).await.expect("abort");

    // Fast path: write the run as if every stage had run and the last one
    // failed (20,000 tasks through the API would take minutes).
    seed_failed_run(&app, &e.id, stage_count, &names).await;
    let failed = app.get(&e.id).await;
    assert_eq!(status(&failed), pb::ExecutionStatus::Failed);
    let last = failed.stages.last().unwrap();
    assert!(last.resume_point.as_ref().is_some_and(|p| p.resumable), "{:?}", last.resume_point);

    let asked = Instant::now();
    let request = pb::ResumeRequest {
        execution_id: e.id.clone(),
        from_stage: Some(pb::resume_request::FromStage::StageIndex((stage_count - 1) as i32)),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let resumed = app.executions.clone().resume(request).await.expect("the largest pipeline resumes").into_inner();
    eprintln!("resume of {stage_count}×{width} from its last stage: {:?}", asked.elapsed());
    let resumed = resumed.execution.unwrap();
    assert_eq!(resumed.stages.iter().filter(|s| s.carried_over).count(), stage_count - 1);

    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    app.wait_until(&resumed.id, |e| is_final(e.status)).await;
    let done = app.get(&resumed.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{:?}", done.status_message);
    assert!(done.encoded_len() < 4 * 1024 * 1024, "a default client reads it: {} bytes", done.encoded_len());
    let counts = done.stages.last().unwrap().workflow_counts.unwrap();
    assert_eq!((counts.total, counts.succeeded), (width as i32, width as i32));
    let carried = done.stages[0].workflow_counts.unwrap();
    assert_eq!(carried.succeeded, width as i32, "carried stages show the workflows of the run they come from");
}

/// Rewrites execution `id` (aborted in its first stage) as a run whose
/// every stage ran its workflows, all succeeding but the last stage's.
async fn seed_failed_run(app: &TestApp, id: &str, stage_count: usize, names: &[String]) {
    let store = app.engine.store();
    let tx = store.write().await.expect("a write transaction");
    let mut execution = executions::lock(&tx, Key::Id(id)).await.unwrap().expect("the execution");
    let before = stages::of_execution(&tx, id).await.unwrap();
    let start = execution.created_at;
    let width = names.len() as u32;
    let last = stage_count - 1;
    let after: Vec<_> = before
        .iter()
        .map(|s| {
            let failing = s.index == last;
            let mut s = s.clone();
            s.status = if failing { StageStatus::Failed } else { StageStatus::Succeeded };
            s.status_message = if failing { format!("0 of {width} workflows succeeded") } else { String::new() };
            s.started_at = Some(start + s.index as i64);
            s.ended_at = Some(start + s.index as i64 + 1);
            s.counts = WorkflowCounts { total: width, failed: if failing { width } else { 0 }, ..Default::default() };
            s.first_failure =
                failing.then(|| FailureNote { workflow: names[0].clone(), message: "exit status 1".into() });
            s
        })
        .collect();
    let definition = app.engine.definitions().pinned_by(&tx, &execution).await.unwrap();
    let mut runs = Vec::with_capacity(stage_count * names.len());
    for (index, stage) in definition.stages.iter().enumerate() {
        for (w, workflow) in stage.workflows().iter().enumerate() {
            let failing = index == last;
            runs.push(WorkflowRun {
                task_id: uuid::Uuid::now_v7().to_string(),
                execution_id: id.into(),
                stage_index: index,
                workflow_index: w,
                name: workflow.name.clone(),
                task_queue: workflow.task_queue.clone(),
                command: workflow.command.clone(),
                timeout_ms: workflow.timeout_ms as i64,
                status: if failing { WorkflowStatus::Failed } else { WorkflowStatus::Succeeded },
                attempt: 1,
                max_attempts: workflow.max_attempts as i32,
                exit_code: Some(if failing { 1 } else { 0 }),
                output: String::new(),
                status_message: if failing { "exit status 1".into() } else { String::new() },
                created_at: start,
                started_at: Some(start + index as i64),
                ended_at: Some(start + index as i64 + 1),
                lease_token: None,
                lease_owner: None,
                lease_expires_at: None,
                deadline_at: None,
                output_chars: 0,
            });
        }
    }
    execution.status = ExecutionStatus::Failed;
    execution.status_message = format!("stage s{last} failed");
    execution.end_stage = Some(StageMark { index: last, name: format!("s{last}") });
    execution.ended_at = Some(start + stage_count as i64 + 1);
    // In several transactions, as the server's own writes are: one that
    // held SQLite's writer for the whole seed made its health probe wait.
    let mut batch = Batch::default();
    batch.push(Part { sql: "DELETE FROM tasks WHERE execution_id = $1".into(), values: vec![id.to_owned().into()] });
    batch.run(&tx).await.expect("clear the tasks");
    tx.commit().await.expect("commit");
    for chunk in runs.chunks(2_000) {
        let tx = store.write().await.expect("a write transaction");
        let mut batch = Batch::default();
        batch.extend(tasks::insert_parts(&tx, chunk));
        batch.run(&tx).await.expect("seed the tasks");
        tx.commit().await.expect("commit");
    }
    // Last, the stages and the execution, under a new revision: no view
    // read in between is taken for the seeded one.
    let tx = store.write().await.expect("a write transaction");
    executions::lock(&tx, Key::Id(id)).await.unwrap().expect("the execution");
    let mut batch = Batch::default();
    batch.extend(stages::changed_parts(id, &before, &after));
    batch.push(executions::update_part(&execution));
    batch.run(&tx).await.expect("seed the stages");
    tx.commit().await.expect("commit");
}
