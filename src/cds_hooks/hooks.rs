//! `POST /cds-services/{id}`: one hook call, from request to stored, audited cards.

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::BoxFuture;
use sea_orm::{ActiveValue::Set, DatabaseTransaction, DbErr, EntityTrait};
use serde_json::json;

use super::cards::{IssuedCard, Origin};
use super::error::HookError;
use super::prefetch::{self, FetchRecord, UnusableSlot};
use super::request::{self, HookRequest};
use super::results::{self, ResultCardSettings};
use super::stored_card::{StoredContent, served_digest};
use super::{HookState, rules};
use crate::audit::{Action, AuditError, AuditEvent, GroupWork, GroupWriter, Outcome};
use crate::auth::client_jwt::{AuthFailure, JtiClaim, Spend, UnspentJti, VerifiedClient};
use crate::domain::Hook;
use crate::http::client_auth::{self, CdsHookClient, audit_failures_spending};
use crate::http::{HttpError, body};
use crate::state::AppState;
use crate::store::entities::{card_content, card_set, hook_call};
use crate::store::served_cards;

pub async fn call_service(
    req: HttpRequest,
    CdsHookClient { client, jti }: CdsHookClient,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    hooks: web::Data<HookState>,
) -> Result<HttpResponse, HttpError> {
    let service_id = path.into_inner();
    let outcome = handle(&req, &service_id, payload, &state, &hooks, &client, &jti).await;
    if let Err(HookError::Replayed) = outcome {
        // Another call with this token committed first: refused as any replay is.
        return Err(client_auth::refuse(&req, &state, AuthFailure::Replayed.code()).await);
    }
    let entity = Some(("CdsService", service_id.as_str()));
    let answer = audit_failures_spending(&state, Action::HookCall, &client, entity, Some(&jti), std::future::ready(outcome)).await;
    // A busy refusal has no entry of its own to record the jti with (it is counted), nor has a
    // failure whose entry could not be written.
    jti.spend_alone().await;
    Ok(answer?)
}

