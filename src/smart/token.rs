//! Validating the SMART access tokens that the app sends with every API call.
//!
//! The app names the EHR that issued the token (header `X-SMART-Iss`, the launch `iss`); only
//! registered EHRs are asked, so a token is never sent anywhere else. Per EHR, the token is
//! checked by RFC 7662 introspection (client-authenticated with HTTP Basic) or, for JWT access
//! tokens, against the EHR's JWKS. Active introspection answers are cached briefly, keyed by the
//! SHA-256 of (iss, token); the token itself is never stored, logged or audited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::jwks::{KeySource, KeyStore};
use crate::configuration::smart::{EhrSettings, SmartSettings, TokenValidation};
use crate::configuration::{AuthSettings, ClientSettings};

const MAX_INTROSPECTION_BYTES: usize = 64 * 1024;
const MAX_CACHED: usize = 10_000;

/// What a valid token grants: who, for which patient, with which scopes.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The registered EHR's `iss`.
    pub iss: String,
    /// The patient in context (a FHIR id), if any.
    pub patient: Option<String>,
    /// The user's `fhirUser` reference, if the token names one.
    pub fhir_user: Option<String>,
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

impl Grant {
    /// True when a scope allows reading `resource` for the patient in context. v2 `.rs`/`.r`
    /// (any permission string containing `r`) and v1 `.read`/`.*` count; scopes with a query
    /// (`?category=`) are narrower than a whole resource and do not.
    pub fn may_read(&self, resource: &str) -> bool {
        self.scopes.iter().any(|s| {
            let Some((what, perms)) = s.strip_prefix("patient/").and_then(|r| r.split_once('.')) else { return false };
            let resource_ok = what == resource || what == "*";
            let perms_ok = match perms {
                "read" | "*" => true,
                p => !p.is_empty() && p.chars().all(|c| "cruds".contains(c)) && p.contains('r'),
            };
            resource_ok && perms_ok
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenFailure {
    #[error("no bearer token")]
    MissingToken,
    #[error("the EHR is not named or not registered")]
    UnknownEhr,
    #[error("the token is not active")]
    Inactive,
    #[error("the token has expired")]
    Expired,
    #[error("the token was issued to another client")]
    WrongClient,
    #[error("the token could not be checked with the EHR")]
    Unavailable,
}

impl TokenFailure {
    /// A stable code for the audit log.
    pub fn code(self) -> &'static str {
        match self {
            TokenFailure::MissingToken => "missing-token",
            TokenFailure::UnknownEhr => "unknown-iss",
            TokenFailure::Inactive => "inactive-token",
            TokenFailure::Expired => "expired-token",
            TokenFailure::WrongClient => "wrong-client",
            TokenFailure::Unavailable => "validation-unavailable",
        }
    }
}

struct RegisteredEhr {
    settings: EhrSettings,
    secret: Option<SecretString>,
}

pub struct TokenValidator {
    ehrs: Vec<RegisteredEhr>,
    http: reqwest::Client,
    jwks: KeyStore,
    cache: Mutex<HashMap<[u8; 32], (Instant, Grant)>>,
    cache_ttl: Duration,
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadEhrsError {
    #[error("smart.ehrs {iss}: could not read client_secret_file {path}")]
    ReadSecret { iss: String, path: String, source: std::io::Error },
    #[error("smart.ehrs: could not set up JWKS retrieval")]
    Keys(#[source] crate::auth::jwks::KeyStoreError),
}

#[derive(Deserialize)]
struct Introspection {
    active: bool,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    patient: Option<String>,
    #[serde(default, rename = "fhirUser")]
    fhir_user: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
struct AccessClaims {
    #[serde(default)]
    scope: Option<String>,
    exp: i64,
    #[serde(default)]
    patient: Option<String>,
    #[serde(default, rename = "fhirUser")]
    fhir_user: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl TokenValidator {
    /// Registers `[[smart.ehrs]]` (reading their secrets) plus `extra` EHRs whose secret is
    /// already in memory (the demo EHR).
    pub fn new(
        smart: &SmartSettings,
        extra: Vec<(EhrSettings, Option<SecretString>)>,
        auth: &AuthSettings,
        http: reqwest::Client,
    ) -> Result<TokenValidator, LoadEhrsError> {
        let mut ehrs = Vec::new();
        for e in &smart.ehrs {
            let secret = match &e.client_secret_file {
                Some(path) => Some(SecretString::from(
                    std::fs::read_to_string(path)
                        .map_err(|source| LoadEhrsError::ReadSecret { iss: e.iss.clone(), path: path.display().to_string(), source })?
                        .trim()
                        .to_owned(),
                )),
                None => None,
            };
            ehrs.push(RegisteredEhr { settings: e.clone(), secret });
        }
        ehrs.extend(extra.into_iter().map(|(settings, secret)| RegisteredEhr { settings, secret }));
        let key_clients: Vec<ClientSettings> = ehrs
            .iter()
            .filter_map(|e| {
                e.settings.jwks_url.clone().map(|url| ClientSettings {
                    iss: e.settings.iss.clone(),
                    jwks: None,
                    jwks_file: None,
                    jku: vec![url],
                    fhir_servers: vec![],
                })
            })
            .collect();
        let mut key_auth = auth.clone();
        key_auth.jwks_fetch_timeout_ms = smart.token_timeout_ms;
        Ok(TokenValidator {
            jwks: KeyStore::from_settings(&key_clients, &key_auth, http.clone()).map_err(LoadEhrsError::Keys)?,
            ehrs,
            http,
            cache: Mutex::new(HashMap::new()),
            cache_ttl: Duration::from_secs(smart.introspection_cache_secs),
            timeout: Duration::from_millis(smart.token_timeout_ms),
        })
    }

    /// The registered EHR for a launch or API `iss`.
    /// The web origins of the registered EHRs (`https://ehr.example.org`), which may frame the
    /// app (EHRs embed SMART apps in their own pages).
    pub fn origins(&self) -> Vec<String> {
        let mut origins: Vec<String> = self
            .ehrs
            .iter()
            .filter_map(|e| url::Url::parse(&e.settings.iss).ok())
            .map(|u| u.origin().ascii_serialization())
            .filter(|o| o != "null")
            .collect();
        origins.sort();
        origins.dedup();
        origins
    }

    pub fn ehr(&self, iss: &str) -> Option<&EhrSettings> {
        self.ehrs.iter().map(|e| &e.settings).find(|e| e.is(iss))
    }

    /// Validates `Authorization: Bearer ...` for the EHR named `iss`.
    pub async fn validate(&self, iss: Option<&str>, authorization: Option<&str>) -> Result<Grant, TokenFailure> {
        let token = authorization
            .and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(TokenFailure::MissingToken)?;
        let ehr = iss.and_then(|iss| self.ehrs.iter().find(|e| e.settings.is(iss))).ok_or(TokenFailure::UnknownEhr)?;
        match ehr.settings.validation {
            TokenValidation::Introspection => self.introspect(ehr, token).await,
            TokenValidation::Jwks => self.verify_jwt(ehr, token).await,
        }
    }

    async fn introspect(&self, ehr: &RegisteredEhr, token: &str) -> Result<Grant, TokenFailure> {
        let key: [u8; 32] =
            Sha256::new().chain_update(ehr.settings.iss.as_bytes()).chain_update([0]).chain_update(token.as_bytes()).finalize().into();
        if let Some((until, grant)) = self.cache.lock().expect("introspection cache lock").get(&key)
            && Instant::now() < *until
        {
            return Ok(grant.clone());
        }
        let endpoint = ehr.settings.introspection_endpoint.as_deref().ok_or(TokenFailure::Unavailable)?;
        let client_id = ehr.settings.introspection_client_id.as_deref().unwrap_or(&ehr.settings.client_id);
        let unavailable = |why: &str| {
            tracing::warn!(ehr = %ehr.settings.iss, why, "token introspection failed");
            TokenFailure::Unavailable
        };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let resp = self
            .http
            .post(endpoint)
            .timeout(self.timeout)
            .basic_auth(client_id, ehr.secret.as_ref().map(|s| s.expose_secret().to_owned()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|_| unavailable("request failed"))?;
        if !resp.status().is_success() {
            return Err(unavailable("non-success status"));
        }
        let bytes = crate::http_client::read_limited(resp, MAX_INTROSPECTION_BYTES)
            .await
            .map_err(|_| unavailable("body unreadable or too large"))?;
        let answer: Introspection = serde_json::from_slice(&bytes).map_err(|_| unavailable("not an introspection response"))?;
        if !answer.active {
            return Err(TokenFailure::Inactive);
        }
        if answer.exp.is_some_and(|exp| exp <= now()) {
            return Err(TokenFailure::Expired);
        }
        if answer.client_id.as_deref().is_some_and(|c| c != ehr.settings.client_id) {
            return Err(TokenFailure::WrongClient);
        }
        let grant = Grant {
            iss: ehr.settings.iss.clone(),
            patient: answer.patient,
            fhir_user: answer.fhir_user,
            scopes: answer.scope.unwrap_or_default().split_whitespace().map(str::to_owned).collect(),
            expires_at: answer.exp,
        };
        let ttl = match answer.exp {
            Some(exp) => self.cache_ttl.min(Duration::from_secs((exp - now()).max(0) as u64)),
            None => self.cache_ttl,
        };
        if !ttl.is_zero() {
            let mut cache = self.cache.lock().expect("introspection cache lock");
            if cache.len() >= MAX_CACHED {
                let t = Instant::now();
                cache.retain(|_, (until, _)| *until > t);
            }
            if cache.len() < MAX_CACHED {
                cache.insert(key, (Instant::now() + ttl, grant.clone()));
            }
        }
        Ok(grant)
    }

    async fn verify_jwt(&self, ehr: &RegisteredEhr, token: &str) -> Result<Grant, TokenFailure> {
        let header = decode_header(token).map_err(|_| TokenFailure::Inactive)?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::ES256 | Algorithm::ES384 | Algorithm::PS256 | Algorithm::PS384
        ) {
            return Err(TokenFailure::Inactive);
        }
        let kid = header.kid.as_deref().ok_or(TokenFailure::Inactive)?;
        let found = self.jwks.find_key(&ehr.settings.iss, &KeySource::Registered, kid).await.map_err(|e| match e {
            crate::auth::client_jwt::AuthFailure::KeysUnavailable => TokenFailure::Unavailable,
            _ => TokenFailure::Inactive,
        })?;
        let key = found.decoding.as_ref().ok_or(TokenFailure::Inactive)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[ehr.settings.token_issuer.as_deref().unwrap_or(&ehr.settings.iss)]);
        validation.set_audience(&[ehr.settings.token_audience.as_deref().unwrap_or(&ehr.settings.iss)]);
        let claims = decode::<AccessClaims>(token, key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenFailure::Expired,
                _ => TokenFailure::Inactive,
            })?
            .claims;
        if claims.client_id.as_deref().is_some_and(|c| c != ehr.settings.client_id) {
            return Err(TokenFailure::WrongClient);
        }
        Ok(Grant {
            iss: ehr.settings.iss.clone(),
            patient: claims.patient,
            fhir_user: claims.fhir_user,
            scopes: claims.scope.unwrap_or_default().split_whitespace().map(str::to_owned).collect(),
            expires_at: Some(claims.exp),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(scopes: &str, resource: &str, expected: bool) {
        let g = Grant {
            iss: "x".into(),
            patient: None,
            fhir_user: None,
            scopes: scopes.split_whitespace().map(str::to_owned).collect(),
            expires_at: None,
        };
        assert_eq!(g.may_read(resource), expected, "{scopes} for {resource}");
    }

    #[test]
    fn read_scopes_are_recognised_in_v1_and_v2_forms() {
        check("patient/ImagingStudy.rs", "ImagingStudy", true);
        check("patient/ImagingStudy.r", "ImagingStudy", true);
        check("patient/ImagingStudy.cruds", "ImagingStudy", true);
        check("patient/ImagingStudy.read", "ImagingStudy", true);
        check("patient/*.read", "ImagingStudy", true);
        check("patient/*.rs", "ImagingStudy", true);
        check("launch openid patient/Patient.rs", "ImagingStudy", false);
        check("patient/ImagingStudy.s", "ImagingStudy", false);
        check("patient/ImagingStudy.write", "ImagingStudy", false);
        check("user/ImagingStudy.rs", "ImagingStudy", false);
        check("patient/ImagingStudy.rs?status=available", "ImagingStudy", false);
        check("", "ImagingStudy", false);
    }
}
