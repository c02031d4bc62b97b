//! `POST /fhir/notifications`: subscription notification Bundles and plain ImagingStudy
//! resources queue analysis jobs; unregistered DICOMweb endpoints and bad JWTs are refused.

use radsight::store::entities::study;
use sea_orm::EntityTrait;
use serde_json::{Value, json};

use crate::helpers::{Backend, PATIENT, TestApp, spawn_app_with};

const PATH: &str = "/fhir/notifications";
const PACS: &str = "https://pacs.example.org/dicom-web";

fn endpoint(id: &str, address: &str) -> Value {
    json!({"resourceType": "Endpoint", "id": id, "status": "active",
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "dicom-wado-rs"},
        "payloadType": [{"text": "DICOM"}], "address": address})
}

fn study_resource(uid: &str, endpoint_ref: &str) -> Value {
    json!({"resourceType": "ImagingStudy", "id": "s1", "status": "available",
        "subject": {"reference": format!("Patient/{PATIENT}")},
        "identifier": [{"system": "urn:dicom:uid", "value": format!("urn:oid:{uid}")}],
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "MR"}],
        "started": "2026-11-29T09:00:00Z",
        "endpoint": [{"reference": endpoint_ref}]})
}

fn notification(uid: &str, address: &str) -> Value {
    json!({"resourceType": "Bundle", "type": "subscription-notification", "entry": [
        {"fullUrl": "urn:uuid:6f3b7f2c-1f0e-4d7e-9d0b-2f5f5b1e0a11", "resource": {"resourceType": "SubscriptionStatus", "status": "active",
            "type": "event-notification", "eventsSinceSubscriptionStart": "1",
            "subscription": {"reference": "https://ehr.example.org/fhir/Subscription/imaging"},
            "topic": "http://example.org/SubscriptionTopic/imaging-study-available"}},
        {"fullUrl": "https://ehr.example.org/fhir/ImagingStudy/s1", "resource": study_resource(uid, "Endpoint/pacs")},
        {"fullUrl": "https://ehr.example.org/fhir/Endpoint/pacs", "resource": endpoint("pacs", address)}
    ]})
}

async fn app(backend: Backend) -> TestApp {
    // No workers: these tests look at what is queued, not at how it runs.
    spawn_app_with(backend, |s| {
        s.dicomweb.endpoints = vec![format!("{PACS}/")];
        s.jobs.workers = 0;
    })
    .await
}

async fn a_subscription_notification_bundle_queues_a_job_for_its_study(backend: Backend) {
    let app = app(backend).await;
    let reply = app.post(PATH, &notification("1.2.826.0.7.1", PACS)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.json()["issue"][0]["severity"], "information");

    let jobs = app.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].study_uid.as_str(), jobs[0].endpoint.as_deref(), jobs[0].source.as_str(), jobs[0].patient_ref.as_deref()),
        ("1.2.826.0.7.1", Some(PACS), "fhir", Some("Patient/example-patient"))
    );
    let s = study::Entity::find_by_id("1.2.826.0.7.1".to_owned()).one(&app.db).await.unwrap().expect("the study is stored");
    assert_eq!((s.modality.as_str(), s.patient_ref.as_str()), ("MR", "Patient/example-patient"));
    assert!(s.started_at.is_some());
    let received = app.audit_of("fhir.notification").await;
    assert_eq!(received.len(), 1);
    assert_eq!((received[0].outcome.as_str(), received[0].actor_iss.as_deref()), ("success", Some(crate::helpers::ISS)));
}

async fn a_plain_imaging_study_with_a_contained_endpoint_is_accepted(backend: Backend) {
    let app = app(backend).await;
    let mut s = study_resource("1.2.826.0.7.2", "#pacs");
    s["contained"] = json!([endpoint("pacs", PACS)]);
    let reply = app.post(PATH, &s).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(app.jobs().await.len(), 1);
    // Sent again while its job is unfinished, the same study does not get a second job.
    let reply = app.post(PATH, &s).await;
    assert_eq!(reply.status, 202);
    assert_eq!(app.jobs().await.len(), 1);
}

