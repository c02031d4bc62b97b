//! Stored results as their readers see them: the JSON and FHIR views for registered clients,
//! the saliency picture behind a card's signed link, and the audit of every read and refusal.

use radsight::audit::{Action, AuditEvent, AuditLog, Outcome};
use radsight::results::store::{Artefact, ArtefactKind, NewResult, StoredResult};
use radsight::results::{Finding, ModelIdentity};
use serde_json::json;

use crate::helpers::{Backend, PATIENT, TestApp, example, run_python, spawn_app};

const STUDY: &str = "1.2.826.0.1.3680043.8.498.77";

/// A PNG signature followed by a marker, enough to check bytes pass through unchanged.
fn picture(marker: &str) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(marker.as_bytes());
    bytes
}

/// Stores a done result for `STUDY` the way the job worker does: with its audit entry.
async fn store_result(app: &TestApp) -> String {
    app.seed_study(STUDY, "DX", "chest", 2, None).await;
    let id = uuid::Uuid::new_v4().to_string();
    let result = NewResult {
        id: id.clone(),
        study_uid: STUDY.into(),
        job_id: None,
        model: ModelIdentity { id: "radsight-phantom-cxr".into(), version: "1.0.0".into(), weights_sha256: "cd".repeat(32) },
        model_card: json!({"id": "radsight-phantom-cxr", "version": "1.0.0", "intended_use": "Demonstration only; not for clinical use."}),
        findings: vec![
            Finding {
                code: "nodule".into(),
                display: "Pulmonary nodule".into(),
                probability: 0.91,
                threshold: 0.5,
                standard: None,
                area: None,
            },
            Finding {
                code: "consolidation".into(),
                display: "Consolidation".into(),
                probability: 0.08,
                threshold: 0.5,
                standard: None,
                area: None,
            },
        ],
        sop_instance_uid: Some("1.2.3.4.5".into()),
        sop_class_uid: Some("1.2.840.10008.5.1.4.1.1.1.1".into()),
        series_uid: Some("1.2.3.4".into()),
        input_sha256: "ef".repeat(32),
        saliency_method: "grad-cam".into(),
        explanation: json!({"peak": {"x": 40, "y": 52}, "bbox": {"x": 30, "y": 40, "width": 20, "height": 22}}),
        deletion_auc: Some(0.21),
        random_deletion_auc: Some(0.55),
        runtime_ms: 37,
        artefacts: vec![
            Artefact { kind: ArtefactKind::SaliencyPng, width: 64, height: 64, bytes: picture("overlay") },
            Artefact { kind: ArtefactKind::ImagePng, width: 64, height: 64, bytes: picture("image") },
        ],
        body_part: None,
    };
    let event = AuditEvent::new(Action::ModelInference, Outcome::Success).entity("AnalysisResult", id.clone());
    AuditLog::default().record_with(&app.db, event, Some(Box::new(StoredResult(result)))).await.unwrap();
    id
}

async fn get_bytes(app: &TestApp, url: &str) -> (u16, String, Vec<u8>) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    let kind = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let _ = app;
    (status, kind, resp.bytes().await.unwrap().to_vec())
}

async fn a_card_links_the_saliency_picture_by_a_signed_url(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = store_result(&app).await;
    let cards = app.hook("radsight-patient-view", &example("patient-view")).await.cards();
    let card = cards.iter().find(|c| c["summary"].as_str().unwrap().contains("Pulmonary nodule")).expect("a finding card");
    assert_eq!(card["indicator"], "warning");
    let detail = card["detail"].as_str().unwrap();
    assert!(detail.contains("grad-cam") && detail.contains("0.210") && detail.contains("Demonstration only"), "{detail}");
    let smart = card["links"].as_array().unwrap().iter().find(|l| l["type"] == "smart").unwrap();
    let context: serde_json::Value = serde_json::from_str(smart["appContext"].as_str().unwrap()).unwrap();
    assert_eq!(context["resultId"], id.as_str());
    let link = card["links"].as_array().unwrap().iter().find(|l| l["type"] == "absolute").unwrap()["url"].as_str().unwrap().to_owned();
    assert!(link.starts_with(&app.url(&format!("/results/{id}/saliency.png?exp="))), "{link}");

    let (status, kind, bytes) = get_bytes(&app, &link).await;
    assert_eq!((status, kind.as_str()), (200, "image/png"));
    assert_eq!(bytes, picture("overlay"));

    // The same path with a forged signature, or none, is refused and the refusal audited.
    let forged = format!("{}AAAA", &link[..link.len() - 4]);
    assert_eq!(get_bytes(&app, &forged).await.0, 401);
    let bare = app.url(&format!("/results/{id}/saliency.png"));
    assert_eq!(get_bytes(&app, &bare).await.0, 401);
    let rejects = app.audit_of("auth.reject").await;
    let reasons: Vec<String> = rejects
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(&e.detail).unwrap()["reason"].as_str().unwrap().to_owned())
        .collect();
    assert!(reasons.contains(&"link-bad-signature".to_owned()) && reasons.contains(&"link-unsigned".to_owned()), "{reasons:?}");
    // The signed read is a patient-data read in the trail.
    let reads = app.audit_of("patient.read").await;
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].patient_ref.as_deref(), Some(format!("Patient/{PATIENT}").as_str()));
}

async fn a_registered_client_reads_the_result_and_its_fhir_bundle(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = store_result(&app).await;
    let path = format!("/results/{id}");
    let reply = app.send(reqwest::Method::GET, &path, Some(&app.token(&path)), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["cache-control"], "no-store");
    let body = reply.json();
    assert_eq!(body["findings"][0]["code"], "nodule");
    assert_eq!(body["model"]["weightsSha256"], "cd".repeat(32));
    assert_eq!(body["faithfulness"]["deletionAuc"], 0.21);
    assert_eq!(body["saliency"]["explanation"]["peak"]["x"], 40);

    // A token minted for another URL is not accepted here.
    let wrong = app.send(reqwest::Method::GET, &path, Some(&app.token("/results/other")), None).await;
    assert_eq!(wrong.status, 401);

    let fhir_path = format!("/results/{id}/fhir");
    let reply = app.send(reqwest::Method::GET, &fhir_path, Some(&app.token(&fhir_path)), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (ok, out) = run_python("validate_bundle.py", &reply.text);
    assert!(ok, "the Bundle does not validate as FHIR R4B: {out}");
    assert_eq!(out.trim(), "Device 1\nDiagnosticReport 1\nObservation 2\nProvenance 1");
    let bundle = reply.json();
    let report = &bundle["entry"][0]["resource"];
    assert_eq!(report["resourceType"], "DiagnosticReport");
    assert_eq!(report["subject"]["reference"], format!("Patient/{PATIENT}"));
    assert_eq!(report["imagingStudy"][0]["identifier"]["value"], format!("urn:oid:{STUDY}"));
    let provenance = bundle["entry"].as_array().unwrap().iter().find(|e| e["resource"]["resourceType"] == "Provenance").unwrap();
    assert_eq!(provenance["resource"]["target"][0]["reference"], bundle["entry"][0]["fullUrl"]);

    let unknown = format!("/results/{}", uuid::Uuid::new_v4());
    app.send(reqwest::Method::GET, &unknown, Some(&app.token(&unknown)), None).await.outcome(404);
}

backend_tests!(a_card_links_the_saliency_picture_by_a_signed_url, a_registered_client_reads_the_result_and_its_fhir_bundle);
