//! order-select and order-sign: the safety rules firing and not firing on realistic bundles,
//! AI result cards for relevant prior studies, and the cards stored as served.

use serde_json::{Value, json};

use crate::helpers::{Backend, PATIENT, example, spawn_app, spawn_app_with, topics};

const SELECT: &str = "radsight-imaging-order-select";
const SIGN: &str = "radsight-imaging-order-sign";

fn card<'a>(cards: &'a [Value], topic: &str) -> &'a Value {
    cards.iter().find(|c| c["source"]["topic"]["code"] == topic).unwrap_or_else(|| panic!("no {topic} card in {cards:?}"))
}

fn set_prefetch(body: &mut Value, key: &str, value: Value) {
    body["prefetch"][key] = value;
}

fn searchset(resources: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "searchset", "total": resources.len(),
        "entry": resources.into_iter().map(|r| json!({"resource": r})).collect::<Vec<_>>()})
}

async fn order_select_checks_the_selected_contrast_ct_against_allergy_renal_function_and_duplicates(backend: Backend) {
    let app = spawn_app(backend).await;
    let cards = app.hook(SELECT, &example("order-select")).await.cards();
    // The unselected XR order has no reason, so missing-reason would fire if it were checked.
    assert_eq!(topics(&cards), ["contrast-allergy", "duplicate-order", "renal-function"]);

    let allergy = card(&cards, "contrast-allergy");
    assert_eq!(allergy["indicator"], "warning");
    assert!(allergy["summary"].as_str().unwrap().contains("Iodinated contrast media"));
    assert_eq!(allergy["selectionBehavior"], "at-most-one");
    let update = &allergy["suggestions"][0]["actions"][0];
    assert_eq!(update["type"], "update");
    assert_eq!(update["resource"]["id"], "draft-ct-chest");
    assert_eq!(update["resource"]["code"]["coding"][0]["code"], "29252-4");
    assert!(allergy["overrideReasons"].as_array().unwrap().iter().all(|r| r["display"].is_string()));

    let renal = card(&cards, "renal-function");
    assert!(renal["summary"].as_str().unwrap().contains("eGFR 24"), "{}", renal["summary"]);
    let duplicate = card(&cards, "duplicate-order");
    assert_eq!(duplicate["suggestions"][0]["actions"][0]["type"], "delete");
    assert_eq!(duplicate["suggestions"][0]["actions"][0]["resourceId"], "ServiceRequest/draft-ct-chest");
    for c in &cards {
        assert!(c["summary"].as_str().unwrap().chars().count() < 140);
        assert_eq!(c["source"]["topic"]["version"], "1.0.0");
        assert!(c.as_object().unwrap().values().all(|v| !v.is_null()), "no nulls in cards: {c}");
    }
}

async fn order_sign_checks_every_draft_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let cards = app.hook(SIGN, &example("order-sign")).await.cards();
    assert_eq!(topics(&cards), ["contrast-allergy", "duplicate-order", "missing-reason", "renal-function"]);
    assert!(card(&cards, "missing-reason")["summary"].as_str().unwrap().starts_with("XR Chest 2 Views"));
}

async fn a_positive_pregnancy_status_fires_on_ionising_orders_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut body = example("order-select");
    let pregnant = json!({"resourceType": "Observation", "id": "preg-2", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "82810-3"}]},
        "subject": {"reference": format!("Patient/{PATIENT}")},
        "effectiveDateTime": time::OffsetDateTime::now_utc().date().to_string(),
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "77386006", "display": "Pregnant"}]}});
    set_prefetch(&mut body, "pregnancyStatus", searchset(vec![pregnant]));
    let cards = app.hook(SELECT, &body).await.cards();
    assert!(topics(&cards).contains(&"pregnancy-radiation".to_string()), "{:?}", topics(&cards));

    // The same patient ordering an MR: no radiation card, and gadolinium is not iodinated.
    let entry = &mut body["context"]["draftOrders"]["entry"][0]["resource"];
    entry["code"] =
        json!({"coding": [{"system": "urn:example:local-procedures", "code": "MRBRAIN-C", "display": "MR Brain WO and W contrast IV"}]});
    let cards = app.hook(SELECT, &body).await.cards();
    let t = topics(&cards);
    assert!(!t.contains(&"pregnancy-radiation".to_string()), "{t:?}");
    assert!(!t.contains(&"contrast-allergy".to_string()), "an iodinated allergy must not fire on gadolinium: {t:?}");
    assert!(t.contains(&"renal-function".to_string()), "low eGFR matters for gadolinium too: {t:?}");
}

