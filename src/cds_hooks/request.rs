//! Reading a hook call: the CDS Hooks 2.0 request checked field by field so that every problem
//! is answered with the field's name (the body itself is read under its limit by the edge).

use radsight_fhir::{Resource, ServiceRequest};
use secrecy::SecretString;
use serde_json::{Map, Value};

use super::error::HookError;
use crate::domain::{Hook, HookInstance, PatientId};

/// The `fhirAuthorization` object. The token is secret: it is never logged or stored.
#[derive(Debug, Clone)]
pub struct FhirAuthorization {
    pub access_token: SecretString,
}

/// A validated hook call.
#[derive(Debug)]
pub struct HookRequest {
    pub hook: Hook,
    pub hook_instance: HookInstance,
    pub fhir_server: Option<String>,
    pub fhir_authorization: Option<FhirAuthorization>,
    pub user_id: String,
    pub patient: PatientId,
    pub encounter_id: Option<String>,
    /// The imaging decisions to check: the selected draft orders for order-select, all draft
    /// orders for order-sign, none for patient-view.
    pub orders: Vec<ServiceRequest>,
    /// `None` for a key the client did not prefetch; `Some(Value::Null)` for "no data".
    pub prefetch: Map<String, Value>,
    /// The context as sent, for prefetch template tokens.
    pub context: Map<String, Value>,
}

fn string_field<'a>(obj: &'a Map<String, Value>, path: &str, key: &str) -> Result<Option<&'a str>, HookError> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(HookError::invalid(format!("{path}{key}"), "must be a non-empty string")),
    }
}

fn required_string<'a>(obj: &'a Map<String, Value>, path: &str, key: &str) -> Result<&'a str, HookError> {
    string_field(obj, path, key)?.ok_or_else(|| HookError::invalid(format!("{path}{key}"), "is required"))
}

/// Validates a parsed body against the hook the service implements. Takes the body so that
/// its context and prefetch, most of its size, move into the request rather than being copied.
pub fn parse_hook_request(body: Value, expected: Hook) -> Result<HookRequest, HookError> {
    let Value::Object(mut obj) = body else { return Err(HookError::invalid("(body)", "must be a JSON object")) };
    let hook_name = required_string(&obj, "", "hook")?;
    if hook_name != expected.as_str() {
        return Err(HookError::HookMismatch { expected: expected.as_str().into(), got: hook_name.into() });
    }
    let hook_instance =
        HookInstance::parse(required_string(&obj, "", "hookInstance")?).map_err(|e| HookError::invalid("hookInstance", e.why))?;
    let fhir_server = string_field(&obj, "", "fhirServer")?.map(str::to_owned);
    if let Some(s) = &fhir_server {
        url::Url::parse(s).map_err(|_| HookError::invalid("fhirServer", "must be an absolute URL"))?;
    }
    let fhir_authorization = match obj.get("fhirAuthorization") {
        None | Some(Value::Null) => None,
        Some(Value::Object(a)) => {
            let token = required_string(a, "fhirAuthorization.", "access_token")?;
            let token_type = required_string(a, "fhirAuthorization.", "token_type")?;
            if !token_type.eq_ignore_ascii_case("bearer") {
                return Err(HookError::invalid("fhirAuthorization.token_type", "must be Bearer"));
            }
            required_string(a, "fhirAuthorization.", "scope")?;
            required_string(a, "fhirAuthorization.", "subject")?;
            if !a.get("expires_in").is_some_and(Value::is_u64) {
                return Err(HookError::invalid("fhirAuthorization.expires_in", "must be a non-negative integer"));
            }
            Some(FhirAuthorization { access_token: SecretString::from(token.to_owned()) })
        }
        Some(_) => return Err(HookError::invalid("fhirAuthorization", "must be an object")),
    };
    if fhir_authorization.is_some() && fhir_server.is_none() {
        return Err(HookError::invalid("fhirServer", "is required when fhirAuthorization is given"));
    }

    let context = match obj.remove("context") {
        Some(Value::Object(c)) => c,
        Some(_) => return Err(HookError::invalid("context", "must be an object")),
        None => return Err(HookError::invalid("context", "is required")),
    };
    let user_id = required_string(&context, "context.", "userId")?.to_owned();
    let patient = PatientId::parse(required_string(&context, "context.", "patientId")?)
        .map_err(|e| HookError::invalid("context.patientId", e.why))?;
    let encounter_id = string_field(&context, "context.", "encounterId")?.map(str::to_owned);

    let orders = match expected {
        Hook::PatientView => Vec::new(),
        Hook::OrderSign => draft_orders(&context)?,
        Hook::OrderSelect => {
            let selections = match context.get("selections") {
                Some(Value::Array(items)) if !items.is_empty() => items
                    .iter()
                    .map(|s| s.as_str().filter(|s| !s.is_empty()))
                    .collect::<Option<Vec<&str>>>()
                    .ok_or_else(|| HookError::invalid("context.selections", "must be an array of references"))?,
                Some(_) => return Err(HookError::invalid("context.selections", "must be a non-empty array of references")),
                None => return Err(HookError::invalid("context.selections", "is required")),
            };
            draft_orders(&context)?
                .into_iter()
                .filter(|o| o.id.as_ref().is_some_and(|id| selections.contains(&format!("ServiceRequest/{id}").as_str())))
                .collect()
        }
    };

    let prefetch = match obj.remove("prefetch") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(HookError::invalid("prefetch", "must be an object")),
    };
    Ok(HookRequest {
        hook: expected,
        hook_instance,
        fhir_server,
        fhir_authorization,
        user_id,
        patient,
        encounter_id,
        orders,
        prefetch,
        context,
    })
}

