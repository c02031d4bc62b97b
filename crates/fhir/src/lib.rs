//! The FHIR edge of radsight.
//!
//! Incoming FHIR R4/R4B JSON (CDS Hooks `draftOrders`, prefetch, fetched search results) is
//! validated against fhir-sdk's R4B models here and converted into small, plain types that the
//! rest of radsight works with. Every function is non-generic so that fhir-sdk's large serde
//! instantiations are compiled once, in this crate, and never in the service crate.
//!
//! Only the resource types radsight reasons about are parsed strictly; any other resource in a
//! Bundle is kept as [`Resource::Other`] with its type name, because EHRs legitimately include
//! resources we do not use (Encounter, Practitioner, ...).

use fhir_sdk::r4b::resources as r;
use fhir_sdk::r4b::types as t;
use serde::Deserialize as _;
use serde_json::Value;
use time::OffsetDateTime;

/// Why a piece of FHIR JSON could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FhirError {
    #[error("expected a JSON object with a resourceType")]
    NotAResource,
    #[error("expected a {expected} but found a {found}")]
    WrongResourceType { expected: &'static str, found: String },
    #[error("Bundle.entry must be an array")]
    BundleEntryNotArray,
    /// The resource does not conform to the FHIR R4B model. `message` is serde's text, which
    /// names the offending element; it may quote a coded value but never a whole resource.
    #[error("{resource_type} is not valid FHIR: {message}")]
    InvalidResource { resource_type: String, message: String },
}

/// A `Coding`, with empty strings normalised away.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Coding {
    pub system: Option<String>,
    pub code: Option<String>,
    pub display: Option<String>,
}

impl Coding {
    pub fn is(&self, system: &str, code: &str) -> bool {
        self.system.as_deref() == Some(system) && self.code.as_deref() == Some(code)
    }
}

/// A `CodeableConcept`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Concept {
    pub codings: Vec<Coding>,
    pub text: Option<String>,
}

impl Concept {
    pub fn has(&self, system: &str, code: &str) -> bool {
        self.codings.iter().any(|c| c.is(system, code))
    }

    /// Every human-readable label of the concept (text, then the displays), for keyword rules.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.text.as_deref().into_iter().chain(self.codings.iter().filter_map(|c| c.display.as_deref()))
    }

    /// True when any coding of `self` equals (system and code) any coding of `other`.
    pub fn shares_code_with(&self, other: &Concept) -> bool {
        self.codings.iter().any(|a| a.code.is_some() && other.codings.iter().any(|b| a.system == b.system && a.code == b.code))
    }
}

/// An imaging (or other) `ServiceRequest`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRequest {
    pub id: Option<String>,
    pub status: String,
    pub intent: String,
    pub category: Vec<Concept>,
    pub code: Option<Concept>,
    pub body_site: Vec<Concept>,
    pub reason_code_count: usize,
    pub reason_reference_count: usize,
    pub authored_on: Option<OffsetDateTime>,
    pub subject: Option<String>,
    /// The resource exactly as received, so that a suggestion can propose an edited copy.
    pub raw: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImagingStudy {
    pub id: Option<String>,
    pub status: String,
    /// Study Instance UIDs found in `identifier` (system `urn:dicom:uid`, values `urn:oid:...`).
    pub study_uids: Vec<String>,
    pub modalities: Vec<Coding>,
    pub procedure_codes: Vec<Concept>,
    pub started: Option<OffsetDateTime>,
    pub description: Option<String>,
    pub subject: Option<String>,
    /// `endpoint` references as written (`Endpoint/x`, `#x`, or absolute URLs).
    pub endpoint_refs: Vec<String>,
    /// Endpoints carried in `contained`, resolvable by `#id`.
    pub contained_endpoints: Vec<Endpoint>,
}

/// An `Endpoint` (for imaging: a DICOMweb root, `connectionType` `dicom-wado-rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub id: Option<String>,
    pub status: String,
    pub connection_type: Coding,
    pub address: String,
}

