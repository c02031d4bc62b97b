//! Feedback: stored once per (card, outcome, outcomeTimestamp), joined to the served card,
//! audited every time; unknown cards are refused.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, example, spawn_app};

const SELECT: &str = "radsight-imaging-order-select";
const FEEDBACK: &str = "/cds-services/radsight-imaging-order-select/feedback";

async fn served_cards(app: &TestApp) -> Vec<Value> {
    app.hook(SELECT, &example("order-select")).await.cards()
}

async fn feedback_is_stored_once_and_joined_to_the_card(backend: Backend) {
    let app = spawn_app(backend).await;
    let cards = served_cards(&app).await;
    let allergy = cards.iter().find(|c| c["source"]["topic"]["code"] == "contrast-allergy").unwrap();
    let duplicate = cards.iter().find(|c| c["source"]["topic"]["code"] == "duplicate-order").unwrap();
    let body = json!({"feedback": [
        {"card": allergy["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-29T10:15:00Z",
         "overrideReason": {"reason": allergy["overrideReasons"][1], "userComment": "premedicated per protocol"}},
        {"card": duplicate["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-29T10:15:05Z",
         "acceptedSuggestions": [{"id": duplicate["suggestions"][0]["uuid"]}]}
    ]});
    let first = app.post(FEEDBACK, &body).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let again = app.post(FEEDBACK, &body).await;
    assert_eq!(again.status, 200, "a resend is acknowledged: {}", again.text);

    let rows = app.feedback_rows().await;
    assert_eq!(rows.len(), 2, "a resend stores nothing new");
    let overridden = rows.iter().find(|r| r.outcome == "overridden").unwrap();
    assert_eq!(overridden.card_uuid, allergy["uuid"].as_str().unwrap());
    assert!(overridden.override_reason.as_deref().unwrap().contains("already-addressed"));
    let accepted = rows.iter().find(|r| r.outcome == "accepted").unwrap();
    assert!(accepted.accepted_suggestions.contains(duplicate["suggestions"][0]["uuid"].as_str().unwrap()));

    let audited: Vec<_> = app.audit().await.into_iter().filter(|e| e.action == "cds.feedback").collect();
    assert_eq!(audited.len(), 4, "every receipt is audited");
    assert_eq!(audited.iter().filter(|e| e.detail.contains("\"duplicate\":true")).count(), 2);
    assert!(audited.iter().all(|e| !e.detail.contains("premedicated")), "free text stays out of the audit trail");
    assert!(audited.iter().all(|e| e.patient_ref.as_deref() == Some("Patient/example-patient")));
}

async fn feedback_for_an_unknown_card_is_refused_and_nothing_is_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let cards = served_cards(&app).await;
    let body = json!({"feedback": [
        {"card": cards[0]["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-29T10:15:00Z"},
        {"card": uuid::Uuid::new_v4().to_string(), "outcome": "accepted", "outcomeTimestamp": "2026-11-29T10:15:00Z"}
    ]});
    let issue = app.post(FEEDBACK, &body).await.outcome(404);
    assert!(issue["diagnostics"].as_str().unwrap().contains("did not issue"));
    assert!(app.feedback_rows().await.is_empty());
    // A card issued by another service is unknown to this one.
    let other = json!({"feedback": [{"card": cards[0]["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-29T10:15:00Z"}]});
    app.post("/cds-services/radsight-patient-view/feedback", &other).await.outcome(404);
    let last = app.audit().await.pop().unwrap();
    assert_eq!((last.action.as_str(), last.outcome.as_str()), ("cds.feedback", "rejected"));
    // A card uuid names its call and its place on it: past the call's last card, or with
    // another token (a guess), is no card.
    use radsight::store::served_cards::{call_of, card_uuid};
    let place = call_of(cards[0]["uuid"].as_str().unwrap()).unwrap();
    for made_up in [card_uuid(place.seq, place.token, cards.len()), card_uuid(place.seq, place.token ^ 1, 0)] {
        let body = json!({"feedback": [{"card": made_up, "outcome": "accepted", "outcomeTimestamp": "2026-11-29T10:15:00Z"}]});
        app.post(FEEDBACK, &body).await.outcome(404);
    }
    assert!(app.feedback_rows().await.is_empty());
}

async fn feedback_finds_cards_by_uuid_in_any_case_and_cards_stored_before_calls_were(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let app = spawn_app(backend).await;
    let cards = served_cards(&app).await;
    let upper = cards[1]["uuid"].as_str().unwrap().to_uppercase();
    let body = json!({"feedback": [{"card": upper, "outcome": "accepted", "outcomeTimestamp": "2026-11-29T10:15:00Z"}]});
    assert_eq!(app.post(FEEDBACK, &body).await.status, 200);
    // A card served before `m20261203_000010` has a `cards` row of its own and no call.
    let legacy = uuid::Uuid::new_v4().to_string();
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO cards (uuid, hook_instance, service_id, hook, client_iss, user_ref, patient_ref, source_kind, \
             source_id, source_version, indicator, summary, card_json, audit_seq, created_at, content_hash) VALUES \
             ('{legacy}', 'h', 'radsight-imaging-order-select', 'order-select', '{}', 'Practitioner/p', 'Patient/example-patient', \
             'rule', 'contrast-allergy', '1', 'warning', 's', '{{}}', 1, 0, NULL)",
            crate::helpers::ISS
        ))
        .await
        .unwrap();
    let body = json!({"feedback": [{"card": legacy, "outcome": "overridden", "outcomeTimestamp": "2026-11-29T10:16:00Z"}]});
    let reply = app.post(FEEDBACK, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let rows = app.feedback_rows().await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().any(|r| r.card_uuid == cards[1]["uuid"].as_str().unwrap()), "stored under the uuid as served");
    assert!(rows.iter().any(|r| r.card_uuid == legacy));
    let audited = app.audit().await.into_iter().rfind(|e| e.action == "cds.feedback").unwrap();
    assert_eq!(audited.actor_user.as_deref(), Some("Practitioner/p"), "the user the card was shown to");
}

async fn malformed_feedback_names_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let cards = served_cards(&app).await;
    let cases = [
        (json!({}), "feedback"),
        (
            json!({"feedback": [{"card": "not-a-uuid", "outcome": "accepted", "outcomeTimestamp": "2026-11-29T10:15:00Z"}]}),
            "feedback[0].card",
        ),
        (
            json!({"feedback": [{"card": cards[0]["uuid"], "outcome": "ignored", "outcomeTimestamp": "2026-11-29T10:15:00Z"}]}),
            "feedback[0].outcome",
        ),
        (
            json!({"feedback": [{"card": cards[0]["uuid"], "outcome": "accepted", "outcomeTimestamp": "yesterday"}]}),
            "feedback[0].outcomeTimestamp",
        ),
    ];
    for (body, field) in cases {
        let issue = app.post(FEEDBACK, &body).await.outcome(400);
        assert_eq!(issue["expression"][0], field, "{issue}");
    }
}

backend_tests!(
    feedback_is_stored_once_and_joined_to_the_card,
    feedback_for_an_unknown_card_is_refused_and_nothing_is_stored,
    feedback_finds_cards_by_uuid_in_any_case_and_cards_stored_before_calls_were,
    malformed_feedback_names_the_field,
);
