//! Who a caller is: a client certificate is named by its URI SAN, DNS SAN
//! or CN in a namespace of its own (`cert:`); under mutual TLS health and
//! reflection answer connections without a certificate unless told not to;
//! a configured issuer or audience is a required claim and the clock
//! leeway is a flag (through `reprise serve` started as a process).

use std::{path::PathBuf, sync::Arc, time::Duration};

use reprise::{
    auth::{Authenticator, CertificateIdentity, JwtConfig, Verifier, tls::TlsFiles},
    proto::{self as pb, access_service_client::AccessServiceClient, execution_service_client::ExecutionServiceClient},
    server::ServeOptions,
};
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::{
    helpers::*,
    isolation::{Process, SECRET, authed, process_database, shared_dir, token_with},
};

crate::on_both_backends!(
    a_certificate_with_only_a_uri_san_authenticates_as_that_uri,
    a_certificate_named_admin_does_not_get_the_rights_of_the_token_subject_admin,
    under_mutual_tls_health_and_reflection_need_no_client_certificate_unless_closed,
    a_configured_issuer_and_audience_are_required_claims_and_the_leeway_is_a_flag,
);

/// A CA, the server's certificate for localhost, and client certificates it signs.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A client certificate and its key (PEM).
struct ClientCert {
    cert: String,
    key: String,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "reprise-test-ca");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        Pki { dir: tempfile::tempdir().unwrap(), ca }
    }

    /// A certificate signed by the CA with these names (None: no CN at all).
    fn issue(&self, cn: Option<&str>, dns: &[&str], uri: &[&str]) -> ClientCert {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        for name in dns {
            params.subject_alt_names.push(rcgen::SanType::DnsName((*name).try_into().unwrap()));
        }
        for name in uri {
            params.subject_alt_names.push(rcgen::SanType::URI((*name).try_into().unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        ClientCert { cert: cert.pem(), key: key.serialize_pem() }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Server TLS with mutual TLS against this CA.
    fn server_tls(&self, certificate_optional: bool) -> TlsFiles {
        let server = self.issue(Some("localhost"), &["localhost"], &[]);
        TlsFiles {
            cert_file: Some(self.write("server.pem", &server.cert)),
            key_file: Some(self.write("server.key", &server.key)),
            client_ca_file: Some(self.write("ca.pem", &self.ca.pem())),
            client_certificate_optional: certificate_optional,
        }
    }

    /// A TLS channel to `address`, with a client certificate or without.
    async fn connect(&self, address: &str, client: Option<&ClientCert>) -> Result<Channel, tonic::transport::Error> {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.ca.pem())).domain_name("localhost");
        if let Some(client) = client {
            tls = tls.identity(Identity::from_pem(&client.cert, &client.key));
        }
        let endpoint = Channel::from_shared(format!("https://{address}")).unwrap().tls_config(tls)?;
        endpoint.connect_timeout(Duration::from_secs(5)).connect().await
    }
}

fn tokens_and_certificates() -> Authenticator {
    let verifier = Verifier::new(&JwtConfig { hs256_secret: Some(SECRET.into()), ..Default::default() }).unwrap();
    Authenticator::Enabled { verifier: Some(Arc::new(verifier)), certificates: Some(CertificateIdentity::default()) }
}

/// ListUserGroups: ADMIN only, so it tells who the caller was taken for.
async fn list_groups(channel: &Channel, token: Option<&str>) -> Result<Vec<pb::UserGroup>, tonic::Status> {
    let request = pb::ListUserGroupsRequest::default();
    let request = match token {
        Some(token) => authed(request, token),
        None => tonic::Request::new(request),
    };
    AccessServiceClient::new(channel.clone()).list_user_groups(request).await.map(|r| r.into_inner().groups)
}

async fn a_certificate_with_only_a_uri_san_authenticates_as_that_uri(app: TestApp) {
    let pki = Pki::new();
    let options = ServeOptions {
        auth: tokens_and_certificates(),
        tls: pki.server_tls(true).server_config().unwrap(),
        metrics_sampling: None,
        ..Default::default()
    };
    let (address, engine, _stop) = app.secured(options).await;
    let spiffe = "spiffe://example.org/ns/ci/sa/deployer";
    engine.bootstrap_admin(&format!("cert:{spiffe}")).await.unwrap();

    let workload = pki.issue(None, &[], &[spiffe]);
    let channel = pki.connect(&address, Some(&workload)).await.expect("TLS with a URI-SAN-only certificate");
    let groups = list_groups(&channel, None).await.expect("the certificate's URI is an admin's subject");
    assert!(groups.iter().any(|g| g.members.contains(&format!("cert:{spiffe}"))), "{groups:?}");

    // Any other certificate of the CA is somebody else.
    let other = pki.issue(None, &[], &["spiffe://example.org/ns/ci/sa/intruder"]);
    let channel = pki.connect(&address, Some(&other)).await.unwrap();
    assert_code(list_groups(&channel, None).await, Code::PermissionDenied);
}

async fn a_certificate_named_admin_does_not_get_the_rights_of_the_token_subject_admin(app: TestApp) {
    let pki = Pki::new();
    let options = ServeOptions {
        auth: tokens_and_certificates(),
        tls: pki.server_tls(true).server_config().unwrap(),
        metrics_sampling: None,
        ..Default::default()
    };
    let (address, engine, _stop) = app.secured(options).await;
    engine.bootstrap_admin("admin").await.unwrap();

    for (cn, dns) in [(Some("admin"), &[][..]), (None, &["admin"][..]), (Some("admin"), &["admin"][..])] {
        let impostor = pki.issue(cn, dns, &[]);
        let channel = pki.connect(&address, Some(&impostor)).await.unwrap();
        let denied = assert_code(list_groups(&channel, None).await, Code::PermissionDenied);
        assert!(denied.message().contains("ADMIN"), "{}", denied.message());
        // The token of the subject `admin` on the same connection is the admin.
        list_groups(&channel, Some(&token_with("admin", json!({})))).await.expect("the token subject admin");
    }
    let groups =
        list_groups(&pki.connect(&address, None).await.unwrap(), Some(&token_with("admin", json!({})))).await.unwrap();
    assert!(groups.iter().flat_map(|g| &g.members).all(|m| m != "cert:admin"), "{groups:?}");
}

/// Health of the whole server, or the error of the call.
async fn health(channel: &Channel) -> Result<i32, tonic::Status> {
    let request = HealthCheckRequest { service: String::new() };
    HealthClient::new(channel.clone()).check(request).await.map(|r| r.into_inner().status)
}

/// The services reflection lists.
async fn reflected_services(channel: &Channel) -> Result<Vec<String>, tonic::Status> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    match responses.next().await.transpose()?.and_then(|r| r.message_response) {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list.service.into_iter().map(|s| s.name).collect()),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn under_mutual_tls_health_and_reflection_need_no_client_certificate_unless_closed(app: TestApp) {
    let pki = Pki::new();
    let deployer = pki.issue(Some("deployer"), &[], &[]);
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;

    // Open (the default): a probe without a certificate gets health and reflection, not our services.
    let options = ServeOptions {
        auth: tokens_and_certificates(),
        tls: pki.server_tls(true).server_config().unwrap(),
        metrics_sampling: None,
        ..Default::default()
    };
    let (address, _engine, stop) = app.secured(options).await;
    let anonymous = pki.connect(&address, None).await.expect("TLS without a client certificate");
    assert_eq!(health(&anonymous).await.expect("health without a certificate"), serving);
    let services = reflected_services(&anonymous).await.expect("reflection without a certificate");
    assert!(services.contains(&"reprise.v1.ExecutionService".to_string()), "{services:?}");
    let refused = assert_code(list_groups(&anonymous, None).await, Code::Unauthenticated);
    assert!(refused.message().contains("client certificate"), "{}", refused.message());
    let executions =
        ExecutionServiceClient::new(anonymous.clone()).list_executions(pb::ListExecutionsRequest::default()).await;
    assert_code(executions, Code::Unauthenticated);
    // A token or a certificate gets in.
    let list = pb::ListExecutionsRequest::default();
    ExecutionServiceClient::new(anonymous.clone())
        .list_executions(authed(list, &token_with("alice", json!({}))))
        .await
        .expect("a bearer token without a certificate");
    let with_cert = pki.connect(&address, Some(&deployer)).await.unwrap();
    ExecutionServiceClient::new(with_cert)
        .list_executions(pb::ListExecutionsRequest::default())
        .await
        .expect("a certificate without a token");
    stop.cancel();

    // Closed: no connection without a client certificate, not even for health.
    let options = ServeOptions {
        auth: tokens_and_certificates(),
        tls: pki.server_tls(false).server_config().unwrap(),
        metrics_sampling: None,
        ..Default::default()
    };
    let (address, _engine, _stop) = app.secured(options).await;
    let refused = match pki.connect(&address, None).await {
        Err(_) => true,
        Ok(channel) => health(&channel).await.is_err() && reflected_services(&channel).await.is_err(),
    };
    assert!(refused, "health and reflection answered a connection without a client certificate");
    let with_cert = pki.connect(&address, Some(&deployer)).await.expect("TLS with a certificate");
    assert_eq!(health(&with_cert).await.expect("health with a certificate"), serving);
}

async fn a_configured_issuer_and_audience_are_required_claims_and_the_leeway_is_a_flag(app: TestApp) {
    let dir = shared_dir();
    let database_url = process_database(&app, dir.path());
    let secret_file = dir.path().join("hs256");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let secret_file = secret_file.display().to_string();
    let env = [("REPRISE_DATABASE_URL", database_url.as_str())];
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let full = json!({ "iss": "idp", "aud": "reprise" });
    let without_iss = json!({ "aud": "reprise" });
    let without_aud = json!({ "iss": "idp" });
    let expired_30s_ago = json!({ "iss": "idp", "aud": "reprise", "exp": now - 30 });
    let list = |channel: &Channel, claims: &serde_json::Value| {
        let request = authed(pb::ListExecutionsRequest::default(), &token_with("alice", claims.clone()));
        let mut client = ExecutionServiceClient::new(channel.clone());
        async move { client.list_executions(request).await }
    };

    let flags =
        ["serve", "--auth-hs256-secret-file", &secret_file, "--auth-issuer", "idp", "--auth-audience", "reprise"];
    let serve = Process::start(&flags, &env, false).await;
    list(&serve.channel, &full).await.unwrap_or_else(|e| panic!("{e:?}\nlog: {}", serve.log()));
    for (claims, says) in [(&without_iss, "lacks the iss claim"), (&without_aud, "lacks the aud claim")] {
        let status = assert_code(list(&serve.channel, claims).await, Code::Unauthenticated);
        assert!(status.message().contains(says), "{claims}: wanted {says:?} in {:?}", status.message());
    }
    list(&serve.channel, &expired_30s_ago).await.expect("within the default 60 s leeway");
    drop(serve);

    let strict = [&flags[..], &["--auth-leeway", "0s"]].concat();
    let serve = Process::start(&strict, &env, false).await;
    let status = assert_code(list(&serve.channel, &expired_30s_ago).await, Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{:?}", status.message());
    list(&serve.channel, &full).await.expect("a token that has not expired");
}
