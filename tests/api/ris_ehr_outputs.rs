//! Results into the RIS and the EHR record: an ORU of a phantom study in the real Orthanc ends,
//! through the outbox, with an ORU^R01 at a test RIS (an MLLP receiver here, its messages read
//! and validated against v2.5.1 by hl7apy) and the result's Bundle in the demo EHR's record,
//! written as a transaction with a SMART Backend Services token that radsight got with an
//! assertion signed by its own key (checked by the demo EHR against radsight's published JWKS).
//! Both carry the log receipt, which the independent verifier checks.
//!
//! The faults: AE and an ACK that never comes are retried with the same message; a refused
//! assertion (wrong key, wrong `aud`) is retried as configured, then dead, with the EHR's
//! reason, and `outbox retry` revives it; a replayed assertion is refused; a token the EHR stops
//! honouring is fetched again; 503 and 412 are retried; 403 is dead at once; MLLP goes over
//! mutual TLS; and a kill -9 with deliveries pending loses and duplicates nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpServer};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use radsight::mllp::{Deframer, Frame, frame};
use radsight::store::entities::outbox;
use radsight_demo_ehr::{BackendClient, EhrSim, demo_patient};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dicomweb::app_with_pacs_configured;
use crate::helpers::{Backend, PATIENT, TestApp, run_python};
use crate::pacs_outputs::{analysed_study, vkey, wait_for_deliveries};

const BACKEND_CLIENT: &str = "radsight-backend";

/// How the test RIS answers one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ack(&'static str),
    /// Reads the message and says nothing.
    Silence,
}

/// An MLLP receiver standing in for the RIS: answers each message as scripted (then AA), and
/// keeps every message it received.
struct TestRis {
    address: String,
    received: Arc<Mutex<Vec<String>>>,
    script: Arc<Mutex<std::collections::VecDeque<Answer>>>,
    silent: Arc<AtomicBool>,
}

impl TestRis {
    async fn start(script: &[Answer]) -> TestRis {
        TestRis::start_with(script, None).await
    }

    /// The same, speaking MLLP over TLS through `tls`.
    async fn start_with(script: &[Answer], tls: Option<tokio_rustls::TlsAcceptor>) -> TestRis {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let ris = TestRis {
            address,
            received: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            silent: Arc::default(),
        };
        let (received, queue, silent) = (ris.received.clone(), ris.script.clone(), ris.silent.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (received, queue, silent, tls) = (received.clone(), queue.clone(), silent.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve(stream, received, queue, silent).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, received, queue, silent).await
                            }
                        }
                    }
                });
            }
        });
        ris
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

/// One connection of the test RIS: each message is kept and answered as scripted.
async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    received: Arc<Mutex<Vec<String>>>,
    queue: Arc<Mutex<std::collections::VecDeque<Answer>>>,
    silent: Arc<AtomicBool>,
) {
    let mut deframer = Deframer::new(1 << 20);
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            return;
        }
        for f in deframer.push(&buf[..n]) {
            let Frame::Message(bytes) = f else { return };
            let text = String::from_utf8(bytes).unwrap();
            received.lock().unwrap().push(text.clone());
            let answer = if silent.load(Ordering::SeqCst) {
                Answer::Silence
            } else {
                queue.lock().unwrap().pop_front().unwrap_or(Answer::Ack("AA"))
            };
            if let Answer::Ack(code) = answer
                && stream.write_all(&frame(ack_for(&text, code).as_bytes())).await.is_err()
            {
                return;
            }
        }
    }
}

/// Field `n` of the first `segment` of an HL7 message (MSH-1 is the separator).
fn field(message: &str, segment: &str, n: usize) -> String {
    let seg = message.split('\r').find(|s| s.starts_with(segment)).unwrap_or_else(|| panic!("no {segment} in {message:?}"));
    let fields: Vec<&str> = seg.split('|').collect();
    fields.get(if segment == "MSH" { n - 1 } else { n }).copied().unwrap_or("").to_owned()
}

