//! A small SMART on FHIR EHR: the built-in demo EHR (`[smart.demo_ehr]`, mounted at
//! `/demo-ehr` when radsight is built with its `demo` feature) and the tests' fixture EHR (the
//! same code on its own port). It is not part of the product: a production build of radsight
//! (without `demo`) does not contain it.
//!
//! It behaves as SMART App Launch 2.2, RFC 6749, RFC 7636 and RFC 7662 say for what the app
//! uses:
//! - `GET {base}/` a launcher page: pick the demo patient and launch radsight (from the chart,
//!   from a card with `appContext`, or with consent denied);
//! - `GET {base}/fhir/.well-known/smart-configuration` and a minimal `metadata`;
//! - `GET {base}/authorize`: checks the client, the exact `redirect_uri`, `aud` = the FHIR base,
//!   the launch id and a PKCE S256 challenge (`plain` is refused), then approves at once, or
//!   redirects with `error=access_denied` when the launch asked for a denied consent;
//! - `POST {base}/token`: the code is single use (a reused code is refused and the tokens it
//!   produced are revoked), lives 60 s, and needs the same `client_id` and `redirect_uri` and a
//!   `code_verifier` whose S256 is the challenge; the answer has `patient`, `fhirContext`,
//!   `appContext` and a signed `id_token` naming `fhirUser`;
//! - `POST {base}/introspect` (RFC 7662, HTTP Basic client authentication): `active`, `scope`,
//!   `client_id`, `patient`, `fhirUser`, `exp`;
//! - `GET {base}/fhir/Patient/{id}`: the patient, for a launch token whose patient it is.
//!
//! For servers (SMART Backend Services, RFC 7523, FHIR R4 http.html), the tests' stand-in for
//! an EHR that radsight writes results to:
//! - `POST {base}/token` with `grant_type=client_credentials`: the client authenticates with a
//!   `private_key_jwt` assertion (`alg` RS384 or ES384, a `kid`, `typ` JWT if given, a `jku`
//!   only if it is the registered `jwks_url`; `iss` = `sub` = a registered
//!   [`BackendClient`]; `aud` exactly `{base}/token`; `exp` not past and at most 5 minutes
//!   ahead, with 60 s leeway; a `jti` never used before by that client while unexpired),
//!   verified against the client's inline JWKS or its `jwks_url` (cached, fetched again once
//!   for an unknown `kid`). The token's scope is the requested `system/` scopes that the
//!   client's allowed scopes cover (v2 `system/DiagnosticReport.cu`, v1 `system/*.write`,
//!   `system/*.*` for everything); it lives [`EhrSim::set_backend_token_lifetime`] seconds
//!   (300 by default). Refusals are RFC 6749 §5.2 errors (`invalid_client` 401,
//!   `invalid_request` / `invalid_scope` / `unsupported_grant_type` 400) and are listed by
//!   [`EhrSim::token_refusals`] (with those of unsupported grant types);
//! - `POST {base}/fhir`: a `transaction` Bundle (POST, with `ifNoneExist`, and `PUT Type/id`;
//!   `urn:uuid:` fullUrls resolved and every reference to them rewritten; all or nothing; a
//!   conditional create matching twice fails the whole transaction with 412) or a `batch`;
//! - `POST {base}/fhir/{type}`, conditional with `If-None-Exist` (0 matches: 201 and
//!   `Location`; 1: 200 and nothing stored; 2 or more: 412);
//! - `GET {base}/fhir/{type}/{id}` and `GET {base}/fhir/{type}?identifier=system|value`
//!   (also `_id`, `subject`, `patient`; other parameters are a 400) as a `searchset` Bundle.
//!
//! The FHIR endpoints want `Authorization: Bearer`: a backend token whose `system/` scopes
//! allow the interaction (`.c` create, `.u` update, `.r` read, `.s` search, v1 `.read` /
//! `.write`, `*`), or a launch token for reads. No or a dead token is a 401 with
//! `WWW-Authenticate: Bearer`; too few scopes a 403; both with an OperationOutcome. Tests can
//! make the next writes fail ([`EhrSim::fail_writes`]), revoke every backend token
//! ([`EhrSim::revoke_backend_tokens`]), and read what was stored and received
//! ([`EhrSim::resources`], [`EhrSim::received_transactions`]).
//!
//! Everything lives in memory. It is a demo and a test fixture, not an identity provider.