impl Endpoint {
    /// True for a DICOMweb (WADO-RS) endpoint.
    pub fn is_wado_rs(&self) -> bool {
        self.connection_type.code.as_deref() == Some("dicom-wado-rs")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AllergyIntolerance {
    pub id: Option<String>,
    pub code: Option<Concept>,
    /// The `clinicalStatus` code (active | inactive | resolved), if given.
    pub clinical_status: Option<String>,
    /// The `verificationStatus` code (unconfirmed | confirmed | refuted | entered-in-error).
    pub verification_status: Option<String>,
    /// Substances named in `reaction.substance`.
    pub reaction_substances: Vec<Concept>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ObservationValue {
    Quantity { value: Option<f64>, unit: Option<String>, comparator: Option<String> },
    Concept(Concept),
    Text(String),
    Boolean(bool),
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub id: Option<String>,
    pub status: String,
    pub code: Concept,
    pub effective: Option<OffsetDateTime>,
    pub issued: Option<OffsetDateTime>,
    pub value: Option<ObservationValue>,
    pub interpretation: Vec<Concept>,
}

impl Observation {
    /// When the observation applies: its effective time, else when it was issued.
    pub fn when(&self) -> Option<OffsetDateTime> {
        self.effective.or(self.issued)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiagnosticReport {
    pub id: Option<String>,
    pub status: String,
    pub code: Concept,
    pub effective: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Patient {
    pub id: Option<String>,
}

/// One parsed resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    ServiceRequest(ServiceRequest),
    ImagingStudy(ImagingStudy),
    AllergyIntolerance(AllergyIntolerance),
    Observation(Observation),
    DiagnosticReport(DiagnosticReport),
    Patient(Patient),
    Endpoint(Endpoint),
    /// A resource type radsight does not reason about; kept by name only.
    Other(String),
}

/// The `resourceType` of a JSON value, if it looks like a resource.
pub fn resource_type(value: &Value) -> Option<&str> {
    value.get("resourceType")?.as_str()
}

/// Parses one resource. Types radsight uses are validated against the R4B model, read straight
/// from the borrowed JSON tree (a hook's prefetch is not copied to be parsed).
pub fn parse_resource(value: &Value) -> Result<Resource, FhirError> {
    let rt = resource_type(value).ok_or(FhirError::NotAResource)?;
    let invalid = |e: serde_json::Error| FhirError::InvalidResource { resource_type: rt.to_owned(), message: e.to_string() };
    Ok(match rt {
        "ServiceRequest" => {
            let sr = r::ServiceRequest::deserialize(value).map_err(invalid)?;
            Resource::ServiceRequest(ServiceRequest {
                id: sr.id.clone(),
                status: sr.status.to_string(),
                intent: sr.intent.to_string(),
                category: concepts(&sr.category),
                code: sr.code.as_ref().map(concept),
                body_site: concepts(&sr.body_site),
                reason_code_count: sr.reason_code.iter().flatten().count(),
                reason_reference_count: sr.reason_reference.iter().flatten().count(),
                authored_on: sr.authored_on.as_ref().map(date_time),
                subject: sr.subject.reference.clone(),
                raw: value.clone(),
            })
        }
        "ImagingStudy" => {
            let s = r::ImagingStudy::deserialize(value).map_err(invalid)?;
            let study_uids = s
                .identifier
                .iter()
                .flatten()
                .filter(|i| i.system.as_deref() == Some("urn:dicom:uid"))
                .filter_map(|i| i.value.as_deref())
                .map(|v| v.strip_prefix("urn:oid:").unwrap_or(v).to_owned())
                .collect();
            let contained_endpoints = value
                .get("contained")
                .and_then(Value::as_array)
                .map(|c| c.iter().filter(|r| resource_type(r) == Some("Endpoint")).map(parse_resource).collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default()
                .into_iter()
                .filter_map(|r| if let Resource::Endpoint(e) = r { Some(e) } else { None })
                .collect();
            Resource::ImagingStudy(ImagingStudy {
                endpoint_refs: s.endpoint.iter().flatten().filter_map(|r| r.reference.clone()).collect(),
                contained_endpoints,
                id: s.id.clone(),
                status: s.status.to_string(),
                study_uids,
                modalities: s.modality.iter().flatten().map(coding).collect(),
                procedure_codes: concepts(&s.procedure_code),
                started: s.started.as_ref().map(date_time),
                description: s.description.clone(),
                subject: s.subject.reference.clone(),
            })
        }
        "AllergyIntolerance" => {
            let a = r::AllergyIntolerance::deserialize(value).map_err(invalid)?;
            let first_code =
                |c: &Option<t::CodeableConcept>| c.as_ref().and_then(|c| c.coding.iter().flatten().find_map(|c| c.code.clone()));
            Resource::AllergyIntolerance(AllergyIntolerance {
                id: a.id.clone(),
                code: a.code.as_ref().map(concept),
                clinical_status: first_code(&a.clinical_status),
                verification_status: first_code(&a.verification_status),
                reaction_substances: a.reaction.iter().flatten().filter_map(|r| r.substance.as_ref().map(concept)).collect(),
            })
        }
        "Observation" => {
            let o = r::Observation::deserialize(value).map_err(invalid)?;
            let effective = match &o.effective {
                Some(r::ObservationEffective::DateTime(d)) => Some(date_time(d)),
                Some(r::ObservationEffective::Instant(i)) => Some(i.0),
                Some(r::ObservationEffective::Period(p)) => p.start.as_ref().map(date_time),
                _ => None,
            };
            let value = o.value.as_ref().map(|v| match v {
                r::ObservationValue::Quantity(q) => ObservationValue::Quantity {
                    value: q.value,
                    unit: q.unit.clone().or_else(|| q.code.clone()),
                    comparator: q.comparator.map(|c| c.to_string()),
                },
                r::ObservationValue::CodeableConcept(c) => ObservationValue::Concept(concept(c)),
                r::ObservationValue::String(s) => ObservationValue::Text(s.clone()),
                r::ObservationValue::Boolean(b) => ObservationValue::Boolean(*b),
                _ => ObservationValue::Other,
            });
            Resource::Observation(Observation {
                id: o.id.clone(),
                status: o.status.to_string(),
                code: concept(&o.code),
                effective,
                issued: o.issued.as_ref().map(|i| i.0),
                value,
                interpretation: concepts(&o.interpretation),
            })
        }
        "DiagnosticReport" => {
            let d = r::DiagnosticReport::deserialize(value).map_err(invalid)?;
            let effective = match &d.effective {
                Some(r::DiagnosticReportEffective::DateTime(x)) => Some(date_time(x)),
                Some(r::DiagnosticReportEffective::Period(p)) => p.start.as_ref().map(date_time),
                None => None,
            };
            Resource::DiagnosticReport(DiagnosticReport {
                id: d.id.clone(),
                status: d.status.to_string(),
                code: concept(&d.code),
                effective,
            })
        }
        "Patient" => {
            let p = r::Patient::deserialize(value).map_err(invalid)?;
            Resource::Patient(Patient { id: p.id.clone() })
        }
        "Endpoint" => {
            let e = r::Endpoint::deserialize(value).map_err(invalid)?;
            Resource::Endpoint(Endpoint {
                id: e.id.clone(),
                status: e.status.to_string(),
                connection_type: coding(&e.connection_type),
                address: e.address.clone(),
            })
        }
        other => Resource::Other(other.to_owned()),
    })
}

/// An `ImagingStudy` announced by a notification, with the endpoints its `endpoint`
/// references resolve to (contained, or other entries of the same Bundle).
#[derive(Debug, Clone, PartialEq)]
pub struct NotifiedStudy {
    pub study: ImagingStudy,
    pub endpoints: Vec<Endpoint>,
    /// References that resolved to nothing in the notification.
    pub unresolved_endpoints: Vec<String>,
}

/// Reads a FHIR notification: an R4B topic-based subscription notification Bundle (type
/// `subscription-notification`; its `SubscriptionStatus` entry and any other resource type are
/// skipped), any other Bundle of `ImagingStudy` entries, or a plain `ImagingStudy`.
pub fn parse_notification(value: &Value) -> Result<Vec<NotifiedStudy>, FhirError> {
    let rt = resource_type(value).ok_or(FhirError::NotAResource)?;
    let entries: Vec<(Option<String>, Resource)> = match rt {
        "ImagingStudy" => vec![(None, parse_resource(value)?)],
        "Bundle" => {
            let entries = match value.get("entry") {
                None => return Ok(Vec::new()),
                Some(Value::Array(entries)) => entries,
                Some(_) => return Err(FhirError::BundleEntryNotArray),
            };
            entries
                .iter()
                .filter_map(|e| e.get("resource").map(|r| (e.get("fullUrl").and_then(Value::as_str).map(str::to_owned), r)))
                .map(|(url, r)| parse_resource(r).map(|r| (url, r)))
                .collect::<Result<_, _>>()?
        }
        other => return Err(FhirError::WrongResourceType { expected: "Bundle or ImagingStudy", found: other.to_owned() }),
    };
    let bundle_endpoints: Vec<(Option<&str>, &Endpoint)> =
        entries.iter().filter_map(|(url, r)| if let Resource::Endpoint(e) = r { Some((url.as_deref(), e)) } else { None }).collect();
    let resolve = |reference: &str, study: &ImagingStudy| -> Option<Endpoint> {
        if let Some(id) = reference.strip_prefix('#') {
            return study.contained_endpoints.iter().find(|e| e.id.as_deref() == Some(id)).cloned();
        }
        bundle_endpoints
            .iter()
            .find(|(url, e)| {
                *url == Some(reference)
                    || e.id
                        .as_deref()
                        .is_some_and(|id| reference == format!("Endpoint/{id}") || reference.ends_with(&format!("/Endpoint/{id}")))
            })
            .map(|(_, e)| (*e).clone())
    };
    Ok(entries
        .iter()
        .filter_map(|(_, r)| if let Resource::ImagingStudy(s) = r { Some(s) } else { None })
        .map(|s| {
            let mut endpoints = Vec::new();
            let mut unresolved_endpoints = Vec::new();
            for reference in &s.endpoint_refs {
                match resolve(reference, s) {
                    Some(e) => endpoints.push(e),
                    None => unresolved_endpoints.push(reference.clone()),
                }
            }
            NotifiedStudy { study: s.clone(), endpoints, unresolved_endpoints }
        })
        .collect())
}

/// Parses a `Bundle` into its entries' resources (entries without a resource are skipped).
pub fn parse_bundle(value: &Value) -> Result<Vec<Resource>, FhirError> {
    match resource_type(value) {
        None => return Err(FhirError::NotAResource),
        Some("Bundle") => {}
        Some(other) => return Err(FhirError::WrongResourceType { expected: "Bundle", found: other.to_owned() }),
    }
    let entries = match value.get("entry") {
        None => return Ok(Vec::new()),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(FhirError::BundleEntryNotArray),
    };
    entries.iter().filter_map(|e| e.get("resource")).map(parse_resource).collect()
}

/// Parses either a Bundle (its entries) or a single resource, as a prefetch value may be either.
pub fn parse_resources(value: &Value) -> Result<Vec<Resource>, FhirError> {
    match resource_type(value) {
        Some("Bundle") => parse_bundle(value),
        Some(_) => Ok(vec![parse_resource(value)?]),
        None => Err(FhirError::NotAResource),
    }
}

fn coding(c: &t::Coding) -> Coding {
    let clean = |s: &Option<String>| s.as_ref().map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_owned);
    Coding { system: clean(&c.system), code: clean(&c.code), display: clean(&c.display) }
}

fn concept(c: &t::CodeableConcept) -> Concept {
    Concept {
        codings: c.coding.iter().flatten().map(coding).collect(),
        text: c.text.as_ref().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
    }
}

fn concepts(cs: &[Option<t::CodeableConcept>]) -> Vec<Concept> {
    cs.iter().flatten().map(concept).collect()
}

/// A FHIR dateTime as an instant. Partial dates mean their first moment, in UTC.
fn date_time(d: &fhir_sdk::DateTime) -> OffsetDateTime {
    use fhir_sdk::{Date, DateTime};
    let date = match d {
        DateTime::DateTime(i) => return i.0,
        DateTime::Date(Date::Date(d)) => *d,
        DateTime::Date(Date::YearMonth(y, m)) => time::Date::from_calendar_date(*y, *m, 1).unwrap_or(time::Date::MIN),
        DateTime::Date(Date::Year(y)) => time::Date::from_calendar_date(*y, time::Month::January, 1).unwrap_or(time::Date::MIN),
    };
    date.midnight().assume_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_service_request_keeps_codes_reasons_and_raw_json() {
        let v = json!({
            "resourceType": "ServiceRequest", "id": "sr1", "status": "draft", "intent": "order",
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2", "display": "CT Chest"}]},
            "reasonCode": [{"text": "cough"}],
            "authoredOn": "2026-11-01"
        });
        let Resource::ServiceRequest(sr) = parse_resource(&v).unwrap() else { panic!("wrong type") };
        assert_eq!(sr.id.as_deref(), Some("sr1"));
        assert_eq!(sr.status, "draft");
        assert!(sr.code.unwrap().has("http://loinc.org", "24627-2"));
        assert_eq!(sr.reason_code_count, 1);
        assert_eq!(sr.authored_on.unwrap().date().to_string(), "2026-11-01");
        assert_eq!(sr.raw, v);
    }

    #[test]
    fn an_invalid_status_is_an_error_naming_the_type() {
        let v = json!({"resourceType": "ServiceRequest", "status": "bogus", "intent": "order", "subject": {"reference": "Patient/p"}});
        let err = parse_resource(&v).unwrap_err();
        assert!(matches!(err, FhirError::InvalidResource { ref resource_type, .. } if resource_type == "ServiceRequest"), "{err}");
    }

    #[test]
    fn bundles_skip_unknown_types_and_reject_non_bundles() {
        let b = json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "Encounter", "id": "e"}},
            {"resource": {"resourceType": "Patient", "id": "p1"}}
        ]});
        let rs = parse_bundle(&b).unwrap();
        assert_eq!(rs, vec![Resource::Other("Encounter".into()), Resource::Patient(Patient { id: Some("p1".into()) })]);
        assert_eq!(
            parse_bundle(&json!({"resourceType": "Patient"})),
            Err(FhirError::WrongResourceType { expected: "Bundle", found: "Patient".into() })
        );
        assert_eq!(parse_bundle(&json!([1])), Err(FhirError::NotAResource));
        assert_eq!(parse_bundle(&json!({"resourceType": "Bundle", "entry": {}})), Err(FhirError::BundleEntryNotArray));
    }

