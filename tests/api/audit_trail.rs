//! The audit trail: append-only in the database, hash-chained, verified offline by
//! `radsight audit verify`, which names the first damaged entry.

use futures_util::future::join_all;
use sea_orm::{ConnectionTrait, DbBackend};

use crate::helpers::{Backend, CliOutput, TestApp, example, spawn_app};

fn audit_verify(app: &TestApp) -> CliOutput {
    app.cli(&["audit", "verify"])
}

/// Some realistic activity after the start entry: discovery, a hook with cards, a refusal.
async fn activity(app: &TestApp) {
    let token = app.token("/cds-services");
    assert_eq!(app.discovery(Some(&token)).await.status, 200);
    app.hook("radsight-imaging-order-select", &example("order-select")).await.cards();
    assert_eq!(app.discovery(None).await.status, 401);
}

async fn drop_append_only_guard(app: &TestApp) {
    let sql = match app.db.get_database_backend() {
        DbBackend::Postgres => vec!["DROP TRIGGER audit_entries_append_only ON audit_entries"],
        _ => vec!["DROP TRIGGER audit_entries_no_update", "DROP TRIGGER audit_entries_no_delete"],
    };
    for s in sql {
        app.db.execute_unprepared(s).await.unwrap();
    }
}

async fn an_untouched_trail_verifies(backend: Backend) {
    let app = spawn_app(backend).await;
    activity(&app).await;
    let v = audit_verify(&app);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains("intact: 4 entries"), "{}", v.stdout);
}

async fn the_database_refuses_to_update_or_delete_audit_entries(backend: Backend) {
    let app = spawn_app(backend).await;
    activity(&app).await;
    assert!(app.db.execute_unprepared("UPDATE audit_entries SET outcome = 'success' WHERE seq = 4").await.is_err());
    assert!(app.db.execute_unprepared("DELETE FROM audit_entries WHERE seq = 1").await.is_err());
    assert_eq!(app.audit().await.len(), 4);
}

async fn a_changed_row_fails_verification_naming_it(backend: Backend) {
    let app = spawn_app(backend).await;
    activity(&app).await;
    drop_append_only_guard(&app).await;
    app.db.execute_unprepared("UPDATE audit_entries SET outcome = 'rejected' WHERE seq = 2").await.unwrap();
    let v = audit_verify(&app);
    assert_eq!(v.code, 2, "{}{}", v.stdout, v.stderr);
    assert!(v.stderr.contains("entry 2") && v.stderr.contains("changed"), "{}", v.stderr);
}

async fn a_deleted_row_fails_verification_at_the_next_entry(backend: Backend) {
    let app = spawn_app(backend).await;
    activity(&app).await;
    drop_append_only_guard(&app).await;
    app.db.execute_unprepared("DELETE FROM audit_entries WHERE seq = 2").await.unwrap();
    let v = audit_verify(&app);
    assert_eq!(v.code, 2);
    assert!(v.stderr.contains("entry 3"), "{}", v.stderr);
}

async fn reordered_rows_fail_verification(backend: Backend) {
    let app = spawn_app(backend).await;
    activity(&app).await;
    drop_append_only_guard(&app).await;
    // Swap the sequence numbers of entries 1 and 2.
    for sql in [
        "UPDATE audit_entries SET seq = 1000 WHERE seq = 1",
        "UPDATE audit_entries SET seq = 1 WHERE seq = 2",
        "UPDATE audit_entries SET seq = 2 WHERE seq = 1000",
    ] {
        app.db.execute_unprepared(sql).await.unwrap();
    }
    let v = audit_verify(&app);
    assert_eq!(v.code, 2);
    assert!(v.stderr.contains("entry 1"), "{}", v.stderr);
}

async fn concurrent_requests_give_one_gapless_chain(backend: Backend) {
    let app = spawn_app(backend).await;
    let calls = (0..24).map(|i| {
        let app = &app;
        async move {
            if i % 2 == 0 {
                app.hook("radsight-imaging-order-select", &example("order-select")).await.status
            } else {
                let token = app.token("/cds-services");
                app.discovery(Some(&token)).await.status
            }
        }
    });
    assert!(join_all(calls).await.iter().all(|s| *s == 200));
    let seqs: Vec<i64> = app.audit().await.iter().map(|e| e.seq).collect();
    // Entry 1 records the service's start.
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
    assert_eq!(audit_verify(&app).code, 0);
}

backend_tests!(
    an_untouched_trail_verifies,
    the_database_refuses_to_update_or_delete_audit_entries,
    a_changed_row_fails_verification_naming_it,
    a_deleted_row_fails_verification_at_the_next_entry,
    reordered_rows_fail_verification,
    concurrent_requests_give_one_gapless_chain,
);
