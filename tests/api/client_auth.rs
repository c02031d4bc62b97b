//! The CDS client JWT matrix: what is accepted, what is refused (bare 401, reason audited).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use radsight::keys::ClientKey;
use serde_json::{Value, json};

use crate::fhir_fixture::ACCESS_TOKEN;
use crate::helpers::{Backend, ISS, JKU_ISS, TestApp, example, spawn_app, spawn_app_with};
use crate::prefetch::{SELECT, load_ehr, without_prefetch};

const PATH: &str = "/cds-services";

fn claims(app: &TestApp, iss: &str, exp_in: i64) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({"iss": iss, "aud": app.url(PATH), "iat": now, "exp": now + exp_in, "jti": uuid::Uuid::new_v4().to_string()})
}

/// Sends discovery with `token`; asserts a bare 401 and that the audit trail holds `reason`.
async fn assert_refused(app: &TestApp, token: Option<&str>, reason: &str) {
    let reply = app.discovery(token).await;
    assert_eq!(reply.status, 401, "{reason}: {}", reply.text);
    assert!(reply.text.is_empty(), "a 401 carries no detail, got {}", reply.text);
    let last = app.audit().await.pop().expect("an audit entry");
    assert_eq!((last.action.as_str(), last.outcome.as_str()), ("auth.reject", "denied"));
    let detail: Value = serde_json::from_str(&last.detail).unwrap();
    assert_eq!(detail["reason"], reason, "{detail}");
    if let Some(t) = token {
        assert!(!last.detail.contains(t) && !last.entities.contains(t), "the token must never be stored");
    }
}

async fn valid_es384_and_rs384_tokens_are_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    for key in [&app.es384, &app.rs384] {
        let token = key.client_token(ISS, &app.url(PATH)).unwrap();
        let reply = app.discovery(Some(&token)).await;
        assert_eq!(reply.status, 200, "{:?}: {}", key.alg, reply.text);
    }
    // The audience may also be an array holding the URL, and Epic's extra sub/nbf are fine.
    let mut c = claims(&app, ISS, 300);
    c["aud"] = json!([app.url(PATH)]);
    c["sub"] = json!("client-id");
    c["nbf"] = c["iat"].clone();
    assert_eq!(app.discovery(Some(&app.es384.sign(&c, None).unwrap())).await.status, 200);
}

async fn a_client_registered_by_jku_is_verified_with_the_fetched_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.jku_key.sign(&claims(&app, JKU_ISS, 300), Some(&app.fhir.jwks_url())).unwrap();
    assert_eq!(app.discovery(Some(&token)).await.status, 200);
    // Without a jku header the registered jku is used too.
    let token = app.jku_key.sign(&claims(&app, JKU_ISS, 300), None).unwrap();
    assert_eq!(app.discovery(Some(&token)).await.status, 200);
}

async fn a_jku_that_the_client_did_not_register_is_refused_without_fetching_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let rogue = format!("{}/rogue-jwks.json", app.fhir.address);
    let token = app.jku_key.sign(&claims(&app, JKU_ISS, 300), Some(&rogue)).unwrap();
    assert_refused(&app, Some(&token), "jku-not-allowed").await;
    assert!(!app.fhir.requests().iter().any(|r| r.contains("rogue")), "radsight fetched an unregistered jku");
}

async fn alg_none_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let header = B64.encode(json!({"alg": "none", "typ": "JWT", "kid": app.es384.kid}).to_string());
    let body = B64.encode(claims(&app, ISS, 300).to_string());
    assert_refused(&app, Some(&format!("{header}.{body}.")), "disallowed-alg").await;
}

async fn hs256_signed_with_the_public_key_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let public = serde_json::to_vec(&app.es384.public_jwk()).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(app.es384.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims(&app, ISS, 300), &EncodingKey::from_secret(&public).unwrap()).unwrap();
    assert_refused(&app, Some(&token), "disallowed-alg").await;
}

async fn a_wrong_audience_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut c = claims(&app, ISS, 300);
    c["aud"] = json!(app.url("/cds-services/radsight-patient-view"));
    assert_refused(&app, Some(&app.es384.sign(&c, None).unwrap()), "wrong-aud").await;
}

async fn an_expired_token_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.es384.sign(&claims(&app, ISS, -600), None).unwrap();
    assert_refused(&app, Some(&token), "expired").await;
}

async fn a_token_living_longer_than_allowed_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.es384.sign(&claims(&app, ISS, 7 * 24 * 3600), None).unwrap();
    assert_refused(&app, Some(&token), "lifetime-too-long").await;
}

