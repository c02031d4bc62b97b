//! radsight's API for the SMART app (`/api/...`).
//!
//! Every call carries the EHR-issued access token (`Authorization: Bearer`) and names the EHR
//! (`X-SMART-Iss`, the launch `iss`). Life of a call: validate the token with that EHR
//! ([`super::token`]) → check the ImagingStudy read scope → load what is asked for → check the
//! token's `patient` is the patient it belongs to → append the audit entry (a patient-data read:
//! user, patient, resource) → answer. Refusals are audited too: 401 (`auth.reject`), 403 and
//! 404 (`patient.read`, rejected). Feedback is `result.feedback`. Responses are
//! `Cache-Control: no-store`. Nothing about the patient or the token is logged; the feedback
//! comment is stored, never audited.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use sea_orm::{ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder};
use serde::Deserialize;
use serde_json::{Value, json};

use super::SmartState;
use super::token::{Grant, TokenFailure};
use crate::audit::{Action, AuditEvent, Outcome};
use crate::domain::PatientId;
use crate::http::HttpError;
use crate::http::client_auth::{authorization, refusal_event, source};
use crate::results::faithfulness::FaithfulnessOfResult;
use crate::results::store::studies_with_latest_results;
use crate::state::AppState;
use crate::store::ResultStatus;
use crate::store::entities::{analysis_result, audit_entry, job, result_artefact, result_feedback, study};
use crate::store::served_cards::{self, ServedCard};

/// The header naming the EHR that issued the token.
pub const ISS_HEADER: &str = "x-smart-iss";
const MAX_FEEDBACK_BYTES: usize = 16 * 1024;

/// The coded reasons a clinician can give with feedback.
pub const FEEDBACK_REASONS: [(&str, &str); 7] = [
    ("finding-confirmed", "Finding confirmed on review"),
    ("false-positive", "Finding not present (false positive)"),
    ("missed-finding", "A finding was missed (false negative)"),
    ("wrong-location", "Saliency points to the wrong region"),
    ("image-quality", "Image quality too poor to judge"),
    ("not-relevant", "Not clinically relevant here"),
    ("other", "Other (see comment)"),
];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api")
            .wrap(actix_web::middleware::DefaultHeaders::new().add(("cache-control", "no-store")).add(("pragma", "no-cache")))
            .app_data(web::PayloadConfig::new(MAX_FEEDBACK_BYTES))
            .route("/patients/{id}/studies", web::get().to(list_studies))
            .route("/results/{id}", web::get().to(read_result))
            .route("/results/{id}/image.png", web::get().to(read_image))
            .route("/results/{id}/heatmap.png", web::get().to(read_heatmap))
            .route("/results/{id}/mask.png", web::get().to(read_mask))
            .route("/results/{id}/saliency.png", web::get().to(read_saliency))
            .route("/results/{id}/audit", web::get().to(read_audit_trail))
            .route("/results/{id}/feedback", web::post().to(receive_feedback)),
    );
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the access token was refused: {0}")]
    Unauthorized(TokenFailure),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("invalid {field}: {why}")]
    Invalid { field: &'static str, why: &'static str },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> HttpError {
        match e {
            ApiError::Unauthorized(TokenFailure::Unavailable) => {
                HttpError::outcome(StatusCode::SERVICE_UNAVAILABLE, "transient", "the EHR could not confirm the access token; try again")
            }
            ApiError::Unauthorized(f) => {
                HttpError::outcome(StatusCode::UNAUTHORIZED, "login", format!("{f}; launch the app again from the EHR"))
                    .with_challenge("Bearer error=\"invalid_token\"")
            }
            ApiError::Forbidden(why) => HttpError::outcome(StatusCode::FORBIDDEN, "forbidden", why),
            ApiError::NotFound => HttpError::outcome(StatusCode::NOT_FOUND, "not-found", "no such result or study"),
            ApiError::Invalid { field, why } => HttpError::invalid(field, why),
            ApiError::Internal(e) => HttpError::Internal(e),
        }
    }
}

fn internal(e: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Internal(e.into())
}

/// Validates the token; a refusal is audited (reason, path, claimed EHR; never the token).
async fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Grant, ApiError> {
    let smart = req.app_data::<web::Data<SmartState>>().ok_or_else(|| internal(anyhow::anyhow!("the SMART state is not registered")))?;
    let iss = req.headers().get(ISS_HEADER).and_then(|v| v.to_str().ok());
    match smart.tokens.validate(iss, authorization(req)).await {
        Ok(grant) => Ok(grant),
        Err(failure) => {
            // Only a registered EHR is named: anything else is the caller's unchecked text.
            let registered = iss.filter(|i| smart.tokens.ehr(i).is_some()).map(str::to_owned);
            let event = refusal_event(req, failure.code(), registered).detail("api", "smart");
            state.audit.record_refusal(&state.db, "http", source(req), failure.code(), event).await.map_err(internal)?;
            Err(ApiError::Unauthorized(failure))
        }
    }
}