mod backend;
mod fhir_api;
mod fhir_store;
mod scopes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use radsight_keys::ClientKey;

pub use backend::{BackendClient, JWT_BEARER_ASSERTION_TYPE};
use backend::{BackendState, ClientCredentialsRequest};
use fhir_api::WriteFailures;
use fhir_store::FhirStore;

const CODE_LIFETIME_SECS: i64 = 60;

/// The demo EHR's patient.
pub const DEMO_PATIENT: &str = "radsight-demo-patient";
/// radsight's client id at the demo EHR.
pub const DEMO_CLIENT_ID: &str = "radsight-demo";

/// A public client (the SMART app) registered at the EHR.
#[derive(Debug, Clone)]
pub struct SimClient {
    pub client_id: String,
    pub redirect_uris: Vec<String>,
    /// Where the EHR opens the app (`?iss=&launch=`).
    pub launch_url: String,
}

#[derive(Debug, Clone)]
struct LaunchContext {
    patient: String,
    app_context: Option<String>,
    deny: bool,
}

#[derive(Debug, Clone)]
struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
    launch: LaunchContext,
    expires_at: i64,
    used: bool,
}

#[derive(Debug, Clone)]
struct TokenGrant {
    client_id: String,
    scope: String,
    patient: String,
    code: String,
    expires_at: i64,
}

struct SimState {
    base: String,
    user: String,
    token_lifetime_secs: i64,
    signing_key: ClientKey,
    patients: Vec<Value>,
    clients: Mutex<Vec<SimClient>>,
    introspection_clients: Mutex<Vec<(String, String)>>,
    launches: Mutex<HashMap<String, LaunchContext>>,
    codes: Mutex<HashMap<String, CodeGrant>>,
    tokens: Mutex<HashMap<String, TokenGrant>>,
    backend: BackendState,
    /// The FHIR resources, the seeded patients included.
    store: Mutex<FhirStore>,
    received_transactions: Mutex<Vec<Value>>,
    write_failures: Mutex<WriteFailures>,
}

/// The EHR; cheap to clone (shared state).
#[derive(Clone)]
pub struct EhrSim(Arc<SimState>);

/// A random URL-safe string with `bytes` bytes of entropy.
pub fn random_string(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut raw).expect("the system random generator works");
    URL_SAFE_NO_PAD.encode(raw)
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// BASE64URL(SHA-256(verifier)), RFC 7636 §4.2.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status).insert_header(("cache-control", "no-store")).json(json!({"error": error, "error_description": description}))
}

fn outcome(status: StatusCode, code: &str, text: &str) -> HttpResponse {
    HttpResponse::build(status).content_type("application/fhir+json").json(fhir_store::operation_outcome(code, text))
}

/// A page for an authorisation request that cannot be sent back to the client (an unknown
/// client or redirect URI must not be redirected to, RFC 6749 §4.1.2.1).
fn refusal_page(text: &str) -> HttpResponse {
    HttpResponse::BadRequest().content_type("text/html; charset=utf-8").body(format!(
        "<!doctype html><html lang=en><meta charset=utf-8><title>Demo EHR: request refused</title>\
         <h1>The demo EHR refused this authorisation request</h1><p>{}</p></html>",
        html_escape(text)
    ))
}

