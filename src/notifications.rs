//! `POST /fhir/notifications`: an EHR or PACS announces imaging studies with FHIR.
//!
//! The body is an R4B topic-based subscription notification Bundle carrying `ImagingStudy`
//! entries (and the `Endpoint`s they reference), or a plain `ImagingStudy`. The caller
//! authenticates exactly like a CDS client (a registered `iss` and a signed JWT whose `aud` is
//! this URL; any failure is a bare 401, audited). For each study: the Study Instance UID comes
//! from `identifier` (system `urn:dicom:uid`), the patient from `subject`, and the DICOMweb
//! root from an `endpoint` with `connectionType` `dicom-wado-rs`, which must be one of
//! `dicomweb.endpoints` (else 403 and nothing is queued). Then, in one transaction with the
//! audit entries, each study is stored and its analysis job queued; the answer (202) comes
//! after the commit.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde_json::json;

use crate::audit::{Action, AuditEvent, Outcome};
use crate::auth::client_jwt::{AuthFailure, VerifiedClient};
use crate::cds_hooks::error::HookError;
use crate::cds_hooks::{authenticate, request};
use crate::domain::{PatientId, StudyInstanceUid};
use crate::jobs::JobSource;
use crate::jobs::announce::{AnnouncedStudy, announce_study};
use crate::startup::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/fhir/notifications", web::post().to(receive_notification));
}

#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("unauthorized: {0}")]
    Unauthorized(AuthFailure),
    #[error("the request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the body is not valid JSON")]
    MalformedJson,
    #[error("{0}")]
    Invalid(String),
    #[error("ImagingStudy.endpoint names a DICOMweb server that is not registered with radsight")]
    EndpointNotAllowed,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl NotificationError {
    fn audit_code(&self) -> &'static str {
        match self {
            NotificationError::Unauthorized(f) => f.code(),
            NotificationError::PayloadTooLarge { .. } => "payload-too-large",
            NotificationError::MalformedJson => "malformed-json",
            NotificationError::Invalid(_) => "invalid-notification",
            NotificationError::EndpointNotAllowed => "endpoint-not-allowed",
            NotificationError::Internal(_) => "internal-error",
        }
    }
}

impl From<HookError> for NotificationError {
    fn from(e: HookError) -> Self {
        match e {
            HookError::Unauthorized(f) => NotificationError::Unauthorized(f),
            HookError::PayloadTooLarge { limit } => NotificationError::PayloadTooLarge { limit },
            HookError::MalformedJson(_) => NotificationError::MalformedJson,
            HookError::Internal(e) => NotificationError::Internal(e),
            other => NotificationError::Invalid(other.to_string()),
        }
    }
}

impl ResponseError for NotificationError {
    fn status_code(&self) -> StatusCode {
        match self {
            NotificationError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            NotificationError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            NotificationError::MalformedJson | NotificationError::Invalid(_) => StatusCode::BAD_REQUEST,
            NotificationError::EndpointNotAllowed => StatusCode::FORBIDDEN,
            NotificationError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let NotificationError::Unauthorized(_) = self {
            return HttpResponse::Unauthorized().insert_header((WWW_AUTHENTICATE, "Bearer")).finish();
        }
        if let NotificationError::Internal(e) = self {
            tracing::error!(error = ?e, "notification failed");
        }
        let (code, diagnostics) = match self {
            NotificationError::Internal(_) => ("exception", "radsight could not process the notification; it has been logged".to_owned()),
            NotificationError::PayloadTooLarge { .. } => ("too-costly", self.to_string()),
            NotificationError::EndpointNotAllowed => ("forbidden", self.to_string()),
            _ => ("invalid", self.to_string()),
        };
        HttpResponse::build(self.status_code()).insert_header((CONTENT_TYPE, "application/fhir+json")).body(
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}]})
                .to_string(),
        )
    }
}

async fn receive_notification(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, NotificationError> {
    let client = authenticate(&req, &state).await?;
    match handle(&req, payload, &state, &client).await {
        Ok(r) => Ok(r),
        Err(e) => {
            let outcome = if matches!(e, NotificationError::Internal(_)) { Outcome::Error } else { Outcome::Rejected };
            let event = AuditEvent::new(Action::FhirNotification, outcome).actor(Some(&client.iss), None).detail("reason", e.audit_code());
            match state.audit.record(&state.db, event).await {
                Ok(_) => Err(e),
                Err(a) => Err(NotificationError::Internal(a.into())),
            }
        }
    }
}

fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers().get("content-length")?.to_str().ok()?.parse().ok()
}

