//! The worker protocol driven directly: who gets a task, leases that go
//! stale or run out, long polls, and requests the server must refuse.

use std::time::{Duration, Instant};

use reprise::proto::{self as pb, worker_service_client::WorkerServiceClient};
use tonic::{Code, transport::Channel};

use crate::helpers::*;

crate::on_both_backends!(
    a_task_is_handed_to_exactly_one_of_two_concurrent_pollers,
    completing_a_task_twice_with_the_same_lease_is_refused_the_second_time,
    a_stale_lease_is_refused_once_the_task_was_offered_again,
    a_task_whose_leases_expire_max_attempts_times_fails_the_execution,
    a_short_poll_on_an_empty_queue_returns_an_empty_response,
    a_waiting_poll_receives_a_task_queued_after_it_started_waiting,
    bad_worker_requests_name_the_field_and_unknown_tasks_are_not_found,
    reports_that_arrive_together_all_count_and_a_stale_one_is_refused_alone,
    failures_reported_together_all_count_and_the_stage_names_one,
    a_report_that_ends_a_stage_hands_its_worker_the_next_task,
    a_report_asking_for_more_gets_nothing_when_nothing_is_dispatched,
    a_refused_report_asking_for_more_leaves_the_next_task_to_others,
);

async fn a_task_is_handed_to_exactly_one_of_two_concurrent_pollers(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("deploy", vec![workflows("ship", &q, &["only"])]).await;
    let wait = Duration::from_secs(1);
    // Even rounds: both pollers wait first and are woken by the new task.
    // Odd rounds: the task is queued first and both race to claim it.
    for round in 0..4 {
        let pollers_first = round % 2 == 0;
        let spawn_poll = || tokio::spawn(poll_once(app.workers.clone(), q.clone(), wait));
        let (e, a, b) = if pollers_first {
            let (a, b) = (spawn_poll(), spawn_poll());
            tokio::time::sleep(Duration::from_millis(100)).await; // let both start waiting
            (app.start(&p.id).await, a, b)
        } else {
            let e = app.start(&p.id).await;
            (e, spawn_poll(), spawn_poll())
        };
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let got: Vec<pb::Task> = [a, b].into_iter().flatten().collect();
        assert_eq!(got.len(), 1, "round {round}: exactly one poller holds the task: {got:#?}");
        let task = &got[0];
        assert_eq!(task.execution_id, e.id);
        assert_eq!(task.attempt, 1, "round {round}: handed out once");
        let seen = app.get(&e.id).await;
        assert_eq!(workflow_of(&seen, "ship", "only").attempt, 1, "{seen:#?}");
        // Finish it so no expired lease offers it again in a later round.
        complete_task(&app.workers, &task.task_id, &task.lease_token, pb::TaskOutcome::Succeeded, "")
            .await
            .expect("complete");
        assert_eq!(status(&app.wait_final(&e.id).await), pb::ExecutionStatus::Succeeded);
    }
}

async fn completing_a_task_twice_with_the_same_lease_is_refused_the_second_time(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("deploy", vec![workflows("first", &q, &["w"]), workflows("second", &q, &["w"])]).await;
    let e = app.start(&p.id).await;
    let task = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(5)).await.expect("a task");
    assert_eq!(task.stage_name, "first");

    complete_task(&app.workers, &task.task_id, &task.lease_token, pb::TaskOutcome::Succeeded, "first report")
        .await
        .expect("the first report is accepted");
    let again =
        complete_task(&app.workers, &task.task_id, &task.lease_token, pb::TaskOutcome::Failed, "second report").await;
    let refused = assert_code(again, Code::FailedPrecondition);
    assert!(refused.message().contains("already ended"), "{refused:?}");

    let seen = app.get(&e.id).await;
    let w = workflow_of(&seen, "first", "w");
    assert_eq!(w.status, pb::WorkflowStatus::Succeeded as i32, "the second report changed nothing");
    assert_eq!(w.output, "first report");
    assert_eq!(stage_status(&seen, "first"), pb::StageStatus::Succeeded);
    assert_eq!(stage_status(&seen, "second"), pb::StageStatus::Running);
    assert_eq!(status(&seen), pb::ExecutionStatus::Running);

    // The same holds when the reports race: one of five is accepted.
    let task = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(5)).await.expect("the second task");
    assert_eq!(task.stage_name, "second");
    let reports: Vec<_> = (0..5)
        .map(|i| {
            let (client, task) = (app.workers.clone(), task.clone());
            tokio::spawn(async move {
                let output = format!("report {i}");
                complete_task(&client, &task.task_id, &task.lease_token, pb::TaskOutcome::Succeeded, &output).await
            })
        })
        .collect();
    let mut accepted = 0;
    for report in reports {
        match report.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(refused) => {
                assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
                assert!(refused.message().contains("already ended"), "{refused:?}");
            }
        }
    }
    assert_eq!(accepted, 1, "exactly one racing report is accepted");
    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{done:#?}");
}

