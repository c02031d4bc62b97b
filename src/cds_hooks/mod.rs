//! The CDS Hooks 2.0 service: discovery, the imaging hooks and feedback.
//!
//! Life of a hook call: authenticate the client JWT → read the body under the size limit →
//! validate the request for the service's hook → gather prefetch (fetching missing keys only from
//! a registered `fhirServer`) → run the safety rules on the imaging orders and read stored AI
//! results → in one transaction, append the audit entry and store every card → answer.
//! Any failure after authentication is audited too, before the error is sent.

pub mod cards;
pub mod definitions;
pub mod error;
mod feedback;
mod hooks;
pub mod prefetch;
pub mod request;
pub mod results;
pub mod rules;

use actix_web::{HttpRequest, HttpResponse, web};

use crate::audit::{Action, AuditEvent, Outcome};
use crate::auth::client_jwt::{ClientVerifier, VerifiedClient};
use crate::startup::AppState;
use error::HookError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cds-services", web::get().to(discovery))
        .route("/cds-services/{id}", web::post().to(hooks::call_service))
        .route("/cds-services/{id}/feedback", web::post().to(feedback::receive_feedback));
}

/// Verifies the caller's JWT against the exact URL called; a failure is audited, then 401.
pub(crate) async fn authenticate(req: &HttpRequest, state: &AppState) -> Result<VerifiedClient, HookError> {
    let authorization = req.headers().get("authorization").and_then(|v| v.to_str().ok());
    let called_url = format!("{}{}", state.settings.server.public_url, req.path());
    match state.verifier.verify(authorization, &called_url).await {
        Ok(client) => Ok(client),
        Err(failure) => {
            let reason = failure.code();
            Err(refuse(req, state, authorization, failure, reason).await)
        }
    }
}

/// Audits a refused authentication (reason code, path, the `iss` the token claims; never the
/// token), then gives the bare 401 to answer with.
pub(crate) async fn refuse(
    req: &HttpRequest,
    state: &AppState,
    authorization: Option<&str>,
    failure: crate::auth::client_jwt::AuthFailure,
    reason: &str,
) -> HookError {
    let claimed = ClientVerifier::claimed_issuer(authorization);
    let event = AuditEvent::new(Action::AuthReject, Outcome::Denied)
        .detail("reason", reason)
        .detail("path", req.path())
        .detail("claimed_iss", claimed.map(serde_json::Value::from).unwrap_or_default());
    match state.audit.record(&state.db, event).await {
        Ok(_) => HookError::Unauthorized(failure),
        Err(e) => HookError::Internal(e.into()),
    }
}

/// Audits a request that failed after authentication, then hands the error back.
pub(crate) async fn audit_failure(
    state: &AppState,
    action: Action,
    client: &VerifiedClient,
    service_id: &str,
    err: HookError,
) -> HookError {
    let outcome = match err {
        HookError::Internal(_) => Outcome::Error,
        HookError::PrefetchUnavailable { .. } => Outcome::Error,
        _ => Outcome::Rejected,
    };
    let event = AuditEvent::new(action, outcome)
        .actor(Some(&client.iss), None)
        .entity("CdsService", service_id)
        .detail("reason", err.audit_code());
    match state.audit.record(&state.db, event).await {
        Ok(_) => err,
        Err(e) => HookError::Internal(e.into()),
    }
}

async fn discovery(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, HookError> {
    let client = authenticate(&req, &state).await?;
    let event = AuditEvent::new(Action::Discovery, Outcome::Success).actor(Some(&client.iss), None);
    state.audit.record(&state.db, event).await.map_err(|e| HookError::Internal(e.into()))?;
    Ok(HttpResponse::Ok().content_type("application/json").body(state.definitions.discovery_json().to_owned()))
}
