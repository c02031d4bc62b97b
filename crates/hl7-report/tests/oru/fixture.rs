//! The sample result the tests write, and how to run the Python reader on a message.

use std::path::{Path, PathBuf};
use std::process::Command;

use radsight_hl7_report::{Code, Finding, Header, ModelIdentity, Order, OruResult, Patient, PersonName, ResultStatus};
use serde_json::Value;

pub const STUDY_UID: &str = "1.2.826.0.1.3680043.8.498.11111";
pub const WEIGHTS: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
/// A receipt as the audit log gives it: compact JSON with base64 and a C2SP checkpoint note
/// (its newlines and em dash escaped by JSON).
pub const RECEIPT: &str = r#"{"log_origin":"radsight.example/audit","leaf_index":17,"tree_size":42,"entry":"eyJraW5kIjoibW9kZWwuaW5mZXJlbmNlIn0=","proof":["qUuSBRyNyoW3kpbjgE3cmSqxVv6mADm5JDPaqFxZoXE="],"checkpoint":"radsight.example/audit\n42\nqUuSBRyNyoW3kpbjgE3cmSqxVv6mADm5JDPaqFxZoXE=\n\n\u2014 radsight.example/audit Az3grlgtzPIC\n"}"#;

pub fn result() -> OruResult {
    OruResult {
        header: Header {
            sending_application: "RADSIGHT".into(),
            sending_facility: "HOSP".into(),
            receiving_application: "RIS".into(),
            receiving_facility: "HOSP".into(),
            message_control_id: "RS20261203000017".into(),
            created_at_unix: 1_796_281_200, // 2026-12-03T07:00:00Z
            processing_id: "P".into(),
        },
        patient: Patient {
            id: "MRN-0042".into(),
            assigning_authority: Some("HOSP".into()),
            name: Some(PersonName { family: "Doe".into(), given: "Jane".into() }),
        },
        order: Order {
            placer_order_number: Some("PLC100".into()),
            filler_order_number: Some("FIL200".into()),
            accession_number: Some("ACC300".into()),
            study_instance_uid: STUDY_UID.into(),
            procedure: Some(Code::new("RPID2491", "XR Chest 2 views", "RADLEX")),
            observed_at_unix: 1_796_280_930, // 2026-12-03T06:55:30Z
            result_status: ResultStatus::Final,
        },
        findings: vec![
            Finding { code: Code::new("36118008", "Pneumothorax", "SCT"), probability: 0.8731, threshold: 0.5, positive: true },
            Finding { code: Code::new("60046008", "Pleural effusion", "SCT"), probability: 0.0625, threshold: 0.35, positive: false },
        ],
        conclusion: "Pneumothorax likely; no pleural effusion (AI).".into(),
        model: ModelIdentity { id: "radsight-phantom-cxr".into(), version: "1.1.0".into(), weights_sha256_hex: WEIGHTS.into() },
        result_url: Some("https://radsight.example/results/res_01HZX3?view=full&lang=en".into()),
        receipt_json: Some(RECEIPT.into()),
    }
}

pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn python() -> String {
    std::env::var("RADSIGHT_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "RADSIGHT_TEST_PYTHON is not set: the ORU tests need the Python test venv with hl7apy \
             (scripts/test.sh sets it up; or `python3 -m venv .venv-test && .venv-test/bin/pip install -r \
             tests/python/requirements.txt` and export RADSIGHT_TEST_PYTHON=$PWD/.venv-test/bin/python)"
        )
    })
}

/// What tests/python/read_oru.py makes of `message`: `Ok(summary)`, or `Err(stderr)` when hl7apy
/// refused it.
pub fn read_with_hl7apy(message: &str) -> Result<Value, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "message.hl7", message);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/read_oru.py");
    let python = python();
    let out = Command::new(&python)
        .arg(&script)
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("could not run {python} ({e}): set RADSIGHT_TEST_PYTHON to the test venv's python"));
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
