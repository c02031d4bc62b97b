//! The result into the EHR's record: its FHIR Bundle (DiagnosticReport, Observations, the AI
//! Device, the Provenance with the log receipt) written as one transaction, authorised by SMART
//! Backend Services.
//!
//! A retry must not duplicate: the DiagnosticReport, each Observation and the Device are
//! conditional creates on their identifiers (`ifNoneExist`), so a second transaction finds them
//! and creates nothing; the Provenance, which has no identifier in R4, is an update to an id
//! derived from the result, which creates it the first time and rewrites the same content after.
//! The transaction is all or nothing at the server, so a failed one leaves nothing to undo.

use std::time::Duration;

use serde_json::{Value, json};

use super::build::{BuildContext, BuildError, Reportable, reportable};
use super::deliver::Failure;
use crate::backend_auth::BackendTokens;
use crate::backend_auth::token::bearer;
use crate::configuration::EhrDestination;
use crate::http_client::read_limited;
use crate::results::fhir::result_bundle;

/// Answers of a FHIR server to one transaction are bounded.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Builds the transaction of result `result_id`: (DiagnosticReport identifier, JSON bytes).
pub async fn build(ctx: &BuildContext<'_>, result_id: &str) -> Result<(String, Vec<u8>), BuildError> {
    let Reportable { result, study, receipt } = reportable(ctx, result_id).await?;
    // The record keeps the picture's address without a signature: one that expired would rot
    // there. Reading it needs a SMART token (or a fresh signed link from a card).
    let saliency = format!("{}/results/{}/saliency.png", ctx.public_url, result.id);
    let bundle = result_bundle(&result, &study, &saliency, Some(&receipt));
    let transaction = transaction_of(&bundle);
    Ok((result.id.clone(), serde_json::to_vec(&transaction).expect("JSON serialises")))
}