async fn a_stale_lease_is_refused_once_the_task_was_offered_again(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("deploy", vec![workflows("ship", &q, &["w"])]).await;
    let e = app.start(&p.id).await;
    let old = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(5)).await.expect("a task");
    assert_eq!(old.attempt, 1);
    assert_eq!(old.lease_duration, prost_types::Duration::try_from(test_settings().lease).ok());

    // No heartbeat: the lease runs out and the task is offered again.
    let new = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(15)).await.expect("offered again");
    heartbeat(&app.workers, &new.task_id, &new.lease_token).await.expect("the new lease is held");
    assert_eq!(new.task_id, old.task_id, "the same task");
    assert_eq!(new.attempt, 2);
    assert_ne!(new.lease_token, old.lease_token, "a new lease token");

    let late = complete_task(&app.workers, &old.task_id, &old.lease_token, pb::TaskOutcome::Succeeded, "old").await;
    let refused = assert_code(late, Code::FailedPrecondition);
    assert!(refused.message().contains("stale"), "{refused:?}");
    assert_code(heartbeat(&app.workers, &old.task_id, &old.lease_token).await, Code::FailedPrecondition);

    let beat = heartbeat(&app.workers, &new.task_id, &new.lease_token).await.expect("the new lease is held");
    assert!(!beat.cancelled);
    complete_task(&app.workers, &new.task_id, &new.lease_token, pb::TaskOutcome::Succeeded, "new")
        .await
        .expect("the new lease reports");

    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{done:#?}");
    let w = workflow_of(&done, "ship", "w");
    assert_eq!((w.attempt, w.output.as_str()), (2, "new"));
    assert_code(heartbeat(&app.workers, &old.task_id, &old.lease_token).await, Code::FailedPrecondition);
}

async fn a_task_whose_leases_expire_max_attempts_times_fails_the_execution(app: TestApp) {
    let q = queue();
    let stages =
        vec![with_limits(workflows("ship", &q, &["w"]), Duration::from_secs(60), 2), workflows("after", &q, &["x"])];
    let p = app.create_pipeline("deploy", stages).await;
    let worker = app.worker(&q, |_| Script::Vanish);
    let e = app.start(&p.id).await;

    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Failed, "{done:#?}");
    assert!(done.status_message.contains("lease"), "{}", done.status_message);
    assert_eq!(stage_status(&done, "ship"), pb::StageStatus::Failed);
    assert_eq!(stage_status(&done, "after"), pb::StageStatus::NotRun);
    let w = workflow_of(&done, "ship", "w");
    assert_eq!(w.status, pb::WorkflowStatus::Failed as i32);
    assert_eq!(w.attempt, 2);
    assert!(w.status_message.contains("lease"), "{}", w.status_message);
    assert_eq!(worker.task_count(), 2, "offered once per attempt, never after");
}

