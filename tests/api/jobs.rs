//! The durable job queue: a job whose worker died is run after a restart (lease expiry),
//! failures are retried with backoff and then the job is dead, and `radsight jobs` shows and
//! revives it.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{Backend, ServeProcess, TestApp, spawn_app_with};
use crate::hl7::{MllpClient, oru};

fn cli(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_radsight"))
        .args(args)
        .env("DATABASE_URL", &app.db_url)
        .env_remove("RADSIGHT_CONFIG")
        .current_dir(cwd.path())
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A URL on which nothing listens: a PACS that is down.
fn dead_pacs() -> String {
    format!("http://127.0.0.1:{}/dicom-web", crate::helpers::closed_port())
}

fn imaging_study(uid: &str, endpoint: &str) -> Value {
    json!({"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": "Patient/example-patient"},
        "identifier": [{"system": "urn:dicom:uid", "value": format!("urn:oid:{uid}")}],
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
        "contained": [{"resourceType": "Endpoint", "id": "pacs", "status": "active",
            "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "dicom-wado-rs"},
            "payloadType": [{"text": "DICOM"}], "address": endpoint}],
        "endpoint": [{"reference": "#pacs"}]})
}

async fn a_job_whose_worker_died_is_run_after_a_restart(backend: Backend) {
    // The first instance runs no workers: it acknowledges the result and queues the job.
    let first = spawn_app_with(backend, |s| s.jobs.workers = 0).await;
    let mut client = MllpClient::connect(&first).await;
    assert_eq!(client.send(&oru("K-1", "p-kill", "1.2.826.0.9.1", "F")).await.code(), "AA");
    // A worker claims it and dies before finishing: its lease is left to expire.
    let claimed = radsight::jobs::claim(&first.db, "crashed-worker", 300).await.unwrap().expect("the queued job");
    assert_eq!((claimed.state.as_str(), claimed.attempts), ("running", 1));
    assert!(radsight::jobs::claim(&first.db, "other", 300).await.unwrap().is_none(), "a leased job is not claimed twice");

    // "Restart": a new instance on the same database, with workers.
    let db_url = first.db_url.clone();
    let second = spawn_app_with(backend, move |s| s.database.url = db_url).await;
    let jobs = second.wait_for_jobs("the orphaned job to be run", |j| j.len() == 1 && j[0].state == "succeeded").await;
    assert_eq!(jobs[0].id, claimed.id);
    assert_eq!(jobs[0].attempts, 2, "the crashed attempt counts");
    assert_eq!(jobs[0].lease_owner, None);
    let started = second.audit_of("job.started").await;
    assert_eq!(started.len(), 1);
    assert!(started[0].entities.contains(&claimed.id));
}

