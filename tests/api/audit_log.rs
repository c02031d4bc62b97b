//! The Merkle audit log: signed checkpoints published outside the database, proofs that an
//! independent verifier (Python, written from RFC 9162) accepts, the tamper matrix against
//! published checkpoints, the auditor-only API, the FHIR AuditEvent export, and the migration of
//! a chain-only log into the tree.

use std::process::{Command, Stdio};

use futures_util::future::join_all;
use radsight::audit::{Action, AuditEvent, AuditLog, Outcome};
use sea_orm::{ConnectionTrait, DbBackend};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, example, run_python, spawn_app, spawn_app_with};

/// Appends `n` entries directly through the audit API.
async fn append(app: &TestApp, n: usize) {
    let log = AuditLog::default();
    for i in 0..n {
        let event = AuditEvent::new(Action::HookCall, Outcome::Success).actor(Some("https://ehr.example.org"), None).detail("i", i);
        log.record(&app.db, event).await.unwrap();
    }
}

fn checkpoint(app: &TestApp) -> String {
    let out = app.cli(&["audit", "checkpoint"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
}

fn vkey(app: &TestApp) -> String {
    let out = app.cli(&["audit", "vkey"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout.trim().to_owned()
}

async fn drop_guards(app: &TestApp) {
    let sql: Vec<&str> = match app.db.get_database_backend() {
        DbBackend::Postgres => vec![
            "DROP TRIGGER audit_entries_append_only ON audit_entries",
            "DROP TRIGGER audit_nodes_append_only ON audit_nodes",
            "DROP TRIGGER audit_checkpoints_append_only ON audit_checkpoints",
        ],
        _ => vec![
            "DROP TRIGGER audit_entries_no_update",
            "DROP TRIGGER audit_entries_no_delete",
            "DROP TRIGGER audit_nodes_no_UPDATE",
            "DROP TRIGGER audit_nodes_no_DELETE",
            "DROP TRIGGER audit_checkpoints_no_UPDATE",
            "DROP TRIGGER audit_checkpoints_no_DELETE",
        ],
    };
    for s in sql {
        app.db.execute_unprepared(s).await.unwrap();
    }
}

async fn a_signed_checkpoint_is_published_and_verify_checks_it(backend: Backend) {
    let app = spawn_app(backend).await;
    append(&app, 9).await; // plus the start entry
    let note = checkpoint(&app);
    assert!(note.starts_with("radsight.local/audit\n10\n"), "{note}");
    let published = std::fs::read_to_string(app.settings.audit.checkpoint_dir.join("checkpoint")).unwrap();
    assert_eq!(published, note);
    let v = app.cli(&["audit", "verify"]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    assert!(
        v.stdout.contains("10 entries") && v.stdout.contains("4 checkpoints matched") && v.stdout.contains("signatures verified"),
        "{}",
        v.stdout
    );
}

async fn proofs_served_to_auditors_pass_an_independent_rfc9162_verifier(backend: Backend) {
    let app = spawn_app(backend).await;
    append(&app, 36).await; // plus the start entry: 37
    let note = checkpoint(&app);
    let mut inclusion = Vec::new();
    let mut consistency = Vec::new();
    // A spread of sizes and positions, including powers of two and their neighbours.
    for (index, size) in [(0, 1), (0, 37), (36, 37), (15, 16), (16, 17), (5, 31), (20, 33), (31, 32), (7, 8), (12, 25)] {
        let r = app.auditor_get(&format!("/audit/proofs/inclusion?index={index}&tree_size={size}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.headers["cache-control"], "no-store");
        inclusion.push(r.json());
    }
    for (from, to) in [(1, 37), (16, 37), (17, 37), (31, 32), (8, 13), (36, 37), (37, 37), (3, 4)] {
        let r = app.auditor_get(&format!("/audit/proofs/consistency?from={from}&to={to}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        consistency.push(r.json());
    }
    // The CLI proof carries the entry itself, so the leaf hash is checked from content.
    let prove = app.cli(&["audit", "prove", "11"]);
    assert_eq!(prove.code, 0, "{}", prove.stderr);
    inclusion.push(serde_json::from_str(&prove.stdout).unwrap());

    let request = json!({"vkey": vkey(&app), "checkpoint": note, "inclusion": inclusion, "consistency": consistency});
    let (ok, out) = run_python("audit_verifier.py", &request.to_string());
    assert!(ok, "{out}");
    assert!(out.contains("valid checkpoint root = proof root at 37"), "{out}");

    // The verifier is not a rubber stamp: an altered proof and a forged checkpoint fail.
    let mut bad = inclusion[1].clone();
    bad["proof"][0] = json!("00".repeat(32));
    let (ok, out) = run_python("audit_verifier.py", &json!({"inclusion": [bad], "expect_valid": true}).to_string());
    assert!(!ok, "{out}");
    let forged = note.replacen("\n37\n", "\n38\n", 1);
    let (ok, out) = run_python("audit_verifier.py", &json!({"vkey": vkey(&app), "checkpoint": forged}).to_string());
    assert!(!ok, "{out}");
}

async fn a_rewritten_table_is_caught_by_the_published_checkpoint(backend: Backend) {
    let app = spawn_app(backend).await;
    append(&app, 11).await; // plus the start entry: 12
    checkpoint(&app);
    // An attacker with full database access rewrites entry 5 and recomputes everything after it:
    // chain, tree, even the stored checkpoints. Only the published copy is out of reach.
    drop_guards(&app).await;
    let entries = app.audit().await;
    for t in ["audit_checkpoints", "audit_nodes", "audit_entries"] {
        app.db.execute_unprepared(&format!("DELETE FROM {t}")).await.unwrap();
    }
    let log = AuditLog::default();
    for e in entries {
        let outcome = if e.seq == 5 { Outcome::Rejected } else { Outcome::Success };
        let detail: Value = serde_json::from_str(&e.detail).unwrap();
        let mut event = AuditEvent::new(Action::HookCall, outcome).actor(e.actor_iss.as_deref(), None);
        event.detail = detail;
        log.record(&app.db, event).await.unwrap();
    }
    let chain_only = app.cli(&["audit", "verify", "--checkpoints", "/nonexistent"]);
    let v = app.cli(&["audit", "verify"]);
    assert_eq!(v.code, 2, "{}{}", v.stdout, v.stderr);
    // Re-recording changed every entry (times included), so the first published checkpoint fails.
    assert!(v.stderr.contains("checkpoints/checkpoint-") && v.stderr.contains("rewritten"), "{}", v.stderr);
    // Without the published checkpoint the rewrite would have passed: that copy is the anchor.
    assert_eq!(chain_only.code, 0, "{}", chain_only.stderr);
}

async fn removing_the_newest_entries_is_caught_as_truncation(backend: Backend) {
    let app = spawn_app(backend).await;
    append(&app, 8).await; // plus the start entry: 9
    checkpoint(&app);
    drop_guards(&app).await;
    app.db.execute_unprepared("DELETE FROM audit_entries WHERE seq >= 8").await.unwrap();
    let v = app.cli(&["audit", "verify"]);
    assert_eq!(v.code, 2);
    assert!(v.stderr.contains("covers 9 entries") && v.stderr.contains("only 7"), "{}", v.stderr);
}

async fn a_damaged_tree_node_is_caught(backend: Backend) {
    let app = spawn_app(backend).await;
    append(&app, 8).await;
    drop_guards(&app).await;
    app.db.execute_unprepared(&format!("UPDATE audit_nodes SET hash = '{}' WHERE level = 1 AND idx = 2", "ab".repeat(32))).await.unwrap();
    let v = app.cli(&["audit", "verify"]);
    assert_eq!(v.code, 2);
    assert!(v.stderr.contains("tree node 1/2"), "{}", v.stderr);
}

/// Verify reads the log a page at a time (4,096 entries), hashing one page while reading the
/// next and comparing tree nodes behind: damage is still reported in log order, across pages.
async fn damage_is_reported_in_log_order_across_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    let log = AuditLog::default();
    for batch in 0..9 {
        let mut txn = log.begin(&app.db).await.unwrap();
        for i in 0..500 {
            txn.append(AuditEvent::new(Action::HookCall, Outcome::Success).detail("i", batch * 500 + i)).await.unwrap();
        }
        txn.commit().await.unwrap();
    }
    let v = app.cli(&["audit", "verify"]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    drop_guards(&app).await;
    // An entry on the second page changed: named by its sequence number.
    app.db.execute_unprepared("UPDATE audit_entries SET outcome = 'rejected' WHERE seq = 4200").await.unwrap();
    let v = app.cli(&["audit", "verify"]);
    assert_eq!(v.code, 2);
    assert!(v.stderr.contains("entry 4200"), "{}", v.stderr);
    // A tree node completed on the first page is damaged too: it comes first in the log, so it
    // is what verify reports, although the second page was already read when it was compared.
    app.db.execute_unprepared(&format!("UPDATE audit_nodes SET hash = '{}' WHERE level = 3 AND idx = 400", "cd".repeat(32))).await.unwrap();
    let v = app.cli(&["audit", "verify"]);
    assert_eq!(v.code, 2);
    assert!(v.stderr.contains("tree node 3/400"), "{}", v.stderr);
}

async fn a_chain_only_log_migrates_into_the_tree_with_every_entry(backend: Backend) {
    let app = spawn_app(backend).await;
    append(&app, 20).await; // plus the start entry: 21
    let before = app.cli(&["audit", "verify"]);
    assert_eq!(before.code, 0);
    // As the log was before the Merkle tree existed: entries only.
    drop_guards(&app).await;
    app.db.execute_unprepared("DELETE FROM audit_nodes").await.unwrap();
    // The next writer (here the checkpoint command) hashes the old entries in first.
    let note = checkpoint(&app);
    assert!(note.contains("\n21\n"), "{note}");
    let after = app.cli(&["audit", "verify"]);
    assert_eq!(after.code, 0, "{}", after.stderr);
    let root = |s: &str| s.split("root ").nth(1).unwrap().split(',').next().unwrap().to_owned();
    assert_eq!(root(&before.stdout), root(&after.stdout), "the same entries give the same tree");
}

async fn only_auditors_with_the_audit_scope_reach_the_audit_api(backend: Backend) {
    let app = spawn_app(backend).await;
    append(&app, 2).await; // plus the start entry: 3
    checkpoint(&app);
    // A CDS client's valid token is not an auditor's.
    let cds = app.token("/audit/checkpoint");
    assert_eq!(app.send(reqwest::Method::GET, "/audit/checkpoint", Some(&cds), None).await.status, 401);
    // An auditor token without the scope is refused too.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let unscoped = app
        .auditor
        .sign(
            &json!({"iss": crate::helpers::AUDITOR_ISS, "aud": app.url("/audit/checkpoint"), "iat": now, "exp": now + 60, "jti": "j1"}),
            None,
        )
        .unwrap();
    assert_eq!(app.send(reqwest::Method::GET, "/audit/checkpoint", Some(&unscoped), None).await.status, 401);
    let last = app.audit().await.pop().unwrap();
    assert!(last.action == "auth.reject" && last.detail.contains("missing-audit-scope"), "{last:?}");
    // The auditor gets the signed checkpoint, and the read is audited.
    let ok = app.auditor_get("/audit/checkpoint").await;
    assert_eq!(ok.status, 200);
    assert!(ok.text.starts_with("radsight.local/audit\n3\n"), "{}", ok.text);
    assert_eq!(app.audit().await.pop().unwrap().action, "audit.read");
    // Bad parameters are a 400 in FHIR terms.
    app.auditor_get("/audit/proofs/inclusion?index=5&tree_size=2").await.outcome(400);
    app.auditor_get("/audit/proofs/inclusion?index=0&tree_size=999").await.outcome(400);
}

async fn exports_are_valid_fhir_audit_events_and_filter_by_patient(backend: Backend) {
    let app = spawn_app(backend).await;
    app.hook("radsight-imaging-order-select", &example("order-select")).await.cards();
    let token = app.token("/cds-services");
    app.discovery(Some(&token)).await;
    app.discovery(None).await; // a refused call
    let all = app.auditor_get("/audit/events?format=fhir").await;
    assert_eq!(all.status, 200, "{}", all.text);
    let bundle = all.json();
    assert_eq!(bundle["entry"].as_array().unwrap().len(), 4);
    let (ok, out) = run_python("validate_fhir.py", &all.text);
    assert!(ok, "{out}");
    assert!(out.contains("4 AuditEvents valid"), "{out}");
    assert_eq!(bundle["entry"][0]["resource"]["subtype"][0]["code"], "system.start");
    let hook = &bundle["entry"][1]["resource"];
    assert_eq!(hook["outcome"], "0");
    assert!(hook["entity"].as_array().unwrap().iter().any(|e| e["what"]["reference"] == "Patient/example-patient"));
    let refused = &bundle["entry"][3]["resource"];
    assert_eq!(refused["type"]["code"], "110114");
    assert_eq!(refused["outcome"], "4");

    let mine = app.auditor_get("/audit/events?format=jsonl&patient=example-patient").await;
    assert_eq!(mine.text.lines().count(), 1, "{}", mine.text);
    let csv = app.auditor_get("/audit/events?format=csv&action=auth.reject").await;
    assert!(csv.text.starts_with("seq,leaf_index,"), "{}", csv.text);
    assert_eq!(csv.text.lines().count(), 2);
    // Exports are audited, and the CLI exports the same events.
    assert_eq!(app.audit().await.iter().filter(|e| e.action == "audit.export").count(), 3);
    let cli = app.cli(&["audit", "export", "--format", "jsonl", "--action", "cds.hook"]);
    assert_eq!(cli.code, 0, "{}", cli.stderr);
    assert_eq!(cli.stdout.lines().count(), 1);
    app.auditor_get("/audit/events?format=xml").await.outcome(400);
}

async fn two_instances_appending_at_once_give_one_verifiable_log(backend: Backend) {
    let app = spawn_app(backend).await;
    let (url, audit) = (app.db_url.clone(), app.settings.audit.clone());
    // Instances of one log share its database and its checkpoint key.
    let second = spawn_app_with(backend, move |s| {
        s.database.url = url;
        s.audit = audit;
    })
    .await;
    let calls = (0..300).map(|i| {
        let target = if i % 2 == 0 { &app } else { &second };
        async move {
            let token = target.token("/cds-services");
            target.discovery(Some(&token)).await.status
        }
    });
    let statuses = join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // 300 requests and the two instances' start entries.
    let seqs: Vec<i64> = app.audit().await.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=302).collect::<Vec<_>>());
    checkpoint(&app);
    let v = app.cli(&["audit", "verify"]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(v.stdout.contains("302 entries"), "{}", v.stdout);
}

async fn thousands_of_concurrent_appends_give_a_gapless_verifiable_log(backend: Backend) {
    let app = spawn_app(backend).await;
    // Two independent writers (locks and pools), as two instances would be.
    let (log_a, log_b) = (AuditLog::default(), AuditLog::default());
    let db_b = sea_orm::Database::connect(&app.db_url).await.unwrap();
    let writes = (0..2000u32).map(|i| {
        let (log, db) = if i % 2 == 0 { (&log_a, &app.db) } else { (&log_b, &db_b) };
        async move { log.record(db, AuditEvent::new(Action::HookCall, Outcome::Success).detail("i", i)).await.map(|_| ()) }
    });
    let results = join_all(writes).await;
    assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
    let seqs: Vec<i64> = app.audit().await.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=2001).collect::<Vec<_>>());
    checkpoint(&app);
    let v = app.cli(&["audit", "verify"]);
    assert_eq!(v.code, 0, "{}", v.stderr);
}

/// Attached rows that always fail, to show a failure stays within its own caller.
struct FailingRows;

impl radsight::audit::AttachedRows for FailingRows {
    fn write<'t>(
        self: Box<Self>,
        conn: &'t sea_orm::DatabaseTransaction,
        _seq: i64,
    ) -> futures_util::future::BoxFuture<'t, Result<(), sea_orm::DbErr>> {
        Box::pin(async move { conn.execute_unprepared("INSERT INTO no_such_table VALUES (1)").await.map(|_| ()) })
    }
}

async fn a_failing_append_in_a_group_commit_fails_alone(backend: Backend) {
    let app = spawn_app(backend).await;
    let log = AuditLog::default();
    let appends = (0..60u32).map(|i| {
        let (log, db) = (&log, &app.db);
        async move {
            let event = AuditEvent::new(Action::HookCall, Outcome::Success).detail("i", i);
            let rows: Option<Box<dyn radsight::audit::AttachedRows>> = if i % 10 == 3 { Some(Box::new(FailingRows)) } else { None };
            (i, log.record_with(db, event, rows).await)
        }
    });
    let results = join_all(appends).await;
    for (i, r) in &results {
        assert_eq!(r.is_err(), i % 10 == 3, "append {i}: {r:?}");
    }
    // 54 appends succeeded after the start entry; the six failures left no trace or gap.
    let entries = app.audit().await;
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=55).collect::<Vec<_>>());
    let recorded: Vec<u64> = entries.iter().filter_map(|e| serde_json::from_str::<Value>(&e.detail).ok()?["i"].as_u64()).collect();
    assert_eq!(recorded.len(), 54);
    assert!(recorded.iter().all(|i| i % 10 != 3), "{recorded:?}");
    checkpoint(&app);
    assert_eq!(app.cli(&["audit", "verify"]).code, 0);
}

/// Work for the group commit: a row and two entries, then a failure when `fail` is set.
struct TwoEntriesAndARow {
    i: u32,
    fail: bool,
}

impl radsight::audit::GroupWork for TwoEntriesAndARow {
    type Output = (u32, i64);
    fn run<'t>(
        self: Box<Self>,
        w: &'t mut radsight::audit::GroupWriter<'_>,
    ) -> futures_util::future::BoxFuture<'t, Result<(u32, i64), radsight::audit::AuditError>> {
        Box::pin(async move {
            let i = self.i;
            w.conn()
                .execute_unprepared(&format!("INSERT INTO card_contents (hash, content_json, created_at) VALUES ('work-{i}', '{{}}', 0)"))
                .await?;
            w.append(AuditEvent::new(Action::HookCall, Outcome::Success).detail("i", i)).await?;
            let second = w.append(AuditEvent::new(Action::Feedback, Outcome::Success).detail("i", i)).await?;
            if self.fail {
                // A failure after writing: everything this work did must be undone.
                w.conn().execute_unprepared("INSERT INTO no_such_table VALUES (1)").await?;
            }
            Ok((i, second))
        })
    }
}

