//! SMART Backend Services access tokens for radsight's EHR destinations.
//!
//! For a token radsight signs a client assertion with its active key (RFC 7523: `iss` = `sub` =
//! its client id at the EHR, `aud` = the token endpoint, `exp` four minutes ahead, inside the
//! five the specification allows, and a fresh `jti`), and posts it with
//! `grant_type=client_credentials` and the scopes it needs. Tokens are cached per (token
//! endpoint, client id, scope) until shortly before they expire, held as secrets and never
//! logged; a token the server stops honouring early is dropped with [`BackendTokens::forget`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::configuration::EhrDestination;
use crate::http_client::read_limited;
use crate::keys::keyring::{Keyring, KeyringError};

/// The assertion's lifetime: under the five minutes SMART Backend Services allows, leaving room
/// for clock skew between radsight and the authorisation server.
const ASSERTION_LIFETIME_SECS: i64 = 240;
/// Token and discovery answers are small; more is refused unread.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// A token without `expires_in` is used for this long at most.
const DEFAULT_TOKEN_SECS: u64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("radsight has no signing key (run `radsight keys rotate` and register the key with the EHR)")]
    NoKey,
    #[error("radsight's keyring cannot be read")]
    Keyring(#[from] KeyringError),
    #[error("the authorisation server {url} could not be reached")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the authorisation server answered HTTP {status}")]
    ServerError { status: u16 },
    #[error("the authorisation server refused the assertion: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused { status: u16, error: String, description: Option<String> },
    #[error("the EHR's SMART configuration names no usable token endpoint: {0}")]
    Discovery(String),
    #[error("the token answer is not usable: {0}")]
    BadAnswer(String),
}

impl TokenError {
    /// A stable code for the outbox and the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::NoKey => "no-signing-key",
            TokenError::Keyring(_) => "keyring-unreadable",
            TokenError::Unreachable { .. } | TokenError::ServerError { .. } => "token-endpoint-unavailable",
            TokenError::Refused { .. } => "token-refused",
            TokenError::Discovery(_) => "token-endpoint-unknown",
            TokenError::BadAnswer(_) => "token-answer-invalid",
        }
    }

    /// What the operator is shown with the code: the server's own error and description for a
    /// refusal, else the message.
    pub fn detail(&self) -> String {
        match self {
            TokenError::Refused { error, description, .. } => match description {
                Some(d) => format!("{error} ({d})"),
                None => error.clone(),
            },
            other => other.to_string(),
        }
    }

    /// Whether trying again later can help. A refusal can: the EHR's administrators may fix
    /// radsight's registration in the meantime, so it is retried as configured.
    pub fn is_transient(&self) -> bool {
        !matches!(self, TokenError::NoKey | TokenError::Keyring(_))
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    token_url: String,
    client_id: String,
    scope: String,
}

struct Cached {
    token: SecretString,
    use_until: Instant,
}

/// Access tokens for the configured EHRs; one per instance.
pub struct BackendTokens {
    http: reqwest::Client,
    keyring: Keyring,
    tokens: Mutex<HashMap<CacheKey, Cached>>,
    /// Token endpoints found by SMART discovery, by FHIR base.
    endpoints: Mutex<HashMap<String, String>>,
}

impl BackendTokens {
    pub fn new(http: reqwest::Client, keyring: Keyring) -> BackendTokens {
        BackendTokens { http, keyring, tokens: Mutex::default(), endpoints: Mutex::default() }
    }

    /// A token for `ehr`: the cached one while it has time left, else a new one.
    pub async fn access_token(&self, ehr: &EhrDestination) -> Result<SecretString, TokenError> {
        let key = self.cache_key(ehr).await?;
        if let Some(c) = self.tokens.lock().expect("token cache").get(&key)
            && Instant::now() < c.use_until
        {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.request(ehr, &key.token_url).await?;
        // Renew a little before expiry: a fifth of the lifetime, at most a minute.
        let margin = (lifetime / 5).min(60);
        let use_until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(margin));
        self.tokens.lock().expect("token cache").insert(key, Cached { token: token.clone(), use_until });
        Ok(token)
    }