async fn an_endpoint_that_is_not_registered_is_refused(backend: Backend) {
    let app = app(backend).await;
    let reply = app.post(PATH, &notification("1.2.826.0.7.3", "https://rogue.example.org/dicom-web")).await;
    let issue = reply.outcome(403);
    assert_eq!(issue["code"], "forbidden");
    assert!(app.jobs().await.is_empty());
    assert!(study::Entity::find().all(&app.db).await.unwrap().is_empty());
    let last = app.audit().await.pop().unwrap();
    assert_eq!((last.action.as_str(), last.outcome.as_str()), ("fhir.notification", "rejected"));
    assert!(last.detail.contains("endpoint-not-allowed"));
    assert!(!last.detail.contains("rogue"), "the refused URL is not echoed into the trail");
}

async fn a_study_without_a_uid_or_patient_is_a_bad_request(backend: Backend) {
    let app = app(backend).await;
    let mut s = study_resource("1.2.3", "#x");
    s.as_object_mut().unwrap().remove("endpoint");
    s["identifier"] = json!([{"system": "urn:example", "value": "abc"}]);
    let issue = app.post(PATH, &s).await.outcome(400);
    assert!(issue["diagnostics"].as_str().unwrap().contains("identifier"), "{issue}");
    let issue = app.post(PATH, &json!({"resourceType": "Patient", "id": "p"})).await.outcome(400);
    assert_eq!(issue["code"], "invalid");
    assert!(app.jobs().await.is_empty());
}

async fn a_bad_jwt_is_refused_with_a_bare_401(backend: Backend) {
    let app = app(backend).await;
    let body = notification("1.2.826.0.7.4", PACS).to_string().into_bytes();
    let none = app.send(reqwest::Method::POST, PATH, None, Some(body.clone())).await;
    assert_eq!((none.status.as_u16(), none.text.as_str()), (401, ""));
    // A token for another URL (aud) is refused too.
    let wrong_aud = app.token("/cds-services");
    let reply = app.send(reqwest::Method::POST, PATH, Some(&wrong_aud), Some(body)).await;
    assert_eq!((reply.status.as_u16(), reply.text.as_str()), (401, ""));
    assert!(app.jobs().await.is_empty());
    let rejects = app.audit_of("auth.reject").await;
    assert_eq!(rejects.len(), 2);
}

async fn a_notification_announcing_too_many_studies_is_refused_whole(backend: Backend) {
    let app = app(backend).await;
    let limit = app.settings.jobs.max_studies_per_notification;
    let mut bundle = notification("1.2.826.0.7.100", PACS);
    let entries = bundle["entry"].as_array_mut().unwrap();
    for i in 0..limit {
        let mut study = entries[1].clone();
        study["fullUrl"] = json!(format!("https://ehr.example.org/fhir/ImagingStudy/extra-{i}"));
        study["resource"] = study_resource(&format!("1.2.826.0.7.{}", 200 + i), "Endpoint/pacs");
        entries.push(study);
    }
    let issue = app.post(PATH, &bundle).await.outcome(413);
    assert_eq!(issue["code"], "too-costly");
    assert!(issue["diagnostics"].as_str().unwrap().contains(&format!("at most {limit}")), "{issue}");
    assert!(app.jobs().await.is_empty(), "nothing of it is queued");
    let last = app.audit().await.pop().unwrap();
    assert_eq!((last.action.as_str(), last.outcome.as_str()), ("fhir.notification", "rejected"));
    assert!(last.detail.contains("too-many-studies"));
    // At the limit it is taken.
    bundle["entry"].as_array_mut().unwrap().pop();
    assert_eq!(app.post(PATH, &bundle).await.status.as_u16(), 202);
    assert_eq!(app.jobs().await.len(), limit);
}

backend_tests!(
    a_notification_announcing_too_many_studies_is_refused_whole,
    a_subscription_notification_bundle_queues_a_job_for_its_study,
    a_plain_imaging_study_with_a_contained_endpoint_is_accepted,
    an_endpoint_that_is_not_registered_is_refused,
    a_study_without_a_uid_or_patient_is_a_bad_request,
    a_bad_jwt_is_refused_with_a_bare_401,
);
