//! Caller identity: bearer tokens (JWT) checked on every call to our
//! services, or a verified client certificate under mutual TLS. What a
//! caller may do is decided later, by the engine, from its grants.

mod jwt;
pub mod tls;

use std::sync::Arc;

use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, X509Certificate};

pub use jwt::{JwtConfig, Verifier};

/// Who is calling, as established by authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    /// Authentication is switched off: the caller may do anything.
    pub unrestricted: bool,
}

/// How callers are authenticated.
#[derive(Clone)]
pub enum Authenticator {
    /// Development only: every caller is an unrestricted "anonymous".
    Disabled,
    /// Bearer tokens, and client certificates when mutual TLS is on.
    Enabled { verifier: Option<Arc<Verifier>>, accept_client_certificates: bool },
}

impl Authenticator {
    /// Establishes the principal of a request, or says why it cannot.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let (verifier, certificates) = match self {
            Authenticator::Disabled => return Ok(Principal { subject: "anonymous".into(), unrestricted: true }),
            Authenticator::Enabled { verifier, accept_client_certificates } => (verifier, *accept_client_certificates),
        };
        match request.metadata().get("authorization") {
            Some(value) => {
                let value =
                    value.to_str().map_err(|_| unauthenticated("the authorization header is not readable text"))?;
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .ok_or_else(|| unauthenticated("the authorization header must be `Bearer <token>`"))?;
                let verifier = verifier.as_ref().ok_or_else(|| {
                    unauthenticated("this server does not accept bearer tokens; authenticate with a client certificate")
                })?;
                let subject = verifier.verify(token.trim()).map_err(|e| unauthenticated(&e.to_string()))?;
                Ok(Principal { subject, unrestricted: false })
            }
            None if certificates => match certificate_subject(request) {
                Some(subject) => Ok(Principal { subject, unrestricted: false }),
                None => Err(unauthenticated("no bearer token and no client certificate were presented")),
            },
            None => Err(unauthenticated("missing bearer token: send `authorization: Bearer <JWT>`")),
        }
    }

    /// A tonic interceptor that puts the principal in the request extensions.
    pub fn interceptor(&self) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
        let auth = self.clone();
        move |mut request: Request<()>| {
            let principal = auth.authenticate(&request)?;
            request.extensions_mut().insert(principal);
            Ok(request)
        }
    }
}

fn unauthenticated(why: &str) -> Status {
    Status::unauthenticated(format!("unauthenticated: {why}"))
}

/// The common name of the verified client certificate, if one was presented.
fn certificate_subject<T>(request: &Request<T>) -> Option<String> {
    let certs = request.peer_certs()?;
    let (_, cert) = X509Certificate::from_der(certs.first()?.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
}