async fn handle(
    req: &HttpRequest,
    service_id: &str,
    payload: web::Payload,
    state: &AppState,
    hooks: &HookState,
    client: &VerifiedClient,
    jti: &UnspentJti,
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

    store_and_audit(state, client, jti, service_id, &hook_req, orders.len(), &data.unusable, &mut issued).await?;
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

/// Records the token's `jti`, appends the hook's audit entry and stores the call's cards with
/// it, atomically.
///
/// The call is one `hook_calls` row keyed by its entry, which holds the call's facts; its cards
/// are served as `card_uuid(seq, token, i)`, the token taken from the entry's hash
/// (`store::served_cards`), so they need no rows. The
/// entry commits to every card's content and origin, in the order served, through one digest
/// (`cards_content`), which is also the key of the stored list of content hashes (`card_sets`):
/// what was shown stays provable, for one short row and 64 characters of log per call.
#[allow(clippy::too_many_arguments)]
async fn store_and_audit(
    state: &AppState,
    client: &VerifiedClient,
    jti: &UnspentJti,
    service_id: &str,
    hook_req: &HookRequest,
    order_count: usize,
    unusable: &[UnusableSlot],
    issued: &mut [IssuedCard],
) -> Result<(), HookError> {
    if issued.len() > served_cards::MAX_CARDS_PER_CALL {
        return Err(HookError::Internal(anyhow::anyhow!("{} cards in one call", issued.len())));
    }
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
    let mut rows = None;
    if !issued.is_empty() {
        let contents: Vec<(StoredContent, &Origin)> = issued.iter().map(|c| (StoredContent::of(&c.card, &c.origin), &c.origin)).collect();
        let digest = served_digest(contents.iter().map(|(c, _)| c.hash.as_str()));
        event = event.detail("cards_content", digest.clone());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut unique: Vec<card_content::ActiveModel> = Vec::with_capacity(contents.len());
        for (content, origin) in &contents {
            if !unique.iter().any(|r| r.hash.as_ref() == &content.hash) {
                unique.push(card_content::ActiveModel {
                    hash: Set(content.hash.clone()),
                    content_json: Set(content.json.clone()),
                    created_at: Set(now),
                    source_kind: Set(Some(origin.kind.to_owned())),
                    source_id: Set(Some(origin.id.clone())),
                    source_version: Set(Some(origin.version.clone())),
                });
            }
        }
        let hashes: Vec<&str> = contents.iter().map(|(c, _)| c.hash.as_str()).collect();
        rows = Some(CallRows {
            contents: unique,
            set: card_set::ActiveModel { digest: Set(digest.clone()), content_hashes: Set(hashes.join("\n")), created_at: Set(now) },
            call: hook_call::ActiveModel {
                audit_seq: Set(0),
                patient_ref: Set(hook_req.patient.reference()),
                card_set: Set(digest),
                created_at: Set(now),
            },
        });
    }
    let (seq, token) = match state.audit.offer_in_group(&state.db, ServeCall { jti: jti.claim().clone(), event, rows }).await? {
        Served::Stored { seq, token } => {
            jti.mark_spent();
            (seq, token)
        }
        Served::Replayed => {
            jti.mark_spent();
            return Err(HookError::Replayed);
        }
    };
    for (i, c) in issued.iter_mut().enumerate() {
        c.card.serve_as(served_cards::card_uuid(seq, token, i).to_string());
        c.card.audited_as(seq);
    }
    Ok(())
}

/// A hook call's `jti`, entry and, if it served cards, its rows, in one group commit. The `jti`
/// comes first: a token another call has used writes nothing. The entry is appended before the
/// rows, because the cards' uuids take their token from its hash.
struct ServeCall {
    jti: JtiClaim,
    event: AuditEvent,
    rows: Option<CallRows>,
}

/// What a [`ServeCall`] did.
enum Served {
    /// The entry's sequence number and the token of its cards' uuids.
    Stored { seq: i64, token: i64 },
    /// The token was used by another call that committed first; nothing was written.
    Replayed,
}

impl GroupWork for ServeCall {
    type Output = Served;
    fn run<'t>(self: Box<Self>, w: &'t mut GroupWriter<'_>) -> BoxFuture<'t, Result<Served, AuditError>> {
        Box::pin(async move {
            if self.jti.spend_in(w.conn()).await.map_err(AuditError::Append)? == Spend::Replayed {
                return Ok(Served::Replayed);
            }
            let seq = w.append(self.event).await?;
            let token = served_cards::token_of(w.last_entry_hash()).ok_or_else(|| AuditError::Group("an entry hash is hex".into()))?;
            if let Some(rows) = self.rows {
                rows.write(w.conn(), seq).await?;
            }
            Ok(Served::Stored { seq, token })
        })
    }
}

/// A hook call's cards, stored in the transaction of the entry that records them: the call's
/// row under that entry's sequence number, its list of content hashes and each content, the
/// last two only if not stored before.
struct CallRows {
    contents: Vec<card_content::ActiveModel>,
    set: card_set::ActiveModel,
    call: hook_call::ActiveModel,
}

impl CallRows {
    async fn write(self, conn: &DatabaseTransaction, seq: i64) -> Result<(), DbErr> {
        if seq > served_cards::MAX_SEQ {
            // Refused before commit, so no card is answered that its uuid could not name.
            return Err(DbErr::Custom(format!("audit sequence number {seq} is past what a card uuid carries")));
        }
        let CallRows { contents, set, mut call } = self;
        card_content::Entity::insert_many(contents).on_conflict_do_nothing().exec_without_returning(conn).await?;
        card_set::Entity::insert(set).on_conflict_do_nothing().exec_without_returning(conn).await?;
        call.audit_seq = Set(seq);
        hook_call::Entity::insert(call).exec_without_returning(conn).await.map(|_| ())
    }
}
