//! SMART Backend Services and the FHIR write API of the demo EHR, through its HTTP routes, with
//! real keys from `radsight_keys` (and a real HTTP server for the `jwks_url` fetch).
//!
//! Run with `cargo test -p radsight-demo-ehr --test backend_services`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{App, HttpResponse, HttpServer, test, web};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use radsight_demo_ehr::{BackendClient, DEMO_PATIENT, EhrSim, JWT_BEARER_ASSERTION_TYPE, demo_patient, random_string};
use radsight_keys::ClientKey;
use serde_json::{Value, json};

const BASE: &str = "http://ehr.test";
const WRITER: &str = "radsight-writer";
const WRITE_SCOPE: &str = "system/Patient.cu system/DiagnosticReport.cu system/Observation.cu system/*.rs";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn new_ehr() -> EhrSim {
    EhrSim::new(BASE, vec![demo_patient(DEMO_PATIENT)])
}

fn inline_client(client_id: &str, key: &ClientKey, scopes: &[&str]) -> BackendClient {
    BackendClient {
        client_id: client_id.into(),
        jwks_url: None,
        jwks: Some(serde_json::to_value(key.jwks()).expect("a JWKS serialises")),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

/// An EHR with the writer registered (allowed `system/*.write` and `system/*.rs`) and its key.
fn ehr_with_writer(alg: Algorithm) -> (EhrSim, ClientKey) {
    let ehr = new_ehr();
    let key = ClientKey::generate(alg).expect("key generation works");
    ehr.register_backend_client(inline_client(WRITER, &key, &["system/*.write", "system/*.rs"]));
    (ehr, key)
}

/// Claims a well-behaved client sends: iss = sub, aud = the token URL, 4 minutes, fresh jti.
fn good_claims(ehr: &EhrSim, client_id: &str) -> Value {
    let t = now();
    json!({"iss": client_id, "sub": client_id, "aud": ehr.token_endpoint(), "iat": t, "exp": t + 240, "jti": random_string(16)})
}

/// Signs with `key` but with a header of our choosing (a wrong kid, no typ, a jku…).
fn sign_with_header(key: &ClientKey, header: &Header, claims: &Value) -> String {
    let pem = key.to_pem();
    let encoding = match key.alg {
        Algorithm::RS384 | Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
        _ => EncodingKey::from_ec_pem(pem.as_bytes()),
    }
    .expect("the key's PEM reads back");
    jsonwebtoken::encode(header, claims, &encoding).expect("signing works")
}

fn header_for(key: &ClientKey) -> Header {
    let mut h = Header::new(key.alg);
    h.kid = Some(key.kid.clone());
    h.typ = Some("JWT".into());
    h
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(ehr: &EhrSim, req: test::TestRequest) -> Reply {
    let app = test::init_service(App::new().configure(|c| ehr.routes(c))).await;
    let resp = test::call_service(&app, req.to_request()).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = test::read_body(resp).await;
    Reply { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

async fn token_request(ehr: &EhrSim, assertion: &str, scope: &str) -> Reply {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE),
        ("client_assertion", assertion),
        ("scope", scope),
    ];
    send(ehr, test::TestRequest::post().uri("/token").set_form(form)).await
}

/// A backend token for the writer with `scope`.
async fn writer_token(ehr: &EhrSim, key: &ClientKey, scope: &str) -> String {
    let reply = token_request(ehr, &key.sign(&good_claims(ehr, WRITER), None).unwrap(), scope).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["access_token"].as_str().expect("an access token").to_owned()
}

async fn post_fhir(ehr: &EhrSim, path: &str, token: Option<&str>, body: &Value, if_none_exist: Option<&str>) -> Reply {
    let mut req =
        test::TestRequest::post().uri(path).insert_header(("content-type", "application/fhir+json")).set_payload(body.to_string());
    if let Some(t) = token {
        req = req.insert_header(("authorization", format!("Bearer {t}")));
    }
    if let Some(q) = if_none_exist {
        req = req.insert_header(("if-none-exist", q));
    }
    send(ehr, req).await
}

async fn get_fhir(ehr: &EhrSim, path: &str, token: &str) -> Reply {
    send(ehr, test::TestRequest::get().uri(path).insert_header(("authorization", format!("Bearer {token}")))).await
}

fn patient(mrn: &str) -> Value {
    json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": mrn}], "name": [{"family": "Test"}]})
}

/// A Patient, an Observation about them and a DiagnosticReport citing both, all conditional on
/// their identifiers and linked through `urn:uuid:` fullUrls.
fn report_transaction(mrn: &str, accession: &str) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:8d1f0c4e-0000-4000-8000-000000000001", "resource": patient(mrn),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": format!("identifier=urn:mrn|{mrn}")}},
        {"fullUrl": "urn:uuid:8d1f0c4e-0000-4000-8000-000000000002",
         "resource": {"resourceType": "Observation", "status": "final", "identifier": [{"system": "urn:obs", "value": accession}],
                      "code": {"text": "finding"}, "subject": {"reference": "urn:uuid:8d1f0c4e-0000-4000-8000-000000000001"}},
         "request": {"method": "POST", "url": "Observation", "ifNoneExist": format!("identifier=urn:obs|{accession}")}},
        {"fullUrl": "urn:uuid:8d1f0c4e-0000-4000-8000-000000000003",
         "resource": {"resourceType": "DiagnosticReport", "status": "final", "identifier": [{"system": "urn:acc", "value": accession}],
                      "code": {"text": "AI read"}, "subject": {"reference": "urn:uuid:8d1f0c4e-0000-4000-8000-000000000001"},
                      "result": [{"reference": "urn:uuid:8d1f0c4e-0000-4000-8000-000000000002"}]},
         "request": {"method": "POST", "url": "DiagnosticReport", "ifNoneExist": format!("identifier=urn:acc|{accession}")}}
    ]})
}

