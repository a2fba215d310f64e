//! Token keys from a JWKS URL: fetched at start-up, fetched again when the
//! identity provider rotates them, and a start-up that names a URL it
//! cannot fetch.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use reprise::{
    auth::{Authenticator, JwtConfig, Verifier},
    proto::{self as pb, pipeline_service_client::PipelineServiceClient},
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::Channel;

use crate::{helpers::*, isolation::authed};

crate::on_both_backends!(keys_rotated_by_the_provider_are_picked_up);

/// A JWKS of one HS256 key (`kty: oct`) with that id and secret.
fn jwks(kid: &str, secret: &str) -> String {
    serde_json::json!({"keys": [{"kty": "oct", "kid": kid, "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(secret)}]})
        .to_string()
}

fn token(kid: &str, secret: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.into());
    let claims = serde_json::json!({"sub": "root", "exp": exp});
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

/// An HTTP server that answers every request with the current `body`.
async fn provider(body: Arc<Mutex<String>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{address}/.well-known/jwks.json")
}

async fn list(channel: &Channel, token: &str) -> Result<(), tonic::Status> {
    let mut client = PipelineServiceClient::new(channel.clone());
    client.list_pipelines(authed(pb::ListPipelinesRequest::default(), token)).await.map(|_| ())
}

async fn keys_rotated_by_the_provider_are_picked_up(app: TestApp) {
    const OLD: &str = "old-secret-old-secret-old-secret-old";
    const NEW: &str = "new-secret-new-secret-new-secret-new";
    let body = Arc::new(Mutex::new(jwks("k1", OLD)));
    let url = provider(body.clone()).await;
    let config = JwtConfig { jwks_url: Some(url), jwks_refresh: Duration::from_secs(1), ..Default::default() };
    let verifier = Arc::new(Verifier::new(&config).expect("verifier"));
    verifier.start().await.expect("the first fetch");
    let options = reprise::server::ServeOptions {
        auth: Authenticator::Enabled { verifier: Some(verifier), certificates: None },
        ..Default::default()
    };
    let (address, engine, _stop) = app.secured(options).await;
    engine.bootstrap_admin("root").await.expect("bootstrap admin");
    let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();

    list(&channel, &token("k1", OLD)).await.expect("a token signed with the published key");
    let refused = list(&channel, &token("k2", NEW)).await.expect_err("k2 is not published yet");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    *body.lock().unwrap() = jwks("k2", NEW);
    let mut accepted = false;
    for _ in 0..50 {
        if list(&channel, &token("k2", NEW)).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "the rotated key was picked up within 5 s");
    let refused = list(&channel, &token("k1", OLD)).await.expect_err("the retired key no longer verifies");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn a_jwks_url_that_cannot_be_fetched_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_reprise"))
        .args(["serve", "--listen", "127.0.0.1:0", "--auth-jwks-url", "http://127.0.0.1:9/jwks.json"])
        .args(["--database-url", &format!("sqlite://{}", dir.path().join("r.db").display())])
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("http://127.0.0.1:9/jwks.json"), "{stderr}");
}
