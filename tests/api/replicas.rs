//! Several servers on one database, as replicas in production.

use std::time::Duration;

use reprise::{engine::Settings, proto as pb};
use tokio::time::Instant;

use crate::helpers::*;

crate::on_both_backends!(replicas_share_the_work_and_hand_each_task_out_once, a_poller_on_one_replica_wakes_when_another_queues_a_task);

async fn replicas_share_the_work_and_hand_each_task_out_once(app: TestApp) {
    let q = queue();
    let replica = app.replica(test_settings()).await;
    let p = app.create_pipeline("fan", vec![workflows("one", &q, &["a", "b", "c", "d"]), workflows("two", &q, &["e", "f"])]).await;
    let on_first = app.worker(&q, |_| Script::Succeed(Duration::from_millis(20)));
    let on_second = replica.worker(&q, |_| Script::Succeed(Duration::from_millis(20)));
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(app.start(&p.id).await.id);
    }
    for id in &ids {
        let done = replica.wait_final(id).await;
        assert_eq!(status(&done), pb::ExecutionStatus::Succeeded);
        assert!(done.stages.iter().flat_map(|s| &s.workflows).all(|w| w.attempt == 1), "no task was handed out twice");
    }
    assert_eq!(on_first.task_count() + on_second.task_count(), 6 * 6);
}

async fn a_poller_on_one_replica_wakes_when_another_queues_a_task(app: TestApp) {
    if app.backend == Backend::Sqlite {
        return; // one process per SQLite file: there is no other replica to notify
    }
    let slow = Settings { recheck: Duration::from_secs(20), ..test_settings() };
    let replica = app.replica(slow).await;
    let q = queue();
    let p = app.create_pipeline("wake", vec![workflows("one", &q, &["a"])]).await;
    let mut workers = replica.workers.clone();
    let poll = tokio::spawn(async move {
        let request = pb::PollTaskRequest { task_queue: q, worker_id: "w".into(), wait: Some(prost_types::Duration { seconds: 15, nanos: 0 }) };
        let task = workers.poll_task(request).await.expect("poll").into_inner().task;
        (task, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // let the poll start waiting
    let queued_at = Instant::now();
    app.start(&p.id).await;
    let (task, received_at) = poll.await.unwrap();
    assert!(task.is_some(), "the waiting poll on the other replica got the task");
    assert!(received_at - queued_at < Duration::from_secs(10), "woken by notification, not by the 20 s recheck");
}
