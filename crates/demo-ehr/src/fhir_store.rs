//! The in-memory FHIR R4 store: resources by type, the search parameters the demo EHR
//! understands (`identifier`, `_id`, `subject`, `patient`), conditional create, and
//! transaction/batch processing (FHIR R4 http.html §3.1.0.11: `urn:uuid:` fullUrls resolved,
//! `ifNoneExist` honoured, all or nothing).
//!
//! Nothing here knows about HTTP or tokens: `fhir_api` checks those and turns a
//! [`WriteError`] into an OperationOutcome.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::scopes::is_resource_type;

/// Why a write (or a search) was refused; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// 400: the request is malformed or uses something the demo EHR does not support.
    Invalid(String),
    /// 412: a conditional create or update matched more than one resource.
    MultipleMatches(String),
}

impl WriteError {
    fn invalid(text: impl Into<String>) -> WriteError {
        WriteError::Invalid(text.into())
    }
}

/// One search criterion; several are ANDed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SearchParam {
    /// `identifier=[system]|[value]` or `identifier=value`: `None` means "any".
    Identifier {
        system: Option<String>,
        value: Option<String>,
    },
    Id(String),
    /// `subject=Patient/x`: the resource's `subject.reference`.
    Subject(String),
    /// `patient=x` or `patient=Patient/x`: `subject` or `patient` referencing that patient.
    Patient(String),
}

/// A parsed search (or `ifNoneExist`) query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchQuery(Vec<SearchParam>);

impl SearchQuery {
    /// Parses `identifier=sys|val&…` (an optional `Type?` prefix, as some clients send in
    /// `ifNoneExist`, is dropped). Parameters the store cannot evaluate are refused rather
    /// than ignored, so a conditional create never matches more than its author meant.
    pub(crate) fn parse(query: &str) -> Result<SearchQuery, WriteError> {
        let query = query.split_once('?').map_or(query, |(_, q)| q);
        let mut params = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let param = match name.as_ref() {
                "identifier" => parse_identifier(&value),
                "_id" => SearchParam::Id(value.into_owned()),
                "subject" => SearchParam::Subject(value.into_owned()),
                "patient" => SearchParam::Patient(value.strip_prefix("Patient/").unwrap_or(&value).to_owned()),
                // All matches come back in one page, so a page size changes nothing.
                "_format" | "_count" => continue,
                other => return Err(WriteError::invalid(format!("the search parameter '{other}' is not supported"))),
            };
            params.push(param);
        }
        Ok(SearchQuery(params))
    }

    fn matches(&self, resource: &Value) -> bool {
        self.0.iter().all(|p| param_matches(p, resource))
    }
}

fn parse_identifier(value: &str) -> SearchParam {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    match value.split_once('|') {
        // `|value` is "no system" in FHIR; the demo treats it as "any system" (no resource
        // here is stored without one in practice).
        Some((system, value)) => SearchParam::Identifier { system: non_empty(system), value: non_empty(value) },
        None => SearchParam::Identifier { system: None, value: non_empty(value) },
    }
}

fn param_matches(param: &SearchParam, resource: &Value) -> bool {
    match param {
        SearchParam::Identifier { system, value } => identifiers(resource)
            .any(|i| system.as_deref().is_none_or(|s| i["system"] == s) && value.as_deref().is_none_or(|v| i["value"] == v)),
        SearchParam::Id(id) => resource["id"] == id.as_str(),
        SearchParam::Subject(reference) => resource["subject"]["reference"] == reference.as_str(),
        SearchParam::Patient(id) => {
            let reference = format!("Patient/{id}");
            resource["subject"]["reference"] == reference.as_str() || resource["patient"]["reference"] == reference.as_str()
        }
    }
}

/// A resource's identifiers: most types have an array, a few a single Identifier.
fn identifiers(resource: &Value) -> impl Iterator<Item = &Value> {
    let list: Vec<&Value> = match &resource["identifier"] {
        Value::Array(items) => items.iter().collect(),
        one @ Value::Object(_) => vec![one],
        _ => Vec::new(),
    };
    list.into_iter()
}

/// What a single write did, for the response (`201 Created` or `200 OK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WriteOutcome {
    pub(crate) created: bool,
    pub(crate) resource: Value,
}

