//! A safety check never vanishes silently. Each rule that reads prefetch is tried with its slot
//! holding an OperationOutcome (the EHR's query failed), a resource of the wrong type, and
//! another patient's data: with no FHIR server to fetch from, a warning card says the check
//! could not run (and the hook's audit entry names the slot); with a registered FHIR server,
//! radsight fetches the slot itself and the rule runs on the EHR's data. A slot that is simply
//! missing is a 412 (`prefetch.rs`). Requests that could mean two things (a key named twice) or
//! that are not JSON are refused.

use serde_json::{Value, json};

use crate::fhir_fixture::ACCESS_TOKEN;
use crate::helpers::{Backend, PATIENT, example, spawn_app, topics};
use crate::prefetch::load_ehr;

const SELECT: &str = "radsight-imaging-order-select";

/// Each rule with the prefetch slot it needs, and whether the example order makes it fire.
const RULES: &[(&str, &str, bool)] = &[
    ("duplicate-order", "activeImagingOrders", true),
    ("contrast-allergy", "allergies", true),
    ("renal-function", "renalFunction", true),
    ("pregnancy-radiation", "pregnancyStatus", false),
];

#[derive(Clone, Copy, Debug)]
enum Spoil {
    OperationOutcome,
    WrongType,
    WrongPatient,
}

fn spoil(slot: &Value, how: Spoil) -> Value {
    match how {
        Spoil::OperationOutcome => json!({"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "exception", "diagnostics": "the EHR's query timed out"}]}),
        Spoil::WrongType => json!({"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": {"resourceType": "Patient", "id": PATIENT}}]}),
        Spoil::WrongPatient => {
            let mut slot = slot.clone();
            for entry in slot["entry"].as_array_mut().unwrap() {
                for field in ["subject", "patient"] {
                    if entry["resource"].get(field).is_some() {
                        entry["resource"][field] = json!({"reference": "Patient/someone-else"});
                    }
                }
            }
            slot
        }
    }
}

fn summaries_for<'a>(cards: &'a [Value], rule: &str) -> Vec<&'a str> {
    cards.iter().filter(|c| c["source"]["topic"]["code"] == rule).filter_map(|c| c["summary"].as_str()).collect()
}

async fn every_rule_says_when_its_data_is_unusable_and_cannot_be_fetched(backend: Backend) {
    let app = spawn_app(backend).await;
    for &(rule, key, _) in RULES {
        for how in [Spoil::OperationOutcome, Spoil::WrongType, Spoil::WrongPatient] {
            let mut body = example("order-select");
            body["prefetch"][key] = spoil(&body["prefetch"][key], how);
            let cards = app.hook(SELECT, &body).await.cards();
            let summaries = summaries_for(&cards, rule);
            assert_eq!(summaries.len(), 1, "{rule} with {how:?}: {cards:#?}");
            assert!(summaries[0].contains("could not be checked"), "{rule} with {how:?}: {}", summaries[0]);
            let card = cards.iter().find(|c| c["source"]["topic"]["code"] == rule).unwrap();
            assert_eq!(card["indicator"], "warning");
            assert!(summaries[0].len() < 140);
            // The other rules still ran on their own, intact data.
            let others: Vec<_> = RULES.iter().filter(|(r, _, fires)| *r != rule && *fires).map(|(r, _, _)| *r).collect();
            for other in others {
                let s = summaries_for(&cards, other);
                assert!(s.len() == 1 && !s[0].contains("could not be checked"), "{other} beside {rule} with {how:?}: {s:?}");
            }
            let entry = app.audit().await.into_iter().rev().find(|e| e.action == "cds.hook").unwrap();
            let detail: Value = serde_json::from_str(&entry.detail).unwrap();
            let reason = match how {
                Spoil::OperationOutcome => "query-failed",
                Spoil::WrongType => "wrong-resource-type",
                Spoil::WrongPatient => "wrong-patient",
            };
            assert_eq!(detail["prefetch_unusable"], json!([{"key": key, "reason": reason, "fetch_failed": false}]), "{rule} with {how:?}");
        }
    }
}

