//! Results into the PACS: an ORU of a phantom study in the real Orthanc ends, through the
//! outbox, with a TID 1500 SR and a Secondary Capture of the overlay stored back into the same
//! study by STOW-RS. The SR's log receipt verifies with the independent verifier against the
//! signed checkpoint and the log's key, and fails once a byte of the logged finding changes.
//! Delivering again leaves one instance; a PACS that cannot be reached is retried, then dead,
//! and `radsight outbox retry` revives it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use radsight::analysis::phantom_dicom::{PhantomInstance, clear_nodule_phantom, phantom_part10};
use radsight::store::entities::outbox;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};
use sha2::Digest;

use crate::analysis::chest_oru;
use crate::dicomweb::app_with_pacs_configured;
use crate::helpers::{Backend, PATIENT, TestApp, run_python};
use crate::hl7::MllpClient;
use crate::pacs::{dicomweb_root, fresh_uid, orthanc_credentials, orthanc_url, upload};

/// A phantom chest radiograph uploaded to Orthanc and announced by ORU `control` to the MLLP
/// listener on `hl7_port` (acknowledged AA); its study UID.
pub(crate) async fn announced_phantom(hl7_port: u16, control: &str) -> String {
    let study = fresh_uid();
    let accession = format!("ACC-{control}");
    let meta =
        PhantomInstance { patient_id: PATIENT, study_uid: &study, series_uid: &fresh_uid(), sop_uid: &fresh_uid(), accession: &accession };
    upload(phantom_part10(&meta, 128, 128, &clear_nodule_phantom(128).image.into_data())).await;
    let mut client = MllpClient::connect_to(hl7_port).await;
    assert_eq!(client.send(&chest_oru(control, &study)).await.code(), "AA");
    study
}

/// A phantom chest radiograph in Orthanc, announced by ORU; returns its study UID once analysed.
pub(crate) async fn analysed_study(app: &TestApp, control: &str) -> String {
    let study = announced_phantom(app.hl7_port, control).await;
    let jobs = app.wait_for_jobs("the study to be analysed", |j| j.iter().any(|j| j.study_uid == study && j.state == "succeeded")).await;
    assert!(jobs.iter().any(|j| j.stage.as_deref() == Some("analysed")));
    study
}

