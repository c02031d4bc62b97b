//! SMART Backend Services (SMART App Launch 2.2 backend-services.html and
//! client-confidential-asymmetric.html, RFC 7523, RFC 6749 §4.4 and §5.2): the
//! `client_credentials` grant at `{base}/token`, with the client authenticated by a
//! `private_key_jwt` assertion signed RS384 or ES384 with a key from its registered JWKS.
//!
//! Every refusal is an RFC 6749 §5.2 JSON error (`invalid_client` 401 for anything about the
//! assertion or the client, `invalid_request` / `invalid_scope` 400) and its description is kept
//! for the tests ([`crate::EhrSim::token_refusals`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::scopes::grant_system_scopes;
use crate::{now, oauth_error, random_string};

/// RFC 7523 §2.2's `client_assertion_type` for a JWT.
pub const JWT_BEARER_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// SMART: an assertion's `exp` is at most five minutes ahead.
const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;
/// Clock skew allowed on `exp` and `nbf`, both ways.
const CLOCK_LEEWAY_SECS: i64 = 60;
/// How long a `jwks_url` fetch may take (a backend client's key server is not ours).
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS document read from a `jwks_url`.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// The default lifetime of a backend access token (SMART recommends five minutes).
pub(crate) const DEFAULT_BACKEND_TOKEN_LIFETIME_SECS: i64 = 300;

/// A backend (system) client registered at the EHR: its id, where its public keys are, and
/// the `system/` scopes it may be granted.
#[derive(Debug, Clone)]
pub struct BackendClient {
    pub client_id: String,
    /// Where the client publishes its JWKS; fetched on first use and again (once per token
    /// request) when an assertion names a `kid` the cached set lacks.
    pub jwks_url: Option<String>,
    /// The client's JWKS given inline at registration (`{"keys": [...]}`).
    pub jwks: Option<Value>,
    /// Allowed scopes, e.g. `system/DiagnosticReport.cu`, `system/*.write`, `system/*.*`.
    pub scopes: Vec<String>,
}

/// An access token issued to a backend client.
#[derive(Debug, Clone)]
pub(crate) struct BackendGrant {
    pub(crate) client_id: String,
    pub(crate) scope: String,
    pub(crate) expires_at: i64,
}

/// The `client_credentials` parameters of a token request.
pub(crate) struct ClientCredentialsRequest<'a> {
    pub(crate) client_assertion_type: Option<&'a str>,
    pub(crate) client_assertion: Option<&'a str>,
    pub(crate) scope: Option<&'a str>,
    /// Optional (RFC 7521 §4.2); when sent it must name the assertion's client.
    pub(crate) client_id: Option<&'a str>,
}

/// Backend clients, their keys, the assertions seen, and the tokens issued.
pub(crate) struct BackendState {
    clients: Mutex<HashMap<String, BackendClient>>,
    /// The JWKS last fetched from each client's `jwks_url`, by client id.
    jwks_cache: Mutex<HashMap<String, Value>>,
    /// `(client_id, jti)` → the assertion's `exp`: replays are refused until then.
    seen_jtis: Mutex<HashMap<(String, String), i64>>,
    tokens: Mutex<HashMap<String, BackendGrant>>,
    refusals: Mutex<Vec<String>>,
    token_lifetime_secs: AtomicI64,
    /// Built on first fetch: most EHRs (and tests) never fetch a JWKS.
    http: OnceLock<reqwest::Client>,
}

impl Default for BackendState {
    fn default() -> Self {
        BackendState {
            clients: Mutex::default(),
            jwks_cache: Mutex::default(),
            seen_jtis: Mutex::default(),
            tokens: Mutex::default(),
            refusals: Mutex::default(),
            token_lifetime_secs: AtomicI64::new(DEFAULT_BACKEND_TOKEN_LIFETIME_SECS),
            http: OnceLock::new(),
        }
    }
}

impl BackendState {
    pub(crate) fn register(&self, client: BackendClient) {
        self.jwks_cache.lock().unwrap().remove(&client.client_id);
        self.clients.lock().unwrap().insert(client.client_id.clone(), client);
    }

