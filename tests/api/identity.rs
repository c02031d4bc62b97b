//! Patient identity is (namespace, id): the same patient id from another EHR or another HL7
//! assigning authority is someone else. Hooks, result reads and HL7 results match on both; only
//! `[[patient_namespaces]]` makes two issuers or authorities share ids.

use radsight::configuration::ClientSettings;
use radsight::store::entities::{analysis_result, study};
use sea_orm::{ActiveValue::Set, EntityTrait};
use serde_json::json;

use crate::helpers::{Backend, ISS, PATIENT, TEST_NAMESPACE, TestApp, example, spawn_app_with};
use crate::hl7::{MllpClient, oru};

const VIEW: &str = "/cds-services/radsight-patient-view";
/// A second registered EHR, not sharing the test hospital's patient ids.
const OTHER_EHR: &str = "https://other-ehr.example.org";

async fn app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| {
        let mut other = s.clients.iter().find(|c| c.iss == ISS).cloned().unwrap();
        other.iss = OTHER_EHR.into();
        other.fhir_servers = vec![];
        s.clients.push(ClientSettings { ..other });
        s.jobs.workers = 0;
    })
    .await
}

/// A study of `PATIENT` in `namespace` with a finished result; returns the result id.
async fn seed_in(app: &TestApp, namespace: &str, uid: &str) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    study::Entity::insert(study::ActiveModel {
        study_uid: Set(uid.into()),
        patient_ref: Set(format!("Patient/{PATIENT}")),
        patient_namespace: Set(Some(namespace.into())),
        accession: Set(None),
        modality: Set("DX".into()),
        body_site: Set(Some("chest".into())),
        procedure_code: Set(None),
        description: Set(None),
        started_at: Set(Some(now - 86_400)),
        created_at: Set(now),
    })
    .exec_without_returning(&app.db)
    .await
    .unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let findings = json!([{"code": "nodule", "display": "Pulmonary nodule", "probability": 0.9, "threshold": 0.5}]);
    analysis_result::Entity::insert(analysis_result::ActiveModel {
        id: Set(id.clone()),
        study_uid: Set(uid.into()),
        status: Set("done".into()),
        model_id: Set(Some("radsight-cxr-demo".into())),
        model_version: Set(Some("0.1.0".into())),
        weights_sha256: Set(Some("ab".repeat(32))),
        findings: Set(findings.to_string()),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    })
    .exec_without_returning(&app.db)
    .await
    .unwrap();
    id
}

/// The patient-view cards for `PATIENT` as seen by the EHR `iss` (signing with the test key).
async fn view_as(app: &TestApp, iss: &str) -> Vec<serde_json::Value> {
    let token = app.es384.client_token(iss, &app.url(VIEW)).unwrap();
    let reply = app.send(reqwest::Method::POST, VIEW, Some(&token), Some(example("patient-view").to_string().into_bytes())).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.cards()
}

async fn another_ehrs_patient_with_the_same_id_sees_none_of_this_ones_results(backend: Backend) {
    let app = app(backend).await;
    let ours = seed_in(&app, TEST_NAMESPACE, "1.2.826.0.12.1").await;
    seed_in(&app, "hl7:ELSEWHERE", "1.2.826.0.12.2").await;

    let cards = view_as(&app, ISS).await;
    assert_eq!(cards.len(), 1, "only the study in the test hospital's namespace: {cards:?}");
    assert!(cards[0].to_string().contains(&ours) || cards[0]["summary"].as_str().unwrap().contains("nodule"), "{cards:?}");
    assert!(view_as(&app, OTHER_EHR).await.is_empty(), "the other EHR's patient of the same id is someone else");

    // Reading the result by id: the other EHR is told it does not exist.
    let path = format!("/results/{ours}");
    let mine = app.send(reqwest::Method::GET, &path, Some(&app.es384.client_token(ISS, &app.url(&path)).unwrap()), None).await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    let theirs = app.send(reqwest::Method::GET, &path, Some(&app.es384.client_token(OTHER_EHR, &app.url(&path)).unwrap()), None).await;
    assert_eq!(theirs.status, 404, "{}", theirs.text);
}

async fn an_hl7_result_belongs_to_its_assigning_authoritys_namespace(backend: Backend) {
    let app = app(backend).await;
    let mut client = MllpClient::connect(&app).await;
    // PID-3.4 names another authority: the study is that authority's patient's, not the EHR's.
    let elsewhere = oru("N1", &format!("{PATIENT}^^^OTHERHOSP^MR"), "1.2.826.0.12.3", "F");
    assert_eq!(client.send(&elsewhere).await.code(), "AA");
    // No PID-3.4: the sending facility (MSH-4 HOSP) is the authority, which the EHR shares.
    assert_eq!(client.send(&oru("N2", PATIENT, "1.2.826.0.12.4", "F")).await.code(), "AA");
    let namespaces: Vec<(String, Option<String>)> =
        study::Entity::find().all(&app.db).await.unwrap().into_iter().map(|s| (s.study_uid, s.patient_namespace)).collect();
    assert!(namespaces.contains(&("1.2.826.0.12.3".into(), Some("hl7:OTHERHOSP".into()))), "{namespaces:?}");
    assert!(namespaces.contains(&("1.2.826.0.12.4".into(), Some(TEST_NAMESPACE.into()))), "{namespaces:?}");

    let summaries: Vec<String> = view_as(&app, ISS).await.iter().map(|c| c["summary"].as_str().unwrap().to_owned()).collect();
    assert_eq!(summaries.len(), 1, "only the HOSP patient's study: {summaries:?}");

    // The OTHERHOSP patient's study UID announced for the HOSP patient: a conflict, not a merge.
    let ack = client.send(&oru("N3", PATIENT, "1.2.826.0.12.3", "F")).await;
    assert_eq!(ack.code(), "AE", "{ack:?}");
    assert_eq!(app.audit_of("identity.conflict").await.len(), 1);
}

async fn a_notification_from_another_ehr_files_its_study_under_that_ehr(backend: Backend) {
    let app = app(backend).await;
    let study = json!({"resourceType": "ImagingStudy", "status": "available",
        "subject": {"reference": format!("Patient/{PATIENT}")},
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.826.0.12.5"}]});
    let path = "/fhir/notifications";
    let token = app.es384.client_token(OTHER_EHR, &app.url(path)).unwrap();
    let reply = app.send(reqwest::Method::POST, path, Some(&token), Some(study.to_string().into_bytes())).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let stored = study::Entity::find_by_id("1.2.826.0.12.5".to_owned()).one(&app.db).await.unwrap().unwrap();
    assert_eq!(stored.patient_namespace.as_deref(), Some(format!("iss:{OTHER_EHR}").as_str()));
    assert!(view_as(&app, ISS).await.is_empty(), "the test hospital's patient of that id has no such study");
    assert_eq!(view_as(&app, OTHER_EHR).await.len(), 1, "the announcing EHR's patient has it (pending)");
}

backend_tests!(
    another_ehrs_patient_with_the_same_id_sees_none_of_this_ones_results,
    an_hl7_result_belongs_to_its_assigning_authoritys_namespace,
    a_notification_from_another_ehr_files_its_study_under_that_ehr,
);
