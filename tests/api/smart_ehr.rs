//! The fixture EHR for the SMART tests: the `radsight-demo-ehr` crate (the same SMART
//! authorisation server and FHIR API as the demo EHR) on its own port, with CORS as a real EHR
//! serving a browser app would have, and `spawn_smart_app` to start radsight registered with it
//! (introspection) and with a second EHR whose access tokens are JWTs (`JWT_EHR`, keys at the
//! FHIR fixture's `/jwks.json`, signed with `TestApp::jku_key`).

use std::path::PathBuf;

use actix_web::{App, HttpServer};
use radsight::smart::{DEFAULT_SCOPES, EhrSettings, TokenValidation};
use radsight_demo_ehr::{EhrSim, SimClient, demo_patient, random_string};

use crate::helpers::{Backend, JKU_ISS, PATIENT, TestApp, spawn_app_with};

pub const CLIENT_ID: &str = "radsight-app";
pub const RESOURCE_CLIENT: &str = "radsight-resource-server";
pub const OTHER_PATIENT: &str = "other-patient";
pub const JWT_EHR: &str = "https://jwt-ehr.example.org/fhir";
/// A registered EHR nobody listens at (a port held closed): its launch cannot reach it. Not a
/// well-known closed port such as 9, which Chromium refuses as unsafe.
pub fn unreachable_ehr() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| format!("http://127.0.0.1:{}/fhir", crate::helpers::closed_port())).clone()
}
pub const SCOPES: &str = DEFAULT_SCOPES;

pub struct SmartEhr {
    pub sim: EhrSim,
    pub address: String,
    secret_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmartEhr {
    pub async fn start() -> SmartEhr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let sim = EhrSim::new(&address, vec![demo_patient(PATIENT), demo_patient(OTHER_PATIENT)]);
        let s = sim.clone();
        let server = HttpServer::new(move || {
            let s = s.clone();
            App::new().wrap(actix_cors::Cors::permissive()).configure(move |c| s.routes(c))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        let dir = tempfile::tempdir().unwrap();
        let secret = random_string(24);
        let secret_file = dir.path().join("introspection-secret");
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        sim.register_introspection_client(RESOURCE_CLIENT, &secret);
        SmartEhr { sim, address, secret_file, _dir: dir }
    }

    /// Introspects `token` as the registered resource server (RFC 7662).
    pub async fn introspect(&self, token: &str) -> serde_json::Value {
        let secret = std::fs::read_to_string(&self.secret_file).unwrap();
        let resp = reqwest::Client::new()
            .post(self.sim.introspection_endpoint())
            .basic_auth(RESOURCE_CLIENT, Some(secret.trim()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("token", token)]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::OK);
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
    }

    /// A token as if a launch for `patient` had completed, valid for `lifetime_secs`.
    pub fn token_for(&self, patient: &str, lifetime_secs: i64) -> String {
        self.sim.issue_token(CLIENT_ID, patient, SCOPES, lifetime_secs)
    }
}

/// An `application/x-www-form-urlencoded` body (or query string).
pub fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// radsight registered with a fresh fixture EHR (introspection) and the JWT EHR.
pub async fn spawn_smart_app(backend: Backend) -> (TestApp, SmartEhr) {
    spawn_smart_app_with(backend, |_| {}).await
}

/// [`spawn_smart_app_with`] reading the test Orthanc (64 MiB a study), as the end-to-end tests
/// of models need: a study in the PACS, the app in the browser.
pub async fn spawn_smart_app_with_pacs(backend: Backend, more: impl FnOnce(&mut radsight::configuration::Settings)) -> (TestApp, SmartEhr) {
    let secret = crate::dicomweb::pacs_secret(&crate::pacs::orthanc_credentials().1);
    let spawned = spawn_smart_app_with(backend, {
        let secret = secret.clone();
        move |s| {
            crate::dicomweb::use_test_pacs(s, 64 * 1024 * 1024, secret);
            more(s);
        }
    })
    .await;
    // Secrets are read once at start, so the file can go now.
    std::fs::remove_file(secret).unwrap();
    spawned
}

/// [`spawn_smart_app`] with further settings.
pub async fn spawn_smart_app_with(backend: Backend, more: impl FnOnce(&mut radsight::configuration::Settings)) -> (TestApp, SmartEhr) {
    let ehr = SmartEhr::start().await;
    let (iss, introspect, secret) = (ehr.sim.iss(), ehr.sim.introspection_endpoint(), ehr.secret_file.clone());
    let app = spawn_app_with(backend, move |s| {
        let jwks_url = s.clients.iter().find(|c| c.iss == JKU_ISS).unwrap().jku[0].clone();
        s.smart.app_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("smart-app/dist");
        // The SMART EHRs share the test hospital's patient ids.
        s.patient_namespaces[0].issuers.extend([iss.clone(), unreachable_ehr(), JWT_EHR.into()]);
        s.smart.ehrs = vec![
            EhrSettings {
                iss,
                client_id: CLIENT_ID.into(),
                scopes: SCOPES.into(),
                validation: TokenValidation::Introspection,
                introspection_endpoint: Some(introspect),
                introspection_client_id: Some(RESOURCE_CLIENT.into()),
                client_secret_file: Some(secret.clone()),
                jwks_url: None,
                token_issuer: None,
                token_audience: None,
            },
            EhrSettings {
                iss: unreachable_ehr(),
                client_id: CLIENT_ID.into(),
                scopes: SCOPES.into(),
                validation: TokenValidation::Introspection,
                introspection_endpoint: Some(format!("{}/introspect", unreachable_ehr())),
                introspection_client_id: None,
                client_secret_file: Some(secret.clone()),
                jwks_url: None,
                token_issuer: None,
                token_audience: None,
            },
            EhrSettings {
                iss: JWT_EHR.into(),
                client_id: CLIENT_ID.into(),
                scopes: SCOPES.into(),
                validation: TokenValidation::Jwks,
                introspection_endpoint: None,
                introspection_client_id: None,
                client_secret_file: None,
                jwks_url: Some(jwks_url),
                token_issuer: None,
                token_audience: None,
            },
        ];
        more(s);
    })
    .await;
    ehr.sim.register_client(SimClient {
        client_id: CLIENT_ID.into(),
        redirect_uris: vec![app.url("/smart/")],
        launch_url: app.url("/smart/launch"),
    });
    (app, ehr)
}

/// A SMART Backend Services assertion for `client` at `sim`'s token endpoint, signed by `key`
/// (four minutes, a fresh `jti`).
pub fn backend_assertion(sim: &EhrSim, key: &radsight::keys::ClientKey, client: &str) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = serde_json::json!({
        "iss": client, "sub": client, "aud": sim.token_endpoint(), "exp": now + 240, "jti": uuid::Uuid::new_v4().to_string(),
    });
    key.sign(&claims, None).unwrap()
}

/// Asks `sim`'s token endpoint for a client_credentials token with `assertion`: (status, body).
pub async fn backend_token(sim: &EhrSim, assertion: &str, scope: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(sim.token_endpoint())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("client_assertion_type", radsight_demo_ehr::JWT_BEARER_ASSERTION_TYPE),
            ("client_assertion", assertion),
        ]))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(serde_json::Value::Null))
}
