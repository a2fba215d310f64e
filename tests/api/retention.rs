//! Retention deletes exactly the chains its policy names — whole chains,
//! never one that could still be resumed, never one still running — and
//! audit events on their own clock, while executions go on.

use std::time::Duration;

use reprise::{
    domain::{resume::ChainLimits, retention::Policy},
    engine::{Settings, SweepOptions, Swept},
    proto as pb,
};
use tonic::Code;

use crate::helpers::*;

crate::on_both_backends!(
    chains_past_their_age_go_whole_and_nothing_else_does,
    the_newest_chains_of_each_pipeline_are_kept,
    audit_events_have_their_own_age,
    the_retention_loop_deletes_while_executions_run,
);

fn sweep_options() -> SweepOptions {
    // Small batches: a sweep of a few chains still takes several.
    SweepOptions { batch: 2, pause: Duration::from_millis(1) }
}

/// A pipeline of one workflow stage (its worker succeeds) and an approval.
async fn gated(app: &TestApp, name: &str, q: &str) -> pb::Pipeline {
    app.create_pipeline(name, vec![workflows("build", q, &["w"]), approval("gate", Duration::from_secs(600))]).await
}

async fn decide(app: &TestApp, id: &str, approve: bool) {
    app.at_gate(id).await;
    let mut client = app.executions.clone();
    if approve {
        let request = pb::ApproveRequest { execution_id: id.into(), stage_name: "gate".into(), comment: String::new() };
        client.approve(request).await.expect("approve");
    } else {
        let request = pb::RejectRequest { execution_id: id.into(), stage_name: "gate".into(), comment: String::new() };
        client.reject(request).await.expect("reject");
    }
    app.wait_final(id).await;
}

/// A chain that succeeded; its execution id.
async fn succeeded(app: &TestApp, p: &pb::Pipeline) -> String {
    let e = app.start(&p.id).await;
    decide(app, &e.id, true).await;
    e.id
}

