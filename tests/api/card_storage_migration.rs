//! Migration 10 (one row per hook call) on a database that already served cards: the cards and
//! feedback stored before it stay readable, and feedback no longer needs a `cards` row.

use migration::{Migrator, MigratorTrait};
use radsight::store::served_cards;
use sea_orm::{ConnectionTrait, Database};

use crate::helpers::{Backend, fresh_database};

async fn cards_and_feedback_stored_before_one_row_per_call_stay_readable(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let db = Database::connect(fresh_database(backend, &tmp).await).await.unwrap();
    // The schema as migration 9 left it, with a card served then and feedback on it.
    Migrator::up(&db, Some(9)).await.unwrap();
    let (uuid, hash) = ("3f1e1b9a-8c1d-4f53-9d43-6c2a4f0e5b11", "ab".repeat(32));
    for sql in [
        format!("INSERT INTO card_contents (hash, content_json, created_at) VALUES ('{hash}', '{{\"summary\":\"s\"}}', 0)"),
        format!(
            "INSERT INTO cards (uuid, hook_instance, service_id, hook, client_iss, user_ref, patient_ref, source_kind, source_id, \
             source_version, indicator, summary, card_json, audit_seq, created_at, content_hash) VALUES ('{uuid}', 'h', \
             'radsight-imaging-order-select', 'order-select', 'https://ehr.example.org', 'Practitioner/p', 'Patient/p', 'rule', \
             'contrast-allergy', '3', 'warning', 's', '', 7, 0, '{hash}')"
        ),
        format!(
            "INSERT INTO feedback (card_uuid, service_id, client_iss, outcome, outcome_timestamp, accepted_suggestions, \
             override_reason, audit_seq, received_at) VALUES ('{uuid}', 'radsight-imaging-order-select', 'https://ehr.example.org', \
             'accepted', '2026-12-01T10:00:00Z', '[]', NULL, 8, 0)"
        ),
    ] {
        db.execute_unprepared(&sql).await.unwrap();
    }
    let not_a_card = "INSERT INTO feedback (card_uuid, service_id, client_iss, outcome, outcome_timestamp, accepted_suggestions, \
         override_reason, audit_seq, received_at) VALUES ('no-such-card', 's', 'i', 'accepted', 't', '[]', NULL, 9, 0)";
    assert!(db.execute_unprepared(not_a_card).await.is_err(), "before: feedback must name a `cards` row");

    Migrator::up(&db, None).await.unwrap();

    let cards = served_cards::by_uuids(&db, &[uuid.to_owned()]).await.unwrap();
    assert_eq!(cards.len(), 1, "a card served before is still found");
    assert_eq!((cards[0].source_id.as_str(), cards[0].audit_seq), ("contrast-allergy", 7));
    let origin = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT source_kind, source_id, source_version FROM card_contents".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    let column = |c: &str| origin.try_get::<Option<String>>("", c).unwrap();
    assert_eq!(
        (column("source_kind"), column("source_id"), column("source_version")),
        (Some("rule".into()), Some("contrast-allergy".into()), Some("3".into())),
        "the content learnt its origin from the card that served it"
    );
    let kept = db
        .query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), "SELECT card_uuid, audit_seq FROM feedback".to_owned()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.try_get::<String>("", "card_uuid").unwrap(), uuid, "feedback rows survive the rebuild");
    assert_eq!(kept.try_get::<i64>("", "audit_seq").unwrap(), 8);
    // Cards served from now on have no `cards` row, so feedback no longer points at one; the
    // idempotency index is still there.
    db.execute_unprepared(not_a_card).await.unwrap();
    assert!(db.execute_unprepared(not_a_card).await.is_err(), "the same feedback twice is refused by the index");
}

backend_tests!(cards_and_feedback_stored_before_one_row_per_call_stay_readable);
