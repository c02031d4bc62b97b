//! The SMART app end to end in headless Chromium (tests/browser/smart_app.mjs): launched from
//! the fixture EHR's launcher page with PKCE, it lists the patient's studies, draws a result
//! with its overlay (the canvas changes when the overlay is toggled), records feedback, opens
//! the study a card's appContext names, says whether the result is filed in the EHR's record
//! (asking the EHR), and shows clear pages for an unknown or unreachable
//! EHR, a denied consent, a forged state and a launch without a patient. Screenshots go to a
//! folder the test prints.

use std::process::Command;

use radsight::store::entities::{audit_entry, result_feedback};
use sea_orm::EntityTrait;
use serde_json::json;

use crate::helpers::{Backend, PATIENT, example};
use crate::smart_ehr::{spawn_smart_app, unreachable_ehr};
use crate::synthetic::{SyntheticStudy, insert_synthetic};

/// Files a DiagnosticReport for `result_id` in the EHR's record with a SMART Backend Services
/// token of a client registered here.
async fn file_in_record(sim: &radsight_demo_ehr::EhrSim, result_id: &str) {
    let key = radsight::keys::ClientKey::generate(jsonwebtoken::Algorithm::ES384).unwrap();
    sim.register_backend_client(radsight_demo_ehr::BackendClient {
        client_id: "filer".into(),
        jwks_url: None,
        jwks: Some(serde_json::to_value(key.jwks()).unwrap()),
        scopes: vec!["system/DiagnosticReport.c".into()],
    });
    let assertion = crate::smart_ehr::backend_assertion(sim, &key, "filer");
    let (status, token) = crate::smart_ehr::backend_token(sim, &assertion, "system/DiagnosticReport.c").await;
    assert_eq!(status, 200, "{token}");
    let http = reqwest::Client::new();
    let report = json!({
        "resourceType": "DiagnosticReport",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "AIAST"}]},
        "identifier": [{"system": radsight::results::fhir::RESULT_SYSTEM, "value": result_id}],
        "status": "final",
        "code": {"text": "AI analysis of imaging study"},
        "subject": {"reference": format!("Patient/{PATIENT}")},
        "issued": "2026-12-03T08:00:00Z",
    });
    let resp = http
        .post(format!("{}/DiagnosticReport", sim.fhir_base()))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .header("content-type", "application/fhir+json")
        .body(report.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
}

async fn the_app_launches_shows_the_overlay_takes_feedback_and_follows_deep_links(backend: Backend) {
    let (app, ehr) = spawn_smart_app(backend).await;
    let patient = format!("Patient/{PATIENT}");
    let seed = |uid: &'static str, status: Option<&'static str>, description: &'static str| {
        let (db, patient) = (app.db.clone(), patient.clone());
        async move { insert_synthetic(&db, &SyntheticStudy { study_uid: uid, patient_ref: &patient, status, description }).await.unwrap() }
    };
    let done = seed("1.2.826.0.7.1", Some("done"), "Chest X-ray PA").await.unwrap();
    let second = seed("1.2.826.0.7.2", Some("done"), "Chest X-ray follow-up").await.unwrap();
    seed("1.2.826.0.7.3", Some("pending"), "Chest X-ray (today)").await;
    seed("1.2.826.0.7.4", Some("failed"), "Chest X-ray (portable)").await;
    // The deep-linked result was filed in the EHR's record (as radsight's write-back does, here
    // straight through the EHR's backend-services API); the first one was not.
    file_in_record(&ehr.sim, &second).await;
    // A card showed the result before the clinician opened the app.
    app.hook("radsight-patient-view", &example("patient-view")).await.cards();

    let shots = match std::env::var("RADSIGHT_TEST_ARTIFACTS") {
        Ok(dir) => std::path::PathBuf::from(dir).join(format!("smart-app-{backend:?}")),
        Err(_) => std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("smart-app-screenshots-{backend:?}")),
    };
    std::fs::create_dir_all(&shots).unwrap();
    println!("SMART app screenshots: {}", shots.display());
    let script = format!("{}/tests/browser/smart_app.mjs", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("node")
        .args([&script, &app.address, &ehr.address, &done, "1.2.826.0.7.2", &second, &unreachable_ehr(), shots.to_str().unwrap()])
        .output()
        .expect("node runs (scripts/test.sh installs the browser test dependencies)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("studies: done,done,failed,pending"), "{text}");
    assert!(text.contains("focus after opening: study-title"), "keyboard users land on the study heading: {text}");
    assert!(text.contains("overlay toggled: pixels changed"), "{text}");
    assert!(text.contains("faithfulness: faithful: ROAD +0.083 against +0.004 for a random map"), "the app words the map by ROAD: {text}");
    assert!(text.contains("feedback: recorded"), "{text}");
    assert!(text.contains("deep link: opened 1.2.826.0.7.2"), "{text}");
    assert!(text.contains("ehr record: absent: Not in the EHR record"), "{text}");
    assert!(
        text.contains("deep link ehr record: filed: Filed in the EHR record as DiagnosticReport/")
            && text.contains("labelled as asserted by AI"),
        "{text}"
    );
    assert!(text.contains("unknown iss: This EHR is not registered with radsight"), "{text}");
    assert!(text.contains("denied: Access was not granted"), "{text}");
    assert!(text.contains("forged state: This launch has expired or is not valid"), "{text}");
    assert!(text.contains("unreachable: The EHR could not be reached"), "{text}");
    assert!(text.contains("no patient: No patient is selected"), "{text}");
    assert!(text.contains("200% zoom: no horizontal scrolling"), "{text}");
    for shot in ["study-view.png", "study-view-200pct.png", "study-list.png"] {
        assert!(shots.join(shot).is_file(), "{shot} written");
    }

    // The feedback given in the browser is stored and audited in one go.
    let rows = result_feedback::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].result_id.as_str(), rows[0].verdict.as_str(), rows[0].reason_code.as_deref()),
        (done.as_str(), "disagree", Some("false-positive"))
    );
    assert_eq!(rows[0].comment.as_deref(), Some("Overlay on the scapula."));
    let entry = audit_entry::Entity::find_by_id(rows[0].audit_seq).one(&app.db).await.unwrap().unwrap();
    assert_eq!(entry.action, "result.feedback");
    assert!(entry.entities.contains(&done));
    // The launches read the patient's data, and each read was audited as the EHR's user.
    let reads = app.audit_of("patient.read").await;
    assert!(reads.iter().any(|e| e.outcome == "success" && e.entities.contains(&second)), "the deep-linked result was read");
    assert!(reads.iter().all(|e| e.actor_user.as_deref().is_some_and(|u| u.ends_with("Practitioner/demo-radiologist"))));
}

backend_tests!(the_app_launches_shows_the_overlay_takes_feedback_and_follows_deep_links);
