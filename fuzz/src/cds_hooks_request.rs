//! The `cds_hooks_request` fuzz target's body; what it feeds and checks is documented in `fuzz_targets/cds_hooks_request.rs`.

use std::sync::LazyLock;
use std::time::Duration;

use radsight::auth::jwks::{KeyStore, RegisteredClient};
use radsight::cds_hooks::definitions::{ServiceDefinition, ServiceDefinitions};
use radsight::cds_hooks::prefetch::{FhirFetcher, check_slot, fill_template, resolve, template_type};
use radsight::cds_hooks::request::parse_hook_request;
use radsight::configuration::{ClientSettings, Settings};
use radsight::domain::Hook;
use radsight::http::body::parse_json;
use serde_json::Value;

const ISS: &str = "https://ehr.example.org";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    services: Vec<(Hook, ServiceDefinition)>,
    keys: KeyStore,
    fetcher: FhirFetcher,
}

impl Fixture {
    fn client(&self) -> &RegisteredClient {
        self.keys.client(ISS).expect("the client is registered")
    }
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let definitions = ServiceDefinitions::load("").expect("the built-in service definitions");
    let discovery: Value = serde_json::from_str(definitions.discovery_json()).expect("discovery is JSON");
    let services = discovery["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| {
            let def = definitions.get(s["id"].as_str().expect("an id")).expect("a service").clone();
            (Hook::parse(&def.hook).expect("a known hook"), def)
        })
        .collect();
    let client = ClientSettings { iss: ISS.into(), jwks: None, jwks_file: None, jku: vec![], fhir_servers: vec![] };
    let http = runtime.block_on(async { radsight::http_client::build() });
    let keys = KeyStore::from_settings(&[client], &Settings::default().auth, http.clone()).expect("a key store");
    let fetcher = FhirFetcher::new(http, Duration::from_millis(1), 1 << 20);
    Fixture { runtime, services, keys, fetcher }
});

pub fn run(data: &[u8]) {
    let fixture = &*FIXTURE;
    let strict = parse_json(data);
    let lenient = serde_json::from_slice::<Value>(data);
    let body = match (strict, lenient) {
        (Ok(v), Ok(w)) => {
            assert_eq!(v, w, "parse_json and serde_json read the same JSON differently");
            v
        }
        (Ok(v), Err(e)) => panic!("parse_json accepted what serde_json refuses ({e}): {v:?}"),
        (Err(e), Ok(_)) => {
            assert!(e.to_string().contains("appears twice"), "parse_json refused JSON serde_json reads: {e}");
            return;
        }
        (Err(_), Err(_)) => return,
    };

    for (hook, service) in &fixture.services {
        let Ok(req) = parse_hook_request(body.clone(), *hook) else { continue };
        for template in service.prefetch.values() {
            if let Ok(filled) = fill_template(template, &req) {
                assert!(!filled.contains("{{"), "an unfilled token in {filled:?}");
            }
            for value in req.prefetch.values() {
                let _ = check_slot(value, template_type(template), &req.patient);
            }
        }
        let (data, fetches) = fixture.runtime.block_on(resolve(service, &req, fixture.client(), &fixture.fetcher));
        assert!(fetches.is_empty(), "resolve fetched from an unregistered server");
        if let Err(e) = data {
            let _ = e.to_string();
        }
    }
}
