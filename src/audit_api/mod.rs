//! The auditors' API: the latest signed checkpoint, inclusion and consistency proofs, and
//! filtered exports.
//!
//! **Boundary:** only registered auditor clients reach it, with a signed JWT (verified exactly
//! like a CDS client's, against the `auditors` registry, never the `clients` one) that carries
//! the `audit.read` scope. Every read, and every refusal, is itself audited.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::audit::export::{self, Filter, Format};
use crate::audit::proof::{Attach, ProofError, inclusion_document};
use crate::audit::tree::{self, to_hex};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::auth::client_jwt::{AuthFailure, VerifiedClient};
use crate::http::{HttpError, client_auth};
use crate::state::AppState;
use crate::store::entities::{audit_checkpoint, auditor_session};

pub const SCOPE: &str = "audit.read";
const MAX_EXPORT: u64 = 100_000;
const SESSION_COOKIE: &str = "radsight_audit";
const SESSION_SECS: i64 = 900;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit/console", web::get().to(console))
        .route("/audit/session", web::post().to(open_session))
        .route("/audit/checkpoint", web::get().to(latest_checkpoint))
        .route("/audit/proofs/inclusion", web::get().to(inclusion))
        .route("/audit/proofs/consistency", web::get().to(consistency))
        .route("/audit/events", web::get().to(events));
}

/// An auditor is a signed JWT with `audit.read` (tools), or a console session opened with one.
async fn authenticate_auditor(req: &HttpRequest, state: &AppState) -> Result<VerifiedClient, HttpError> {
    let result = match (client_auth::authorization(req), req.cookie(SESSION_COOKIE)) {
        (None, Some(cookie)) => session_client(state, cookie.value()).await.map_err(|f| f.code()),
        _ => match client_auth::verify(req, state, &state.auditors).await {
            Ok(c) if c.has_scope(SCOPE) => Ok(c),
            Ok(_) => Err("missing-audit-scope"),
            Err(f) => Err(f.code()),
        },
    };
    match result {
        Ok(c) => Ok(c),
        Err(reason) => Err(client_auth::refuse(req, state, reason).await),
    }
}

fn session_hash(value: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(value.as_bytes()))
}

async fn session_client(state: &AppState, value: &str) -> Result<VerifiedClient, AuthFailure> {
    use sea_orm::EntityTrait;
    let row = auditor_session::Entity::find_by_id(session_hash(value))
        .one(&state.db)
        .await
        .map_err(|_| AuthFailure::ReplayStoreUnavailable)?
        .ok_or(AuthFailure::MissingToken)?;
    if row.expires_at < OffsetDateTime::now_utc().unix_timestamp() {
        return Err(AuthFailure::Expired);
    }
    Ok(VerifiedClient { iss: row.iss, tenant: None, scope: Some(SCOPE.into()) })
}

/// `POST /audit/session`: exchanges an auditor JWT for a 15-minute console session cookie.
async fn open_session(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    use sea_orm::{ActiveValue::Set, EntityTrait};
    if req.headers().get("authorization").is_none() {
        return Err(HttpError::Unauthorized);
    }
    let who = authenticate_auditor(&req, &state).await?;
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::fill(&mut raw).map_err(|_| HttpError::internal(anyhow::anyhow!("no randomness")))?;
    let value = hex::encode(raw);
    let row = auditor_session::ActiveModel {
        token_hash: Set(session_hash(&value)),
        iss: Set(who.iss.clone()),
        expires_at: Set(OffsetDateTime::now_utc().unix_timestamp() + SESSION_SECS),
    };
    auditor_session::Entity::insert(row).exec_without_returning(&state.db).await.map_err(HttpError::internal)?;
    record_read(&state, &who, Action::AuditRead, "console-session", json!({"expires_in": SESSION_SECS})).await?;
    let cookie = actix_web::cookie::Cookie::build(SESSION_COOKIE, value)
        .path("/audit")
        .http_only(true)
        .secure(state.settings.server.public_url.starts_with("https://"))
        .same_site(actix_web::cookie::SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(SESSION_SECS))
        .finish();
    Ok(no_store(HttpResponse::Ok()).cookie(cookie).json(json!({"expires_in": SESSION_SECS})))
}

/// The auditors' console: a static, read-only page; all data comes from the API above.
async fn console() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ))
        .insert_header(("cache-control", "no-store"))
        .body(include_str!("console.html"))
}

async fn record_read(
    state: &AppState,
    who: &VerifiedClient,
    action: Action,
    what: &str,
    detail: serde_json::Value,
) -> Result<(), HttpError> {
    let mut event = AuditEvent::new(action, Outcome::Success).actor(Some(&who.iss), None).entity("AuditLog", what);
    event.detail = detail;
    state.audit.record(&state.db, event).await.map(|_| ()).map_err(HttpError::internal)
}

fn no_store(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header(("cache-control", "no-store"));
    b
}