impl WriteOutcome {
    pub(crate) fn status_line(&self) -> &'static str {
        if self.created { "201 Created" } else { "200 OK" }
    }

    /// `Type/id/_history/n`, relative to the FHIR base.
    pub(crate) fn location(&self) -> String {
        format!(
            "{}/{}/_history/{}",
            self.resource["resourceType"].as_str().unwrap_or_default(),
            self.resource["id"].as_str().unwrap_or_default(),
            self.version()
        )
    }

    pub(crate) fn etag(&self) -> String {
        format!("W/\"{}\"", self.version())
    }

    fn version(&self) -> &str {
        self.resource["meta"]["versionId"].as_str().unwrap_or("1")
    }

    /// The `response` element of a transaction-response entry.
    fn response_entry(&self) -> Value {
        json!({"response": {
            "status": self.status_line(),
            "location": self.location(),
            "etag": self.etag(),
            "lastModified": self.resource["meta"]["lastUpdated"],
        }})
    }
}

/// The resources, by type, in the order they were stored.
#[derive(Debug, Clone, Default)]
pub(crate) struct FhirStore {
    by_type: BTreeMap<String, Vec<Value>>,
}

impl FhirStore {
    /// Stores a resource as given (the seeded demo patients keep their ids and have no meta).
    pub(crate) fn seed(&mut self, resource: Value) {
        if let Some(t) = resource["resourceType"].as_str() {
            self.by_type.entry(t.to_owned()).or_default().push(resource);
        }
    }

    pub(crate) fn all(&self, resource_type: &str) -> Vec<Value> {
        self.by_type.get(resource_type).cloned().unwrap_or_default()
    }

    pub(crate) fn read(&self, resource_type: &str, id: &str) -> Option<&Value> {
        self.by_type.get(resource_type)?.iter().find(|r| r["id"] == id)
    }

    pub(crate) fn search(&self, resource_type: &str, query: &SearchQuery) -> Vec<Value> {
        self.by_type.get(resource_type).map(|rs| rs.iter().filter(|r| query.matches(r)).cloned().collect()).unwrap_or_default()
    }

    /// FHIR create, conditional when `if_none_exist` is given: no match creates (with a new id,
    /// version 1), one match returns it untouched, more than one is a 412.
    pub(crate) fn create(&mut self, resource: Value, if_none_exist: Option<&str>) -> Result<WriteOutcome, WriteError> {
        let resource_type = resource_type_of(&resource)?.to_owned();
        if let Some(query) = if_none_exist
            && let Some(existing) = self.single_match(&resource_type, &SearchQuery::parse(query)?)?
        {
            return Ok(WriteOutcome { created: false, resource: existing });
        }
        let stored = stamp(resource, &new_resource_id(), 1);
        self.by_type.entry(resource_type).or_default().push(stored.clone());
        Ok(WriteOutcome { created: true, resource: stored })
    }

    /// FHIR update (`PUT Type/id`), or update-as-create when the id is new.
    fn update(&mut self, resource: Value, id: &str) -> Result<WriteOutcome, WriteError> {
        let resource_type = resource_type_of(&resource)?.to_owned();
        if resource.get("id").is_some_and(|given| given != id) {
            return Err(WriteError::invalid("the resource's id differs from the id in the request URL"));
        }
        if !is_fhir_id(id) {
            return Err(WriteError::invalid("the id in the request URL is not a valid FHIR id"));
        }
        let list = self.by_type.entry(resource_type).or_default();
        match list.iter_mut().find(|r| r["id"] == id) {
            Some(existing) => {
                let version = existing["meta"]["versionId"].as_str().and_then(|v| v.parse::<u64>().ok()).unwrap_or(1) + 1;
                *existing = stamp(resource, id, version);
                Ok(WriteOutcome { created: false, resource: existing.clone() })
            }
            None => {
                let stored = stamp(resource, id, 1);
                list.push(stored.clone());
                Ok(WriteOutcome { created: true, resource: stored })
            }
        }
    }

