//! Caller identity: bearer tokens (JWT) checked on every call to our
//! services, or a verified client certificate under mutual TLS. What a
//! caller may do is decided later, by the engine, from its grants.

mod jwks;
mod jwt;
pub mod tls;

use std::sync::Arc;

use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub use jwt::{DEFAULT_LEEWAY, JwtConfig, Verifier};

/// Who is calling, as established by authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    /// Authentication is switched off: the caller may do anything.
    pub unrestricted: bool,
    /// When the credential stops being valid (a token's `exp`, Unix
    /// seconds): a stream it opened ends then.
    pub expires_at: Option<i64>,
}

/// How callers are authenticated.
#[derive(Clone)]
pub enum Authenticator {
    /// Development only: every caller is an unrestricted "anonymous".
    Disabled,
    /// Bearer tokens (when a verifier is configured), and verified client
    /// certificates named as `certificates` says (under mutual TLS).
    Enabled { verifier: Option<Arc<Verifier>>, certificates: Option<CertificateIdentity> },
}

/// Which name of a client certificate identifies the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CertificateName {
    /// The first URI SAN, else the first DNS SAN, else the subject's common name.
    Auto,
    /// The first URI SAN (e.g. a SPIFFE id `spiffe://domain/workload`).
    Uri,
    /// The first DNS SAN.
    Dns,
    /// The subject's common name.
    Cn,
}

/// How a verified client certificate becomes a subject: one of its names,
/// behind a prefix that keeps certificate subjects apart from token subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateIdentity {
    pub name: CertificateName,
    pub prefix: String,
}

impl Default for CertificateIdentity {
    fn default() -> Self {
        CertificateIdentity { name: CertificateName::Auto, prefix: "cert:".into() }
    }
}

impl Authenticator {
    /// Establishes the principal of a request, or says why it cannot. A
    /// bearer token wins over a client certificate.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let (verifier, certificates) = match self {
            Authenticator::Disabled => {
                return Ok(Principal { subject: "anonymous".into(), unrestricted: true, expires_at: None });
            }
            Authenticator::Enabled { verifier, certificates } => (verifier, certificates),
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
                let (subject, expires_at) =
                    verifier.verify_claims(token.trim()).map_err(|e| unauthenticated(&e.to_string()))?;
                Ok(Principal { subject, unrestricted: false, expires_at })
            }
            None => match (certificates, request.peer_certs()) {
                (Some(identity), Some(chain)) => {
                    let leaf = chain.first().ok_or_else(|| unauthenticated("the client certificate chain is empty"))?;
                    let subject = identity.subject_of(leaf.as_ref()).map_err(|why| unauthenticated(&why))?;
                    Ok(Principal { subject, unrestricted: false, expires_at: None })
                }
                (Some(_), None) => Err(unauthenticated(
                    "no bearer token and no client certificate were presented: send `authorization: Bearer <JWT>` \
                     or connect with a client certificate",
                )),
                (None, _) => Err(unauthenticated("missing bearer token: send `authorization: Bearer <JWT>`")),
            },
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
    crate::api::error::unauthenticated(&format!("unauthenticated: {why}"))
}

impl CertificateIdentity {
    /// The subject of a verified client certificate (DER): the prefix and
    /// the chosen name, or why the certificate has no such name.
    pub fn subject_of(&self, der: &[u8]) -> Result<String, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|_| "the client certificate cannot be parsed".to_owned())?;
        let names = cert.subject_alternative_name().ok().flatten().map(|ext| ext.value.general_names.as_slice());
        let first_san = |want: fn(&GeneralName<'_>) -> Option<String>| {
            names.unwrap_or_default().iter().filter_map(want).find(|n| !n.is_empty())
        };
        let uri = || first_san(|n| if let GeneralName::URI(u) = n { Some((*u).to_owned()) } else { None });
        let dns = || first_san(|n| if let GeneralName::DNSName(d) = n { Some((*d).to_owned()) } else { None });
        let cn = || {
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .find(|cn| !cn.is_empty())
                .map(str::to_owned)
        };
        let (name, missing) = match self.name {
            CertificateName::Auto => (uri().or_else(dns).or_else(cn), "URI SAN, DNS SAN or common name"),
            CertificateName::Uri => (uri(), "URI subject alternative name"),
            CertificateName::Dns => (dns(), "DNS subject alternative name"),
            CertificateName::Cn => (cn(), "subject common name"),
        };
        let name = name.ok_or_else(|| format!("the client certificate has no {missing} to identify the caller by"))?;
        Ok(format!("{}{name}", self.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with these names (DER).
    fn certificate(cn: Option<&str>, dns: Option<&str>, uri: Option<&str>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        if let Some(dns) = dns {
            params.subject_alt_names.push(rcgen::SanType::DnsName(dns.try_into().unwrap()));
        }
        if let Some(uri) = uri {
            params.subject_alt_names.push(rcgen::SanType::URI(uri.try_into().unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn identity(name: CertificateName, prefix: &str) -> CertificateIdentity {
        CertificateIdentity { name, prefix: prefix.into() }
    }

    #[test]
    fn the_subject_is_the_chosen_name_of_the_certificate_behind_the_prefix() {
        use CertificateName::{Auto, Cn, Dns, Uri};
        let all = certificate(Some("deployer"), Some("deployer.ci.example"), Some("spiffe://example.org/ci/deployer"));
        let no_uri = certificate(Some("deployer"), Some("deployer.ci.example"), None);
        let cn_only = certificate(Some("admin"), None, None);
        let uri_only = certificate(None, None, Some("spiffe://example.org/ci/deployer"));
        let cases: [(&[u8], CertificateIdentity, Result<&str, &str>); 9] = [
            (&all, CertificateIdentity::default(), Ok("cert:spiffe://example.org/ci/deployer")),
            (&no_uri, identity(Auto, "cert:"), Ok("cert:deployer.ci.example")),
            (&cn_only, identity(Auto, "cert:"), Ok("cert:admin")),
            (&uri_only, identity(Auto, "cert:"), Ok("cert:spiffe://example.org/ci/deployer")),
            (&all, identity(Dns, "mtls/"), Ok("mtls/deployer.ci.example")),
            (&all, identity(Cn, ""), Ok("deployer")),
            (&no_uri, identity(Uri, "cert:"), Err("no URI subject alternative name")),
            (&uri_only, identity(Cn, "cert:"), Err("no subject common name")),
            (&cn_only, identity(Dns, "cert:"), Err("no DNS subject alternative name")),
        ];
        for (der, identity, want) in cases {
            let got = identity.subject_of(der);
            match want {
                Ok(subject) => assert_eq!(got.as_deref(), Ok(subject), "{identity:?}"),
                Err(says) => {
                    let why = got.expect_err("no such name");
                    assert!(why.contains(says), "{identity:?}: {why}");
                }
            }
        }
        assert!(identity(Auto, "cert:").subject_of(b"not a certificate").is_err());
    }
}