/// The `ServiceRequest`s of `context.draftOrders`, which must be a Bundle.
fn draft_orders(context: &Map<String, Value>) -> Result<Vec<ServiceRequest>, HookError> {
    let bundle = context.get("draftOrders").ok_or_else(|| HookError::invalid("context.draftOrders", "is required"))?;
    let resources = radsight_fhir::parse_bundle(bundle).map_err(|e| HookError::invalid("context.draftOrders", e.to_string()))?;
    Ok(resources
        .into_iter()
        .filter_map(|r| match r {
            Resource::ServiceRequest(sr) => Some(sr),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(context: Value) -> Value {
        json!({"hook": "order-select", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "context": context})
    }

    fn order(id: &str) -> Value {
        json!({"resource": {"resourceType": "ServiceRequest", "id": id, "status": "draft", "intent": "order", "subject": {"reference": "Patient/p1"}}})
    }

    fn field_of(err: HookError) -> String {
        match err {
            HookError::InvalidRequest { field, .. } => field,
            other => panic!("expected an invalid-request error, got {other:?}"),
        }
    }

    #[test]
    fn order_select_keeps_only_the_selected_orders() {
        let ctx = json!({"userId": "Practitioner/1", "patientId": "p1", "selections": ["ServiceRequest/b"],
            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [order("a"), order("b")]}});
        let req = parse_hook_request(body(ctx), Hook::OrderSelect).unwrap();
        assert_eq!(req.orders.len(), 1);
        assert_eq!(req.orders[0].id.as_deref(), Some("b"));
        assert_eq!(req.patient.as_str(), "p1");
    }

    #[test]
    fn each_missing_or_mistyped_field_is_named() {
        let ok = json!({"userId": "Practitioner/1", "patientId": "p1", "selections": ["ServiceRequest/a"],
            "draftOrders": {"resourceType": "Bundle", "entry": [order("a")]}});
        let cases: Vec<(&str, Value, &str)> = vec![
            ("userId", json!(null), "context.userId"),
            ("patientId", json!(42), "context.patientId"),
            ("selections", json!("ServiceRequest/a"), "context.selections"),
            ("draftOrders", json!({"resourceType": "ServiceRequest"}), "context.draftOrders"),
            ("draftOrders", json!([]), "context.draftOrders"),
        ];
        for (key, value, field) in cases {
            let mut ctx = ok.clone();
            if value.is_null() {
                ctx.as_object_mut().unwrap().remove(key);
            } else {
                ctx[key] = value;
            }
            assert_eq!(field_of(parse_hook_request(body(ctx), Hook::OrderSelect).unwrap_err()), field, "{key}");
        }
    }

    #[test]
    fn a_request_for_another_hook_is_a_mismatch() {
        let err = parse_hook_request(body(json!({})), Hook::PatientView).unwrap_err();
        assert!(matches!(err, HookError::HookMismatch { .. }));
    }
}
