//! The SMART app's API: the EHR's access token decides who may read which patient's results.

use radsight::store::entities::{audit_entry, result_feedback};
use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::{Value, json};

use crate::helpers::{Backend, PATIENT, Reply, TestApp, example};
use crate::smart_ehr::{CLIENT_ID, JWT_EHR, OTHER_PATIENT, SCOPES, spawn_smart_app};
use crate::synthetic::{SyntheticStudy, insert_synthetic};

/// Seeds the example patient's studies (done, pending, failed) and one of another patient's;
/// returns (done result, other patient's result).
async fn seed(app: &TestApp) -> (String, String) {
    let mine = format!("Patient/{PATIENT}");
    let other = format!("Patient/{OTHER_PATIENT}");
    let seed = |uid: &'static str, patient: String, status: Option<&'static str>| {
        let db = app.db.clone();
        async move {
            insert_synthetic(&db, &SyntheticStudy { study_uid: uid, patient_ref: &patient, status, description: "Chest X-ray (test)" })
                .await
                .unwrap()
        }
    };
    let done = seed("1.2.826.0.9.1", mine.clone(), Some("done")).await.unwrap();
    seed("1.2.826.0.9.2", mine.clone(), Some("pending")).await;
    seed("1.2.826.0.9.3", mine.clone(), Some("failed")).await;
    seed("1.2.826.0.9.4", mine, None).await;
    let theirs = seed("1.2.826.0.9.5", other, Some("done")).await.unwrap();
    (done, theirs)
}

async fn get(app: &TestApp, ehr: &str, token: Option<&str>, path: &str) -> Reply {
    let mut req = app.http.get(app.url(path)).header("x-smart-iss", ehr);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = String::from_utf8_lossy(&resp.bytes().await.unwrap()).into_owned();
    Reply { status, headers, text }
}

async fn smart_reads_of(app: &TestApp, outcome: &str) -> Vec<audit_entry::Model> {
    app.audit_of("patient.read").await.into_iter().filter(|e| e.outcome == outcome).collect()
}

async fn the_patient_in_context_sees_their_studies_results_and_images(backend: Backend) {
    let (app, ehr) = spawn_smart_app(backend).await;
    let (done, _) = seed(&app).await;
    let token = ehr.token_for(PATIENT, 300);
    let iss = ehr.sim.iss();

    let list = get(&app, &iss, Some(&token), &format!("/api/patients/{PATIENT}/studies")).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.headers["cache-control"], "no-store");
    let studies = list.json()["studies"].as_array().unwrap().clone();
    let states: Vec<(&str, &str)> =
        studies.iter().map(|s| (s["studyInstanceUid"].as_str().unwrap(), s["analysis"]["state"].as_str().unwrap())).collect();
    assert_eq!(states.len(), 4, "{states:?}");
    for expected in [("1.2.826.0.9.1", "done"), ("1.2.826.0.9.2", "pending"), ("1.2.826.0.9.3", "failed"), ("1.2.826.0.9.4", "pending")] {
        assert!(states.contains(&expected), "{expected:?} in {states:?}");
    }

    let result = get(&app, &iss, Some(&token), &format!("/api/results/{done}")).await;
    assert_eq!(result.status, StatusCode::OK, "{}", result.text);
    let r = result.json();
    assert_eq!(r["findings"][0]["probability"], 0.82);
    assert_eq!(r["explanation"]["bbox"]["width"], 40);
    assert_eq!(r["faithfulness"]["deletionAuc"], 0.21);
    assert_eq!((r["faithfulness"]["road"]["combined"].as_f64().unwrap() * 1000.0).round(), 83.0, "{}", r["faithfulness"]);
    assert_eq!(r["faithfulness"]["verdict"], "faithful");
    assert!(r["model"]["card"]["intended_use"].as_str().unwrap().contains("Demonstration"));
    for kind in ["image.png", "heatmap.png", "saliency.png"] {
        let png = get(&app, &iss, Some(&token), &format!("/api/results/{done}/{kind}")).await;
        assert_eq!(png.status, StatusCode::OK, "{kind}");
        assert_eq!(png.headers["content-type"], "image/png");
        assert_eq!(png.headers["cache-control"], "no-store");
        // Reply holds text (lossy UTF-8): the PNG signature's 0x89 becomes U+FFFD.
        assert!(png.text.starts_with("\u{FFFD}PNG\r\n") && png.text.contains("IHDR"), "{kind}");
    }

    // Every read is audited as a patient-data read by the user, for the patient, of a resource.
    let reads = smart_reads_of(&app, "success").await;
    assert_eq!(reads.len(), 5, "{reads:#?}");
    assert!(reads.iter().all(|e| e.patient_ref.as_deref() == Some("Patient/example-patient")));
    assert!(reads.iter().all(|e| e.actor_iss.as_deref() == Some(iss.as_str())));
    assert!(reads.iter().all(|e| e.actor_user.as_deref().is_some_and(|u| u.ends_with("Practitioner/demo-radiologist"))));
    assert!(reads[1].entities.contains(&done) && reads[1].detail.contains("AnalysisResult"));
    // The token never reaches the audit log.
    assert!(app.audit().await.iter().all(|e| !e.detail.contains(&token) && !e.entities.contains(&token)));
}