/// What a read is about, for its audit entry.
struct ReadOf<'a> {
    resource: &'static str,
    patient_ref: &'a str,
    /// The namespace of a stored patient (a study's); `None` where the token's own is meant.
    namespace: Option<&'a str>,
    result: Option<&'a str>,
    study: Option<&'a str>,
}

fn read_event(grant: &Grant, what: &ReadOf, outcome: Outcome) -> AuditEvent {
    let mut e = AuditEvent::new(Action::PatientRead, outcome)
        .actor(Some(&grant.iss), grant.fhir_user.as_deref())
        .patient(Some(what.patient_ref.to_owned()))
        .detail("api", "smart")
        .detail("resource", what.resource);
    if let Some(r) = what.result {
        e = e.entity("AnalysisResult", r);
    }
    if let Some(s) = what.study {
        e = e.entity("ImagingStudy", s);
    }
    e
}

/// Checks scope and patient for a read; audits a refusal. The patient is the token's patient in
/// the namespace of the EHR that issued it: the same id in another namespace is someone else.
async fn authorise(state: &AppState, grant: &Grant, what: &ReadOf<'_>) -> Result<(), ApiError> {
    let own = state.settings.namespace_of_issuer(&grant.iss);
    let refusal = if !grant.may_read("ImagingStudy") {
        Some(("scope", "the token does not grant reading imaging studies"))
    } else if what.namespace.is_some_and(|n| n != own.as_str())
        || grant.patient.as_deref().map(|p| format!("Patient/{p}")).as_deref() != Some(what.patient_ref)
    {
        Some(("patient-mismatch", "the token is not for this patient"))
    } else {
        None
    };
    if let Some((code, text)) = refusal {
        let event = read_event(grant, what, Outcome::Rejected)
            .detail("reason", code)
            .detail("token_patient", grant.patient.as_ref().map(|p| Value::from(format!("Patient/{p}"))).unwrap_or_default());
        state.audit.record(&state.db, event).await.map_err(internal)?;
        return Err(ApiError::Forbidden(text));
    }
    Ok(())
}

async fn audit_read(state: &AppState, grant: &Grant, what: &ReadOf<'_>) -> Result<(), ApiError> {
    state.audit.record(&state.db, read_event(grant, what, Outcome::Success)).await.map_err(internal)?;
    Ok(())
}

/// A result and its study, for a caller allowed to read them (404 is audited as a refusal).
async fn readable_result(
    req: &HttpRequest,
    state: &AppState,
    id: &str,
    resource: &'static str,
) -> Result<(Grant, analysis_result::Model, study::Model), ApiError> {
    let grant = authenticate(req, state).await?;
    let found = crate::results::store::find_with_study(&state.db, id).await.map_err(internal)?;
    let Some((result, study)) = found else {
        let token_patient = grant.patient.as_ref().map(|p| format!("Patient/{p}")).unwrap_or_default();
        let event = read_event(
            &grant,
            &ReadOf { resource, patient_ref: &token_patient, namespace: None, result: None, study: None },
            Outcome::Rejected,
        )
        .detail("reason", "not-found");
        state.audit.record(&state.db, event).await.map_err(internal)?;
        return Err(ApiError::NotFound);
    };
    let what = ReadOf {
        resource,
        patient_ref: &study.patient_ref,
        namespace: Some(study.patient_namespace.as_deref().unwrap_or("")),
        result: Some(&result.id),
        study: Some(&study.study_uid),
    };
    authorise(state, &grant, &what).await?;
    Ok((grant, result, study))
}

/// What the app shows: pending (queued or running, or no result yet), done or failed.
fn analysis_state(r: Option<&analysis_result::Model>) -> &'static str {
    match r.map(|r| r.result_status()) {
        Some(s @ (ResultStatus::Done | ResultStatus::Failed)) => s.as_str(),
        _ => ResultStatus::Pending.as_str(),
    }
}

fn study_json(s: &study::Model) -> Value {
    json!({"studyInstanceUid": s.study_uid, "accession": s.accession, "modality": s.modality, "bodySite": s.body_site,
        "procedureCode": s.procedure_code, "description": s.description, "startedAt": s.started_at, "receivedAt": s.created_at})
}

