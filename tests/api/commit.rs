//! Nothing is acknowledged before it is committed: a database that stops
//! growing, a COMMIT that fails, a database that goes away. Every call that
//! answered OK is in the database afterwards, the server recovers by itself,
//! and readiness tells the truth meanwhile.

use std::time::Duration;

use reprise::proto as pb;
use sea_orm::{ConnectionTrait, Statement};
use tokio::time::Instant;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::*;

crate::on_both_backends!(
    a_commit_that_fails_leaves_the_next_unit_of_work_clean,
    a_full_database_acknowledges_only_what_it_stored_and_recovers,
    the_wal_is_copied_back_beside_the_writer,
);

/// SQLite: the writer's commits are copied from the WAL into the database
/// file by checkpoints that run beside it (the writer's own held the write
/// turn for milliseconds), and the WAL still does not grow with the writes.
async fn the_wal_is_copied_back_beside_the_writer(app: TestApp) {
    if app.backend == Backend::Postgres {
        return; // PostgreSQL checkpoints by itself
    }
    let q = queue();
    let p = app.create_pipeline("wal", vec![workflows("one", &q, &["a", "b", "c"])]).await;
    for _ in 0..400 {
        app.start(&p.id).await;
    }
    // What a checkpoint now finds in the WAL: frames written since the WAL
    // last started over, which it does only after a checkpoint.
    let db = app.engine.store().connection();
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), "PRAGMA wal_checkpoint(PASSIVE)"))
        .await
        .expect("checkpoint")
        .expect("a row");
    let frames = row.try_get_by_index::<i64>(1).expect("frames in the WAL");
    assert!(frames < 5_000, "the WAL holds {frames} frames after 400 commits: it grows with the writes");
    let beside = app.engine.store().background_checkpoints();
    assert!(beside >= 10, "{beside} checkpoints ran beside the writer in 400 commits");
}

async fn serving(app: &TestApp, service: &str) -> ServingStatus {
    let mut health = HealthClient::new(app.channel.clone());
    let status = health.check(HealthCheckRequest { service: service.into() }).await.expect("health").into_inner();
    ServingStatus::try_from(status.status).unwrap_or(ServingStatus::Unknown)
}

async fn wait_health(app: &TestApp, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while serving(app, "").await != want {
        assert!(Instant::now() < deadline, "readiness never became {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_commit_that_fails_leaves_the_next_unit_of_work_clean(app: TestApp) {
    let store = app.engine.store().clone();
    let db = store.connection();
    let backend = db.get_database_backend();
    for sql in [
        "CREATE TABLE commit_parent (id INTEGER PRIMARY KEY)",
        "CREATE TABLE commit_child (id INTEGER PRIMARY KEY, \
         parent INTEGER REFERENCES commit_parent (id) DEFERRABLE INITIALLY DEFERRED)",
    ] {
        db.execute_unprepared(sql).await.expect("schema");
    }
    // A deferred foreign key is checked at COMMIT: the COMMIT itself fails.
    let tx = store.write().await.expect("begin");
    tx.execute_unprepared("INSERT INTO commit_child (id, parent) VALUES (1, 99)").await.expect("insert");
    let failed = tx.commit().await.expect_err("the COMMIT must fail");
    assert!(matches!(failed, reprise::store::StoreError::Rejected(_)), "a retry cannot help: {failed:?}");

    // The next units of work on the same store commit normally, and stay.
    for id in 1..=3 {
        let tx = store.write().await.expect("begin after a failed commit");
        tx.execute_unprepared(&format!("INSERT INTO commit_parent (id) VALUES ({id})")).await.expect("insert");
        tx.commit().await.expect("commit after a failed commit");
    }
    let q = queue();
    let p = app.create_pipeline("after", vec![workflows("one", &q, &["a"])]).await;
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let done = app.wait_final(&app.start(&p.id).await.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
    assert_eq!(serving(&app, "").await, ServingStatus::Serving);

    let rows = db
        .query_all_raw(Statement::from_string(backend, "SELECT id FROM commit_parent ORDER BY id"))
        .await
        .expect("read back");
    assert_eq!(rows.len(), 3, "every commit that succeeded is there");
    let children =
        db.query_all_raw(Statement::from_string(backend, "SELECT id FROM commit_child")).await.expect("read back");
    assert!(children.is_empty(), "nothing of the failed commit is there");
}

async fn a_full_database_acknowledges_only_what_it_stored_and_recovers(app: TestApp) {
    if app.backend == Backend::Postgres {
        return; // SQLite's page limit stands in for a full disk; PostgreSQL outages have their own test
    }
    let q = queue();
    let p = app.create_pipeline("fill", vec![workflows("one", &q, &["a"]), workflows("two", &q, &["b"])]).await;
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::from_millis(5)));
    let store = app.engine.store().clone();
    let db = store.connection();
    let pages = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), "PRAGMA page_count"))
        .await
        .expect("page count")
        .expect("a row")
        .try_get_by_index::<i64>(0)
        .expect("pages");
    let limit = store.sqlite_writer_pragma(&format!("max_page_count = {}", pages + 4)).await.expect("limit");
    assert_eq!(limit, Some(pages + 4));

    // Start executions until the database refuses to grow, and some more.
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        let request = pb::StartExecutionRequest {
            pipeline_id: p.id.clone(),
            request_id: format!("fill-{i}"),
            artifacts: (0..4).map(|i| (format!("big{i}"), "x".repeat(250))).collect(),
            ..Default::default()
        };
        match app.executions.clone().start_execution(request).await {
            Ok(r) => acknowledged.push((format!("fill-{i}"), r.into_inner().execution.unwrap().id)),
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "a full database is worth a retry later: {s:?}");
                refused += 1;
            }
        }
        if refused >= 5 {
            break;
        }
    }
    assert!(refused >= 5, "the database never filled up ({} starts acknowledged)", acknowledged.len());
    assert!(!acknowledged.is_empty());
    wait_health(&app, ServingStatus::NotServing).await;
    assert_eq!(serving(&app, reprise::server::LIVENESS).await, ServingStatus::Serving, "the process is fine");

    // Space comes back: the server goes on by itself.
    store.sqlite_writer_pragma("max_page_count = 1073741823").await.expect("lift the limit");
    wait_health(&app, ServingStatus::Serving).await;
    for (request_id, id) in &acknowledged {
        let done = app.wait_final(id).await;
        assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{request_id}: {done:#?}");
    }
    let late = app.start(&p.id).await;
    assert_eq!(status(&app.wait_final(&late.id).await), pb::ExecutionStatus::Succeeded);

    // After a restart every acknowledged start is there, and a retry with
    // its request id answers with it.
    let app = app.restart().await;
    for (request_id, id) in &acknowledged {
        assert_eq!(&app.get(id).await.id, id);
        let retry = pb::StartExecutionRequest {
            pipeline_id: p.id.clone(),
            request_id: request_id.clone(),
            artifacts: (0..4).map(|i| (format!("big{i}"), "x".repeat(250))).collect(),
            ..Default::default()
        };
        let again = app.executions.clone().start_execution(retry).await.expect("retry").into_inner();
        assert_eq!(&again.execution.unwrap().id, id, "{request_id}");
    }
}
