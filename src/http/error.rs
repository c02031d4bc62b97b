//! [`HttpError`]: how any radsight HTTP call fails, in the protocol's own terms.
//!
//! An authentication failure is a bare `401` with `WWW-Authenticate: Bearer` (CDS Hooks: no
//! detail; the reason is in the audit trail). Everything else is an HTTP status with a FHIR
//! `OperationOutcome` of one issue. An internal error answers a generic text and its chain is
//! logged here, once; a client's bad input is not logged as an error (it is audited).

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// One OperationOutcome issue and the status it is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub status: StatusCode,
    /// The FHIR `IssueType` code (`invalid`, `not-found`, `login`, ...).
    pub code: &'static str,
    pub diagnostics: String,
    /// The request field at fault, as `issue.expression`.
    pub expression: Option<String>,
    /// A `WWW-Authenticate` challenge to send with the outcome.
    pub challenge: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A bare 401: no body, `WWW-Authenticate: Bearer`.
    #[error("unauthorized")]
    Unauthorized,
    #[error("{}", .0.diagnostics)]
    Outcome(Issue),
    /// 429 with `Retry-After` and an OperationOutcome `throttled`.
    #[error("{diagnostics}")]
    TooManyRequests { retry_after_secs: u64, diagnostics: String },
    /// 503 with `Retry-After` and an OperationOutcome `transient`: radsight is overloaded.
    #[error("{diagnostics}")]
    Unavailable { retry_after_secs: u64, diagnostics: String },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl HttpError {
    pub fn outcome(status: StatusCode, code: &'static str, diagnostics: impl Into<String>) -> HttpError {
        HttpError::Outcome(Issue { status, code, diagnostics: diagnostics.into(), expression: None, challenge: None })
    }

    /// 400 `invalid`, naming the field at fault.
    pub fn invalid(field: impl Into<String>, problem: impl std::fmt::Display) -> HttpError {
        let field = field.into();
        HttpError::Outcome(Issue {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            diagnostics: format!("{field}: {problem}"),
            expression: Some(field),
            challenge: None,
        })
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> HttpError {
        HttpError::Internal(e.into())
    }

    /// Adds a `WWW-Authenticate` challenge to an outcome (a 401 that explains itself).
    pub fn with_challenge(self, challenge: &'static str) -> HttpError {
        match self {
            HttpError::Outcome(issue) => HttpError::Outcome(Issue { challenge: Some(challenge), ..issue }),
            other => other,
        }
    }
}

/// The body of an error answer: an `OperationOutcome` with one issue.
pub fn operation_outcome(severity: &str, code: &str, diagnostics: &str, expression: Option<&str>) -> String {
    let mut issue = json!({"severity": severity, "code": code, "diagnostics": diagnostics});
    if let Some(field) = expression {
        issue["expression"] = json!([field]);
    }
    json!({"resourceType": "OperationOutcome", "issue": [issue]}).to_string()
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        match self {
            HttpError::Unauthorized => StatusCode::UNAUTHORIZED,
            HttpError::Outcome(issue) => issue.status,
            HttpError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            HttpError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            HttpError::Unauthorized => HttpResponse::Unauthorized().insert_header((WWW_AUTHENTICATE, "Bearer")).finish(),
            HttpError::Outcome(issue) => {
                let mut resp = HttpResponse::build(issue.status);
                if let Some(challenge) = issue.challenge {
                    resp.insert_header((WWW_AUTHENTICATE, challenge));
                }
                resp.insert_header((CONTENT_TYPE, "application/fhir+json")).body(operation_outcome(
                    "error",
                    issue.code,
                    &issue.diagnostics,
                    issue.expression.as_deref(),
                ))
            }
            HttpError::TooManyRequests { retry_after_secs, diagnostics } => HttpResponse::TooManyRequests()
                .insert_header((actix_web::http::header::RETRY_AFTER, retry_after_secs.to_string()))
                .insert_header((CONTENT_TYPE, "application/fhir+json"))
                .body(operation_outcome("error", "throttled", diagnostics, None)),
            HttpError::Unavailable { retry_after_secs, diagnostics } => HttpResponse::ServiceUnavailable()
                .insert_header((actix_web::http::header::RETRY_AFTER, retry_after_secs.to_string()))
                .insert_header((CONTENT_TYPE, "application/fhir+json"))
                .body(operation_outcome("error", "transient", diagnostics, None)),
            HttpError::Internal(e) => {
                // The one place an internal error's chain is logged.
                tracing::error!(error = ?e, "request failed");
                HttpResponse::InternalServerError().insert_header((CONTENT_TYPE, "application/fhir+json")).body(operation_outcome(
                    "error",
                    "exception",
                    "radsight could not process the request; it has been logged",
                    None,
                ))
            }
        }
    }
}

/// The answer for a path or method no route serves.
pub async fn not_found() -> Result<HttpResponse, HttpError> {
    Err(HttpError::outcome(StatusCode::NOT_FOUND, "not-found", "no such endpoint or method"))
}