    #[test]
    fn observation_values_and_study_uids_are_extracted() {
        let o = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "62238-1"}]},
            "effectiveDateTime": "2026-11-20T10:00:00Z",
            "valueQuantity": {"value": 24.5, "unit": "mL/min/{1.73_m2}"}});
        let Resource::Observation(o) = parse_resource(&o).unwrap() else { panic!() };
        assert_eq!(
            o.value,
            Some(ObservationValue::Quantity { value: Some(24.5), unit: Some("mL/min/{1.73_m2}".into()), comparator: None })
        );
        let s = json!({"resourceType": "ImagingStudy", "status": "available", "subject": {"reference": "Patient/p"},
            "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4"}],
            "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}]});
        let Resource::ImagingStudy(s) = parse_resource(&s).unwrap() else { panic!() };
        assert_eq!(s.study_uids, vec!["1.2.3.4".to_string()]);
        assert_eq!(s.modalities[0].code.as_deref(), Some("CT"));
    }

    #[test]
    fn notifications_resolve_study_endpoints_from_the_bundle_or_contained() {
        let study = |endpoint: &str| {
            json!({"resourceType": "ImagingStudy", "id": "s1", "status": "available",
            "subject": {"reference": "Patient/p1"},
            "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
            "endpoint": [{"reference": endpoint}]})
        };
        let endpoint = json!({"resourceType": "Endpoint", "id": "pacs", "status": "active",
            "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "dicom-wado-rs"},
            "payloadType": [{"text": "DICOM"}], "address": "https://pacs.example.org/dicom-web"});
        let bundle = json!({"resourceType": "Bundle", "type": "subscription-notification", "entry": [
            {"fullUrl": "urn:uuid:status", "resource": {"resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification",
                "subscription": {"reference": "Subscription/sub1"}, "topic": "http://example.org/topic/imaging-study"}},
            {"fullUrl": "https://ehr.example.org/fhir/ImagingStudy/s1", "resource": study("Endpoint/pacs")},
            {"fullUrl": "https://ehr.example.org/fhir/Endpoint/pacs", "resource": endpoint.clone()}
        ]});
        let got = parse_notification(&bundle).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].study.study_uids, vec!["1.2.3".to_string()]);
        assert_eq!(got[0].endpoints[0].address, "https://pacs.example.org/dicom-web");
        assert!(got[0].endpoints[0].is_wado_rs());

        let mut plain = study("#ep");
        let mut contained = endpoint.clone();
        contained["id"] = json!("ep");
        plain["contained"] = json!([contained]);
        let got = parse_notification(&plain).unwrap();
        assert_eq!(got[0].endpoints[0].address, "https://pacs.example.org/dicom-web");

        let got = parse_notification(&study("Endpoint/elsewhere")).unwrap();
        assert!(got[0].endpoints.is_empty());
        assert_eq!(got[0].unresolved_endpoints, vec!["Endpoint/elsewhere".to_string()]);
        assert!(matches!(parse_notification(&json!({"resourceType": "Patient"})), Err(FhirError::WrongResourceType { .. })));
    }
}