fn ack_for(message: &str, code: &str) -> String {
    let control = field(message, "MSH", 10);
    let mut ack = format!("MSH|^~\\&|RIS|HOSP|RADSIGHT||20261203120000||ACK^R01^ACK|ACK-{control}|P|2.5.1\rMSA|{code}|{control}\r");
    if code != "AA" {
        ack.push_str("ERR|||207^Application internal error^HL70357|E||||The worklist is locked\r");
    }
    ack
}

/// The demo EHR on its own port, its patient the tests' patient.
async fn start_ehr() -> EhrSim {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let sim = EhrSim::new(&address, vec![demo_patient(PATIENT)]);
    let s = sim.clone();
    let server = HttpServer::new(move || {
        let s = s.clone();
        App::new().configure(move |c| s.routes(c))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    sim
}

/// radsight's client registration at the EHR: its published JWKS URL and the write scopes.
fn registration(app: &TestApp, scopes: &str) -> BackendClient {
    BackendClient {
        client_id: BACKEND_CLIENT.into(),
        jwks_url: Some(app.url("/.well-known/jwks.json")),
        jwks: None,
        scopes: scopes.split(' ').map(str::to_owned).collect(),
    }
}

/// radsight with the RIS and the EHR as outputs (same patient namespace as the test hospital),
/// fast retries, and a first signing key.
async fn app_with_outputs(
    backend: Backend,
    ris: Option<&TestRis>,
    ehr: Option<&EhrSim>,
    more: impl FnOnce(&mut radsight::configuration::Settings),
) -> TestApp {
    let ris_address = ris.map(|r| r.address.clone());
    let ehr_base = ehr.map(|e| e.fhir_base());
    let app = app_with_pacs_configured(backend, 64 << 20, move |s| {
        if let Some(address) = ris_address {
            s.outputs.ris = vec![radsight::configuration::RisDestination {
                name: "test-ris".into(),
                address,
                receiving_application: "RIS".into(),
                receiving_facility: "HOSP".into(),
                assigning_authority: "HOSP".into(),
                sending_application: "RADSIGHT".into(),
                sending_facility: "AI".into(),
                tls: None,
                ack_timeout_ms: 500,
            }];
        }
        if let Some(base) = ehr_base {
            s.patient_namespaces[0].issuers.push(base.clone());
            s.outputs.ehr = vec![radsight::configuration::EhrDestination {
                fhir_base: base,
                client_id: BACKEND_CLIENT.into(),
                token_url: String::new(),
                scope: radsight::configuration::DEFAULT_EHR_SCOPE.into(),
                timeout_ms: 5_000,
            }];
        }
        s.outputs.poll_interval_ms = 50;
        s.outputs.backoff_base_ms = 50;
        s.outputs.backoff_max_ms = 100;
        more(s);
    })
    .await;
    let rotated = app.cli(&["keys", "rotate"]);
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    app
}

fn rows_of<'a>(rows: &'a [outbox::Model], kind: &str) -> Vec<&'a outbox::Model> {
    rows.iter().filter(|d| d.kind == kind).collect()
}

/// Runs the independent verifier on a receipt as radsight serialises it (hex proof).
fn verify(app: &TestApp, receipt: &Value, entry: &str) -> (bool, String) {
    let checkpoint = receipt["checkpoint"].as_str().unwrap();
    let root_b64 = checkpoint.lines().nth(2).expect("a checkpoint's third line is its root");
    let leaf = sha2::Sha256::new().chain_update([0u8]).chain_update(entry.as_bytes()).finalize();
    let request = json!({
        "vkey": vkey(app),
        "checkpoint": checkpoint,
        "inclusion": [{
            "index": receipt["leaf_index"],
            "tree_size": receipt["tree_size"],
            "leaf_hash": hex::encode(leaf),
            "proof": receipt["proof"],
            "root_hash": hex::encode(STANDARD.decode(root_b64).unwrap()),
            "entry": entry,
        }],
    });
    run_python("audit_verifier.py", &request.to_string())
}