fn parse_json_column(v: &Option<String>) -> Value {
    v.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or(Value::Null)
}

async fn list_studies(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let grant = authenticate(&req, &state).await?;
    let patient = PatientId::parse(&path).map_err(|_| ApiError::Invalid { field: "patient id", why: "not a FHIR id" })?;
    let patient_ref = patient.reference();
    let what = ReadOf { resource: "ImagingStudy", patient_ref: &patient_ref, namespace: None, result: None, study: None };
    authorise(&state, &grant, &what).await?;
    let namespace = state.settings.namespace_of_issuer(&grant.iss);
    let studies = studies_with_latest_results(&state.db, &namespace, &patient_ref).await.map_err(internal)?;
    let analysis = |latest: Option<&analysis_result::Model>| {
        let findings: Value = latest.and_then(|r| serde_json::from_str(&r.findings).ok()).unwrap_or(json!([]));
        json!({"state": analysis_state(latest), "resultId": latest.map(|r| &r.id),
            "modelId": latest.and_then(|r| r.model_id.as_ref()), "modelVersion": latest.and_then(|r| r.model_version.as_ref()),
            "findings": findings, "updatedAt": latest.map(|r| r.updated_at)})
    };
    let items: Vec<Value> = studies
        .iter()
        .map(|(s, latest)| {
            let mut v = study_json(s);
            // `analyses`: one per model that ran on the study's latest analysis; `analysis`: the
            // first of them (or the pending state), for readers that show one per study.
            v["analysis"] = analysis(latest.first());
            v["analyses"] = match latest.as_slice() {
                [] => json!([analysis(None)]),
                rows => rows.iter().map(|r| analysis(Some(r))).collect(),
            };
            v
        })
        .collect();
    audit_read(&state, &grant, &what).await?;
    Ok(HttpResponse::Ok().json(json!({"patient": patient_ref, "studies": items})))
}