fn redirect_to(uri: &str, params: &[(&str, &str)]) -> HttpResponse {
    let mut url = url::Url::parse(uri).expect("redirect URIs are registered absolute URLs");
    url.query_pairs_mut().extend_pairs(params);
    HttpResponse::Found().insert_header(("location", url.as_str())).insert_header(("cache-control", "no-store")).finish()
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    launch: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    aud: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    code_verifier: Option<String>,
    // client_credentials (SMART Backend Services)
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct LaunchForm {
    patient: String,
    #[serde(default)]
    app_context: Option<String>,
    #[serde(default)]
    deny: Option<String>,
}

impl EhrSim {
    /// An EHR whose URLs start with `base` (no trailing slash); its FHIR base, the `iss`, is
    /// `{base}/fhir`.
    pub fn new(base: &str, patients: Vec<Value>) -> EhrSim {
        let mut store = FhirStore::default();
        for p in &patients {
            store.seed(p.clone());
        }
        EhrSim(Arc::new(SimState {
            base: base.trim_end_matches('/').to_owned(),
            user: "Practitioner/demo-radiologist".into(),
            token_lifetime_secs: 3600,
            signing_key: ClientKey::generate(jsonwebtoken::Algorithm::ES384).expect("key generation works"),
            patients,
            clients: Mutex::new(Vec::new()),
            introspection_clients: Mutex::new(Vec::new()),
            launches: Mutex::new(HashMap::new()),
            codes: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            backend: BackendState::default(),
            store: Mutex::new(store),
            received_transactions: Mutex::new(Vec::new()),
            write_failures: Mutex::new(WriteFailures::default()),
        }))
    }

    /// The FHIR base URL, `{base}/fhir`: the `iss` of a launch.
    pub fn iss(&self) -> String {
        format!("{}/fhir", self.0.base)
    }

    /// The FHIR base URL (the same as [`EhrSim::iss`]).
    pub fn fhir_base(&self) -> String {
        self.iss()
    }

    /// The token endpoint, `{base}/token`: the `aud` a backend client's assertion must name.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.0.base)
    }

    /// Registers (or replaces) a backend services client; its cached JWKS is forgotten.
    pub fn register_backend_client(&self, client: BackendClient) {
        self.0.backend.register(client);
    }

    /// How long backend access tokens issued from now on live (300 s unless set).
    pub fn set_backend_token_lifetime(&self, secs: i64) {
        self.0.backend.set_token_lifetime(secs);
    }

    /// Every stored resource of this type, in the order stored (the seeded patients included).
    pub fn resources(&self, resource_type: &str) -> Vec<Value> {
        self.0.store.lock().unwrap().all(resource_type)
    }

    /// Every Bundle posted to `{base}/fhir` with a live token, as received (before references
    /// were rewritten), including those refused or failed on purpose by [`EhrSim::fail_writes`].
    pub fn received_transactions(&self) -> Vec<Value> {
        self.0.received_transactions.lock().unwrap().clone()
    }

    /// The next `n` FHIR writes (transactions and creates) that pass authorisation answer
    /// `status` with an OperationOutcome, and `Retry-After: 1` for 503 and 429, storing nothing.
    /// A status that is not a valid HTTP status is answered as 500.
    pub fn fail_writes(&self, n: usize, status: u16) {
        *self.0.write_failures.lock().unwrap() = WriteFailures { remaining: n, status };
    }

    /// Every backend access token issued so far stops working (401), as if it had expired.
    pub fn revoke_backend_tokens(&self) {
        self.0.backend.revoke_all();
    }

    /// The `error_description` of each refused `client_credentials` token request (and of each
    /// request with an unsupported `grant_type`), in order.
    pub fn token_refusals(&self) -> Vec<String> {
        self.0.backend.refusals()
    }

    pub fn introspection_endpoint(&self) -> String {
        format!("{}/introspect", self.0.base)
    }

    pub fn register_client(&self, client: SimClient) {
        self.0.clients.lock().unwrap().push(client);
    }

    /// Lets a resource server (radsight) introspect tokens with this id and secret.
    pub fn register_introspection_client(&self, id: &str, secret: &str) {
        self.0.introspection_clients.lock().unwrap().push((id.to_owned(), secret.to_owned()));
    }

    /// Starts a launch as the EHR does when the user opens the app; returns the launch id.
    pub fn create_launch(&self, patient: &str, app_context: Option<&str>, deny: bool) -> String {
        let id = random_string(16);
        let ctx = LaunchContext { patient: patient.to_owned(), app_context: app_context.map(str::to_owned), deny };
        self.0.launches.lock().unwrap().insert(id.clone(), ctx);
        id
    }

    /// The URL the EHR opens for a launch of `client_id`.
    pub fn launch_url(&self, client_id: &str, launch: &str) -> Option<String> {
        let clients = self.0.clients.lock().unwrap();
        let c = clients.iter().find(|c| c.client_id == client_id)?;
        let mut url = url::Url::parse(&c.launch_url).ok()?;
        url.query_pairs_mut().append_pair("iss", &self.iss()).append_pair("launch", launch);
        Some(url.into())
    }

    /// Issues a token directly (tests): as if a launch for `patient` had completed.
    pub fn issue_token(&self, client_id: &str, patient: &str, scope: &str, lifetime_secs: i64) -> String {
        let token = random_string(32);
        let grant = TokenGrant {
            client_id: client_id.into(),
            scope: scope.into(),
            patient: patient.into(),
            code: String::new(),
            expires_at: now() + lifetime_secs,
        };
        self.0.tokens.lock().unwrap().insert(token.clone(), grant);
        token
    }

    /// Revokes a token (tests).
    pub fn revoke(&self, token: &str) {
        self.0.tokens.lock().unwrap().remove(token);
    }

    /// Routes relative to the scope the EHR is mounted at (`/demo-ehr`, or `` on its own port).
    pub fn routes(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::new(self.clone()))
            .route("/", web::get().to(launcher))
            .route("/launch", web::post().to(start_launch))
            .route("/fhir/.well-known/smart-configuration", web::get().to(smart_configuration))
            .route("/fhir/metadata", web::get().to(metadata))
            .service(web::resource("/fhir").app_data(fhir_body_limit()).route(web::post().to(fhir_api::transaction)))
            .service(
                web::resource("/fhir/{type}")
                    .app_data(fhir_body_limit())
                    .route(web::post().to(fhir_api::create))
                    .route(web::get().to(fhir_api::search)),
            )
            .route("/fhir/{type}/{id}", web::get().to(fhir_api::read))
            .route("/jwks.json", web::get().to(jwks))
            .route("/authorize", web::get().to(authorize))
            .route("/token", web::post().to(token))
            .route("/introspect", web::post().to(introspect));
    }

    fn id_token(&self, client_id: &str) -> String {
        let t = now();
        let claims = json!({"iss": self.iss(), "sub": "demo-radiologist", "aud": client_id, "iat": t, "exp": t + 300, "fhirUser": format!("{}/{}", self.iss(), self.0.user)});
        self.0.signing_key.sign(&claims, None).expect("signing with a generated key works")
    }
}