    /// Drops the cached token of `ehr` (the server answered 401 to it).
    pub async fn forget(&self, ehr: &EhrDestination) {
        if let Ok(key) = self.cache_key(ehr).await {
            self.tokens.lock().expect("token cache").remove(&key);
        }
    }

    async fn cache_key(&self, ehr: &EhrDestination) -> Result<CacheKey, TokenError> {
        Ok(CacheKey { token_url: self.token_url(ehr).await?, client_id: ehr.client_id.clone(), scope: ehr.scope.clone() })
    }

    /// The configured token endpoint, else the one the EHR's SMART configuration names.
    async fn token_url(&self, ehr: &EhrDestination) -> Result<String, TokenError> {
        if !ehr.token_url.is_empty() {
            return Ok(ehr.token_url.clone());
        }
        let base = ehr.fhir_base.trim_end_matches('/').to_owned();
        if let Some(url) = self.endpoints.lock().expect("endpoint cache").get(&base) {
            return Ok(url.clone());
        }
        let url = format!("{base}/.well-known/smart-configuration");
        let resp = self
            .http
            .get(&url)
            .header("accept", "application/json")
            .timeout(Duration::from_millis(ehr.timeout_ms))
            .send()
            .await
            .map_err(|source| TokenError::Unreachable { url: url.clone(), source })?;
        if !resp.status().is_success() {
            return Err(TokenError::ServerError { status: resp.status().as_u16() });
        }
        let body = read_limited(resp, MAX_ANSWER_BYTES).await.map_err(|e| TokenError::Discovery(e.to_string()))?;
        let config: Value = serde_json::from_slice(&body).map_err(|e| TokenError::Discovery(e.to_string()))?;
        let token_url = config["token_endpoint"].as_str().filter(|u| url::Url::parse(u).is_ok()).map(str::to_owned);
        let token_url = token_url.ok_or_else(|| TokenError::Discovery("token_endpoint is missing or not a URL".into()))?;
        self.endpoints.lock().expect("endpoint cache").insert(base, token_url.clone());
        Ok(token_url)
    }

    /// Asks the token endpoint for a token: (token, lifetime in seconds).
    async fn request(&self, ehr: &EhrDestination, token_url: &str) -> Result<(SecretString, u64), TokenError> {
        let key = self.keyring.active()?.ok_or(TokenError::NoKey)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({
            "iss": ehr.client_id,
            "sub": ehr.client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let assertion = key.sign(&claims, None).map_err(|e| TokenError::BadAnswer(format!("signing the assertion: {e}")))?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", &ehr.scope)
            .append_pair("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            .append_pair("client_assertion", &assertion)
            .finish();
        let resp = self
            .http
            .post(token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .timeout(Duration::from_millis(ehr.timeout_ms))
            .body(form)
            .send()
            .await
            .map_err(|source| TokenError::Unreachable { url: token_url.to_owned(), source })?;
        let status = resp.status().as_u16();
        let body = read_limited(resp, MAX_ANSWER_BYTES).await.map_err(|e| TokenError::BadAnswer(e.to_string()))?;
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status >= 500 || status == 429 {
            return Err(TokenError::ServerError { status });
        }
        if status != 200 {
            // RFC 6749 §5.2: error and error_description. Only those are kept; the body may
            // echo what was sent.
            let error = answer["error"].as_str().unwrap_or("unknown_error").chars().take(64).collect();
            let description = answer["error_description"].as_str().map(|d| d.chars().take(200).collect());
            return Err(TokenError::Refused { status, error, description });
        }
        let token =
            answer["access_token"].as_str().filter(|t| !t.is_empty()).ok_or_else(|| TokenError::BadAnswer("no access_token".into()))?;
        if !answer["token_type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
            return Err(TokenError::BadAnswer("token_type is not bearer".into()));
        }
        let lifetime = answer["expires_in"].as_u64().unwrap_or(DEFAULT_TOKEN_SECS).min(DEFAULT_TOKEN_SECS.max(3600));
        Ok((SecretString::from(token.to_owned()), lifetime))
    }
}

/// The `Authorization` header value for a token.
pub fn bearer(token: &SecretString) -> String {
    format!("Bearer {}", token.expose_secret())
}