async fn a_replayed_jti_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.token(PATH);
    assert_eq!(app.discovery(Some(&token)).await.status, 200);
    assert_refused(&app, Some(&token), "replayed-jti").await;
}

/// A hook call records its token's `jti` in its own group commit; a second use of the token is
/// refused before any work: no prefetch read, no second `cds.hook` entry.
async fn a_replayed_hook_token_is_refused_before_any_work(backend: Backend) {
    let app = spawn_app(backend).await;
    load_ehr(&app);
    let path = format!("/cds-services/{SELECT}");
    let body = without_prefetch(&app.fhir.fhir_base(), ACCESS_TOKEN).to_string().into_bytes();
    let token = app.token(&path);
    let first = app.send(reqwest::Method::POST, &path, Some(&token), Some(body.clone())).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let reads = app.fhir.requests().len();
    assert!(reads > 0, "the first call fetched its prefetch");

    let again = app.send(reqwest::Method::POST, &path, Some(&token), Some(body)).await;
    assert_eq!(again.status, 401, "{}", again.text);
    assert!(again.text.is_empty());
    assert_eq!(app.fhir.requests().len(), reads, "a replay must not reach the EHR's FHIR server");
    let audit = app.audit().await;
    assert_eq!(app.audit_of("cds.hook").await.len(), 1);
    let last = audit.last().unwrap();
    assert_eq!((last.action.as_str(), last.outcome.as_str()), ("auth.reject", "denied"));
    assert_eq!(serde_json::from_str::<Value>(&last.detail).unwrap()["reason"], "replayed-jti");
    assert_eq!(jtis(&app).await, 1);
}

/// Uses of one token that race past the replay check (each is still fetching its prefetch from a
/// slow EHR when the others are checked) are decided in the group commit: one call is answered
/// with cards, every other is a bare 401, and only one call is stored.
async fn racing_uses_of_one_hook_token_are_answered_once(backend: Backend) {
    const USES: usize = 6;
    let app = spawn_app(backend).await;
    load_ehr(&app);
    let path = format!("/cds-services/{SELECT}");
    let body = without_prefetch(&app.fhir.fhir_base(), ACCESS_TOKEN).to_string().into_bytes();
    // Long enough that every use is past the replay check before the first can commit.
    app.fhir.set_delay(std::time::Duration::from_secs(1));
    let token = app.token(&path);
    let replies =
        futures_util::future::join_all((0..USES).map(|_| app.send(reqwest::Method::POST, &path, Some(&token), Some(body.clone())))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), USES - 1, "{statuses:?}");
    // Every use fetched: all of them raced past the read-only check, so the group's insert
    // is what refused them.
    let patient_reads = app.fhir.requests().iter().filter(|r| r.starts_with("/fhir/Patient/")).count();
    assert_eq!(patient_reads, USES, "{:?}", app.fhir.requests());
    let calls = app.audit_of("cds.hook").await;
    assert_eq!(calls.len(), 1, "one call is audited as served");
    assert_eq!(calls[0].outcome, "success");
    assert_eq!(app.cards().await.iter().map(|c| c.audit_seq).collect::<std::collections::BTreeSet<_>>().len(), 1);
    let replays = app.audit_of("auth.reject").await;
    assert!(replays.iter().any(|e| e.detail.contains("replayed-jti")), "the refused uses are audited");
    assert_eq!(jtis(&app).await, 1);
    let verify = app.cli(&["audit", "verify"]);
    assert_eq!(verify.code, 0, "{}\n{}", verify.stdout, verify.stderr);
}

/// A hook call that fails uses up its token too, in the same commit as its failure entry.
async fn a_token_used_by_a_failed_hook_call_is_spent(backend: Backend) {
    let app = spawn_app(backend).await;
    let path = format!("/cds-services/{SELECT}");
    let token = app.token(&path);
    let bad = app.send(reqwest::Method::POST, &path, Some(&token), Some(b"{\"hook\": 7}".to_vec())).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let failed = app.audit_of("cds.hook").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].outcome, "rejected");
    assert_eq!(jtis(&app).await, 1, "the failure entry's commit recorded the jti");

    let body = example("order-select").to_string().into_bytes();
    let again = app.send(reqwest::Method::POST, &path, Some(&token), Some(body)).await;
    assert_eq!(again.status, 401, "{}", again.text);
    assert_eq!(app.audit_of("cds.hook").await.len(), 1, "the replay served nothing");
}

