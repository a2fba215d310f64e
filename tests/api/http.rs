//! The API over plain HTTP on the gRPC port, with requests shaped as curl
//! sends them (HTTP/1.1, a JSON body): Connect unary calls, a Connect server
//! stream, grpc-web, the console's files, CORS. Each request is written out
//! on a raw socket, so what is tested is exactly what a curl user sends:
//!
//! ```sh
//! curl -H 'Content-Type: application/json' -d '{"executionId":"…"}' \
//!   http://127.0.0.1:50051/reprise.v1.ExecutionService/GetExecution
//! ```

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{EncodingKey, Header, encode};
use prost::Message as _;
use reprise::{
    auth::{Authenticator, JwtConfig, Verifier},
    proto as pb,
    server::ServeOptions,
    web::WebArgs,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::*;

crate::on_both_backends!(
    a_read_over_json_is_the_grpc_answer_in_proto3_json,
    a_resume_over_json_previews_then_creates_once,
    an_error_keeps_its_grpc_code_and_details,
    an_unauthenticated_call_is_refused_and_permissions_are_the_grpc_ones,
    a_watch_streams_over_connect_and_grpc_web_works,
    allowed_actions_follow_the_state,
);

const SECRET: &str = "http-test-secret-http-test-secret!!";

/// An answer as read off the socket.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request, as curl writes it, and the whole answer (the
/// connection closes after it).
async fn http(address: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let address = address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw)).await.expect("answer in time").unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let text = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Answer { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&data[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 4 + size..];
    }
}

/// `curl -H 'Content-Type: application/json' -d BODY http://ADDRESS/SERVICE/METHOD`
async fn post_json(address: &str, method: &str, body: Value, token: Option<&str>) -> Answer {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &authorization {
        headers.push(("Authorization", a.as_str()));
    }
    http(address, "POST", &format!("/reprise.v1.{method}"), &headers, body.to_string().as_bytes()).await
}

/// A pipeline whose second stage runs two workflows in parallel, one of
/// which ("db") fails the first time, then a third stage; started and run
/// until it fails. The worker goes on serving the queue (for resumes) as
/// long as the caller keeps it.
async fn failed_execution(app: &TestApp) -> (pb::Execution, TestWorker) {
    let q = queue();
    let pipeline = app
        .create_pipeline(
            "web",
            vec![
                workflows("build", &q, &["compile"]),
                workflows("deploy", &q, &["web", "db"]),
                workflows("verify", &q, &["smoke"]),
            ],
        )
        .await;
    let failed_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = app.worker(&q, move |t| {
        if t.workflow_name == "db" && !failed_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Script::Fail(Duration::ZERO)
        } else {
            Script::Succeed(Duration::ZERO)
        }
    });
    let e = app.start(&pipeline.id).await;
    let e = app.wait_final(&e.id).await;
    assert_eq!(status(&e), pb::ExecutionStatus::Failed);
    (e, worker)
}

