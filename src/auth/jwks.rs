//! Token keys from an identity provider's JWKS URL. Providers rotate their
//! signing keys: the set is fetched at start-up (a server that cannot fetch
//! it does not start, and says which URL failed), then again every
//! `--auth-jwks-refresh`, and sooner when a token names a key id the set
//! does not have (at most once per [`MIN_GAP`]). A failed refresh keeps the
//! keys already known and is logged as a warning.

use std::{
    sync::{Mutex, RwLock, RwLockReadGuard},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::sync::Notify;

use super::jwt::{Key, jwks_keys};

/// How often the set is fetched again by default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(600);

/// The shortest time between two fetches: unknown key ids in tokens (anyone
/// can send those) must not make us hammer the provider.
pub const MIN_GAP: Duration = Duration::from_secs(30);

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest JWKS document accepted.
const MAX_BYTES: usize = 1 << 20;

pub struct RemoteJwks {
    url: String,
    refresh: Duration,
    client: reqwest::Client,
    keys: RwLock<Vec<Key>>,
    /// Woken when a token names an unknown key id.
    unknown: Notify,
    last_fetch: Mutex<Option<Instant>>,
}

impl RemoteJwks {
    pub fn new(url: &str, refresh: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(
            url.starts_with("https://") || url.starts_with("http://"),
            "--auth-jwks-url {url:?} must be an http:// or https:// URL"
        );
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .context("cannot set up the HTTP client for --auth-jwks-url")?;
        Ok(RemoteJwks {
            url: url.to_owned(),
            refresh: refresh.max(Duration::from_secs(1)),
            client,
            keys: RwLock::new(Vec::new()),
            unknown: Notify::new(),
            last_fetch: Mutex::new(None),
        })
    }

    /// The keys fetched last.
    pub(super) fn keys(&self) -> RwLockReadGuard<'_, Vec<Key>> {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A token named a key id that no key has.
    pub(super) fn unknown_key_seen(&self) {
        self.unknown.notify_one();
    }

    /// Fetches the set and replaces the keys; returns how many there are.
    pub async fn fetch(&self) -> anyhow::Result<usize> {
        *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let url = &self.url;
        let response = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("cannot fetch the JWKS at {url}"))?;
        let body = response.bytes().await.with_context(|| format!("cannot read the JWKS at {url}"))?;
        anyhow::ensure!(body.len() <= MAX_BYTES, "the JWKS at {url} is larger than {MAX_BYTES} bytes");
        let text = std::str::from_utf8(&body).with_context(|| format!("the JWKS at {url} is not UTF-8"))?;
        let keys = jwks_keys(text).with_context(|| format!("the JWKS at {url}"))?;
        anyhow::ensure!(!keys.is_empty(), "the JWKS at {url} holds no key");
        let count = keys.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(count)
    }

    /// Fetches again every `refresh`, or sooner after an unknown key id.
    pub fn spawn_refresh(self: std::sync::Arc<Self>) {
        tokio::spawn(async move {
            loop {
                // Deadlines from the last fetch, so that wake-ups never put the periodic one off.
                let last = self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(Instant::now);
                let periodic = tokio::time::Instant::from_std(last + self.refresh);
                let soonest = tokio::time::Instant::from_std(last + MIN_GAP).min(periodic);
                tokio::select! {
                    _ = tokio::time::sleep_until(periodic) => {}
                    _ = self.unknown.notified() => tokio::time::sleep_until(soonest).await,
                }
                match self.fetch().await {
                    Ok(count) => tracing::debug!(url = %self.url, keys = count, "JWKS refreshed"),
                    Err(e) => tracing::warn!(
                        error = format!("{e:#}"),
                        "JWKS refresh failed; the keys fetched before stay in use"
                    ),
                }
            }
        });
    }
}
