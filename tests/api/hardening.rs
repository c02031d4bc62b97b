//! Hardening: rate limits answer 429 with `Retry-After`; refusals by strangers are written once
//! per source and reason per window and counted (the counts add up); HL7 senders are checked
//! against the address ranges and `MSH-3`/`MSH-4` pairs; a reused control id with other content
//! gets AE; a FHIR notification cannot move a study to another patient; and a shutdown under
//! load loses no answered hook call or acknowledged message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use radsight::configuration::Hl7Sender;
use radsight::store::entities::{audit_entry, hl7_message};
use sea_orm::EntityTrait;
use serde_json::{Value, json};

use crate::helpers::{Backend, PATIENT, TestApp, example, spawn_app_with};
use crate::hl7::{MllpClient, omi};

fn detail(e: &audit_entry::Model) -> Value {
    serde_json::from_str(&e.detail).unwrap()
}

/// Refusals of `reason` in the log: the entries written in full (each is one refusal) plus the
/// counts of the summaries.
async fn refusals_logged(app: &TestApp, action: &str, reason: &str) -> (usize, u64) {
    let entries = app.audit().await;
    let full = entries.iter().filter(|e| e.action == action && detail(e)["reason"] == reason).count();
    let counted = entries
        .iter()
        .filter(|e| e.action == "refusal.summary" && detail(e)["reason"] == reason)
        .map(|e| detail(e)["count"].as_u64().unwrap())
        .sum();
    (full, counted)
}

async fn a_flood_of_bad_tokens_is_throttled_and_logged_bounded_with_counts_that_add_up(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.limits.per_source_per_second = 2;
        s.limits.per_source_burst = 10;
        // The window closes at shutdown, in this test.
        s.limits.refusal_window_secs = 3600;
    })
    .await;
    let bad = app.es384.client_token("https://not-registered.example.org", &app.url("/cds-services")).unwrap();
    let (mut unauthorized, mut throttled) = (0, 0);
    for _ in 0..40 {
        let reply = app.discovery(Some(&bad)).await;
        match reply.status.as_u16() {
            401 => unauthorized += 1,
            429 => {
                throttled += 1;
                let retry: u64 = reply.headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=2).contains(&retry), "Retry-After {retry}");
                assert_eq!(reply.outcome(429)["code"], "throttled");
            }
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    assert!(unauthorized >= 10 && throttled >= 20, "{unauthorized} refused, {throttled} throttled");
    assert!(app.audit().await.len() < 10, "a flood writes a handful of entries, not one per request");

    app.shut_down().await;
    let (full, counted) = refusals_logged(&app, "auth.reject", "unknown-iss").await;
    assert_eq!((full, full as u64 + counted), (1, unauthorized as u64), "one entry in full, the rest counted");
    let (full, counted) = refusals_logged(&app, "http.throttled", "source-rate-limit").await;
    assert_eq!((full, full as u64 + counted), (1, throttled as u64));
    let first = app.audit().await.into_iter().find(|e| e.action == "auth.reject").unwrap();
    assert_eq!(detail(&first)["source"], "127.0.0.1");
}

async fn a_client_over_its_rate_is_throttled_after_it_authenticates(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.limits.per_client_per_second = 1;
        s.limits.per_client_burst = 3;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(app.hook("radsight-imaging-order-select", &example("order-select")).await.status.as_u16());
    }
    assert_eq!(&statuses[..3], [200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    assert!(statuses.iter().all(|s| [200, 429].contains(s)), "{statuses:?}");
    let throttled = app.audit_of("http.throttled").await;
    assert_eq!(throttled.len(), 1, "the first throttled call is written, the rest counted");
    assert_eq!(detail(&throttled[0])["reason"], "client-rate-limit");
}

fn imaging_study(uid: &str, patient: &str) -> Value {
    json!({"resourceType": "ImagingStudy", "status": "available",
        "subject": {"reference": format!("Patient/{patient}")},
        "identifier": [{"system": "urn:dicom:uid", "value": format!("urn:oid:{uid}")}]})
}

async fn a_notification_cannot_move_a_study_to_another_patient(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.jobs.workers = 0).await;
    let uid = "1.2.826.0.7.77";
    assert_eq!(app.post("/fhir/notifications", &imaging_study(uid, PATIENT)).await.status, 202);
    let reply = app.post("/fhir/notifications", &imaging_study(uid, "someone-else")).await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert_eq!(reply.outcome(409)["code"], "conflict");
    assert_eq!(app.jobs().await.len(), 1, "nothing was queued for the other patient");
    let conflict = app.audit_of("identity.conflict").await;
    assert_eq!(conflict.len(), 1);
    assert_eq!(conflict[0].patient_ref.as_deref(), Some("Patient/someone-else"));
    assert_eq!(detail(&conflict[0])["study_patient"], format!("Patient/{PATIENT}"));
}

