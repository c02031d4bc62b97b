//! Prefetch: used as given; missing keys fetched only from a registered fhirServer with the
//! client's token; 412 when the data can be had neither way.

use serde_json::{Value, json};

use crate::fhir_fixture::ACCESS_TOKEN;
use crate::helpers::{Backend, PATIENT, TestApp, example, spawn_app, topics};

pub(crate) const SELECT: &str = "radsight-imaging-order-select";

pub(crate) fn without_prefetch(server: &str, token: &str) -> Value {
    let mut body = example("order-select");
    body.as_object_mut().unwrap().remove("prefetch");
    body["fhirServer"] = json!(server);
    body["fhirAuthorization"] = json!({"access_token": token, "token_type": "Bearer", "expires_in": 300,
        "scope": "patient/*.read", "subject": "radsight"});
    body
}

/// Loads the example's prefetched resources into the FHIR fixture, as the EHR's own data.
pub(crate) fn load_ehr(app: &TestApp) {
    let body = example("order-select");
    for (_, value) in body["prefetch"].as_object().unwrap() {
        match value["resourceType"].as_str() {
            Some("Bundle") => value["entry"].as_array().unwrap().iter().for_each(|e| app.fhir.add(e["resource"].clone())),
            Some(_) => app.fhir.add(value.clone()),
            None => {}
        }
    }
}

async fn full_prefetch_means_no_call_to_the_fhir_server(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut body = example("order-select");
    body["fhirServer"] = json!(app.fhir.fhir_base());
    body["fhirAuthorization"] =
        json!({"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read", "subject": "radsight"});
    app.hook(SELECT, &body).await.cards();
    assert!(app.fhir.requests().is_empty(), "{:?}", app.fhir.requests());
}

async fn missing_prefetch_is_fetched_from_the_registered_fhir_server(backend: Backend) {
    let app = spawn_app(backend).await;
    load_ehr(&app);
    let body = without_prefetch(&app.fhir.fhir_base(), ACCESS_TOKEN);
    let cards = app.hook(SELECT, &body).await.cards();
    // The same risks are found from the fetched data as from the prefetched copy.
    assert_eq!(topics(&cards), ["contrast-allergy", "duplicate-order", "renal-function"]);
    let requests = app.fhir.requests();
    assert_eq!(requests.len(), 7, "{requests:?}");
    assert!(requests.contains(&format!("/fhir/Patient/{PATIENT}")));
    assert!(requests.iter().any(|r| r.starts_with(&format!("/fhir/AllergyIntolerance?patient={PATIENT}"))));
    // Each read is in the audit trail, without the token.
    let reads: Vec<_> = app.audit().await.into_iter().filter(|e| e.action == "fhir.read").collect();
    assert_eq!(reads.len(), 7);
    assert!(reads.iter().all(|e| e.outcome == "success" && !e.detail.contains(ACCESS_TOKEN)));
}

async fn an_unregistered_fhir_server_is_refused_and_never_called(backend: Backend) {
    let app = spawn_app(backend).await;
    let rogue = format!("{}/not-registered/fhir", app.fhir.address);
    let reply = app.hook(SELECT, &without_prefetch(&rogue, ACCESS_TOKEN)).await;
    let issue = reply.outcome(403);
    assert_eq!(issue["code"], "forbidden");
    assert!(app.fhir.requests().is_empty(), "radsight called {:?}", app.fhir.requests());
    let last = app.audit().await.pop().unwrap();
    assert_eq!((last.action.as_str(), last.outcome.as_str()), ("cds.hook", "rejected"));
    assert!(last.detail.contains("fhir-server-not-registered"));
}

async fn missing_prefetch_without_authorization_is_412(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut body = example("order-select");
    body["prefetch"].as_object_mut().unwrap().remove("allergies");
    let issue = app.hook(SELECT, &body).await.outcome(412);
    assert!(issue["diagnostics"].as_str().unwrap().contains("allergies"), "{issue}");
}

async fn a_fhir_server_that_refuses_the_token_is_412(backend: Backend) {
    let app = spawn_app(backend).await;
    load_ehr(&app);
    let issue = app.hook(SELECT, &without_prefetch(&app.fhir.fhir_base(), "expired-token")).await.outcome(412);
    assert!(issue["diagnostics"].as_str().unwrap().contains("401"), "{issue}");
    let failed: Vec<_> = app.audit().await.into_iter().filter(|e| e.action == "fhir.read" && e.outcome == "error").collect();
    assert_eq!(failed.len(), 7);
}

async fn a_null_prefetch_value_means_no_data(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut body = example("order-select");
    for key in ["allergies", "renalFunction", "activeImagingOrders"] {
        body["prefetch"][key] = Value::Null;
    }
    assert_eq!(app.hook(SELECT, &body).await.json(), json!({"cards": []}));
    assert!(app.fhir.requests().is_empty());
}

backend_tests!(
    full_prefetch_means_no_call_to_the_fhir_server,
    missing_prefetch_is_fetched_from_the_registered_fhir_server,
    an_unregistered_fhir_server_is_refused_and_never_called,
    missing_prefetch_without_authorization_is_412,
    a_fhir_server_that_refuses_the_token_is_412,
    a_null_prefetch_value_means_no_data,
);