async fn handle(req: &HttpRequest, payload: web::Payload, state: &AppState, client: &VerifiedClient) -> Result<HttpResponse, NotificationError> {
    let body = request::read_body(payload, declared_length(req), state.settings.server.max_body_bytes).await?;
    let value = request::parse_json(&body)?;
    let notified = radsight_fhir::parse_notification(&value).map_err(|e| NotificationError::Invalid(e.to_string()))?;

    let mut studies = Vec::new();
    for (i, n) in notified.iter().enumerate() {
        let at = |what: &str| format!("ImagingStudy[{i}].{what}");
        let uid = n.study.study_uids.first().ok_or_else(|| NotificationError::Invalid(format!("{} has no urn:dicom:uid identifier", at("identifier"))))?;
        let study_uid = StudyInstanceUid::parse(uid).map_err(|e| NotificationError::Invalid(format!("{}: {e}", at("identifier"))))?;
        let patient = n
            .study
            .subject
            .as_deref()
            .filter(|s| s.starts_with("Patient/"))
            .and_then(|s| PatientId::parse(s).ok())
            .ok_or_else(|| NotificationError::Invalid(format!("{} must reference a Patient", at("subject"))))?;
        if !n.unresolved_endpoints.is_empty() {
            return Err(NotificationError::Invalid(format!("{} references an Endpoint that is not in the notification", at("endpoint"))));
        }
        let wado: Vec<_> = n.endpoints.iter().filter(|e| e.is_wado_rs()).collect();
        if wado.iter().any(|e| !state.settings.dicomweb.allows(&e.address)) {
            return Err(NotificationError::EndpointNotAllowed);
        }
        studies.push(AnnouncedStudy {
            study_uid,
            patient,
            accession: None,
            modality: n.study.modalities.iter().find_map(|m| m.code.clone()),
            procedure_code: n.study.procedure_codes.first().and_then(|c| c.codings.first()).and_then(|c| {
                c.code.as_ref().map(|code| format!("{}|{code}", c.system.as_deref().unwrap_or("")))
            }),
            description: None,
            started_at: n.study.started.map(|t| t.unix_timestamp()),
            endpoint: wado.first().map(|e| e.address.trim_end_matches('/').to_owned()),
            source: JobSource::Fhir,
        });
    }

    let internal = |e: anyhow::Error| NotificationError::Internal(e);
    let mut txn = state.audit.begin(&state.db).await.map_err(|e| internal(e.into()))?;
    let mut job_ids = Vec::new();
    for s in &studies {
        let job = announce_study(txn.conn(), s, true, state.settings.jobs.max_attempts)
            .await
            .map_err(|e| internal(e.into()))?
            .expect("a job is asked for");
        let mut event = AuditEvent::new(Action::FhirNotification, Outcome::Success)
            .actor(Some(&client.iss), None)
            .patient(Some(s.patient.reference()))
            .entity("ImagingStudy", s.study_uid.as_str())
            .entity("Job", job.id.clone());
        if let Some(e) = &s.endpoint {
            event = event.detail("endpoint", e.clone());
        }
        txn.append(event).await.map_err(|e| internal(e.into()))?;
        if job.created {
            txn.append(
                AuditEvent::new(Action::JobQueued, Outcome::Success)
                    .patient(Some(s.patient.reference()))
                    .entity("Job", job.id.clone())
                    .entity("ImagingStudy", s.study_uid.as_str())
                    .detail("source", "fhir"),
            )
            .await
            .map_err(|e| internal(e.into()))?;
        }
        job_ids.push(job.id);
    }
    if studies.is_empty() {
        // A handshake or heartbeat: audited, nothing to queue.
        txn.append(AuditEvent::new(Action::FhirNotification, Outcome::Success).actor(Some(&client.iss), None).detail("studies", 0))
            .await
            .map_err(|e| internal(e.into()))?;
    }
    txn.commit().await.map_err(|e| internal(e.into()))?;
    if !job_ids.is_empty() {
        state.wake.notify_one();
    }
    Ok(HttpResponse::Accepted().content_type("application/fhir+json").body(
        json!({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational",
            "diagnostics": format!("{} imaging stud{} queued for analysis", job_ids.len(), if job_ids.len() == 1 { "y" } else { "ies" })}]})
        .to_string(),
    ))
}
