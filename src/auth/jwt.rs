//! JWT verification with configured keys: an HS256 secret, RS256/ES256
//! public keys from a PEM file, a JWKS file, or a JWKS URL fetched again
//! periodically (see `jwks.rs`). Expiry, not-before, issuer and audience are
//! checked; unsigned (`alg: none`) tokens never pass.

use std::{path::PathBuf, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind, jwk::JwkSet};
use serde::Deserialize;

/// Where the keys come from and which claims are required.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub hs256_secret: Option<String>,
    /// A PEM file with an RSA (RS256) or EC P-256 (ES256) public key.
    pub public_key_file: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    /// An identity provider's JWKS endpoint (https://…/.well-known/jwks.json).
    pub jwks_url: Option<String>,
    /// How often the JWKS URL is fetched again (keys rotate).
    pub jwks_refresh: Duration,
    /// When set, tokens must carry this `iss`; a token without one is refused.
    pub issuer: Option<String>,
    /// When set, tokens must carry an `aud` that includes this; a token without one is refused.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (whole seconds count).
    pub leeway: Duration,
}

/// The leeway when none is configured (also the `--auth-leeway` default).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret: None,
            public_key_file: None,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh: super::jwks::DEFAULT_REFRESH,
            issuer: None,
            audience: None,
            leeway: DEFAULT_LEEWAY,
        }
    }
}

impl JwtConfig {
    pub fn is_configured(&self) -> bool {
        self.hs256_secret.is_some()
            || self.public_key_file.is_some()
            || self.jwks_file.is_some()
            || self.jwks_url.is_some()
    }
}

/// Why a token was refused; shown to the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("unsigned tokens (alg none) are refused")]
    Unsigned,
    #[error("tokens signed with {0} are not accepted by this server")]
    UnsupportedAlgorithm(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (its nbf is in the future)")]
    NotYetValid,
    #[error("the token's issuer is not {0:?}")]
    WrongIssuer(String),
    #[error("the token's audience does not include {0:?}")]
    WrongAudience(String),
    #[error("the token's signature does not verify with any configured key")]
    BadSignature,
    #[error("the token lacks the {0} claim, which this server requires")]
    MissingClaim(String),
}

pub(super) struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

pub struct Verifier {
    keys: Vec<Key>,
    /// Keys of the JWKS URL, replaced at each fetch.
    remote: Option<Arc<super::jwks::RemoteJwks>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<i64>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
}