/// Waits until every delivery satisfies `done`.
pub(crate) async fn wait_for_deliveries(app: &TestApp, what: &str, done: impl Fn(&[outbox::Model]) -> bool) -> Vec<outbox::Model> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows = outbox::Entity::find().all(&app.db).await.unwrap();
        if done(&rows) {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:#?}",
            rows.iter().map(|r| (&r.kind, &r.state, r.attempts, &r.last_error)).collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// QIDO-RS: the study's instances as (series description, modality, SOP Instance UID).
async fn instances_in(study: &str) -> Vec<(String, String, String)> {
    let (user, password) = orthanc_credentials();
    let url = format!("{}/studies/{study}/instances?includefield=0008103E&includefield=00080060", dicomweb_root());
    let resp =
        reqwest::Client::new().get(url).basic_auth(user, Some(password)).header("accept", "application/dicom+json").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let items: Vec<Value> = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let text = |i: &Value, tag: &str| i[tag]["Value"][0].as_str().unwrap_or_default().to_owned();
    items.iter().map(|i| (text(i, "0008103E"), text(i, "00080060"), text(i, "00080018"))).collect()
}

/// The stored file of an instance, from Orthanc's own REST API.
async fn orthanc_file(sop_instance_uid: &str) -> Vec<u8> {
    let (user, password) = orthanc_credentials();
    let http = reqwest::Client::new();
    let found: Vec<Value> = serde_json::from_slice(
        &http
            .post(format!("{}/tools/lookup", orthanc_url()))
            .basic_auth(&user, Some(&password))
            .body(sop_instance_uid.to_owned())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let id = found.iter().find(|f| f["Type"] == "Instance").expect("Orthanc has the instance")["ID"].as_str().unwrap().to_owned();
    http.get(format!("{}/instances/{id}/file", orthanc_url()))
        .basic_auth(&user, Some(&password))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

pub(crate) fn vkey(app: &TestApp) -> String {
    let out = app.cli(&["audit", "vkey"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout.trim().to_owned()
}

/// Runs the independent verifier on a receipt as highdicom read it from the SR.
fn verify_receipt(app: &TestApp, receipt: &Value, entry: &str) -> (bool, String) {
    let first = |k: &str| receipt[k][0].as_str().unwrap().to_owned();
    let checkpoint = first("checkpoint");
    let root_b64 = checkpoint.lines().nth(2).expect("a checkpoint's third line is its root");
    let leaf = sha2::Sha256::new().chain_update([0u8]).chain_update(entry.as_bytes()).finalize();
    let proof: Vec<String> =
        receipt["proof"].as_array().unwrap().iter().map(|p| hex::encode(STANDARD.decode(p.as_str().unwrap()).unwrap())).collect();
    let request = json!({
        "vkey": vkey(app),
        "checkpoint": checkpoint,
        "inclusion": [{
            "index": first("leaf_index").parse::<u64>().unwrap(),
            "tree_size": first("tree_size").parse::<u64>().unwrap(),
            "leaf_hash": hex::encode(leaf),
            "proof": proof,
            "root_hash": hex::encode(STANDARD.decode(root_b64).unwrap()),
            "entry": entry,
        }],
    });
    run_python("audit_verifier.py", &request.to_string())
}

async fn a_result_is_stored_into_the_pacs_as_an_sr_and_an_overlay_whose_receipt_verifies(backend: Backend) {
    let app = app_with_pacs_configured(backend, 64 << 20, |s| {
        s.outputs.pacs = vec![dicomweb_root()];
        s.outputs.poll_interval_ms = 100;
    })
    .await;
    let study = analysed_study(&app, "OUT-1").await;
    let rows = wait_for_deliveries(&app, "both objects delivered", |r| r.len() == 2 && r.iter().all(|d| d.state == "delivered")).await;

    // Both are in the same study, each in its own series, labelled as AI output.
    let stored = instances_in(&study).await;
    let sr = stored.iter().find(|(_, modality, _)| modality == "SR").unwrap_or_else(|| panic!("an SR in {stored:?}"));
    let sc = stored.iter().find(|(d, _, _)| d.contains("saliency overlay")).unwrap_or_else(|| panic!("an overlay in {stored:?}"));
    assert!(sr.0.contains("not a diagnosis") && sc.0.contains("not a diagnosis"), "{stored:?}");
    let by_kind = |k: &str| rows.iter().find(|d| d.kind == k).unwrap().object_id.clone().unwrap();
    assert_eq!((by_kind("stow-sr"), by_kind("stow-sc")), (sr.2.clone(), sc.2.clone()));
    let deliveries = app.audit_of("output.delivery").await;
    assert_eq!(deliveries.iter().filter(|e| e.outcome == "success").count(), 2);

    // dciodvfy finds no error in either object as the PACS stored it, and dsrdump renders the SR.
    let file = tempfile::NamedTempFile::new().unwrap();
    let overlay = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), orthanc_file(&sr.2).await).unwrap();
    std::fs::write(overlay.path(), orthanc_file(&sc.2).await).unwrap();
    for path in [file.path(), overlay.path()] {
        let out = std::process::Command::new("dciodvfy").arg(path).output().expect("dciodvfy (dicom3tools) is installed");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error")).collect();
        assert!(errors.is_empty(), "dciodvfy: {errors:#?}");
    }
    let dump = std::process::Command::new("dsrdump").arg(file.path()).output().expect("dsrdump (dcmtk) is installed");
    let dump_text = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.status.success() && dump_text.contains("Imaging Measurement Report"), "{dump_text}");

    // highdicom reads the SR from the PACS as a TID 1500 report with its findings and receipt.
    let out = std::process::Command::new(crate::helpers::python())
        .arg(format!("{}/tests/python/read_sr.py", env!("CARGO_MANIFEST_DIR")))
        .arg(file.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read["is_measurement_report"], true, "{read}");
    let groups = read["measurement_groups"].as_array().unwrap();
    assert!(groups.iter().any(|g| g["finding_type"]["value"] == "nodule"), "{read}");
    assert_eq!(groups[0]["algorithm"]["name"][0], "radsight-phantom-cxr");
    let receipt = &read["receipts"][0];
    let entry = String::from_utf8(STANDARD.decode(receipt["entry"][0].as_str().unwrap()).unwrap()).unwrap();
    assert!(entry.contains("model.inference") && entry.contains("nodule"), "{entry}");

    let (ok, report) = verify_receipt(&app, receipt, &entry);
    assert!(ok, "the receipt verifies: {report}");
    // One byte of the logged finding changed: its leaf no longer folds to the signed root.
    let tampered = entry.replacen("nodule", "nodula", 1);
    assert_ne!(tampered, entry);
    let (ok, report) = verify_receipt(&app, receipt, &tampered);
    assert!(!ok && report.contains("INVALID inclusion"), "{report}");

    // The same receipt is served with the result's FHIR Bundle, on its Provenance.
    let result_id = &rows[0].result_id;
    let path = format!("/results/{result_id}/fhir");
    let reply = app.send(reqwest::Method::GET, &path, Some(&app.token(&path)), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (valid, out) = run_python("validate_bundle.py", &reply.text);
    assert!(valid, "the Bundle validates as R4B: {out}");
    let bundle = reply.json();
    let provenance = bundle["entry"].as_array().unwrap().iter().find(|e| e["resource"]["resourceType"] == "Provenance").unwrap();
    let extension = &provenance["resource"]["extension"][0];
    assert_eq!(extension["url"], radsight::results::fhir::RECEIPT_EXTENSION);
    let part = |name: &str| -> Vec<Value> {
        extension["extension"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["url"] == name)
            .map(|e| e.as_object().unwrap().iter().find(|(k, _)| k.starts_with("value")).unwrap().1.clone())
            .collect()
    };
    let fhir_receipt = json!({
        "leaf_index": part("leafIndex"), "tree_size": part("treeSize"), "proof": part("proof"), "checkpoint": part("checkpoint"),
    });
    let fhir_entry = String::from_utf8(STANDARD.decode(part("entry")[0].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(fhir_entry, entry, "the Bundle and the SR prove the same entry");
    let (ok, report) = verify_receipt(&app, &fhir_receipt, &fhir_entry);
    assert!(ok, "the Provenance's receipt verifies: {report}");

    // Sent again (as after an answer that never came): the PACS keeps one instance of each.
    outbox::Entity::update_many()
        .col_expr(outbox::Column::State, Expr::value("pending"))
        .filter(outbox::Column::StudyUid.eq(study.clone()))
        .exec(&app.db)
        .await
        .unwrap();
    wait_for_deliveries(&app, "the second delivery", |r| r.iter().all(|d| d.state == "delivered" && d.attempts == 2)).await;
    assert_eq!(instances_in(&study).await.len(), stored.len(), "no second copy");
}

async fn a_pacs_that_cannot_be_reached_is_retried_then_dead_and_can_be_revived(backend: Backend) {
    let down = "http://127.0.0.1:9/dicom-web";
    let app = app_with_pacs_configured(backend, 64 << 20, |s| {
        s.dicomweb.endpoints.push(down.into());
        s.outputs.pacs = vec![down.into()];
        s.outputs.poll_interval_ms = 50;
        s.outputs.backoff_base_ms = 50;
        s.outputs.backoff_max_ms = 100;
        s.outputs.max_attempts = 3;
    })
    .await;
    analysed_study(&app, "OUT-2").await;
    let rows = wait_for_deliveries(&app, "both deliveries dead", |r| r.len() == 2 && r.iter().all(|d| d.state == "dead")).await;
    assert!(rows.iter().all(|d| d.attempts == 3 && d.last_error.as_deref() == Some("pacs-unreachable")), "{rows:?}");
    let failures = app.audit_of("output.delivery").await.into_iter().filter(|e| e.outcome == "error").count();
    assert_eq!(failures, 6, "every attempt is audited");

    let listed = app.cli(&["outbox", "list", "--state", "dead"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(listed.stdout.contains("pacs-unreachable") && listed.stderr.contains("2 deliveries"), "{}", listed.stdout);
    let revived = app.cli(&["outbox", "retry", &rows[0].id]);
    assert_eq!(revived.code, 0, "{}", revived.stderr);
    let unknown = app.cli(&["outbox", "retry", "no-such-delivery"]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(
        app.audit_of("output.delivery").await.iter().any(|e| e.actor_user.as_deref() == Some("cli") && e.entities.contains(&rows[0].id))
    );
    // The revived delivery is tried again (and, the PACS still down, audited again).
    let deadline = std::time::Instant::now() + crate::helpers::PATIENCE;
    while app.audit_of("output.delivery").await.iter().filter(|e| e.outcome == "error").count() <= failures {
        assert!(std::time::Instant::now() < deadline, "the revived delivery was not tried again");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A TCP gate in front of Orthanc: while shut it takes connections and drops them (the PACS is
/// down); once opened it forwards them. Returns its port and the switch.
async fn pacs_gate() -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = std::sync::Arc::new(AtomicBool::new(false));
    let upstream = orthanc_url().trim_start_matches("http://").to_owned();
    let switch = open.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !switch.load(Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream.as_str()).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (port, open)
}

/// kill -9 while deliveries are pending (the PACS down): after a restart with the PACS up,
/// each object is delivered, once.
async fn deliveries_pending_at_a_kill_are_delivered_once_after_restart(backend: Backend) {
    use std::sync::atomic::Ordering;
    let db_app = app_with_pacs_configured(backend, 64 << 20, |s| s.jobs.workers = 0).await;
    let (gate_port, gate) = pacs_gate().await;
    let gated = format!("http://127.0.0.1:{gate_port}/dicom-web");
    // The service under test: its own process, with one worker, writing to the gated PACS.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), orthanc_credentials().1).unwrap();
    let mut settings = db_app.settings.clone();
    settings.server.port = 0;
    settings.hl7.bind = "127.0.0.1:0".into();
    settings.jobs.workers = 1;
    settings.dicomweb.endpoints.push(gated.clone());
    for c in settings.dicomweb.credentials.iter_mut() {
        c.secret_file = Some(secret.path().to_owned());
    }
    let mut gated_credentials = settings.dicomweb.credentials[0].clone();
    gated_credentials.url = gated.clone();
    settings.dicomweb.credentials.push(gated_credentials);
    settings.outputs.pacs = vec![gated];
    settings.outputs.poll_interval_ms = 100;
    settings.outputs.backoff_base_ms = 100;
    settings.outputs.backoff_max_ms = 200;
    settings.outputs.max_attempts = 1000;
    settings.outputs.lease_ms = 500;
    let config = crate::helpers::ServeConfig::write(&settings);

    let (mut process, hl7_port) = config.start();
    let study = announced_phantom(hl7_port, "KILL-OUT").await;
    wait_for_deliveries(&db_app, "deliveries failing against the shut PACS", |r| r.len() == 2 && r.iter().all(|d| d.attempts >= 2)).await;
    process.kill();

    gate.store(true, Ordering::SeqCst);
    let (_restarted, _) = config.start();
    let rows =
        wait_for_deliveries(&db_app, "both delivered after the restart", |r| r.len() == 2 && r.iter().all(|d| d.state == "delivered"))
            .await;
    let stored = instances_in(&study).await;
    assert_eq!(stored.len(), 3, "the source image, one SR and one overlay: {stored:?}");
    for d in &rows {
        assert!(stored.iter().any(|(_, _, uid)| Some(uid) == d.object_id.as_ref()), "{d:?} in {stored:?}");
    }
    let verify = db_app.cli(&["audit", "verify"]);
    assert_eq!(verify.code, 0, "{}\n{}", verify.stdout, verify.stderr);
}

backend_tests!(
    deliveries_pending_at_a_kill_are_delivered_once_after_restart,
    a_result_is_stored_into_the_pacs_as_an_sr_and_an_overlay_whose_receipt_verifies,
    a_pacs_that_cannot_be_reached_is_retried_then_dead_and_can_be_revived,
);
