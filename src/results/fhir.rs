//! A result as a FHIR R4 Bundle: a `DiagnosticReport`, one `Observation` per finding with its
//! probability, the algorithm as a `Device`, and a `Provenance` linking the report to the
//! `ImagingStudy` it read and the model that made it (after the HL7 DICOM SR-to-FHIR IG's
//! shape for AI results).
//!
//! The Provenance carries the log receipt of the result's `model.inference` entry (extension
//! [`RECEIPT_EXTENSION`]), the same receipt the DICOM SR carries.
//!
//! The ImagingStudy is referenced logically, by its Study Instance UID (`urn:dicom:uid`), since
//! radsight does not own the EHR's resource ids.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::store::{Finding, RegionArea, conclusion, findings};
use crate::audit::proof::Receipt;
use crate::store::entities::{analysis_result, study};

const FINDING_SYSTEM: &str = "urn:radsight:finding";
const MODEL_SYSTEM: &str = "urn:radsight:model";
const WEIGHTS_SYSTEM: &str = "urn:radsight:weights-sha256";
/// Identifies each finding's Observation (`{result id}/{finding code}`), so a write-back can
/// create it conditionally.
pub const OBSERVATION_SYSTEM: &str = "urn:radsight:observation";
/// Identifies a result's DiagnosticReport (the result id).
pub const RESULT_SYSTEM: &str = "urn:radsight:result";
/// AI Transparency on FHIR: the security label marking data an AI asserted.
const AI_ASSERTED: &str = "AIAST";
const OBSERVATION_VALUE: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";
/// AI Transparency on FHIR's Device.type code system (the AI Device profile fixes the code
/// `Artificial-Intelligence`).
const AI_DEVICE_TYPE: &str = "http://hl7.org/fhir/uv/aitransparency/CodeSystem/AIdeviceTypeCS";

/// The security label AI Transparency on FHIR puts on AI-asserted resources.
fn ai_asserted() -> Value {
    json!({"security": [{"system": OBSERVATION_VALUE, "code": AI_ASSERTED, "display": "Artificial Intelligence asserted"}]})
}
const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";

fn instant(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH).format(&Rfc3339).expect("RFC 3339")
}

fn study_reference(uid: &str) -> Value {
    json!({
        "type": "ImagingStudy",
        "identifier": {"system": "urn:dicom:uid", "value": format!("urn:oid:{uid}")},
    })
}

/// The finding's codings: the card's standard code first (when it gives one), then radsight's
/// own label, which every result has.
fn codings(f: &Finding) -> Vec<Value> {
    let own = json!({"system": FINDING_SYSTEM, "code": f.code, "display": f.display});
    match &f.standard {
        Some(c) => vec![json!({"system": c.system, "code": c.code, "display": c.display}), own],
        None => vec![own],
    }
}