async fn a_client_may_announce_only_so_many_studies_a_minute(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.jobs.workers = 0;
        s.limits.studies_per_client_per_minute = 3;
    })
    .await;
    for i in 0..3 {
        assert_eq!(app.post("/fhir/notifications", &imaging_study(&format!("1.2.826.0.8.{i}"), PATIENT)).await.status, 202);
    }
    let reply = app.post("/fhir/notifications", &imaging_study("1.2.826.0.8.9", PATIENT)).await;
    assert_eq!(reply.status, 429, "{}", reply.text);
    assert!(reply.headers.contains_key("retry-after"));
    assert_eq!(app.jobs().await.len(), 3);
}

async fn an_unknown_hl7_sender_gets_ar_and_is_logged_once_per_window(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.hl7.senders = vec![Hl7Sender { application: "RIS".into(), facility: "HOSP".into() }];
        s.limits.refusal_window_secs = 3600;
    })
    .await;
    let mut client = MllpClient::connect(&app).await;
    for i in 0..5 {
        let message = omi(&format!("X{i}"), "MRN1", "1.2.826.0.9.1").replacen("|RIS|HOSP|", "|EVIL|ELSEWHERE|", 1);
        let ack = client.send(&message).await;
        assert_eq!((ack.code(), ack.field("ERR", 3).split('^').next().unwrap().to_owned()), ("AR".into(), "204".into()), "{ack:?}");
    }
    // A registered sender on the same connection is taken.
    assert_eq!(client.send(&omi("OK1", "MRN1", "1.2.826.0.9.1")).await.code(), "AA");
    assert_eq!(hl7_message::Entity::find().all(&app.db).await.unwrap().len(), 1);
    app.shut_down().await;
    let (full, counted) = refusals_logged(&app, "hl7.message", "sender-not-allowed").await;
    assert_eq!((full, full as u64 + counted), (1, 5));
}

async fn a_source_outside_the_allowed_ranges_gets_ar(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.hl7.allowed_sources = vec!["10.0.0.0/8".parse().unwrap()]).await;
    let mut client = MllpClient::connect(&app).await;
    let ack = client.send(&omi("C1", "MRN1", "1.2.826.0.9.2")).await;
    assert_eq!(ack.code(), "AR", "{ack:?}");
    assert!(hl7_message::Entity::find().all(&app.db).await.unwrap().is_empty());
    assert!(app.jobs().await.is_empty());
    let entry = app.audit_of("hl7.message").await.pop().unwrap();
    assert_eq!((detail(&entry)["reason"].as_str(), detail(&entry)["source"].as_str()), (Some("source-not-allowed"), Some("127.0.0.1")));
}

async fn a_reused_control_id_with_other_content_gets_ae_and_a_true_resend_aa(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.jobs.workers = 0).await;
    let mut client = MllpClient::connect(&app).await;
    let first = omi("C7", "MRN1", "1.2.826.0.9.3");
    assert_eq!(client.send(&first).await.code(), "AA");
    // The same message sent again by an engine that stamps MSH-7 anew: a resend.
    assert_eq!(client.send(&first.replace("20261129101500", "20261129103000")).await.code(), "AA");
    // The same control id for another patient's order: refused, and nothing of it stored.
    let ack = client.send(&omi("C7", "MRN2", "1.2.826.0.9.4")).await;
    assert_eq!(ack.code(), "AE", "{ack:?}");
    assert!(ack.field("ERR", 3).starts_with("205"), "{ack:?}");
    assert_eq!(app.jobs().await.len(), 1, "only the first message's study is queued");
    let refused = app.audit_of("hl7.message").await.into_iter().filter(|e| detail(e)["reason"] == "control-id-reused").count();
    assert_eq!(refused, 1);
}