fn statuses(reply: &Reply) -> Vec<String> {
    reply.body["entry"]
        .as_array()
        .map(|es| es.iter().map(|e| e["response"]["status"].as_str().unwrap_or("?").to_owned()).collect())
        .unwrap_or_default()
}

fn count_of(ehr: &EhrSim, types: &[&str]) -> usize {
    types.iter().map(|t| ehr.resources(t).len()).sum()
}

#[actix_web::test]
async fn a_good_assertion_gets_a_bearer_token_with_the_allowed_scopes() {
    for alg in [Algorithm::ES384, Algorithm::RS384] {
        let (ehr, key) = ehr_with_writer(alg);
        let assertion = key.sign(&good_claims(&ehr, WRITER), None).unwrap();
        let reply =
            token_request(&ehr, &assertion, "system/DiagnosticReport.cu system/Observation.r patient/*.rs system/Encounter.d").await;
        assert_eq!(reply.status, StatusCode::OK, "{alg:?}: {}", reply.body);
        assert_eq!(reply.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
        assert_eq!(reply.body["token_type"], "bearer");
        assert_eq!(reply.body["expires_in"], 300);
        assert_eq!(reply.body["scope"], "system/DiagnosticReport.cu system/Observation.r system/Encounter.d");
        assert!(reply.body["access_token"].as_str().is_some_and(|t| t.len() >= 32));
        assert!(ehr.token_refusals().is_empty());
    }
}

/// One refused token request: how the assertion is made, what scope is asked, and what the
/// EHR must answer (status, RFC 6749 error code, and a word of the recorded description).
async fn check_refused(
    name: &str,
    make: impl FnOnce(&EhrSim, &ClientKey) -> String,
    scope: &str,
    status: StatusCode,
    error: &str,
    says: &str,
) {
    let (ehr, key) = ehr_with_writer(Algorithm::ES384);
    let assertion = make(&ehr, &key);
    let reply = token_request(&ehr, &assertion, scope).await;
    assert_eq!(reply.status, status, "{name}: {}", reply.body);
    assert_eq!(reply.body["error"], error, "{name}");
    assert!(reply.body.get("access_token").is_none(), "{name}");
    assert_eq!(reply.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"), "{name}");
    let refusals = ehr.token_refusals();
    assert_eq!(refusals.len(), 1, "{name}: {refusals:?}");
    assert!(refusals[0].contains(says), "{name}: {refusals:?} should mention {says}");
    assert_eq!(reply.body["error_description"], refusals[0].as_str(), "{name}");
}

fn with_claims(change: impl FnOnce(&mut Value)) -> impl FnOnce(&EhrSim, &ClientKey) -> String {
    move |ehr, key| {
        let mut claims = good_claims(ehr, WRITER);
        change(&mut claims);
        key.sign(&claims, None).unwrap()
    }
}

#[actix_web::test]
async fn bad_assertions_are_refused_as_invalid_client() {
    let unauthorized = StatusCode::UNAUTHORIZED;
    check_refused(
        "another key",
        |ehr, _| ClientKey::generate(Algorithm::ES384).unwrap().sign(&good_claims(ehr, WRITER), None).unwrap(),
        WRITE_SCOPE,
        unauthorized,
        "invalid_client",
        "kid",
    )
    .await;
    check_refused(
        "another key under the registered kid",
        |ehr, key| sign_with_header(&ClientKey::generate(Algorithm::ES384).unwrap(), &header_for(key), &good_claims(ehr, WRITER)),
        WRITE_SCOPE,
        unauthorized,
        "invalid_client",
        "signature",
    )
    .await;
    check_refused(
        "a wrong aud",
        with_claims(|c| c["aud"] = json!(format!("{BASE}/fhir"))),
        WRITE_SCOPE,
        unauthorized,
        "invalid_client",
        "aud",
    )
    .await;
    check_refused(
        "exp an hour ahead",
        with_claims(|c| c["exp"] = json!(now() + 3600)),
        WRITE_SCOPE,
        unauthorized,
        "invalid_client",
        "five minutes",
    )
    .await;
    check_refused("expired", with_claims(|c| c["exp"] = json!(now() - 600)), WRITE_SCOPE, unauthorized, "invalid_client", "expired").await;
    check_refused("no jti", with_claims(|c| c["jti"] = Value::Null), WRITE_SCOPE, unauthorized, "invalid_client", "jti").await;
    check_refused("iss is not sub", with_claims(|c| c["sub"] = json!("someone-else")), WRITE_SCOPE, unauthorized, "invalid_client", "sub")
        .await;
    check_refused(
        "an unknown client",
        with_claims(|c| {
            c["iss"] = json!("stranger");
            c["sub"] = json!("stranger")
        }),
        WRITE_SCOPE,
        unauthorized,
        "invalid_client",
        "registered",
    )
    .await;
    check_refused(
        "HS256",
        |ehr, key| {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(key.kid.clone());
            jsonwebtoken::encode(&h, &good_claims(ehr, WRITER), &EncodingKey::from_secret(b"a shared secret").unwrap()).unwrap()
        },
        WRITE_SCOPE,
        unauthorized,
        "invalid_client",
        "alg",
    )
    .await;
    check_refused(
        "alg none",
        |ehr, key| {
            use base64::Engine;
            let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            format!("{}.{}.", b64(&json!({"alg": "none", "kid": key.kid, "typ": "JWT"})), b64(&good_claims(ehr, WRITER)))
        },
        WRITE_SCOPE,
        unauthorized,
        "invalid_client",
        "alg",
    )
    .await;
    check_refused(
        "no kid",
        |ehr, key| {
            let mut h = header_for(key);
            h.kid = None;
            sign_with_header(key, &h, &good_claims(ehr, WRITER))
        },
        WRITE_SCOPE,
        unauthorized,
        "invalid_client",
        "kid",
    )
    .await;
    check_refused(
        "a jku that is not registered",
        |ehr, key| key.sign(&good_claims(ehr, WRITER), Some("https://attacker.example/jwks.json")).unwrap(),
        WRITE_SCOPE,
        unauthorized,
        "invalid_client",
        "jku",
    )
    .await;
}

#[actix_web::test]
async fn requests_without_what_the_grant_needs_are_refused_as_invalid_request_or_scope() {
    let bad = StatusCode::BAD_REQUEST;
    let good = |ehr: &EhrSim, key: &ClientKey| key.sign(&good_claims(ehr, WRITER), None).unwrap();
    check_refused("no scope", good, "", bad, "invalid_request", "scope").await;
    check_refused("no allowed scope", good, "patient/*.rs launch user/Patient.r", bad, "invalid_scope", "scope").await;
    check_refused("no assertion", |_, _| String::new(), WRITE_SCOPE, bad, "invalid_request", "client_assertion").await;

    let (ehr, key) = ehr_with_writer(Algorithm::ES384);
    let assertion = key.sign(&good_claims(&ehr, WRITER), None).unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", "urn:other"),
        ("client_assertion", &assertion),
        ("scope", WRITE_SCOPE),
    ];
    let reply = send(&ehr, test::TestRequest::post().uri("/token").set_form(form)).await;
    assert_eq!((reply.status, reply.body["error"].as_str()), (bad, Some("invalid_request")));
    let reply = send(&ehr, test::TestRequest::post().uri("/token").set_form([("grant_type", "password")])).await;
    assert_eq!((reply.status, reply.body["error"].as_str()), (bad, Some("unsupported_grant_type")));
    assert_eq!(ehr.token_refusals().len(), 2, "both refusals are recorded: {:?}", ehr.token_refusals());

    // client_id is optional, but when sent it must be the assertion's.
    let assertion = key.sign(&good_claims(&ehr, WRITER), None).unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", JWT_BEARER_ASSERTION_TYPE),
        ("client_assertion", &assertion),
        ("scope", WRITE_SCOPE),
        ("client_id", "someone-else"),
    ];
    let reply = send(&ehr, test::TestRequest::post().uri("/token").set_form(form)).await;
    assert_eq!((reply.status, reply.body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
}

#[actix_web::test]
async fn a_replayed_assertion_is_refused() {
    let (ehr, key) = ehr_with_writer(Algorithm::RS384);
    let assertion = key.sign(&good_claims(&ehr, WRITER), None).unwrap();
    assert_eq!(token_request(&ehr, &assertion, WRITE_SCOPE).await.status, StatusCode::OK);
    let replay = token_request(&ehr, &assertion, WRITE_SCOPE).await;
    assert_eq!((replay.status, replay.body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    assert_eq!(ehr.token_refusals(), ["the assertion's jti was already used (replay)"]);
    // A fresh jti from the same client is fine.
    assert_eq!(token_request(&ehr, &key.sign(&good_claims(&ehr, WRITER), None).unwrap(), WRITE_SCOPE).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn the_smart_configuration_advertises_backend_services() {
    let reply = send(&new_ehr(), test::TestRequest::get().uri("/fhir/.well-known/smart-configuration")).await;
    let config = reply.body;
    assert!(config["grant_types_supported"].as_array().unwrap().contains(&json!("client_credentials")));
    assert!(config["grant_types_supported"].as_array().unwrap().contains(&json!("authorization_code")));
    assert!(config["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!("private_key_jwt")));
    assert_eq!(config["token_endpoint_auth_signing_alg_values_supported"], json!(["RS384", "ES384"]));
    assert!(config["scopes_supported"].as_array().unwrap().iter().any(|s| s.as_str().is_some_and(|s| s.starts_with("system/"))));
    assert_eq!(config["token_endpoint"], format!("{BASE}/token"));

    let capabilities = send(&new_ehr(), test::TestRequest::get().uri("/fhir/metadata")).await.body;
    assert_eq!(capabilities["rest"][0]["interaction"], json!([{"code": "transaction"}, {"code": "batch"}]));
    assert!(
        capabilities["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["type"] == "DiagnosticReport" && r["conditionalCreate"] == true)
    );
}

/// A JWKS server the test controls: what it serves and how often it was asked.
#[derive(Clone, Default)]
struct JwksServer {
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    /// Serves on 127.0.0.1 (port 0); returns the jwks_url.
    fn start(&self) -> String {
        let me = self.clone();
        let server = HttpServer::new(move || {
            let me = me.clone();
            App::new().route(
                "/jwks.json",
                web::get().to(move || {
                    let me = me.clone();
                    async move {
                        me.fetches.fetch_add(1, Ordering::SeqCst);
                        let body = me.jwks.lock().unwrap().clone();
                        HttpResponse::Ok().json(body)
                    }
                }),
            )
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("port 0 binds");
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        format!("http://127.0.0.1:{port}/jwks.json")
    }

    fn serve(&self, keys: &[&ClientKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| serde_json::to_value(k.public_jwk()).unwrap()).collect();
        *self.jwks.lock().unwrap() = json!({"keys": keys});
    }
}

#[actix_web::test]
async fn a_jwks_url_is_fetched_cached_and_fetched_again_for_a_new_kid() {
    let jwks = JwksServer::default();
    let url = jwks.start();
    let old_key = ClientKey::generate(Algorithm::ES384).unwrap();
    jwks.serve(&[&old_key]);
    let ehr = new_ehr();
    ehr.register_backend_client(BackendClient {
        client_id: WRITER.into(),
        jwks_url: Some(url.clone()),
        jwks: None,
        scopes: vec!["system/*.*".into()],
    });

    let ask = |key: &ClientKey, jku: Option<&str>| key.sign(&good_claims(&ehr, WRITER), jku).unwrap();
    assert_eq!(token_request(&ehr, &ask(&old_key, None), "system/Patient.c").await.status, StatusCode::OK);
    assert_eq!(token_request(&ehr, &ask(&old_key, Some(&url)), "system/Patient.c").await.status, StatusCode::OK);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1, "the second request uses the cached JWKS");

    // The client rotates: it publishes the new key, then signs with it.
    let new_key = ClientKey::generate(Algorithm::RS384).unwrap();
    jwks.serve(&[&old_key, &new_key]);
    assert_eq!(token_request(&ehr, &ask(&new_key, None), "system/Patient.c").await.status, StatusCode::OK);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2, "an unknown kid fetches the JWKS again");

    // A key it never published: one more fetch, then a refusal.
    let stranger = ClientKey::generate(Algorithm::ES384).unwrap();
    let reply = token_request(&ehr, &ask(&stranger, None), "system/Patient.c").await;
    assert_eq!((reply.status, reply.body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 3, "fetched once, not more");
}

#[actix_web::test]
async fn a_transaction_creates_resolves_references_and_is_idempotent_with_if_none_exist() {
    let (ehr, key) = ehr_with_writer(Algorithm::ES384);
    let token = writer_token(&ehr, &key, WRITE_SCOPE).await;
    let bundle = report_transaction("MRN-1", "ACC-1");

    let first = post_fhir(&ehr, "/fhir", Some(&token), &bundle, None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["type"], "transaction-response");
    assert_eq!(statuses(&first), ["201 Created"; 3]);
    let (patients, observations, reports) = (ehr.resources("Patient"), ehr.resources("Observation"), ehr.resources("DiagnosticReport"));
    // The seeded demo patient is there too.
    assert_eq!((patients.len(), observations.len(), reports.len()), (2, 1, 1));
    let patient = patients.iter().find(|p| p["identifier"][0]["value"] == "MRN-1").expect("the patient was stored");
    let patient_ref = format!("Patient/{}", patient["id"].as_str().unwrap());
    assert_eq!(reports[0]["subject"]["reference"], patient_ref.as_str());
    assert_eq!(reports[0]["result"][0]["reference"], format!("Observation/{}", observations[0]["id"].as_str().unwrap()));
    assert_eq!(observations[0]["subject"]["reference"], patient_ref.as_str());
    assert_eq!(reports[0]["meta"]["versionId"], "1");
    assert!(reports[0]["meta"]["lastUpdated"].as_str().is_some_and(|t| t.ends_with('Z')));
    let locations: Vec<&str> =
        first.body["entry"].as_array().unwrap().iter().map(|e| e["response"]["location"].as_str().unwrap()).collect();
    assert_eq!(locations[0], format!("{patient_ref}/_history/1"));
    assert_eq!(first.body["entry"][2]["response"]["etag"], "W/\"1\"");

    let second = post_fhir(&ehr, "/fhir", Some(&token), &bundle, None).await;
    assert_eq!(statuses(&second), ["200 OK"; 3], "{}", second.body);
    assert_eq!(count_of(&ehr, &["Patient", "Observation", "DiagnosticReport"]), 4, "no duplicates");
    assert_eq!(second.body["entry"][0]["response"]["location"], locations[0]);

    let received = ehr.received_transactions();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0], bundle, "kept as received, before references were rewritten");
}

#[actix_web::test]
async fn a_conditional_create_matching_two_resources_fails_the_whole_transaction_with_412() {
    let (ehr, key) = ehr_with_writer(Algorithm::ES384);
    let token = writer_token(&ehr, &key, WRITE_SCOPE).await;
    for _ in 0..2 {
        assert_eq!(post_fhir(&ehr, "/fhir/Patient", Some(&token), &patient("TWIN"), None).await.status, StatusCode::CREATED);
    }
    let reply = post_fhir(&ehr, "/fhir", Some(&token), &report_transaction("TWIN", "ACC-2"), None).await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED, "{}", reply.body);
    assert_eq!(reply.body["resourceType"], "OperationOutcome");
    assert_eq!(count_of(&ehr, &["Observation", "DiagnosticReport"]), 0, "nothing of the failed transaction is stored");
    assert_eq!(ehr.resources("Patient").len(), 3);
}

#[actix_web::test]
async fn a_transaction_with_a_bad_entry_stores_nothing() {
    let (ehr, key) = ehr_with_writer(Algorithm::ES384);
    let token = writer_token(&ehr, &key, WRITE_SCOPE).await;
    let mut bundle = report_transaction("MRN-3", "ACC-3");
    bundle["entry"][2]["resource"]["result"][0]["reference"] = json!("urn:uuid:00000000-0000-4000-8000-0000000000ff");
    let reply = post_fhir(&ehr, "/fhir", Some(&token), &bundle, None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(reply.body["resourceType"], "OperationOutcome");
    assert_eq!(count_of(&ehr, &["Patient", "Observation", "DiagnosticReport"]), 1, "only the seeded patient");

    let mut bundle = report_transaction("MRN-3", "ACC-3");
    bundle["entry"][1]["request"]["method"] = json!("DELETE");
    assert_eq!(post_fhir(&ehr, "/fhir", Some(&token), &bundle, None).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(count_of(&ehr, &["Patient", "Observation", "DiagnosticReport"]), 1);
}

#[actix_web::test]
async fn only_transaction_and_batch_bundles_are_accepted_at_the_fhir_base() {
    let (ehr, key) = ehr_with_writer(Algorithm::ES384);
    let token = writer_token(&ehr, &key, WRITE_SCOPE).await;
    for body in [json!({"resourceType": "Bundle", "type": "collection", "entry": []}), patient("X"), json!([1, 2])] {
        let reply = post_fhir(&ehr, "/fhir", Some(&token), &body, None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body["resourceType"], "OperationOutcome", "{body}");
    }
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient("B1"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "subject": {"reference": "urn:uuid:nowhere"}}, "request": {"method": "POST", "url": "Observation"}}
    ]});
    let reply = post_fhir(&ehr, "/fhir", Some(&token), &batch, None).await;
    assert_eq!(reply.body["type"], "batch-response");
    assert_eq!(statuses(&reply), ["201 Created", "400 Bad Request"], "a batch entry fails alone");
    assert_eq!(ehr.resources("Observation").len(), 0);
}

#[actix_web::test]
async fn conditional_create_answers_201_then_200_then_412() {
    let (ehr, key) = ehr_with_writer(Algorithm::ES384);
    let token = writer_token(&ehr, &key, WRITE_SCOPE).await;
    let condition = Some("identifier=urn:mrn|C1");
    let created = post_fhir(&ehr, "/fhir/Patient", Some(&token), &patient("C1"), condition).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let location = created.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(location, format!("{BASE}/fhir/Patient/{id}/_history/1"));

    let matched = post_fhir(&ehr, "/fhir/Patient", Some(&token), &patient("C1"), condition).await;
    assert_eq!((matched.status, matched.body["id"].as_str()), (StatusCode::OK, Some(id.as_str())));
    assert_eq!(ehr.resources("Patient").len(), 2);

    post_fhir(&ehr, "/fhir/Patient", Some(&token), &patient("C1"), None).await;
    let twice = post_fhir(&ehr, "/fhir/Patient", Some(&token), &patient("C1"), condition).await;
    assert_eq!(twice.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(ehr.resources("Patient").len(), 3);

    let unsupported = post_fhir(&ehr, "/fhir/Patient", Some(&token), &patient("C2"), Some("name=Test")).await;
    assert_eq!(unsupported.status, StatusCode::BAD_REQUEST);
    let wrong_type = post_fhir(&ehr, "/fhir/Observation", Some(&token), &patient("C3"), None).await;
    assert_eq!(wrong_type.status, StatusCode::BAD_REQUEST);
    assert_eq!(ehr.resources("Patient").len(), 3);
}

#[actix_web::test]
async fn reads_and_searches_find_what_was_written() {
    let (ehr, key) = ehr_with_writer(Algorithm::ES384);
    let token = writer_token(&ehr, &key, WRITE_SCOPE).await;
    post_fhir(&ehr, "/fhir", Some(&token), &report_transaction("MRN-4", "ACC-4"), None).await;
    post_fhir(&ehr, "/fhir", Some(&token), &report_transaction("MRN-5", "ACC-5"), None).await;

    let found = get_fhir(&ehr, "/fhir/DiagnosticReport?identifier=urn:acc%7CACC-4", &token).await;
    assert_eq!((found.status, found.body["type"].as_str(), found.body["total"].as_u64()), (StatusCode::OK, Some("searchset"), Some(1)));
    let report = &found.body["entry"][0]["resource"];
    let subject = report["subject"]["reference"].as_str().unwrap().to_owned();
    let by_subject = get_fhir(&ehr, &format!("/fhir/Observation?subject={subject}"), &token).await;
    assert_eq!(by_subject.body["total"], 1);
    let patient_id = subject.trim_start_matches("Patient/");
    assert_eq!(get_fhir(&ehr, &format!("/fhir/DiagnosticReport?patient={patient_id}"), &token).await.body["total"], 1);
    assert_eq!(get_fhir(&ehr, "/fhir/DiagnosticReport", &token).await.body["total"], 2);
    assert_eq!(get_fhir(&ehr, "/fhir/DiagnosticReport?code=x", &token).await.status, StatusCode::BAD_REQUEST);

    let read = get_fhir(&ehr, &format!("/fhir/{subject}"), &token).await;
    assert_eq!((read.status, read.body["identifier"][0]["value"].as_str()), (StatusCode::OK, Some("MRN-4")));
    let missing = get_fhir(&ehr, "/fhir/DiagnosticReport/nope", &token).await;
    assert_eq!((missing.status, missing.body["resourceType"].as_str()), (StatusCode::NOT_FOUND, Some("OperationOutcome")));
}

#[actix_web::test]
async fn insufficient_scopes_are_forbidden() {
    let ehr = new_ehr();
    let key = ClientKey::generate(Algorithm::ES384).unwrap();
    ehr.register_backend_client(inline_client(WRITER, &key, &["system/Patient.cu", "system/Observation.c"]));
    let token = writer_token(&ehr, &key, "system/Patient.cu system/Observation.c").await;

    let reply = post_fhir(&ehr, "/fhir", Some(&token), &report_transaction("MRN-6", "ACC-6"), None).await;
    assert_eq!((reply.status, reply.body["resourceType"].as_str()), (StatusCode::FORBIDDEN, Some("OperationOutcome")));
    assert_eq!(count_of(&ehr, &["Patient", "Observation", "DiagnosticReport"]), 1, "only the seeded patient");
    let report = json!({"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"}});
    assert_eq!(post_fhir(&ehr, "/fhir/DiagnosticReport", Some(&token), &report, None).await.status, StatusCode::FORBIDDEN);
    assert_eq!(get_fhir(&ehr, "/fhir/Patient?identifier=x", &token).await.status, StatusCode::FORBIDDEN, "c and u are not s");
    assert_eq!(post_fhir(&ehr, "/fhir/Patient", Some(&token), &patient("MRN-6"), None).await.status, StatusCode::CREATED);

    // A launch token may read its patient but never write.
    let user = ehr.issue_token("radsight-demo", DEMO_PATIENT, "launch patient/*.rs", 60);
    assert_eq!(get_fhir(&ehr, &format!("/fhir/Patient/{DEMO_PATIENT}"), &user).await.status, StatusCode::OK);
    assert_eq!(post_fhir(&ehr, "/fhir/Patient", Some(&user), &patient("MRN-7"), None).await.status, StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn missing_expired_and_revoked_tokens_are_unauthorized() {
    let (ehr, key) = ehr_with_writer(Algorithm::ES384);
    let token = writer_token(&ehr, &key, WRITE_SCOPE).await;
    let check_401 = |reply: &Reply, what: &str| {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(reply.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("Bearer")), "{what}");
        assert_eq!(reply.body["resourceType"], "OperationOutcome", "{what}");
    };
    check_401(&post_fhir(&ehr, "/fhir/Patient", None, &patient("A"), None).await, "no token");
    check_401(&post_fhir(&ehr, "/fhir/Patient", Some("made-up"), &patient("A"), None).await, "unknown token");
    assert_eq!(post_fhir(&ehr, "/fhir/Patient", Some(&token), &patient("A"), None).await.status, StatusCode::CREATED);

    ehr.revoke_backend_tokens();
    check_401(&post_fhir(&ehr, "/fhir/Patient", Some(&token), &patient("B"), None).await, "revoked");
    check_401(&post_fhir(&ehr, "/fhir", Some(&token), &report_transaction("B", "B"), None).await, "revoked, transaction");
    assert!(ehr.received_transactions().is_empty(), "a refused token's bundle is not recorded");

    ehr.set_backend_token_lifetime(0);
    let short = writer_token(&ehr, &key, WRITE_SCOPE).await;
    check_401(&get_fhir(&ehr, "/fhir/Patient?identifier=A", &short).await, "expired");
    assert_eq!(ehr.resources("Patient").len(), 2);
}

#[actix_web::test]
async fn fail_writes_fails_the_next_writes_and_stores_nothing() {
    let (ehr, key) = ehr_with_writer(Algorithm::ES384);
    let token = writer_token(&ehr, &key, WRITE_SCOPE).await;
    ehr.fail_writes(2, 503);
    let bundle = report_transaction("MRN-8", "ACC-8");
    let first = post_fhir(&ehr, "/fhir", Some(&token), &bundle, None).await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(first.body["resourceType"], "OperationOutcome");
    let second = post_fhir(&ehr, "/fhir/Patient", Some(&token), &patient("MRN-8"), None).await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(count_of(&ehr, &["Patient", "Observation", "DiagnosticReport"]), 1, "only the seeded patient");
    assert_eq!(get_fhir(&ehr, "/fhir/Patient?identifier=MRN-8", &token).await.status, StatusCode::OK, "reads are not writes");

    let third = post_fhir(&ehr, "/fhir", Some(&token), &bundle, None).await;
    assert_eq!(statuses(&third), ["201 Created"; 3]);
    assert_eq!(ehr.received_transactions().len(), 2, "the failed attempt was received too");

    ehr.fail_writes(1, 500);
    let failed = post_fhir(&ehr, "/fhir", Some(&token), &bundle, None).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(failed.headers.get("retry-after").is_none());
}

#[actix_web::test]
async fn backend_tokens_can_be_introspected() {
    let (ehr, key) = ehr_with_writer(Algorithm::ES384);
    ehr.register_introspection_client("rs", "secret");
    let token = writer_token(&ehr, &key, WRITE_SCOPE).await;
    use base64::Engine;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("rs:secret"));
    let reply = send(
        &ehr,
        test::TestRequest::post().uri("/introspect").insert_header(("authorization", basic)).set_form([("token", token.as_str())]),
    )
    .await;
    assert_eq!(reply.body["active"], true);
    assert_eq!(reply.body["client_id"], WRITER);
    assert_eq!(reply.body["scope"], WRITE_SCOPE);
}

#[actix_web::test]
async fn a_transaction_put_creates_then_updates_under_the_given_id_and_needs_update_scope() {
    let (ehr, key) = ehr_with_writer(Algorithm::ES384);
    let token = writer_token(&ehr, &key, WRITE_SCOPE).await;
    let put = |active: bool| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:6a0c9f1e-0000-4000-8000-000000000001",
             "resource": {"resourceType": "Patient", "id": "fixed-1", "active": active},
             "request": {"method": "PUT", "url": "Patient/fixed-1"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "urn:uuid:6a0c9f1e-0000-4000-8000-000000000001"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]})
    };
    let first = post_fhir(&ehr, "/fhir", Some(&token), &put(false), None).await;
    assert_eq!(statuses(&first), ["201 Created", "201 Created"], "{}", first.body);
    let second = post_fhir(&ehr, "/fhir", Some(&token), &put(true), None).await;
    assert_eq!(statuses(&second), ["200 OK", "201 Created"], "{}", second.body);
    assert_eq!(second.body["entry"][0]["response"]["location"], "Patient/fixed-1/_history/2");
    let stored = get_fhir(&ehr, "/fhir/Patient/fixed-1", &token).await.body;
    assert_eq!((stored["active"].as_bool(), stored["meta"]["versionId"].as_str()), (Some(true), Some("2")));
    assert!(ehr.resources("Observation").iter().all(|o| o["subject"]["reference"] == "Patient/fixed-1"));

    let create_only = writer_token(&ehr, &key, "system/Patient.c system/Observation.c").await;
    assert_eq!(post_fhir(&ehr, "/fhir", Some(&create_only), &put(false), None).await.status, StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn a_transaction_may_carry_a_large_attachment() {
    let (ehr, key) = ehr_with_writer(Algorithm::ES384);
    let token = writer_token(&ehr, &key, WRITE_SCOPE).await;
    let mut bundle = report_transaction("MRN-9", "ACC-9");
    // About 1 MB of base64: a PDF report, well past actix's 256 KiB default body limit.
    bundle["entry"][2]["resource"]["presentedForm"] = json!([{"contentType": "application/pdf", "data": "QUJD".repeat(250_000)}]);
    let reply = post_fhir(&ehr, "/fhir", Some(&token), &bundle, None).await;
    assert_eq!(statuses(&reply), ["201 Created"; 3], "{}", reply.status);
}