/// A chain of `attempts` rejected executions (resumed from the gate); their ids.
async fn rejected(app: &TestApp, p: &pb::Pipeline, attempts: usize) -> Vec<String> {
    let mut ids = vec![app.start(&p.id).await.id];
    decide(app, &ids[0], false).await;
    while ids.len() < attempts {
        let request = pb::ResumeRequest {
            execution_id: ids.last().unwrap().clone(),
            from_stage: Some(pb::resume_request::FromStage::StageName("gate".into())),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        let next = app.executions.clone().resume(request).await.expect("resume").into_inner().execution.unwrap();
        decide(app, &next.id, false).await;
        ids.push(next.id);
    }
    ids
}

/// Rows of `table` about these executions (`column` names them).
async fn rows(app: &TestApp, table: &str, column: &str, ids: &[String]) -> i64 {
    let list = ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(", ");
    let sql = format!("SELECT count(*) AS n FROM {table} WHERE {column} IN ({list})");
    app.sql_count(&sql).await
}

/// Every row an execution has: itself, its stages, its tasks.
async fn footprint(app: &TestApp, ids: &[String]) -> (i64, i64, i64) {
    (
        rows(app, "executions", "id", ids).await,
        rows(app, "stages", "execution_id", ids).await,
        rows(app, "tasks", "execution_id", ids).await,
    )
}

async fn assert_gone(app: &TestApp, ids: &[String]) {
    assert_eq!(footprint(app, ids).await, (0, 0, 0), "no row of {ids:?} is left");
    for id in ids {
        let request = pb::GetExecutionRequest { execution_id: id.clone(), ..Default::default() };
        let gone = app.executions.clone().get_execution(request).await;
        assert_eq!(assert_code(gone, Code::NotFound).code(), Code::NotFound);
    }
}

async fn chains_past_their_age_go_whole_and_nothing_else_does(app: TestApp) {
    let q = queue();
    let worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let (deploy, gated) = (gated(&app, "deploy", &q).await, gated(&app, "gated", &q).await);

    // Ended before `middle`, and begun before it: what the policy names.
    let old_ok = vec![succeeded(&app, &deploy).await];
    let old_chain = rejected(&app, &gated, 2).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let middle = reprise::engine::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Begun after `middle`: recent, inside the resume window, or not ended.
    let young_rejected = rejected(&app, &gated, 1).await;
    let young_ok = vec![succeeded(&app, &deploy).await];
    let running = app.start(&gated.id).await.id;
    app.at_gate(&running).await;
    drop(worker);
    // Chains are kept for, and may be resumed within, the time since
    // `middle` (measured now: a loaded machine may have taken a while).
    let since = reprise::engine::now() - middle;
    let window = ChainLimits { max_attempts: None, max_age_ms: Some(since + 1000) };
    let app = app.restart_with(Settings { chain_limits: window, ..test_settings() }).await;
    // The young chain may still be resumed (and so must be kept).
    let request = pb::ResumeRequest {
        execution_id: young_rejected[0].clone(),
        from_stage: Some(pb::resume_request::FromStage::StageName("gate".into())),
        request_id: uuid::Uuid::new_v4().to_string(),
        validate_only: true,
        ..Default::default()
    };
    app.executions.clone().resume(request).await.expect("the kept chain can still be resumed");
    let kept: Vec<String> = [young_rejected.clone(), young_ok.clone(), vec![running.clone()]].concat();
    let kept_rows = footprint(&app, &kept).await;
    assert_eq!(footprint(&app, &old_chain).await, (2, 4, 1), "two attempts, the second carried its build over");

    let policy = Policy { chains_for_ms: Some(since + 1000), ..Policy::default() };
    let swept = app.engine.sweep(&policy, sweep_options()).await.expect("sweep");
    assert_eq!(swept, Swept { chains: 2, executions: 3, stages: 6, tasks: 2, audit_events: 0 });
    assert_gone(&app, &[old_ok.clone(), old_chain.clone()].concat()).await;
    assert_eq!(footprint(&app, &kept).await, kept_rows, "nothing else lost a row");
    for id in &kept {
        app.get(id).await;
    }
    let listed = app
        .executions
        .clone()
        .list_executions(pb::ListExecutionsRequest { page_size: 100, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .executions;
    let mut listed: Vec<String> = listed.into_iter().map(|e| e.id).collect();
    listed.sort();
    let mut expected = kept.clone();
    expected.sort();
    assert_eq!(listed, expected, "the list shows what is left");

    // One audit event per batch, naming the chains and why.
    let audited =
        app.sql_count("SELECT count(*) AS n FROM audit_events WHERE action = 'retention.delete_chains'").await;
    assert_eq!(audited, 1, "both chains went in one batch of 2");
    for chain in [&old_ok[0], &old_chain[0]] {
        let sql = format!(
            "SELECT count(*) AS n FROM audit_events WHERE action = 'retention.delete_chains' \
             AND actor = 'system:retention' AND details LIKE '%{chain}%' AND details LIKE '%\"reason\":\"age\"%'"
        );
        assert_eq!(app.sql_count(&sql).await, 1, "the deletion of chain {chain} is audited");
    }
    // Nothing more to do: a second sweep deletes nothing.
    assert_eq!(app.engine.sweep(&policy, sweep_options()).await.unwrap(), Swept::default());
}

async fn the_newest_chains_of_each_pipeline_are_kept(app: TestApp) {
    // No resume window: a chain that did not succeed may be resumed forever.
    let q = queue();
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let (many, other) = (gated(&app, "many", &q).await, gated(&app, "other", &q).await);
    let c1 = succeeded(&app, &many).await;
    let c2 = rejected(&app, &many, 1).await;
    let c3 = succeeded(&app, &many).await;
    let c4 = succeeded(&app, &many).await;
    let c5 = app.start(&many.id).await.id;
    app.at_gate(&c5).await;
    let o1 = succeeded(&app, &other).await;

    let policy = Policy { chains_per_pipeline: Some(2), ..Policy::default() };
    // A dry run counts and deletes nothing.
    let dry = Policy { dry_run: true, ..policy };
    assert_eq!(app.engine.sweep(&dry, sweep_options()).await.unwrap(), Swept { chains: 2, ..Swept::default() });
    let all = [vec![c1.clone(), c3.clone(), c4.clone(), c5.clone(), o1.clone()], c2.clone()].concat();
    assert_eq!(footprint(&app, &all).await.0, 6, "the dry run deleted nothing");

    let swept = app.engine.sweep(&policy, sweep_options()).await.unwrap();
    assert_eq!((swept.chains, swept.executions), (2, 2));
    assert_gone(&app, &[c1, c3]).await;
    let kept = [vec![c4, c5, o1], c2].concat();
    assert_eq!(footprint(&app, &kept).await.0, 4, "the newest two, the resumable one and the other pipeline's");
    assert_eq!(app.engine.sweep(&policy, sweep_options()).await.unwrap(), Swept::default());
}

async fn audit_events_have_their_own_age(app: TestApp) {
    let q = queue();
    gated(&app, "first", &q).await;
    let before = app.sql_count("SELECT count(*) AS n FROM audit_events").await;
    assert!(before >= 1, "creating a pipeline is audited");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let middle = reprise::engine::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    gated(&app, "second", &q).await;
    let total = app.sql_count("SELECT count(*) AS n FROM audit_events").await;

    // Kept for the time since `middle`, plus a margin for the sweep to start.
    let policy = Policy { audit_for_ms: Some(reprise::engine::now() - middle + 500), ..Policy::default() };
    let dry = app.engine.sweep(&Policy { dry_run: true, ..policy }, sweep_options()).await.unwrap();
    assert_eq!(dry.audit_events as i64, before);
    let swept = app.engine.sweep(&policy, sweep_options()).await.unwrap();
    assert_eq!(swept, Swept { audit_events: before as u64, ..Swept::default() });
    assert_eq!(app.sql_count("SELECT count(*) AS n FROM audit_events").await, total - before);
    let recent = app.sql_count("SELECT count(*) AS n FROM audit_events WHERE details LIKE '%second%'").await;
    assert!(recent >= 1, "the recent event is kept");
}

async fn the_retention_loop_deletes_while_executions_run(app: TestApp) {
    let q = queue();
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::from_millis(50)));
    let quick = app.create_pipeline("quick", vec![workflows("build", &q, &["a", "b"])]).await;
    let mut old = Vec::new();
    for _ in 0..24 {
        old.push(app.start(&quick.id).await.id);
    }
    for id in &old {
        app.wait_final(id).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;

    // The loop in the server, every 100 ms, with chains kept 500 ms.
    let retention = Policy { chains_for_ms: Some(500), ..Policy::default() };
    let settings = Settings { retention, retention_interval: Duration::from_millis(100), ..test_settings() };
    let app = app.restart_with(settings).await;
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::from_millis(50)));
    // Executions that run meanwhile and then wait at a gate: never deleted.
    let live_pipeline = gated(&app, "live", &q).await;
    let mut live = Vec::new();
    for _ in 0..6 {
        live.push(app.start(&live_pipeline.id).await.id);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while footprint(&app, &old).await != (0, 0, 0) {
        assert!(tokio::time::Instant::now() < deadline, "the loop deleted the old chains within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &live {
        app.at_gate(id).await;
        let e = app.get(id).await;
        assert_eq!(workflow_of(&e, "build", "w").status, pb::WorkflowStatus::Succeeded as i32, "{e:#?}");
    }
    assert_eq!(footprint(&app, &live).await, (6, 12, 6), "every row of the running executions is there");
    let audited =
        app.sql_count("SELECT count(*) AS n FROM audit_events WHERE action = 'retention.delete_chains'").await;
    assert!(audited >= 1, "the loop's batches are audited");
}