    fn single_match(&self, resource_type: &str, query: &SearchQuery) -> Result<Option<Value>, WriteError> {
        let mut found = self.search(resource_type, query);
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => Err(WriteError::MultipleMatches(format!("the condition matched {n} {resource_type} resources"))),
        }
    }

    /// Processes a `transaction` (all or nothing: on error `self` is untouched) or a `batch`
    /// (each entry on its own) Bundle; returns the response Bundle.
    pub(crate) fn process_bundle(&mut self, bundle: &Value) -> Result<Value, WriteError> {
        let entries = bundle_entries(bundle)?;
        match bundle["type"].as_str() {
            Some("transaction") => {
                let mut staged = self.clone();
                let outcomes = staged.apply_transaction(entries)?;
                *self = staged;
                Ok(response_bundle("transaction-response", outcomes.iter().map(WriteOutcome::response_entry).collect()))
            }
            Some("batch") => {
                let responses = entries.iter().map(|e| self.apply_batch_entry(e)).collect();
                Ok(response_bundle("batch-response", responses))
            }
            _ => Err(WriteError::invalid("only Bundles of type transaction or batch can be posted to the FHIR base")),
        }
    }

    /// FHIR R4 transaction processing: every entry's target (a conditional create's match, or
    /// a new id) is decided first, so every fullUrl is known before any reference is rewritten;
    /// then the entries are written. Callers stage this on a copy: an error leaves a half-done
    /// write behind.
    fn apply_transaction(&mut self, entries: &[Value]) -> Result<Vec<WriteOutcome>, WriteError> {
        let requests: Vec<EntryRequest> = entries.iter().map(EntryRequest::parse).collect::<Result<_, _>>()?;
        let targets: Vec<Target> = requests.iter().map(|r| self.target(r)).collect::<Result<_, _>>()?;
        let resolved = resolve_full_urls(&requests, &targets);
        requests.into_iter().zip(targets).map(|(r, t)| self.carry_out(r, t, &resolved)).collect()
    }

    /// Where an entry's resource ends up; conditional creates are matched against what was
    /// stored before the transaction.
    fn target(&self, request: &EntryRequest) -> Result<Target, WriteError> {
        match &request.method {
            Method::Update { id } => Ok(Target::Update(id.clone())),
            Method::Create { if_none_exist: None } => Ok(Target::New(new_resource_id())),
            Method::Create { if_none_exist: Some(query) } => {
                let matched = self.single_match(resource_type_of(&request.resource)?, &SearchQuery::parse(query)?)?;
                Ok(matched.map_or_else(|| Target::New(new_resource_id()), Target::Existing))
            }
        }
    }

    fn carry_out(&mut self, request: EntryRequest, target: Target, resolved: &HashMap<String, String>) -> Result<WriteOutcome, WriteError> {
        // Rewritten even when matched: an unresolvable reference is an error either way.
        let resource = rewrite_references(request.resource, resolved)?;
        match target {
            Target::Existing(existing) => Ok(WriteOutcome { created: false, resource: existing }),
            Target::New(id) => {
                let stored = stamp(resource, &id, 1);
                let resource_type = resource_type_of(&stored)?.to_owned();
                self.by_type.entry(resource_type).or_default().push(stored.clone());
                Ok(WriteOutcome { created: true, resource: stored })
            }
            Target::Update(id) => self.update(resource, &id),
        }
    }

    /// A batch entry: processed alone (and all or nothing); its failure becomes its own
    /// response.
    fn apply_batch_entry(&mut self, entry: &Value) -> Value {
        let mut staged = self.clone();
        let result = staged.apply_transaction(std::slice::from_ref(entry));
        match result.map(|mut o| o.pop()) {
            Ok(Some(outcome)) => {
                *self = staged;
                outcome.response_entry()
            }
            Ok(None) => json!({"response": {"status": "500 Internal Server Error"}}),
            Err(e) => {
                let (status, text) = match &e {
                    WriteError::Invalid(t) => ("400 Bad Request", t),
                    WriteError::MultipleMatches(t) => ("412 Precondition Failed", t),
                };
                json!({"response": {"status": status, "outcome": operation_outcome("processing", text)}})
            }
        }
    }
}

/// One transaction entry's request, checked.
struct EntryRequest {
    resource: Value,
    full_url: Option<String>,
    method: Method,
}

enum Method {
    Create { if_none_exist: Option<String> },
    Update { id: String },
}

/// Where an entry's resource ends up.
enum Target {
    /// A conditional create's single match: nothing is written.
    Existing(Value),
    /// A create, with the id it will get.
    New(String),
    /// `PUT Type/id`.
    Update(String),
}

impl Target {
    fn id(&self) -> &str {
        match self {
            Target::Existing(r) => r["id"].as_str().unwrap_or_default(),
            Target::New(id) | Target::Update(id) => id,
        }
    }
}

/// Each entry's fullUrl → the `Type/id` it becomes.
fn resolve_full_urls(requests: &[EntryRequest], targets: &[Target]) -> HashMap<String, String> {
    requests
        .iter()
        .zip(targets)
        .filter_map(|(r, t)| {
            let resource_type = r.resource["resourceType"].as_str()?;
            Some((r.full_url.clone()?, format!("{resource_type}/{}", t.id())))
        })
        .collect()
}

