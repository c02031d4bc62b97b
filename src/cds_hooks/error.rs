//! How hook, discovery and feedback calls fail, in the protocol's own terms: a bare 401 for any
//! authentication failure, and otherwise an HTTP status with a FHIR `OperationOutcome`.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::auth::client_jwt::AuthFailure;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("unauthorized: {0}")]
    Unauthorized(AuthFailure),
    #[error("no CDS Service with id {0}")]
    UnknownService(String),
    #[error("the request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{field}: {problem}")]
    InvalidRequest { field: String, problem: String },
    #[error("this service implements hook {expected}, but the request is for {got}")]
    HookMismatch { expected: String, got: String },
    #[error("feedback refers to card {0}, which this service did not issue")]
    UnknownCard(String),
    #[error("fhirServer is not registered for this client, so radsight will not call it; send the prefetch data instead")]
    FhirServerNotRegistered,
    #[error("prefetch {key} was not provided and could not be fetched: {why}")]
    PrefetchUnavailable { key: String, why: String },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl HookError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> HookError {
        HookError::InvalidRequest { field: field.into(), problem: problem.into() }
    }

    /// A stable code for the audit trail.
    pub fn audit_code(&self) -> &'static str {
        match self {
            HookError::Unauthorized(f) => f.code(),
            HookError::UnknownService(_) => "unknown-service",
            HookError::PayloadTooLarge { .. } => "payload-too-large",
            HookError::MalformedJson(_) => "malformed-json",
            HookError::InvalidRequest { .. } => "invalid-request",
            HookError::HookMismatch { .. } => "hook-mismatch",
            HookError::UnknownCard(_) => "unknown-card",
            HookError::FhirServerNotRegistered => "fhir-server-not-registered",
            HookError::PrefetchUnavailable { .. } => "prefetch-unavailable",
            HookError::Internal(_) => "internal-error",
        }
    }

    fn issue_code(&self) -> &'static str {
        match self {
            HookError::Unauthorized(_) => "login",
            HookError::UnknownService(_) | HookError::UnknownCard(_) => "not-found",
            HookError::PayloadTooLarge { .. } => "too-costly",
            HookError::MalformedJson(_) => "structure",
            HookError::InvalidRequest { .. } | HookError::HookMismatch { .. } => "invalid",
            HookError::FhirServerNotRegistered => "forbidden",
            HookError::PrefetchUnavailable { .. } => "incomplete",
            HookError::Internal(_) => "exception",
        }
    }
}

impl ResponseError for HookError {
    fn status_code(&self) -> StatusCode {
        match self {
            HookError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HookError::UnknownService(_) | HookError::UnknownCard(_) => StatusCode::NOT_FOUND,
            HookError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HookError::MalformedJson(_) | HookError::InvalidRequest { .. } | HookError::HookMismatch { .. } => {
                StatusCode::BAD_REQUEST
            }
            HookError::FhirServerNotRegistered => StatusCode::FORBIDDEN,
            HookError::PrefetchUnavailable { .. } => StatusCode::PRECONDITION_FAILED,
            HookError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let HookError::Unauthorized(_) = self {
            // No detail: the reason is in the audit trail only.
            return HttpResponse::Unauthorized().insert_header((WWW_AUTHENTICATE, "Bearer")).finish();
        }
        if let HookError::Internal(e) = self {
            tracing::error!(error = ?e, "request failed");
        }
        let diagnostics = match self {
            HookError::Internal(_) => "radsight could not process the request; it has been logged".to_owned(),
            other => other.to_string(),
        };
        let mut issue = json!({"severity": "error", "code": self.issue_code(), "diagnostics": diagnostics});
        if let HookError::InvalidRequest { field, .. } = self {
            issue["expression"] = json!([field]);
        }
        HttpResponse::build(self.status_code())
            .insert_header((CONTENT_TYPE, "application/fhir+json"))
            .body(json!({"resourceType": "OperationOutcome", "issue": [issue]}).to_string())
    }
}