/// Hook calls and MLLP messages run until the instance is told to stop: every hook call
/// answered 200 has its `cds.hook` entry, every message acknowledged AA is stored, the instance
/// stops, and the log verifies.
async fn a_shutdown_under_load_loses_no_answered_call_or_acknowledged_message(backend: Backend) {
    let app = Arc::new(spawn_app_with(backend, |s| s.server.shutdown_grace_secs = 10).await);
    let stop = Arc::new(AtomicBool::new(false));
    let hooks = (0..3)
        .map(|_| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answered = 0;
                while !stop.load(Ordering::Relaxed) {
                    let path = "/cds-services/radsight-imaging-order-select";
                    let token = app.token(path);
                    let url = app.url(path);
                    match app
                        .http
                        .post(url)
                        .bearer_auth(token)
                        .header("content-type", "application/json")
                        .body(example("order-select").to_string())
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 200 => answered += 1,
                        _ => break,
                    }
                }
                answered
            })
        })
        .collect::<Vec<_>>();
    let messages = (0..2)
        .map(|c| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut client = MllpClient::connect(&app).await;
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let control = format!("L{c}-{i}");
                    let Some(ack) = client.try_send(&omi(&control, "MRN9", &format!("1.2.826.0.10.{c}.{i}"))).await else {
                        break;
                    };
                    if ack.code() == "AA" {
                        acked.push(control);
                    }
                }
                acked
            })
        })
        .collect::<Vec<_>>();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    app.shut_down().await;
    stop.store(true, Ordering::Relaxed);

    let mut answered = 0;
    for h in hooks {
        answered += h.await.unwrap();
    }
    let mut acked = Vec::new();
    for m in messages {
        acked.extend(m.await.unwrap());
    }
    assert!(answered > 0 && !acked.is_empty(), "load ran: {answered} hook calls, {} messages", acked.len());
    let hook_entries = app.audit_of("cds.hook").await.into_iter().filter(|e| e.outcome == "success").count();
    assert!(hook_entries >= answered, "{hook_entries} hook entries for {answered} answered calls");
    let stored: Vec<String> = hl7_message::Entity::find().all(&app.db).await.unwrap().into_iter().map(|m| m.control_id).collect();
    let lost: Vec<_> = acked.iter().filter(|c| !stored.contains(c)).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    let verify = app.cli(&["audit", "verify"]);
    assert_eq!(verify.code, 0, "{}\n{}", verify.stdout, verify.stderr);
    assert!(app.http.get(app.url("/healthz")).send().await.is_err(), "the instance no longer answers");
}