impl EntryRequest {
    fn parse(entry: &Value) -> Result<EntryRequest, WriteError> {
        let resource =
            entry.get("resource").filter(|r| r.is_object()).cloned().ok_or_else(|| WriteError::invalid("an entry has no resource"))?;
        let resource_type = resource_type_of(&resource)?.to_owned();
        let full_url = entry["fullUrl"].as_str().map(str::to_owned);
        let request = &entry["request"];
        let url = request["url"].as_str().ok_or_else(|| WriteError::invalid("an entry has no request.url"))?;
        let method = match request["method"].as_str() {
            Some("POST") => {
                if url.trim_end_matches('/') != resource_type {
                    return Err(WriteError::invalid(format!("a POST entry's request.url '{url}' is not its resource type")));
                }
                Method::Create { if_none_exist: request["ifNoneExist"].as_str().map(str::to_owned) }
            }
            Some("PUT") => {
                let id = url.strip_prefix(&format!("{resource_type}/")).filter(|id| !id.contains(['/', '?'])).ok_or_else(|| {
                    WriteError::invalid(format!(
                        "a PUT entry's request.url must be {resource_type}/[id] (conditional update is not supported)"
                    ))
                })?;
                Method::Update { id: id.to_owned() }
            }
            Some(other) => {
                return Err(WriteError::invalid(format!(
                    "request.method {other} is not supported in a transaction here (only POST and PUT)"
                )));
            }
            None => return Err(WriteError::invalid("an entry has no request.method")),
        };
        Ok(EntryRequest { resource, full_url, method })
    }

    /// The resource type and interaction this entry needs the token to allow.
    pub(crate) fn needs(entry: &Value) -> Option<(String, crate::scopes::Interaction)> {
        let resource_type = entry["resource"]["resourceType"].as_str()?.to_owned();
        let interaction = match entry["request"]["method"].as_str()? {
            "POST" => crate::scopes::Interaction::Create,
            "PUT" => crate::scopes::Interaction::Update,
            _ => return None,
        };
        Some((resource_type, interaction))
    }
}

/// What each entry of a transaction/batch Bundle needs the token to allow (entries the store
/// will refuse anyway are skipped: they fail as 400, not 403).
pub(crate) fn bundle_needs(bundle: &Value) -> Vec<(String, crate::scopes::Interaction)> {
    bundle["entry"].as_array().map(|es| es.iter().filter_map(EntryRequest::needs).collect()).unwrap_or_default()
}

fn bundle_entries(bundle: &Value) -> Result<&[Value], WriteError> {
    if bundle["resourceType"] != "Bundle" {
        return Err(WriteError::invalid("the body is not a Bundle"));
    }
    match &bundle["entry"] {
        Value::Array(entries) => Ok(entries),
        Value::Null => Ok(&[]),
        _ => Err(WriteError::invalid("Bundle.entry is not an array")),
    }
}

fn response_bundle(bundle_type: &str, entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "id": new_resource_id(), "type": bundle_type, "entry": entries})
}

/// A searchset Bundle of `resources` (full URLs under `fhir_base`).
pub(crate) fn searchset(fhir_base: &str, resources: Vec<Value>) -> Value {
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let full_url =
                format!("{fhir_base}/{}/{}", r["resourceType"].as_str().unwrap_or_default(), r["id"].as_str().unwrap_or_default());
            json!({"fullUrl": full_url, "resource": r, "search": {"mode": "match"}})
        })
        .collect();
    json!({"resourceType": "Bundle", "id": new_resource_id(), "type": "searchset", "total": entries.len(), "entry": entries})
}

/// An OperationOutcome with one error issue.
pub(crate) fn operation_outcome(code: &str, text: &str) -> Value {
    json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]})
}

fn resource_type_of(resource: &Value) -> Result<&str, WriteError> {
    resource["resourceType"]
        .as_str()
        .filter(|t| is_resource_type(t))
        .ok_or_else(|| WriteError::invalid("a resource has no valid resourceType"))
}

/// Rewrites every `reference` naming a resolved fullUrl; a `urn:uuid:` reference to no entry
/// of the bundle is an error (it could never resolve later).
fn rewrite_references(mut resource: Value, resolved: &HashMap<String, String>) -> Result<Value, WriteError> {
    rewrite_in(&mut resource, resolved)?;
    Ok(resource)
}

