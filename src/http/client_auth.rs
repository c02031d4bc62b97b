//! Client JWTs at the edge: CDS clients (hooks, feedback, notifications, results) and auditors
//! sign every request; the token is verified against the exact URL called
//! (`server.public_url` + path), and every refusal is audited (`auth.reject`: reason code, path,
//! the issuer the token claims; never the token) before the bare 401 goes out. A refusal comes
//! from someone not (yet) known, so it goes through the audit log's refusal tally: the first of
//! its source and reason in a window is written in full, the rest are counted into one
//! `refusal.summary` entry.
//!
//! What fails after authentication is audited too: [`audit_failures`] wraps a handler's work
//! and records its failure (reason code, outcome, the client) before the error is answered.

use std::future::Future;

use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::{BoxFuture, LocalBoxFuture};
use sea_orm::{DatabaseTransaction, DbErr};
use serde_json::Value;

use super::HttpError;
use crate::audit::{Action, AttachedRows, AuditEvent, Outcome};
use crate::auth::client_jwt::{AuthFailure, ClientVerifier, JtiClaim, UnspentJti, VerifiedClient};
use crate::state::AppState;

/// The `Authorization` header, if it is text.
pub fn authorization(req: &HttpRequest) -> Option<&str> {
    req.headers().get("authorization").and_then(|v| v.to_str().ok())
}

/// The URL the client called, which its JWT's `aud` must name exactly.
pub fn called_url(req: &HttpRequest, state: &AppState) -> String {
    format!("{}{}", state.settings.server.public_url, req.path())
}

/// The caller's address, as the refusal tally and the rate limits count it.
pub fn source(req: &HttpRequest) -> std::net::IpAddr {
    req.peer_addr().map(|a| a.ip()).unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
}

/// The `auth.reject` entry for a refused request. `claimed_iss` is what the caller says it is;
/// it is recorded as a claim, never trusted.
pub fn refusal_event(req: &HttpRequest, reason: &str, claimed_iss: Option<String>) -> AuditEvent {
    AuditEvent::new(Action::AuthReject, Outcome::Denied)
        .detail("reason", reason)
        .detail("path", req.path())
        .detail("claimed_iss", claimed_iss.as_deref().map(crate::audit::bounded).map(Value::from).unwrap_or_default())
}

/// Audits a refused client JWT (or signed link) with its reason code, through the tally.
pub async fn record_refusal(req: &HttpRequest, state: &AppState, reason: &'static str) -> Result<(), crate::audit::AuditError> {
    let event = refusal_event(req, reason, ClientVerifier::claimed_issuer(authorization(req)));
    state.audit.record_refusal(&state.db, "http", source(req), reason, event).await
}

/// Audits a refused client JWT, then gives the bare 401 to answer with.
pub async fn refuse(req: &HttpRequest, state: &AppState, reason: &'static str) -> HttpError {
    match record_refusal(req, state, reason).await {
        Ok(()) => HttpError::Unauthorized,
        Err(e) => HttpError::internal(e),
    }
}

/// Verifies the caller's JWT against `verifier` (the CDS clients or the auditors), unaudited.
pub async fn verify(req: &HttpRequest, state: &AppState, verifier: &ClientVerifier) -> Result<VerifiedClient, AuthFailure> {
    verifier.verify(authorization(req), &called_url(req, state)).await
}

/// A registered CDS client whose JWT verified for this request. As an extractor it answers a
/// bare, audited 401 before the handler runs.
pub struct CdsClient(pub VerifiedClient);

impl FromRequest for CdsClient {
    type Error = HttpError;
    type Future = LocalBoxFuture<'static, Result<CdsClient, HttpError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = app_state(&req)?;
            let client = match verify(&req, state, &state.verifier).await {
                Ok(client) => client,
                Err(failure) => return Err(refuse(&req, state, failure.code()).await),
            };
            throttle_client(&req, state, &client).await?;
            Ok(CdsClient(client))
        })
    }
}

/// [`CdsClient`] for a hook call, whose token's `jti` is recorded in the call's own group
/// commit: it is only checked here, so a replay is refused before any work (no prefetch
/// fetch), and the call records it with its entry and cards ([`crate::auth::client_jwt::JtiClaim::spend_in`]),
/// or with its failure entry ([`audit_failures_spending`]).
pub struct CdsHookClient {
    pub client: VerifiedClient,
    pub jti: UnspentJti,
}

