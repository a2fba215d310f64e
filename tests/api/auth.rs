//! Authentication, permissions and the audit trail through a secured server.

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{EncodingKey, Header, encode};
use reprise::{
    auth::{Authenticator, CertificateIdentity, JwtConfig, Verifier, tls::TlsFiles},
    engine::Engine,
    proto::{
        self as pb, access_service_client::AccessServiceClient, execution_service_client::ExecutionServiceClient,
        pipeline_service_client::PipelineServiceClient,
    },
    server::ServeOptions,
};
use serde_json::json;
use tonic::{
    Code, Request,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

use crate::helpers::*;

const SECRET: &str = "test-secret-test-secret-test-secret!";
const ISSUER: &str = "test-idp";
const AUDIENCE: &str = "reprise";

crate::on_both_backends!(
    execute_permissions_follow_grant_scope_and_environment_types,
    bad_tokens_are_unauthenticated_and_say_why,
    resume_needs_execute_on_every_stage_it_would_run,
    reads_need_a_grant_and_lists_show_only_readable_applications,
    actions_are_audited_in_their_transaction,
    access_service_is_for_admins_only,
    mutual_tls_accepts_certificates_of_the_configured_ca_only,
    what_a_caller_may_not_read_is_not_found_and_refused_changes_are_audited,
    permission_is_checked_before_a_definition_is_compiled,
    a_watch_ends_not_found_once_its_caller_may_no_longer_read,
);

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn token(subject: &str) -> String {
    sign(json!({ "sub": subject, "exp": now() + 600, "iss": ISSUER, "aud": AUDIENCE }), SECRET)
}

fn sign(claims: serde_json::Value, secret: &str) -> String {
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn jwt_options() -> ServeOptions {
    let config = JwtConfig {
        hs256_secret: Some(SECRET.into()),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        ..Default::default()
    };
    let verifier = Verifier::new(&config).expect("verifier");
    ServeOptions {
        auth: Authenticator::Enabled { verifier: Some(Arc::new(verifier)), certificates: None },
        tls: None,
        metrics_sampling: None,
        ..Default::default()
    }
}

/// A server requiring tokens, with "root" as bootstrap admin.
struct Secured {
    channel: Channel,
    engine: Engine,
}

impl Secured {
    async fn boot(app: &TestApp) -> Secured {
        let (address, engine, _stop) = app.secured(jwt_options()).await;
        engine.bootstrap_admin("root").await.expect("bootstrap");
        let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.expect("connect");
        Secured { channel, engine }
    }

    fn access(&self) -> AccessServiceClient<Channel> {
        AccessServiceClient::new(self.channel.clone())
    }

    fn executions(&self) -> ExecutionServiceClient<Channel> {
        ExecutionServiceClient::new(self.channel.clone())
    }

    fn pipelines(&self) -> PipelineServiceClient<Channel> {
        PipelineServiceClient::new(self.channel.clone())
    }

    /// A group holding one grant, with `subject` as its only member.
    async fn grant(&self, subject: &str, permission: pb::Permission, application: &str, env: pb::EnvironmentType) {
        let root = token("root");
        let group = self
            .access()
            .create_user_group(authed(pb::CreateUserGroupRequest { name: format!("g-{subject}") }, &root))
            .await
            .expect("group")
            .into_inner()
            .group
            .unwrap();
        let member = pb::AddGroupMemberRequest { group_id: group.id.clone(), subject: subject.into() };
        self.access().add_group_member(authed(member, &root)).await.expect("member");
        let grant = pb::Grant {
            group_id: group.id,
            permission: permission as i32,
            application: application.into(),
            environment_type: env as i32,
            ..Default::default()
        };
        self.access().add_grant(authed(pb::AddGrantRequest { grant: Some(grant) }, &root)).await.expect("grant");
    }

    async fn pipeline(&self, application: &str, name: &str, envs: &[pb::EnvironmentType]) -> pb::Pipeline {
        let q = queue();
        let stages = envs
            .iter()
            .enumerate()
            .map(|(i, env)| pb::Stage {
                environment: Some(pb::Environment { name: "e".into(), r#type: *env as i32 }),
                ..workflows(&format!("s{i}"), &q, &["w"])
            })
            .collect();
        let request = pb::CreatePipelineRequest {
            application: application.into(),
            name: name.into(),
            definition: Some(pb::PipelineDefinition { stages, ..Default::default() }),
        };
        self.pipelines()
            .create_pipeline(authed(request, &token("root")))
            .await
            .expect("pipeline")
            .into_inner()
            .pipeline
            .unwrap()
    }

    async fn start(&self, subject: &str, pipeline_id: &str) -> Result<pb::Execution, tonic::Status> {
        let request = pb::StartExecutionRequest { pipeline_id: pipeline_id.into(), ..Default::default() };
        self.executions()
            .start_execution(authed(request, &token(subject)))
            .await
            .map(|r| r.into_inner().execution.unwrap())
    }
}

/// Grant scope × environment types of the stages × StartExecution → allowed?
async fn execute_permissions_follow_grant_scope_and_environment_types(app: TestApp) {
    use pb::{
        EnvironmentType::{NonProd, Prod, Unspecified},
        Permission::{ExecutePipeline, View},
    };
    let s = Secured::boot(&app).await;
    s.grant("all", ExecutePipeline, "", Unspecified).await;
    s.grant("shop", ExecutePipeline, "shop", Unspecified).await;
    s.grant("shop-prod", ExecutePipeline, "shop", Prod).await;
    s.grant("shop-nonprod", ExecutePipeline, "shop", NonProd).await;
    s.grant("bank", ExecutePipeline, "bank", Unspecified).await;
    s.grant("viewer", View, "shop", Unspecified).await;
    let prod = s.pipeline("shop", "prod", &[Prod, Prod]).await;
    let mixed = s.pipeline("shop", "mixed", &[NonProd, Prod]).await;
    let nonprod = s.pipeline("shop", "nonprod", &[NonProd]).await;

    let table = [
        ("all", &prod, true),
        ("all", &mixed, true),
        ("all", &nonprod, true),
        ("shop", &prod, true),
        ("shop", &mixed, true),
        ("shop", &nonprod, true),
        ("shop-prod", &prod, true),
        ("shop-prod", &mixed, false),
        ("shop-prod", &nonprod, false),
        ("shop-nonprod", &prod, false),
        ("shop-nonprod", &mixed, false),
        ("shop-nonprod", &nonprod, true),
        ("bank", &prod, false),
        ("bank", &mixed, false),
        ("bank", &nonprod, false),
        ("viewer", &prod, false),
        ("nobody", &nonprod, false),
    ];
    for (subject, pipeline, allowed) in table {
        let result = s.start(subject, &pipeline.id).await;
        match (allowed, result) {
            (true, Ok(e)) => {
                assert_eq!(e.triggered_by, subject);
                let abort = pb::AbortRequest { execution_id: e.id, reason: String::new() };
                s.executions().abort(authed(abort, &token(subject))).await.expect("who may start may abort");
            }
            // Who may not even read the pipeline is told it does not exist.
            (false, Err(status)) if ["bank", "nobody"].contains(&subject) => {
                assert_eq!(status.code(), Code::NotFound, "{subject} on {}: {status:?}", pipeline.name);
                assert_eq!(status.message(), format!("pipeline {:?} not found", pipeline.id));
            }
            (false, Err(status)) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{subject} on {}: {status:?}", pipeline.name);
                assert!(
                    status.message().contains("EXECUTE_PIPELINE") && status.message().contains("\"shop\""),
                    "{}",
                    status.message()
                );
            }
            (want, got) => panic!("{subject} on {}: wanted allowed={want}, got {got:?}", pipeline.name),
        }
    }
    let denied = s.start("shop-prod", &mixed.id).await.unwrap_err();
    assert!(denied.message().contains("NON_PROD") && denied.message().contains("PROD"), "{}", denied.message());
}

async fn bad_tokens_are_unauthenticated_and_say_why(app: TestApp) {
    let s = Secured::boot(&app).await;
    let call = |request: Request<pb::ListExecutionsRequest>| {
        let mut client = s.executions();
        async move { client.list_executions(request).await.unwrap_err() }
    };
    let missing = call(Request::new(pb::ListExecutionsRequest::default())).await;
    assert_reason(&missing, Code::Unauthenticated, pb::ErrorReason::Unauthenticated);
    assert!(missing.message().contains("missing bearer token"), "{}", missing.message());

    let base = || json!({ "sub": "alice", "exp": now() + 600, "iss": ISSUER, "aud": AUDIENCE });
    let with = |key: &str, value: serde_json::Value| {
        let mut claims = base();
        claims[key] = value;
        claims
    };
    let none_header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
    let none_token = format!("{none_header}.{}.", base64_url(base().to_string().as_bytes()));
    let cases = [
        ("garbage".to_string(), "malformed"),
        (sign(with("exp", json!(now() - 3600)), SECRET), "expired"),
        (sign(with("nbf", json!(now() + 3600)), SECRET), "not valid yet"),
        (sign(with("iss", json!("evil")), SECRET), "issuer"),
        (sign(with("aud", json!("other")), SECRET), "audience"),
        (sign(base(), "a-different-secret-a-different-secret"), "signature"),
        (none_token, "alg none"),
    ];
    for (token, says) in cases {
        let status = call(authed(pb::ListExecutionsRequest::default(), &token)).await;
        assert_reason(&status, Code::Unauthenticated, pb::ErrorReason::Unauthenticated);
        assert!(status.message().contains(says), "wanted {says:?} in {:?}", status.message());
    }

    // Health and reflection stay open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel.clone());
    let check =
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("health is open");
    assert_eq!(check.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn resume_needs_execute_on_every_stage_it_would_run(app: TestApp) {
    use pb::{
        EnvironmentType::{NonProd, Prod},
        Permission::ExecutePipeline,
    };
    let s = Secured::boot(&app).await;
    s.grant("nonprod", ExecutePipeline, "shop", NonProd).await;
    let p = s.pipeline("shop", "deploy", &[Prod, NonProd]).await;
    let e = s.start("root", &p.id).await.unwrap();
    let abort = pb::AbortRequest { execution_id: e.id.clone(), reason: String::new() };
    s.executions().abort(authed(abort, &token("root"))).await.unwrap();

    let resume = |stage: i32| pb::ResumeRequest {
        execution_id: e.id.clone(),
        from_stage: Some(pb::resume_request::FromStage::StageIndex(stage)),
        ..Default::default()
    };
    let denied = s.executions().resume(authed(resume(0), &token("nonprod"))).await.unwrap_err();
    assert_reason(&denied, Code::PermissionDenied, pb::ErrorReason::PermissionDenied);
    // Stage 1 was never reached, so the only valid point runs a PROD stage: still refused.
    assert!(denied.message().contains("PROD"), "{}", denied.message());
    let resumed = s.executions().resume(authed(resume(0), &token("root"))).await.expect("root may resume");
    assert_eq!(resumed.into_inner().execution.unwrap().triggered_by, "root");
}

async fn reads_need_a_grant_and_lists_show_only_readable_applications(app: TestApp) {
    use pb::{
        EnvironmentType::{NonProd, Unspecified},
        Permission::View,
    };
    let s = Secured::boot(&app).await;
    s.grant("shop-viewer", View, "shop", Unspecified).await;
    let shop = s.pipeline("shop", "deploy", &[NonProd]).await;
    let bank = s.pipeline("bank", "deploy", &[NonProd]).await;
    let shop_run = s.start("root", &shop.id).await.unwrap();
    let bank_run = s.start("root", &bank.id).await.unwrap();

    let viewer = token("shop-viewer");
    let get = |id: &str| pb::GetExecutionRequest { execution_id: id.into(), ..Default::default() };
    assert!(s.executions().get_execution(authed(get(&shop_run.id), &viewer)).await.is_ok());
    // An execution the caller may not read is not found, in the words used
    // for an id that names nothing: the answer tells nothing about it.
    let hidden = s.executions().get_execution(authed(get(&bank_run.id), &viewer)).await.unwrap_err();
    let missing_id = uuid::Uuid::now_v7().to_string();
    let missing = s.executions().get_execution(authed(get(&missing_id), &viewer)).await.unwrap_err();
    assert_eq!((hidden.code(), missing.code()), (Code::NotFound, Code::NotFound));
    assert_eq!(hidden.message().replace(&bank_run.id, "ID"), missing.message().replace(&missing_id, "ID"));
    assert!(!hidden.message().contains("bank"), "{}", hidden.message());

    let listed = s
        .executions()
        .list_executions(authed(pb::ListExecutionsRequest::default(), &viewer))
        .await
        .unwrap()
        .into_inner();
    let apps: Vec<_> = listed.executions.iter().map(|e| e.application.as_str()).collect();
    assert_eq!(apps, ["shop"]);
    let pipelines =
        s.pipelines().list_pipelines(authed(pb::ListPipelinesRequest::default(), &viewer)).await.unwrap().into_inner();
    assert_eq!(pipelines.pipelines.len(), 1);
    let stranger =
        s.executions().list_executions(authed(pb::ListExecutionsRequest::default(), &token("stranger"))).await.unwrap();
    assert!(stranger.into_inner().executions.is_empty());
}

async fn actions_are_audited_in_their_transaction(app: TestApp) {
    let s = Secured::boot(&app).await;
    let p = s.pipeline("shop", "deploy", &[pb::EnvironmentType::NonProd]).await;
    let e = s.start("root", &p.id).await.unwrap();
    let abort = |reason: &str| pb::AbortRequest { execution_id: e.id.clone(), reason: reason.into() };
    s.executions().abort(authed(abort("first"), &token("root"))).await.unwrap();
    let again = s.executions().abort(authed(abort("second"), &token("root"))).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    let list = pb::ListAuditEventsRequest { execution_id: e.id.clone(), ..Default::default() };
    let events = s.access().list_audit_events(authed(list, &token("root"))).await.unwrap().into_inner().events;
    let actions: Vec<_> = events.iter().map(|e| (e.action.as_str(), e.actor.as_str())).collect();
    assert_eq!(
        actions,
        [("execution.abort", "root"), ("execution.start", "root")],
        "newest first; the refused abort left none"
    );
    assert!(events[0].details.contains("first"));
    assert_eq!(events[0].application, "shop");

    let all =
        s.access().list_audit_events(authed(pb::ListAuditEventsRequest::default(), &token("root"))).await.unwrap();
    let all: Vec<_> = all.into_inner().events.into_iter().map(|e| e.action).collect();
    assert!(all.contains(&"access.grant.add".to_string()) && all.contains(&"pipeline.create".to_string()), "{all:?}");

    // A refused attempt is recorded, in a row of its own: who, what, which
    // target, why. Mallory may not read "shop", so she was told NOT_FOUND.
    let denied = s.start("mallory", &p.id).await.unwrap_err();
    assert_eq!(denied.code(), Code::NotFound);
    let by_app = pb::ListAuditEventsRequest { application: "shop".into(), ..Default::default() };
    let events = s.access().list_audit_events(authed(by_app, &token("root"))).await.unwrap().into_inner().events;
    let refused: Vec<_> = events.iter().filter(|e| e.actor == "mallory").collect();
    assert_eq!(refused.len(), 1, "{events:#?}");
    assert_eq!(refused[0].action, "execution.start.denied");
    assert!(refused[0].details.contains(&p.id) && refused[0].details.contains("EXECUTE_PIPELINE"), "{refused:?}");
    let _ = &s.engine;
}

async fn access_service_is_for_admins_only(app: TestApp) {
    use pb::{EnvironmentType::Unspecified, Permission::ExecutePipeline};
    let s = Secured::boot(&app).await;
    s.grant("deployer", ExecutePipeline, "", Unspecified).await;
    let attempt = s
        .access()
        .create_user_group(authed(pb::CreateUserGroupRequest { name: "mine".into() }, &token("deployer")))
        .await;
    let status = attempt.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("ADMIN"), "{}", status.message());
    let list = s.access().list_user_groups(authed(pb::ListUserGroupsRequest::default(), &token("deployer"))).await;
    assert_eq!(list.unwrap_err().code(), Code::PermissionDenied);
    let groups =
        s.access().list_user_groups(authed(pb::ListUserGroupsRequest::default(), &token("root"))).await.unwrap();
    let names: Vec<_> = groups.into_inner().groups.into_iter().map(|g| g.name).collect();
    assert!(names.contains(&"bootstrap-admins".to_string()) && names.contains(&"g-deployer".to_string()), "{names:?}");
    let duplicate = s
        .access()
        .create_user_group(authed(pb::CreateUserGroupRequest { name: "g-deployer".into() }, &token("root")))
        .await;
    assert_eq!(duplicate.unwrap_err().code(), Code::AlreadyExists);
    s.engine.bootstrap_admin("root").await.expect("bootstrapping again is harmless");
}

/// A CA, and a certificate it signs for `name` (server: SAN, client: CN).
fn issue(ca_name: &str, name: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let (cert, key) = leaf(&ca, name);
    (ca.pem(), cert, key)
}

fn leaf(ca: &rcgen::CertifiedIssuer<'_, rcgen::KeyPair>, name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string(), "localhost".into()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn mutual_tls_accepts_certificates_of_the_configured_ca_only(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, server_cert, server_key) = issue("reprise-ca", "localhost");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "client-ca");
    let client_ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let (client_cert, client_key) = leaf(&client_ca, "deployer");
    let (_, rogue_cert, rogue_key) = issue("rogue-ca", "deployer");

    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let files = TlsFiles {
        cert_file: Some(write("server.pem", &server_cert)),
        key_file: Some(write("server.key", &server_key)),
        client_ca_file: Some(write("client-ca.pem", &client_ca.pem())),
        // A certificate that is presented must verify even where none is required.
        client_certificate_optional: true,
    };
    let options = ServeOptions {
        auth: Authenticator::Enabled { verifier: None, certificates: Some(CertificateIdentity::default()) },
        tls: files.server_config().unwrap(),
        metrics_sampling: None,
        ..Default::default()
    };
    let (address, engine, _stop) = app.secured(options).await;
    engine.bootstrap_admin("cert:deployer").await.unwrap();

    let connect = |cert: String, key: String| {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem.clone()))
            .identity(Identity::from_pem(cert, key))
            .domain_name("localhost");
        let endpoint = Channel::from_shared(format!("https://{address}")).unwrap().tls_config(tls).unwrap();
        async move { endpoint.connect_timeout(Duration::from_secs(5)).connect().await }
    };
    let channel = connect(client_cert, client_key).await.expect("TLS connect with a good certificate");
    let mut access = AccessServiceClient::new(channel);
    let groups = access
        .list_user_groups(pb::ListUserGroupsRequest::default())
        .await
        .expect("the certificate's name is the subject");
    assert!(groups.into_inner().groups.iter().any(|g| g.members.contains(&"cert:deployer".to_string())));

    let rogue = match connect(rogue_cert, rogue_key).await {
        Err(_) => None,
        Ok(channel) => {
            Some(AccessServiceClient::new(channel).list_user_groups(pb::ListUserGroupsRequest::default()).await)
        }
    };
    assert!(!matches!(rogue, Some(Ok(_))), "a certificate from another CA is refused: {rogue:?}");
}

/// Every RPC that names an execution or a pipeline, as `subject`; each
/// answer with the id it named.
async fn every_named_call(
    s: &Secured,
    subject: &str,
    execution: &str,
    pipeline: &str,
) -> Vec<(&'static str, tonic::Status)> {
    let t = token(subject);
    let (mut e, mut p) = (s.executions(), s.pipelines());
    let stage = || Some(pb::resume_request::FromStage::StageIndex(0));
    let definition =
        || Some(pb::PipelineDefinition { stages: vec![workflows("s", "q", &["w"])], ..Default::default() });
    let mut out = Vec::new();
    let mut note = |name: &'static str, result: Result<(), tonic::Status>| {
        if let Err(status) = result {
            out.push((name, status));
        }
    };
    let id = execution.to_owned();
    note(
        "GetExecution",
        e.get_execution(authed(pb::GetExecutionRequest { execution_id: id.clone(), ..Default::default() }, &t))
            .await
            .map(drop),
    );
    let watch = e.watch_execution(authed(pb::WatchExecutionRequest { execution_id: id.clone() }, &t)).await;
    note("WatchExecution", watch.map(drop));
    let history = pb::ListHistoryRequest { execution_id: id.clone(), ..Default::default() };
    note("ListHistory", e.list_history(authed(history, &t)).await.map(drop));
    let resume = pb::ResumeRequest { execution_id: id.clone(), from_stage: stage(), ..Default::default() };
    note("Resume", e.resume(authed(resume, &t)).await.map(drop));
    note("Pause", e.pause(authed(pb::PauseRequest { execution_id: id.clone() }, &t)).await.map(drop));
    note("Continue", e.r#continue(authed(pb::ContinueRequest { execution_id: id.clone() }, &t)).await.map(drop));
    let approve = pb::ApproveRequest { execution_id: id.clone(), ..Default::default() };
    note("Approve", e.approve(authed(approve, &t)).await.map(drop));
    let reject = pb::RejectRequest { execution_id: id.clone(), ..Default::default() };
    note("Reject", e.reject(authed(reject, &t)).await.map(drop));
    let abort = pb::AbortRequest { execution_id: id.clone(), reason: "mine".into() };
    note("Abort", e.abort(authed(abort, &t)).await.map(drop));
    let audit = pb::ListAuditEventsRequest { execution_id: id.clone(), ..Default::default() };
    note("ListAuditEvents", s.access().list_audit_events(authed(audit, &t)).await.map(drop));
    let get = pb::GetPipelineRequest { pipeline_id: pipeline.into(), version: 0 };
    note("GetPipeline", p.get_pipeline(authed(get, &t)).await.map(drop));
    let get = pb::GetPipelineRequest { pipeline_id: pipeline.into(), version: 7 };
    note("GetPipeline v7", p.get_pipeline(authed(get, &t)).await.map(drop));
    let update =
        pb::UpdatePipelineRequest { pipeline_id: pipeline.into(), expected_version: 1, definition: definition() };
    note("UpdatePipeline", p.update_pipeline(authed(update, &t)).await.map(drop));
    let start = pb::StartExecutionRequest { pipeline_id: pipeline.into(), ..Default::default() };
    note("StartExecution", e.start_execution(authed(start, &t)).await.map(drop));
    out
}

async fn what_a_caller_may_not_read_is_not_found_and_refused_changes_are_audited(app: TestApp) {
    use pb::{EnvironmentType::Unspecified, Permission::*};
    let s = Secured::boot(&app).await;
    s.grant("viewer", View, "shop", Unspecified).await;
    s.grant("worker", RunTasks, "", Unspecified).await;
    s.grant("banker", ExecutePipeline, "bank", Unspecified).await;
    let p = s.pipeline("shop", "deploy", &[pb::EnvironmentType::NonProd]).await;
    let e = s.start("root", &p.id).await.unwrap();

    // Ids of nothing: what every caller is told when it may not read.
    let (no_execution, no_pipeline) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
    let missing = every_named_call(&s, "root", &no_execution, &no_pipeline).await;
    assert_eq!(missing.len(), 14, "{missing:?}");
    assert!(missing.iter().all(|(_, m)| m.code() == Code::NotFound), "{missing:?}");
    for (_, status) in &missing {
        assert_reason(status, Code::NotFound, pb::ErrorReason::NotFound);
    }

    // A stranger, a worker (RUN_TASKS reads nothing) and a deployer of
    // another application: the same answers, word for word.
    for subject in ["stranger", "worker", "banker"] {
        let hidden = every_named_call(&s, subject, &e.id, &p.id).await;
        assert_eq!(hidden.len(), missing.len(), "{subject}: {hidden:?}");
        for ((call, got), (_, want)) in hidden.iter().zip(&missing) {
            assert_eq!(got.code(), Code::NotFound, "{subject} {call}: {got:?}");
            // The same details too: the reason never tells hidden from missing.
            assert_eq!(error_info(got), error_info(want), "{subject} {call}");
            let got = got.message().replace(&e.id, "E").replace(&p.id, "P");
            let want = want.message().replace(&no_execution, "E").replace(&no_pipeline, "P");
            assert_eq!(got, want, "{subject} {call}");
        }
        let listed =
            s.executions().list_executions(authed(pb::ListExecutionsRequest::default(), &token(subject))).await;
        assert!(listed.unwrap().into_inner().executions.is_empty(), "{subject} lists nothing");
        let listed = s.pipelines().list_pipelines(authed(pb::ListPipelinesRequest::default(), &token(subject))).await;
        assert!(listed.unwrap().into_inner().pipelines.is_empty(), "{subject} lists nothing");
    }

    // Who may read but not change is refused as such, naming the grant.
    let viewed = every_named_call(&s, "viewer", &e.id, &p.id).await;
    let refused: Vec<_> = viewed.iter().map(|(call, status)| (*call, status.code())).collect();
    assert_eq!(
        refused,
        [
            ("Resume", Code::PermissionDenied),
            ("Pause", Code::PermissionDenied),
            ("Continue", Code::PermissionDenied),
            ("Approve", Code::PermissionDenied),
            ("Reject", Code::PermissionDenied),
            ("Abort", Code::PermissionDenied),
            ("GetPipeline v7", Code::NotFound),
            ("UpdatePipeline", Code::PermissionDenied),
            ("StartExecution", Code::PermissionDenied),
        ]
    );
    assert!(viewed[0].1.message().contains("EXECUTE_PIPELINE"), "{:?}", viewed[0].1);
    for (call, status) in &viewed {
        let reason =
            if status.code() == Code::NotFound { pb::ErrorReason::NotFound } else { pb::ErrorReason::PermissionDenied };
        assert_eq!(error_info(status).0, reason, "{call}");
    }
    assert!(viewed[6].1.message().contains("has no version 7"), "a reader is told which versions exist");

    // Each refused change is in the trail: who, what, which target, why.
    let by_app = pb::ListAuditEventsRequest { application: "shop".into(), page_size: 500, ..Default::default() };
    let events = s.access().list_audit_events(authed(by_app, &token("root"))).await.unwrap().into_inner().events;
    let denied = |actor: &str| {
        let mut actions: Vec<&str> = events
            .iter()
            .filter(|e| e.actor == actor && e.action.ends_with(".denied"))
            .map(|e| e.action.as_str())
            .collect();
        actions.sort_unstable();
        actions
    };
    let changes = [
        "execution.abort.denied",
        "execution.approve.denied",
        "execution.continue.denied",
        "execution.pause.denied",
        "execution.reject.denied",
        "execution.resume.denied",
        "execution.start.denied",
        "pipeline.update.denied",
    ];
    for actor in ["stranger", "worker", "banker", "viewer"] {
        assert_eq!(denied(actor), changes, "{actor}");
    }
    let resume = events.iter().find(|e| e.actor == "viewer" && e.action == "execution.resume.denied").unwrap();
    assert_eq!(resume.execution_id, e.id);
    assert!(resume.details.contains("refused") && resume.details.contains("EXECUTE_PIPELINE"), "{}", resume.details);
    let get = authed(pb::GetExecutionRequest { execution_id: e.id.clone(), ..Default::default() }, &token("root"));
    let execution = s.executions().get_execution(get).await.unwrap().into_inner().execution.unwrap();
    assert_eq!(status(&execution), pb::ExecutionStatus::Running, "nothing changed");
}

async fn permission_is_checked_before_a_definition_is_compiled(app: TestApp) {
    use pb::{EnvironmentType::Unspecified, Permission::View};
    let s = Secured::boot(&app).await;
    s.grant("viewer", View, "shop", Unspecified).await;
    let p = s.pipeline("shop", "deploy", &[pb::EnvironmentType::NonProd]).await;
    // Well-formed, within every limit, but wrong: it names an undeclared
    // variable, which only compiling the condition finds out.
    let wrong = || {
        Some(pb::PipelineDefinition {
            stages: vec![skip_when(workflows("s", "q", &["w"]), "nobody == \"declared\"")],
            ..Default::default()
        })
    };
    let create = pb::CreatePipelineRequest { application: "shop".into(), name: "x".into(), definition: wrong() };
    let status = s.pipelines().create_pipeline(authed(create.clone(), &token("stranger"))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = s.pipelines().create_pipeline(authed(create, &token("root"))).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let update = pb::UpdatePipelineRequest { pipeline_id: p.id.clone(), expected_version: 1, definition: wrong() };
    let status = s.pipelines().update_pipeline(authed(update, &token("viewer"))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

async fn a_watch_ends_not_found_once_its_caller_may_no_longer_read(app: TestApp) {
    let s = Secured::boot(&app).await;
    s.grant("viewer", pb::Permission::View, "shop", pb::EnvironmentType::Unspecified).await;
    let p = s.pipeline("shop", "deploy", &[pb::EnvironmentType::NonProd]).await;
    let e = s.start("root", &p.id).await.unwrap();
    let watch = pb::WatchExecutionRequest { execution_id: e.id.clone() };
    let mut stream = s.executions().watch_execution(authed(watch, &token("viewer"))).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some(), "the current state first");

    let root = token("root");
    let groups = s.access().list_user_groups(authed(pb::ListUserGroupsRequest::default(), &root)).await.unwrap();
    let group = groups.into_inner().groups.into_iter().find(|g| g.name == "g-viewer").unwrap();
    let remove = pb::RemoveGrantRequest { grant_id: group.grants[0].id.clone() };
    s.access().remove_grant(authed(remove, &root)).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the watch ends");
    assert_eq!(ended.map(|s| s.code()), Some(Code::NotFound));
}
