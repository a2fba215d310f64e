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
    changes_that_wait_for_the_writer_commit_together_and_each_is_kept,
    a_unit_that_fails_in_a_group_takes_only_its_own_changes_back,
    a_unit_abandoned_in_a_group_leaves_the_others_committed,
    units_that_commit_roll_back_or_give_up_at_random_leave_exactly_the_committed,
    last_writes_that_fail_in_a_group_take_back_only_their_own_unit,
    a_full_database_under_concurrent_writes_acknowledges_only_what_it_stored,
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

/// Many callers at once: on SQLite units that waited for the writer share
/// one COMMIT (fewer COMMITs than units), every call answered OK is there
/// after a restart, and a retry with its request id answers with it.
async fn changes_that_wait_for_the_writer_commit_together_and_each_is_kept(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("group", vec![workflows("one", &q, &["a"])]).await;
    let before = app.engine.store().writer_held();
    let mut started = Vec::new();
    for round in 0..4 {
        let calls = (0..32).map(|i| {
            let mut client = app.executions.clone();
            let request_id = format!("group-{round}-{i}");
            let request = pb::StartExecutionRequest {
                pipeline_id: p.id.clone(),
                request_id: request_id.clone(),
                ..Default::default()
            };
            async move { (request_id, client.start_execution(request).await.expect("start").into_inner()) }
        });
        for (request_id, r) in calls.collect::<tokio::task::JoinSet<_>>().join_all().await {
            started.push((request_id, r.execution.expect("execution").id));
        }
    }
    if let (Some(after), Some(before)) = (app.engine.store().writer_held(), before) {
        let held = after - before;
        assert!(held.transactions >= 128, "{held:?}");
        assert!(held.commits < held.transactions, "128 concurrent starts never shared a COMMIT: {held:?}");
    }
    let app = app.restart().await;
    each_start_is_there_and_answers_its_retry(&app, &started, |request_id| pb::StartExecutionRequest {
        pipeline_id: p.id.clone(),
        request_id: request_id.into(),
        ..Default::default()
    })
    .await;
}

/// Every acknowledged start (request id, execution id) is there, and its
/// request sent again (`request` of its id) answers with the same execution.
async fn each_start_is_there_and_answers_its_retry(
    app: &TestApp,
    started: &[(String, String)],
    request: impl Fn(&str) -> pb::StartExecutionRequest,
) {
    for (request_id, id) in started {
        assert_eq!(&app.get(id).await.id, id);
        let again = app.executions.clone().start_execution(request(request_id)).await.expect("retry").into_inner();
        assert_eq!(&again.execution.unwrap().id, id, "{request_id}");
    }
}

/// Concurrent creations where half collide on one name: the collisions are
/// refused one by one (ALREADY_EXISTS) and everything else is kept.
async fn a_unit_that_fails_in_a_group_takes_only_its_own_changes_back(app: TestApp) {
    let q = queue();
    let calls = (0..48).map(|i| {
        let mut client = app.pipelines.clone();
        let name = if i % 2 == 0 { "taken".to_owned() } else { format!("free-{i}") };
        let request = pb::CreatePipelineRequest {
            application: "shop".into(),
            name: name.clone(),
            definition: Some(pb::PipelineDefinition {
                description: String::new(),
                variables: vec![],
                stages: vec![workflows("one", &q, &["a"])],
            }),
        };
        async move { (name, client.create_pipeline(request).await) }
    });
    let answers = calls.collect::<tokio::task::JoinSet<_>>().join_all().await;
    let mut created = 0;
    for (name, answer) in &answers {
        match answer {
            Ok(_) => created += 1,
            Err(s) => {
                assert_eq!(name, "taken", "{s:?}");
                assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
            }
        }
    }
    assert_eq!(created, 25, "every free name and one of the colliding ones");
    let stored = app.sql_count("SELECT COUNT(*) AS n FROM pipelines").await;
    assert_eq!(stored, 25);
    let app = app.restart().await;
    assert_eq!(app.sql_count("SELECT COUNT(*) AS n FROM pipelines").await, 25);
}