impl Verifier {
    /// Loads the configured keys; fails on unreadable files or bad keys.
    pub fn new(config: &JwtConfig) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        if let Some(secret) = &config.hs256_secret {
            anyhow::ensure!(secret.len() >= 32, "the HS256 secret must be at least 32 bytes");
            keys.push(Key { kid: None, algorithm: Algorithm::HS256, key: DecodingKey::from_secret(secret.as_bytes()) });
        }
        if let Some(path) = &config.public_key_file {
            let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let (algorithm, key) = match DecodingKey::from_rsa_pem(&pem) {
                Ok(key) => (Algorithm::RS256, key),
                Err(_) => (
                    Algorithm::ES256,
                    DecodingKey::from_ec_pem(&pem).map_err(|e| {
                        anyhow::anyhow!("{} holds neither an RSA nor an EC public key: {e}", path.display())
                    })?,
                ),
            };
            keys.push(Key { kid: None, algorithm, key });
        }
        if let Some(path) = &config.jwks_file {
            let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            keys.extend(jwks_keys(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
        }
        let remote = config
            .jwks_url
            .as_ref()
            .map(|url| super::jwks::RemoteJwks::new(url, config.jwks_refresh))
            .transpose()?
            .map(Arc::new);
        anyhow::ensure!(!keys.is_empty() || remote.is_some(), "no token verification key is configured");
        Ok(Verifier {
            keys,
            remote,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway,
        })
    }

    /// With a JWKS URL: fetches it (start-up fails if it cannot, naming the
    /// URL) and keeps fetching it in the background. Nothing otherwise.
    pub async fn start(&self) -> anyhow::Result<()> {
        if let Some(remote) = &self.remote {
            remote.fetch().await?;
            remote.clone().spawn_refresh();
        }
        Ok(())
    }

    /// The token's subject, if the token is valid.
    pub fn verify(&self, token: &str) -> Result<String, TokenError> {
        self.verify_claims(token).map(|(subject, _)| subject)
    }

    /// The token's subject and when it expires (Unix seconds, `exp`), if
    /// the token is valid.
    pub fn verify_claims(&self, token: &str) -> Result<(String, Option<i64>), TokenError> {
        let header = raw_header(token)?;
        let alg = header.alg.unwrap_or_default();
        if alg.eq_ignore_ascii_case("none") || alg.is_empty() {
            return Err(TokenError::Unsigned);
        }
        let algorithm: Algorithm = alg.parse().map_err(|_| TokenError::UnsupportedAlgorithm(alg.clone()))?;
        let remote = self.remote.as_ref().map(|r| r.keys());
        let all = || self.keys.iter().chain(remote.iter().flat_map(|keys| keys.iter()));
        // A key id we do not know: the provider may have rotated its keys; fetch them again soon.
        if let (Some(kid), Some(r)) = (&header.kid, &self.remote)
            && !all().any(|k| k.kid.as_ref() == Some(kid))
        {
            r.unknown_key_seen();
        }
        let candidates: Vec<&Key> = all()
            .filter(|k| k.algorithm == algorithm)
            .filter(|k| k.kid.is_none() || header.kid.is_none() || k.kid == header.kid)
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::UnsupportedAlgorithm(alg));
        }
        let mut error = TokenError::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation(algorithm)) {
                Ok(data) => {
                    let subject =
                        data.claims.sub.filter(|s| !s.is_empty()).ok_or(TokenError::MissingClaim("sub".into()))?;
                    return Ok((subject, data.claims.exp));
                }
                Err(e) => {
                    error = match e.kind() {
                        ErrorKind::InvalidSignature => continue,
                        ErrorKind::ExpiredSignature => TokenError::Expired,
                        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                        ErrorKind::InvalidIssuer => TokenError::WrongIssuer(self.issuer.clone().unwrap_or_default()),
                        ErrorKind::InvalidAudience => {
                            TokenError::WrongAudience(self.audience.clone().unwrap_or_default())
                        }
                        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
                        other => TokenError::Malformed(format!("{other:?}")),
                    };
                    break;
                }
            }
        }
        Err(error)
    }
}

impl Verifier {
    /// What a token signed with `algorithm` must satisfy. jsonwebtoken checks
    /// `iss` and `aud` only when the token has them, so a configured issuer
    /// or audience also makes its claim required.
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.validate_nbf = true;
        validation.leeway = self.leeway.as_secs();
        let mut required = vec!["exp", "sub"];
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// The keys of a JWKS document.
pub(super) fn jwks_keys(text: &str) -> anyhow::Result<Vec<Key>> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("not a JWKS: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let algorithm = match jwk.common.key_algorithm.map(|a| a.to_string()) {
            Some(a) => a.parse().map_err(|_| anyhow::anyhow!("JWKS key algorithm {a} is not supported"))?,
            None => match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => anyhow::bail!("JWKS key without `alg` of an unsupported type"),
            },
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| anyhow::anyhow!("JWKS key: {e}"))?;
        keys.push(Key { kid: jwk.common.key_id.clone(), algorithm, key });
    }
    Ok(keys)
}