async fn a_failing_job_is_retried_with_backoff_then_dead_and_can_be_revived(backend: Backend) {
    let pacs = dead_pacs();
    let allowed = pacs.clone();
    let app = spawn_app_with(backend, move |s| s.dicomweb.endpoints = vec![allowed]).await;
    let reply = app.post("/fhir/notifications", &imaging_study("1.2.826.0.9.2", &pacs)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);

    let jobs = app.wait_for_jobs("the job to die", |j| j.len() == 1 && j[0].state == "dead").await;
    let job = &jobs[0];
    assert_eq!((job.attempts, job.last_error.as_deref()), (3, Some("pacs-unreachable")));
    let failures: Vec<Value> = app.audit_of("job.failed").await.iter().map(|e| serde_json::from_str(&e.detail).unwrap()).collect();
    assert_eq!(failures.len(), 3);
    assert!(failures[..2].iter().all(|d| d["next"]["retry_at_ms"].is_i64()), "{failures:?}");
    assert_eq!(failures[2]["next"], "dead");
    let fetches = app.audit_of("dicomweb.fetch").await;
    assert_eq!(fetches.len(), 3);
    assert!(fetches.iter().all(|e| e.outcome == "error"));

    let (code, out, _) = cli(&app, &["jobs", "list", "--state", "dead"]);
    assert_eq!(code, 0);
    assert!(out.contains(&job.id) && out.contains("pacs-unreachable"), "{out}");
    let (code, out, _) = cli(&app, &["jobs", "list", "--state", "succeeded"]);
    assert_eq!(code, 0);
    assert!(!out.contains(&job.id));

    let (code, out, err) = cli(&app, &["jobs", "retry", &job.id]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(app.audit_of("job.retried").await.len(), 1);
    // It runs again with fresh attempts and, the PACS still being down, dies again.
    let deadline = std::time::Instant::now() + crate::helpers::PATIENCE;
    while app.audit_of("job.failed").await.len() < 6 {
        assert!(std::time::Instant::now() < deadline, "the revived job did not run its three attempts");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let jobs = app.wait_for_jobs("the revived job to die again", |j| j[0].state == "dead").await;
    assert_eq!(jobs[0].attempts, 3);
    let (code, _, err) = cli(&app, &["jobs", "retry", "no-such-job"]);
    assert_eq!(code, 2, "{err}");
}

async fn backoff_doubles_between_attempts(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.jobs.workers = 0;
        s.jobs.backoff_base_ms = 1000;
        s.jobs.backoff_max_ms = 3000;
    })
    .await;
    let mut client = MllpClient::connect(&app).await;
    assert_eq!(client.send(&oru("B-1", "p-backoff", "1.2.826.0.9.3", "F")).await.code(), "AA");
    let mut waits = Vec::new();
    for _ in 0..3 {
        // Make the job due now, claim it and fail it as a worker would.
        use radsight::store::entities::job;
        use sea_orm::{EntityTrait, sea_query::Expr};
        job::Entity::update_many().col_expr(job::Column::RunAfter, Expr::value(0i64)).exec(&app.db).await.unwrap();
        let j = radsight::jobs::claim(&app.db, "w", 10_000).await.unwrap().unwrap();
        let before = radsight::jobs::now_ms();
        match radsight::jobs::fail(&app.db, &j, "w", "test-failure", false, 1000, 3000).await.unwrap() {
            radsight::jobs::Failed::RetryAt(at) => waits.push(((at - before) as f64 / 1000.0).round() as i64),
            other => {
                assert_eq!(other, radsight::jobs::Failed::Dead);
                waits.push(-1);
            }
        }
    }
    assert_eq!(waits, [1, 2, -1], "1 s, then 2 s, then dead after the third attempt");
}

/// `radsight serve` as its own process on `db_url`, with no job workers.
fn serve_process(db_url: &str) -> (ServeProcess, u16) {
    crate::helpers::serve_process(|c| {
        c.env("DATABASE_URL", db_url)
            .env("RADSIGHT_SERVER__PORT", "0")
            .env("RADSIGHT_HL7__BIND", "127.0.0.1:0")
            .env("RADSIGHT_JOBS__WORKERS", "0")
            .env("RADSIGHT_ANALYSIS__MODELS_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
    })
}

async fn an_acknowledged_result_survives_a_killed_process(backend: Backend) {
    // A fresh database, migrated by a throwaway app; the real service is a separate process.
    let db_app = spawn_app_with(backend, |s| s.jobs.workers = 0).await;
    let (mut process, hl7_port) = serve_process(&db_app.db_url);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", hl7_port)).await.unwrap();
    let mut framed = vec![0x0b];
    framed.extend_from_slice(oru("KILL-1", "p-killed", "1.2.826.0.9.9", "F").as_bytes());
    framed.extend_from_slice(&[0x1c, 0x0d]);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(&framed).await.unwrap();
    let mut ack = Vec::new();
    while !ack.ends_with(&[0x1c, 0x0d]) {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(std::time::Duration::from_secs(15), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed before the ACK");
        ack.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&ack).contains("MSA|AA|KILL-1"));
    // SIGKILL right after the AA.
    process.kill();

    // Restart: an instance with workers on the same database runs the job.
    let db_url = db_app.db_url.clone();
    let restarted = spawn_app_with(backend, move |s| s.database.url = db_url).await;
    let jobs = restarted.wait_for_jobs("the acknowledged job to run", |j| j.len() == 1 && j[0].state == "succeeded").await;
    assert_eq!(jobs[0].study_uid, "1.2.826.0.9.9");
}

backend_tests!(
    an_acknowledged_result_survives_a_killed_process,
    a_job_whose_worker_died_is_run_after_a_restart,
    a_failing_job_is_retried_with_backoff_then_dead_and_can_be_revived,
    backoff_doubles_between_attempts,
);