/// The collection Bundle as a transaction: conditional creates on identifiers, and the
/// Provenance as an update to its derived id.
pub fn transaction_of(bundle: &Value) -> Value {
    let entries: Vec<Value> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let mut resource = e["resource"].clone();
            let kind = resource["resourceType"].as_str().unwrap_or_default().to_owned();
            let request = match resource["identifier"][0].as_object() {
                Some(id) => json!({
                    "method": "POST",
                    "url": kind,
                    "ifNoneExist": format!(
                        "identifier={}|{}",
                        id.get("system").and_then(Value::as_str).unwrap_or_default(),
                        id.get("value").and_then(Value::as_str).unwrap_or_default()
                    ),
                }),
                None => {
                    let id = e["fullUrl"].as_str().unwrap_or_default().trim_start_matches("urn:uuid:").to_owned();
                    resource["id"] = json!(id);
                    json!({"method": "PUT", "url": format!("{kind}/{id}")})
                }
            };
            json!({"fullUrl": e["fullUrl"], "resource": resource, "request": request})
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// Posts the transaction to `ehr`; the DiagnosticReport's location at the EHR when stored.
///
/// A 401 to a cached token drops it and tries once more with a new one (the server may end
/// tokens early); a second 401, or a 403, is permanent: radsight is not allowed there, and
/// only someone fixing its registration can change that.
pub async fn send(tokens: &BackendTokens, http: &reqwest::Client, ehr: &EhrDestination, payload: &[u8]) -> Result<String, Failure> {
    let mut renewed = false;
    loop {
        let token = tokens.access_token(ehr).await.map_err(|e| Failure::new(e.code(), !e.is_transient()).with_detail(e.detail()))?;
        let resp = http
            .post(ehr.fhir_base.trim_end_matches('/'))
            .header("content-type", "application/fhir+json")
            .header("accept", "application/fhir+json")
            .header("authorization", bearer(&token))
            .timeout(Duration::from_millis(ehr.timeout_ms))
            .body(payload.to_vec())
            .send()
            .await
            .map_err(|e| Failure::new(if e.is_timeout() { "ehr-timeout" } else { "ehr-unreachable" }, false))?;
        let status = resp.status().as_u16();
        let body = read_limited(resp, MAX_ANSWER_BYTES).await.map_err(|_| Failure::new("ehr-answer-unreadable", false))?;
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match status {
            200 => return report_location(&answer),
            401 if !renewed => {
                tokens.forget(ehr).await;
                renewed = true;
            }
            401 => return Err(Failure::new("ehr-unauthorized", true).with_detail(diagnostics(&answer))),
            403 => return Err(Failure::new("ehr-forbidden", true).with_detail(diagnostics(&answer))),
            // A concurrent change, or several resources already carrying one of the
            // identifiers: reported, and retried as configured (someone may resolve it).
            409 => return Err(Failure::new("ehr-conflict", false).with_detail(diagnostics(&answer))),
            412 => return Err(Failure::new("ehr-duplicate-match", false).with_detail(diagnostics(&answer))),
            408 | 429 | 500..=599 => return Err(Failure::new("ehr-unavailable", false).with_detail(format!("HTTP {status}"))),
            _ => return Err(Failure::new("ehr-refused", true).with_detail(format!("HTTP {status}: {}", diagnostics(&answer)))),
        }
    }
}

/// The DiagnosticReport's location from a transaction-response, once every entry succeeded.
fn report_location(answer: &Value) -> Result<String, Failure> {
    let bad = |why: &str| Failure::new("ehr-answer-invalid", false).with_detail(why.to_owned());
    if answer["resourceType"] != "Bundle" || answer["type"] != "transaction-response" {
        return Err(bad("not a transaction-response Bundle"));
    }
    let entries = answer["entry"].as_array().ok_or_else(|| bad("no entries"))?;
    let mut report = None;
    for e in entries {
        let status = e["response"]["status"].as_str().unwrap_or_default();
        if !(status.starts_with("200") || status.starts_with("201")) {
            return Err(bad(&format!("an entry answered {status:?}")));
        }
        let location = e["response"]["location"].as_str().unwrap_or_default();
        if location.starts_with("DiagnosticReport/") || location.contains("/DiagnosticReport/") {
            report = Some(location.to_owned());
        }
    }
    report.ok_or_else(|| bad("no DiagnosticReport location"))
}

/// The OperationOutcome's first diagnostics or details text, bounded.
fn diagnostics(answer: &Value) -> String {
    let issue = &answer["issue"][0];
    let text = issue["diagnostics"].as_str().or_else(|| issue["details"]["text"].as_str()).unwrap_or("no OperationOutcome");
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identified_resources_become_conditional_creates_and_the_provenance_an_update() {
        let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "urn:uuid:a", "resource": {"resourceType": "DiagnosticReport", "identifier": [{"system": "urn:radsight:result", "value": "r1"}]}},
            {"fullUrl": "urn:uuid:b", "resource": {"resourceType": "Provenance", "target": [{"reference": "urn:uuid:a"}]}},
        ]});
        let t = transaction_of(&bundle);
        assert_eq!(t["type"], "transaction");
        assert_eq!(
            t["entry"][0]["request"],
            json!({"method": "POST", "url": "DiagnosticReport", "ifNoneExist": "identifier=urn:radsight:result|r1"})
        );
        assert_eq!(t["entry"][1]["request"], json!({"method": "PUT", "url": "Provenance/b"}));
        assert_eq!(t["entry"][1]["resource"]["id"], "b");
        assert_eq!(t["entry"][1]["resource"]["target"][0]["reference"], "urn:uuid:a", "references stay for the server to resolve");
    }

    #[test]
    fn a_response_with_a_failed_entry_or_without_the_report_is_not_a_delivery() {
        let ok = json!({"resourceType": "Bundle", "type": "transaction-response", "entry": [
            {"response": {"status": "201 Created", "location": "DiagnosticReport/7/_history/1"}},
            {"response": {"status": "200 OK", "location": "Device/3/_history/1"}},
        ]});
        assert_eq!(report_location(&ok).unwrap(), "DiagnosticReport/7/_history/1");
        let mut failed = ok.clone();
        failed["entry"][1]["response"]["status"] = json!("400 Bad Request");
        assert_eq!(report_location(&failed).unwrap_err().code, "ehr-answer-invalid");
        assert!(report_location(&json!({"resourceType": "OperationOutcome"})).is_err());
    }
}
