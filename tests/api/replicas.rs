//! Several servers on one database, as replicas in production.

use std::time::Duration;

use reprise::{engine::Settings, proto as pb};
use tokio::time::Instant;

use crate::helpers::*;

crate::on_both_backends!(
    replicas_share_the_work_and_hand_each_task_out_once,
    a_poller_on_one_replica_wakes_when_another_queues_a_task,
    replicas_starting_together_on_a_new_database_all_come_up,
    health_reports_readiness_and_liveness,
    readiness_follows_the_database_and_liveness_does_not,
);

async fn replicas_share_the_work_and_hand_each_task_out_once(app: TestApp) {
    if app.backend == Backend::Sqlite {
        return; // one process per SQLite file: replicas need PostgreSQL
    }
    let q = queue();
    let replica = app.replica(test_settings()).await;
    let p = app
        .create_pipeline("fan", vec![workflows("one", &q, &["a", "b", "c", "d"]), workflows("two", &q, &["e", "f"])])
        .await;
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
        let request = pb::PollTaskRequest {
            task_queue: q,
            worker_id: "w".into(),
            wait: Some(prost_types::Duration { seconds: 15, nanos: 0 }),
        };
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

async fn replicas_starting_together_on_a_new_database_all_come_up(app: TestApp) {
    if app.backend == Backend::Sqlite {
        return; // one process per SQLite file
    }
    use sea_orm::{ConnectionTrait, Database};
    let admin_url = std::env::var(POSTGRES_ENV).unwrap();
    let admin = Database::connect(&admin_url).await.unwrap();
    let name = format!("reprise_m_{}", uuid::Uuid::new_v4().simple());
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
    let url = app.db_url().rsplit_once('/').map(|(base, _)| format!("{base}/{name}")).unwrap();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { reprise::store::connect(&url).await })
        })
        .collect();
    let mut failures = Vec::new();
    for start in starts {
        if let Err(e) = start.await.unwrap() {
            failures.push(e.to_string());
        }
    }
    admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.ok();
    assert!(failures.is_empty(), "every replica migrates or finds the migrations done: {failures:?}");
}

async fn health_reports_readiness_and_liveness(app: TestApp) {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", "reprise.v1.ExecutionService", "reprise.v1.AccessService", reprise::server::LIVENESS] {
        let status =
            health.check(HealthCheckRequest { service: service.into() }).await.expect("health").into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}

async fn readiness_follows_the_database_and_liveness_does_not(app: TestApp) {
    if app.backend == Backend::Sqlite {
        return; // an embedded file that is open cannot become unreachable
    }
    use sea_orm::{ConnectionTrait, Database};
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let admin = Database::connect(&std::env::var(POSTGRES_ENV).unwrap()).await.unwrap();
    let name = app.db_url().rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
    let mut health = HealthClient::new(app.channel.clone());
    let mut wait_for = async |service: &str, want: ServingStatus| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status =
                health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status;
            if status == want as i32 {
                return;
            }
            assert!(Instant::now() < deadline, "{service:?} never became {want:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };

    // The database refuses new connections and drops the server's.
    admin.execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await.unwrap();
    let kill = format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'");
    admin.execute_unprepared(&kill).await.unwrap();
    wait_for("", ServingStatus::NotServing).await;
    wait_for("reprise.v1.ExecutionService", ServingStatus::NotServing).await;
    wait_for(reprise::server::LIVENESS, ServingStatus::Serving).await;

    admin.execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await.unwrap();
    wait_for("", ServingStatus::Serving).await;
    let q = queue();
    let p = app.create_pipeline("after-outage", vec![workflows("one", &q, &["a"])]).await;
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let done = app.wait_final(&app.start(&p.id).await.id).await;
    assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "the server works again once the database is back");
}