async fn launcher(sim: web::Data<EhrSim>) -> HttpResponse {
    let patients: String = sim
        .0
        .patients
        .iter()
        .map(|p| {
            let id = p["id"].as_str().unwrap_or_default();
            let name = p["name"][0]["text"].as_str().unwrap_or(id);
            format!("<option value=\"{}\">{}</option>", html_escape(id), html_escape(name))
        })
        .collect();
    HttpResponse::Ok().content_type("text/html; charset=utf-8").insert_header(("cache-control", "no-store")).body(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>radsight demo EHR</title><link rel="icon" href="data:,"><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}}
fieldset{{margin:1rem 0}}button{{font:inherit;padding:.4rem 1rem;margin:.25rem 0}}code{{background:#eee;padding:0 .2rem}}</style></head>
<body><h1>radsight demo EHR</h1>
<p>A stand-in for an electronic health record, so you can try radsight's SMART app without one. It
launches the app the way an EHR does (SMART App Launch with PKCE) and approves the request at once.
Synthetic data only.</p>
<form method="post" action="launch"><fieldset><legend>Launch radsight from a chart</legend>
<label>Patient <select name="patient">{patients}<option value="">(no patient selected)</option></select></label>
<p><label><input type="checkbox" name="deny" value="1"> Deny consent (shows the app's refusal page)</label></p>
<p><label>appContext from a card (optional, deep link) <input name="app_context" size="60" placeholder='{{"studyInstanceUid":"…","resultId":"…"}}'></label></p>
<button type="submit">Launch radsight</button></fieldset></form>
<p>FHIR base (<code>iss</code>): <code>{iss}</code></p></body></html>"#,
        iss = html_escape(&sim.iss())
    ))
}

async fn start_launch(sim: web::Data<EhrSim>, form: web::Form<LaunchForm>) -> HttpResponse {
    // An empty patient launches without patient context (the app must say so clearly).
    if !form.patient.is_empty() && !sim.0.patients.iter().any(|p| p["id"] == form.patient.as_str()) {
        return refusal_page("unknown patient");
    }
    let app_context = form.app_context.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let launch = sim.create_launch(&form.patient, app_context, form.deny.is_some());
    let client_id = sim.0.clients.lock().unwrap().first().map(|c| c.client_id.clone());
    match client_id.and_then(|c| sim.launch_url(&c, &launch)) {
        Some(url) => HttpResponse::SeeOther().insert_header(("location", url)).finish(),
        None => refusal_page("no app is registered at this EHR"),
    }
}

