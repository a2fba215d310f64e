//! A PostgreSQL server that stops mid-run, on a private instance the test
//! starts and stops itself: calls fail fast with UNAVAILABLE while it is
//! away, readiness says so, and once it is back nothing acknowledged is lost
//! and every execution goes on.

use std::{path::PathBuf, process::Command, time::Duration};

use reprise::proto as pb;
use tokio::time::Instant;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::*;

/// A PostgreSQL instance of the test's own, in a temp directory.
struct Private {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl Private {
    /// None when no PostgreSQL binaries are installed (then the test says so).
    fn start() -> Option<Private> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists())?;
        let dir = tempfile::tempdir().expect("temp dir");
        // initdb refuses to run as root: hand the directory to `postgres`.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            let status =
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().expect("chown");
            assert!(status.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let p = Private { bin, dir, port, as_postgres };
        let data = p.data();
        p.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        p.up();
        Some(p)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let tool = self.bin.join(tool);
        let output = if self.as_postgres {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&tool).args(args).output()
        } else {
            Command::new(&tool).args(args).output()
        }
        .expect("run a PostgreSQL tool");
        assert!(output.status.success(), "{} {args:?}: {}", tool.display(), String::from_utf8_lossy(&output.stderr));
    }

    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-o", &options, "-w", "-l", &format!("{}/log", self.dir.path().display()), "start"],
        );
    }

    /// Stops at once, as a crash or an operator's immediate shutdown would.
    fn down(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let data = self.data();
        let _ = Command::new(if self.as_postgres { "runuser" } else { "true" })
            .args(if self.as_postgres { vec!["-u", "postgres", "--"] } else { vec![] })
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

async fn readiness(app: &TestApp) -> i32 {
    let mut health = HealthClient::new(app.channel.clone());
    health.check(HealthCheckRequest { service: String::new() }).await.expect("health").into_inner().status
}

async fn wait_readiness(app: &TestApp, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while readiness(app).await != want as i32 {
        assert!(Instant::now() < deadline, "readiness never became {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_outage_fails_fast_and_loses_nothing() {
    let Some(pg) = Private::start() else {
        assert!(
            std::env::var("REPRISE_TEST_REQUIRE_POSTGRES").is_err(),
            "no PostgreSQL binaries to start a private instance"
        );
        eprintln!("skipped: no PostgreSQL binaries under /usr/lib/postgresql");
        return;
    };
    let app = TestApp::on_url(Backend::Postgres, &pg.url(), test_settings()).await;
    let q = queue();
    let stages = vec![workflows("one", &q, &["a", "b"]), workflows("two", &q, &["c"]), workflows("three", &q, &["d"])];
    let p = app.create_pipeline("outage", stages).await;
    let _worker = app.worker(&q, |_| Script::Succeed(Duration::from_millis(300)));
    let mut started = Vec::new();
    for i in 0..4 {
        let request = pb::StartExecutionRequest {
            pipeline_id: p.id.clone(),
            request_id: format!("before-{i}"),
            ..Default::default()
        };
        started.push(
            app.executions.clone().start_execution(request).await.expect("start").into_inner().execution.unwrap().id,
        );
    }

    pg.down();
    wait_readiness(&app, ServingStatus::NotServing).await;
    // Known to be down: calls answer at once, and say a retry may succeed.
    for _ in 0..3 {
        let asked = Instant::now();
        let request = pb::GetExecutionRequest { execution_id: started[0].clone(), ..Default::default() };
        let refused = app.executions.clone().get_execution(request).await.expect_err("the database is down");
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(asked.elapsed() < Duration::from_secs(1), "answered in {:?}, not at once", asked.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    pg.up();
    wait_readiness(&app, ServingStatus::Serving).await;
    for i in 0..2 {
        let request = pb::StartExecutionRequest {
            pipeline_id: p.id.clone(),
            request_id: format!("after-{i}"),
            ..Default::default()
        };
        started.push(
            app.executions
                .clone()
                .start_execution(request)
                .await
                .expect("start again")
                .into_inner()
                .execution
                .unwrap()
                .id,
        );
    }
    for id in &started {
        let done = app.wait_final(id).await;
        assert_eq!(status(&done), pb::ExecutionStatus::Succeeded, "{done:#?}");
        for w in done.stages.iter().flat_map(|s| &s.workflows) {
            assert!(w.attempt <= 2, "a task ran more than once more than its lost lease explains: {w:#?}");
        }
    }
}