async fn a_short_poll_on_an_empty_queue_returns_an_empty_response(app: TestApp) {
    let (q, elsewhere) = (queue(), queue());
    // Work on another queue must not be handed out on this one.
    let p = app.create_pipeline("deploy", vec![workflows("ship", &elsewhere, &["w"])]).await;
    app.start(&p.id).await;

    let wait = Duration::from_millis(300);
    let started = Instant::now();
    let response = app
        .workers
        .clone()
        .poll_task(pb::PollTaskRequest {
            task_queue: q,
            worker_id: "w".into(),
            wait: prost_types::Duration::try_from(wait).ok(),
        })
        .await
        .expect("poll")
        .into_inner();
    let elapsed = started.elapsed();
    assert!(response.task.is_none(), "{response:#?}");
    assert!(elapsed >= wait, "the poll waited for its wait: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "the short wait was honoured, not the 30 s default: {elapsed:?}");
}

async fn a_waiting_poll_receives_a_task_queued_after_it_started_waiting(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("deploy", vec![workflows("ship", &q, &["w"])]).await;
    let wait = Duration::from_secs(20);
    let started = Instant::now();
    let poll = tokio::spawn(poll_once(app.workers.clone(), q.clone(), wait));
    tokio::time::sleep(Duration::from_millis(300)).await; // the poll is now waiting on an empty queue
    assert!(!poll.is_finished(), "the poll waits while the queue is empty");

    let e = app.start(&p.id).await;
    let task = poll.await.unwrap().expect("the waiting poll receives the new task");
    let elapsed = started.elapsed();
    assert_eq!(task.execution_id, e.id);
    assert_eq!((task.stage_name.as_str(), task.workflow_name.as_str()), ("ship", "w"));
    assert!(elapsed < wait / 2, "the poll came back well before its wait ran out: {elapsed:?} of {wait:?}");
}

async fn bad_worker_requests_name_the_field_and_unknown_tasks_are_not_found(app: TestApp) {
    let mut w = app.workers.clone();
    let poll = |task_queue: &str, wait: Option<prost_types::Duration>| pb::PollTaskRequest {
        task_queue: task_queue.into(),
        worker_id: "w".into(),
        wait,
    };
    assert_invalid(w.poll_task(poll("", None)).await, "task_queue");
    assert_invalid(w.poll_task(poll("  ", None)).await, "task_queue");
    assert_invalid(w.poll_task(poll(&queue(), Some(prost_types::Duration { seconds: -1, nanos: 0 }))).await, "wait");

    let some_id = uuid::Uuid::new_v4().to_string();
    let token = uuid::Uuid::new_v4().to_string();
    assert_invalid(heartbeat(&w, "", &token).await, "task_id");
    assert_invalid(heartbeat(&w, &some_id, "").await, "lease_token");
    assert_invalid(heartbeat(&w, &some_id, "token").await, "lease_token");
    assert_invalid(heartbeat(&w, "task-1", &token).await, "task_id");
    assert_invalid(complete_task(&w, "", &token, pb::TaskOutcome::Succeeded, "").await, "task_id");
    assert_invalid(complete_task(&w, &some_id, "", pb::TaskOutcome::Succeeded, "").await, "lease_token");
    assert_invalid(complete_task(&w, &some_id, &token, pb::TaskOutcome::Unspecified, "").await, "outcome");
    let unknown_outcome = pb::CompleteTaskRequest {
        task_id: some_id.clone(),
        lease_token: token.clone(),
        outcome: 42,
        ..Default::default()
    };
    assert_invalid(w.complete_task(unknown_outcome).await, "outcome");

    let missing = uuid::Uuid::now_v7().to_string();
    let s = assert_code(heartbeat(&w, &missing, &token).await, Code::NotFound);
    assert!(s.message().contains(&missing), "{s:?}");
    let s = assert_code(complete_task(&w, &missing, &token, pb::TaskOutcome::Succeeded, "").await, Code::NotFound);
    assert!(s.message().contains(&missing), "{s:?}");
}

/// The reports of a stage's workflows arrive together and are committed
/// together (group commit); a stale report among them (a lease that is not
/// the task's) is refused on its own and costs the others nothing.
async fn reports_that_arrive_together_all_count_and_a_stale_one_is_refused_alone(app: TestApp) {
    let q = queue();
    let names: Vec<String> = (0..12).map(|i| format!("w{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let p = app.create_pipeline("together", vec![workflows("wide", &q, &names), workflows("next", &q, &["n"])]).await;
    let e = app.start(&p.id).await;
    let mut tasks = Vec::new();
    while tasks.len() < names.len() {
        tasks.push(poll_once(app.workers.clone(), q.clone(), Duration::from_secs(5)).await.expect("a task"));
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(tasks.len() + 1));
    let send = |task_id: String, token: String, output: String| {
        let (client, start) = (app.workers.clone(), start.clone());
        tokio::spawn(async move {
            start.wait().await;
            complete_task(&client, &task_id, &token, pb::TaskOutcome::Succeeded, &output).await
        })
    };
    let good: Vec<_> = tasks
        .iter()
        .map(|t| send(t.task_id.clone(), t.lease_token.clone(), format!("{} done", t.workflow_name)))
        .collect();
    let stale = send(tasks[3].task_id.clone(), uuid::Uuid::new_v4().to_string(), "not mine".into());
    for report in good {
        report.await.unwrap().expect("every report with its lease is accepted");
    }
    let refused = stale.await.unwrap().expect_err("a lease that is not the task's is refused");
    assert!(matches!(refused.code(), Code::FailedPrecondition | Code::NotFound), "{refused:?}");

    let seen = app.get(&e.id).await;
    for t in &tasks {
        let w = workflow_of(&seen, "wide", &t.workflow_name);
        assert_eq!(w.status, pb::WorkflowStatus::Succeeded as i32, "{}", t.workflow_name);
        assert_eq!(w.output, format!("{} done", t.workflow_name), "the stale report wrote nothing");
    }
    assert_eq!(stage_status(&seen, "wide"), pb::StageStatus::Succeeded);
    let next = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(5)).await.expect("the next stage's task");
    assert_eq!(next.stage_name, "next");
}

/// Reports that come together are recorded together (one statement on
/// PostgreSQL): every failure among them counts, the stage fails and
/// repeats one of them, and the next stage is never dispatched. Rounds go
/// on until reports were seen committed in groups.
async fn failures_reported_together_all_count_and_the_stage_names_one(app: TestApp) {
    let q = queue();
    let names = ["w0", "w1", "w2", "w3", "w4", "w5"];
    let failing = ["w1", "w4"];
    let p = app.create_pipeline("together", vec![workflows("wide", &q, &names), workflows("next", &q, &["n"])]).await;
    let grouped_before = app.engine.grouped_reports();
    for round in 0.. {
        let e = app.start(&p.id).await;
        let mut tasks = Vec::new();
        while tasks.len() < names.len() {
            tasks.push(poll_once(app.workers.clone(), q.clone(), Duration::from_secs(5)).await.expect("a task"));
        }
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(tasks.len()));
        let reports: Vec<_> = tasks
            .iter()
            .map(|t| {
                let fails = failing.contains(&t.workflow_name.as_str());
                let request = pb::CompleteTaskRequest {
                    task_id: t.task_id.clone(),
                    lease_token: t.lease_token.clone(),
                    outcome: if fails { pb::TaskOutcome::Failed } else { pb::TaskOutcome::Succeeded } as i32,
                    exit_code: if fails { 3 } else { 0 },
                    output: format!("{} out", t.workflow_name),
                    message: if fails { format!("{} broke", t.workflow_name) } else { String::new() },
                    ..Default::default()
                };
                let (mut client, start) = (app.workers.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    client.complete_task(request).await
                })
            })
            .collect();
        for report in reports {
            report.await.unwrap().unwrap_or_else(|e| panic!("round {round}: every report is accepted: {e:?}"));
        }
        let seen = app.wait_final(&e.id).await;
        assert_eq!(status(&seen), pb::ExecutionStatus::Failed, "round {round}: {seen:#?}");
        assert_eq!(stage_status(&seen, "wide"), pb::StageStatus::Failed);
        assert_eq!(stage_status(&seen, "next"), pb::StageStatus::NotRun, "round {round}: never dispatched");
        for name in names {
            let w = workflow_of(&seen, "wide", name);
            let expected =
                if failing.contains(&name) { pb::WorkflowStatus::Failed } else { pb::WorkflowStatus::Succeeded };
            assert_eq!(w.status, expected as i32, "round {round}: {name}");
            assert_eq!(w.output, format!("{name} out"));
        }
        let wide = seen.stages.iter().find(|s| s.name == "wide").expect("stage wide");
        assert!(
            failing.iter().any(|f| wide.status_message.contains(&format!("{f} broke"))),
            "round {round}: the stage repeats one of its failures: {:?}",
            wide.status_message
        );
        if round >= 2 && app.engine.grouped_reports() > grouped_before {
            return;
        }
        assert!(round < 30, "no reports were committed together in 30 rounds");
    }
}

