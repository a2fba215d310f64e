//! Scale-out: three `reprise serve` processes on one PostgreSQL database,
//! workers attached to different ones, one process killed with SIGKILL in
//! the middle of several executions.

use std::{collections::HashMap, process::Stdio, sync::Arc, time::Duration};

use reprise::proto::{
    self as pb, execution_service_client::ExecutionServiceClient, worker_service_client::WorkerServiceClient,
};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::helpers::*;

crate::on_both_backends!(three_processes_finish_every_execution_when_one_is_killed);

/// A `reprise serve` child process; killed when dropped.
struct Process {
    child: Child,
    channel: Channel,
}

async fn spawn_server(database_url: &str) -> Process {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_reprise"))
        .args(["serve", "--insecure-no-auth", "--lease", "2s", "--recheck", "200ms"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // From the environment: a URL with a password is refused on the command line.
        .env("REPRISE_DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start reprise serve");
    let endpoint = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    for _ in 0..200 {
        if let Ok(channel) = endpoint.connect().await {
            return Process { child, channel };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("reprise serve on port {port} did not come up");
}

async fn three_processes_finish_every_execution_when_one_is_killed(app: TestApp) {
    if app.backend == Backend::Sqlite {
        return; // several server processes share PostgreSQL, not a SQLite file
    }
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(spawn_server(app.db_url()).await);
    }
    let q = queue();
    let stages = vec![
        workflows("one", &q, &["a", "b", "c"]),
        workflows("two", &q, &["d", "e", "f"]),
        workflows("three", &q, &["g"]),
    ];
    let p = app.create_pipeline("scale", stages).await;

    let slow: ScriptFn = Arc::new(|_| Script::Succeed(Duration::from_millis(300)));
    let workers: Vec<TestWorker> = servers
        .iter()
        .map(|s| TestWorker::start(WorkerServiceClient::new(s.channel.clone()), &q, slow.clone()))
        .collect();

    let mut first = ExecutionServiceClient::new(servers[0].channel.clone());
    let mut ids = Vec::new();
    for i in 0..6 {
        let request = pb::StartExecutionRequest {
            pipeline_id: p.id.clone(),
            request_id: format!("scale-{i}"),
            ..Default::default()
        };
        ids.push(first.start_execution(request).await.expect("start").into_inner().execution.unwrap().id);
    }
    // Kill the third process once work is under way everywhere.
    app.wait_until(&ids[5], |e| e.stages[0].workflows.iter().any(|w| w.status != pb::WorkflowStatus::Queued as i32))
        .await;
    let mut victim = servers.pop().unwrap();
    victim.child.kill().await.expect("SIGKILL");

    for id in &ids {
        let done = app.wait_final(id).await;
        assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{done:#?}");
        for stage in &done.stages {
            for w in &stage.workflows {
                assert_eq!(w.status, pb::WorkflowStatus::Succeeded as i32);
            }
        }
    }

    // Each workflow ran once, except tasks whose lease expired with the dead
    // process: those were handed out again, and their first lease came from it.
    let mut handed: HashMap<String, Vec<(usize, i32)>> = HashMap::new();
    for (worker_index, worker) in workers.iter().enumerate() {
        for task in &worker.seen.lock().unwrap().tasks {
            handed.entry(task.task_id.clone()).or_default().push((worker_index, task.attempt));
        }
    }
    let mut repeated = 0;
    for (task, mut leases) in handed {
        leases.sort_by_key(|(_, attempt)| *attempt);
        if leases.len() > 1 {
            repeated += 1;
            assert_eq!(
                leases[0].0, 2,
                "task {task} was handed out again although its first worker's server lived: {leases:?}"
            );
        }
        assert!(leases.len() <= 2, "task {task} handed out {} times", leases.len());
    }
    eprintln!("tasks re-offered after the kill: {repeated}");
}