async fn smart_configuration(sim: web::Data<EhrSim>) -> HttpResponse {
    let b = &sim.0.base;
    HttpResponse::Ok().insert_header(("access-control-allow-origin", "*")).json(json!({
        "issuer": sim.iss(),
        "jwks_uri": format!("{b}/jwks.json"),
        "authorization_endpoint": format!("{b}/authorize"),
        "token_endpoint": format!("{b}/token"),
        "introspection_endpoint": format!("{b}/introspect"),
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": ["openid", "fhirUser", "launch", "launch/patient", "patient/*.rs", "patient/Patient.rs",
            "patient/ImagingStudy.rs", "patient/DiagnosticReport.rs", "system/*.cruds", "system/*.rs", "system/*.cu",
            "system/DiagnosticReport.cu", "system/Observation.cu", "system/Patient.rs", "system/*.read", "system/*.write"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": ["launch-ehr", "client-public", "context-ehr-patient", "context-passthrough-banner",
            "permission-patient", "permission-v2", "sso-openid-connect", "authorize-post", "client-confidential-asymmetric",
            "permission-v1"]
    }))
}

async fn metadata(sim: web::Data<EhrSim>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/fhir+json").insert_header(("access-control-allow-origin", "*")).json(json!({
        "resourceType": "CapabilityStatement", "status": "active", "kind": "instance", "fhirVersion": "4.0.1",
        "format": ["json"], "date": "2026-11-29",
        "implementation": {"description": "radsight demo EHR", "url": sim.iss()},
        "rest": [{"mode": "server", "security": {"service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}]},
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
            "resource": CAPABILITY_TYPES.iter().map(|t| capability_resource(t)).collect::<Vec<_>>()}]
    }))
}

/// The types the CapabilityStatement names; the store takes any type, these are the ones a
/// client of the demo EHR would look for.
const CAPABILITY_TYPES: [&str; 6] = ["Patient", "ImagingStudy", "DiagnosticReport", "Observation", "ServiceRequest", "DocumentReference"];

fn capability_resource(resource_type: &str) -> Value {
    json!({"type": resource_type,
        "interaction": [{"code": "read"}, {"code": "search-type"}, {"code": "create"}, {"code": "update"}],
        "updateCreate": true, "conditionalCreate": true,
        "searchParam": [{"name": "identifier", "type": "token"}, {"name": "_id", "type": "token"},
            {"name": "subject", "type": "reference"}, {"name": "patient", "type": "reference"}]})
}

async fn jwks(sim: web::Data<EhrSim>) -> HttpResponse {
    HttpResponse::Ok().insert_header(("access-control-allow-origin", "*")).json(sim.0.signing_key.jwks())
}

async fn authorize(sim: web::Data<EhrSim>, q: web::Query<AuthorizeQuery>) -> HttpResponse {
    let client = {
        let clients = sim.0.clients.lock().unwrap();
        clients.iter().find(|c| Some(&c.client_id) == q.client_id.as_ref()).cloned()
    };
    let Some(client) = client else { return refusal_page("unknown client_id") };
    let Some(redirect_uri) = q.redirect_uri.as_deref().filter(|r| client.redirect_uris.iter().any(|u| u == r)) else {
        return refusal_page("redirect_uri is not registered for this client");
    };
    let state = q.state.as_deref().unwrap_or("");
    let fail = |error: &str, description: &str| {
        redirect_to(redirect_uri, &[("error", error), ("error_description", description), ("state", state)])
    };
    if q.response_type.as_deref() != Some("code") {
        return fail("unsupported_response_type", "only the authorization code flow is supported");
    }
    if q.aud.as_deref().map(|a| a.trim_end_matches('/')) != Some(sim.iss().as_str()) {
        return fail("invalid_request", "aud must be this EHR's FHIR base URL");
    }
    if q.code_challenge_method.as_deref() != Some("S256") {
        return fail("invalid_request", "PKCE with code_challenge_method S256 is required");
    }
    let Some(challenge) = q.code_challenge.as_deref().filter(|c| c.len() == 43 && URL_SAFE_NO_PAD.decode(c).is_ok()) else {
        return fail("invalid_request", "code_challenge must be a BASE64URL SHA-256");
    };
    let Some(launch) = q.launch.as_deref().and_then(|l| sim.0.launches.lock().unwrap().get(l).cloned()) else {
        return fail("invalid_request", "unknown launch");
    };
    if launch.deny {
        return fail("access_denied", "the user denied access");
    }
    let code = random_string(32);
    let grant = CodeGrant {
        client_id: client.client_id,
        redirect_uri: redirect_uri.to_owned(),
        challenge: challenge.to_owned(),
        scope: q.scope.clone().unwrap_or_default(),
        launch,
        expires_at: now() + CODE_LIFETIME_SECS,
        used: false,
    };
    sim.0.codes.lock().unwrap().insert(code.clone(), grant);
    redirect_to(redirect_uri, &[("code", &code), ("state", state)])
}

/// `POST {base}/token`: the authorization code grant (the launch) or client credentials (a
/// backend client).
async fn token(sim: web::Data<EhrSim>, form: web::Form<TokenForm>) -> HttpResponse {
    match form.grant_type.as_deref() {
        Some("authorization_code") => authorization_code_token(&sim, &form),
        Some("client_credentials") => {
            let request = ClientCredentialsRequest {
                client_assertion_type: form.client_assertion_type.as_deref(),
                client_assertion: form.client_assertion.as_deref(),
                scope: form.scope.as_deref(),
                client_id: form.client_id.as_deref(),
            };
            sim.0.backend.token(&sim.token_endpoint(), &request).await
        }
        _ => {
            // It may be a backend client's mistake: the tests see it with the other refusals.
            let description = "only authorization_code and client_credentials are supported";
            sim.0.backend.record_refusal(description);
            with_cors(oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", description))
        }
    }
}

/// The largest FHIR request body: a transaction may carry a report's PDF or images inline,
/// well past actix's 256 KiB default.
const MAX_FHIR_BODY_BYTES: usize = 16 * 1024 * 1024;

fn fhir_body_limit() -> web::PayloadConfig {
    web::PayloadConfig::new(MAX_FHIR_BODY_BYTES)
}

/// The launch's token endpoint is called from the browser: it answers any origin.
fn with_cors(mut r: HttpResponse) -> HttpResponse {
    r.headers_mut().insert(actix_web::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, actix_web::http::header::HeaderValue::from_static("*"));
    r
}

fn authorization_code_token(sim: &EhrSim, form: &TokenForm) -> HttpResponse {
    let invalid_grant = |d: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", d);
    let Some(code) = form.code.as_deref() else { return with_cors(invalid_grant("code is missing")) };
    let grant = {
        let mut codes = sim.0.codes.lock().unwrap();
        let Some(g) = codes.get_mut(code) else { return with_cors(invalid_grant("unknown code")) };
        if g.used {
            // RFC 6749 §4.1.2: a reused code is refused and what it produced is revoked.
            sim.0.tokens.lock().unwrap().retain(|_, t| t.code != code);
            return with_cors(invalid_grant("the code was already used"));
        }
        g.used = true;
        g.clone()
    };
    if grant.expires_at <= now() {
        return with_cors(invalid_grant("the code has expired"));
    }
    if form.client_id.as_deref() != Some(grant.client_id.as_str()) {
        return with_cors(invalid_grant("client_id does not match the code"));
    }
    if form.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
        return with_cors(invalid_grant("redirect_uri does not match the authorization request"));
    }
    let verifier_ok = form.code_verifier.as_deref().is_some_and(|v| {
        (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) && s256(v) == grant.challenge
    });
    if !verifier_ok {
        return with_cors(invalid_grant("code_verifier does not match the code_challenge"));
    }
    let access_token = random_string(32);
    let t = TokenGrant {
        client_id: grant.client_id.clone(),
        scope: grant.scope.clone(),
        patient: grant.launch.patient.clone(),
        code: code.to_owned(),
        expires_at: now() + sim.0.token_lifetime_secs,
    };
    sim.0.tokens.lock().unwrap().insert(access_token.clone(), t);
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": sim.0.token_lifetime_secs,
        "scope": grant.scope,
        "need_patient_banner": true,
    });
    if !grant.launch.patient.is_empty() {
        body["patient"] = json!(grant.launch.patient);
    }
    let scopes: Vec<&str> = grant.scope.split_whitespace().collect();
    if scopes.contains(&"openid") && scopes.contains(&"fhirUser") {
        body["id_token"] = json!(sim.id_token(&grant.client_id));
    }
    if let Some(ctx) = &grant.launch.app_context {
        body["appContext"] = json!(ctx);
        // The study named by the card, as SMART 2.2 fhirContext (by identifier: the EHR's
        // ImagingStudy ids are not radsight's).
        if let Some(uid) = serde_json::from_str::<Value>(ctx).ok().and_then(|v| v["studyInstanceUid"].as_str().map(str::to_owned)) {
            body["fhirContext"] =
                json!([{"type": "ImagingStudy", "identifier": {"system": "urn:dicom:uid", "value": format!("urn:oid:{uid}")}}]);
        }
    }
    with_cors(HttpResponse::Ok().insert_header(("cache-control", "no-store")).insert_header(("pragma", "no-cache")).json(body))
}

fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get("authorization")?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

#[derive(Deserialize)]
struct IntrospectForm {
    token: Option<String>,
}

async fn introspect(req: HttpRequest, sim: web::Data<EhrSim>, form: web::Form<IntrospectForm>) -> HttpResponse {
    let known = basic_credentials(&req)
        .is_some_and(|(id, secret)| sim.0.introspection_clients.lock().unwrap().iter().any(|(i, s)| *i == id && *s == secret));
    if !known {
        return HttpResponse::Unauthorized()
            .insert_header(("www-authenticate", "Basic realm=\"introspection\""))
            .json(json!({"error": "invalid_client"}));
    }
    // A backend token: what RFC 7662 requires and SMART asks for (no patient or user).
    if let Some(g) = form.token.as_deref().and_then(|t| sim.0.backend.grant(t)) {
        let body = json!({"active": true, "scope": g.scope, "client_id": g.client_id, "token_type": "Bearer", "exp": g.expires_at});
        return HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(body);
    }
    let grant = form.token.as_deref().and_then(|t| sim.0.tokens.lock().unwrap().get(t).cloned()).filter(|g| g.expires_at > now());
    let body = match grant {
        None => json!({"active": false}),
        Some(g) => {
            // SMART 2.2: scope, client_id and exp always; iss and sub with openid, fhirUser with
            // fhirUser, and the launch context (patient) that was granted.
            let granted: Vec<&str> = g.scope.split_whitespace().collect();
            let mut body = json!({"active": true, "scope": g.scope, "client_id": g.client_id, "token_type": "Bearer", "exp": g.expires_at});
            if !g.patient.is_empty() {
                body["patient"] = json!(g.patient);
            }
            if granted.contains(&"openid") {
                body["iss"] = json!(sim.iss());
                body["sub"] = json!("demo-radiologist");
            }
            if granted.contains(&"fhirUser") {
                body["fhirUser"] = json!(format!("{}/{}", sim.iss(), sim.0.user));
            }
            body
        }
    };
    HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(body)
}

/// A launch token reading a Patient: only its own patient, with `Patient` read scopes.
fn read_patient(sim: &EhrSim, req: &HttpRequest, id: &str) -> HttpResponse {
    let token = req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let grant = token.and_then(|t| sim.0.tokens.lock().unwrap().get(t).cloned()).filter(|g| g.expires_at > now());
    let Some(grant) = grant else { return outcome(StatusCode::UNAUTHORIZED, "login", "a valid bearer token is required") };
    let allowed = grant
        .scope
        .split_whitespace()
        .any(|s| matches!(s, "patient/Patient.rs" | "patient/Patient.r" | "patient/Patient.read" | "patient/*.rs" | "patient/*.read"));
    if !allowed || grant.patient != id {
        return outcome(StatusCode::FORBIDDEN, "forbidden", "the token does not grant this patient");
    }
    let found = sim.0.store.lock().unwrap().read("Patient", id).cloned();
    match found {
        Some(p) => HttpResponse::Ok().content_type("application/fhir+json").insert_header(("access-control-allow-origin", "*")).json(p),
        None => outcome(StatusCode::NOT_FOUND, "not-found", "no such patient"),
    }
}

/// The demo patient.
pub fn demo_patient(id: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "active": true,
        "name": [{"use": "official", "text": "Alex Demo (synthetic)", "family": "Demo", "given": ["Alex"]}],
        "gender": "other", "birthDate": "1970-01-01"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }
}