    pub(crate) fn set_token_lifetime(&self, secs: i64) {
        self.token_lifetime_secs.store(secs, Ordering::Relaxed);
    }

    pub(crate) fn record_refusal(&self, description: &str) {
        self.refusals.lock().unwrap().push(description.to_owned());
    }

    pub(crate) fn refusals(&self) -> Vec<String> {
        self.refusals.lock().unwrap().clone()
    }

    /// Forgets every issued token: they answer 401 from now on.
    pub(crate) fn revoke_all(&self) {
        self.tokens.lock().unwrap().clear();
    }

    /// The grant behind `token`, if it is a live backend token.
    pub(crate) fn grant(&self, token: &str) -> Option<BackendGrant> {
        self.tokens.lock().unwrap().get(token).filter(|g| g.expires_at > now()).cloned()
    }

    /// Answers a `client_credentials` token request at `token_url`.
    pub(crate) async fn token(&self, token_url: &str, request: &ClientCredentialsRequest<'_>) -> HttpResponse {
        match self.grant_token(token_url, request).await {
            Ok(body) => HttpResponse::Ok().insert_header(("cache-control", "no-store")).insert_header(("pragma", "no-cache")).json(body),
            Err(refusal) => {
                self.record_refusal(&refusal.description);
                refusal.response()
            }
        }
    }

    async fn grant_token(&self, token_url: &str, request: &ClientCredentialsRequest<'_>) -> Result<Value, Refusal> {
        let (assertion, requested) = required_parameters(request)?;
        let client = self.authenticate(token_url, assertion).await?;
        if request.client_id.is_some_and(|id| id != client.client_id) {
            return Err(Refusal::client("client_id is not the assertion's client"));
        }
        let granted = grant_system_scopes(requested, &client.scopes).join(" ");
        if granted.is_empty() {
            return Err(Refusal::new(RefusalKind::InvalidScope, "none of the requested scopes is allowed for this client"));
        }
        let lifetime = self.token_lifetime_secs.load(Ordering::Relaxed);
        let access_token = random_string(32);
        let grant = BackendGrant { client_id: client.client_id, scope: granted.clone(), expires_at: now() + lifetime };
        self.tokens.lock().unwrap().insert(access_token.clone(), grant);
        Ok(json!({"access_token": access_token, "token_type": "bearer", "expires_in": lifetime, "scope": granted}))
    }

    /// client-confidential-asymmetric.html "Authenticating to the Token endpoint": the
    /// header, the client, its key, the signature, then the claims, and last the `jti` (so
    /// only an assertion that passed everything else uses it up).
    async fn authenticate(&self, token_url: &str, assertion: &str) -> Result<BackendClient, Refusal> {
        let header = AssertionHeader::parse(assertion)?;
        let iss = unverified_issuer(assertion)?;
        let client =
            self.clients.lock().unwrap().get(&iss).cloned().ok_or_else(|| Refusal::client("iss is not a registered backend client"))?;
        if let Some(jku) = &header.jku
            && client.jwks_url.as_deref() != Some(jku.as_str())
        {
            return Err(Refusal::client("the jku header is not the client's registered jwks_url"));
        }
        let keys = self.keys_for(&client, &header.kid).await?;
        let claims = verify_signature(assertion, header.alg, &keys)?;
        let checked = check_claims(&claims, &client.client_id, token_url, now())?;
        self.use_jti(&client.client_id, checked)?;
        Ok(client)
    }

    /// The client's keys named `kid`: inline first, then the cached `jwks_url` set, then that
    /// set fetched afresh (a client rotating keys publishes the new one before using it).
    async fn keys_for(&self, client: &BackendClient, kid: &str) -> Result<Vec<Jwk>, Refusal> {
        if let Some(keys) = client.jwks.as_ref().map(|set| keys_with_kid(set, kid)).filter(|k| !k.is_empty()) {
            return Ok(keys);
        }
        let Some(url) = &client.jwks_url else { return Err(Refusal::client("no registered key has the assertion's kid")) };
        let cached = self.jwks_cache.lock().unwrap().get(&client.client_id).map(|set| keys_with_kid(set, kid));
        if let Some(keys) = cached.filter(|k| !k.is_empty()) {
            return Ok(keys);
        }
        let fetched = self.fetch_jwks(url).await.map_err(|e| Refusal::client(&format!("the client's jwks_url could not be read: {e}")))?;
        let keys = keys_with_kid(&fetched, kid);
        self.jwks_cache.lock().unwrap().insert(client.client_id.clone(), fetched);
        if keys.is_empty() { Err(Refusal::client("no key in the client's JWKS has the assertion's kid")) } else { Ok(keys) }
    }

