//! `POST /cds-services/{id}`: one hook call, from request to stored, audited cards.

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::BoxFuture;
use sea_orm::{ActiveValue::Set, DatabaseTransaction, DbErr, EntityTrait};
use serde_json::json;

use super::cards::IssuedCard;
use super::error::HookError;
use super::prefetch::{self, FetchRecord, UnusableSlot};
use super::request::{self, HookRequest};
use super::results::{self, ResultCardSettings};
use super::stored_card::{StoredContent, served_digest};
use super::{HookState, rules};
use crate::audit::{Action, AttachedRows, AuditEvent, Outcome};
use crate::auth::client_jwt::VerifiedClient;
use crate::domain::Hook;
use crate::http::client_auth::{CdsClient, audit_failures};
use crate::http::{HttpError, body};
use crate::state::AppState;
use crate::store::entities::{card, card_content};

pub async fn call_service(
    req: HttpRequest,
    CdsClient(client): CdsClient,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    hooks: web::Data<HookState>,
) -> Result<HttpResponse, HttpError> {
    let service_id = path.into_inner();
    let work = handle(&req, &service_id, payload, &state, &hooks, &client);
    Ok(audit_failures(&state, Action::HookCall, &client, Some(("CdsService", &service_id)), work).await?)
}

async fn handle(
    req: &HttpRequest,
    service_id: &str,
    payload: web::Payload,
    state: &AppState,
    hooks: &HookState,
    client: &VerifiedClient,
) -> Result<HttpResponse, HookError> {
    let service = hooks.definitions.get(service_id).ok_or_else(|| HookError::UnknownService(service_id.to_owned()))?;
    let hook = Hook::parse(&service.hook).ok_or_else(|| HookError::Internal(anyhow::anyhow!("definitions were validated at load")))?;
    let body = body::read_body(req, payload, state.settings.server.max_body_bytes).await?;
    let hook_req = request::parse_hook_request(body::parse_json(&body)?, hook)?;
    let registered =
        state.verifier.keys().client(&client.iss).ok_or_else(|| HookError::Internal(anyhow::anyhow!("a verified client is registered")))?;

    let (data, fetches) = prefetch::resolve(service, &hook_req, registered, &hooks.fhir).await;
    audit_fetches(state, client, &hook_req, &fetches).await?;
    let data = data?;

    let now = time::OffsetDateTime::now_utc();
    let orders: Vec<_> = hook_req.orders.iter().filter_map(|o| hooks.catalog.classify(o).map(|p| (o.clone(), p))).collect();
    let mut issued = rules::evaluate(&orders, &data, &state.settings.rules, now);
    let procedures: Vec<_> = orders.iter().map(|(_, p)| p.clone()).collect();
    let settings = ResultCardSettings {
        lookback_days: state.settings.hooks.lookback_days,
        public_url: &state.settings.server.public_url,
        smart_launch_url: &state.settings.hooks.smart_launch_url,
        links: &state.links,
        now: time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    if hook == Hook::PatientView || !procedures.is_empty() {
        let scope = (hook != Hook::PatientView).then_some(procedures.as_slice());
        // The patient id is this client's: only studies in its namespace are its patient's.
        let namespace = state.settings.namespace_of_issuer(&client.iss);
        let ai = results::result_cards(&state.db, &namespace, &hook_req.patient, scope, &settings, now)
            .await
            .map_err(|e| HookError::Internal(e.into()))?;
        issued.extend(ai);
    }

    store_and_audit(state, client, service_id, &hook_req, orders.len(), &data.unusable, &mut issued).await?;
    let cards: Vec<_> = issued.iter().map(|c| &c.card).collect();
    Ok(HttpResponse::Ok().content_type("application/json").body(json!({ "cards": cards }).to_string()))
}

async fn audit_fetches(
    state: &AppState,
    client: &VerifiedClient,
    hook_req: &HookRequest,
    fetches: &[FetchRecord],
) -> Result<(), HookError> {
    if fetches.is_empty() {
        return Ok(());
    }
    // Appended concurrently, so they share one group commit.
    let appends = fetches.iter().map(|f| {
        let event = AuditEvent::new(Action::FhirRead, if f.ok { Outcome::Success } else { Outcome::Error })
            .actor(Some(&client.iss), Some(&hook_req.user_id))
            .patient(Some(hook_req.patient.reference()))
            .entity("FhirResourceType", f.resource_type.clone())
            .detail("prefetch_key", f.key.clone())
            .detail("status", f.status)
            .detail("hook_instance", hook_req.hook_instance.to_string());
        state.audit.offer_with(&state.db, event, None)
    });
    for outcome in futures_util::future::join_all(appends).await {
        outcome?;
    }
    Ok(())
}

/// Appends the hook's audit entry and stores every card with it, atomically.
async fn store_and_audit(
    state: &AppState,
    client: &VerifiedClient,
    service_id: &str,
    hook_req: &HookRequest,
    order_count: usize,
    unusable: &[UnusableSlot],
    issued: &mut [IssuedCard],
) -> Result<(), HookError> {
    let mut event = AuditEvent::new(Action::HookCall, Outcome::Success)
        .actor(Some(&client.iss), Some(&hook_req.user_id))
        .patient(Some(hook_req.patient.reference()))
        .entity("CdsService", service_id)
        .detail("hook", hook_req.hook.as_str())
        .detail("hook_instance", hook_req.hook_instance.to_string())
        .detail("imaging_orders", order_count)
        .detail("cards", issued.len());
    if !unusable.is_empty() {
        // Which slots could not be used and why (a wrong patient's data included): codes only.
        let slots: Vec<_> =
            unusable.iter().map(|u| json!({"key": u.key, "reason": u.why.code(), "fetch_failed": u.fetch_failed})).collect();
        event = event.detail("prefetch_unusable", slots);
    }
    for (i, c) in issued.iter().enumerate() {
        event = event
            .entity("Card", c.card.uuid.clone())
            .detail(&format!("card_{i}_source"), format!("{}:{}@{}", c.origin.kind, c.origin.id, c.origin.version));
    }
    // The entry commits to each card's stored content (which includes its origin), so what was
    // shown stays provable although the content is stored once for many calls.
    let contents: Vec<StoredContent> = issued.iter().map(|c| StoredContent::of(&c.card, &c.origin)).collect();
    if !contents.is_empty() {
        event = event.detail("cards_content", served_digest(contents.iter().map(|c| c.hash.as_str())));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let rows: Vec<(card::ActiveModel, StoredContent)> = issued
        .iter()
        .zip(contents)
        .map(|(c, content)| {
            let row = card::ActiveModel {
                uuid: Set(c.card.uuid.clone()),
                hook_instance: Set(hook_req.hook_instance.to_string()),
                service_id: Set(service_id.to_owned()),
                hook: Set(hook_req.hook.as_str().to_owned()),
                client_iss: Set(client.iss.clone()),
                user_ref: Set(Some(hook_req.user_id.clone())),
                patient_ref: Set(hook_req.patient.reference()),
                source_kind: Set(c.origin.kind.to_owned()),
                source_id: Set(c.origin.id.clone()),
                source_version: Set(c.origin.version.clone()),
                indicator: Set(c.card.indicator.as_str().to_owned()),
                summary: Set(c.card.summary.clone()),
                card_json: Set(String::new()),
                audit_seq: Set(0),
                created_at: Set(now),
                content_hash: Set(Some(content.hash.clone())),
            };
            (row, content)
        })
        .collect();
    let seq = state.audit.offer_with(&state.db, event, Some(Box::new(ServedCards(rows)))).await?;
    issued.iter_mut().for_each(|c| c.card.audited_as(seq));
    Ok(())
}

/// The cards of one hook call, stored in the transaction of the entry that records them: each
/// served card as a row naming that entry (`audit_seq`) and its content, and each content not
/// stored before.
struct ServedCards(Vec<(card::ActiveModel, StoredContent)>);

impl AttachedRows for ServedCards {
    fn write<'t>(self: Box<Self>, conn: &'t DatabaseTransaction, seq: i64) -> BoxFuture<'t, Result<(), DbErr>> {
        Box::pin(async move {
            if self.0.is_empty() {
                return Ok(());
            }
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let mut contents: Vec<card_content::ActiveModel> = Vec::with_capacity(self.0.len());
            for (_, c) in &self.0 {
                if !contents.iter().any(|r| r.hash.as_ref() == &c.hash) {
                    contents.push(card_content::ActiveModel {
                        hash: Set(c.hash.clone()),
                        content_json: Set(c.json.clone()),
                        created_at: Set(now),
                    });
                }
            }
            card_content::Entity::insert_many(contents).on_conflict_do_nothing().exec_without_returning(conn).await?;
            let rows = self.0.into_iter().map(|(mut row, _)| {
                row.audit_seq = Set(seq);
                row
            });
            card::Entity::insert_many(rows).exec_without_returning(conn).await.map(|_| ())
        })
    }
}
