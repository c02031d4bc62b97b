//! Response headers that protect browsers: `nosniff` on every answer, the SMART app framable
//! only by radsight and its registered EHRs, no cross-origin access to the app's API, and error
//! pages that answer with error statuses.

use crate::helpers::{Backend, spawn_app};
use crate::smart_ehr::spawn_smart_app;

async fn every_answer_says_nosniff(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in ["/healthz", "/no-such-endpoint", "/cds-services", "/smart/error?reason=access-denied", "/api/patients/p1/studies"] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.headers().get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"), "{path}");
    }
}

async fn launch_error_pages_answer_with_error_statuses(backend: Backend) {
    let app = spawn_app(backend).await;
    for (reason, status) in
        [("access-denied", 403), ("invalid-state", 400), ("session-ended", 401), ("unreachable-iss", 502), ("anything-else", 500)]
    {
        let resp = app.http.get(app.url(&format!("/smart/error?reason={reason}"))).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{reason}");
        assert!(resp.text().await.unwrap().contains(&format!("id=\"error-code\">{reason}<")), "{reason}");
    }
}

async fn only_radsight_and_registered_ehrs_may_frame_the_app(backend: Backend) {
    let (app, ehr) = spawn_smart_app(backend).await;
    let resp = app.http.get(app.url(&format!("/smart/launch?iss={}&launch=abc", ehr.sim.iss()))).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_owned();
    let frame_ancestors = csp.split(';').map(str::trim).find(|d| d.starts_with("frame-ancestors")).expect("a frame-ancestors directive");
    let allowed: Vec<&str> = frame_ancestors.split_whitespace().skip(1).collect();
    assert!(allowed.contains(&"'self'") && allowed.contains(&ehr.address.as_str()), "{frame_ancestors}");
    assert!(!allowed.contains(&"*"), "{frame_ancestors}");
}

async fn the_app_api_answers_no_other_origin_while_hooks_do(backend: Backend) {
    let app = spawn_app(backend).await;
    let preflight = |path: &str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "https://elsewhere.example")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let api = preflight("/api/patients/p1/studies").await.unwrap();
    assert!(api.headers().get("access-control-allow-origin").is_none(), "{:?}", api.headers());
    let hooks = preflight("/cds-services").await.unwrap();
    assert_eq!(hooks.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some("https://elsewhere.example"));
}

backend_tests!(
    every_answer_says_nosniff,
    launch_error_pages_answer_with_error_statuses,
    only_radsight_and_registered_ehrs_may_frame_the_app,
    the_app_api_answers_no_other_origin_while_hooks_do,
);
