use crate::helpers::{Backend, spawn_app};

async fn discovery_lists_the_three_imaging_services_with_prefetch_templates(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.token("/cds-services");
    let reply = app.discovery(Some(&token)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    let services = body["services"].as_array().unwrap();
    let ids: Vec<(&str, &str)> = services.iter().map(|s| (s["id"].as_str().unwrap(), s["hook"].as_str().unwrap())).collect();
    assert_eq!(
        ids,
        [
            ("radsight-imaging-order-select", "order-select"),
            ("radsight-imaging-order-sign", "order-sign"),
            ("radsight-patient-view", "patient-view")
        ]
    );
    for s in services {
        assert!(s["title"].is_string() && s["description"].is_string());
        assert_eq!(s["prefetch"]["patient"], "Patient/{{context.patientId}}");
        assert!(s["prefetch"]["imagingStudies"].as_str().unwrap().starts_with("ImagingStudy?patient={{context.patientId}}"));
    }
    assert!(services[0]["prefetch"]["allergies"].is_string());
    assert!(services[0]["prefetch"]["renalFunction"].as_str().unwrap().contains("62238-1"));
    // Discovery itself is audited.
    assert_eq!(app.audit().await.last().unwrap().action, "cds.discovery");
}

async fn cors_preflight_allows_browser_clients(backend: Backend) {
    let app = spawn_app(backend).await;
    let resp = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/cds-services/radsight-patient-view"))
        .header("origin", "https://ehr-ui.example.org")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let allowed = resp.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{allowed}");
    let methods = resp.headers()["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST") && methods.contains("GET"), "{methods}");
}

async fn health_and_readiness_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.send(reqwest::Method::GET, "/healthz", None, None).await.status, 200);
    let ready = app.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
}

async fn unknown_paths_and_methods_get_an_operation_outcome(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.send(reqwest::Method::GET, "/cds-services/radsight-patient-view", None, None).await;
    assert_eq!(reply.outcome(404)["code"], "not-found");
    app.send(reqwest::Method::GET, "/nothing-here", None, None).await.outcome(404);
}

backend_tests!(
    unknown_paths_and_methods_get_an_operation_outcome,
    discovery_lists_the_three_imaging_services_with_prefetch_templates,
    cors_preflight_allows_browser_clients,
    health_and_readiness_answer,
);
