//! The registered clients and their public keys.
//!
//! Keys come from the configuration (inline JWKS or a JWKS file, loaded at start) or from a
//! `jku` URL that the client registered. Fetched key sets are cached; an unknown `kid` triggers
//! one refetch (key rotation), at most once per [`MIN_REFRESH`] per URL so that a stream of
//! bogus `kid`s cannot make radsight hammer the client's server.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};

use super::client_jwt::AuthFailure;
use crate::configuration::{AuthSettings, ClientSettings};

const MIN_REFRESH: Duration = Duration::from_secs(30);
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct RegisteredClient {
    pub iss: String,
    pub jku: Vec<String>,
    pub fhir_servers: Vec<String>,
    inline: Option<JwkSet>,
}

impl RegisteredClient {
    /// True when `url` is one of this client's registered FHIR base URLs (trailing slashes aside).
    pub fn may_use_fhir_server(&self, url: &str) -> bool {
        let url = url.trim_end_matches('/');
        self.fhir_servers.iter().any(|s| s.trim_end_matches('/') == url)
    }
}

pub enum KeySource {
    /// The client's configured keys (inline, file, or its first registered `jku`).
    Registered,
    /// A registered `jku` named in the JWT header.
    Jku(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("client {iss}: could not read JWKS file {path}")]
    ReadJwksFile { iss: String, path: String, source: std::io::Error },
    #[error("client {iss}: the JWKS is not valid: {source}")]
    ParseJwks { iss: String, source: serde_json::Error },
}

pub struct KeyStore {
    clients: HashMap<String, RegisteredClient>,
    http: reqwest::Client,
    cache: RwLock<HashMap<String, (Instant, Arc<JwkSet>)>>,
    /// One fetch at a time per URL (single flight): concurrent callers wait for it and then
    /// read the cache, so a burst of unknown `kid`s makes one request, not one each.
    in_flight: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    cache_ttl: Duration,
    fetch_timeout: Duration,
}

impl KeyStore {
    pub fn from_settings(clients: &[ClientSettings], auth: &AuthSettings, http: reqwest::Client) -> Result<KeyStore, KeyStoreError> {
        let mut map = HashMap::new();
        for c in clients {
            let text = match (&c.jwks, &c.jwks_file) {
                (Some(inline), _) => Some(inline.clone()),
                (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(|source| KeyStoreError::ReadJwksFile {
                    iss: c.iss.clone(),
                    path: path.display().to_string(),
                    source,
                })?),
                (None, None) => None,
            };
            let inline = text
                .map(|t| serde_json::from_str::<JwkSet>(&t))
                .transpose()
                .map_err(|source| KeyStoreError::ParseJwks { iss: c.iss.clone(), source })?;
            map.insert(
                c.iss.clone(),
                RegisteredClient { iss: c.iss.clone(), jku: c.jku.clone(), fhir_servers: c.fhir_servers.clone(), inline },
            );
        }
        Ok(KeyStore {
            clients: map,
            http,
            cache: RwLock::new(HashMap::new()),
            in_flight: std::sync::Mutex::new(HashMap::new()),
            cache_ttl: Duration::from_secs(auth.jwks_cache_secs),
            fetch_timeout: Duration::from_millis(auth.jwks_fetch_timeout_ms),
        })
    }

    pub fn client(&self, iss: &str) -> Option<&RegisteredClient> {
        self.clients.get(iss)
    }

    pub async fn find_key(&self, iss: &str, source: &KeySource, kid: &str) -> Result<Jwk, AuthFailure> {
        let client = self.client(iss).ok_or(AuthFailure::UnknownIssuer)?;
        let url = match source {
            KeySource::Jku(url) => url.clone(),
            KeySource::Registered => match (&client.inline, client.jku.first()) {
                (Some(set), _) => return set.find(kid).cloned().ok_or(AuthFailure::UnknownKey),
                (None, Some(url)) => url.clone(),
                (None, None) => return Err(AuthFailure::UnknownKey),
            },
        };
        let set = self.fetched(&url, false).await?;
        if let Some(k) = set.find(kid) {
            return Ok(k.clone());
        }
        let set = self.fetched(&url, true).await?;
        set.find(kid).cloned().ok_or(AuthFailure::UnknownKey)
    }

    /// The cached set when it is fresh enough for this use.
    fn cached(&self, url: &str, refresh: bool) -> Option<Arc<JwkSet>> {
        let cache = self.cache.read().expect("jwks cache lock");
        let (at, set) = cache.get(url)?;
        let age = at.elapsed();
        (age < self.cache_ttl && (!refresh || age < MIN_REFRESH)).then(|| set.clone())
    }

    async fn fetched(&self, url: &str, refresh: bool) -> Result<Arc<JwkSet>, AuthFailure> {
        if let Some(set) = self.cached(url, refresh) {
            return Ok(set);
        }
        let gate = self.in_flight.lock().expect("jwks in-flight lock").entry(url.to_owned()).or_default().clone();
        let _turn = gate.lock().await;
        // Whoever held the gate before may have fetched it just now.
        if let Some(set) = self.cached(url, refresh) {
            return Ok(set);
        }
        let set = Arc::new(self.fetch(url).await?);
        self.cache.write().expect("jwks cache lock").insert(url.to_owned(), (Instant::now(), set.clone()));
        Ok(set)
    }

    async fn fetch(&self, url: &str) -> Result<JwkSet, AuthFailure> {
        let fail = |why: &str| {
            tracing::warn!(jku = url, why, "could not fetch a client's JWKS");
            AuthFailure::KeysUnavailable
        };
        let resp = self
            .http
            .get(url)
            .timeout(self.fetch_timeout)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|_| fail("request failed"))?;
        if !resp.status().is_success() {
            return Err(fail("non-success status"));
        }
        let body = crate::http_client::read_limited(resp, MAX_JWKS_BYTES).await.map_err(|_| fail("body unreadable or too large"))?;
        serde_json::from_slice(&body).map_err(|_| fail("not a JWKS"))
    }
}
