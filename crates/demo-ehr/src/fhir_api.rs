//! The FHIR REST endpoints over [`crate::fhir_store`]: who may do what (bearer tokens and
//! their SMART scopes), injected failures for the tests, and FHIR R4 http.html responses
//! (`Location`, `ETag`, OperationOutcome on every error).
//!
//! Backend tokens (`system/` scopes) may read, search and write; the users' launch tokens
//! (`patient/`, `user/` scopes) may only read and search, and `patient/` scopes only see their
//! patient's compartment.
//!
//! Limits: request bodies up to 16 MiB (`MAX_FHIR_BODY_BYTES` in `lib.rs`); everything is held
//! in memory, so a test fixture, not a server to leave running.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde_json::Value;

use crate::fhir_store::{SearchQuery, WriteError, WriteOutcome, bundle_needs, operation_outcome, searchset};
use crate::scopes::{Context, Interaction, Scope, any_permits, is_resource_type, parse_all};
use crate::{EhrSim, now};

const FHIR_JSON: &str = "application/fhir+json";

/// Pending injected failures (see [`EhrSim::fail_writes`]).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WriteFailures {
    pub(crate) remaining: usize,
    pub(crate) status: u16,
}

/// What a request's bearer token allows.
enum Access {
    Backend { scopes: Vec<Scope> },
    User { scopes: Vec<Scope>, patient: String },
}

impl Access {
    fn allows(&self, resource_type: &str, interaction: Interaction) -> bool {
        match self {
            Access::Backend { scopes } => any_permits(scopes, Context::System, resource_type, interaction),
            Access::User { scopes, .. } => {
                matches!(interaction, Interaction::Read | Interaction::Search)
                    && (any_permits(scopes, Context::Patient, resource_type, interaction)
                        || any_permits(scopes, Context::User, resource_type, interaction))
            }
        }
    }

    /// Whether a read may return this resource: a `patient/` token sees only its patient and
    /// what has that patient as `subject` or `patient`.
    fn can_see(&self, resource: &Value, interaction: Interaction) -> bool {
        let Access::User { scopes, patient } = self else { return true };
        let resource_type = resource["resourceType"].as_str().unwrap_or_default();
        if any_permits(scopes, Context::User, resource_type, interaction) {
            return true;
        }
        let reference = format!("Patient/{patient}");
        (resource_type == "Patient" && resource["id"] == patient.as_str())
            || resource["subject"]["reference"] == reference.as_str()
            || resource["patient"]["reference"] == reference.as_str()
    }
}

/// Why a FHIR request is refused; each is answered with its status and an OperationOutcome.
#[derive(Debug)]
pub(crate) enum FhirError {
    /// 401: no bearer token.
    MissingToken,
    /// 401: a token that is unknown, expired or revoked.
    DeadToken,
    /// 403: the token's scopes do not allow this.
    Forbidden { resource_type: String, interaction: Interaction },
    /// 400: the body is not a JSON object.
    NotJson,
    /// 400: a request the demo EHR will not carry out.
    BadRequest(String),
    /// 404: not a resource type, or no resource with that id.
    NotFound(String),
    /// The store refused the write or the search.
    Store(WriteError),
    /// A failure the tests asked for ([`EhrSim::fail_writes`]).
    Injected(StatusCode),
}

impl fmt::Display for FhirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FhirError::MissingToken => f.write_str("a bearer token is required"),
            FhirError::DeadToken => f.write_str("the access token is unknown, expired or revoked"),
            FhirError::Forbidden { resource_type, interaction } => {
                write!(f, "the token's scopes do not allow {interaction:?} on {resource_type}")
            }
            FhirError::NotJson => f.write_str("the body is not a JSON FHIR resource"),
            FhirError::BadRequest(text) | FhirError::NotFound(text) => f.write_str(text),
            FhirError::Store(WriteError::Invalid(text) | WriteError::MultipleMatches(text)) => f.write_str(text),
            FhirError::Injected(_) => f.write_str("injected failure (EhrSim::fail_writes)"),
        }
    }
}