async fn an_unusable_slot_is_fetched_from_the_registered_fhir_server_and_the_rule_runs(backend: Backend) {
    let app = spawn_app(backend).await;
    load_ehr(&app);
    for how in [Spoil::OperationOutcome, Spoil::WrongType, Spoil::WrongPatient] {
        let mut body = example("order-select");
        body["prefetch"]["renalFunction"] = spoil(&body["prefetch"]["renalFunction"], how);
        body["fhirServer"] = json!(app.fhir.fhir_base());
        body["fhirAuthorization"] = json!({"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read", "subject": "radsight"});
        let cards = app.hook(SELECT, &body).await.cards();
        assert_eq!(topics(&cards), ["contrast-allergy", "duplicate-order", "renal-function"], "{how:?}");
        let renal = summaries_for(&cards, "renal-function");
        assert!(renal[0].contains("eGFR"), "the rule ran on the fetched data: {renal:?}");
    }
    let reads: Vec<_> = app.fhir.requests().into_iter().filter(|r| r.starts_with("/fhir/Observation?")).collect();
    assert_eq!(reads.len(), 3, "one fetch per spoiled slot: {reads:?}");
}

async fn a_check_that_does_not_concern_the_order_stays_quiet(backend: Backend) {
    // An MRI without contrast: the contrast and radiation rules do not apply, so their unusable
    // slots raise no card; the duplicate-order rule applies to every order and says it could
    // not run.
    let app = spawn_app(backend).await;
    let mut body = example("order-select");
    for (_, key, _) in RULES {
        body["prefetch"][*key] = spoil(&body["prefetch"][*key], Spoil::OperationOutcome);
    }
    let order = &mut body["context"]["draftOrders"]["entry"][0]["resource"];
    order["code"] = json!({"coding": [{"system": "http://loinc.org", "code": "24590-2", "display": "MR Brain WO contrast"}]});
    let cards = app.hook(SELECT, &body).await.cards();
    let not_checked: Vec<_> = cards
        .iter()
        .filter(|c| c["summary"].as_str().unwrap().contains("could not be checked"))
        .map(|c| c["source"]["topic"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(not_checked, ["duplicate-order"], "{cards:#?}");
}

async fn a_key_named_twice_is_400_and_a_body_that_is_not_json_is_415(backend: Backend) {
    let app = spawn_app(backend).await;
    let path = format!("/cds-services/{SELECT}");
    let body = example("order-select").to_string();
    let twice = body.replacen("\"patientId\"", "\"patientId\": \"someone-else\", \"patientId\"", 1);
    assert_ne!(twice, body);
    let token = app.token(&path);
    let issue = app.send(reqwest::Method::POST, &path, Some(&token), Some(twice.into_bytes())).await.outcome(400);
    assert!(issue["diagnostics"].as_str().unwrap().contains("\"patientId\" appears twice"), "{issue}");

    let token = app.token(&path);
    let resp = app.http.post(app.url(&path)).bearer_auth(token).header("content-type", "text/plain").body(body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let outcome: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(outcome["issue"][0]["code"], "not-supported");
    let last = app.audit().await.pop().unwrap();
    assert_eq!((last.action.as_str(), last.outcome.as_str()), ("cds.hook", "rejected"));
    assert!(last.detail.contains("unsupported-media-type"), "{}", last.detail);
    assert!(app.cards().await.is_empty(), "nothing was answered, so nothing is stored");
}

backend_tests!(
    every_rule_says_when_its_data_is_unusable_and_cannot_be_fetched,
    an_unusable_slot_is_fetched_from_the_registered_fhir_server_and_the_rule_runs,
    a_check_that_does_not_concern_the_order_stays_quiet,
    a_key_named_twice_is_400_and_a_body_that_is_not_json_is_415,
);