fn raw_header(token: &str) -> Result<RawHeader, TokenError> {
    let first = token.split('.').next().unwrap_or_default();
    if token.split('.').count() != 3 {
        return Err(TokenError::Malformed("expected three dot-separated parts".into()));
    }
    let bytes =
        URL_SAFE_NO_PAD.decode(first).map_err(|_| TokenError::Malformed("the header is not base64url".into()))?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed("the header is not a JSON object".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier(issuer: Option<&str>, audience: Option<&str>) -> Verifier {
        Verifier::new(&JwtConfig {
            hs256_secret: Some(SECRET.into()),
            issuer: issuer.map(Into::into),
            audience: audience.map(Into::into),
            ..Default::default()
        })
        .unwrap()
    }

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    #[test]
    fn each_kind_of_bad_token_says_which() {
        let v = verifier(Some("idp"), Some("reprise"));
        let ok = json!({"sub": "alice", "exp": now() + 600, "iss": "idp", "aud": "reprise"});
        assert_eq!(v.verify(&token(ok.clone(), SECRET)), Ok("alice".into()));

        let cases = [
            (json!({"sub": "a", "exp": now() - 3600, "iss": "idp", "aud": "reprise"}), SECRET, TokenError::Expired),
            (
                json!({"sub": "a", "exp": now() + 600, "nbf": now() + 3600, "iss": "idp", "aud": "reprise"}),
                SECRET,
                TokenError::NotYetValid,
            ),
            (
                json!({"sub": "a", "exp": now() + 600, "iss": "evil", "aud": "reprise"}),
                SECRET,
                TokenError::WrongIssuer("idp".into()),
            ),
            (
                json!({"sub": "a", "exp": now() + 600, "iss": "idp", "aud": "other"}),
                SECRET,
                TokenError::WrongAudience("reprise".into()),
            ),
            (ok.clone(), "another-secret-another-secret-xx", TokenError::BadSignature),
            (
                json!({"exp": now() + 600, "iss": "idp", "aud": "reprise"}),
                SECRET,
                TokenError::MissingClaim("sub".into()),
            ),
        ];
        for (claims, secret, want) in cases {
            assert_eq!(v.verify(&token(claims.clone(), secret)), Err(want), "{claims}");
        }
        assert!(matches!(v.verify("not-a-token"), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn a_configured_issuer_or_audience_is_a_required_claim() {
        let v = verifier(Some("idp"), Some("reprise"));
        let without_iss = json!({"sub": "a", "exp": now() + 600, "aud": "reprise"});
        assert_eq!(v.verify(&token(without_iss, SECRET)), Err(TokenError::MissingClaim("iss".into())));
        let without_aud = json!({"sub": "a", "exp": now() + 600, "iss": "idp"});
        assert_eq!(v.verify(&token(without_aud, SECRET)), Err(TokenError::MissingClaim("aud".into())));
        assert!(TokenError::MissingClaim("aud".into()).to_string().contains("lacks the aud claim"));

        // Not configured: neither claim is needed.
        let v = verifier(None, None);
        assert_eq!(v.verify(&token(json!({"sub": "a", "exp": now() + 600}), SECRET)), Ok("a".into()));
    }

    #[test]
    fn the_leeway_applies_to_exp_and_nbf() {
        let with_leeway = |leeway: u64| {
            Verifier::new(&JwtConfig {
                hs256_secret: Some(SECRET.into()),
                leeway: Duration::from_secs(leeway),
                ..Default::default()
            })
            .unwrap()
        };
        let expired_30s_ago = token(json!({"sub": "a", "exp": now() - 30}), SECRET);
        let valid_in_30s = token(json!({"sub": "a", "exp": now() + 600, "nbf": now() + 30}), SECRET);
        assert_eq!(JwtConfig::default().leeway, DEFAULT_LEEWAY);
        let default = verifier(None, None);
        assert_eq!(default.verify(&expired_30s_ago), Ok("a".into()));
        assert_eq!(default.verify(&valid_in_30s), Ok("a".into()));
        let strict = with_leeway(0);
        assert_eq!(strict.verify(&expired_30s_ago), Err(TokenError::Expired));
        assert_eq!(strict.verify(&valid_in_30s), Err(TokenError::NotYetValid));
        let expired_2h_ago = token(json!({"sub": "a", "exp": now() - 7200}), SECRET);
        assert_eq!(with_leeway(3600).verify(&expired_2h_ago), Err(TokenError::Expired));
    }

    #[test]
    fn unsigned_tokens_are_refused() {
        let v = verifier(None, None);
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(json!({"sub": "mallory", "exp": now() + 600}).to_string());
        assert_eq!(v.verify(&format!("{header}.{body}.")), Err(TokenError::Unsigned));
    }
}