/// A unit that joined another's transaction and is then abandoned (its
/// caller went away) is rolled back alone: the unit that left it the
/// COMMIT is still committed, and answered.
async fn a_unit_abandoned_in_a_group_leaves_the_others_committed(app: TestApp) {
    let store = app.engine.store().clone();
    let db = store.connection();
    db.execute_unprepared("CREATE TABLE group_rows (id BIGINT PRIMARY KEY)").await.expect("schema");
    let first = store.write().await.expect("begin");
    first.execute_unprepared("INSERT INTO group_rows (id) VALUES (1)").await.expect("insert");
    let next_store = store.clone();
    let next = tokio::spawn(async move {
        let tx = next_store.write().await.expect("begin the next");
        tx.execute_unprepared("INSERT INTO group_rows (id) VALUES (2)").await.expect("insert");
        tx
    });
    if app.backend == Backend::Sqlite {
        // The next unit waits for the writer before the first one commits.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(store.writer_is_busy());
    }
    let committed = tokio::spawn(first.commit());
    let next = next.await.expect("the next unit");
    if app.backend == Backend::Sqlite {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!committed.is_finished(), "the first unit waits for the COMMIT it left to the next");
    }
    drop(next);
    committed.await.expect("task").expect("the first unit is committed");
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), "SELECT id FROM group_rows ORDER BY id"))
        .await
        .expect("read back");
    let ids: Vec<i64> = rows.iter().map(|r| r.try_get_by_index(0).expect("id")).collect();
    assert_eq!(ids, vec![1], "the first unit's row is there, the abandoned one's is not");
    let tx = store.write().await.expect("the writer is free again");
    tx.execute_unprepared("INSERT INTO group_rows (id) VALUES (3)").await.expect("insert");
    tx.commit().await.expect("commit");
}

/// Many units at once, each of which commits, rolls back, is dropped
/// midway or gives up waiting for the writer: every commit is answered OK,
/// exactly the committed rows are there, and the writer is free afterwards
/// (no group left open for a waiter that went away).
async fn units_that_commit_roll_back_or_give_up_at_random_leave_exactly_the_committed(app: TestApp) {
    let store = app.engine.store().clone();
    let db = store.connection();
    db.execute_unprepared("CREATE TABLE chaos_rows (id BIGINT PRIMARY KEY)").await.expect("schema");
    let before = store.writer_held();
    let mut units = tokio::task::JoinSet::new();
    for i in 0..400_i64 {
        let store = store.clone();
        units.spawn(async move {
            let begin = store.write();
            let tx = if i % 4 == 3 {
                match tokio::time::timeout(Duration::from_micros(200 + (i as u64 % 7) * 100), begin).await {
                    Ok(tx) => tx.expect("begin"),
                    Err(_) => return None, // gave up waiting for the writer
                }
            } else {
                begin.await.expect("begin")
            };
            tx.execute_unprepared(&format!("INSERT INTO chaos_rows (id) VALUES ({i})")).await.expect("insert");
            match i % 4 {
                1 => {
                    tx.rollback().await;
                    None
                }
                2 => {
                    tokio::task::yield_now().await;
                    drop(tx);
                    None
                }
                _ => {
                    tx.commit().await.expect("every commit succeeds");
                    Some(i)
                }
            }
        });
    }
    let mut committed: Vec<i64> = units.join_all().await.into_iter().flatten().collect();
    committed.sort_unstable();
    assert!(committed.len() >= 100, "{} commits", committed.len());
    let ids = shared_commits_then_rows(&store, before, "chaos_rows").await;
    assert_eq!(ids, committed, "exactly the committed rows");
}

/// Units that end with their last writes sent together (the engine's
/// `finish`: on SQLite a unit in a group releases its SAVEPOINT in the same
/// call), a third of which fail in those last writes (a duplicate key):
/// each failed unit loses its own first write too, every other unit keeps
/// both, and the writer is free afterwards.
async fn last_writes_that_fail_in_a_group_take_back_only_their_own_unit(app: TestApp) {
    let store = app.engine.store().clone();
    let db = store.connection();
    db.execute_unprepared("CREATE TABLE last_rows (id BIGINT PRIMARY KEY)").await.expect("schema");
    db.execute_unprepared("INSERT INTO last_rows (id) VALUES (-1)").await.expect("the row that collides");
    let before = store.writer_held();
    let mut units = tokio::task::JoinSet::new();
    for i in 0..240_i64 {
        let store = store.clone();
        units.spawn(async move {
            let tx = store.write().await.expect("begin");
            tx.execute_unprepared(&format!("INSERT INTO last_rows (id) VALUES ({i})")).await.expect("first write");
            let mut last = reprise::store::Batch::default();
            let second = if i % 3 == 0 { -1 } else { 1000 + i };
            for id in [10_000 + i, second] {
                last.push(reprise::store::Part {
                    sql: format!("INSERT INTO last_rows (id) VALUES ({id})"),
                    values: vec![],
                });
            }
            match tx.run_last(last).await {
                Ok(()) => {
                    tx.commit().await.expect("every commit succeeds");
                    assert_ne!(i % 3, 0, "unit {i}'s last writes collide");
                    vec![i, 1000 + i, 10_000 + i]
                }
                Err(e) => {
                    assert_eq!(i % 3, 0, "unit {i}: {e}");
                    tx.rollback().await;
                    vec![]
                }
            }
        });
    }
    let mut kept: Vec<i64> = units.join_all().await.into_iter().flatten().collect();
    kept.push(-1);
    kept.sort_unstable();
    assert_eq!(kept.len(), 1 + 160 * 3);
    let ids = shared_commits_then_rows(&store, before, "last_rows").await;
    assert_eq!(ids, kept, "exactly the rows of the units that committed");
}

