//! The `fhir` fuzz target's body; what it feeds and checks is documented in `fuzz_targets/fhir.rs`.

use radsight_fhir::{Resource, parse_bundle, parse_notification, parse_resource, parse_resources, resource_type};
use serde_json::Value;

pub fn run(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let one = parse_resource(&value);
    if let Ok(Resource::ServiceRequest(sr)) = &one {
        assert_eq!(sr.raw, value);
    }
    let bundle = parse_bundle(&value);
    let many = parse_resources(&value);
    match resource_type(&value) {
        Some("Bundle") => {
            assert_eq!(many, bundle);
            let entries = value.get("entry").and_then(Value::as_array).map_or(0, Vec::len);
            if let Ok(resources) = &bundle {
                assert!(resources.len() <= entries);
            }
        }
        Some(_) => assert_eq!(many, one.map(|r| vec![r])),
        None => assert!(many.is_err() && bundle.is_err()),
    }
    if let Ok(studies) = parse_notification(&value) {
        let entries = value.get("entry").and_then(Value::as_array).map_or(1, Vec::len);
        assert!(studies.len() <= entries);
        for s in &studies {
            assert_eq!(s.endpoints.len() + s.unresolved_endpoints.len(), s.study.endpoint_refs.len());
        }
    }
}