fn observation(f: &Finding, full_url: &str, ids: (&Value, &str), device_url: &str, study_uid: &str, when: &str) -> Value {
    let (patient, result_id) = ids;
    // What every finding's Observation says: who, what, when, by which device, from which study.
    let mut resource = json!({
        "resourceType": "Observation",
        "meta": ai_asserted(),
        "identifier": [{"system": OBSERVATION_SYSTEM, "value": format!("{result_id}/{}", f.code)}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging", "display": "Imaging"}]}],
        "code": {"coding": codings(f), "text": f.display},
        "subject": patient,
        "effectiveDateTime": when,
        "device": {"reference": device_url},
        "derivedFrom": [study_reference(study_uid)],
    });
    let value = match &f.area {
        Some(area) => region_value(f, area),
        None => probability_value(f),
    };
    if let (Value::Object(r), Value::Object(v)) = (&mut resource, value) {
        r.extend(v);
    }
    json!({"fullUrl": full_url, "resource": resource})
}

/// A classifier's finding: its calibrated probability, with the card's threshold as the
/// reference range.
fn probability_value(f: &Finding) -> Value {
    let positive = f.is_positive();
    json!({
        "valueQuantity": {"value": round6(f.probability), "unit": "probability", "system": "http://unitsofmeasure.org", "code": "1"},
        "interpretation": [{"coding": [{"system": INTERPRETATION, "code": if positive { "POS" } else { "NEG" }, "display": if positive { "Positive" } else { "Negative" }}]}],
        "referenceRange": [{"high": {"value": round6(f.threshold), "unit": "probability", "system": "http://unitsofmeasure.org", "code": "1"}, "text": "decision threshold of the model card"}],
        "note": [{"text": "AI finding with a calibrated probability; it supports and does not replace the clinician's judgement."}],
    })
}

/// A segmented region: its area in mm² (UCUM `mm2`) when the image states its pixel spacing,
/// present or absent as the interpretation, and the spacing's source in a note.
fn region_value(f: &Finding, area: &RegionArea) -> Value {
    let present = f.is_positive();
    let mut value = json!({
        "interpretation": [{"coding": [{"system": INTERPRETATION, "code": if present { "DET" } else { "ND" }, "display": if present { "Detected" } else { "Not detected" }}]}],
        "note": [{"text": format!(
            "AI segmentation: the area of the region the model outlined ({} model pixels{}). It supports and does not replace the clinician's judgement.",
            area.model_pixels,
            match area.spacing_source.as_deref() {
                Some("ImagerPixelSpacing") => "; from Imager Pixel Spacing, i.e. at the detector, before geometric magnification is removed",
                Some(_) => "; from Pixel Spacing",
                None => "; the image states no pixel spacing, so no area in mm² is given",
            }
        )}],
    });
    match area.mm2 {
        Some(mm2) => {
            value["valueQuantity"] = json!({"value": round6(mm2), "unit": "mm²", "system": "http://unitsofmeasure.org", "code": "mm2"})
        }
        None => {
            value["dataAbsentReason"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "unknown", "display": "Unknown"}]})
        }
    }
    value
}

/// A stable UUID for a resource of this result, so the same result always gives the same
/// Bundle (SHA-256 of the name, formatted as a UUID).
fn derived_uuid(name: &str) -> uuid::Uuid {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    uuid::Builder::from_random_bytes(digest[..16].try_into().expect("16 bytes")).into_uuid()
}

