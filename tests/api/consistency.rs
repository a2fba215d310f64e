//! One consistent unit of work per execution: every read is one snapshot,
//! concurrent retries of one request get the one execution it created, and
//! a burst of calls on one execution never starves the connection pool.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use reprise::proto as pb;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::*;

crate::on_both_backends!(
    every_snapshot_of_running_pipelines_is_consistent,
    concurrent_resumes_with_one_request_id_all_get_the_one_execution,
    concurrent_resumes_with_different_request_ids_have_one_winner,
    a_burst_of_resumes_of_one_execution_is_answered_without_starving_the_pool,
);

/// What must hold in any state an execution can be in; None if it does.
fn broken_invariant(e: &pb::Execution) -> Option<String> {
    use pb::{StageStatus as S, WorkflowStatus as W};
    let stage = |s: &pb::StageExecution| S::try_from(s.status).unwrap_or(S::Unspecified);
    let open = |w: &pb::WorkflowExecution| matches!(W::try_from(w.status), Ok(W::Queued | W::Running));
    let active: Vec<&pb::StageExecution> =
        e.stages.iter().filter(|s| matches!(stage(s), S::Running | S::WaitingApproval)).collect();
    if active.len() > 1 {
        return Some(format!("{} stages active at once", active.len()));
    }
    let first_unpassed = e.stages.iter().position(|s| !matches!(stage(s), S::Succeeded | S::Skipped));
    for (i, s) in e.stages.iter().enumerate() {
        let started = !s.workflows.is_empty();
        match stage(s) {
            S::Pending | S::NotRun if started => {
                return Some(format!("stage {} is {:?} but has workflows", s.name, stage(s)));
            }
            S::Running if !s.workflows.iter().any(open) => {
                return Some(format!("stage {} is RUNNING with no open workflow", s.name));
            }
            S::Succeeded if s.workflows.iter().any(|w| w.status != W::Succeeded as i32) => {
                return Some(format!("stage {} SUCCEEDED with a workflow that did not", s.name));
            }
            S::Failed if s.workflows.iter().any(open) => {
                return Some(format!("stage {} FAILED with an open workflow", s.name));
            }
            _ => {}
        }
        if let Some(first) = first_unpassed
            && i > first
            && started
            && s.carried_from_execution_id.is_empty()
        {
            return Some(format!("stage {} has started while stage {} has not passed", s.name, e.stages[first].name));
        }
    }
    let status = pb::ExecutionStatus::try_from(e.status).unwrap_or(pb::ExecutionStatus::Unspecified);
    if status == pb::ExecutionStatus::Succeeded && first_unpassed.is_some() {
        return Some("SUCCEEDED with a stage that did not pass".into());
    }
    if is_final(e.status) && e.stages.iter().any(|s| s.workflows.iter().any(open)) {
        return Some(format!("{status:?} with an open workflow"));
    }
    None
}