async fn work_that_fails_in_a_group_commit_undoes_its_rows_and_entries_alone(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let app = spawn_app(backend).await;
    let log = AuditLog::default();
    let works = (0..40u32).map(|i| {
        let (log, db) = (&log, &app.db);
        async move { (i, log.run_in_group(db, TwoEntriesAndARow { i, fail: i % 7 == 2 }).await) }
    });
    let results = join_all(works).await;
    for (i, r) in &results {
        match r {
            Ok((out, _)) => assert!(i % 7 != 2 && out == i, "work {i} answered {out}"),
            Err(e) => assert_eq!(i % 7, 2, "work {i}: {e}"),
        }
    }
    // 34 works succeeded: 68 entries after the start entry, in pairs, no gap, none of a failure.
    let entries = app.audit().await;
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=69).collect::<Vec<_>>());
    let recorded: Vec<u64> = entries.iter().filter_map(|e| serde_json::from_str::<Value>(&e.detail).ok()?["i"].as_u64()).collect();
    assert_eq!(recorded.len(), 68);
    assert!(recorded.chunks(2).all(|pair| pair[0] == pair[1] && pair[0] % 7 != 2), "{recorded:?}");
    let rows = app
        .db
        .query_all_raw(sea_orm::Statement::from_string(app.db.get_database_backend(), "SELECT hash FROM card_contents"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 34, "a failed work's row is undone");
    checkpoint(&app);
    assert_eq!(app.cli(&["audit", "verify"]).code, 0);
}

