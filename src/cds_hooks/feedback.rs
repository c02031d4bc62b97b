//! `POST /cds-services/{id}/feedback`: what the clinician did with a card.
//!
//! Feedback is idempotent per (card, outcome, outcomeTimestamp): the spec lets clients resend
//! it, so a resend is acknowledged and audited but stores nothing new. Feedback may only name
//! cards this service issued to this client; anything else is 404 and nothing is stored.
//! The clinician's free-text comment is stored with the feedback but never audited or logged.

use actix_web::{HttpRequest, HttpResponse, web};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use super::HookState;
use super::error::HookError;
use crate::audit::{Action, AuditEvent, Outcome};
use crate::auth::client_jwt::VerifiedClient;
use crate::http::client_auth::{CdsClient, audit_failures};
use crate::http::{HttpError, body};
use crate::state::AppState;
use crate::store::entities::feedback;
use crate::store::served_cards::{self, ServedCard};

#[derive(Debug)]
struct FeedbackItem {
    card: String,
    outcome: &'static str,
    outcome_timestamp: String,
    accepted_suggestions: Vec<String>,
    override_reason: Option<Value>,
    override_code: Option<String>,
}

pub async fn receive_feedback(
    req: HttpRequest,
    CdsClient(client): CdsClient,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    hooks: web::Data<HookState>,
) -> Result<HttpResponse, HttpError> {
    let service_id = path.into_inner();
    let work = handle(&req, &service_id, payload, &state, &hooks, &client);
    Ok(audit_failures(&state, Action::Feedback, &client, Some(("CdsService", &service_id)), work).await?)
}

fn parse_items(body: &Value) -> Result<Vec<FeedbackItem>, HookError> {
    let items = body
        .get("feedback")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| HookError::invalid("feedback", "must be a non-empty array"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |name: &str| format!("feedback[{i}].{name}");
            let card = item
                .get("card")
                .and_then(Value::as_str)
                .filter(|c| uuid::Uuid::parse_str(c).is_ok())
                .ok_or_else(|| HookError::invalid(field("card"), "must be the uuid of a card"))?;
            let outcome = match item.get("outcome").and_then(Value::as_str) {
                Some("accepted") => "accepted",
                Some("overridden") => "overridden",
                _ => return Err(HookError::invalid(field("outcome"), "must be accepted or overridden")),
            };
            let ts = item
                .get("outcomeTimestamp")
                .and_then(Value::as_str)
                .filter(|t| time::OffsetDateTime::parse(t, &Rfc3339).is_ok())
                .ok_or_else(|| HookError::invalid(field("outcomeTimestamp"), "must be an ISO 8601 instant with a time zone"))?;
            let accepted_suggestions = match item.get("acceptedSuggestions") {
                None => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|s| s.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| HookError::invalid(field("acceptedSuggestions"), "each must have an id"))?,
                Some(_) => return Err(HookError::invalid(field("acceptedSuggestions"), "must be an array")),
            };
            if outcome == "accepted" && accepted_suggestions.is_empty() && item.get("acceptedSuggestions").is_some() {
                return Err(HookError::invalid(field("acceptedSuggestions"), "must not be empty when given"));
            }
            let override_reason = match item.get("overrideReason") {
                None => None,
                Some(o @ Value::Object(_)) if outcome == "overridden" => Some(o.clone()),
                Some(_) => return Err(HookError::invalid(field("overrideReason"), "must be an object, and only with outcome overridden")),
            };
            let override_code = override_reason
                .as_ref()
                .and_then(|o| o.get("reason"))
                .and_then(|r| r.get("code"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            Ok(FeedbackItem {
                card: card.to_owned(),
                outcome,
                outcome_timestamp: ts.to_owned(),
                accepted_suggestions,
                override_reason,
                override_code,
            })
        })
        .collect()
}

async fn handle(
    req: &HttpRequest,
    service_id: &str,
    payload: web::Payload,
    state: &AppState,
    hooks: &HookState,
    client: &VerifiedClient,
) -> Result<HttpResponse, HookError> {
    if hooks.definitions.get(service_id).is_none() {
        return Err(HookError::UnknownService(service_id.to_owned()));
    }
    let body = body::read_body(req, payload, state.settings.server.max_body_bytes).await?;
    let items = parse_items(&body::parse_json(&body)?)?;
    let internal = |e: anyhow::Error| HookError::Internal(e);

    let uuids: Vec<String> = items.iter().map(|i| i.card.clone()).collect();
    // Only this client's cards of this service: another's are as unknown as made-up ones.
    let cards: Vec<ServedCard> = served_cards::by_uuids(&state.db, &uuids)
        .await
        .map_err(|e| internal(e.into()))?
        .into_iter()
        .filter(|c| c.service_id == service_id && c.client_iss == client.iss)
        .collect();
    // An EHR may send a card's uuid in upper case; stored ones are lower case.
    let served_as = |uuid: &str| cards.iter().find(|c| c.uuid.eq_ignore_ascii_case(uuid));
    if let Some(unknown) = items.iter().find(|i| served_as(&i.card).is_none()) {
        return Err(HookError::UnknownCard(unknown.card.clone()));
    }

    let mut txn = state.audit.begin(&state.db).await.map_err(|e| internal(e.into()))?;
    for item in &items {
        let served = served_as(&item.card).expect("checked above");
        let existing = feedback::Entity::find()
            .filter(feedback::Column::CardUuid.eq(&served.uuid))
            .filter(feedback::Column::Outcome.eq(item.outcome))
            .filter(feedback::Column::OutcomeTimestamp.eq(&item.outcome_timestamp))
            .one(txn.conn())
            .await
            .map_err(|e| internal(e.into()))?;
        let event = AuditEvent::new(Action::Feedback, Outcome::Success)
            .actor(Some(&client.iss), served.user_ref.as_deref())
            .patient(Some(served.patient_ref.clone()))
            .entity("Card", served.uuid.clone())
            .entity("CdsService", service_id)
            // The entry of the call that served the card, which names no card itself.
            .detail("served_in", served.audit_seq)
            .detail("outcome", item.outcome)
            .detail("accepted_suggestions", item.accepted_suggestions.clone())
            .detail("override_reason", item.override_code.clone())
            .detail("duplicate", existing.is_some());
        let seq = txn.append(event).await.map_err(|e| internal(e.into()))?;
        if existing.is_none() {
            let row = feedback::ActiveModel {
                card_uuid: Set(served.uuid.clone()),
                service_id: Set(service_id.to_owned()),
                client_iss: Set(client.iss.clone()),
                outcome: Set(item.outcome.to_owned()),
                outcome_timestamp: Set(item.outcome_timestamp.clone()),
                accepted_suggestions: Set(json!(item.accepted_suggestions).to_string()),
                override_reason: Set(item.override_reason.as_ref().map(Value::to_string)),
                audit_seq: Set(seq),
                received_at: Set(time::OffsetDateTime::now_utc().unix_timestamp()),
                ..Default::default()
            };
            feedback::Entity::insert(row).exec_without_returning(txn.conn()).await.map_err(|e| internal(e.into()))?;
        }
    }
    txn.commit().await.map_err(|e| internal(e.into()))?;
    Ok(HttpResponse::Ok().finish())
}