/// The real process on SIGTERM: it stops within its grace period with exit code 0, and what
/// it acknowledged is stored and the log verifies.
async fn sigterm_stops_the_process_cleanly(backend: Backend) {
    let db_app = spawn_app_with(backend, |s| s.jobs.workers = 0).await;
    let settings = db_app.settings.clone();
    let (mut process, hl7_port) = crate::helpers::serve_process(|c| {
        c.env("DATABASE_URL", &db_app.db_url)
            .env("RADSIGHT_SERVER__PORT", "0")
            .env("RADSIGHT_SERVER__SHUTDOWN_GRACE_SECS", "5")
            .env("RADSIGHT_HL7__BIND", "127.0.0.1:0")
            .env("RADSIGHT_JOBS__WORKERS", "0")
            .env("RADSIGHT_AUDIT__CHECKPOINT_KEY_FILE", &settings.audit.checkpoint_key_file)
            .env("RADSIGHT_AUDIT__CHECKPOINT_DIR", &settings.audit.checkpoint_dir)
            .env("RADSIGHT_ANALYSIS__MODELS_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
    });
    let mut client = MllpClient::connect_to(hl7_port).await;
    assert_eq!(client.send(&omi("TERM-1", "MRN1", "1.2.826.0.13.1")).await.code(), "AA");
    let status = process.terminate(std::time::Duration::from_secs(15)).expect("the process exits within its grace period");
    assert!(status.success(), "{status:?}");
    let stored = hl7_message::Entity::find().all(&db_app.db).await.unwrap();
    assert!(stored.iter().any(|m| m.control_id == "TERM-1"));
    let verify = db_app.cli(&["audit", "verify"]);
    assert_eq!(verify.code, 0, "{}\n{}", verify.stdout, verify.stderr);
}

/// A write queue that is full refuses at once and in the protocol's terms: a hook 503 with
/// `Retry-After` and an OperationOutcome, an HL7 message AE (resent later, it is taken). The
/// refusals are counted into the refusal summary, not written one by one; every answered call
/// and acknowledged message has its entry.
async fn a_full_write_queue_answers_at_once_and_counts_its_refusals(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.audit.max_pending = 2;
        s.jobs.workers = 0; // only the calls and messages below write
        s.limits.refusal_window_secs = 1; // summaries written every second
    })
    .await;
    // A burst of hook calls, then a burst of messages on many connections (together, the
    // messages, resent at once on AE, would leave the hooks no room at all).
    let body = example("order-select");
    let replies = futures_util::future::join_all((0..40).map(|_| app.hook("radsight-imaging-order-select", &body))).await;
    let acks = futures_util::future::join_all((0..8).map(|c| {
        let port = app.hl7_port;
        async move {
            let mut client = MllpClient::connect_to(port).await;
            let mut acks = Vec::new();
            for i in 0..5 {
                let control = format!("Q{c}-{i}");
                let message = crate::hl7::oru(&control, PATIENT, &format!("1.2.826.0.9.88.{c}.{i}"), "F");
                acks.push((message.clone(), client.send(&message).await));
            }
            acks
        }
    }))
    .await;

    let (mut answered, mut refused) = (0, 0);
    for reply in &replies {
        match reply.status.as_u16() {
            200 => answered += 1,
            503 => {
                refused += 1;
                assert_eq!(reply.headers["retry-after"], "1");
                assert_eq!(reply.outcome(503)["code"], "transient");
            }
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    let acks: Vec<_> = acks.into_iter().flatten().collect();
    let busy: Vec<&String> = acks.iter().filter(|(_, a)| a.code() == "AE").map(|(m, _)| m).collect();
    for (_, ack) in &acks {
        assert!(ack.code() == "AA" || ack.0.contains("radsight is busy"), "{}", ack.0);
    }
    assert!(answered >= 1 && refused >= 1, "{answered} answered, {refused} refused");
    assert!(!busy.is_empty() && busy.len() < acks.len(), "{} of {} messages refused", busy.len(), acks.len());
    // A refused message stored nothing: sent again when the queue is free, it is taken.
    let mut client = MllpClient::connect(&app).await;
    for message in &busy {
        assert_eq!(client.send(message).await.code(), "AA");
    }

    // The refusals reach the log as counts in the windows' summaries, none one by one.
    let deadline = std::time::Instant::now() + crate::helpers::PATIENCE;
    loop {
        let (full, counted) = refusals_logged(&app, "cds.hook", "write-queue-full").await;
        assert_eq!(full, 0, "a refused write is not written one by one");
        if counted == (refused + busy.len()) as u64 {
            break;
        }
        assert!(counted < (refused + busy.len()) as u64, "more refusals counted ({counted}) than made");
        assert!(std::time::Instant::now() < deadline, "{counted} of {} refusals counted", refused + busy.len());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let audit = app.audit().await;
    assert_eq!(audit.iter().filter(|e| e.action == "cds.hook" && e.outcome == "success").count(), answered);
    assert_eq!(audit.iter().filter(|e| e.action == "hl7.message" && e.outcome == "success").count(), acks.len());
}

backend_tests!(
    sigterm_stops_the_process_cleanly,
    a_flood_of_bad_tokens_is_throttled_and_logged_bounded_with_counts_that_add_up,
    a_client_over_its_rate_is_throttled_after_it_authenticates,
    a_notification_cannot_move_a_study_to_another_patient,
    a_client_may_announce_only_so_many_studies_a_minute,
    an_unknown_hl7_sender_gets_ar_and_is_logged_once_per_window,
    a_source_outside_the_allowed_ranges_gets_ar,
    a_reused_control_id_with_other_content_gets_ae_and_a_true_resend_aa,
    a_shutdown_under_load_loses_no_answered_call_or_acknowledged_message,
    a_full_write_queue_answers_at_once_and_counts_its_refusals,
);