async fn read_result(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    let (grant, r, s) = readable_result(&req, &state, &path, "AnalysisResult").await?;
    let artefacts =
        result_artefact::Entity::find().filter(result_artefact::Column::ResultId.eq(&r.id)).all(&state.db).await.map_err(internal)?;
    let own_feedback = result_feedback::Entity::find()
        .filter(result_feedback::Column::ResultId.eq(&r.id))
        .filter(result_feedback::Column::EhrIss.eq(&grant.iss))
        .order_by_desc(result_feedback::Column::Id)
        .all(&state.db)
        .await
        .map_err(internal)?;
    let body = json!({
        "id": r.id,
        "status": r.status,
        "state": analysis_state(Some(&r)),
        "error": r.error,
        "study": study_json(&s),
        "model": {"id": r.model_id, "version": r.model_version, "weightsSha256": r.weights_sha256, "card": parse_json_column(&r.model_card)},
        "findings": serde_json::from_str::<Value>(&r.findings).unwrap_or(json!([])),
        "instance": {"sopInstanceUid": r.sop_instance_uid, "seriesUid": r.series_uid, "inputSha256": r.input_sha256},
        "saliencyMethod": r.saliency_method,
        "explanation": parse_json_column(&r.explanation),
        "faithfulness": FaithfulnessOfResult::of(&r).to_json(),
        "runtimeMs": r.runtime_ms,
        "createdAt": r.created_at,
        "updatedAt": r.updated_at,
        "artefacts": artefacts.iter().map(|a| json!({"kind": a.kind, "mediaType": a.media_type, "width": a.width, "height": a.height, "sha256": a.sha256})).collect::<Vec<_>>(),
        "feedbackReasons": FEEDBACK_REASONS.iter().map(|(code, display)| json!({"code": code, "display": display})).collect::<Vec<_>>(),
        "feedback": own_feedback.iter().filter(|f| f.user_ref == grant.fhir_user).map(|f| json!({"verdict": f.verdict, "reasonCode": f.reason_code, "receivedAt": f.received_at})).collect::<Vec<_>>(),
    });
    audit_read(
        &state,
        &grant,
        &ReadOf {
            resource: "AnalysisResult",
            patient_ref: &s.patient_ref,
            namespace: s.patient_namespace.as_deref(),
            result: Some(&r.id),
            study: Some(&s.study_uid),
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

/// The windowed original (grayscale, source size).
async fn read_image(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    read_artefact(req, path, state, "image-png").await
}

/// The colour-mapped saliency with alpha from the map, for the app's canvas overlay.
async fn read_heatmap(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    read_artefact(req, path, state, "heatmap-png").await
}

/// A segmentation's class map on the display grid, for the app's contours.
async fn read_mask(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    read_artefact(req, path, state, "mask-png").await
}

/// The blended overlay picture, for people.
async fn read_saliency(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    read_artefact(req, path, state, "saliency-png").await
}

async fn read_artefact(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    kind: &'static str,
) -> Result<HttpResponse, HttpError> {
    let (grant, r, s) = readable_result(&req, &state, &path, kind).await?;
    let artefact = if kind == "saliency-png" {
        crate::results::overlay::saliency_png(&state.db, &r.id).await.map_err(internal)?
    } else {
        result_artefact::Entity::find_by_id((r.id.clone(), kind.to_owned())).one(&state.db).await.map_err(internal)?
    };
    let Some(a) = artefact else { return Err(ApiError::NotFound.into()) };
    audit_read(
        &state,
        &grant,
        &ReadOf {
            resource: kind,
            patient_ref: &s.patient_ref,
            namespace: s.patient_namespace.as_deref(),
            result: Some(&r.id),
            study: Some(&s.study_uid),
        },
    )
    .await?;
    Ok(HttpResponse::Ok().content_type(a.media_type).body(a.bytes))
}

#[derive(Deserialize)]
struct TrailQuery {
    /// Include the app's own reads of this result (many, and rarely what one looks for).
    #[serde(default)]
    include_reads: bool,
}

/// Cards that showed this result: their `smart` link's appContext names it, in the content
/// they share (`store::served_cards`) or, for cards stored before contents were shared, in
/// their own JSON.
async fn cards_showing(state: &AppState, result_id: &str, patient_ref: &str) -> Result<Vec<ServedCard>, ApiError> {
    served_cards::for_patient_containing(&state.db, patient_ref, result_id).await.map_err(internal)
}

async fn read_audit_trail(
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<TrailQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let (grant, r, s) = readable_result(&req, &state, &path, "AuditTrail").await?;
    let mut ids = vec![r.id.clone(), s.study_uid.clone()];
    ids.extend(r.job_id.clone());
    ids.extend(
        job::Entity::find()
            .filter(job::Column::StudyUid.eq(&s.study_uid))
            .all(&state.db)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|j| j.id),
    );
    let cards = cards_showing(&state, &r.id, &s.patient_ref).await?;
    ids.extend(cards.iter().map(|c| c.uuid.clone()));
    ids.sort();
    ids.dedup();
    let needles: Vec<String> = ids.iter().map(|id| format!("\"id\":{}", Value::from(id.as_str()))).collect();
    // The hook calls that served those cards, by their entries' keys: a call's entry names
    // its cards only through their content digest.
    let calls: Vec<i64> = cards.iter().map(|c| c.audit_seq).collect();
    let condition = needles
        .iter()
        .fold(Condition::any(), |c, n| c.add(audit_entry::Column::Entities.contains(n.as_str())))
        .add(audit_entry::Column::Seq.is_in(calls.iter().copied()));
    let entries =
        audit_entry::Entity::find().filter(condition).order_by_asc(audit_entry::Column::Seq).all(&state.db).await.map_err(internal)?;
    let events: Vec<Value> = entries
        .iter()
        .filter(|e| calls.contains(&e.seq) || needles.iter().any(|n| e.entities.contains(n.as_str())))
        .filter(|e| q.include_reads || e.action != Action::PatientRead.as_str())
        .map(|e| {
            json!({"seq": e.seq, "recordedAt": e.recorded_at, "action": e.action, "outcome": e.outcome,
                "actorIss": e.actor_iss, "actorUser": e.actor_user, "patient": e.patient_ref,
                "entities": serde_json::from_str::<Value>(&e.entities).unwrap_or(Value::Null),
                "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or(Value::Null),
                "entryHash": e.entry_hash})
        })
        .collect();
    audit_read(
        &state,
        &grant,
        &ReadOf {
            resource: "AuditTrail",
            patient_ref: &s.patient_ref,
            namespace: s.patient_namespace.as_deref(),
            result: Some(&r.id),
            study: Some(&s.study_uid),
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({"resultId": r.id, "events": events})))
}

struct Feedback {
    verdict: &'static str,
    reason_code: Option<&'static str>,
    comment: Option<String>,
    card_uuid: Option<String>,
}

fn parse_feedback(body: &[u8], max_comment_chars: usize) -> Result<Feedback, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| ApiError::Invalid { field: "body", why: "not a JSON object" })?;
    let verdict = match v.get("verdict").and_then(Value::as_str) {
        Some("agree") => "agree",
        Some("disagree") => "disagree",
        _ => return Err(ApiError::Invalid { field: "verdict", why: "must be agree or disagree" }),
    };
    let reason_code = match v.get("reasonCode") {
        None | Some(Value::Null) => None,
        Some(c) => Some(
            FEEDBACK_REASONS
                .iter()
                .map(|(code, _)| *code)
                .find(|code| c.as_str() == Some(code))
                .ok_or(ApiError::Invalid { field: "reasonCode", why: "must be one of the listed reason codes" })?,
        ),
    };
    let comment = match v.get("comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= max_comment_chars => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Some(_) => return Err(ApiError::Invalid { field: "comment", why: "must be a string within the length limit" }),
    };
    let card_uuid = match v.get("cardUuid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if uuid::Uuid::parse_str(s).is_ok() => Some(s.clone()),
        Some(_) => return Err(ApiError::Invalid { field: "cardUuid", why: "must be the uuid of a card" }),
    };
    Ok(Feedback { verdict, reason_code, comment, card_uuid })
}