/// A hook call refused because the write queue is full stores nothing, but its token is used
/// up all the same: sent again, it is a replay.
async fn a_token_refused_as_busy_is_spent(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.audit.max_pending = 1;
        s.jobs.workers = 0;
    })
    .await;
    let path = format!("/cds-services/{SELECT}");
    let body = example("order-select").to_string().into_bytes();
    let tokens: Vec<String> = (0..30).map(|_| app.token(&path)).collect();
    let replies =
        futures_util::future::join_all(tokens.iter().map(|t| app.send(reqwest::Method::POST, &path, Some(t), Some(body.clone())))).await;
    let busy: Vec<&String> = tokens.iter().zip(&replies).filter(|(_, r)| r.status == 503).map(|(t, _)| t).collect();
    assert!(!busy.is_empty(), "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(jtis(&app).await, tokens.len(), "every use, answered or refused, recorded its jti");
    for token in busy {
        let again = app.send(reqwest::Method::POST, &path, Some(token), Some(body.clone())).await;
        assert_eq!(again.status, 401, "{}", again.text);
    }
}

/// The `jti`s recorded as used.
async fn jtis(app: &TestApp) -> usize {
    use sea_orm::EntityTrait;
    radsight::store::entities::client_jti::Entity::find().all(&app.db).await.unwrap().len()
}

async fn an_unknown_kid_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let stranger = ClientKey::generate(Algorithm::ES384).unwrap();
    assert_refused(&app, Some(&stranger.client_token(ISS, &app.url(PATH)).unwrap()), "unknown-kid").await;
}

async fn an_unknown_issuer_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.es384.client_token("https://stranger.example.org", &app.url(PATH)).unwrap();
    assert_refused(&app, Some(&token), "unknown-iss").await;
}

async fn a_tampered_signature_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.token(PATH);
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let mut raw = B64.decode(sig).unwrap();
    raw[10] ^= 0x01;
    assert_refused(&app, Some(&format!("{signed}.{}", B64.encode(raw))), "bad-signature").await;
    // Changing a claim under the original signature fails the same way.
    let parts: Vec<&str> = token.split('.').collect();
    let mut c: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    c["iss"] = json!(ISS);
    c["jti"] = json!("forged");
    let forged = format!("{}.{}.{}", parts[0], B64.encode(c.to_string()), parts[2]);
    assert_refused(&app, Some(&forged), "bad-signature").await;
}

async fn a_request_without_authorization_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_refused(&app, None, "missing-token").await;
    // Hooks and feedback are protected the same way.
    let hook = app.send(reqwest::Method::POST, "/cds-services/radsight-patient-view", None, Some(b"{}".to_vec())).await;
    assert_eq!(hook.status, 401);
    let fb = app.send(reqwest::Method::POST, "/cds-services/radsight-patient-view/feedback", None, Some(b"{}".to_vec())).await;
    assert_eq!(fb.status, 401);
}

async fn a_burst_of_unknown_kids_makes_one_jwks_fetch(backend: Backend) {
    // 20 concurrent requests signed by a key the client never published: the first fetches
    // the client's JWKS, the others wait for that fetch (single flight) and the refetch for
    // the unknown kid is limited to one per 30 s, so the EHR's server sees one request.
    let app = spawn_app(backend).await;
    let stranger = ClientKey::generate(Algorithm::ES384).unwrap();
    let tokens: Vec<String> = (0..20).map(|_| stranger.sign(&claims(&app, JKU_ISS, 300), Some(&app.fhir.jwks_url())).unwrap()).collect();
    let replies = futures_util::future::join_all(tokens.iter().map(|t| app.discovery(Some(t)))).await;
    assert!(replies.iter().all(|r| r.status == 401), "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    let fetches = app.fhir.requests().iter().filter(|r| r.contains("jwks")).count();
    assert_eq!(fetches, 1, "{:?}", app.fhir.requests());
}

backend_tests!(
    a_burst_of_unknown_kids_makes_one_jwks_fetch,
    valid_es384_and_rs384_tokens_are_accepted,
    a_client_registered_by_jku_is_verified_with_the_fetched_keys,
    a_jku_that_the_client_did_not_register_is_refused_without_fetching_it,
    alg_none_is_refused,
    hs256_signed_with_the_public_key_is_refused,
    a_wrong_audience_is_refused,
    an_expired_token_is_refused,
    a_token_living_longer_than_allowed_is_refused,
    a_replayed_jti_is_refused,
    a_replayed_hook_token_is_refused_before_any_work,
    racing_uses_of_one_hook_token_are_answered_once,
    a_token_used_by_a_failed_hook_call_is_spent,
    a_token_refused_as_busy_is_spent,
    an_unknown_kid_is_refused,
    an_unknown_issuer_is_refused,
    a_tampered_signature_is_refused,
    a_request_without_authorization_is_refused,
);
