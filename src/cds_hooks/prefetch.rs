//! Getting the data a service needs: from the request's prefetch, or, for keys the client left
//! out, from its `fhirServer` with the `fhirAuthorization` token.
//!
//! **Boundary:** radsight fetches only from a `fhirServer` registered for the calling client
//! (`clients[].fhir_servers`); any other is refused before a connection is made. A key whose
//! data can be had neither way makes the call fail with 412, as CDS Hooks requires.
//!
//! Prefetch values follow the spec: a missing key means "not prefetched", `null` means "no data".

use std::time::Duration;

use futures_util::future::join_all;
use radsight_fhir::{AllergyIntolerance, DiagnosticReport, ImagingStudy, Observation, Resource, ServiceRequest};
use secrecy::ExposeSecret;
use serde_json::Value;

use super::definitions::ServiceDefinition;
use super::error::HookError;
use super::request::HookRequest;
use crate::auth::jwks::RegisteredClient;
use crate::http_client::read_limited;

/// The patient's data that rules and result cards look at.
#[derive(Debug, Default, Clone)]
pub struct ClinicalData {
    pub active_orders: Vec<ServiceRequest>,
    pub studies: Vec<ImagingStudy>,
    pub reports: Vec<DiagnosticReport>,
    pub allergies: Vec<AllergyIntolerance>,
    pub observations: Vec<Observation>,
}

impl ClinicalData {
    fn add(&mut self, r: Resource) {
        match r {
            Resource::ServiceRequest(x) if !self.active_orders.iter().any(|o| o.id.is_some() && o.id == x.id) => {
                self.active_orders.push(x)
            }
            Resource::ImagingStudy(x) => self.studies.push(x),
            Resource::DiagnosticReport(x) => self.reports.push(x),
            Resource::AllergyIntolerance(x) => self.allergies.push(x),
            Resource::Observation(x) => self.observations.push(x),
            _ => {}
        }
    }
}

/// One read made against an EHR, for the audit trail.
#[derive(Debug, Clone)]
pub struct FetchRecord {
    pub key: String,
    pub resource_type: String,
    /// HTTP status, or `None` when no response came.
    pub status: Option<u16>,
    pub ok: bool,
}

pub struct FhirFetcher {
    http: reqwest::Client,
    timeout: Duration,
    max_bytes: usize,
}

impl FhirFetcher {
    pub fn new(http: reqwest::Client, timeout: Duration, max_bytes: usize) -> FhirFetcher {
        FhirFetcher { http, timeout, max_bytes }
    }

    /// GETs `{base}/{relative}`. `Ok(None)` is a 404 (no such resource: no data).
    async fn get(&self, base: &str, relative: &str, token: &str) -> Result<(u16, Option<Value>), (Option<u16>, String)> {
        let url = format!("{}/{}", base.trim_end_matches('/'), relative);
        let resp = self
            .http
            .get(&url)
            .timeout(self.timeout)
            .bearer_auth(token)
            .header("accept", "application/fhir+json")
            .send()
            .await
            .map_err(|e| (None, if e.is_timeout() { "the FHIR server timed out".into() } else { "the FHIR server could not be reached".into() }))?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok((status, None));
        }
        if !resp.status().is_success() {
            return Err((Some(status), format!("the FHIR server answered {status}")));
        }
        let body = read_limited(resp, self.max_bytes).await.map_err(|e| (Some(status), e.to_string()))?;
        let value: Value = serde_json::from_slice(&body).map_err(|_| (Some(status), "the FHIR server sent invalid JSON".into()))?;
        Ok((status, Some(value)))
    }
}

/// Replaces `{{context.x}}` and `{{userPractitionerId}}` tokens. Returns the first token that
/// cannot be filled.
pub fn fill_template(template: &str, req: &HookRequest) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").ok_or_else(|| "an unterminated {{".to_owned())? + start;
        let token = rest[start + 2..end].trim();
        let value = if token == "userPractitionerId" {
            req.user_id.strip_prefix("Practitioner/").map(str::to_owned)
        } else if let Some(field) = token.strip_prefix("context.") {
            match req.context.get(field) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(Value::Bool(b)) => Some(b.to_string()),
                _ => None,
            }
        } else {
            None
        };
        let value = value.ok_or_else(|| format!("{{{{{token}}}}}"))?;
        out.extend(url::form_urlencoded::byte_serialize(value.as_bytes()));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Gathers every prefetch key of `service`. Returns the reads made alongside the outcome so the
/// caller can audit them whether or not the call succeeds.
pub async fn resolve(
    service: &ServiceDefinition,
    req: &HookRequest,
    client: &RegisteredClient,
    fetcher: &FhirFetcher,
) -> (Result<ClinicalData, HookError>, Vec<FetchRecord>) {
    let mut data = ClinicalData::default();
    let mut missing = Vec::new();
    for (key, template) in &service.prefetch {
        match req.prefetch.get(key) {
            Some(Value::Null) => {}
            Some(value) => match radsight_fhir::parse_resources(value) {
                Ok(resources) => resources.into_iter().for_each(|r| data.add(r)),
                Err(e) => return (Err(HookError::invalid(format!("prefetch.{key}"), e.to_string())), Vec::new()),
            },
            None => missing.push((key.clone(), template.clone())),
        }
    }
    if missing.is_empty() {
        return (Ok(data), Vec::new());
    }
    let (Some(server), Some(auth)) = (&req.fhir_server, &req.fhir_authorization) else {
        let key = missing[0].0.clone();
        return (Err(HookError::PrefetchUnavailable { key, why: "no fhirServer and fhirAuthorization were given".into() }), Vec::new());
    };
    if !client.may_use_fhir_server(server) {
        return (Err(HookError::FhirServerNotRegistered), Vec::new());
    }
    let mut queries = Vec::new();
    for (key, template) in missing {
        match fill_template(&template, req) {
            Ok(q) => queries.push((key, q)),
            Err(token) => {
                let why = format!("its query needs {token}, which the context does not provide");
                return (Err(HookError::PrefetchUnavailable { key, why }), Vec::new());
            }
        }
    }
    let token = auth.access_token.expose_secret();
    let results = join_all(queries.iter().map(|(_, q)| fetcher.get(server, q, token))).await;
    let mut records = Vec::new();
    let mut failure = None;
    for ((key, query), result) in queries.into_iter().zip(results) {
        let resource_type = query.split(['/', '?']).next().unwrap_or_default().to_owned();
        let outcome = match result {
            Ok((status, None)) => Ok(status),
            Ok((status, Some(value))) => match radsight_fhir::parse_resources(&value) {
                Ok(resources) => {
                    resources.into_iter().for_each(|r| data.add(r));
                    Ok(status)
                }
                Err(e) => Err((Some(status), format!("the FHIR server sent data that is not valid FHIR: {e}"))),
            },
            Err(e) => Err(e),
        };
        match outcome {
            Ok(status) => records.push(FetchRecord { key, resource_type, status: Some(status), ok: true }),
            Err((status, why)) => {
                records.push(FetchRecord { key: key.clone(), resource_type, status, ok: false });
                failure.get_or_insert(HookError::PrefetchUnavailable { key, why });
            }
        }
    }
    match failure {
        Some(e) => (Err(e), records),
        None => (Ok(data), records),
    }
}
