//! The registered clients and their public keys.
//!
//! Keys come from the configuration (inline JWKS or a JWKS file, loaded at start) or from a
//! `jku` URL that the client registered. Fetched key sets are cached; an unknown `kid` triggers
//! one refetch (key rotation), at most once per [`MIN_REFRESH`] per URL so that a stream of
//! bogus `kid`s cannot make radsight hammer the client's server.
//!
//! Each key is decoded into a [`DecodingKey`] once, when its set is loaded or fetched, not on
//! every token it verifies: the decoded keys live and are replaced with their set.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::client_jwt::AuthFailure;
use crate::configuration::{AuthSettings, ClientSettings};

const MIN_REFRESH: Duration = Duration::from_secs(30);
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct RegisteredClient {
    pub iss: String,
    pub jku: Vec<String>,
    pub fhir_servers: Vec<String>,
    inline: Option<Arc<DecodedSet>>,
}

impl RegisteredClient {
    /// True when `url` is one of this client's registered FHIR base URLs (trailing slashes aside).
    pub fn may_use_fhir_server(&self, url: &str) -> bool {
        let url = url.trim_end_matches('/');
        self.fhir_servers.iter().any(|s| s.trim_end_matches('/') == url)
    }
}

/// One published key and what verifies with it.
#[derive(Debug)]
pub struct VerifyingKey {
    jwk: Jwk,
    /// `None` when the JWK cannot verify anything (an unsupported key type, bad coordinates):
    /// a token naming it is refused as signed by an unknown key, as before, without failing
    /// the rest of its set.
    pub decoding: Option<DecodingKey>,
}

impl VerifyingKey {
    fn new(jwk: Jwk) -> VerifyingKey {
        VerifyingKey { decoding: DecodingKey::from_jwk(&jwk).ok(), jwk }
    }

    /// False when the key was published for another algorithm than `alg` (alg confusion). A
    /// JWK `alg` that names no JWS algorithm (an encryption one) allows none.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.jwk.common.key_algorithm.is_none_or(|published| Algorithm::try_from(published).ok() == Some(alg))
    }
}

/// A JWKS with every key decoded once.
#[derive(Debug)]
pub struct DecodedSet(Vec<Arc<VerifyingKey>>);

impl DecodedSet {
    fn new(set: JwkSet) -> DecodedSet {
        DecodedSet(set.keys.into_iter().map(|jwk| Arc::new(VerifyingKey::new(jwk))).collect())
    }