/// CompleteTask with `next_task_queue`, as a worker that wants more.
async fn complete_asking(
    client: &WorkerServiceClient<Channel>,
    task: &pb::Task,
    lease_token: &str,
    next_queue: &str,
) -> Result<pb::CompleteTaskResponse, tonic::Status> {
    let request = pb::CompleteTaskRequest {
        task_id: task.task_id.clone(),
        lease_token: lease_token.into(),
        outcome: pb::TaskOutcome::Succeeded as i32,
        output: format!("{} done", task.workflow_name),
        next_task_queue: next_queue.into(),
        worker_id: "eager".into(),
        ..Default::default()
    };
    client.clone().complete_task(request).await.map(tonic::Response::into_inner)
}

/// The report that ends a stage dispatches the next one in its own
/// transaction; a reporter that asked for more is leased a task there and
/// gets it with the answer, without a PollTask. The lease it holds is real:
/// it heartbeats and reports like any other.
async fn a_report_that_ends_a_stage_hands_its_worker_the_next_task(app: TestApp) {
    let q = queue();
    let stages = vec![workflows("build", &q, &["b"]), workflows("test", &q, &["t"]), workflows("ship", &q, &["s"])];
    let p = app.create_pipeline("eager", stages).await;
    let e = app.start(&p.id).await;
    let mut task = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(5)).await.expect("the first task");
    for next_stage in ["test", "ship"] {
        let answer = complete_asking(&app.workers, &task, &task.lease_token, &q).await.expect("report accepted");
        let next = answer.next_task.expect("the next stage's task comes with the answer");
        assert_eq!((next.execution_id.as_str(), next.stage_name.as_str()), (e.id.as_str(), next_stage));
        assert!(next.lease_duration.is_some() && !next.lease_token.is_empty(), "{next:?}");
        assert!(next.environment.contains_key("REPRISE_EXECUTION_ID"), "{next:?}");
        heartbeat(&app.workers, &next.task_id, &next.lease_token).await.expect("the lease is held");
        let seen = app.get(&e.id).await;
        assert_eq!(workflow_of(&seen, next_stage, &next.workflow_name).status, pb::WorkflowStatus::Running as i32);
        task = next;
    }
    let last = complete_asking(&app.workers, &task, &task.lease_token, &q).await.expect("report accepted");
    assert!(last.next_task.is_none(), "the execution is done: nothing to hand");
    let done = app.wait_final(&e.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
    for (stage, workflow) in [("build", "b"), ("test", "t"), ("ship", "s")] {
        let w = workflow_of(&done, stage, workflow);
        assert_eq!((w.attempt, w.output.as_str()), (1, format!("{workflow} done").as_str()), "{stage}");
    }
}