async fn a_patient_without_risks_gets_no_rule_cards(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut body = example("order-select");
    set_prefetch(&mut body, "allergies", Value::Null);
    set_prefetch(&mut body, "activeImagingOrders", searchset(vec![]));
    set_prefetch(
        &mut body,
        "renalFunction",
        searchset(vec![json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "62238-1"}]},
        "effectiveDateTime": time::OffsetDateTime::now_utc().date().to_string(),
        "valueQuantity": {"value": 88, "unit": "mL/min/{1.73_m2}"}})]),
    );
    let reply = app.hook(SELECT, &body).await;
    assert_eq!(reply.json(), json!({"cards": []}));
}

async fn a_disabled_rule_does_not_fire(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.rules.disabled.insert("duplicate-order".into());
    })
    .await;
    let cards = app.hook(SELECT, &example("order-select")).await.cards();
    assert_eq!(topics(&cards), ["contrast-allergy", "renal-function"]);
}

async fn orders_that_are_not_imaging_get_no_cards(backend: Backend) {
    let app = spawn_app(backend).await;
    app.seed_study("1.2.3.4", "CT", "chest", 5, None).await;
    let mut body = example("order-sign");
    body["context"]["draftOrders"]["entry"] = json!([{"resource": {"resourceType": "ServiceRequest", "id": "lab-1",
        "status": "draft", "intent": "order", "subject": {"reference": format!("Patient/{PATIENT}")},
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "108252007", "display": "Laboratory procedure"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2160-0", "display": "Creatinine [Mass/volume] in Serum or Plasma"}]}}}]);
    assert_eq!(app.hook(SIGN, &body).await.json(), json!({"cards": []}));
}

async fn stored_results_on_relevant_priors_become_cards_and_unanalysed_studies_say_pending(backend: Backend) {
    let app = spawn_app(backend).await;
    let findings = json!([{"code": "nodule", "display": "Pulmonary nodule", "probability": 0.87, "threshold": 0.5},
                          {"code": "effusion", "display": "Pleural effusion", "probability": 0.12, "threshold": 0.4}]);
    let result_id = app.seed_study("1.2.826.0.1.1", "DX", "chest", 30, Some(("done", findings))).await.unwrap();
    app.seed_study("1.2.826.0.1.2", "CT", "chest", 10, None).await;
    app.seed_study("1.2.826.0.1.3", "MR", "brain", 10, None).await; // neither modality nor region
    app.seed_study("1.2.826.0.1.4", "DX", "chest", 400, Some(("done", json!([])))).await; // outside look-back

    let cards = app.hook(SELECT, &example("order-select")).await.cards();
    let ai: Vec<&Value> = cards.iter().filter(|c| c["source"]["label"] == "radsight imaging AI").collect();
    assert_eq!(ai.len(), 2, "{ai:?}");
    let pending = ai.iter().find(|c| c["summary"].as_str().unwrap().contains("pending")).expect("a pending card");
    assert_eq!(pending["indicator"], "info");
    assert!(pending["summary"].as_str().unwrap().contains("CT chest"));

    let result = ai.iter().find(|c| c["source"]["topic"]["code"] == "radsight-cxr-demo").expect("a model card");
    assert_eq!(result["indicator"], "warning");
    let summary = result["summary"].as_str().unwrap();
    assert!(summary.contains("Pulmonary nodule") && summary.contains("0.87"), "{summary}");
    assert_eq!(result["source"]["topic"]["version"], "0.1.0");
    let smart = result["links"].as_array().unwrap().iter().find(|l| l["type"] == "smart").unwrap();
    assert_eq!(smart["url"], app.url("/smart/launch"));
    let ctx: Value = serde_json::from_str(smart["appContext"].as_str().unwrap()).unwrap();
    assert_eq!(ctx, json!({"studyInstanceUid": "1.2.826.0.1.1", "resultId": result_id}));
    let saliency = result["links"].as_array().unwrap().iter().find(|l| l["type"] == "absolute").unwrap();
    // Signed, because the clinician's browser that opens it carries no client JWT.
    let url = saliency["url"].as_str().unwrap();
    assert!(url.starts_with(&app.url(&format!("/results/{result_id}/saliency.png?exp="))) && url.contains("&sig="), "{url}");
    assert!(result["detail"].as_str().unwrap().contains("Pleural effusion"));
}

/// The served card with what differs per call taken out, written here independently of the
/// service: its uuid, its suggestions' uuids, the audit extension and a signed link's exp/sig.
fn without_per_call_parts(card: &Value) -> Value {
    let mut c = card.clone();
    let o = c.as_object_mut().unwrap();
    o.remove("uuid");
    o.remove("extension");
    for s in o.get_mut("suggestions").and_then(Value::as_array_mut).into_iter().flatten() {
        s.as_object_mut().unwrap().remove("uuid");
    }
    for l in o.get_mut("links").and_then(Value::as_array_mut).into_iter().flatten() {
        let url = l["url"].as_str().unwrap();
        if let Some((bare, query)) = url.split_once('?') {
            let kept: Vec<&str> = query.split('&').filter(|p| !p.starts_with("exp=") && !p.starts_with("sig=")).collect();
            l["url"] = Value::from(if kept.is_empty() { bare.to_owned() } else { format!("{bare}?{}", kept.join("&")) });
        }
    }
    c
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

async fn every_served_card_is_stored_and_named_in_the_hook_audit_entry(backend: Backend) {
    use radsight::store::entities::card_content;
    use sea_orm::EntityTrait;
    let app = spawn_app(backend).await;
    // A stored result too, so a model card with a signed link is among those served.
    let findings = json!([{"code": "nodule", "display": "Pulmonary nodule", "probability": 0.87, "threshold": 0.5}]);
    app.seed_study("1.2.826.0.1.1", "DX", "chest", 30, Some(("done", findings))).await.unwrap();
    let cards = app.hook(SELECT, &example("order-select")).await.cards();
    let mut served: Vec<String> = cards.iter().map(|c| c["uuid"].as_str().unwrap().to_owned()).collect();
    let stored = app.cards().await;
    let mut stored_ids: Vec<String> = stored.iter().map(|c| c.uuid.clone()).collect();
    served.sort();
    stored_ids.sort();
    assert_eq!(served, stored_ids);
    assert!(stored.iter().any(|c| c.source_kind == "model") && stored.iter().any(|c| c.source_kind == "rule"));

    let entry = app.audit().await.into_iter().find(|e| e.action == "cds.hook").expect("hook audited");
    assert_eq!(entry.outcome, "success");
    assert_eq!(entry.actor_iss.as_deref(), Some(crate::helpers::ISS));
    assert_eq!(entry.actor_user.as_deref(), Some("Practitioner/example-practitioner"));
    assert_eq!(entry.patient_ref.as_deref(), Some("Patient/example-patient"));
    let detail: Value = serde_json::from_str(&entry.detail).unwrap();
    let contents = card_content::Entity::find().all(&app.db).await.unwrap();
    // The entry names no card: every card's uuid carries the entry's seq and its place.
    let entities: Vec<Value> = serde_json::from_str(&entry.entities).unwrap();
    assert!(!entities.iter().any(|e| e["kind"] == "Card"), "cards are found through their call's entry");
    use radsight::store::served_cards::{call_of, token_of, uuids_served};
    let token = token_of(&entry.entry_hash).unwrap();
    for (i, served) in cards.iter().enumerate() {
        let place = call_of(served["uuid"].as_str().unwrap()).unwrap();
        assert_eq!((place.seq, place.token, place.index), (entry.seq, token, i), "the entry's seq, its hash's token, the place");
    }
    // So the entry alone gives an auditor every uuid it served, in order.
    let derived: Vec<String> = uuids_served(&entry).iter().map(|u| u.to_string()).collect();
    let answered: Vec<&str> = cards.iter().map(|c| c["uuid"].as_str().unwrap()).collect();
    assert_eq!(derived, answered);
    for c in &stored {
        assert_eq!(c.audit_seq, entry.seq);
        assert_eq!(c.patient_ref, "Patient/example-patient");
        assert_eq!(c.hook_instance, "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea");
        let served = cards.iter().find(|x| x["uuid"] == c.uuid.as_str()).unwrap();
        assert_eq!(served["extension"]["org.radsight.audit"]["leafIndex"], entry.seq - 1, "the card names its audit leaf");
        // Stored as served, less its per-call parts; the hash over origin and content is the
        // one the audit entry commits to, recomputed here as an auditor would.
        let hash = c.content_hash.as_deref().expect("a served card has a content hash");
        let content = contents.iter().find(|k| k.hash == hash).expect("its content is stored");
        let json: Value = serde_json::from_str(&content.content_json).unwrap();
        assert_eq!(json, without_per_call_parts(served), "stored as served");
        assert_eq!(
            (content.source_kind.as_deref(), content.source_id.as_deref(), content.source_version.as_deref()),
            (Some(c.source_kind.as_str()), Some(c.source_id.as_str()), Some(c.source_version.as_str())),
            "the content keeps its origin"
        );
        let preimage =
            format!("radsight-card-content-v1\n{}\n{}\n{}\n{}", c.source_kind, c.source_id, c.source_version, content.content_json);
        assert_eq!(sha256_hex(preimage.as_bytes()), hash);
    }
    // The entry commits to those hashes in the order the cards were served.
    let in_order: Vec<&str> =
        cards.iter().map(|x| stored.iter().find(|c| x["uuid"] == c.uuid.as_str()).unwrap().content_hash.as_deref().unwrap()).collect();
    assert_eq!(in_order.len(), cards.len());
    let preimage = in_order.iter().fold("radsight-cards-served-v1".to_owned(), |acc, h| format!("{acc}\n{h}"));
    assert_eq!(detail["cards_content"], sha256_hex(preimage.as_bytes()), "the audit entry commits to every card's content");
    assert!(!contents.iter().any(|k| k.content_json.contains("sig=")), "no link credential is stored");
}

async fn the_same_cards_served_again_store_their_content_once(backend: Backend) {
    use radsight::store::entities::card_content;
    use sea_orm::{EntityTrait, PaginatorTrait};
    let app = spawn_app(backend).await;
    let findings = json!([{"code": "nodule", "display": "Pulmonary nodule", "probability": 0.87, "threshold": 0.5}]);
    app.seed_study("1.2.826.0.1.1", "DX", "chest", 30, Some(("done", findings))).await.unwrap();
    let first = app.hook(SELECT, &example("order-select")).await.cards();
    let contents_after_one = card_content::Entity::find().count(&app.db).await.unwrap();
    assert_eq!(contents_after_one as usize, first.len());

    let mut second_request = example("order-select");
    second_request["hookInstance"] = json!("7f6f5b1e-4a57-4c59-9a32-0b3f3c1a2e11");
    let second = app.hook(SELECT, &second_request).await.cards();
    assert_eq!(second.len(), first.len());
    // New uuids for the cards and their suggestions, each call its own rows...
    for (a, b) in first.iter().zip(&second) {
        assert_ne!(a["uuid"], b["uuid"]);
        for (sa, sb) in a["suggestions"].as_array().into_iter().flatten().zip(b["suggestions"].as_array().into_iter().flatten()) {
            assert_ne!(sa["uuid"], sb["uuid"], "a suggestion's uuid is unique to the card served");
        }
    }
    assert_eq!(app.cards().await.len(), first.len() + second.len());
    // ...in one row per call, and no new content nor list of contents.
    {
        use radsight::store::entities::{card_set, hook_call};
        assert_eq!(hook_call::Entity::find().count(&app.db).await.unwrap(), 2, "one row per call");
        assert_eq!(card_set::Entity::find().count(&app.db).await.unwrap(), 1, "the same cards in the same order: one list");
    }
    assert_eq!(card_content::Entity::find().count(&app.db).await.unwrap(), contents_after_one);
    let contents = |cards: &[Value]| cards.iter().map(without_per_call_parts).collect::<Vec<_>>();
    assert_eq!(contents(&first), contents(&second));

    // Feedback on a card of the second call still finds it and names its accepted suggestion.
    let duplicate = second.iter().find(|c| c["source"]["topic"]["code"] == "duplicate-order").unwrap();
    let feedback = json!({"feedback": [{"card": duplicate["uuid"], "outcome": "accepted",
        "acceptedSuggestions": [{"id": duplicate["suggestions"][0]["uuid"]}], "outcomeTimestamp": "2026-12-03T10:00:00Z"}]});
    let reply = app.post(&format!("/cds-services/{SELECT}/feedback"), &feedback).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

backend_tests!(
    order_select_checks_the_selected_contrast_ct_against_allergy_renal_function_and_duplicates,
    order_sign_checks_every_draft_order,
    a_positive_pregnancy_status_fires_on_ionising_orders_only,
    a_patient_without_risks_gets_no_rule_cards,
    a_disabled_rule_does_not_fire,
    orders_that_are_not_imaging_get_no_cards,
    stored_results_on_relevant_priors_become_cards_and_unanalysed_studies_say_pending,
    every_served_card_is_stored_and_named_in_the_hook_audit_entry,
    the_same_cards_served_again_store_their_content_once,
);