/// Starts `radsight serve` as its own process on the app's database, with the app's clients.
fn serve_process(app: &TestApp, port: u16) -> std::process::Child {
    let dir = app.settings.audit.checkpoint_dir.parent().unwrap().to_path_buf();
    let jwks = app.settings.clients[0].jwks.clone().unwrap();
    let config = format!(
        "[server]\nport = {port}\npublic_url = \"{}\"\n[hl7]\nbind = \"127.0.0.1:0\"\n[[clients]]\niss = \"{}\"\njwks = '''{jwks}'''\n",
        app.address,
        crate::helpers::ISS
    );
    let path = dir.join("crash-test.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_radsight"))
        .args(["--config", path.to_str().unwrap(), "serve"])
        .env("DATABASE_URL", &app.db_url)
        .env("RADSIGHT_AUDIT__CHECKPOINT_KEY_FILE", &app.settings.audit.checkpoint_key_file)
        .env("RADSIGHT_AUDIT__CHECKPOINT_DIR", &app.settings.audit.checkpoint_dir)
        .env("RADSIGHT_ANALYSIS__MODELS_DIR", &app.settings.analysis.models_dir)
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("radsight did not become ready");
}

async fn a_killed_process_loses_no_acknowledged_entry(backend: Backend) {
    let app = spawn_app(backend).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = serve_process(&app, port);
    wait_ready(&app.http, &base).await;
    // Tokens must name the URL called: the process's public_url is the test app's address, so
    // sign for that and send to the process.
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pem = app.es384.to_pem();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (http, token_app_url, base, acked, pem) =
                (app.http.clone(), app.url("/cds-services"), base.clone(), acked.clone(), pem.clone());
            let key = radsight::keys::ClientKey::from_pem(jsonwebtoken::Algorithm::ES384, &pem).unwrap();
            tokio::spawn(async move {
                loop {
                    let token = key.client_token(crate::helpers::ISS, &token_app_url).unwrap();
                    match http.get(format!("{base}/cds-services")).bearer_auth(token).send().await {
                        Ok(r) if r.status() == 200 => {
                            acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok(r) => panic!("unexpected status {}", r.status()),
                        Err(_) => break, // the process is gone
                    }
                }
            })
        })
        .collect();
    while acked.load(std::sync::atomic::Ordering::SeqCst) < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL, mid-append
    child.wait().unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let acknowledged = acked.load(std::sync::atomic::Ordering::SeqCst);

    let mut restarted = serve_process(&app, port);
    wait_ready(&app.http, &base).await;
    let discoveries = app.audit().await.iter().filter(|e| e.action == "cds.discovery").count();
    assert!(discoveries >= acknowledged, "{acknowledged} acknowledged but {discoveries} recorded");
    let v = app.cli(&["audit", "verify"]);
    restarted.kill().unwrap();
    restarted.wait().unwrap();
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
}

