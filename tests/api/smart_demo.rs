//! The built-in demo EHR (`[smart.demo_ehr]`): its launcher starts a real EHR launch of the app,
//! and a token from it reads the synthetic patient's studies through radsight's API.

use std::path::PathBuf;

use radsight::smart::DEFAULT_SCOPES;
use radsight_demo_ehr::{DEMO_CLIENT_ID, DEMO_PATIENT, s256};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, spawn_app_with};
use crate::smart_ehr::form;

const VERIFIER: &str = "demo-verifier-with-enough-entropy-0123456789abcdefghijklmnop";

fn query_of(location: &str) -> Vec<(String, String)> {
    url::Url::parse(location).unwrap().query_pairs().into_owned().collect()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> &'a str {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("{name} in {q:?}"))
}

async fn the_demo_ehr_launches_the_app_on_its_synthetic_patient(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.smart.demo_ehr.enabled = true;
        s.smart.app_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("smart-app/dist");
    })
    .await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = http.get(app.url("/demo-ehr/")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("form-action 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let launcher = page.text().await.unwrap();
    assert!(launcher.contains("Launch radsight") && launcher.contains("Alex Demo"), "{launcher}");

    // The launcher opens the app the way an EHR does: launch URL with iss and launch.
    let resp = http
        .post(app.url("/demo-ehr/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("patient", DEMO_PATIENT)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&app.url("/smart/launch?")), "{location}");
    let q = query_of(&location);
    let (iss, launch) = (param(&q, "iss").to_owned(), param(&q, "launch").to_owned());
    assert_eq!(iss, app.url("/demo-ehr/fhir"));
    let page = http.get(&location).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(DEMO_CLIENT_ID), "the launch page carries the demo client id");

    let config: Value =
        serde_json::from_slice(&http.get(format!("{iss}/.well-known/smart-configuration")).send().await.unwrap().bytes().await.unwrap())
            .unwrap();
    assert_eq!(config["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    let redirect = app.url("/smart/");
    let challenge = s256(VERIFIER);
    let authorize = format!(
        "{}?{}",
        config["authorization_endpoint"].as_str().unwrap(),
        form(&[
            ("response_type", "code"),
            ("client_id", DEMO_CLIENT_ID),
            ("redirect_uri", &redirect),
            ("launch", &launch),
            ("scope", DEFAULT_SCOPES),
            ("state", "demo-state"),
            ("aud", &iss),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256")
        ])
    );
    let resp = http.get(authorize).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let back = query_of(resp.headers()["location"].to_str().unwrap());
    assert_eq!(param(&back, "state"), "demo-state");
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", param(&back, "code")),
        ("redirect_uri", &redirect),
        ("client_id", DEMO_CLIENT_ID),
        ("code_verifier", VERIFIER),
    ]);
    let resp = http
        .post(config["token_endpoint"].as_str().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let token: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(token["patient"], DEMO_PATIENT);

    // radsight introspects the demo EHR's token and shows the synthetic studies.
    let resp = http
        .get(app.url(&format!("/api/patients/{DEMO_PATIENT}/studies")))
        .header("x-smart-iss", &iss)
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let studies: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let states: Vec<&str> = studies["studies"].as_array().unwrap().iter().map(|s| s["analysis"]["state"].as_str().unwrap()).collect();
    assert_eq!(states.len(), 2, "{studies}");
    assert!(states.contains(&"done") && states.contains(&"pending"), "{states:?}");

    // The analysed study's result was written back into the demo EHR's record (SMART Backend
    // Services with radsight's own key), where the clinician's own token finds it.
    crate::pacs_outputs::wait_for_deliveries(&app, "the demo result in the demo EHR", |r| {
        r.iter().any(|d| d.kind == "fhir-bundle" && d.state == "delivered")
    })
    .await;
    let resp = http
        .get(format!("{iss}/DiagnosticReport?subject=Patient/{DEMO_PATIENT}"))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let found: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let reports = found["entry"].as_array().unwrap();
    assert_eq!(reports.len(), 1, "{found}");
    assert_eq!(reports[0]["resource"]["identifier"][0]["system"], radsight::results::fhir::RESULT_SYSTEM);
    assert_eq!(reports[0]["resource"]["meta"]["security"][0]["code"], "AIAST");
}

backend_tests!(the_demo_ehr_launches_the_app_on_its_synthetic_patient);