impl FromRequest for CdsHookClient {
    type Error = HttpError;
    type Future = LocalBoxFuture<'static, Result<CdsHookClient, HttpError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = app_state(&req)?;
            let (client, jti) = match state.verifier.verify_unspent(authorization(&req), &called_url(&req, state)).await {
                Ok(verified) => verified,
                Err(failure) => return Err(refuse(&req, state, failure.code()).await),
            };
            if let Err(throttled) = throttle_client(&req, state, &client).await {
                jti.spend_alone().await; // a throttled call uses up its token too
                return Err(throttled);
            }
            Ok(CdsHookClient { client, jti })
        })
    }
}

fn app_state(req: &HttpRequest) -> Result<&web::Data<AppState>, HttpError> {
    req.app_data::<web::Data<AppState>>().ok_or_else(|| HttpError::internal(anyhow::anyhow!("the application state is not registered")))
}

/// Answers a verified client over its share with an audited 429: it is throttled after
/// authentication (it is known), with the refusal counted like a stranger's.
async fn throttle_client(req: &HttpRequest, state: &AppState, client: &VerifiedClient) -> Result<(), HttpError> {
    if let Some(throttle) = req.app_data::<web::Data<super::throttle::Throttle>>()
        && let Err(retry) = throttle.check_client(&client.iss)
    {
        return Err(super::throttle::refuse_throttled(req, state, "client-rate-limit", retry, "from this client").await);
    }
    Ok(())
}

/// A failure that is audited with a stable code once its caller is known.
pub trait AuditedFailure: Sized {
    /// The stable reason code recorded in the audit trail.
    fn audit_code(&self) -> &'static str;
    /// `error` for radsight's own faults, `rejected` for the caller's.
    fn audit_outcome(&self) -> Outcome;
    /// The failure to answer with when the audit entry itself cannot be written.
    fn audit_unavailable(e: anyhow::Error) -> Self;
    /// Already counted in the refusal tally, not written one by one: a write the audit log's
    /// full queue refused (writing its failure would add to that queue).
    fn counted_in_aggregate(&self) -> bool {
        false
    }
}

/// Runs `work` for an authenticated `client`; a failure is audited under `action` (with
/// `entity`, when given) before it is handed back.
pub async fn audit_failures<T, E: AuditedFailure>(
    state: &AppState,
    action: Action,
    client: &VerifiedClient,
    entity: Option<(&'static str, &str)>,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    audit_failures_spending(state, action, client, entity, None, work).await
}

/// [`audit_failures`] for work that records `jti` in its own commit when it succeeds: when it
/// fails first, the `jti` is recorded with the failure entry, so the failed call used up its
/// token in the same durable write that audits it.
pub async fn audit_failures_spending<T, E: AuditedFailure>(
    state: &AppState,
    action: Action,
    client: &VerifiedClient,
    entity: Option<(&'static str, &str)>,
    jti: Option<&UnspentJti>,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let err = match work.await {
        Ok(t) => return Ok(t),
        Err(e) if e.counted_in_aggregate() => return Err(e),
        Err(e) => e,
    };
    let mut event = AuditEvent::new(action, err.audit_outcome()).actor(Some(&client.iss), None);
    if let Some((kind, id)) = entity {
        event = event.entity(kind, id);
    }
    let unspent = jti.filter(|j| !j.is_spent());
    let rows = unspent.map(|j| Box::new(SpendJti(j.claim().clone())) as Box<dyn AttachedRows>);
    match state.audit.record_with(&state.db, event.detail("reason", err.audit_code()), rows).await {
        Ok(_) => {
            if let Some(j) = unspent {
                j.mark_spent();
            }
            Err(err)
        }
        Err(e) => Err(E::audit_unavailable(e.into())),
    }
}

/// A `jti` recorded with the entry of the call that used it. Found recorded already (a racing
/// use of the same token), there is nothing more to record: the token is used up either way.
struct SpendJti(JtiClaim);

impl AttachedRows for SpendJti {
    fn write<'t>(self: Box<Self>, conn: &'t DatabaseTransaction, _seq: i64) -> BoxFuture<'t, Result<(), DbErr>> {
        Box::pin(async move { self.0.spend_in(conn).await.map(|_| ()) })
    }
}
