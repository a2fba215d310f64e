//! Reports sent at once: a report of a stage whose execution this replica
//! last wrote is decided before it writes and sent as one statement that
//! commits itself (PostgreSQL), written only while the execution is as it
//! was known.

use std::time::Duration;

use reprise::proto as pb;

use crate::helpers::*;

crate::on_both_backends!(
    reports_of_an_execution_this_replica_last_wrote_are_sent_as_one_statement,
    a_report_decided_from_a_state_changed_unheard_of_writes_nothing_and_goes_the_usual_way,
    a_report_another_replica_has_taken_meanwhile_is_refused_and_starts_nothing_again,
    output_a_report_sends_again_from_an_offset_is_kept_once,
    the_first_report_of_a_resumed_execution_is_sent_at_once_and_carries_nothing_again,
);

/// Polls the next task of `queue`, which must come.
async fn next(app: &TestApp, queue: &str) -> pb::Task {
    poll_once(app.workers.clone(), queue.to_owned(), Duration::from_secs(5)).await.expect("a task is queued")
}

/// A pipeline of "one" (a, b) then "two" (c, d) started, and "one"'s tasks
/// polled: its queue, the execution, a and b.
async fn started_two_stages(app: &TestApp, name: &str) -> (String, String, pb::Task, pb::Task) {
    let q = queue();
    let p = app.create_pipeline(name, vec![workflows("one", &q, &["a", "b"]), workflows("two", &q, &["c", "d"])]).await;
    let id = app.start(&p.id).await.id;
    let (a, b) = (next(app, &q).await, next(app, &q).await);
    (q, id, a, b)
}

/// How many task rows execution `id` has.
async fn task_count(app: &TestApp, id: &str) -> i64 {
    app.sql_count(&format!("SELECT count(*) AS n FROM tasks WHERE execution_id = '{id}'")).await
}

async fn succeed(app: &TestApp, task: &pb::Task) -> Result<pb::CompleteTaskResponse, tonic::Status> {
    complete_task(&app.workers, &task.task_id, &task.lease_token, pb::TaskOutcome::Succeeded, "done\n").await
}

/// Waits until the server hears other replicas: when its channel comes up
/// it forgets what it knew (announcements may have been missed meanwhile).
async fn listening(app: &TestApp) {
    if app.backend == Backend::Postgres {
        eventually("the channel from other replicas is up", || app.engine.events().is_relayed()).await;
    }
}