/// The model card as the Device's note: its JSON, pretty-printed in a Markdown code block.
fn model_card_note(card: Option<&str>) -> String {
    let card = card.and_then(|c| serde_json::from_str::<Value>(c).ok()).and_then(|c| serde_json::to_string_pretty(&c).ok());
    match card {
        Some(card) => format!("Model card (weights identified by their SHA-256):\n\n```json\n{card}\n```"),
        None => "Weights identified by their SHA-256; the model card was not recorded with this result.".into(),
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The Bundle for a finished result. `saliency_url` is where the saliency picture can be had.
/// The extension carrying a log receipt on the Provenance: a third party checks the entry's
/// leaf hash, folds the proof to the checkpoint's root and checks the checkpoint's signature
/// with the log's published verifier key (`radsight audit vkey`), without radsight.
pub const RECEIPT_EXTENSION: &str = "https://radsight.dev/fhir/StructureDefinition/audit-log-receipt";

/// The receipt as a complex extension. Leaf index and tree size are strings: they may exceed
/// FHIR's 32-bit integers.
fn receipt_extension(receipt: &Receipt) -> Value {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut parts = vec![
        json!({"url": "leafIndex", "valueString": receipt.leaf_index.to_string()}),
        json!({"url": "treeSize", "valueString": receipt.tree_size.to_string()}),
        json!({"url": "entry", "valueBase64Binary": b64(receipt.entry.as_bytes())}),
    ];
    parts.extend(receipt.proof.iter().map(|h| json!({"url": "proof", "valueBase64Binary": b64(&hex::decode(h).unwrap_or_default())})));
    parts.push(json!({"url": "checkpoint", "valueString": receipt.checkpoint}));
    parts.push(json!({"url": "origin", "valueString": receipt.origin}));
    json!({"url": RECEIPT_EXTENSION, "extension": parts})
}

/// The Bundle of a finished result; `receipt`, when given, is the log receipt of the result's
/// `model.inference` entry, carried on the Provenance.
pub fn result_bundle(r: &analysis_result::Model, s: &study::Model, saliency_url: &str, receipt: Option<&Receipt>) -> Value {
    let patient = json!({"reference": s.patient_ref});
    let when = instant(r.updated_at);
    let base = format!("urn:uuid:{}", r.id);
    let report_url = base.clone();
    let device_url = format!("urn:uuid:{}", derived_uuid(&format!("{base}/device")));
    let provenance_url = format!("urn:uuid:{}", derived_uuid(&format!("{base}/provenance")));
    let found = findings(r);
    let observations: Vec<(String, Value)> = found
        .iter()
        .map(|f| {
            let url = format!("urn:uuid:{}", derived_uuid(&format!("{base}/observation/{}", f.code)));
            let obs = observation(f, &url, (&patient, &r.id), &device_url, &s.study_uid, &when);
            (url, obs)
        })
        .collect();
    let model_id = r.model_id.clone().unwrap_or_default();
    let version = r.model_version.clone().unwrap_or_default();
    let conclusion = conclusion(&found, &model_id, &version);
    let device = json!({
        "fullUrl": device_url,
        "resource": {
            "resourceType": "Device",
            "identifier": [
                {"system": MODEL_SYSTEM, "value": format!("{model_id}@{version}")},
                {"system": WEIGHTS_SYSTEM, "value": r.weights_sha256.clone().unwrap_or_default()},
            ],
            "deviceName": [{"name": model_id, "type": "model-name"}],
            "type": {
                "coding": [{"system": AI_DEVICE_TYPE, "code": "Artificial-Intelligence", "display": "Artificial Intelligence"}],
                "text": "AI imaging analysis software (radsight)",
            },
            "version": [{"value": version}],
            "manufacturer": "radsight",
            // AI Transparency on FHIR carries the model card in Device.note.
            "note": [{"text": model_card_note(r.model_card.as_deref())}],
        }
    });
    let report = json!({
        "fullUrl": report_url,
        "resource": {
            "resourceType": "DiagnosticReport",
            "meta": ai_asserted(),
            "identifier": [{"system": RESULT_SYSTEM, "value": r.id}],
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}], "text": "AI analysis of imaging study"},
            "subject": patient,
            "effectiveDateTime": when,
            "issued": when,
            "result": observations.iter().map(|(url, _)| json!({"reference": url})).collect::<Vec<_>>(),
            "imagingStudy": [study_reference(&s.study_uid)],
            "conclusion": conclusion,
            "presentedForm": [{"contentType": "image/png", "url": saliency_url, "title": "Saliency map over the analysed image"}],
        }
    });
    let mut targets = vec![json!({"reference": report_url})];
    targets.extend(observations.iter().map(|(url, _)| json!({"reference": url})));
    let provenance = json!({
        "fullUrl": provenance_url,
        "resource": {
            "resourceType": "Provenance",
            "target": targets,
            "recorded": when,
            "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE", "display": "create"}]},
            // AI Transparency on FHIR's AI Provenance: the reason says an AI asserted the
            // targets, and the model (the Device) is their author.
            "reason": [{"coding": [{"system": OBSERVATION_VALUE, "code": AI_ASSERTED, "display": "Artificial Intelligence asserted"}]}],
            "agent": [{
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author", "display": "Author"}]},
                "who": {"reference": device_url},
            }],
            "entity": [
                {"role": "source", "what": study_reference(&s.study_uid)},
                {"role": "derivation", "what": {"reference": device_url, "display": "the model that made the result"}},
            ],
        }
    });
    let mut provenance = provenance;
    if let Some(receipt) = receipt {
        provenance["resource"]["extension"] = json!([receipt_extension(receipt)]);
    }
    let mut entries = vec![report];
    entries.extend(observations.into_iter().map(|(_, o)| o));
    entries.push(device);
    entries.push(provenance);
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": instant(OffsetDateTime::now_utc().unix_timestamp()),
        "entry": entries,
    })
}
