//! Getting the data a service needs: from the request's prefetch, or, for keys the client left
//! out, from its `fhirServer` with the `fhirAuthorization` token.
//!
//! **Boundary:** radsight fetches only from a `fhirServer` registered for the calling client
//! (`clients[].fhir_servers`); any other is refused before a connection is made. A key whose
//! data can be had neither way makes the call fail with 412, as CDS Hooks requires.
//!
//! Prefetch values follow the spec: a missing key means "not prefetched", `null` means "no data".
//!
//! **A check never vanishes silently.** A slot whose data cannot be used counts as missing: an
//! `OperationOutcome` (the EHR's query failed, as CDS Hooks tells EHRs to report it), a resource
//! of another type than the slot's query asks for, or a resource of another patient. radsight
//! then fetches the slot itself where a registered `fhirServer` and `fhirAuthorization` allow;
//! when it cannot, the slot is listed in [`ClinicalData::unusable`] and every rule that needs it
//! answers a card saying it could not run (`rules::evaluate`). A key that is simply absent and
//! cannot be fetched is still a 412, as the spec requires.

use std::time::Duration;

use futures_util::future::join_all;
use radsight_fhir::{AllergyIntolerance, DiagnosticReport, ImagingStudy, Observation, Resource, ServiceRequest};
use secrecy::ExposeSecret;
use serde_json::Value;

use super::definitions::ServiceDefinition;
use super::error::HookError;
use super::request::HookRequest;
use crate::auth::jwks::RegisteredClient;
use crate::domain::PatientId;
use crate::http_client::read_limited;

/// The patient's data that rules and result cards look at.
#[derive(Debug, Default, Clone)]
pub struct ClinicalData {
    pub active_orders: Vec<ServiceRequest>,
    pub studies: Vec<ImagingStudy>,
    pub reports: Vec<DiagnosticReport>,
    pub allergies: Vec<AllergyIntolerance>,
    pub observations: Vec<Observation>,
    /// Prefetch slots whose data could not be used nor fetched: the rules that need them say so.
    pub unusable: Vec<UnusableSlot>,
}

impl ClinicalData {
    /// Why the data of prefetch `key` is missing, if it is.
    pub fn unusable(&self, key: &str) -> Option<&UnusableSlot> {
        self.unusable.iter().find(|u| u.key == key)
    }
}

/// Why a prefetch slot's data cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// The slot holds an `OperationOutcome` with an error: the EHR's query failed.
    QueryFailed,
    /// The slot holds a resource of another type than its query asks for.
    WrongType { expected: String, found: String },
    /// The slot holds a resource of another patient.
    WrongPatient,
}

impl Unusable {
    /// A stable code for the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            Unusable::QueryFailed => "query-failed",
            Unusable::WrongType { .. } => "wrong-resource-type",
            Unusable::WrongPatient => "wrong-patient",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusableSlot {
    pub key: String,
    pub why: Unusable,
    /// Whether radsight tried to fetch the slot itself (and failed).
    pub fetch_failed: bool,
}

/// The resource type a prefetch template asks for: `Patient/{{…}}` → Patient,
/// `Observation?…` → Observation.
pub fn template_type(template: &str) -> &str {
    template.split(['/', '?']).next().unwrap_or_default()
}

/// Whether `reference` (relative or absolute) points at `Patient/{id}`.
fn is_patient(reference: &str, patient: &PatientId) -> bool {
    let reference = reference.split("/_history/").next().unwrap_or(reference);
    reference == patient.reference() || reference.ends_with(&format!("/{}", patient.reference()))
}

/// Checks one resource of a slot: its type, and that it is the context patient's.
fn check_resource(resource: &Value, expected: &str, patient: &PatientId) -> Result<(), Unusable> {
    let found = resource.get("resourceType").and_then(Value::as_str).unwrap_or_default();
    if found == "OperationOutcome" {
        let failed = resource.get("issue").and_then(Value::as_array).is_none_or(|issues| {
            issues.iter().any(|i| matches!(i.get("severity").and_then(Value::as_str), Some("error" | "fatal") | None))
        });
        return if failed { Err(Unusable::QueryFailed) } else { Ok(()) };
    }
    if found != expected {
        return Err(Unusable::WrongType { expected: expected.to_owned(), found: found.chars().take(64).collect() });
    }
    let owner = if found == "Patient" {
        resource.get("id").and_then(Value::as_str).map(|id| id == patient.as_str())
    } else {
        ["subject", "patient"]
            .iter()
            .find_map(|field| resource.get(*field).and_then(|r| r.get("reference")).and_then(Value::as_str))
            .map(|r| is_patient(r, patient))
    };
    match owner {
        Some(false) => Err(Unusable::WrongPatient),
        _ => Ok(()),
    }
}

/// Checks a slot's value (a resource or a search Bundle) before any of it is used.
pub fn check_slot(value: &Value, expected: &str, patient: &PatientId) -> Result<(), Unusable> {
    match value.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") if expected != "Bundle" => {
            let entries = value.get("entry").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            entries.iter().filter_map(|e| e.get("resource")).try_for_each(|r| check_resource(r, expected, patient))
        }
        _ => check_resource(value, expected, patient),
    }
}

