//! Jobs against a real PACS (Orthanc with DICOMweb): an ORU over MLLP for a stored study leads,
//! with no other action, to its retrieval (with the PACS's basic-auth credentials); a study
//! the PACS does not have is retried and then dead; an oversize study, and credentials the
//! PACS refuses, end the job without retrying.

use serde_json::Value;

use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::hl7::{MllpClient, oru};
use crate::pacs::{SeriesInfo, dicomweb_root, fresh_uid, orthanc_credentials, store_series, store_study};
use radsight::configuration::{PacsAuthKind, PacsCredentials};
use radsight::dicomweb::SelectionRules;

pub(crate) async fn app_with_pacs(backend: Backend, max_study_bytes: usize) -> TestApp {
    app_with_pacs_password(backend, max_study_bytes, &orthanc_credentials().1).await
}

async fn app_with_pacs_password(backend: Backend, max_study_bytes: usize, password: &str) -> TestApp {
    app_with_pacs_config(backend, max_study_bytes, password, SelectionRules::default()).await
}

/// A PACS-connected app with further settings.
pub(crate) async fn app_with_pacs_configured(
    backend: Backend,
    max_study_bytes: usize,
    more: impl FnOnce(&mut radsight::configuration::Settings),
) -> TestApp {
    app_with_pacs_settings(backend, max_study_bytes, &orthanc_credentials().1, SelectionRules::default(), more).await
}

async fn app_with_pacs_config(backend: Backend, max_study_bytes: usize, password: &str, select: SelectionRules) -> TestApp {
    app_with_pacs_settings(backend, max_study_bytes, password, select, |_| {}).await
}

async fn app_with_pacs_settings(
    backend: Backend,
    max_study_bytes: usize,
    password: &str,
    select: SelectionRules,
    more: impl FnOnce(&mut radsight::configuration::Settings),
) -> TestApp {
    let secret = pacs_secret(password);
    let written = secret.clone();
    let app = spawn_app_with(backend, move |s| {
        use_test_pacs(s, max_study_bytes, secret);
        s.dicomweb.select = select;
        more(s);
    })
    .await;
    // Secrets are read once at start, so the file can go now.
    std::fs::remove_file(written).unwrap();
    app
}