    async fn fetch_jwks(&self, url: &str) -> Result<Value, String> {
        let http = match self.http.get() {
            Some(c) => c.clone(),
            None => {
                let built = reqwest::Client::builder().timeout(JWKS_FETCH_TIMEOUT).build().map_err(|e| e.to_string())?;
                self.http.get_or_init(|| built).clone()
            }
        };
        let response = http.get(url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        // reqwest's `json` feature is off (the same reqwest as radsight's): parse the bytes.
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("the JWKS is too large".into());
        }
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }

    /// Refuses a `jti` this client already used in an assertion that has not yet expired.
    fn use_jti(&self, client_id: &str, checked: CheckedClaims) -> Result<(), Refusal> {
        let mut seen = self.seen_jtis.lock().unwrap();
        let t = now();
        seen.retain(|_, exp| *exp + CLOCK_LEEWAY_SECS > t);
        let key = (client_id.to_owned(), checked.jti);
        if seen.contains_key(&key) {
            return Err(Refusal::client("the assertion's jti was already used (replay)"));
        }
        seen.insert(key, checked.exp);
        Ok(())
    }
}

/// The RFC 6749 §5.2 error a refusal is reported as.
// The variants are RFC 6749 §5.2's error codes, spelled as the RFC does.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefusalKind {
    InvalidRequest,
    InvalidClient,
    InvalidScope,
}

#[derive(Debug, Clone)]
struct Refusal {
    kind: RefusalKind,
    description: String,
}

impl Refusal {
    fn new(kind: RefusalKind, description: &str) -> Refusal {
        Refusal { kind, description: description.to_owned() }
    }

    fn client(description: &str) -> Refusal {
        Refusal::new(RefusalKind::InvalidClient, description)
    }

    fn response(&self) -> HttpResponse {
        let (status, error) = match self.kind {
            RefusalKind::InvalidRequest => (StatusCode::BAD_REQUEST, "invalid_request"),
            RefusalKind::InvalidClient => (StatusCode::UNAUTHORIZED, "invalid_client"),
            RefusalKind::InvalidScope => (StatusCode::BAD_REQUEST, "invalid_scope"),
        };
        oauth_error(status, error, &self.description)
    }
}

/// The assertion and the requested scope; a request without them is malformed.
fn required_parameters<'a>(request: &ClientCredentialsRequest<'a>) -> Result<(&'a str, &'a str), Refusal> {
    let missing = |what: &str| Refusal::new(RefusalKind::InvalidRequest, &format!("{what} is required for client_credentials"));
    match request.client_assertion_type {
        None => return Err(missing("client_assertion_type")),
        Some(JWT_BEARER_ASSERTION_TYPE) => {}
        Some(_) => {
            return Err(Refusal::new(RefusalKind::InvalidRequest, &format!("client_assertion_type must be {JWT_BEARER_ASSERTION_TYPE}")));
        }
    }
    let assertion = request.client_assertion.filter(|a| !a.is_empty()).ok_or_else(|| missing("client_assertion"))?;
    let scope = request.scope.filter(|s| !s.trim().is_empty()).ok_or_else(|| missing("scope"))?;
    Ok((assertion, scope))
}

/// The assertion's JOSE header, read before any key is trusted.
#[derive(Debug)]
struct AssertionHeader {
    alg: Algorithm,
    kid: String,
    jku: Option<String>,
}