/// The auditors' console in headless Chromium: sign in, filter, proof status, a card's story.
async fn the_console_shows_verified_proofs_and_a_cards_story(backend: Backend) {
    let app = spawn_app(backend).await;
    let cards = app.hook("radsight-imaging-order-select", &example("order-select")).await.cards();
    let card = cards[0]["uuid"].as_str().unwrap().to_owned();
    let feedback = json!({"feedback": [{"card": card, "outcome": "accepted", "outcomeTimestamp": "2026-11-29T10:00:00Z"}]});
    assert_eq!(app.post("/cds-services/radsight-imaging-order-select/feedback", &feedback).await.status, 200);
    checkpoint(&app);
    let jwt = app.auditor.scoped_token(crate::helpers::AUDITOR_ISS, &app.url("/audit/session"), "audit.read").unwrap();
    let script = format!("{}/tests/browser/audit_console.mjs", env!("CARGO_MANIFEST_DIR"));
    // RADSIGHT_TEST_ARTIFACTS keeps the screenshot for a person to look at.
    let shot = match std::env::var("RADSIGHT_TEST_ARTIFACTS") {
        Ok(dir) => std::path::Path::new(&dir).join(format!("audit-console-{backend:?}.png")),
        Err(_) => app.settings.audit.checkpoint_dir.parent().unwrap().join("console.png"),
    };
    let out = Command::new("node")
        .args([&script, &app.address, &jwt, &vkey(&app), &card, shot.to_str().unwrap()])
        .output()
        .expect("node runs (scripts/test.sh installs the browser test dependencies)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("signature verified"), "{text}");
    assert!(text.contains("proof: Included and verified against the checkpoint"), "{text}");
    assert!(text.contains("story: cds.hook,cds.feedback"), "{text}");
    assert!(text.contains(&format!("export: /audit/events?entity={card}&format=csv")), "{text}");
    // The session and the searches were audited as reads and exports.
    let audit = app.audit().await;
    assert!(audit.iter().any(|e| e.action == "audit.read" && e.entities.contains("console-session")));
    assert!(audit.iter().filter(|e| e.action == "audit.export").count() >= 2);
}

backend_tests!(
    a_signed_checkpoint_is_published_and_verify_checks_it,
    proofs_served_to_auditors_pass_an_independent_rfc9162_verifier,
    a_rewritten_table_is_caught_by_the_published_checkpoint,
    removing_the_newest_entries_is_caught_as_truncation,
    a_damaged_tree_node_is_caught,
    damage_is_reported_in_log_order_across_pages,
    a_chain_only_log_migrates_into_the_tree_with_every_entry,
    only_auditors_with_the_audit_scope_reach_the_audit_api,
    exports_are_valid_fhir_audit_events_and_filter_by_patient,
    two_instances_appending_at_once_give_one_verifiable_log,
    a_killed_process_loses_no_acknowledged_entry,
    the_console_shows_verified_proofs_and_a_cards_story,
    thousands_of_concurrent_appends_give_a_gapless_verifiable_log,
    a_failing_append_in_a_group_commit_fails_alone,
    work_that_fails_in_a_group_commit_undoes_its_rows_and_entries_alone,
);