async fn a_token_for_one_patient_cannot_read_another_patients_results(backend: Backend) {
    let (app, ehr) = spawn_smart_app(backend).await;
    let (_, theirs) = seed(&app).await;
    let token = ehr.token_for(PATIENT, 300);
    let iss = ehr.sim.iss();
    for path in [
        format!("/api/patients/{OTHER_PATIENT}/studies"),
        format!("/api/results/{theirs}"),
        format!("/api/results/{theirs}/image.png"),
        format!("/api/results/{theirs}/audit"),
    ] {
        let reply = get(&app, &iss, Some(&token), &path).await;
        let issue = reply.outcome(403);
        assert_eq!(issue["code"], "forbidden", "{path}");
        assert_eq!(reply.headers["cache-control"], "no-store");
    }
    let post = app
        .http
        .post(app.url(&format!("/api/results/{theirs}/feedback")))
        .header("x-smart-iss", &iss)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(json!({"verdict": "agree"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::FORBIDDEN);
    let refused = smart_reads_of(&app, "rejected").await;
    assert_eq!(refused.len(), 5, "{refused:#?}");
    assert!(refused.iter().all(|e| e.detail.contains("patient-mismatch") && e.patient_ref.as_deref() == Some("Patient/other-patient")));
    assert!(result_feedback::Entity::find().all(&app.db).await.unwrap().is_empty());
    assert!(smart_reads_of(&app, "success").await.is_empty());
}

async fn inactive_expired_missing_and_foreign_tokens_get_401(backend: Backend) {
    let (app, ehr) = spawn_smart_app(backend).await;
    seed(&app).await;
    let path = format!("/api/patients/{PATIENT}/studies");
    let iss = ehr.sim.iss();
    let revoked = ehr.token_for(PATIENT, 300);
    ehr.sim.revoke(&revoked);
    let expired = ehr.token_for(PATIENT, -10);
    let cases: [(&str, Option<String>, &str); 5] = [
        ("unknown token", Some("not-a-token-the-ehr-issued".into()), "inactive-token"),
        ("revoked token", Some(revoked), "inactive-token"),
        ("expired token", Some(expired), "inactive-token"),
        ("no token", None, "missing-token"),
        ("another app's token", Some(ehr.sim.issue_token("some-other-app", PATIENT, SCOPES, 300)), "wrong-client"),
    ];
    for (what, token, code) in &cases {
        let reply = get(&app, &iss, token.as_deref(), &path).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}: {}", reply.text);
        assert_eq!(reply.headers["www-authenticate"], "Bearer error=\"invalid_token\"", "{what}");
        assert!(app.audit_of("auth.reject").await.iter().any(|e| e.detail.contains(code)), "{what} audited as {code}");
    }
    // Refusals are strangers' (see audit::tally): the first of each reason is written in full,
    // the rest counted into the window's summary, written when it closes (here, at shutdown).
    assert_eq!(app.audit_of("auth.reject").await.len(), 3, "one entry per reason");
    app.shut_down().await;
    let summaries: u64 = app
        .audit_of("refusal.summary")
        .await
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(&e.detail).unwrap()["count"].as_u64().unwrap())
        .sum();
    assert_eq!(app.audit_of("auth.reject").await.len() as u64 + summaries, cases.len() as u64, "the counts add up");
    assert!(smart_reads_of(&app, "success").await.is_empty());
}