impl AssertionHeader {
    /// SMART: `alg` RS384 or ES384 (so never `none` or an HMAC), `kid` present, `typ` JWT
    /// when present.
    fn parse(assertion: &str) -> Result<AssertionHeader, Refusal> {
        let header = decode_segment(assertion, 0).ok_or_else(|| Refusal::client("the assertion is not a JWT"))?;
        let alg = match header["alg"].as_str() {
            Some("RS384") => Algorithm::RS384,
            Some("ES384") => Algorithm::ES384,
            _ => return Err(Refusal::client("the assertion's alg must be RS384 or ES384")),
        };
        let kid = header["kid"].as_str().filter(|k| !k.is_empty()).ok_or_else(|| Refusal::client("the assertion has no kid"))?.to_owned();
        // Media type names are case-insensitive (RFC 7515 §4.1.9).
        if header.get("typ").is_some_and(|t| !t.as_str().is_some_and(|t| t.eq_ignore_ascii_case("JWT"))) {
            return Err(Refusal::client("the assertion's typ must be JWT"));
        }
        let jku = match header.get("jku") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(Refusal::client("the assertion's jku is not a URL")),
        };
        Ok(AssertionHeader { alg, kid, jku })
    }
}

/// A JWT segment (0 header, 1 claims) as JSON, unverified.
fn decode_segment(jwt: &str, index: usize) -> Option<Value> {
    let mut parts = jwt.split('.');
    if jwt.split('.').count() != 3 {
        return None;
    }
    let segment = parts.nth(index)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).ok()?).ok()
}

/// `iss` before verification: only to find whose keys to verify with.
fn unverified_issuer(assertion: &str) -> Result<String, Refusal> {
    let claims = decode_segment(assertion, 1).ok_or_else(|| Refusal::client("the assertion's claims are not JSON"))?;
    claims["iss"].as_str().map(str::to_owned).ok_or_else(|| Refusal::client("the assertion has no iss"))
}

/// The signing keys of a JWKS with this `kid`; keys that do not parse, and encryption keys
/// (`use: enc`), are skipped.
fn keys_with_kid(set: &Value, kid: &str) -> Vec<Jwk> {
    let Some(keys) = set["keys"].as_array() else { return Vec::new() };
    let for_signing = |k: &&Value| k.get("use").is_none_or(|u| u == "sig");
    keys.iter().filter(|k| k["kid"] == kid).filter(for_signing).filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok()).collect()
}

/// Verifies the signature with any of `keys` and returns the claims; no claim is checked here.
fn verify_signature(assertion: &str, alg: Algorithm, keys: &[Jwk]) -> Result<Value, Refusal> {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    for jwk in keys {
        // A key registered for one algorithm must not verify another (RFC 7517 §4.4).
        if jwk.common.key_algorithm.is_some_and(|a| a.to_string() != format!("{alg:?}")) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
        if let Ok(data) = jsonwebtoken::decode::<Value>(assertion, &key, &validation) {
            return Ok(data.claims);
        }
    }
    Err(Refusal::client("the assertion's signature does not verify with the client's registered key"))
}

/// What the replay check needs from verified claims.
#[derive(Debug, PartialEq, Eq)]
struct CheckedClaims {
    jti: String,
    exp: i64,
}