async fn reports_of_an_execution_this_replica_last_wrote_are_sent_as_one_statement(app: TestApp) {
    // Leases that outlast the test: the timer then has nothing to look at
    // while a report's statements are counted (with the tests' 1.5 s
    // leases, a wake at an ended task's lease end could fall in that window
    // on a loaded machine and be counted with the report).
    let app = app.restart_with(reprise::engine::Settings { lease: Duration::from_secs(60), ..test_settings() }).await;
    listening(&app).await;
    let q = queue();
    let p = app
        .create_pipeline(
            "at-once",
            vec![workflows("one", &q, &["a", "b"]), workflows("two", &q, &["c", "d"]), workflows("three", &q, &["e"])],
        )
        .await;
    let id = app.start(&p.id).await.id;
    let before = app.engine.reports_at_once();
    for width in [2, 2, 1] {
        let mut tasks = Vec::new();
        for _ in 0..width {
            tasks.push(next(&app, &q).await);
        }
        for task in &tasks {
            let statements = app.engine.store().statements();
            succeed(&app, task).await.expect("accepted");
            let sent = app.engine.store().statements() - statements;
            if app.backend == Backend::Postgres {
                // The report, the stage's count, what follows: one statement
                // (the first report too: the start left what it wrote known).
                assert_eq!(sent, 1, "statements for the report of {}/{}", task.stage_name, task.workflow_name);
            }
        }
    }
    let done = app.wait_final(&id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
    for stage in &done.stages {
        assert_eq!(stage.status(), pb::StageStatus::Succeeded, "stage {}", stage.name);
        for w in &stage.workflows {
            assert_eq!((w.status(), w.attempt, w.output.as_str()), (pb::WorkflowStatus::Succeeded, 1, "done\n"));
        }
    }
    let tasks = task_count(&app, &id).await;
    assert_eq!(tasks, 5, "each workflow ran once");
    let open = app.sql_count(&format!("SELECT sum(wf_open) AS n FROM stages WHERE execution_id = '{id}'")).await;
    assert_eq!(open, 0, "every stage's count came down to nothing open");
    let after = app.engine.reports_at_once();
    let (committed, stale) = (after.committed - before.committed, after.stale - before.stale);
    match app.backend {
        Backend::Postgres => assert_eq!((committed, stale), (5, 0)),
        Backend::Sqlite => assert_eq!((committed, stale), (0, 0), "SQLite has no round trips to save"),
    }
}

async fn a_report_decided_from_a_state_changed_unheard_of_writes_nothing_and_goes_the_usual_way(app: TestApp) {
    if app.backend == Backend::Sqlite {
        return; // reports are never sent at once there
    }
    listening(&app).await;
    let (q, id, a, b) = started_two_stages(&app, "unheard").await;
    // This replica writes last: it knows "one" with one workflow open.
    succeed(&app, &a).await.expect("a accepted");
    // Another writer changes the execution, and this replica does not hear
    // of it (an announcement lost while its channel was down).
    use sea_orm::ConnectionTrait as _;
    let db = app.engine.store().connection();
    let bump = format!("UPDATE executions SET revision = revision + 1 WHERE id = '{id}'");
    db.execute_unprepared(&bump).await.unwrap();
    // Decided from what was known, b's report would have been written
    // against a revision that is gone: it writes nothing and goes the usual way.
    let before = app.engine.reports_at_once();
    succeed(&app, &b).await.expect("b accepted");
    let after = app.engine.reports_at_once();
    assert_eq!((after.committed - before.committed, after.stale - before.stale), (0, 1), "sent, found changed");
    let tasks = task_count(&app, &id).await;
    assert_eq!(tasks, 4, "\"two\" started once");
    let (c, d) = (next(&app, &q).await, next(&app, &q).await);
    succeed(&app, &c).await.expect("c accepted");
    succeed(&app, &d).await.expect("d accepted");
    assert_ran_once(&app, &id, 4).await;
}

async fn a_report_another_replica_has_taken_meanwhile_is_refused_and_starts_nothing_again(app: TestApp) {
    if app.backend == Backend::Sqlite {
        return; // one process per SQLite file
    }
    let other = app.replica(test_settings()).await;
    let (q, id, a, b) = started_two_stages(&app, "raced").await;
    succeed(&app, &a).await.expect("a accepted");
    // The other replica ends "one" and starts "two".
    succeed(&other, &b).await.expect("b accepted");
    // b's report again, here, whether or not this replica has heard of that
    // yet: decided from what it knew, it would start "two" a second time.
    let again = succeed(&app, &b).await;
    assert_refused(again, tonic::Code::FailedPrecondition, pb::ErrorReason::LeaseNotHeld);
    let tasks = task_count(&app, &id).await;
    assert_eq!(tasks, 4, "\"two\" was not started again");
    let (c, d) = (next(&app, &q).await, next(&app, &q).await);
    succeed(&app, &c).await.expect("c accepted");
    succeed(&other, &d).await.expect("d accepted");
    assert_ran_once(&app, &id, 4).await;
}

/// The execution succeeded with each of its `n` workflows run once, and
/// every stage's count came down to nothing open.
async fn assert_ran_once(app: &TestApp, id: &str, n: usize) {
    let done = app.wait_final(id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
    let workflows: Vec<_> = done.stages.iter().flat_map(|s| &s.workflows).collect();
    assert_eq!(workflows.len(), n);
    assert!(workflows.iter().all(|w| w.status() == pb::WorkflowStatus::Succeeded && w.attempt == 1));
    let open = app.sql_count(&format!("SELECT sum(wf_open) AS n FROM stages WHERE execution_id = '{id}'")).await;
    assert_eq!(open, 0);
}

async fn output_a_report_sends_again_from_an_offset_is_kept_once(app: TestApp) {
    listening(&app).await;
    let q = queue();
    let p = app.create_pipeline("offsets", vec![workflows("one", &q, &["a", "b"])]).await;
    let id = app.start(&p.id).await.id;
    let (a, b) = (next(&app, &q).await, next(&app, &q).await);
    succeed(&app, &a).await.expect("a accepted");
    // b's worker sent "hello " with a heartbeat; its report sends from
    // character 3 on, "lo " again (the heartbeat's answer was lost) and the rest.
    let beat = pb::HeartbeatRequest {
        task_id: b.task_id.clone(),
        lease_token: b.lease_token.clone(),
        output: "hello ".into(),
        output_offset: Some(0),
    };
    app.workers.clone().heartbeat(beat).await.expect("heartbeat");
    let before = app.engine.reports_at_once();
    app.workers.clone().complete_task(succeeded_from(&b, "lo wörld\n", 3)).await.expect("b accepted");
    let after = app.engine.reports_at_once();
    if app.backend == Backend::Postgres {
        assert_eq!(after.committed - before.committed, 1, "sent at once, the overlap left out by the statement");
    }
    let done = app.wait_final(&id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
    assert_eq!(workflow_of(&done, "one", "b").output, "hello wörld\n", "what was received is kept once");
    let chars = app.sql_count(&format!("SELECT output_chars AS n FROM tasks WHERE id = '{}'", b.task_id)).await;
    assert_eq!(chars, 12);
}

async fn the_first_report_of_a_resumed_execution_is_sent_at_once_and_carries_nothing_again(app: TestApp) {
    listening(&app).await;
    let (q, id, a, b) = started_two_stages(&app, "resumed").await;
    succeed(&app, &a).await.expect("a accepted");
    succeed(&app, &b).await.expect("b accepted");
    let (c, d) = (next(&app, &q).await, next(&app, &q).await);
    succeed(&app, &c).await.expect("c accepted");
    complete_task(&app.workers, &d.task_id, &d.lease_token, pb::TaskOutcome::Failed, "boom\n").await.expect("d failed");
    assert_eq!(status(&app.wait_final(&id).await), pb::ExecutionStatus::Failed);
    let resumed = app.executions.clone().resume(resume_request(&id, "two")).await.expect("resume").into_inner();
    let resumed = resumed.execution.expect("execution").id;
    let (c2, d2) = (next(&app, &q).await, next(&app, &q).await);
    let before = app.engine.reports_at_once();
    let statements = app.engine.store().statements();
    succeed(&app, &c2).await.expect("c accepted");
    if app.backend == Backend::Postgres {
        assert_eq!(app.engine.store().statements() - statements, 1, "the resumed execution's first report");
    }
    succeed(&app, &d2).await.expect("d accepted");
    let after = app.engine.reports_at_once();
    let at_once = (after.committed - before.committed, after.stale - before.stale);
    assert_eq!(at_once, if app.backend == Backend::Postgres { (2, 0) } else { (0, 0) });
    // "one" carried as it was, "two" run again: every workflow once, as shown.
    assert_ran_once(&app, &resumed, 4).await;
    assert_eq!(task_count(&app, &resumed).await, 2, "only \"two\" ran again");
}