fn rewrite_in(value: &mut Value, resolved: &HashMap<String, String>) -> Result<(), WriteError> {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(s) if key == "reference" => {
                        if let Some(target) = resolved.get(s.as_str()) {
                            *s = target.clone();
                        } else if s.starts_with("urn:uuid:") {
                            return Err(WriteError::invalid(format!("the reference {s} names no entry of the bundle")));
                        }
                    }
                    other => rewrite_in(other, resolved)?,
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                rewrite_in(item, resolved)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Sets the server-assigned parts: id, `meta.versionId`, `meta.lastUpdated`.
fn stamp(mut resource: Value, id: &str, version: u64) -> Value {
    resource["id"] = json!(id);
    if !resource["meta"].is_object() {
        resource["meta"] = json!({});
    }
    resource["meta"]["versionId"] = json!(version.to_string());
    resource["meta"]["lastUpdated"] = json!(instant_now());
    resource
}

/// A FHIR id: 1–64 of `[A-Za-z0-9-.]`.
fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A random FHIR id (hex: FHIR ids may not contain `_`, which base64url can).
fn new_resource_id() -> String {
    let mut raw = [0u8; 16];
    aws_lc_rs::rand::fill(&mut raw).expect("the system random generator works");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Now as a FHIR instant (UTC, seconds).
fn instant_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient(system: &str, value: &str) -> Value {
        json!({"resourceType": "Patient", "identifier": [{"system": system, "value": value}]})
    }

    fn check_search(query: &str, expected_matches: usize) {
        let mut store = FhirStore::default();
        store.create(patient("urn:mrn", "1"), None).unwrap();
        store.create(patient("urn:mrn", "2"), None).unwrap();
        store.create(json!({"resourceType": "Patient", "identifier": {"system": "urn:other", "value": "1"}}), None).unwrap();
        let found = store.search("Patient", &SearchQuery::parse(query).unwrap());
        assert_eq!(found.len(), expected_matches, "{query}");
    }

    #[test]
    fn identifier_search_matches_system_and_value() {
        check_search("identifier=urn:mrn|1", 1);
        check_search("identifier=urn%3Amrn%7C2", 1);
        check_search("identifier=1", 2);
        check_search("identifier=urn:mrn|", 2);
        check_search("identifier=urn:mrn|3", 0);
        check_search("Patient?identifier=urn:other|1", 1);
        check_search("", 3);
    }

    #[test]
    fn unsupported_search_parameters_are_refused() {
        assert!(matches!(SearchQuery::parse("name=Alex"), Err(WriteError::Invalid(_))));
    }

    #[test]
    fn conditional_create_creates_once_then_returns_the_match() {
        let mut store = FhirStore::default();
        let first = store.create(patient("urn:mrn", "1"), Some("identifier=urn:mrn|1")).unwrap();
        let second = store.create(patient("urn:mrn", "1"), Some("identifier=urn:mrn|1")).unwrap();
        assert!(first.created && !second.created);
        assert_eq!(first.resource["id"], second.resource["id"]);
        assert_eq!(store.all("Patient").len(), 1);
        store.create(patient("urn:mrn", "1"), None).unwrap();
        assert!(matches!(store.create(patient("urn:mrn", "1"), Some("identifier=urn:mrn|1")), Err(WriteError::MultipleMatches(_))));
    }

    #[test]
    fn a_failing_transaction_stores_nothing() {
        let mut store = FhirStore::default();
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:1", "resource": patient("urn:mrn", "1"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "subject": {"reference": "urn:uuid:missing"}}, "request": {"method": "POST", "url": "Observation"}}
        ]});
        assert!(matches!(store.process_bundle(&bundle), Err(WriteError::Invalid(_))));
        assert!(store.all("Patient").is_empty());
    }

    #[test]
    fn put_updates_bump_the_version() {
        let mut store = FhirStore::default();
        let first = store.update(json!({"resourceType": "Patient"}), "p1").unwrap();
        let second = store.update(json!({"resourceType": "Patient", "id": "p1", "active": true}), "p1").unwrap();
        assert!(first.created && !second.created);
        assert_eq!(second.location(), "Patient/p1/_history/2");
        assert_eq!(store.all("Patient").len(), 1);
        assert!(store.update(json!({"resourceType": "Patient", "id": "other"}), "p1").is_err());
    }
}