/// The test Orthanc's password in a file, for [`use_test_pacs`]; remove it once the app started.
pub(crate) fn pacs_secret(password: &str) -> std::path::PathBuf {
    let secret = std::env::temp_dir().join(format!("radsight-test-pacs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&secret, format!("{password}\n")).unwrap();
    secret
}

/// Points the settings at the test Orthanc's DICOMweb root, with its credentials in `secret`.
pub(crate) fn use_test_pacs(s: &mut radsight::configuration::Settings, max_study_bytes: usize, secret: std::path::PathBuf) {
    s.dicomweb.default_endpoint = dicomweb_root();
    s.dicomweb.endpoints = vec![dicomweb_root()];
    s.dicomweb.max_study_bytes = max_study_bytes;
    s.dicomweb.credentials = vec![PacsCredentials {
        url: dicomweb_root(),
        auth: PacsAuthKind::Basic,
        username: Some(orthanc_credentials().0),
        secret_file: Some(secret),
    }];
}

fn fetch_details(entries: &[radsight::store::entities::audit_entry::Model]) -> Vec<Value> {
    entries.iter().map(|e| serde_json::from_str(&e.detail).unwrap()).collect()
}

async fn a_result_for_a_study_in_the_pacs_leads_to_its_retrieval(backend: Backend) {
    let app = app_with_pacs(backend, 10 * 1024 * 1024).await;
    let uid = store_study("p-pacs", 2, 16).await;
    let mut client = MllpClient::connect(&app).await;
    assert_eq!(client.send(&oru("W-1", "p-pacs", &uid, "F")).await.code(), "AA");

    let jobs = app.wait_for_jobs("the study to be fetched", |j| j.len() == 1 && j[0].state == "succeeded").await;
    // Secondary captures are outside the shipped model's intended use: decoded, then no model.
    assert_eq!((jobs[0].stage.as_deref(), jobs[0].attempts), (Some("not-applicable"), 1));
    let fetches = app.audit_of("dicomweb.fetch").await;
    let details = fetch_details(&fetches);
    assert_eq!(details.len(), 2, "{details:?}");
    assert_eq!((details[0]["operation"].as_str(), details[0]["result"]["instances"].as_i64()), (Some("qido-rs"), Some(2)));
    assert_eq!((details[1]["operation"].as_str(), details[1]["result"]["instances"].as_i64()), (Some("wado-rs"), Some(2)));
    assert!(details[1]["result"]["bytes"].as_i64().unwrap() > 2 * 256);
    assert!(fetches.iter().all(|e| e.patient_ref.as_deref() == Some("Patient/p-pacs") && e.outcome == "success"));
    // The trail shows each step in order, after the service's start.
    let steps: Vec<String> = app.audit().await.into_iter().map(|e| e.action).collect();
    assert_eq!(
        steps,
        ["system.start", "hl7.message", "job.queued", "job.started", "dicomweb.fetch", "dicomweb.fetch", "dicom.decode", "job.succeeded"]
    );
}

async fn a_study_the_pacs_does_not_have_is_retried_then_dead(backend: Backend) {
    let app = app_with_pacs(backend, 10 * 1024 * 1024).await;
    let mut client = MllpClient::connect(&app).await;
    assert_eq!(client.send(&oru("W-2", "p-pacs", &fresh_uid(), "F")).await.code(), "AA");
    let jobs = app.wait_for_jobs("the job to die", |j| j.len() == 1 && j[0].state == "dead").await;
    assert_eq!((jobs[0].attempts, jobs[0].last_error.as_deref()), (3, Some("study-not-found")));
    assert_eq!(app.audit_of("job.failed").await.len(), 3);
}

async fn an_oversize_study_is_refused_without_retrying(backend: Backend) {
    let app = app_with_pacs(backend, 20_000).await;
    let uid = store_study("p-big", 2, 128).await; // two 16 KiB instances
    let mut client = MllpClient::connect(&app).await;
    assert_eq!(client.send(&oru("W-3", "p-big", &uid, "F")).await.code(), "AA");
    let jobs = app.wait_for_jobs("the job to die", |j| j.len() == 1 && j[0].state == "dead").await;
    assert_eq!((jobs[0].attempts, jobs[0].last_error.as_deref()), (1, Some("study-too-large")));
    let details = fetch_details(&app.audit_of("dicomweb.fetch").await);
    assert_eq!(details.last().unwrap()["reason"], "study-too-large");
}

async fn credentials_the_pacs_refuses_end_the_job_without_retrying(backend: Backend) {
    let app = app_with_pacs_password(backend, 10 * 1024 * 1024, "wrong-password").await;
    let uid = store_study("p-auth", 1, 16).await;
    let mut client = MllpClient::connect(&app).await;
    assert_eq!(client.send(&oru("W-4", "p-auth", &uid, "F")).await.code(), "AA");
    let jobs = app.wait_for_jobs("the job to die", |j| j.len() == 1 && j[0].state == "dead").await;
    assert_eq!((jobs[0].attempts, jobs[0].last_error.as_deref()), (1, Some("pacs-auth-refused")));
}

async fn selection_rules_pick_which_instances_are_retrieved(backend: Backend) {
    let select = SelectionRules { modalities: vec!["DX".into()], series_description_contains: vec!["pa".into()], ..Default::default() };
    let app = app_with_pacs_config(backend, 10 * 1024 * 1024, &orthanc_credentials().1, select).await;
    let uid = fresh_uid();
    store_series("p-sel", &uid, &SeriesInfo { modality: "DX", description: "Chest PA" }, 1, 16).await;
    store_series("p-sel", &uid, &SeriesInfo { modality: "DX", description: "Chest lateral" }, 1, 16).await;
    store_series("p-sel", &uid, &SeriesInfo { modality: "OT", description: "PA screenshot" }, 2, 16).await;
    // A study with nothing that matches is not retried.
    let other = fresh_uid();
    store_series("p-sel", &other, &SeriesInfo { modality: "OT", description: "report" }, 1, 16).await;

    let mut client = MllpClient::connect(&app).await;
    assert_eq!(client.send(&oru("W-5", "p-sel", &uid, "F")).await.code(), "AA");
    assert_eq!(client.send(&oru("W-6", "p-sel", &other, "F")).await.code(), "AA");
    let jobs =
        app.wait_for_jobs("both jobs to end", |j| j.len() == 2 && j.iter().all(|j| j.state == "succeeded" || j.state == "dead")).await;
    let by_uid = |u: &str| jobs.iter().find(|j| j.study_uid == u).unwrap().clone();
    assert_eq!((by_uid(&uid).state.as_str(), by_uid(&uid).stage.as_deref()), ("succeeded", Some("not-applicable")));
    assert_eq!(
        (by_uid(&other).state.as_str(), by_uid(&other).last_error.as_deref(), by_uid(&other).attempts),
        ("dead", Some("no-instance-selected"), 1)
    );
    let details = fetch_details(&app.audit_of("dicomweb.fetch").await);
    let wado: Vec<&Value> = details.iter().filter(|d| d["operation"] == "wado-rs" && d["result"].is_object()).collect();
    assert_eq!(wado.len(), 1, "{details:?}");
    assert_eq!(wado[0]["result"]["instances"], 1, "only the DX PA instance of the four is retrieved");
}

/// Retrieves one study with `transfer_syntax` asked first; returns what the WADO-RS entry says
/// was asked.
async fn retrieval_asked(backend: Backend, transfer_syntax: &str, tag: &str) -> Value {
    let ts = transfer_syntax.to_owned();
    let app = app_with_pacs_configured(backend, 10 * 1024 * 1024, move |s| s.dicomweb.transfer_syntax = ts).await;
    let uid = store_study(&format!("p-ts-{tag}"), 1, 16).await;
    let mut client = MllpClient::connect(&app).await;
    assert_eq!(client.send(&oru(&format!("TS-{tag}"), &format!("p-ts-{tag}"), &uid, "F")).await.code(), "AA");
    app.wait_for_jobs("the study to be fetched", |j| j.len() == 1 && j[0].state == "succeeded").await;
    let details = fetch_details(&app.audit_of("dicomweb.fetch").await);
    let wado = details.iter().find(|d| d["operation"] == "wado-rs").expect("a WADO-RS entry");
    assert_eq!(wado["result"]["instances"], 1, "{wado}");
    wado["result"]["transfer_syntax"].clone()
}

async fn wado_asks_for_explicit_little_endian_or_as_stored_and_falls_back_when_the_pacs_cannot(backend: Backend) {
    // Orthanc transcodes, so the default request (Explicit VR Little Endian) is answered as asked.
    assert_eq!(retrieval_asked(backend, "1.2.840.10008.1.2.1", "le").await, "1.2.840.10008.1.2.1");
    // A site that wants the stored syntax asks for `*`.
    assert_eq!(retrieval_asked(backend, "*", "stored").await, "*");
    // A syntax the PACS cannot produce (Orthanc answers 400) falls back to the stored one.
    assert_eq!(retrieval_asked(backend, "1.2.840.10008.1.2.4.999", "none").await, "*");
}

backend_tests!(
    wado_asks_for_explicit_little_endian_or_as_stored_and_falls_back_when_the_pacs_cannot,
    selection_rules_pick_which_instances_are_retrieved,
    credentials_the_pacs_refuses_end_the_job_without_retrying,
    a_result_for_a_study_in_the_pacs_leads_to_its_retrieval,
    a_study_the_pacs_does_not_have_is_retried_then_dead,
    an_oversize_study_is_refused_without_retrying,
);
