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
//! after the commit. A study UID that already belongs to another patient refuses the whole
//! notification (409, `identity.conflict`), and a client may announce at most
//! `limits.studies_per_client_per_minute` studies (429 beyond).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::audit::{Action, AuditEvent, Outcome};
use crate::auth::client_jwt::VerifiedClient;
use crate::domain::{PatientId, StudyInstanceUid};
use crate::http::body::{self, BodyError};
use crate::http::client_auth::{AuditedFailure, CdsClient, audit_failures};
use crate::http::throttle::{RetryAfter, Throttle, too_many_requests};
use crate::http::{HttpError, error::operation_outcome};
use crate::jobs::JobSource;
use crate::jobs::announce::{AnnouncedStudy, announce_study, conflicting_owner};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/fhir/notifications", web::post().to(receive_notification));
}

#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("{0}")]
    Invalid(String),
    #[error("ImagingStudy.endpoint names a DICOMweb server that is not registered with radsight")]
    EndpointNotAllowed,
    #[error("the notification announces {count} imaging studies; at most {limit} are taken in one notification")]
    TooManyStudies { count: usize, limit: usize },
    #[error("this client announced more studies than it may per minute")]
    Throttled(RetryAfter),
    #[error("ImagingStudy[{index}] names a study that already belongs to another patient; nothing was queued")]
    IdentityConflict { index: usize },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AuditedFailure for NotificationError {
    fn audit_code(&self) -> &'static str {
        match self {
            NotificationError::Body(b) => b.audit_code(),
            NotificationError::Invalid(_) => "invalid-notification",
            NotificationError::EndpointNotAllowed => "endpoint-not-allowed",
            NotificationError::TooManyStudies { .. } => "too-many-studies",
            NotificationError::Throttled(_) => "studies-rate-limit",
            NotificationError::IdentityConflict { .. } => "identity-conflict",
            NotificationError::Internal(_) => "internal-error",
        }
    }

    fn audit_outcome(&self) -> Outcome {
        if matches!(self, NotificationError::Internal(_)) { Outcome::Error } else { Outcome::Rejected }
    }

    fn audit_unavailable(e: anyhow::Error) -> Self {
        NotificationError::Internal(e)
    }
}

impl From<NotificationError> for HttpError {
    fn from(e: NotificationError) -> HttpError {
        match e {
            NotificationError::Body(b) => b.into(),
            NotificationError::Internal(e) => HttpError::Internal(e),
            NotificationError::EndpointNotAllowed => HttpError::outcome(StatusCode::FORBIDDEN, "forbidden", e.to_string()),
            NotificationError::TooManyStudies { .. } => HttpError::outcome(StatusCode::PAYLOAD_TOO_LARGE, "too-costly", e.to_string()),
            NotificationError::Invalid(_) => HttpError::outcome(StatusCode::BAD_REQUEST, "invalid", e.to_string()),
            NotificationError::Throttled(retry) => too_many_requests(retry, "announcing studies from this client"),
            NotificationError::IdentityConflict { .. } => HttpError::outcome(StatusCode::CONFLICT, "conflict", e.to_string()),
        }
    }
}

async fn receive_notification(
    req: HttpRequest,
    CdsClient(client): CdsClient,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    Ok(audit_failures(&state, Action::FhirNotification, &client, None, handle(&req, payload, &state, &client)).await?)
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    client: &VerifiedClient,
) -> Result<HttpResponse, NotificationError> {
    let body = body::read_body(req, payload, state.settings.server.max_body_bytes).await?;
    let value = body::parse_json(&body)?;
    let notified = radsight_fhir::parse_notification(&value).map_err(|e| NotificationError::Invalid(e.to_string()))?;
    let limit = state.settings.jobs.max_studies_per_notification;
    if notified.len() > limit {
        return Err(NotificationError::TooManyStudies { count: notified.len(), limit });
    }

    let mut studies = Vec::new();
    for (i, n) in notified.iter().enumerate() {
        let at = |what: &str| format!("ImagingStudy[{i}].{what}");
        let uid = n
            .study
            .study_uids
            .first()
            .ok_or_else(|| NotificationError::Invalid(format!("{} has no urn:dicom:uid identifier", at("identifier"))))?;
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
            namespace: state.settings.namespace_of_issuer(&client.iss),
            accession: None,
            modality: n.study.modalities.iter().find_map(|m| m.code.clone()),
            procedure_code: n
                .study
                .procedure_codes
                .first()
                .and_then(|c| c.codings.first())
                .and_then(|c| c.code.as_ref().map(|code| format!("{}|{code}", c.system.as_deref().unwrap_or("")))),
            description: None,
            started_at: n.study.started.map(|t| t.unix_timestamp()),
            endpoint: wado.first().map(|e| e.address.trim_end_matches('/').to_owned()),
            source: JobSource::Fhir,
        });
    }

    if let Some(throttle) = req.app_data::<web::Data<Throttle>>() {
        throttle.check_studies(&client.iss, studies.len()).map_err(NotificationError::Throttled)?;
    }

    let internal = |e: anyhow::Error| NotificationError::Internal(e);
    let mut txn = state.audit.begin(&state.db).await.map_err(|e| internal(e.into()))?;
    let mut job_ids = Vec::new();
    for (index, s) in studies.iter().enumerate() {
        if let Some(owner) = conflicting_owner(txn.conn(), &s.study_uid, &s.namespace, &s.patient).await.map_err(|e| internal(e.into()))? {
            // Nothing of this notification is stored; the conflict itself is.
            drop(txn);
            let event = AuditEvent::new(Action::IdentityConflict, Outcome::Rejected)
                .actor(Some(&client.iss), None)
                .patient(Some(s.patient.reference()))
                .entity("ImagingStudy", s.study_uid.as_str())
                .detail("reason", "study-belongs-to-another-patient");
            let event = owner.describe(event);
            state.audit.record(&state.db, event).await.map_err(|e| internal(e.into()))?;
            return Err(NotificationError::IdentityConflict { index });
        }
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
    let diagnostics = format!("{} imaging stud{} queued for analysis", job_ids.len(), if job_ids.len() == 1 { "y" } else { "ies" });
    Ok(HttpResponse::Accepted().content_type("application/fhir+json").body(operation_outcome(
        "information",
        "informational",
        &diagnostics,
        None,
    )))
}