/// A report that dispatches nothing answers at once with no task (the
/// server does not hold it open waiting for work); a worker parked in
/// PollTask is served before a reporter, and nobody gets the task twice.
async fn a_report_asking_for_more_gets_nothing_when_nothing_is_dispatched(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("pair", vec![workflows("both", &q, &["a", "b"]), workflows("after", &q, &["c"])]).await;
    let e = app.start(&p.id).await;
    let a = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(5)).await.expect("task a");
    let b = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(5)).await.expect("task b");
    let started = Instant::now();
    let first = complete_asking(&app.workers, &a, &a.lease_token, &q).await.expect("report accepted");
    assert!(first.next_task.is_none(), "its sibling still runs: nothing was dispatched");
    assert!(started.elapsed() < Duration::from_secs(5), "answered without waiting for work");
    let parked = tokio::spawn(poll_once(app.workers.clone(), q.clone(), Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(200)).await; // let the poller park
    let second = complete_asking(&app.workers, &b, &b.lease_token, &q).await.expect("report accepted");
    let parked = parked.await.unwrap();
    let got: Vec<pb::Task> = second.next_task.into_iter().chain(parked).collect();
    assert_eq!(got.len(), 1, "the next stage's one task went to exactly one worker: {got:#?}");
    assert_eq!(got[0].stage_name, "after");
    complete_task(&app.workers, &got[0].task_id, &got[0].lease_token, pb::TaskOutcome::Succeeded, "")
        .await
        .expect("its holder reports it");
    assert_eq!(status(&app.wait_final(&e.id).await), pb::ExecutionStatus::Succeeded);
    assert_eq!(workflow_of(&app.get(&e.id).await, "after", "c").attempt, 1, "handed out once");

    // The queue asked for is checked like PollTask's, and a bad one
    // refuses the report before anything is written.
    let c = pb::Task { workflow_name: "c".into(), ..got[0].clone() };
    let refused = complete_asking(&app.workers, &c, &c.lease_token, "bad\0queue").await;
    assert_invalid(refused, "next_task_queue");
}

