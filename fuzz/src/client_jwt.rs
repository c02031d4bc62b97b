//! The `client_jwt` fuzz target's body; what it feeds and checks is documented in `fuzz_targets/client_jwt.rs`.

use std::sync::LazyLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use radsight::auth::client_jwt::{AuthFailure, ClientVerifier};
use radsight::auth::jwks::KeyStore;
use radsight::configuration::{ClientSettings, DatabaseSettings, Settings};
use radsight::keys::ClientKey;
use radsight::store::{WriteGate, connect, migrate};

const ISS: &str = "https://ehr.example.org";
const AUD: &str = "https://radsight.example.org/cds-services/radsight-imaging-order-select";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    verifier: ClientVerifier,
    signer: EcdsaKeyPair,
    kid: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let key = ClientKey::generate(Algorithm::ES256).expect("a P-256 key");
    let pem_body: String = key.to_pem().lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(pem_body).expect("base64 PKCS#8");
    let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).expect("the key reads back");
    let client = ClientSettings {
        iss: ISS.into(),
        jwks: Some(serde_json::to_string(&key.jwks()).expect("a JWKS")),
        jwks_file: None,
        // No jku: an allowed jku would be fetched over the network.
        jku: vec![],
        fhir_servers: vec![],
    };
    let settings = Settings::default();
    let verifier = runtime.block_on(async {
        let db = connect(&DatabaseSettings { url: "sqlite::memory:".into(), max_connections: 1, acquire_timeout_ms: 5000 })
            .await
            .expect("an in-memory database");
        migrate(&db).await.expect("migrations");
        let keys = KeyStore::from_settings(&[client], &settings.auth, radsight::http_client::build()).expect("a key store");
        let gate = WriteGate::for_db(&db);
        ClientVerifier::new(keys, settings.auth.clone(), db, gate)
    });
    Fixture { runtime, verifier, signer, kid: key.kid }
});

fn substitute(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.replace(from, to).into_bytes(),
        Err(_) => bytes.to_vec(),
    }
}

pub fn run(data: &[u8]) {
    let fixture = &*FIXTURE;
    let [mode, rest @ ..] = data else { return };
    let mode = mode % 3;
    let authorization = if mode == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let mut parts = rest.splitn(3, |&b| b == 0);
        let header = substitute(parts.next().unwrap_or_default(), "KID", &fixture.kid);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = substitute(parts.next().unwrap_or_default(), "LATER", &(now + 300).to_string());
        let claims = substitute(&claims, "NOW", &now.to_string());
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let signature = if mode == 1 {
            parts.next().unwrap_or_default().to_vec()
        } else {
            fixture.signer.sign(&SystemRandom::new(), signing_input.as_bytes()).expect("signing").as_ref().to_vec()
        };
        format!("Bearer {signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    };

    let _ = ClientVerifier::claimed_issuer(Some(&authorization));
    let verified = fixture.runtime.block_on(fixture.verifier.verify(Some(&authorization), AUD));
    if let Ok(client) = verified {
        assert_eq!(mode, 2, "a token verified without the registered key's signature: {authorization:?}");
        assert_eq!(client.iss, ISS);
        let again = fixture.runtime.block_on(fixture.verifier.verify(Some(&authorization), AUD));
        assert_eq!(again, Err(AuthFailure::Replayed));
    }
}
