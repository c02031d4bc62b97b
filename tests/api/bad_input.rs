//! Bad input gets a clear answer in the protocol's terms (status + OperationOutcome), never a
//! crash, and every refusal is audited.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, example, spawn_app, spawn_app_with};

const SELECT: &str = "/cds-services/radsight-imaging-order-select";

async fn last_rejection(app: &TestApp) -> Value {
    let last = app.audit().await.pop().unwrap();
    assert_eq!((last.action.as_str(), last.outcome.as_str()), ("cds.hook", "rejected"), "{last:?}");
    serde_json::from_str(&last.detail).unwrap()
}

async fn malformed_json_is_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.token(SELECT);
    let reply = app.send(reqwest::Method::POST, SELECT, Some(&token), Some(b"{\"hook\": \"order-select\",".to_vec())).await;
    assert_eq!(reply.headers["content-type"], "application/fhir+json");
    assert_eq!(reply.outcome(400)["code"], "structure");
    assert_eq!(last_rejection(&app).await["reason"], "malformed-json");
}

async fn a_body_over_the_limit_is_413(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.server.max_body_bytes = 64 * 1024).await;
    let mut body = example("order-select");
    body["padding"] = json!("x".repeat(100 * 1024));
    app.post(SELECT, &body).await.outcome(413);
    assert_eq!(last_rejection(&app).await["reason"], "payload-too-large");
}

async fn an_unknown_service_is_404(backend: Backend) {
    let app = spawn_app(backend).await;
    app.post("/cds-services/no-such-service", &example("order-select")).await.outcome(404);
    assert_eq!(last_rejection(&app).await["reason"], "unknown-service");
}

async fn a_hook_that_does_not_match_the_service_is_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let issue = app.post("/cds-services/radsight-patient-view", &example("order-select")).await.outcome(400);
    assert!(issue["diagnostics"].as_str().unwrap().contains("patient-view"), "{issue}");
    assert_eq!(last_rejection(&app).await["reason"], "hook-mismatch");
}

async fn missing_or_mistyped_context_fields_are_400_naming_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("patientId", Value::Null, "context.patientId"),
        ("userId", json!(7), "context.userId"),
        ("selections", json!({}), "context.selections"),
        ("draftOrders", json!({"resourceType": "ServiceRequest", "status": "draft"}), "context.draftOrders"),
        ("draftOrders", json!("a bundle"), "context.draftOrders"),
    ];
    for (key, value, field) in cases {
        let mut body = example("order-select");
        if value.is_null() {
            body["context"].as_object_mut().unwrap().remove(key);
        } else {
            body["context"][key] = value;
        }
        let issue = app.post(SELECT, &body).await.outcome(400);
        assert_eq!(issue["expression"][0], field, "{issue}");
        assert_eq!(last_rejection(&app).await["reason"], "invalid-request");
    }
    let mut body = example("order-select");
    body["hookInstance"] = json!("not-a-uuid");
    assert_eq!(app.post(SELECT, &body).await.outcome(400)["expression"][0], "hookInstance");
}

async fn an_invalid_draft_order_resource_is_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut body = example("order-select");
    body["context"]["draftOrders"]["entry"][0]["resource"]["status"] = json!("not-a-status");
    let issue = app.post(SELECT, &body).await.outcome(400);
    assert!(issue["diagnostics"].as_str().unwrap().contains("ServiceRequest"), "{issue}");
}

async fn an_invalid_prefetch_resource_is_400_naming_the_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut body = example("order-select");
    body["prefetch"]["renalFunction"] =
        json!({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Observation", "status": "final"}}]});
    assert_eq!(app.post(SELECT, &body).await.outcome(400)["expression"][0], "prefetch.renalFunction");
}

backend_tests!(
    malformed_json_is_400,
    a_body_over_the_limit_is_413,
    an_unknown_service_is_404,
    a_hook_that_does_not_match_the_service_is_400,
    missing_or_mistyped_context_fields_are_400_naming_the_field,
    an_invalid_draft_order_resource_is_400,
    an_invalid_prefetch_resource_is_400_naming_the_key,
);