async fn a_token_from_an_unregistered_ehr_is_refused_without_asking_anyone(backend: Backend) {
    let (app, ehr) = spawn_smart_app(backend).await;
    seed(&app).await;
    let token = ehr.token_for(PATIENT, 300);
    // An EHR radsight does not know: the token is not sent anywhere, the call is refused.
    let reply = get(&app, "https://unknown-ehr.example.org/fhir", Some(&token), &format!("/api/patients/{PATIENT}/studies")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let rejects = app.audit_of("auth.reject").await;
    assert_eq!(rejects.len(), 1);
    assert!(rejects[0].detail.contains("unknown-iss") && !rejects[0].detail.contains("unknown-ehr.example.org"), "{}", rejects[0].detail);
    // Launching from it shows the clear page.
    let launch = app.http.get(app.url("/smart/launch?iss=https%3A%2F%2Funknown-ehr.example.org%2Ffhir&launch=abc")).send().await.unwrap();
    assert_eq!(launch.status(), StatusCode::FORBIDDEN);
    let page = launch.text().await.unwrap();
    assert!(page.contains("This EHR is not registered with radsight"), "{page}");
    assert_eq!(app.audit_of("auth.reject").await.len(), 1);
    let launches = app.audit_of("smart.launch").await;
    assert_eq!(launches.len(), 1);
    assert!(launches[0].outcome == "denied" && launches[0].detail.contains("unknown-iss"), "{launches:?}");
    // A registered EHR gets the launch page with its client id.
    let launch = app.http.get(app.url(&format!("/smart/launch?iss={}&launch=abc", ehr.sim.iss()))).send().await.unwrap();
    assert_eq!(launch.status(), StatusCode::OK);
    assert!(launch.text().await.unwrap().contains(CLIENT_ID));
    let launches = app.audit_of("smart.launch").await;
    assert!(launches.len() == 2 && launches[1].outcome == "success" && launches[1].actor_iss.as_deref() == Some(ehr.sim.iss().as_str()));
}

async fn jwt_access_tokens_are_verified_with_the_ehrs_keys(backend: Backend) {
    let (app, _ehr) = spawn_smart_app(backend).await;
    seed(&app).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = |aud: &str, exp: i64| {
        json!({"iss": JWT_EHR, "aud": aud, "exp": exp, "iat": now, "scope": "launch patient/ImagingStudy.rs",
            "patient": PATIENT, "fhirUser": "https://jwt-ehr.example.org/fhir/Practitioner/9", "client_id": CLIENT_ID})
    };
    let path = format!("/api/patients/{PATIENT}/studies");
    let good = app.jku_key.sign(&claims(JWT_EHR, now + 300), None).unwrap();
    let reply = get(&app, JWT_EHR, Some(&good), &path).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let wrong_aud = app.jku_key.sign(&claims("https://elsewhere.example.org", now + 300), None).unwrap();
    assert_eq!(get(&app, JWT_EHR, Some(&wrong_aud), &path).await.status, StatusCode::UNAUTHORIZED);
    let expired = app.jku_key.sign(&claims(JWT_EHR, now - 120), None).unwrap();
    assert_eq!(get(&app, JWT_EHR, Some(&expired), &path).await.status, StatusCode::UNAUTHORIZED);
    let forged = app.es384.sign(&claims(JWT_EHR, now + 300), None).unwrap();
    assert_eq!(get(&app, JWT_EHR, Some(&forged), &path).await.status, StatusCode::UNAUTHORIZED);
    let reads = smart_reads_of(&app, "success").await;
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].actor_user.as_deref(), Some("https://jwt-ehr.example.org/fhir/Practitioner/9"));
}

async fn a_token_without_an_imaging_read_scope_is_refused(backend: Backend) {
    let (app, ehr) = spawn_smart_app(backend).await;
    seed(&app).await;
    let token = ehr.sim.issue_token(CLIENT_ID, PATIENT, "launch openid fhirUser patient/Patient.rs", 300);
    let reply = get(&app, &ehr.sim.iss(), Some(&token), &format!("/api/patients/{PATIENT}/studies")).await;
    assert_eq!(reply.outcome(403)["code"], "forbidden");
    assert!(smart_reads_of(&app, "rejected").await[0].detail.contains("\"reason\":\"scope\""));
}