/// A refused report (here: a lease that is not the task's) that asked for
/// more, sent with the report that ends the stage, is never leased the next
/// stage's task: the task reaches a worker at once, not when a lease held
/// by nobody runs out. Several rounds, as the two reports meet in one
/// group commit or not.
async fn a_refused_report_asking_for_more_leaves_the_next_task_to_others(app: TestApp) {
    // Leases long enough that a task kept by a refused report would not come
    // back within the poll below.
    let app = app.restart_with(reprise::engine::Settings { lease: Duration::from_secs(120), ..test_settings() }).await;
    let q = queue();
    let p = app.create_pipeline("race", vec![workflows("pair", &q, &["a", "b"]), workflows("after", &q, &["c"])]).await;
    for round in 0..6 {
        let e = app.start(&p.id).await;
        let a = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(5)).await.expect("task a");
        let b = poll_once(app.workers.clone(), q.clone(), Duration::from_secs(5)).await.expect("task b");
        complete_task(&app.workers, &a.task_id, &a.lease_token, pb::TaskOutcome::Succeeded, "").await.expect("a");
        let forged = uuid::Uuid::new_v4().to_string();
        let (good, bad) = tokio::join!(
            complete_asking(&app.workers, &b, &b.lease_token, &q),
            complete_asking(&app.workers, &a, &forged, &q),
        );
        let good = good.expect("b's report is accepted");
        let refused = bad.expect_err("a report under a lease that is not the task's");
        assert!(matches!(refused.code(), Code::FailedPrecondition), "round {round}: {refused:?}");
        let next = match good.next_task {
            Some(task) => task,
            None => poll_once(app.workers.clone(), q.clone(), Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("round {round}: the next stage's task is held by nobody")),
        };
        assert_eq!((next.execution_id.as_str(), next.stage_name.as_str()), (e.id.as_str(), "after"));
        complete_task(&app.workers, &next.task_id, &next.lease_token, pb::TaskOutcome::Succeeded, "")
            .await
            .expect("its holder reports it");
        assert_eq!(status(&app.wait_final(&e.id).await), pb::ExecutionStatus::Succeeded);
    }
}
