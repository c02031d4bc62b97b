//! How hook, discovery and feedback calls fail: each failure has a stable audit code and is
//! answered as an [`HttpError`] (a bare 401 for authentication, which the edge handles before
//! a hook runs; otherwise an HTTP status with a FHIR `OperationOutcome`).

use actix_web::http::StatusCode;

use crate::audit::Outcome;
use crate::http::HttpError;
use crate::http::body::BodyError;
use crate::http::client_auth::AuditedFailure;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("no CDS Service with id {0}")]
    UnknownService(String),
    #[error(transparent)]
    Body(#[from] BodyError),
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
    /// The token was used by another call that committed first (the two raced past the
    /// replay check); answered as any replay, with an audited bare 401.
    #[error("the token's jti was already used")]
    Replayed,
    /// The audit log's queue is full: nothing was stored; the EHR may try again.
    #[error("radsight is busy and stored nothing; try again in a moment")]
    Busy,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<crate::audit::AuditError> for HookError {
    fn from(e: crate::audit::AuditError) -> HookError {
        match e {
            crate::audit::AuditError::Busy => HookError::Busy,
            e => HookError::Internal(e.into()),
        }
    }
}

impl HookError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> HookError {
        HookError::InvalidRequest { field: field.into(), problem: problem.into() }
    }
}

impl AuditedFailure for HookError {
    fn audit_code(&self) -> &'static str {
        match self {
            HookError::UnknownService(_) => "unknown-service",
            HookError::Body(b) => b.audit_code(),
            HookError::InvalidRequest { .. } => "invalid-request",
            HookError::HookMismatch { .. } => "hook-mismatch",
            HookError::UnknownCard(_) => "unknown-card",
            HookError::FhirServerNotRegistered => "fhir-server-not-registered",
            HookError::PrefetchUnavailable { .. } => "prefetch-unavailable",
            HookError::Busy => "write-queue-full",
            HookError::Replayed => "replayed-jti",
            HookError::Internal(_) => "internal-error",
        }
    }

    fn audit_outcome(&self) -> Outcome {
        match self {
            HookError::Internal(_) | HookError::PrefetchUnavailable { .. } | HookError::Busy => Outcome::Error,
            HookError::Replayed => Outcome::Denied,
            _ => Outcome::Rejected,
        }
    }

    fn audit_unavailable(e: anyhow::Error) -> Self {
        match e.downcast::<crate::audit::AuditError>() {
            Ok(e) => e.into(),
            Err(e) => HookError::Internal(e),
        }
    }

    fn counted_in_aggregate(&self) -> bool {
        matches!(self, HookError::Busy)
    }
}

impl From<HookError> for HttpError {
    fn from(e: HookError) -> HttpError {
        let outcome = |status, code, e: HookError| HttpError::outcome(status, code, e.to_string());
        match e {
            HookError::Body(b) => b.into(),
            HookError::Internal(e) => HttpError::Internal(e),
            HookError::Replayed => HttpError::Unauthorized,
            e @ HookError::Busy => HttpError::Unavailable { retry_after_secs: 1, diagnostics: e.to_string() },
            HookError::InvalidRequest { field, problem } => HttpError::invalid(field, problem),
            e @ (HookError::UnknownService(_) | HookError::UnknownCard(_)) => outcome(StatusCode::NOT_FOUND, "not-found", e),
            e @ HookError::HookMismatch { .. } => outcome(StatusCode::BAD_REQUEST, "invalid", e),
            e @ HookError::FhirServerNotRegistered => outcome(StatusCode::FORBIDDEN, "forbidden", e),
            e @ HookError::PrefetchUnavailable { .. } => outcome(StatusCode::PRECONDITION_FAILED, "incomplete", e),
        }
    }
}