async fn latest_checkpoint(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let who = authenticate_auditor(&req, &state).await?;
    use sea_orm::{EntityTrait, QueryOrder};
    let latest = audit_checkpoint::Entity::find()
        .order_by_desc(audit_checkpoint::Column::TreeSize)
        .one(&state.db)
        .await
        .map_err(HttpError::internal)?
        .ok_or_else(|| HttpError::invalid("checkpoint", "no checkpoint has been signed yet"))?;
    record_read(&state, &who, Action::AuditRead, "checkpoint", json!({"tree_size": latest.tree_size})).await?;
    Ok(no_store(HttpResponse::Ok()).content_type("text/plain; charset=utf-8").body(latest.note))
}

#[derive(Deserialize)]
struct InclusionQuery {
    index: u64,
    tree_size: u64,
}

async fn inclusion(
    req: HttpRequest,
    query: Result<web::Query<InclusionQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let who = authenticate_auditor(&req, &state).await?;
    let q = query.map_err(|_| HttpError::invalid("index", "index and tree_size must be non-negative integers"))?;
    let document = inclusion_document(&state.db, q.index, q.tree_size, Attach::Nothing).await.map_err(|e| match e {
        ProofError::OutOfRange { .. } => HttpError::invalid("index", "index must be smaller than tree_size"),
        ProofError::Tree(e) => proof_error(e),
        other => HttpError::internal(other),
    })?;
    record_read(&state, &who, Action::AuditRead, "inclusion-proof", json!({"index": q.index, "tree_size": q.tree_size})).await?;
    Ok(no_store(HttpResponse::Ok()).json(document))
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    from: u64,
    to: u64,
}

async fn consistency(
    req: HttpRequest,
    query: Result<web::Query<ConsistencyQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let who = authenticate_auditor(&req, &state).await?;
    let q = query.map_err(|_| HttpError::invalid("from", "from and to must be non-negative integers"))?;
    if q.from == 0 || q.from > q.to {
        return Err(HttpError::invalid("from", "from must be at least 1 and at most to"));
    }
    let proof = tree::consistency_proof(&state.db, q.from, q.to).await.map_err(proof_error)?;
    let (r1, r2) = (tree::root(&state.db, q.from).await.map_err(proof_error)?, tree::root(&state.db, q.to).await.map_err(proof_error)?);
    record_read(&state, &who, Action::AuditRead, "consistency-proof", json!({"from": q.from, "to": q.to})).await?;
    Ok(no_store(HttpResponse::Ok()).json(json!({
        "from": q.from,
        "to": q.to,
        "from_root": to_hex(&r1),
        "to_root": to_hex(&r2),
        "proof": proof.iter().map(to_hex).collect::<Vec<_>>(),
    })))
}

fn proof_error(e: tree::TreeError) -> HttpError {
    match e {
        tree::TreeError::BeyondLog { .. } => HttpError::invalid("tree_size", e.to_string()),
        other => HttpError::internal(other),
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    from: Option<String>,
    to: Option<String>,
    patient: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    model: Option<String>,
    entity: Option<String>,
    format: Option<String>,
}

pub fn parse_time(field: &str, value: Option<&str>) -> Result<Option<OffsetDateTime>, HttpError> {
    value.map(|v| OffsetDateTime::parse(v, &Rfc3339).map_err(|_| HttpError::invalid(field, "must be an RFC 3339 instant"))).transpose()
}

async fn events(
    req: HttpRequest,
    query: Result<web::Query<EventsQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let who = authenticate_auditor(&req, &state).await?;
    let q = query.map_err(|_| HttpError::invalid("(query)", "unreadable query string"))?;
    let format =
        Format::parse(q.format.as_deref().unwrap_or("fhir")).ok_or_else(|| HttpError::invalid("format", "must be fhir, jsonl or csv"))?;
    let filter = Filter {
        from: parse_time("from", q.from.as_deref())?,
        to: parse_time("to", q.to.as_deref())?,
        patient: q.patient.clone(),
        actor: q.actor.clone(),
        action: q.action.clone(),
        model: q.model.clone(),
        entity: q.entity.clone(),
    };
    let entries = export::select(&state.db, &filter, MAX_EXPORT).await.map_err(HttpError::internal)?;
    let body = export::render(&entries, format, &state.settings.audit.origin);
    let detail = json!({"format": q.format.as_deref().unwrap_or("fhir"), "count": entries.len(),
        "filter": {"from": q.from, "to": q.to, "patient": q.patient.is_some(), "actor": q.actor, "action": q.action, "model": q.model}});
    let mut event = AuditEvent::new(Action::AuditExport, Outcome::Success).actor(Some(&who.iss), None).entity("AuditLog", "export");
    event.detail = detail;
    if let Some(p) = &q.patient {
        event = event.patient(Some(if p.starts_with("Patient/") { p.clone() } else { format!("Patient/{p}") }));
    }
    state.audit.record(&state.db, event).await.map_err(HttpError::internal)?;
    Ok(no_store(HttpResponse::Ok()).content_type(format.content_type()).body(body))
}