    /// The first key with this `kid`, as [`JwkSet::find`] picks it.
    fn find(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.0.iter().find(|k| k.jwk.common.key_id.as_deref() == Some(kid)).cloned()
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
    cache: RwLock<HashMap<String, (Instant, Arc<DecodedSet>)>>,
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
                .map(|t| serde_json::from_str::<JwkSet>(&t).map(|set| Arc::new(DecodedSet::new(set))))
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

    pub async fn find_key(&self, iss: &str, source: &KeySource, kid: &str) -> Result<Arc<VerifyingKey>, AuthFailure> {
        let client = self.client(iss).ok_or(AuthFailure::UnknownIssuer)?;
        let url = match source {
            KeySource::Jku(url) => url.clone(),
            KeySource::Registered => match (&client.inline, client.jku.first()) {
                (Some(set), _) => return set.find(kid).ok_or(AuthFailure::UnknownKey),
                (None, Some(url)) => url.clone(),
                (None, None) => return Err(AuthFailure::UnknownKey),
            },
        };
        let set = self.fetched(&url, false).await?;
        if let Some(k) = set.find(kid) {
            return Ok(k);
        }
        let set = self.fetched(&url, true).await?;
        set.find(kid).ok_or(AuthFailure::UnknownKey)
    }

    /// The cached set when it is fresh enough for this use.
    fn cached(&self, url: &str, refresh: bool) -> Option<Arc<DecodedSet>> {
        let cache = self.cache.read().expect("jwks cache lock");
        let (at, set) = cache.get(url)?;
        let age = at.elapsed();
        (age < self.cache_ttl && (!refresh || age < MIN_REFRESH)).then(|| set.clone())
    }

    async fn fetched(&self, url: &str, refresh: bool) -> Result<Arc<DecodedSet>, AuthFailure> {
        if let Some(set) = self.cached(url, refresh) {
            return Ok(set);
        }
        let gate = self.in_flight.lock().expect("jwks in-flight lock").entry(url.to_owned()).or_default().clone();
        let _turn = gate.lock().await;
        // Whoever held the gate before may have fetched it just now.
        if let Some(set) = self.cached(url, refresh) {
            return Ok(set);
        }
        let set = Arc::new(DecodedSet::new(self.fetch(url).await?));
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

#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::KeyAlgorithm;
    use jsonwebtoken::{Validation, decode};
    use radsight_keys::ClientKey;

    use super::*;

    fn key_with(kid: &str, alg: Option<KeyAlgorithm>) -> (ClientKey, Jwk) {
        let key = ClientKey::generate(Algorithm::ES384).expect("generate ES384 key");
        let mut jwk = key.public_jwk();
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.key_algorithm = alg;
        (key, jwk)
    }

    #[test]
    fn a_decoded_key_verifies_what_its_private_key_signed() {
        let (signer, jwk) = key_with("k1", Some(KeyAlgorithm::ES384));
        let (_, other) = key_with("k2", None);
        let set = DecodedSet::new(JwkSet { keys: vec![jwk, other] });
        let token = signer.client_token("https://ehr.example.org", "https://radsight.example.org/cds-services/x").unwrap();

        let mut validation = Validation::new(Algorithm::ES384);
        validation.set_audience(&["https://radsight.example.org/cds-services/x"]);
        let found = set.find("k1").expect("k1 is in the set");
        decode::<serde_json::Value>(&token, found.decoding.as_ref().unwrap(), &validation).expect("k1 verifies its own token");
        let wrong = set.find("k2").expect("k2 is in the set");
        assert!(
            decode::<serde_json::Value>(&token, wrong.decoding.as_ref().unwrap(), &validation).is_err(),
            "k2 must not verify k1's token"
        );
        assert!(set.find("k3").is_none());
    }

    #[test]
    fn a_key_is_used_only_with_the_algorithm_it_was_published_for() {
        let (_, es384) = key_with("a", Some(KeyAlgorithm::ES384));
        let (_, any) = key_with("b", None);
        let (_, encryption) = key_with("c", Some(KeyAlgorithm::RSA_OAEP));
        let set = DecodedSet::new(JwkSet { keys: vec![es384, any, encryption] });

        let a = set.find("a").unwrap();
        assert!(a.allows(Algorithm::ES384));
        assert!(!a.allows(Algorithm::ES256));
        assert!(!a.allows(Algorithm::RS384));
        assert!(set.find("b").unwrap().allows(Algorithm::ES384), "a key without alg limits nothing");
        let c = set.find("c").unwrap();
        assert!(!c.allows(Algorithm::ES384) && !c.allows(Algorithm::RS256), "an encryption key signs nothing");
    }

    #[test]
    fn an_undecodable_key_fails_alone_and_the_first_of_a_kid_wins() {
        let (_, mut broken) = key_with("dup", None);
        if let jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec) = &mut broken.algorithm {
            ec.x = "not base64url!".to_owned();
        } else {
            panic!("an ES384 key is an EC key");
        }
        let (_, good) = key_with("dup", None);
        let (_, other) = key_with("other", None);
        let set = DecodedSet::new(JwkSet { keys: vec![broken, good, other] });

        assert!(set.find("dup").unwrap().decoding.is_none(), "the first key with the kid is the one found, as JwkSet::find does");
        assert!(set.find("other").unwrap().decoding.is_some(), "one bad key does not spoil its set");
    }
}