async fn every_snapshot_of_running_pipelines_is_consistent(app: TestApp) {
    let q = queue();
    let stages: Vec<pb::Stage> = (0..12).map(|i| workflows(&format!("s{i}"), &q, &["a", "b", "c"])).collect();
    let p = app.create_pipeline("busy", stages).await;
    let _workers: Vec<TestWorker> =
        (0..3).map(|_| app.worker(&q, |_| Script::Succeed(Duration::from_millis(5)))).collect();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.start(&p.id).await.id);
    }
    let checked = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for reader in 0..3 {
        let (app_executions, ids, checked) = (app.executions.clone(), ids.clone(), checked.clone());
        readers.push(tokio::spawn(async move {
            let mut client = app_executions;
            let until = tokio::time::Instant::now() + Duration::from_secs(3);
            while tokio::time::Instant::now() < until {
                for id in &ids {
                    let request = pb::GetExecutionRequest { execution_id: id.clone(), ..Default::default() };
                    let e = client.get_execution(request).await.expect("get").into_inner().execution.unwrap();
                    if let Some(broken) = broken_invariant(&e) {
                        panic!("reader {reader} saw an impossible snapshot: {broken}\n{e:#?}");
                    }
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Watchers see only consistent snapshots too.
    for id in &ids {
        let request = pb::WatchExecutionRequest { execution_id: id.clone() };
        let mut stream = app.executions.clone().watch_execution(request).await.expect("watch").into_inner();
        let checked = checked.clone();
        readers.push(tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let e = item.expect("watch item").execution.unwrap();
                if let Some(broken) = broken_invariant(&e) {
                    panic!("a watcher saw an impossible snapshot: {broken}\n{e:#?}");
                }
                checked.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for r in readers {
        r.await.expect("reader");
    }
    for id in &ids {
        let done = app.wait_final(id).await;
        assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
        assert!(broken_invariant(&done).is_none());
    }
    assert!(checked.load(Ordering::Relaxed) > 100, "too few snapshots checked: {checked:?}");
}

/// A FAILED execution of a two-stage pipeline, and its queue.
async fn failed_execution(app: &TestApp) -> (pb::Execution, String) {
    let q = queue();
    let p = app.create_pipeline("flaky", vec![workflows("build", &q, &["b"]), workflows("ship", &q, &["s"])]).await;
    let worker = app.worker(&q, |t| match t.stage_name.as_str() {
        "ship" => Script::Fail(Duration::ZERO),
        _ => Script::Succeed(Duration::ZERO),
    });
    let e = app.start(&p.id).await;
    let failed = app.wait_final(&e.id).await;
    assert_eq!(status(&failed), pb::ExecutionStatus::Failed);
    drop(worker);
    (failed, q)
}

fn resume_request(id: &str, request_id: &str) -> pb::ResumeRequest {
    pb::ResumeRequest {
        execution_id: id.into(),
        from_stage: Some(pb::resume_request::FromStage::StageName("ship".into())),
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// Sends `n` resumes of `id` at once, the i-th with `request_id(i)`.
async fn resumes_at_once(
    app: &TestApp,
    id: &str,
    n: usize,
    request_id: impl Fn(usize) -> String,
) -> Vec<Result<pb::ResumeResponse, tonic::Status>> {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            // One channel per caller, as separate clients would.
            let mut client = app.executions.clone();
            let request = resume_request(id, &request_id(i));
            tokio::spawn(async move { client.resume(request).await.map(tonic::Response::into_inner) })
        })
        .collect();
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.expect("call"));
    }
    out
}

async fn history_len(app: &TestApp, id: &str) -> usize {
    let request = pb::ListHistoryRequest { execution_id: id.into(), ..Default::default() };
    app.executions.clone().list_history(request).await.expect("history").into_inner().entries.len()
}

async fn concurrent_resumes_with_one_request_id_all_get_the_one_execution(app: TestApp) {
    let (failed, _) = failed_execution(&app).await;
    let results = resumes_at_once(&app, &failed.id, 20, |_| "resume-once".to_string()).await;
    let ids: Vec<String> = results
        .into_iter()
        .map(|r| r.expect("every retry of one request is answered with its execution").execution.unwrap().id)
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one execution for one request id: {ids:?}");
    assert_eq!(history_len(&app, &failed.id).await, 2, "the original and one resume");
}

async fn concurrent_resumes_with_different_request_ids_have_one_winner(app: TestApp) {
    let (failed, _) = failed_execution(&app).await;
    let results = resumes_at_once(&app, &failed.id, 20, |i| format!("resume-{i}")).await;
    let winners: Vec<String> =
        results.iter().filter_map(|r| r.as_ref().ok()).map(|r| r.execution.clone().unwrap().id).collect();
    assert_eq!(winners.len(), 1, "exactly one resume wins: {results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains(&winners[0]), "names the winner: {refused:?}");
    }
    assert_eq!(history_len(&app, &failed.id).await, 2);
}

async fn a_burst_of_resumes_of_one_execution_is_answered_without_starving_the_pool(app: TestApp) {
    let (failed, _) = failed_execution(&app).await;
    // More callers than the pool has connections, mixing retries and rivals.
    let results = resumes_at_once(&app, &failed.id, 64, |i| format!("burst-{}", i % 8)).await;
    let mut codes: HashMap<Code, usize> = HashMap::new();
    let mut created = Vec::new();
    for r in &results {
        match r {
            Ok(r) => created.push(r.execution.clone().unwrap().id),
            Err(s) => *codes.entry(s.code()).or_default() += 1,
        }
    }
    created.sort();
    created.dedup();
    assert_eq!(created.len(), 1, "exactly one new execution: {created:?}");
    assert_eq!(codes.get(&Code::Unavailable), None, "nobody was told to come back later: {codes:?}");
    assert!(codes.keys().all(|c| *c == Code::FailedPrecondition), "{codes:?}");
    assert_eq!(history_len(&app, &failed.id).await, 2);
}
