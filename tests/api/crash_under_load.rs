//! kill -9 under hook and MLLP load at once: a `radsight serve` process answers order-select
//! calls and ORU messages on several connections, and is killed mid-stream. After a restart,
//! every answered hook has its cards and its audit entry, every AA'd message its control id,
//! its study and its entry, and `audit verify` passes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::helpers::{Backend, ISS, ServeConfig, example, spawn_app_with};
use crate::hl7::{MllpClient, oru};

const SELECT: &str = "radsight-imaging-order-select";

async fn a_kill_under_hook_and_mllp_load_loses_nothing_acknowledged(backend: Backend) {
    // The database, migrated, with the clients and namespaces of a test app; the service under
    // test is a process of its own on it.
    let db_app = spawn_app_with(backend, |s| s.jobs.workers = 0).await;
    let mut settings = db_app.settings.clone();
    settings.server.port = 0;
    settings.server.public_url = db_app.address.clone(); // the URL the tokens are signed for
    settings.hl7.bind = "127.0.0.1:0".into();
    settings.jobs.workers = 0;
    let config = ServeConfig::write(&settings);
    let (mut process, http_port, hl7_port) = config.start_with_ports();
    let base = format!("http://127.0.0.1:{http_port}");

    let answered_cards: Arc<Mutex<Vec<String>>> = Arc::default();
    // The tokens of answered calls: each one's jti was recorded with the call's cards.
    let answered_tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut load = Vec::new();
    for w in 0..4 {
        let (http, base, answered_cards, answered_tokens) =
            (db_app.http.clone(), base.clone(), answered_cards.clone(), answered_tokens.clone());
        let key = radsight::keys::ClientKey::from_pem(jsonwebtoken::Algorithm::ES384, &db_app.es384.to_pem()).unwrap();
        let aud = db_app.url(&format!("/cds-services/{SELECT}"));
        load.push(tokio::spawn(async move {
            let body = example("order-select").to_string();
            for i in 0.. {
                let token = key.client_token(ISS, &aud).unwrap();
                let sent = http
                    .post(format!("{base}/cds-services/{SELECT}"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let Ok(reply) = sent else { break }; // the process is gone
                let status = reply.status();
                let Ok(text) = reply.text().await else { break };
                assert_eq!(status, 200, "hook call {w}/{i}: {text}");
                let cards: Value = serde_json::from_str(&text).unwrap();
                let uuids = cards["cards"].as_array().unwrap().iter().map(|c| c["uuid"].as_str().unwrap().to_owned());
                answered_cards.lock().unwrap().extend(uuids);
                answered_tokens.lock().unwrap().push(token);
            }
        }));
    }
    for c in 0..4 {
        let acked = acked.clone();
        load.push(tokio::spawn(async move {
            let mut client = MllpClient::connect_to(hl7_port).await;
            for i in 0.. {
                let control = format!("K{c}-{i}");
                let uid = format!("1.2.826.0.9.77.{c}.{i}");
                let Some(ack) = client.try_send(&oru(&control, &format!("p-kill-{c}"), &uid, "F")).await else { break };
                assert_eq!(ack.field("MSA", 1), "AA", "{control}: {}", ack.0);
                acked.lock().unwrap().push(control);
            }
        }));
    }
    // Kill once both kinds of load are well under way.
    let deadline = std::time::Instant::now() + crate::helpers::PATIENCE;
    while answered_cards.lock().unwrap().len() < 300 || acked.lock().unwrap().len() < 200 {
        assert!(std::time::Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    process.kill(); // SIGKILL, mid-stream
    for task in load {
        task.await.unwrap();
    }
    let answered_cards: BTreeSet<String> = answered_cards.lock().unwrap().iter().cloned().collect();
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    eprintln!("killed after {} answered cards and {} AA'd messages", answered_cards.len(), acked.len());

    // Restarted on the same database: nothing acknowledged is missing.
    let (restarted, restarted_http, _) = config.start_with_ports();
    let stored_cards: BTreeSet<String> = db_app.cards().await.into_iter().map(|c| c.uuid).collect();
    let missing: Vec<_> = answered_cards.difference(&stored_cards).collect();
    assert!(missing.is_empty(), "{} of {} answered cards are not stored: {missing:?}", missing.len(), answered_cards.len());
    let audit = db_app.audit().await;
    // A card's uuid carries its call's entry (`served_cards::call_of`): that entry is a hook
    // call's that stands for it (its hash's token, at least that many cards).
    let by_seq: std::collections::BTreeMap<i64, &radsight::store::entities::audit_entry::Model> =
        audit.iter().map(|e| (e.seq, e)).collect();
    let audited = |card: &str| {
        radsight::store::served_cards::call_of(card)
            .and_then(|p| by_seq.get(&p.seq))
            .is_some_and(|e| radsight::store::served_cards::entry_served(e, card))
    };
    let unaudited: Vec<_> = answered_cards.iter().filter(|c| !audited(c)).collect();
    assert!(unaudited.is_empty(), "every answered card's call has its hook audit entry: {unaudited:?}");
    let audited_messages: BTreeSet<String> = audit
        .iter()
        .filter(|e| e.action == "hl7.message" && e.outcome == "success")
        .flat_map(|e| serde_json::from_str::<Vec<Value>>(&e.entities).unwrap())
        .filter(|e| e["kind"] == "Hl7Message")
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<_> = acked.difference(&audited_messages).collect();
    assert!(missing.is_empty(), "{} of {} AA'd messages are not audited: {missing:?}", missing.len(), acked.len());
    let studies = {
        use sea_orm::EntityTrait;
        radsight::store::entities::study::Entity::find().all(&db_app.db).await.unwrap()
    };
    for control in &acked {
        let (c, i) = control.trim_start_matches('K').split_once('-').unwrap();
        let uid = format!("1.2.826.0.9.77.{c}.{i}");
        assert!(studies.iter().any(|s| s.study_uid == uid), "the study of {control} is stored");
    }
    // Every answered call used up its token durably: its jti is stored, and the restarted
    // process refuses the token as a replay.
    let answered_tokens = answered_tokens.lock().unwrap().clone();
    let stored_jtis: BTreeSet<String> = {
        use sea_orm::EntityTrait;
        radsight::store::entities::client_jti::Entity::find().all(&db_app.db).await.unwrap().into_iter().map(|r| r.jti).collect()
    };
    let jti_of = |token: &str| jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token).unwrap()["jti"].as_str().unwrap().to_owned();
    let unrecorded: Vec<_> = answered_tokens.iter().map(|t| jti_of(t)).filter(|j| !stored_jtis.contains(j)).collect();
    assert!(unrecorded.is_empty(), "{} of {} answered calls' jtis are not stored", unrecorded.len(), answered_tokens.len());
    let replay = db_app
        .http
        .post(format!("http://127.0.0.1:{restarted_http}/cds-services/{SELECT}"))
        .bearer_auth(answered_tokens.last().expect("calls were answered"))
        .header("content-type", "application/json")
        .body(example("order-select").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401, "an answered call's token is refused after the restart");
    let verify = db_app.cli(&["audit", "verify"]);
    drop(restarted);
    assert_eq!(verify.code, 0, "{}\n{}", verify.stdout, verify.stderr);
}

backend_tests!(a_kill_under_hook_and_mllp_load_loses_nothing_acknowledged);
