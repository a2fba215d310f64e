//! How the server behaves for operators: its log format and escape codes,
//! and trace export to a collector that is not there. Server processes of
//! their own (the process-wide logging set-up is what is tested).

use std::time::Duration;

use reprise::proto::{self as pb, pipeline_service_client::PipelineServiceClient};

use crate::isolation::Process;

/// `reprise dev` on a SQLite file of `dir`, with these flags and variables.
async fn dev(dir: &tempfile::TempDir, flags: &[&str], env: &[(&str, &str)]) -> Process {
    let url = format!("sqlite://{}", dir.path().join("reprise.db").display());
    let mut args = vec!["dev", "--database-url", url.as_str()];
    args.extend_from_slice(flags);
    Process::start(&args, env, false).await
}

/// A few calls, each a span of its own.
async fn some_calls(process: &Process, n: usize) {
    let mut client = PipelineServiceClient::new(process.channel.clone());
    for _ in 0..n {
        let _ = client.list_pipelines(pb::ListPipelinesRequest::default()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn text_logs_to_a_file_have_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let process = dev(&dir, &[], &[]).await;
    some_calls(&process, 1).await;
    let log = process.log();
    assert!(log.contains("AUTHENTICATION IS OFF"), "{log}");
    assert!(!log.contains('\x1b'), "no ANSI codes into a file: {log:?}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let process = dev(&dir, &["--log-format", "json"], &[]).await;
    some_calls(&process, 1).await;
    let log = process.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "{log}");
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["level"].is_string() && value["message"].is_string(), "{line}");
    }
    assert!(log.contains("AUTHENTICATION IS OFF"), "{log}");
}

#[tokio::test]
async fn an_unreachable_collector_is_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard) refuses; batches every 100 ms, so many of them fail.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
        ("RUST_LOG", "info"),
    ];
    let process = dev(&dir, &[], &env).await;
    some_calls(&process, 20).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = process.log();
    assert!(
        log.contains("exporting traces over OTLP") && log.contains("127.0.0.1:9"),
        "the standard variable is read: {log}"
    );
    assert_eq!(log.matches("cannot export traces").count(), 1, "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

#[tokio::test]
async fn a_port_in_use_is_named_before_anything_else_happens() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    // The database is never reached: the port is bound first.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_reprise"))
        .args(["serve", "--insecure-no-auth", "--listen", &address])
        .args(["--database-url", &format!("sqlite://{}", dir.path().join("r.db").display())])
        .env("RUST_BACKTRACE", "0")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("cannot listen on {address}")), "{stderr}");
    assert!(!dir.path().join("r.db").exists(), "no migration ran: {stderr}");
}