/// hl7apy's reading of an ORU (strict v2.5.1 validation), as tests/python/read_oru.py prints it.
fn read_oru(message: &str) -> Value {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), message).unwrap();
    let out = std::process::Command::new(crate::helpers::python())
        .arg(format!("{}/tests/python/read_oru.py", env!("CARGO_MANIFEST_DIR")))
        .arg(file.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "hl7apy refuses the ORU: {}\n{message:?}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn a_result_reaches_the_ris_as_an_oru_and_the_ehr_record_as_a_bundle_both_with_the_receipt(backend: Backend) {
    // The RIS first answers AE, then keeps quiet, then accepts.
    let ris = TestRis::start(&[Answer::Ack("AE"), Answer::Silence]).await;
    let ehr = start_ehr().await;
    let app = app_with_outputs(backend, Some(&ris), Some(&ehr), |_| {}).await;
    ehr.register_backend_client(registration(&app, radsight::configuration::DEFAULT_EHR_SCOPE));
    let jwks = app.send(reqwest::Method::GET, "/.well-known/jwks.json", None, None).await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.json()["keys"].as_array().unwrap().len(), 1);
    assert!(jwks.json()["keys"][0].get("d").is_none(), "only public keys are published");

    let study = analysed_study(&app, "RIS-1").await;
    let rows =
        wait_for_deliveries(&app, "the ORU and the Bundle delivered", |r| r.len() == 2 && r.iter().all(|d| d.state == "delivered")).await;

    // The ORU: three attempts (AE, no ACK, AA), the same message each time.
    let oru_row = rows_of(&rows, "hl7-oru")[0];
    assert_eq!(oru_row.attempts, 3, "{oru_row:?}");
    let received = ris.received();
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|m| m == &received[0]), "every retry sends the same message");
    let control = field(&received[0], "MSH", 10);
    assert_eq!(Some(&control), oru_row.object_id.as_ref());
    let reasons: Vec<String> = app
        .audit_of("output.delivery")
        .await
        .iter()
        .filter(|e| e.entities.contains(&oru_row.id) && e.outcome != "success")
        .map(|e| serde_json::from_str::<Value>(&e.detail).unwrap()["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(reasons, ["ack-error", "ack-timeout"]);

    // hl7apy reads it as a valid v2.5.1 ORU^R01 naming the patient, the order and the study.
    let oru = read_oru(&received[0]);
    assert_eq!(oru["message_type"], "ORU^R01^ORU_R01", "{oru:#}");
    assert_eq!(oru["version"], "2.5.1");
    assert_eq!(oru["patient_id"], PATIENT);
    assert_eq!(oru["assigning_authority"], "HOSP");
    assert_eq!((&oru["placer"], &oru["filler"]), (&json!("PLC-RIS-1"), &json!("FIL-RIS-1")));
    assert_eq!((&oru["orc_placer"], &oru["orc_filler"]), (&json!("PLC-RIS-1"), &json!("FIL-RIS-1")));
    assert_eq!(oru["study_uid"], study.as_str());
    assert_eq!(oru["result_status"], "F");
    let obx = oru["observations"].as_array().unwrap();
    let nodule = obx.iter().find(|o| o["code"]["code"] == "nodule").unwrap_or_else(|| panic!("a nodule OBX in {oru:#}"));
    assert_eq!(nodule["value_type"], "NM");
    assert!(["A", "N"].contains(&nodule["abnormal_flag"].as_str().unwrap()), "{nodule}");
    assert!(nodule["equipment"].as_str().unwrap().starts_with("radsight-phantom-cxr@"), "{nodule}");
    assert!(obx.iter().any(|o| o["value_type"] == "RP"), "the result's URL: {oru:#}");
    assert!(oru["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("not a diagnosis")), "{oru:#}");

    // Its receipt is the inference entry's, and verifies; one changed byte does not.
    let receipt = &oru["receipt"]["json"];
    let entry = receipt["entry"].as_str().unwrap().to_owned();
    assert!(entry.contains("model.inference") && entry.contains("nodule"), "{entry}");
    let (ok, report) = verify(&app, receipt, &entry);
    assert!(ok, "the ORU's receipt verifies: {report}");
    let (ok, _) = verify(&app, receipt, &entry.replacen("nodule", "nodula", 1));
    assert!(!ok, "a changed entry does not verify");

    // The EHR: one transaction, valid R4B, authorised by a backend-services token.
    let transactions = ehr.received_transactions();
    assert_eq!(transactions.len(), 1);
    let (valid, out) = run_python("validate_bundle.py", &transactions[0].to_string());
    assert!(valid, "the transaction validates as R4B: {out}");
    let reports = ehr.resources("DiagnosticReport");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["subject"]["reference"], format!("Patient/{PATIENT}"));
    assert_eq!(reports[0]["meta"]["security"][0]["code"], "AIAST", "AI-asserted, as AI Transparency on FHIR labels it");
    let report_id = reports[0]["id"].as_str().unwrap();
    for r in &reports[0]["result"].as_array().unwrap()[..] {
        assert!(r["reference"].as_str().unwrap().starts_with("Observation/"), "references resolved by the EHR: {r}");
    }
    let devices = ehr.resources("Device");
    assert_eq!(devices[0]["type"]["coding"][0]["code"], "Artificial-Intelligence");
    let provenance = ehr.resources("Provenance");
    assert_eq!(provenance.len(), 1);
    assert!(provenance[0]["target"].as_array().unwrap().iter().any(|t| t["reference"] == format!("DiagnosticReport/{report_id}")));
    let located = app
        .audit_of("output.delivery")
        .await
        .into_iter()
        .find(|e| e.entities.contains(&rows_of(&rows, "fhir-bundle")[0].id) && e.outcome == "success")
        .unwrap();
    assert!(located.detail.contains(&format!("DiagnosticReport/{report_id}")), "{}", located.detail);

    // The Provenance carries the same receipt.
    let ext = &provenance[0]["extension"][0];
    assert_eq!(ext["url"], radsight::results::fhir::RECEIPT_EXTENSION);
    let part = |name: &str| ext["extension"].as_array().unwrap().iter().filter(|e| e["url"] == name).cloned().collect::<Vec<Value>>();
    let fhir_entry = String::from_utf8(STANDARD.decode(part("entry")[0]["valueBase64Binary"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(fhir_entry, entry, "the ORU and the record prove the same entry");
    let fhir_receipt = json!({
        "leaf_index": part("leafIndex")[0]["valueString"].as_str().unwrap().parse::<u64>().unwrap(),
        "tree_size": part("treeSize")[0]["valueString"].as_str().unwrap().parse::<u64>().unwrap(),
        "proof": part("proof").iter().map(|p| hex::encode(STANDARD.decode(p["valueBase64Binary"].as_str().unwrap()).unwrap())).collect::<Vec<_>>(),
        "checkpoint": part("checkpoint")[0]["valueString"],
    });
    let (ok, report) = verify(&app, &fhir_receipt, &fhir_entry);
    assert!(ok, "the Provenance's receipt verifies: {report}");

    // Both sent again (as after an answer that never came): the EHR keeps one of each
    // resource, and the RIS gets the same control id.
    let counts = |sim: &EhrSim| ["DiagnosticReport", "Observation", "Device", "Provenance"].map(|t| sim.resources(t).len());
    let before = counts(&ehr);
    outbox::Entity::update_many()
        .col_expr(outbox::Column::State, Expr::value("pending"))
        .filter(outbox::Column::StudyUid.eq(study.clone()))
        .exec(&app.db)
        .await
        .unwrap();
    wait_for_deliveries(&app, "the second delivery", |r| {
        r.iter().all(|d| d.state == "delivered" && d.updated_at > d.created_at && d.attempts >= 2)
    })
    .await;
    assert_eq!(ehr.received_transactions().len(), 2);
    assert_eq!(counts(&ehr), before, "a second transaction creates nothing");
    assert_eq!(field(ris.received().last().unwrap(), "MSH", 10), control);
}

async fn refused_assertions_are_retried_as_configured_then_dead_and_a_replay_is_refused(backend: Backend) {
    let ehr = start_ehr().await;
    // The token endpoint as configured carries a query: the assertion's `aud` is then not the
    // endpoint's URL, and the EHR refuses it.
    let wrong_aud = format!("{}/token?tenant=1", ehr.fhir_base().trim_end_matches("/fhir"));
    let app = app_with_outputs(backend, None, Some(&ehr), |s| {
        s.outputs.max_attempts = 2;
        s.outputs.ehr[0].token_url = wrong_aud;
    })
    .await;
    // Registered with another key than radsight's.
    let stranger = radsight::keys::ClientKey::generate(jsonwebtoken::Algorithm::ES384).unwrap();
    ehr.register_backend_client(BackendClient {
        jwks_url: None,
        jwks: Some(serde_json::to_value(stranger.jwks()).unwrap()),
        ..registration(&app, radsight::configuration::DEFAULT_EHR_SCOPE)
    });
    analysed_study(&app, "EHR-KEY").await;
    let rows = wait_for_deliveries(&app, "the delivery dead after its attempts", |r| r.len() == 1 && r[0].state == "dead").await;
    assert_eq!(rows[0].attempts, 2, "retried as configured");
    assert!(rows[0].last_error.as_deref().unwrap().starts_with("token-refused: invalid_client"), "{:?}", rows[0].last_error);
    assert!(ehr.resources("DiagnosticReport").is_empty());
    assert_eq!(ehr.token_refusals().len(), 2, "{:?}", ehr.token_refusals());

    // The right key registered, the aud still wrong: refused again, for the aud.
    ehr.register_backend_client(registration(&app, radsight::configuration::DEFAULT_EHR_SCOPE));
    assert_eq!(app.cli(&["outbox", "retry", &rows[0].id]).code, 0);
    wait_for_deliveries(&app, "dead again", |r| r[0].state == "dead" && r[0].attempts == 2).await;
    let refusals = ehr.token_refusals();
    assert!(refusals.len() == 4 && refusals[2].contains("aud"), "{refusals:?}");
    let listed = app.cli(&["outbox", "list", "--state", "dead"]);
    assert!(listed.stdout.contains("token-refused"), "{}", listed.stdout);
    assert_eq!(ehr.resources("DiagnosticReport").len(), 0);

    // The EHR checks an assertion signed with radsight's key against radsight's published JWKS,
    // and refuses the same assertion a second time.
    let key = radsight::keys::keyring::Keyring::open(&app.settings.outputs.keys_dir).active().unwrap().unwrap();
    let assertion = crate::smart_ehr::backend_assertion(&ehr, &key, BACKEND_CLIENT);
    let ask = || crate::smart_ehr::backend_token(&ehr, &assertion, "system/DiagnosticReport.c");
    assert_eq!(ask().await.0, 200, "{:?}", ehr.token_refusals());
    assert_eq!(ask().await.0, 401, "a replayed assertion is refused");
    assert!(ehr.token_refusals().last().unwrap().contains("jti"), "{:?}", ehr.token_refusals());
}

async fn an_expired_token_is_fetched_again_and_503_and_412_are_retried_but_403_is_dead(backend: Backend) {
    let ehr = start_ehr().await;
    // Retries a second apart: room to change the EHR's answer between two attempts.
    let app = app_with_outputs(backend, None, Some(&ehr), |s| {
        s.outputs.max_attempts = 6;
        s.outputs.backoff_base_ms = 1_500;
        s.outputs.backoff_max_ms = 1_500;
    })
    .await;
    ehr.register_backend_client(registration(&app, radsight::configuration::DEFAULT_EHR_SCOPE));
    analysed_study(&app, "EHR-A").await;
    wait_for_deliveries(&app, "the first result delivered", |r| r.len() == 1 && r[0].state == "delivered").await;

    // The EHR ends the cached token early and is briefly unavailable, then reports a
    // conditional-create conflict: radsight gets a new token and retries until it lands.
    ehr.revoke_backend_tokens();
    ehr.fail_writes(1, 503);
    let study = analysed_study(&app, "EHR-B").await;
    wait_for_deliveries(&app, "the 503", |r| {
        r.iter().any(|d| d.study_uid == study && d.last_error.as_deref() == Some("ehr-unavailable: HTTP 503"))
    })
    .await;
    ehr.fail_writes(1, 412);
    let rows = wait_for_deliveries(&app, "the second result delivered", |r| r.len() == 2 && r.iter().all(|d| d.state == "delivered")).await;
    let second = rows.iter().find(|d| d.study_uid == study).unwrap();
    assert_eq!(second.attempts, 3, "{second:?}");
    let reasons: Vec<String> = app
        .audit_of("output.delivery")
        .await
        .iter()
        .filter(|e| e.entities.contains(&second.id) && e.outcome != "success")
        .map(|e| serde_json::from_str::<Value>(&e.detail).unwrap()["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(reasons, ["ehr-unavailable", "ehr-duplicate-match"]);
    assert_eq!(ehr.resources("DiagnosticReport").len(), 2);
    // The revoked token was replaced by a new one without costing an attempt.
    assert!(ehr.token_refusals().is_empty(), "{:?}", ehr.token_refusals());

    // Without the scope to create DiagnosticReports: 403, dead at once with its reason.
    ehr.register_backend_client(registration(&app, "system/Observation.c"));
    ehr.revoke_backend_tokens();
    analysed_study(&app, "EHR-C").await;
    let rows = wait_for_deliveries(&app, "the third dead", |r| r.len() == 3 && r.iter().any(|d| d.state == "dead")).await;
    let dead = rows.iter().find(|d| d.state == "dead").unwrap();
    // The EHR grants what it may (Observation.c) and refuses the transaction that needs more.
    assert!(dead.last_error.as_deref().is_some_and(|e| e.starts_with("ehr-forbidden")), "{dead:?}");
    assert_eq!(dead.attempts, 1, "dead at once");
    assert_eq!(ehr.resources("DiagnosticReport").len(), 2);
}

/// kill -9 while the ORU waits for an ACK that does not come and the EHR answers 503: after a
/// restart, the RIS gets its one message (under one control id) and the EHR one report.
async fn deliveries_pending_at_a_kill_reach_the_ris_and_the_ehr_once_after_restart(backend: Backend) {
    let ris = TestRis::start(&[]).await;
    ris.silent.store(true, Ordering::SeqCst);
    let ehr = start_ehr().await;
    let db_app = app_with_outputs(backend, Some(&ris), Some(&ehr), |s| s.jobs.workers = 0).await;
    // The JWKS the EHR reads is served from the keyring every instance shares.
    ehr.register_backend_client(registration(&db_app, radsight::configuration::DEFAULT_EHR_SCOPE));
    ehr.fail_writes(1_000_000, 503);
    let mut settings = db_app.settings.clone();
    settings.server.port = 0;
    settings.hl7.bind = "127.0.0.1:0".into();
    settings.jobs.workers = 1;
    settings.outputs.max_attempts = 1000;
    settings.outputs.lease_ms = 500;
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), crate::pacs::orthanc_credentials().1).unwrap();
    for c in settings.dicomweb.credentials.iter_mut() {
        c.secret_file = Some(secret.path().to_owned());
    }
    let config = crate::helpers::ServeConfig::write(&settings);
    let (mut process, hl7_port) = config.start();
    crate::pacs_outputs::announced_phantom(hl7_port, "KILL-RIS").await;
    wait_for_deliveries(&db_app, "both failing before the kill", |r| r.len() == 2 && r.iter().all(|d| d.attempts >= 2)).await;
    process.kill();

    // Both sides back: the RIS answers and the EHR writes.
    ris.silent.store(false, Ordering::SeqCst);
    ehr.fail_writes(0, 503);
    let (restarted, _) = config.start();
    let rows =
        wait_for_deliveries(&db_app, "both delivered after the restart", |r| r.len() == 2 && r.iter().all(|d| d.state == "delivered"))
            .await;
    drop(restarted);
    let controls: std::collections::BTreeSet<String> = ris.received().iter().map(|m| field(m, "MSH", 10)).collect();
    assert_eq!(controls.len(), 1, "one message, however often it was sent: {controls:?}");
    assert_eq!(Some(controls.first().unwrap()), rows_of(&rows, "hl7-oru")[0].object_id.as_ref());
    assert_eq!(ehr.resources("DiagnosticReport").len(), 1, "one report in the record");
    let verify = db_app.cli(&["audit", "verify"]);
    assert_eq!(verify.code, 0, "{}\n{}", verify.stdout, verify.stderr);
}

/// MLLP over TLS to a RIS that asks for radsight's client certificate: delivered when
/// radsight trusts the RIS's CA and presents its certificate; not when it trusts another CA.
async fn the_oru_goes_over_mutual_tls_and_a_ris_certificate_from_another_ca_is_not_trusted(backend: Backend) {
    use crate::mllp_tls::{ca, issue};
    let dir = tempfile::tempdir().unwrap();
    ca(dir.path(), "ca");
    ca(dir.path(), "other-ca");
    issue(dir.path(), "ca", "ris", "serverAuth");
    issue(dir.path(), "ca", "radsight", "clientAuth");
    let acceptor = radsight::mllp::tls::acceptor(&radsight::configuration::Hl7Tls {
        cert_file: dir.path().join("ris.pem"),
        key_file: dir.path().join("ris.key"),
        client_ca_file: Some(dir.path().join("ca.pem")),
    })
    .unwrap();
    let ris = TestRis::start_with(&[], Some(acceptor)).await;
    let tls = |ca_name: &str| radsight::configuration::RisTls {
        ca_file: dir.path().join(format!("{ca_name}.pem")),
        cert_file: Some(dir.path().join("radsight.pem")),
        key_file: Some(dir.path().join("radsight.key")),
        server_name: String::new(),
    };
    let (trusted, distrusted) = (tls("ca"), tls("other-ca"));
    let app = app_with_outputs(backend, Some(&ris), None, move |s| {
        let mut second = s.outputs.ris[0].clone();
        s.outputs.ris[0].tls = Some(trusted);
        second.name = "distrusting".into();
        second.tls = Some(distrusted);
        s.outputs.ris.push(second);
        s.outputs.max_attempts = 2;
    })
    .await;
    analysed_study(&app, "TLS-1").await;
    let rows = wait_for_deliveries(&app, "one delivered, one dead", |r| {
        r.len() == 2 && r.iter().any(|d| d.state == "delivered") && r.iter().any(|d| d.state == "dead")
    })
    .await;
    let dead = rows.iter().find(|d| d.state == "dead").unwrap();
    assert_eq!(dead.destination, "distrusting");
    assert!(dead.last_error.as_deref().unwrap().starts_with("ris-tls-failed"), "{dead:?}");
    assert_eq!(ris.received().len(), 1, "only the trusting destination's message arrived");
    read_oru(&ris.received()[0]);
}

backend_tests!(
    the_oru_goes_over_mutual_tls_and_a_ris_certificate_from_another_ca_is_not_trusted,
    a_result_reaches_the_ris_as_an_oru_and_the_ehr_record_as_a_bundle_both_with_the_receipt,
    refused_assertions_are_retried_as_configured_then_dead_and_a_replay_is_refused,
    an_expired_token_is_fetched_again_and_503_and_412_are_retried_but_403_is_dead,
    deliveries_pending_at_a_kill_reach_the_ris_and_the_ehr_once_after_restart,
);