/// RFC 7523 §3 and SMART: `iss` = `sub` = the client id, `aud` the token URL exactly, `exp`
/// present, not past and at most five minutes ahead, `nbf` (if any) not ahead, `jti` present.
fn check_claims(claims: &Value, client_id: &str, token_url: &str, now: i64) -> Result<CheckedClaims, Refusal> {
    if claims["iss"] != client_id || claims["sub"] != client_id {
        return Err(Refusal::client("iss and sub must both be the client_id"));
    }
    let aud_ok = match &claims["aud"] {
        Value::String(a) => a == token_url,
        Value::Array(items) => items.iter().any(|a| a == token_url),
        _ => false,
    };
    if !aud_ok {
        return Err(Refusal::client("aud must be this token endpoint's URL"));
    }
    let exp = claims["exp"].as_i64().ok_or_else(|| Refusal::client("the assertion has no numeric exp"))?;
    if exp + CLOCK_LEEWAY_SECS <= now {
        return Err(Refusal::client("the assertion has expired"));
    }
    if exp > now + MAX_ASSERTION_LIFETIME_SECS + CLOCK_LEEWAY_SECS {
        return Err(Refusal::client("the assertion's exp is more than five minutes ahead"));
    }
    if claims["nbf"].as_i64().is_some_and(|nbf| nbf > now + CLOCK_LEEWAY_SECS) {
        return Err(Refusal::client("the assertion is not yet valid (nbf)"));
    }
    let jti = claims["jti"].as_str().filter(|j| !j.is_empty()).ok_or_else(|| Refusal::client("the assertion has no jti"))?;
    Ok(CheckedClaims { jti: jti.to_owned(), exp })
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://ehr.test/token";

    fn claims(change: impl FnOnce(&mut Value)) -> Value {
        let mut c = json!({"iss": "c1", "sub": "c1", "aud": URL, "exp": 1_000_240, "jti": "j1"});
        change(&mut c);
        c
    }

    fn check(claims: Value, expected: Result<(), &str>) {
        let got = check_claims(&claims, "c1", URL, 1_000_000).map(|_| ()).map_err(|r| r.description);
        assert_eq!(got, expected.map_err(str::to_owned), "{claims}");
    }

    #[test]
    fn assertion_claims_are_checked_as_smart_says() {
        check(claims(|_| {}), Ok(()));
        check(claims(|c| c["aud"] = json!([URL])), Ok(()));
        check(claims(|c| c["sub"] = json!("c2")), Err("iss and sub must both be the client_id"));
        check(claims(|c| c["aud"] = json!("http://ehr.test/token/")), Err("aud must be this token endpoint's URL"));
        check(claims(|c| c["exp"] = json!(1_000_000 + 301 + 60)), Err("the assertion's exp is more than five minutes ahead"));
        check(claims(|c| c["exp"] = json!(1_000_000 - 61)), Err("the assertion has expired"));
        check(claims(|c| c["exp"] = json!("soon")), Err("the assertion has no numeric exp"));
        check(claims(|c| c["nbf"] = json!(1_000_000 + 120)), Err("the assertion is not yet valid (nbf)"));
        check(claims(|c| _ = c.as_object_mut().map(|o| o.remove("jti"))), Err("the assertion has no jti"));
    }

    #[test]
    fn only_signing_keys_with_the_kid_are_candidates() {
        let key = radsight_keys::ClientKey::generate(Algorithm::ES384).unwrap();
        let jwk = serde_json::to_value(key.public_jwk()).unwrap();
        let mut enc = jwk.clone();
        enc["use"] = json!("enc");
        let set = json!({"keys": [jwk, enc, {"kid": "other", "kty": "EC"}]});
        assert_eq!(keys_with_kid(&set, &key.kid).len(), 1);
        assert!(keys_with_kid(&set, "missing").is_empty());
        assert!(keys_with_kid(&json!({"no": "keys"}), &key.kid).is_empty());
    }

    fn header(json: Value) -> String {
        format!("{}.e30.sig", URL_SAFE_NO_PAD.encode(json.to_string()))
    }

    #[test]
    fn only_rs384_and_es384_with_a_kid_are_accepted() {
        for alg in ["none", "HS256", "RS256", "ES256"] {
            let refused = AssertionHeader::parse(&header(json!({"alg": alg, "kid": "k"}))).unwrap_err();
            assert_eq!(refused.kind, RefusalKind::InvalidClient, "{alg}");
        }
        assert!(AssertionHeader::parse(&header(json!({"alg": "ES384"}))).is_err());
        assert!(AssertionHeader::parse(&header(json!({"alg": "ES384", "kid": "k", "typ": "at+jwt"}))).is_err());
        assert!(AssertionHeader::parse(&header(json!({"alg": "RS384", "kid": "k", "typ": "JWT"}))).is_ok());
        assert!(AssertionHeader::parse(&header(json!({"alg": "RS384", "kid": "k", "typ": "jwt"}))).is_ok());
        assert!(AssertionHeader::parse(&header(json!({"alg": "RS384", "kid": "k", "typ": 1}))).is_err());
        assert!(AssertionHeader::parse("not a jwt").is_err());
    }
}