/// After many units at once: that some shared a COMMIT (SQLite), that the
/// writer is free (no group left open), and the ids `table` holds.
async fn shared_commits_then_rows(
    store: &reprise::store::Store,
    before: Option<reprise::store::WriterHeld>,
    table: &str,
) -> Vec<i64> {
    if let (Some(after), Some(before)) = (store.writer_held(), before) {
        let held = after - before;
        assert!(held.commits < held.transactions, "no unit shared a COMMIT: {held:?}");
    }
    let tx =
        tokio::time::timeout(Duration::from_secs(5), store.write()).await.expect("the writer is free").expect("begin");
    tx.commit().await.expect("commit");
    let db = store.connection();
    let sql = format!("SELECT id FROM {table} ORDER BY id");
    let rows = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await.expect("read back");
    rows.iter().map(|r| r.try_get_by_index(0).expect("id")).collect()
}

/// The database fills up while many callers write at once (starts and the
/// worker's reports, committed in groups): every start answered OK is
/// there after a restart, and the refusals are UNAVAILABLE.
async fn a_full_database_under_concurrent_writes_acknowledges_only_what_it_stored(app: TestApp) {
    if app.backend == Backend::Postgres {
        return; // SQLite's page limit stands in for a full disk
    }
    let q = queue();
    let p = app.create_pipeline("fill", vec![workflows("one", &q, &["a"]), workflows("two", &q, &["b"])]).await;
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let store = app.engine.store().clone();
    let pages = app.sql_count("SELECT page_count AS n FROM pragma_page_count()").await;
    store.sqlite_writer_pragma(&format!("max_page_count = {}", pages + 8)).await.expect("limit");
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let callers = (0..8).map(|caller| {
        let mut client = app.executions.clone();
        let p = p.id.clone();
        let acknowledged = acknowledged.clone();
        async move {
            let mut refused = 0;
            for i in 0..100 {
                let request_id = format!("fill-{caller}-{i}");
                let request = pb::StartExecutionRequest {
                    pipeline_id: p.clone(),
                    request_id: request_id.clone(),
                    artifacts: (0..4).map(|i| (format!("big{i}"), "x".repeat(250))).collect(),
                    ..Default::default()
                };
                match client.start_execution(request).await {
                    Ok(r) => acknowledged.lock().unwrap().push((request_id, r.into_inner().execution.unwrap().id)),
                    Err(s) => {
                        assert_eq!(s.code(), Code::Unavailable, "a full database is worth a retry later: {s:?}");
                        refused += 1;
                        if refused >= 3 {
                            break;
                        }
                    }
                }
            }
            refused
        }
    });
    let refused: usize = callers.collect::<tokio::task::JoinSet<_>>().join_all().await.into_iter().sum();
    assert!(refused > 0, "the database never filled up");
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    assert!(!acknowledged.is_empty());
    store.sqlite_writer_pragma("max_page_count = 1073741823").await.expect("lift the limit");
    wait_health(&app, ServingStatus::Serving).await;
    for (request_id, id) in &acknowledged {
        let done = app.wait_final(id).await;
        assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{request_id}: {done:#?}");
    }
    let app = app.restart().await;
    for (_, id) in &acknowledged {
        assert_eq!(status(&app.get(id).await), pb::ExecutionStatus::Succeeded);
    }
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
    each_start_is_there_and_answers_its_retry(&app, &acknowledged, |request_id| pb::StartExecutionRequest {
        pipeline_id: p.id.clone(),
        request_id: request_id.into(),
        artifacts: (0..4).map(|i| (format!("big{i}"), "x".repeat(250))).collect(),
        ..Default::default()
    })
    .await;
}