impl FhirError {
    /// The OperationOutcome's `issue.code`.
    fn issue_code(&self) -> &'static str {
        match self {
            FhirError::MissingToken | FhirError::DeadToken => "login",
            FhirError::Forbidden { .. } => "forbidden",
            FhirError::NotJson => "structure",
            FhirError::BadRequest(_) | FhirError::Store(WriteError::Invalid(_)) => "invalid",
            FhirError::NotFound(_) => "not-found",
            FhirError::Store(WriteError::MultipleMatches(_)) => "multiple-matches",
            FhirError::Injected(s) if is_busy(*s) => "transient",
            FhirError::Injected(_) => "exception",
        }
    }
}

fn is_busy(status: StatusCode) -> bool {
    matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS)
}

impl ResponseError for FhirError {
    fn status_code(&self) -> StatusCode {
        match self {
            FhirError::MissingToken | FhirError::DeadToken => StatusCode::UNAUTHORIZED,
            FhirError::Forbidden { .. } => StatusCode::FORBIDDEN,
            FhirError::NotJson | FhirError::BadRequest(_) | FhirError::Store(WriteError::Invalid(_)) => StatusCode::BAD_REQUEST,
            FhirError::NotFound(_) => StatusCode::NOT_FOUND,
            FhirError::Store(WriteError::MultipleMatches(_)) => StatusCode::PRECONDITION_FAILED,
            FhirError::Injected(status) => *status,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = fhir_json(self.status_code(), &operation_outcome(self.issue_code(), &self.to_string()));
        // RFC 6750 §3: a 401 names the scheme; with a token presented, also what was wrong.
        let challenge = match self {
            FhirError::MissingToken => Some("Bearer realm=\"demo-ehr\"".to_owned()),
            FhirError::DeadToken => Some(format!("Bearer realm=\"demo-ehr\", error=\"invalid_token\", error_description=\"{self}\"")),
            _ => None,
        };
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
        if matches!(self, FhirError::Injected(s) if is_busy(*s)) {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<WriteError> for FhirError {
    fn from(e: WriteError) -> Self {
        FhirError::Store(e)
    }
}

fn bearer_token(req: &HttpRequest) -> Option<&str> {
    req.headers().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// What the request's bearer token allows.
fn access(sim: &EhrSim, req: &HttpRequest) -> Result<Access, FhirError> {
    let token = bearer_token(req).ok_or(FhirError::MissingToken)?;
    if let Some(grant) = sim.0.backend.grant(token) {
        return Ok(Access::Backend { scopes: parse_all(&grant.scope) });
    }
    let user = sim.0.tokens.lock().unwrap().get(token).filter(|g| g.expires_at > now()).cloned();
    let grant = user.ok_or(FhirError::DeadToken)?;
    Ok(Access::User { scopes: parse_all(&grant.scope), patient: grant.patient })
}

/// The access, if it allows `interaction` on `resource_type`.
fn authorize(sim: &EhrSim, req: &HttpRequest, resource_type: &str, interaction: Interaction) -> Result<Access, FhirError> {
    let access = access(sim, req)?;
    access.allows(resource_type, interaction).then_some(access).ok_or_else(|| forbidden(resource_type, interaction))
}

fn forbidden(resource_type: &str, interaction: Interaction) -> FhirError {
    FhirError::Forbidden { resource_type: resource_type.to_owned(), interaction }
}

fn fhir_json(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status).content_type(FHIR_JSON).body(body.to_string())
}

/// Uses up one injected failure, if any is pending.
fn take_injected_failure(sim: &EhrSim) -> Result<(), FhirError> {
    let mut failures = sim.0.write_failures.lock().unwrap();
    if failures.remaining == 0 {
        return Ok(());
    }
    failures.remaining -= 1;
    Err(FhirError::Injected(StatusCode::from_u16(failures.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)))
}

fn parse_body(body: &[u8]) -> Result<Value, FhirError> {
    serde_json::from_slice::<Value>(body).ok().filter(Value::is_object).ok_or(FhirError::NotJson)
}

fn check_resource_type(resource_type: &str) -> Result<(), FhirError> {
    if is_resource_type(resource_type) { Ok(()) } else { Err(FhirError::NotFound(format!("{resource_type} is not a resource type"))) }
}

/// `POST {base}/fhir`: a transaction or batch Bundle.
pub(crate) async fn transaction(req: HttpRequest, sim: web::Data<EhrSim>, body: web::Bytes) -> Result<HttpResponse, FhirError> {
    let access = access(&sim, &req)?;
    let bundle = parse_body(&body)?;
    let is_bundle = bundle["resourceType"] == "Bundle";
    if is_bundle {
        sim.0.received_transactions.lock().unwrap().push(bundle.clone());
    }
    if !is_bundle || !matches!(bundle["type"].as_str(), Some("transaction" | "batch")) {
        return Err(FhirError::BadRequest("only a Bundle of type transaction or batch can be posted to the FHIR base".into()));
    }
    if let Some((t, i)) = bundle_needs(&bundle).into_iter().find(|(t, i)| !access.allows(t, *i)) {
        return Err(forbidden(&t, i));
    }
    take_injected_failure(&sim)?;
    let response = sim.0.store.lock().unwrap().process_bundle(&bundle)?;
    Ok(fhir_json(StatusCode::OK, &response))
}

/// `POST {base}/fhir/{type}`, conditional with `If-None-Exist`.
pub(crate) async fn create(
    req: HttpRequest,
    sim: web::Data<EhrSim>,
    resource_type: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, FhirError> {
    check_resource_type(&resource_type)?;
    authorize(&sim, &req, &resource_type, Interaction::Create)?;
    let resource = parse_body(&body)?;
    if resource["resourceType"] != resource_type.as_str() {
        return Err(FhirError::BadRequest("the resource's resourceType is not the type in the URL".into()));
    }
    let if_none_exist = match req.headers().get("if-none-exist").map(|v| v.to_str()) {
        None => None,
        Some(Ok(q)) => Some(q.to_owned()),
        Some(Err(_)) => return Err(FhirError::BadRequest("If-None-Exist is not ASCII".into())),
    };
    take_injected_failure(&sim)?;
    let outcome = sim.0.store.lock().unwrap().create(resource, if_none_exist.as_deref())?;
    Ok(written(&sim, &outcome))
}

/// `201 Created` or `200 OK` with `Location` (absolute), `ETag` and the resource.
fn written(sim: &EhrSim, outcome: &WriteOutcome) -> HttpResponse {
    let status = if outcome.created { StatusCode::CREATED } else { StatusCode::OK };
    HttpResponse::build(status)
        .content_type(FHIR_JSON)
        .insert_header(("location", format!("{}/{}", sim.iss(), outcome.location())))
        .insert_header(("etag", outcome.etag()))
        .body(outcome.resource.to_string())
}

/// `GET {base}/fhir/{type}?…`: a searchset Bundle.
pub(crate) async fn search(req: HttpRequest, sim: web::Data<EhrSim>, resource_type: web::Path<String>) -> Result<HttpResponse, FhirError> {
    check_resource_type(&resource_type)?;
    let access = authorize(&sim, &req, &resource_type, Interaction::Search)?;
    let query = SearchQuery::parse(req.query_string())?;
    let found = sim.0.store.lock().unwrap().search(&resource_type, &query);
    let visible = found.into_iter().filter(|r| access.can_see(r, Interaction::Search)).collect();
    Ok(fhir_json(StatusCode::OK, &searchset(&sim.iss(), visible)))
}

/// `GET {base}/fhir/{type}/{id}`.
pub(crate) async fn read(req: HttpRequest, sim: web::Data<EhrSim>, path: web::Path<(String, String)>) -> Result<HttpResponse, FhirError> {
    let (resource_type, id) = path.into_inner();
    check_resource_type(&resource_type)?;
    let access = access(&sim, &req)?;
    // A launch token reading its Patient keeps the demo EHR's original answers.
    if resource_type == "Patient" && matches!(access, Access::User { .. }) {
        return Ok(crate::read_patient(&sim, &req, &id));
    }
    if !access.allows(&resource_type, Interaction::Read) {
        return Err(forbidden(&resource_type, Interaction::Read));
    }
    let found = sim.0.store.lock().unwrap().read(&resource_type, &id).cloned();
    let resource = found.filter(|r| access.can_see(r, Interaction::Read));
    let resource = resource.ok_or_else(|| FhirError::NotFound(format!("no {resource_type} with this id")))?;
    Ok(fhir_json(StatusCode::OK, &resource))
}