impl ClinicalData {
    fn add(&mut self, r: Resource) {
        match r {
            Resource::ServiceRequest(x) if !self.active_orders.iter().any(|o| o.id.is_some() && o.id == x.id) => self.active_orders.push(x),
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
        let resp =
            self.http.get(&url).timeout(self.timeout).bearer_auth(token).header("accept", "application/fhir+json").send().await.map_err(
                |e| (None, if e.is_timeout() { "the FHIR server timed out".into() } else { "the FHIR server could not be reached".into() }),
            )?;
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
    // Keys to fetch: absent ones (a failure is a 412) and unusable ones (a failure is a card).
    let mut missing = Vec::new();
    let mut unusable = Vec::new();
    for (key, template) in &service.prefetch {
        match req.prefetch.get(key) {
            Some(Value::Null) => {}
            Some(value) => match check_slot(value, template_type(template), &req.patient) {
                Ok(()) => match radsight_fhir::parse_resources(value) {
                    Ok(resources) => resources.into_iter().for_each(|r| data.add(r)),
                    Err(e) => return (Err(HookError::invalid(format!("prefetch.{key}"), e.to_string())), Vec::new()),
                },
                Err(why) => unusable.push((key.clone(), template.clone(), why)),
            },
            None => missing.push((key.clone(), template.clone())),
        }
    }
    if missing.is_empty() && unusable.is_empty() {
        return (Ok(data), Vec::new());
    }
    let server = match (&req.fhir_server, &req.fhir_authorization) {
        (Some(server), Some(auth)) if client.may_use_fhir_server(server) => Some((server, auth)),
        (Some(_), Some(_)) if !missing.is_empty() => return (Err(HookError::FhirServerNotRegistered), Vec::new()),
        _ if !missing.is_empty() => {
            let key = missing[0].0.clone();
            return (Err(HookError::PrefetchUnavailable { key, why: "no fhirServer and fhirAuthorization were given".into() }), Vec::new());
        }
        _ => None,
    };
    let Some((server, auth)) = server else {
        data.unusable.extend(unusable.into_iter().map(|(key, _, why)| UnusableSlot { key, why, fetch_failed: false }));
        return (Ok(data), Vec::new());
    };
    // Each query remembers why it is made: `None` for an absent key, else why the slot the
    // client sent could not be used.
    let mut queries = Vec::new();
    let wanted = missing.into_iter().map(|(k, t)| (k, t, None)).chain(unusable.into_iter().map(|(k, t, why)| (k, t, Some(why))));
    for (key, template, why) in wanted {
        match (fill_template(&template, req), why) {
            (Ok(q), why) => queries.push((key, q, template_type(&template).to_owned(), why)),
            (Err(_), Some(why)) => data.unusable.push(UnusableSlot { key, why, fetch_failed: true }),
            (Err(token), None) => {
                let why = format!("its query needs {token}, which the context does not provide");
                return (Err(HookError::PrefetchUnavailable { key, why }), Vec::new());
            }
        }
    }
    let token = auth.access_token.expose_secret();
    let results = join_all(queries.iter().map(|(_, q, _, _)| fetcher.get(server, q, token))).await;
    let mut records = Vec::new();
    let mut failure = None;
    for ((key, query, expected, sent), result) in queries.into_iter().zip(results) {
        let resource_type = query.split(['/', '?']).next().unwrap_or_default().to_owned();
        let outcome = match result {
            Ok((status, None)) => Ok(status),
            Ok((status, Some(value))) => match check_slot(&value, &expected, &req.patient) {
                // The EHR's own server answered with unusable data: the check cannot run.
                Err(why) => Err((Some(status), Some(why), "the FHIR server sent data that cannot be used".to_owned())),
                Ok(()) => match radsight_fhir::parse_resources(&value) {
                    Ok(resources) => {
                        resources.into_iter().for_each(|r| data.add(r));
                        Ok(status)
                    }
                    Err(e) => Err((Some(status), None, format!("the FHIR server sent data that is not valid FHIR: {e}"))),
                },
            },
            Err((status, why)) => Err((status, None, why)),
        };
        match outcome {
            Ok(status) => records.push(FetchRecord { key, resource_type, status: Some(status), ok: true }),
            Err((status, fetched_why, why)) => {
                records.push(FetchRecord { key: key.clone(), resource_type, status, ok: false });
                match (sent, fetched_why) {
                    // The client's slot was unusable and so is what we fetched: a card says so.
                    (Some(sent), fetched) => data.unusable.push(UnusableSlot { key, why: fetched.unwrap_or(sent), fetch_failed: true }),
                    (None, Some(fetched)) => data.unusable.push(UnusableSlot { key, why: fetched, fetch_failed: true }),
                    (None, None) => {
                        failure.get_or_insert(HookError::PrefetchUnavailable { key, why });
                    }
                }
            }
        }
    }
    match failure {
        Some(e) => (Err(e), records),
        None => (Ok(data), records),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(value: Value, expected: &str) -> Result<(), Unusable> {
        check_slot(&value, expected, &PatientId::parse("p1").unwrap())
    }

    fn bundle(resources: Vec<Value>) -> Value {
        json!({"resourceType": "Bundle", "type": "searchset", "entry": resources.into_iter().map(|r| json!({"resource": r})).collect::<Vec<_>>()})
    }

    #[test]
    fn slots_are_checked_for_failure_type_and_patient_before_use() {
        let obs = |subject: &str| json!({"resourceType": "Observation", "subject": {"reference": subject}});
        assert_eq!(check(bundle(vec![obs("Patient/p1"), obs("https://ehr.example.org/fhir/Patient/p1")]), "Observation"), Ok(()));
        assert_eq!(check(bundle(vec![]), "Observation"), Ok(()), "an empty search result is data: none");
        assert_eq!(check(json!({"resourceType": "Observation"}), "Observation"), Ok(()), "a resource naming no patient is not refused");
        assert_eq!(check(bundle(vec![obs("Patient/p1"), obs("Patient/p2")]), "Observation"), Err(Unusable::WrongPatient));
        assert_eq!(check(bundle(vec![obs("Patient/p10")]), "Observation"), Err(Unusable::WrongPatient), "no prefix match");
        assert_eq!(check(json!({"resourceType": "Patient", "id": "p2"}), "Patient"), Err(Unusable::WrongPatient));
        assert_eq!(check(json!({"resourceType": "Patient", "id": "p1"}), "Patient"), Ok(()));
        assert_eq!(
            check(json!({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p2"}}), "AllergyIntolerance"),
            Err(Unusable::WrongPatient)
        );
        let failed = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]});
        assert_eq!(check(failed.clone(), "Observation"), Err(Unusable::QueryFailed));
        assert_eq!(check(bundle(vec![obs("Patient/p1"), failed]), "Observation"), Err(Unusable::QueryFailed), "a partly failed search");
        let note = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]});
        assert_eq!(check(bundle(vec![obs("Patient/p1"), note]), "Observation"), Ok(()), "an informational outcome is not a failure");
        assert_eq!(
            check(bundle(vec![json!({"resourceType": "Patient", "id": "p1"})]), "Observation"),
            Err(Unusable::WrongType { expected: "Observation".into(), found: "Patient".into() })
        );
        assert_eq!(
            check(json!({"resourceType": "Condition"}), "Patient"),
            Err(Unusable::WrongType { expected: "Patient".into(), found: "Condition".into() })
        );
    }

    #[test]
    fn a_template_names_the_type_it_asks_for() {
        assert_eq!(template_type("Patient/{{context.patientId}}"), "Patient");
        assert_eq!(template_type("Observation?patient={{context.patientId}}&code=x"), "Observation");
    }
}
