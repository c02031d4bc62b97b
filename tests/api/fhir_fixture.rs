//! A small FHIR R4 server standing in for the EHR's FHIR API (and a client's JWKS host).
//!
//! It behaves as the FHIR RESTful API says for what radsight uses: `read` answers the resource
//! or 404 with an OperationOutcome; `search` answers a `searchset` Bundle filtered by `patient`,
//! `code` (`system|code`, comma = OR) and `status`, honouring `_count`; a missing or wrong
//! bearer token gets 401 with an OperationOutcome. Every request is recorded, so tests can
//! prove that radsight did (or did not) call it.

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

pub const ACCESS_TOKEN: &str = "fixture-access-token";

#[derive(Clone, Default)]
struct Shared {
    resources: Arc<Mutex<Vec<Value>>>,
    requests: Arc<Mutex<Vec<String>>>,
    jwks: Arc<Mutex<Value>>,
    /// How long each FHIR read takes, as a slow EHR's would.
    delay: Arc<Mutex<std::time::Duration>>,
}

pub struct FhirFixture {
    pub address: String,
    shared: Shared,
}

fn outcome(status: actix_web::http::StatusCode, code: &str, text: &str) -> HttpResponse {
    HttpResponse::build(status).content_type("application/fhir+json").json(json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}]
    }))
}

fn authorised(req: &HttpRequest) -> bool {
    req.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {ACCESS_TOKEN}"))
}

fn subject_of(r: &Value) -> Option<&str> {
    r.get("subject").or_else(|| r.get("patient")).and_then(|s| s["reference"].as_str())
}

fn matches_codes(r: &Value, tokens: &str) -> bool {
    let codings = r["code"]["coding"].as_array().cloned().unwrap_or_default();
    tokens.split(',').any(|t| {
        let (system, code) = t.split_once('|').unwrap_or(("", t));
        codings.iter().any(|c| c["code"] == code && (system.is_empty() || c["system"] == system))
    })
}

async fn handle(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    let target = match req.uri().query() {
        Some(q) => format!("{}?{}", req.path(), q),
        None => req.path().to_owned(),
    };
    shared.requests.lock().unwrap().push(target);
    let delay = *shared.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if req.path() == "/jwks.json" {
        return HttpResponse::Ok().json(shared.jwks.lock().unwrap().clone());
    }
    let Some(rest) = req.path().strip_prefix("/fhir/") else {
        return outcome(actix_web::http::StatusCode::NOT_FOUND, "not-found", "no such endpoint");
    };
    if !authorised(&req) {
        return outcome(actix_web::http::StatusCode::UNAUTHORIZED, "login", "a valid bearer token is required");
    }
    let resources = shared.resources.lock().unwrap().clone();
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [rtype, id] => match resources.iter().find(|r| r["resourceType"] == *rtype && r["id"] == *id) {
            Some(r) => HttpResponse::Ok().content_type("application/fhir+json").json(r),
            None => outcome(actix_web::http::StatusCode::NOT_FOUND, "not-found", &format!("{rtype}/{id} is not known")),
        },
        [rtype] => {
            let params: Vec<(String, String)> =
                url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let mut hits: Vec<Value> = resources
                .into_iter()
                .filter(|r| r["resourceType"] == *rtype)
                .filter(|r| get("patient").is_none_or(|p| subject_of(r) == Some(&format!("Patient/{p}"))))
                .filter(|r| get("code").is_none_or(|c| matches_codes(r, &c)))
                .filter(|r| get("status").is_none_or(|s| r["status"] == s.as_str()))
                .collect();
            if let Some(n) = get("_count").and_then(|n| n.parse::<usize>().ok()) {
                hits.truncate(n);
            }
            let base = format!("http://{}/fhir", req.connection_info().host());
            HttpResponse::Ok().content_type("application/fhir+json").json(json!({
                "resourceType": "Bundle",
                "type": "searchset",
                "total": hits.len(),
                "entry": hits.iter().map(|r| json!({
                    "fullUrl": format!("{base}/{}/{}", r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap_or("")),
                    "resource": r,
                    "search": {"mode": "match"}
                })).collect::<Vec<_>>()
            }))
        }
        _ => outcome(actix_web::http::StatusCode::BAD_REQUEST, "not-supported", "unsupported interaction"),
    }
}

impl FhirFixture {
    pub async fn start() -> FhirFixture {
        let shared = Shared::default();
        let data = web::Data::new(shared.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(handle)))
            .workers(1)
            .listen(listener)
            .unwrap()
            .run();
        tokio::spawn(server);
        FhirFixture { address: format!("http://127.0.0.1:{port}"), shared }
    }

    pub fn fhir_base(&self) -> String {
        format!("{}/fhir", self.address)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.address)
    }

    /// Makes every later request take `delay` before it is answered.
    pub fn set_delay(&self, delay: std::time::Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    pub fn set_jwks(&self, jwks: Value) {
        *self.shared.jwks.lock().unwrap() = jwks;
    }

    pub fn add(&self, resource: Value) {
        self.shared.resources.lock().unwrap().push(resource);
    }

    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }
}
