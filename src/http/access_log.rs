//! The request path as the access log may show it: patient ids in the app's API and in FHIR
//! paths are replaced by `:id` (they identify a person; result ids are random UUIDs). The access
//! log records method, path, status and latency: never headers, query strings or bodies, where
//! tokens and patient data travel.

/// The request path as the access log may show it: patient ids in the app's API and in FHIR
/// paths are replaced by `:id` (they identify a person; result ids are random UUIDs).
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::with_capacity(path.len());
    let mut redact_next = false;
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if redact_next && !segment.is_empty() { ":id" } else { segment });
        redact_next = segment == "patients" || segment == "Patient";
    }
    if out == path { std::borrow::Cow::Borrowed(path) } else { std::borrow::Cow::Owned(out) }
}

#[cfg(test)]
mod tests {
    use super::loggable_path;

    #[test]
    fn patient_ids_never_reach_the_access_log() {
        assert_eq!(loggable_path("/api/patients/example-patient/studies"), "/api/patients/:id/studies");
        assert_eq!(loggable_path("/demo-ehr/fhir/Patient/p1"), "/demo-ehr/fhir/Patient/:id");
        assert_eq!(loggable_path("/api/results/6f1c1d8e/audit"), "/api/results/6f1c1d8e/audit");
        assert_eq!(loggable_path("/cds-services"), "/cds-services");
    }
}
