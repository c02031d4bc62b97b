//! The production build (without the `demo` feature) contains no demo EHR: `/demo-ehr/`
//! answers 404, and a configuration that asks for the demo is refused at start instead of
//! being silently ignored. The test command runs this file without `--features demo`; with
//! the feature it compiles to nothing.
#![cfg(not(feature = "demo"))]

use radsight::configuration::Settings;
use radsight::startup::Application;

fn settings(dir: &std::path::Path) -> Settings {
    let mut s = Settings::default();
    s.server.port = 0;
    s.server.workers = 1;
    s.hl7.enabled = false;
    s.jobs.workers = 0;
    s.database.url = format!("sqlite://{}?mode=rwc", dir.join("radsight.db").display());
    s.audit.checkpoint_dir = dir.join("checkpoints");
    s.audit.checkpoint_key_file = dir.join("checkpoint.key");
    s
}

#[tokio::test]
async fn the_production_build_serves_no_demo_ehr() {
    let dir = tempfile::tempdir().unwrap();
    let app = Application::build(settings(dir.path())).await.expect("the service starts on its defaults");
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    for path in ["/demo-ehr/", "/demo-ehr/fhir/.well-known/smart-configuration"] {
        let resp = client.get(format!("http://127.0.0.1:{port}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::NOT_FOUND, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        assert_eq!(body["resourceType"], "OperationOutcome");
    }
    let health = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK, "the service itself answers");
}

#[tokio::test]
async fn asking_a_production_build_for_the_demo_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.smart.demo_ehr.enabled = true;
    let err = Application::build(s).await.err().expect("start-up refuses the demo setting");
    assert!(format!("{err:#}").contains("--features demo"), "{err:#}");
}
