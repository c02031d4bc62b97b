//! Domain values, parsed once at the edge so that the inside never re-validates.

use std::fmt;

use uuid::Uuid;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} is not valid: {why}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub why: &'static str,
}

/// A FHIR `Patient` logical id (`[A-Za-z0-9\-\.]{1,64}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PatientId(String);

/// The namespace a patient id is unique in: one EHR (its CDS client or SMART `iss`), or one HL7
/// assigning authority, unless the configuration (`[[patient_namespaces]]`) says several share
/// one. A patient is (namespace, id); a bare id names no one. Built only by
/// [`crate::configuration::Settings::namespace_of_issuer`] and `namespace_of_hl7`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PatientNamespace(String);

impl PatientNamespace {
    /// A namespace configured by name, or derived from an issuer (`iss:` + URL) or an HL7
    /// assigning authority (`hl7:` + authority).
    pub fn new(name: impl Into<String>) -> PatientNamespace {
        PatientNamespace(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PatientId {
    pub fn parse(s: &str) -> Result<PatientId, InvalidValue> {
        let s = s.strip_prefix("Patient/").unwrap_or(s);
        if fhir_id_ok(s) {
            Ok(PatientId(s.to_owned()))
        } else {
            Err(InvalidValue { what: "patientId", why: "a FHIR id is 1-64 of A-Z a-z 0-9 - ." })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The relative reference `Patient/{id}`, the form stored and audited.
    pub fn reference(&self) -> String {
        format!("Patient/{}", self.0)
    }
}

fn fhir_id_ok(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The CDS Hooks `hookInstance`: a UUID chosen by the client for one hook call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookInstance(Uuid);

impl HookInstance {
    pub fn parse(s: &str) -> Result<HookInstance, InvalidValue> {
        Uuid::parse_str(s.strip_prefix("urn:uuid:").unwrap_or(s))
            .map(HookInstance)
            .map_err(|_| InvalidValue { what: "hookInstance", why: "it must be a UUID" })
    }
}

impl fmt::Display for HookInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The hooks radsight serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    OrderSelect,
    OrderSign,
    PatientView,
}

impl Hook {
    pub fn parse(s: &str) -> Option<Hook> {
        match s {
            "order-select" => Some(Hook::OrderSelect),
            "order-sign" => Some(Hook::OrderSign),
            "patient-view" => Some(Hook::PatientView),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::OrderSelect => "order-select",
            Hook::OrderSign => "order-sign",
            Hook::PatientView => "patient-view",
        }
    }
}

/// A DICOM UID: 1-64 characters of digits and dots, no empty components.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StudyInstanceUid(String);

impl StudyInstanceUid {
    pub fn parse(s: &str) -> Result<StudyInstanceUid, InvalidValue> {
        let s = s.strip_prefix("urn:oid:").unwrap_or(s);
        let ok = (1..=64).contains(&s.len())
            && s.split('.').all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
            && s.split('.').all(|c| c == "0" || !c.starts_with('0'));
        if ok {
            Ok(StudyInstanceUid(s.to_owned()))
        } else {
            Err(InvalidValue { what: "StudyInstanceUID", why: "a DICOM UID is dotted digits, at most 64 characters" })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An HL7 v2 message control id (`MSH-10`): 1-199 printable ASCII characters with no HL7
/// delimiter in them, as the ACK echoes it in `MSA-2`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hl7ControlId(String);

impl Hl7ControlId {
    pub fn parse(s: &str) -> Result<Hl7ControlId, InvalidValue> {
        let ok = (1..=199).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            && !s.bytes().any(|b| matches!(b, b'|' | b'^' | b'~' | b'\\' | b'&'));
        if ok {
            Ok(Hl7ControlId(s.to_owned()))
        } else {
            Err(InvalidValue { what: "MSH-10", why: "a control id is 1-199 printable characters without delimiters" })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hl7ControlId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_ids_accept_fhir_ids_and_references_only() {
        assert_eq!(PatientId::parse("Patient/abc-1.2").unwrap().as_str(), "abc-1.2");
        assert_eq!(PatientId::parse("p1").unwrap().reference(), "Patient/p1");
        for bad in ["", "a b", "../etc", &"x".repeat(65), "p/1"] {
            assert!(PatientId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn study_uids_follow_the_dicom_uid_grammar() {
        assert!(StudyInstanceUid::parse("1.2.840.10008.1.2").is_ok());
        assert!(StudyInstanceUid::parse("urn:oid:1.2.3").is_ok());
        for bad in ["", "1..2", "1.02", "1.a", &"1.".repeat(40)] {
            assert!(StudyInstanceUid::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn hook_instances_must_be_uuids() {
        assert!(HookInstance::parse("d1577c69-dfbe-44ad-ba6d-3e05e953b2ea").is_ok());
        assert!(HookInstance::parse("not-a-uuid").is_err());
    }

    #[test]
    fn control_ids_are_printable_without_delimiters() {
        assert_eq!(Hl7ControlId::parse("MSG-0001").unwrap().as_str(), "MSG-0001");
        for bad in ["", "a|b", "a^b", "a\\b", "a\rb", &"x".repeat(200)] {
            assert!(Hl7ControlId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