async fn a_read_over_json_is_the_grpc_answer_in_proto3_json(app: TestApp) {
    let (e, _worker) = failed_execution(&app).await;
    let answer = post_json(&app.address, "ExecutionService/GetExecution", json!({ "executionId": e.id }), None).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let body = answer.json();
    let execution = &body["execution"];
    assert_eq!(execution["id"], e.id);
    assert_eq!(execution["status"], "EXECUTION_STATUS_FAILED");
    assert_eq!(execution["stages"][1]["name"], "deploy");
    assert_eq!(execution["stages"][1]["status"], "STAGE_STATUS_FAILED");
    assert_eq!(execution["stages"][1]["resumePoint"]["resumable"], true);
    assert_eq!(execution["stages"][2]["resumePoint"]["block"], "ERROR_REASON_STAGE_NOT_REACHED");
    // The same answer as over gRPC, field for field.
    let grpc = app
        .executions
        .clone()
        .get_execution(pb::GetExecutionRequest { execution_id: e.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let from_json = serde_json::from_value::<Value>(body.clone()).unwrap();
    assert_eq!(from_json["allowedActions"].as_array().unwrap().len(), grpc.allowed_actions.len());
    // What the caller may do: resume and nothing else, and why not.
    let actions: Vec<(String, bool, String)> = body["allowedActions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_owned(),
                a["allowed"].as_bool().unwrap_or(false),
                a["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(actions.contains(&("EXECUTION_ACTION_RESUME".into(), true, String::new())), "{actions:?}");
    assert!(actions.contains(&("EXECUTION_ACTION_ABORT".into(), false, "EXECUTION_FINISHED".into())), "{actions:?}");
    assert!(actions.contains(&("EXECUTION_ACTION_APPROVE".into(), false, "EXECUTION_FINISHED".into())), "{actions:?}");
    // A list, with snake_case field names accepted as well as camelCase.
    let list = post_json(&app.address, "ExecutionService/ListExecutions", json!({ "page_size": 10 }), None).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["executions"][0]["id"], e.id);
    // An empty body is the empty message.
    let health =
        http(&app.address, "POST", "/grpc.health.v1.Health/Check", &[("Content-Type", "application/json")], b"").await;
    assert_eq!(health.json(), json!({ "status": "SERVING" }));
}

async fn a_resume_over_json_previews_then_creates_once(app: TestApp) {
    let (e, _worker) = failed_execution(&app).await;
    let preview = post_json(
        &app.address,
        "ExecutionService/Resume",
        json!({ "executionId": e.id, "stageName": "deploy", "validateOnly": true }),
        None,
    )
    .await;
    assert_eq!(preview.status, 200, "{}", String::from_utf8_lossy(&preview.body));
    let plan = preview.json();
    assert!(plan.get("execution").is_none(), "validate_only creates nothing: {plan}");
    let actions: Vec<&str> = plan["plan"].as_array().unwrap().iter().map(|p| p["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["PLANNED_ACTION_CARRY_OVER", "PLANNED_ACTION_RUN", "PLANNED_ACTION_RUN"]);
    assert_eq!(plan["plan"][1]["workflows"], json!(["web", "db"]));

    // By index 1 (the same stage), with a request id: a retry returns the same execution.
    let body =
        json!({ "executionId": e.id, "stageIndex": 1, "requestId": "http-resume-1", "reason": "db migration fixed" });
    let first = post_json(&app.address, "ExecutionService/Resume", body.clone(), None).await;
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    let created = first.json()["execution"]["id"].as_str().unwrap().to_owned();
    let again = post_json(&app.address, "ExecutionService/Resume", body, None).await;
    assert_eq!(again.json()["execution"]["id"], created.as_str());
    let resumed = app.wait_final(&created).await;
    assert_eq!(status(&resumed), pb::ExecutionStatus::Succeeded);
    assert_eq!(resumed.resumed_from.as_ref().unwrap().reason, "db migration fixed");
    // Stage index 0 travels in a oneof: it must arrive as index 0, not "unset".
    let refused = post_json(
        &app.address,
        "ExecutionService/Resume",
        json!({ "executionId": created, "stageIndex": 0, "validateOnly": true }),
        None,
    )
    .await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["code"], "failed_precondition", "a SUCCEEDED execution cannot be resumed");
}

async fn an_error_keeps_its_grpc_code_and_details(app: TestApp) {
    // INVALID_ARGUMENT with BadRequest naming the field.
    let bad = post_json(&app.address, "ExecutionService/GetExecution", json!({ "executionId": "nope" }), None).await;
    assert_eq!(bad.status, 400);
    let error = bad.json();
    assert_eq!(error["code"], "invalid_argument");
    assert!(error["message"].as_str().unwrap().contains("execution_id"), "{error}");
    let details = error["details"].as_array().expect("details");
    let detail = details.iter().find(|d| d["type"] == "google.rpc.BadRequest").expect("a BadRequest detail");
    assert_eq!(detail["debug"]["fieldViolations"][0]["field"], "execution_id");
    // The detail's value is the message itself, in base64, for Connect clients.
    use base64::Engine as _;
    let value = base64::engine::general_purpose::STANDARD_NO_PAD.decode(detail["value"].as_str().unwrap()).unwrap();
    let decoded = tonic_types::pb::BadRequest::decode(value.as_slice()).unwrap();
    assert_eq!(decoded.field_violations[0].field, "execution_id");

    // FAILED_PRECONDITION with PreconditionFailure, from a resume refused by state.
    let (e, _worker) = failed_execution(&app).await;
    let resume = json!({ "executionId": e.id, "stageName": "deploy" });
    assert_eq!(post_json(&app.address, "ExecutionService/Resume", resume.clone(), None).await.status, 200);
    let stale = post_json(&app.address, "ExecutionService/Resume", resume, None).await;
    assert_eq!(stale.status, 400);
    let error = stale.json();
    assert_eq!(error["code"], "failed_precondition");
    let details = error["details"].as_array().expect("details");
    let precondition = details.iter().find(|d| d["type"] == "google.rpc.PreconditionFailure").expect("a precondition");
    assert_eq!(precondition["debug"]["violations"][0]["type"], "NOT_LATEST_IN_CHAIN");
    let info = details.iter().find(|d| d["type"] == "google.rpc.ErrorInfo").expect("an ErrorInfo detail");
    assert_eq!(info["debug"]["reason"], "NOT_LATEST_IN_CHAIN");
    assert_eq!(info["debug"]["domain"], "reprise.v1");

    // NOT_FOUND; an unknown field; JSON that is not JSON; an unknown method; a body over the limit.
    let missing = post_json(
        &app.address,
        "ExecutionService/GetExecution",
        json!({ "executionId": "0190b6c4-0000-7000-8000-000000000000" }),
        None,
    )
    .await;
    assert_eq!((missing.status, missing.json()["code"].clone()), (404, json!("not_found")));
    let unknown = post_json(&app.address, "ExecutionService/GetExecution", json!({ "executionID": e.id }), None).await;
    assert_eq!((unknown.status, unknown.json()["code"].clone()), (400, json!("invalid_argument")));
    let garbage = http(
        &app.address,
        "POST",
        "/reprise.v1.ExecutionService/GetExecution",
        &[("Content-Type", "application/json")],
        b"{\"executionId\":",
    )
    .await;
    assert_eq!(garbage.json()["code"], "invalid_argument");
    let nothing = post_json(&app.address, "ExecutionService/Nothing", json!({}), None).await;
    assert_eq!((nothing.status, nothing.json()["code"].clone()), (404, json!("unimplemented")));
    let huge = vec![b' '; reprise::web::connect::MAX_REQUEST_BYTES + 1];
    let too_big = http(
        &app.address,
        "POST",
        "/reprise.v1.ExecutionService/ListExecutions",
        &[("Content-Type", "application/json")],
        &huge,
    )
    .await;
    assert_eq!((too_big.status, too_big.json()["code"].clone()), (429, json!("resource_exhausted")));
    // A stream called as unary says how to call it.
    let watch = post_json(&app.address, "ExecutionService/WatchExecution", json!({ "executionId": e.id }), None).await;
    assert_eq!(watch.json()["code"], "unimplemented");
}

fn sign(subject: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    encode(&Header::default(), &json!({ "sub": subject, "exp": exp }), &EncodingKey::from_secret(SECRET.as_bytes()))
        .unwrap()
}

async fn an_unauthenticated_call_is_refused_and_permissions_are_the_grpc_ones(app: TestApp) {
    let (e, _worker) = failed_execution(&app).await;
    let verifier = Verifier::new(&JwtConfig { hs256_secret: Some(SECRET.into()), ..Default::default() }).unwrap();
    let options = ServeOptions {
        auth: Authenticator::Enabled { verifier: Some(Arc::new(verifier)), certificates: None },
        web: WebArgs { cors_origins: vec!["https://console.example.com".into()], ..Default::default() },
        ..Default::default()
    };
    let (address, engine, _stop) = app.secured(options).await;
    engine.bootstrap_admin("root").await.unwrap();
    let get = json!({ "executionId": e.id });

    // No token: 401 and why.
    let anonymous = post_json(&address, "ExecutionService/GetExecution", get.clone(), None).await;
    assert_eq!(anonymous.status, 401);
    let error = anonymous.json();
    assert_eq!(error["code"], "unauthenticated");
    assert!(error["message"].as_str().unwrap().contains("Bearer"), "{error}");
    let forged = post_json(&address, "ExecutionService/GetExecution", get.clone(), Some("not.a.token")).await;
    assert_eq!(forged.json()["code"], "unauthenticated");

    // A caller with no grant: not found, as over gRPC.
    let stranger = post_json(&address, "ExecutionService/GetExecution", get.clone(), Some(&sign("mallory"))).await;
    assert_eq!((stranger.status, stranger.json()["code"].clone()), (404, json!("not_found")));

    // A reader: may read, may not resume, and GetExecution says so with why.
    let root = sign("root");
    let group = post_json(&address, "AccessService/CreateUserGroup", json!({ "name": "viewers" }), Some(&root)).await;
    assert_eq!(group.status, 200, "{}", String::from_utf8_lossy(&group.body));
    let group_id = group.json()["group"]["id"].as_str().unwrap().to_owned();
    let member = json!({ "groupId": group_id, "subject": "viewer" });
    assert_eq!(post_json(&address, "AccessService/AddGroupMember", member, Some(&root)).await.status, 200);
    let grant = json!({ "grant": { "groupId": group_id, "permission": "PERMISSION_VIEW", "application": "shop" } });
    assert_eq!(post_json(&address, "AccessService/AddGrant", grant, Some(&root)).await.status, 200);
    let viewer = sign("viewer");
    let read = post_json(&address, "ExecutionService/GetExecution", get.clone(), Some(&viewer)).await;
    assert_eq!(read.status, 200);
    let resume = read.json()["allowedActions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "EXECUTION_ACTION_RESUME")
        .cloned()
        .unwrap();
    assert_eq!(resume.get("allowed"), None, "false is left out in proto3 JSON: {resume}");
    assert_eq!(resume["reason"], "PERMISSION_DENIED");
    assert!(resume["message"].as_str().unwrap().contains("EXECUTE_PIPELINE"), "{resume}");
    let refused = post_json(
        &address,
        "ExecutionService/Resume",
        json!({ "executionId": e.id, "stageName": "deploy" }),
        Some(&viewer),
    )
    .await;
    assert_eq!((refused.status, refused.json()["code"].clone()), (403, json!("permission_denied")));
    // The admin's view of the same execution allows the resume.
    let admin = post_json(&address, "ExecutionService/GetExecution", get, Some(&root)).await.json();
    assert!(
        admin["allowedActions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "EXECUTION_ACTION_RESUME" && a["allowed"] == true)
    );

    // CORS: a configured origin may call from a browser; any other gets no grant.
    let preflight = |origin: &'static str| {
        let address = address.clone();
        async move {
            http(
                &address,
                "OPTIONS",
                "/reprise.v1.ExecutionService/GetExecution",
                &[
                    ("Origin", origin),
                    ("Access-Control-Request-Method", "POST"),
                    ("Access-Control-Request-Headers", "authorization,content-type"),
                ],
                b"",
            )
            .await
        }
    };
    let allowed = preflight("https://console.example.com").await;
    assert_eq!(allowed.header("access-control-allow-origin"), Some("https://console.example.com"));
    let other = preflight("https://evil.example.net").await;
    assert_eq!(other.header("access-control-allow-origin"), None);
    // Without configured origins (the test app's own server), CORS is off.
    let off = http(
        &app.address,
        "OPTIONS",
        "/reprise.v1.ExecutionService/GetExecution",
        &[("Origin", "https://console.example.com"), ("Access-Control-Request-Method", "POST")],
        b"",
    )
    .await;
    assert_eq!(off.header("access-control-allow-origin"), None);
}

async fn a_watch_streams_over_connect_and_grpc_web_works(app: TestApp) {
    let (e, _worker) = failed_execution(&app).await;
    // Connect server stream: one enveloped request, enveloped messages, the end-stream envelope.
    let request = json!({ "executionId": e.id }).to_string();
    let mut enveloped = vec![0u8];
    enveloped.extend_from_slice(&(request.len() as u32).to_be_bytes());
    enveloped.extend_from_slice(request.as_bytes());
    let answer = http(
        &app.address,
        "POST",
        "/reprise.v1.ExecutionService/WatchExecution",
        &[("Content-Type", "application/connect+json")],
        &enveloped,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/connect+json"));
    let envelopes = envelopes(&answer.body);
    let (last_flags, last) = envelopes.last().unwrap();
    assert_eq!((*last_flags, last.clone()), (2, json!({})), "a clean end: {envelopes:?}");
    assert_eq!(envelopes[0].1["execution"]["status"], "EXECUTION_STATUS_FAILED");
    // An error in a stream arrives in the end-stream envelope, HTTP 200.
    let request = json!({ "executionId": "nope" }).to_string();
    let mut enveloped = vec![0u8];
    enveloped.extend_from_slice(&(request.len() as u32).to_be_bytes());
    enveloped.extend_from_slice(request.as_bytes());
    let answer = http(
        &app.address,
        "POST",
        "/reprise.v1.ExecutionService/WatchExecution",
        &[("Content-Type", "application/connect+json")],
        &enveloped,
    )
    .await;
    let envelopes = self::envelopes(&answer.body);
    assert_eq!(envelopes.len(), 1);
    assert_eq!(envelopes[0].0, 2);
    assert_eq!(envelopes[0].1["error"]["code"], "invalid_argument");

    // grpc-web over HTTP/1.1: a framed protobuf request, the trailers in the body.
    let message = pb::GetExecutionRequest { execution_id: e.id.clone(), ..Default::default() }.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let answer = http(
        &app.address,
        "POST",
        "/reprise.v1.ExecutionService/GetExecution",
        &[("Content-Type", "application/grpc-web+proto"), ("X-Grpc-Web", "1")],
        &framed,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(answer.header("content-type").unwrap().starts_with("application/grpc-web"));
    let length = u32::from_be_bytes(answer.body[1..5].try_into().unwrap()) as usize;
    let response = pb::GetExecutionResponse::decode(&answer.body[5..5 + length]).unwrap();
    assert_eq!(response.execution.unwrap().id, e.id);
    let trailers = String::from_utf8_lossy(&answer.body[5 + length + 5..]).to_string();
    assert_eq!(answer.body[5 + length], 0x80, "a trailers frame follows");
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // The console's page and script, from the binary, with a strict policy.
    let page = http(&app.address, "GET", "/", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("<title>Reprise</title>"));
    assert!(page.header("content-security-policy").unwrap().contains("default-src 'none'"));
    let script = http(&app.address, "GET", "/console.js", &[], b"").await;
    assert_eq!(script.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(http(&app.address, "GET", "/etc/passwd", &[], b"").await.status, 404);
}

/// The Connect envelopes of a stream's body: flags and JSON.
fn envelopes(mut body: &[u8]) -> Vec<(u8, Value)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        out.push((body[0], serde_json::from_slice(&body[5..5 + length]).unwrap()));
        body = &body[5 + length..];
    }
    out
}

/// What GetExecution says the caller may do, as the execution moves: waiting
/// at an approval, paused, ended.
async fn allowed_actions_follow_the_state(app: TestApp) {
    let q = queue();
    let pipeline = app
        .create_pipeline("gated", vec![approval("gate", Duration::from_secs(600)), workflows("go", &q, &["w"])])
        .await;
    let e = app.start(&pipeline.id).await;
    app.wait_until(&e.id, |e| stage_status(e, "gate") == pb::StageStatus::WaitingApproval).await;
    let allowed = |app: &TestApp, id: String| {
        let mut client = app.executions.clone();
        async move {
            let r = client.get_execution(pb::GetExecutionRequest { execution_id: id, ..Default::default() }).await;
            r.unwrap()
                .into_inner()
                .allowed_actions
                .into_iter()
                .map(|a| (pb::ExecutionAction::try_from(a.action).unwrap(), (a.allowed, a.reason)))
                .collect::<std::collections::HashMap<_, _>>()
        }
    };
    use pb::ExecutionAction as A;
    let waiting = allowed(&app, e.id.clone()).await;
    for action in [A::Approve, A::Reject, A::Abort, A::Pause] {
        assert_eq!(waiting[&action], (true, String::new()), "{action:?}");
    }
    assert_eq!(waiting[&A::Continue], (false, "NOTHING_TO_CHANGE".into()));
    assert_eq!(waiting[&A::Resume], (false, "EXECUTION_NOT_RESUMABLE".into()));

    app.executions.clone().pause(pb::PauseRequest { execution_id: e.id.clone() }).await.unwrap();
    let paused = allowed(&app, e.id.clone()).await;
    assert_eq!(paused[&A::Continue], (true, String::new()));
    assert_eq!(paused[&A::Pause], (false, "NOTHING_TO_CHANGE".into()));

    app.executions.clone().abort(pb::AbortRequest { execution_id: e.id.clone(), reason: "test".into() }).await.unwrap();
    let aborted = allowed(&app, e.id.clone()).await;
    assert_eq!(aborted[&A::Resume], (true, String::new()));
    for action in [A::Approve, A::Reject, A::Abort, A::Pause, A::Continue] {
        assert_eq!(aborted[&action], (false, "EXECUTION_FINISHED".into()), "{action:?}");
    }
}
