//! `GET /results/{id}` (JSON), `/results/{id}/saliency.png` and `/results/{id}/fhir` (an R4
//! Bundle), for authorised callers only: a registered CDS client with its JWT (audience: the
//! exact URL), or a signed link that a card carried ([`super::links`]). Every read, and every
//! refusal, is audited; answers are never cached.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::store;
use crate::audit::{Action, AuditEvent, Outcome};
use crate::auth::links::LinkSigner;
use crate::http::HttpError;
use crate::http::client_auth;
use crate::results::faithfulness::FaithfulnessOfResult;
use crate::state::AppState;
use crate::store::ResultStatus;
use crate::store::entities::{analysis_result, study};

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Answers, errors included, are never cached: they carry patient data or its absence.
    cfg.service(
        web::scope("/results")
            .wrap(DefaultHeaders::new().add((CACHE_CONTROL, "no-store")))
            .route("/{id}", web::get().to(result_json))
            .route("/{id}/saliency.png", web::get().to(saliency_png))
            .route("/{id}/fhir", web::get().to(result_fhir)),
    );
}

#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("a registered client's JWT or a valid signed link is required")]
    Unauthorized,
    #[error("no result {0}")]
    NotFound(String),
    #[error("result {0} is {1}, not done")]
    NotReady(String, String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<ResultError> for HttpError {
    fn from(e: ResultError) -> HttpError {
        match e {
            ResultError::Unauthorized => HttpError::outcome(StatusCode::UNAUTHORIZED, "login", e.to_string()).with_challenge("Bearer"),
            ResultError::NotFound(_) => HttpError::outcome(StatusCode::NOT_FOUND, "not-found", e.to_string()),
            ResultError::NotReady(..) => HttpError::outcome(StatusCode::CONFLICT, "incomplete", e.to_string()),
            ResultError::Internal(e) => HttpError::Internal(e),
        }
    }
}

fn internal(e: impl Into<anyhow::Error>) -> ResultError {
    ResultError::Internal(e.into())
}

/// Who is reading: a CDS client (`iss`) or the holder of a signed link.
enum Reader {
    Client(String),
    SignedLink,
}

impl Reader {
    fn iss(&self) -> Option<&str> {
        match self {
            Reader::Client(iss) => Some(iss),
            Reader::SignedLink => None,
        }
    }
}

/// A client JWT when one is sent, else the signed link; a refusal is audited like any other.
async fn authorise(req: &HttpRequest, state: &AppState) -> Result<Reader, ResultError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let refusal = if client_auth::authorization(req).is_some() {
        match client_auth::verify(req, state, &state.verifier).await {
            Ok(client) => return Ok(Reader::Client(client.iss)),
            Err(f) => f.code(),
        }
    } else {
        match state.links.verify(req.path(), req.query_string(), now) {
            Ok(()) => return Ok(Reader::SignedLink),
            Err(r) => r.code(),
        }
    };
    client_auth::record_refusal(req, state, refusal).await.map_err(internal)?;
    Err(ResultError::Unauthorized)
}

/// Loads a result and its study, audits the read (or that the result was not found).
async fn read(
    req: &HttpRequest,
    state: &AppState,
    id: &str,
    what: &'static str,
) -> Result<(Reader, analysis_result::Model, study::Model), ResultError> {
    let reader = authorise(req, state).await?;
    let mut found = store::find_with_study(&state.db, id).await.map_err(internal)?;
    // A client reads only results of patients in its own namespace; another EHR's is "not
    // found" (its existence is not revealed). A signed link was issued for its reader.
    if let Some(iss) = reader.iss()
        && found.as_ref().is_some_and(|(_, s)| s.patient_namespace.as_deref() != Some(state.settings.namespace_of_issuer(iss).as_str()))
    {
        found = None;
    }
    let outcome = if found.is_some() { Outcome::Success } else { Outcome::Rejected };
    let event = AuditEvent::new(Action::PatientRead, outcome)
        .actor(reader.iss(), None)
        .patient(found.as_ref().map(|(_, s)| s.patient_ref.clone()))
        .entity("AnalysisResult", id)
        .detail("resource", what)
        .detail("via", if reader.iss().is_some() { "client-jwt" } else { "signed-link" });
    state.audit.record(&state.db, event).await.map_err(internal)?;
    match found {
        Some((r, s)) => Ok((reader, r, s)),
        None => Err(ResultError::NotFound(id.to_owned())),
    }
}

fn done(r: &analysis_result::Model) -> Result<(), ResultError> {
    match r.result_status() {
        ResultStatus::Done => Ok(()),
        other => Err(ResultError::NotReady(r.id.clone(), other.to_string())),
    }
}

/// The result as JSON: findings, model, explanation and faithfulness, and signed links.
pub fn result_view(r: &analysis_result::Model, s: &study::Model, links: &LinkSigner, base: &str, now: i64) -> Value {
    let parse = |text: &Option<String>| text.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok()).unwrap_or(Value::Null);
    json!({
        "id": r.id,
        "status": r.status,
        "study": {"studyInstanceUid": s.study_uid, "modality": s.modality, "bodySite": s.body_site, "started": s.started_at},
        "instance": {"sopInstanceUid": r.sop_instance_uid, "seriesInstanceUid": r.series_uid, "pixelSha256": r.input_sha256},
        "model": {"id": r.model_id, "version": r.model_version, "weightsSha256": r.weights_sha256, "card": parse(&r.model_card)},
        "findings": store::findings(r),
        "saliency": {"method": r.saliency_method, "explanation": parse(&r.explanation)},
        "faithfulness": FaithfulnessOfResult::of(r).to_json(),
        "runtimeMs": r.runtime_ms,
        "error": r.error,
        "links": {
            "saliency": links.sign(base, &format!("/results/{}/saliency.png", r.id), now),
            "fhir": links.sign(base, &format!("/results/{}/fhir", r.id), now),
        },
    })
}

async fn result_json(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let (_, r, s) = read(&req, &state, &path, "result").await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = result_view(&r, &s, &state.links, &state.settings.server.public_url, now);
    Ok(HttpResponse::Ok().json(body))
}

async fn saliency_png(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let (_, r, _) = read(&req, &state, &path, "saliency.png").await?;
    done(&r)?;
    let picture = super::overlay::saliency_png(&state.db, &r.id).await.map_err(internal)?;
    let picture = picture.ok_or_else(|| ResultError::NotFound(format!("{}/saliency.png", r.id)))?;
    Ok(HttpResponse::Ok().insert_header((CONTENT_TYPE, picture.media_type.as_str())).body(picture.bytes))
}

async fn result_fhir(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let (_, r, s) = read(&req, &state, &path, "fhir").await?;
    done(&r)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let saliency = state.links.sign(&state.settings.server.public_url, &format!("/results/{}/saliency.png", r.id), now);
    let receipt = crate::audit::proof::receipt_for(
        &state.db,
        &state.audit,
        &state.checkpoint_signer,
        Some(&state.settings.audit.checkpoint_dir),
        crate::audit::Action::ModelInference,
        "AnalysisResult",
        &r.id,
    )
    .await
    .map_err(internal)?;
    let bundle = super::fhir::result_bundle(&r, &s, &saliency, receipt.as_ref());
    Ok(HttpResponse::Ok().content_type("application/fhir+json").body(bundle.to_string()))
}
