//! Sealing secret variable values: ChaCha20-Poly1305 under a key the
//! operator gives the server (a file or the environment, never the
//! database), so a copy of the database alone reveals no secret. The
//! execution id is bound in as associated data: a sealed value copied onto
//! another execution does not open. A resume copies it with its chain, and
//! so seals again for the new execution.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use ring::{
    aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    hmac,
    rand::{SecureRandom, SystemRandom},
};

/// What a masked secret looks like in stored output.
pub const MASK: &str = "***";
/// Shorter values are not masked: masking `a` would garble every output.
pub const MIN_MASKED_CHARS: usize = 3;

/// The server's secrets key, ready to seal and open.
pub struct Sealer {
    key: LessSafeKey,
    digest: hmac::Key,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(…)")
    }
}

/// A key that is not 32 bytes (base64 or raw), or a value that does not open.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SecretsError(pub String);

impl Sealer {
    /// From 32 bytes, given raw or as base64 (what `openssl rand -base64 32` prints).
    pub fn from_key(material: &[u8]) -> Result<Sealer, SecretsError> {
        let trimmed = std::str::from_utf8(material).map(str::trim).ok();
        let bytes = match trimmed.and_then(|t| STANDARD.decode(t).ok()) {
            Some(decoded) if decoded.len() == 32 => decoded,
            _ if material.len() == 32 => material.to_vec(),
            _ => {
                return Err(SecretsError(
                    "the secrets key must be 32 bytes, raw or base64 (e.g. `openssl rand -base64 32`)".into(),
                ));
            }
        };
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| SecretsError("bad key".into()))?;
        // The digest key is derived, so one key serves both.
        let digest = hmac::Key::new(
            hmac::HMAC_SHA256,
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &bytes), b"digest").as_ref(),
        );
        Ok(Sealer { key: LessSafeKey::new(unbound), digest, random: SystemRandom::new() })
    }

    /// A fresh random key, base64 (for `dev`, which keeps it in a file).
    pub fn generate_key() -> Result<String, SecretsError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| SecretsError("no randomness".into()))?;
        Ok(STANDARD.encode(bytes))
    }

    /// Seals `values` for execution `execution_id`.
    pub fn seal(&self, execution_id: &str, values: &BTreeMap<String, String>) -> Result<String, SecretsError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| SecretsError("no randomness".into()))?;
        let mut data = serde_json::to_vec(values).map_err(|e| SecretsError(e.to_string()))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(execution_id.as_bytes()),
                &mut data,
            )
            .map_err(|_| SecretsError("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("v1:{}", STANDARD.encode(out)))
    }

    /// Opens what [`Sealer::seal`] sealed for `execution_id`.
    pub fn open(&self, execution_id: &str, sealed: &str) -> Result<BTreeMap<String, String>, SecretsError> {
        let fail = || {
            SecretsError(format!("the secrets of execution {execution_id} do not open with this server's secrets key"))
        };
        let raw = sealed.strip_prefix("v1:").and_then(|b| STANDARD.decode(b).ok()).ok_or_else(fail)?;
        if raw.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut data = data.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(execution_id.as_bytes()), &mut data).map_err(|_| fail())?;
        serde_json::from_slice(plain).map_err(|_| fail())
    }

    /// A keyed digest of a value: what idempotency compares instead of the
    /// value itself, so the stored fingerprint reveals nothing.
    pub fn digest(&self, value: &str) -> String {
        let tag = hmac::sign(&self.digest, value.as_bytes());
        STANDARD.encode(tag.as_ref())
    }
}

/// `text` with every secret value of at least [`MIN_MASKED_CHARS`]
/// characters replaced by [`MASK`], longest first (so a secret that
/// contains another is masked whole).
pub fn mask<'a>(text: &'a str, secrets: &[String]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for secret in secrets {
        if secret.chars().count() >= MIN_MASKED_CHARS && out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), MASK));
        }
    }
    out
}

/// Secret values, longest first, as [`mask`] wants them.
pub fn masking_order(values: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = values.into_iter().collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_key(Sealer::generate_key().unwrap().as_bytes()).unwrap()
    }

    #[test]
    fn sealed_values_open_only_for_their_execution_and_key() {
        let s = sealer();
        let values: BTreeMap<String, String> = [("db_password".to_string(), "hunter22".to_string())].into();
        let sealed = s.seal("e1", &values).unwrap();
        assert!(!sealed.contains("hunter22"));
        assert_eq!(s.open("e1", &sealed).unwrap(), values);
        assert!(s.open("e2", &sealed).is_err(), "bound to its execution");
        assert!(sealer().open("e1", &sealed).is_err(), "bound to its key");
        assert!(s.open("e1", "v1:AAAA").is_err());
        assert_ne!(s.seal("e1", &values).unwrap(), sealed, "a fresh nonce each time");
    }

    #[test]
    fn keys_are_32_bytes_raw_or_base64() {
        assert!(Sealer::from_key(&[7u8; 32]).is_ok());
        assert!(Sealer::from_key(format!("{}\n", STANDARD.encode([7u8; 32])).as_bytes()).is_ok());
        assert!(Sealer::from_key(b"short").is_err());
        assert!(Sealer::from_key(STANDARD.encode([7u8; 16]).as_bytes()).is_err());
    }

    #[test]
    fn digests_are_keyed_and_stable() {
        let s = sealer();
        assert_eq!(s.digest("x"), s.digest("x"));
        assert_ne!(s.digest("x"), sealer().digest("x"));
    }

    #[test]
    fn masking_hides_every_secret_longest_first() {
        let secrets = masking_order(["pass".to_string(), "password1".to_string(), "ab".to_string()]);
        assert_eq!(mask("use password1 or pass, not ab", &secrets), "use *** or ***, not ab");
        assert_eq!(mask("nothing", &[]), "nothing");
    }
}