async fn receive_feedback(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let (grant, r, s) = readable_result(&req, &state, &path, "ResultFeedback").await?;
    let fb = parse_feedback(&body, state.settings.smart.max_comment_chars)?;
    // The card the clinician saw: the one named by the launch's appContext, which must have
    // shown this patient's result; otherwise the latest card that showed it to this user.
    let cards = cards_showing(&state, &r.id, &s.patient_ref).await?;
    let card_uuid = match &fb.card_uuid {
        Some(u) => Some(
            cards
                .iter()
                .find(|c| &c.uuid == u)
                .map(|c| c.uuid.clone())
                .ok_or(ApiError::Invalid { field: "cardUuid", why: "no card of this result has this uuid" })?,
        ),
        None => cards.iter().rev().find(|c| grant.fhir_user.is_some() && c.user_ref == grant.fhir_user).map(|c| c.uuid.clone()),
    };
    let mut event = AuditEvent::new(Action::ResultFeedback, Outcome::Success)
        .actor(Some(&grant.iss), grant.fhir_user.as_deref())
        .patient(Some(s.patient_ref.clone()))
        .entity("AnalysisResult", r.id.clone())
        .entity("ImagingStudy", s.study_uid.clone())
        .detail("api", "smart")
        .detail("verdict", fb.verdict)
        .detail("reason_code", fb.reason_code)
        .detail("model", r.model_id.clone())
        .detail("model_version", r.model_version.clone())
        .detail("has_comment", fb.comment.is_some());
    if let Some(c) = &card_uuid {
        event = event.entity("Card", c.clone());
    }
    let mut txn = state.audit.begin(&state.db).await.map_err(internal)?;
    let seq = txn.append(event).await.map_err(internal)?;
    let row = result_feedback::ActiveModel {
        result_id: Set(r.id.clone()),
        patient_ref: Set(s.patient_ref.clone()),
        ehr_iss: Set(grant.iss.clone()),
        user_ref: Set(grant.fhir_user.clone()),
        verdict: Set(fb.verdict.to_owned()),
        reason_code: Set(fb.reason_code.map(str::to_owned)),
        comment: Set(fb.comment),
        card_uuid: Set(card_uuid.clone()),
        audit_seq: Set(seq),
        received_at: Set(time::OffsetDateTime::now_utc().unix_timestamp()),
        ..Default::default()
    };
    result_feedback::Entity::insert(row).exec_without_returning(txn.conn()).await.map_err(internal)?;
    txn.commit().await.map_err(internal)?;
    Ok(HttpResponse::Created()
        .json(json!({"resultId": r.id, "verdict": fb.verdict, "reasonCode": fb.reason_code, "cardUuid": card_uuid, "auditSeq": seq})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, ok: bool) {
        assert_eq!(parse_feedback(body.as_bytes(), 20).is_ok(), ok, "{body}");
    }

    #[test]
    fn feedback_bodies_are_checked_field_by_field() {
        check(r#"{"verdict":"agree"}"#, true);
        check(r#"{"verdict":"disagree","reasonCode":"false-positive","comment":"small"}"#, true);
        check(r#"{"verdict":"maybe"}"#, false);
        check(r#"{"verdict":"agree","reasonCode":"made-up"}"#, false);
        check(r#"{"verdict":"agree","comment":"far longer than twenty characters"}"#, false);
        check(r#"{"verdict":"agree","cardUuid":"not-a-uuid"}"#, false);
        check(r#"{"verdict":"agree","cardUuid":"6f1c1d8e-3d3a-4b8e-9a43-2d8f7a1c0b55"}"#, true);
        check("not json", false);
    }
}