async fn feedback_is_stored_with_its_audit_entry_and_joined_to_the_card_shown(backend: Backend) {
    let (app, ehr) = spawn_smart_app(backend).await;
    let (done, _) = seed(&app).await;
    // The clinician saw the result on a patient-view card first.
    let cards = app.hook("radsight-patient-view", &example("patient-view")).await.cards();
    let card = cards.iter().find(|c| c["links"].to_string().contains(&done)).expect("a card shows the result");
    let card_uuid = card["uuid"].as_str().unwrap().to_owned();
    let app_context: Value = serde_json::from_str(card["links"][0]["appContext"].as_str().unwrap()).unwrap();
    assert_eq!(app_context["resultId"], done.as_str());

    let token = ehr.token_for(PATIENT, 300);
    let send = |body: Value| {
        app.http
            .post(app.url(&format!("/api/results/{done}/feedback")))
            .header("x-smart-iss", ehr.sim.iss())
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let resp = send(json!({"verdict": "disagree", "reasonCode": "false-positive", "comment": "Nipple shadow.", "cardUuid": card_uuid}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let answer: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let bad = send(json!({"verdict": "perhaps"})).await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let unknown_card = send(json!({"verdict": "agree", "cardUuid": uuid::Uuid::new_v4().to_string()})).await.unwrap();
    assert_eq!(unknown_card.status(), StatusCode::BAD_REQUEST);

    let rows = result_feedback::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (row.verdict.as_str(), row.reason_code.as_deref(), row.comment.as_deref()),
        ("disagree", Some("false-positive"), Some("Nipple shadow."))
    );
    assert_eq!(row.card_uuid.as_deref(), Some(card_uuid.as_str()));
    assert_eq!(row.patient_ref, "Patient/example-patient");
    assert_eq!(row.ehr_iss, ehr.sim.iss());
    assert!(row.user_ref.as_deref().is_some_and(|u| u.ends_with("Practitioner/demo-radiologist")));
    assert_eq!(answer["auditSeq"], row.audit_seq);
    let entry = audit_entry::Entity::find_by_id(row.audit_seq).one(&app.db).await.unwrap().unwrap();
    assert_eq!((entry.action.as_str(), entry.outcome.as_str()), ("result.feedback", "success"));
    assert!(entry.entities.contains(&done) && entry.entities.contains(&card_uuid), "{}", entry.entities);
    assert!(entry.detail.contains("false-positive") && !entry.detail.contains("Nipple"), "the comment is never audited: {}", entry.detail);

    // The result's audit trail tells the story: the card that showed it, then the feedback.
    let trail = get(&app, &ehr.sim.iss(), Some(&token), &format!("/api/results/{done}/audit")).await.json();
    let actions: Vec<&str> = trail["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["cds.hook", "result.feedback"], "{trail}");
    let verify = app.cli(&["audit", "verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
}

/// The same patient id in another namespace (another authority's patient) is someone else: the
/// SMART app neither lists nor reads their study.
async fn the_same_patient_id_in_another_namespace_is_someone_else(backend: Backend) {
    use radsight::store::entities::study;
    use sea_orm::{ColumnTrait, QueryFilter, sea_query::Expr};
    let (app, ehr) = spawn_smart_app(backend).await;
    let (done, _) = seed(&app).await;
    let elsewhere = insert_synthetic(
        &app.db,
        &SyntheticStudy {
            study_uid: "1.2.826.0.9.9",
            patient_ref: &format!("Patient/{PATIENT}"),
            status: Some("done"),
            description: "Chest X-ray (another authority's patient)",
        },
    )
    .await
    .unwrap()
    .unwrap();
    study::Entity::update_many()
        .col_expr(study::Column::PatientNamespace, Expr::value("hl7:ELSEWHERE"))
        .filter(study::Column::StudyUid.eq("1.2.826.0.9.9"))
        .exec(&app.db)
        .await
        .unwrap();
    let (token, iss) = (ehr.token_for(PATIENT, 300), ehr.sim.iss());
    let list = get(&app, &iss, Some(&token), &format!("/api/patients/{PATIENT}/studies")).await;
    let uids: Vec<String> =
        list.json()["studies"].as_array().unwrap().iter().map(|s| s["studyInstanceUid"].as_str().unwrap().to_owned()).collect();
    assert_eq!(uids.len(), 4, "{uids:?}");
    assert!(!uids.contains(&"1.2.826.0.9.9".to_owned()), "{uids:?}");
    assert_eq!(get(&app, &iss, Some(&token), &format!("/api/results/{done}")).await.status, StatusCode::OK);
    let reply = get(&app, &iss, Some(&token), &format!("/api/results/{elsewhere}")).await;
    assert_eq!(reply.outcome(403)["code"], "forbidden");
}

backend_tests!(
    the_same_patient_id_in_another_namespace_is_someone_else,
    the_patient_in_context_sees_their_studies_results_and_images,
    a_token_for_one_patient_cannot_read_another_patients_results,
    inactive_expired_missing_and_foreign_tokens_get_401,
    a_token_from_an_unregistered_ehr_is_refused_without_asking_anyone,
    jwt_access_tokens_are_verified_with_the_ehrs_keys,
    a_token_without_an_imaging_read_scope_is_refused,
    feedback_is_stored_with_its_audit_entry_and_joined_to_the_card_shown,
);
