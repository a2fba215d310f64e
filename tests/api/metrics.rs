//! The Prometheus endpoint reports what the service did.

use std::{sync::OnceLock, time::Duration};

use reprise::proto as pb;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::*;

crate::on_both_backends!(the_metrics_endpoint_counts_rpcs_transitions_and_resumes, an_idle_server_sends_no_statement);

/// The recorder is global to the process: install it once, on a runtime of
/// its own that outlives each test's runtime.
fn metrics_address() -> &'static str {
    static ADDRESS: OnceLock<String> = OnceLock::new();
    ADDRESS.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address = format!("127.0.0.1:{port}");
        let (ready, installed) = std::sync::mpsc::channel();
        let listen = address.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            runtime.block_on(async move {
                ready.send(reprise::metrics::install(listen.parse().unwrap()).map_err(|e| e.to_string())).unwrap();
                std::future::pending::<()>().await
            });
        });
        installed.recv().unwrap().expect("install metrics");
        address
    })
}

async fn scrape(address: &str) -> String {
    let mut stream = TcpStream::connect(address).await.expect("metrics endpoint");
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

async fn the_metrics_endpoint_counts_rpcs_transitions_and_resumes(app: TestApp) {
    let address = metrics_address();
    let q = queue();
    let p = app.create_pipeline("metered", vec![workflows("one", &q, &["a"]), workflows("two", &q, &["b"])]).await;
    let _worker = app.worker(&q, |t| {
        if t.stage_name == "two" { Script::Fail(Duration::ZERO) } else { Script::Succeed(Duration::ZERO) }
    });
    let e = app.start(&p.id).await;
    app.wait_final(&e.id).await;
    let resume = pb::ResumeRequest {
        execution_id: e.id.clone(),
        from_stage: Some(pb::resume_request::FromStage::StageName("two".into())),
        ..Default::default()
    };
    app.executions.clone().resume(resume).await.expect("resume");
    let missing_id = uuid::Uuid::now_v7().to_string();
    let missing = pb::GetExecutionRequest { execution_id: missing_id.clone(), ..Default::default() };
    assert!(app.executions.clone().get_execution(missing).await.is_err());
    // A stream's status is its last word: the watch of an ended execution
    // ends OK after its messages; the watch of a missing one fails.
    let watch = |id: &str| pb::WatchExecutionRequest { execution_id: id.into() };
    let mut stream = app.executions.clone().watch_execution(watch(&e.id)).await.expect("watch").into_inner();
    while stream.message().await.expect("watch message").is_some() {}
    let failed = match app.executions.clone().watch_execution(watch(&missing_id)).await {
        Ok(response) => response.into_inner().message().await.err(),
        Err(status) => Some(status),
    };
    assert_eq!(failed.map(|s| s.code()), Some(tonic::Code::NotFound));
    // A watcher that hangs up mid-stream is counted as cancelled, not as the
    // OK its response headers implied.
    let held = app.create_pipeline("held", vec![approval("gate", Duration::from_secs(600))]).await;
    let waiting = app.start(&held.id).await;
    let mut stream = app.executions.clone().watch_execution(watch(&waiting.id)).await.expect("watch").into_inner();
    stream.message().await.expect("first watch message");
    drop(stream);
    let cancelled =
        r#"reprise_rpc_requests_total{method="/reprise.v1.ExecutionService/WatchExecution",code="CANCELLED"}"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !scrape(address).await.contains(cancelled) {
        assert!(tokio::time::Instant::now() < deadline, "no {cancelled} after the watcher hung up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let text = scrape(address).await;
    for expected in [
        r#"reprise_rpc_requests_total{method="/reprise.v1.ExecutionService/StartExecution",code="OK"}"#,
        r#"reprise_rpc_requests_total{method="/reprise.v1.ExecutionService/GetExecution",code="NOT_FOUND"}"#,
        r#"reprise_rpc_requests_total{method="/reprise.v1.ExecutionService/WatchExecution",code="OK"}"#,
        r#"reprise_rpc_requests_total{method="/reprise.v1.ExecutionService/WatchExecution",code="NOT_FOUND"}"#,
        r#"reprise_rpc_duration_seconds_bucket{method="/reprise.v1.WorkerService/CompleteTask""#,
        "reprise_stage_transition_seconds_count",
        "reprise_resumes_total",
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    if app.backend == Backend::Sqlite {
        for expected in ["reprise_sqlite_commits_total", "reprise_sqlite_units_committed_total"] {
            assert!(text.contains(expected), "missing {expected} in:\n{text}");
        }
    }
}

/// Nothing due, nothing sent: with workers parked in PollTask, the metrics
/// sampler on and the health watcher running, an idle server does not
/// touch the database (no timer polls, no health probe, no sample of an
/// unchanged store).
async fn an_idle_server_sends_no_statement(app: TestApp) {
    let q = queue();
    let p = app.create_pipeline("idle", vec![workflows("one", &q, &["a", "b"])]).await;
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::ZERO));
    let options =
        reprise::server::ServeOptions { metrics_sampling: Some(Duration::from_millis(100)), ..Default::default() };
    let (_address, _engine, stop) = app.secured(options).await;
    let e = app.start(&p.id).await;
    app.wait_final(&e.id).await;
    // The last lease granted ends within the lease (1.5 s here): the timer
    // may look once when it would have expired.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let store = app.engine.store();
    let before = store.statements();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = store.statements() - before;
    stop.cancel();
    assert_eq!(sent, 0, "an idle server sent {sent} statements in 3 s");
}
