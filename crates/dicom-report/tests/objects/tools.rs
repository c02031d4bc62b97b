//! The written objects through the reference tools: dciodvfy validates both IODs, dsrdump
//! renders the SR, highdicom reads the SR as a TID 1500 Measurement Report.

use std::path::Path;
use std::process::{Command, Output};

use radsight_dicom_report::{write_measurement_report, write_saliency_capture};
use serde_json::Value;

use crate::fixture::*;

fn run(program: &str, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("could not run {program} ({e}): install it (scripts/test.sh's ensure_dicom_tools: apt-get install dicom3tools dcmtk)")
    })
}

/// dciodvfy's findings: its Error and Warning lines.
fn dciodvfy(path: &Path) -> (Vec<String>, Vec<String>) {
    let out = run("dciodvfy", &[path.as_os_str()]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let lines = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect::<Vec<_>>();
    (lines("Error"), lines("Warning"))
}

#[test]
fn dciodvfy_finds_no_error_in_the_sr_and_warns_only_about_the_private_coding_scheme() {
    let dir = out_dir();
    let path = write_file(&dir, "sr.dcm", &write_measurement_report(&report(), None).unwrap().bytes);
    let (errors, warnings) = dciodvfy(&path);
    assert!(errors.is_empty(), "dciodvfy errors on the SR:\n{}", errors.join("\n"));
    // dicom3tools knows only the standard's coding schemes; 99RADSIGHT is declared in the
    // Coding Scheme Identification Sequence, as PS3.16 §8.2 asks of a private scheme.
    let other: Vec<_> = warnings.iter().filter(|w| !w.contains("<99RADSIGHT>")).collect();
    assert!(other.is_empty(), "dciodvfy warnings on the SR:\n{other:#?}");
}

#[test]
fn dciodvfy_finds_neither_error_nor_warning_in_the_secondary_capture() {
    let dir = out_dir();
    let path = write_file(&dir, "sc.dcm", &write_saliency_capture(&report(), &overlay(), None).unwrap().bytes);
    let (errors, warnings) = dciodvfy(&path);
    assert!(errors.is_empty() && warnings.is_empty(), "dciodvfy on the SC:\n{}\n{}", errors.join("\n"), warnings.join("\n"));
}

#[test]
fn dciodvfy_warns_about_an_empty_laterality_when_the_anatomy_is_unknown() {
    // The documented cost of leaving OverlayImage::anatomy out; still no error.
    let mut overlay = overlay();
    overlay.anatomy = None;
    let dir = out_dir();
    let path = write_file(&dir, "sc.dcm", &write_saliency_capture(&report(), &overlay, None).unwrap().bytes);
    let (errors, warnings) = dciodvfy(&path);
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(warnings.iter().any(|w| w.contains("<Laterality>")), "{warnings:#?}");
}

#[test]
fn dsrdump_renders_the_sr_with_its_findings_and_receipt() {
    let dir = out_dir();
    let path = write_file(&dir, "sr.dcm", &write_measurement_report(&report(), None).unwrap().bytes);
    let out = run("dsrdump", &[path.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dsrdump failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    for expected in [
        "Comprehensive SR Document",
        "Verification Flag   : UNVERIFIED",
        r#"<CONTAINER:(,,"Imaging Measurement Report")=SEPARATE>"#,
        r#"<contains CODE:(,,"Pneumothorax")=(52101004,SCT,"Present")>"#,
        r#"<contains CODE:(,,"pleural effusion")=(272519000,SCT,"Absent")>"#,
        r#"<contains NUM:(,,"Probability")="0.8731" (1,UCUM,"no units")>"#,
        r#"<contains TEXT:(,,"Log leaf index")="17">"#,
    ] {
        assert!(text.contains(expected), "dsrdump output lacks {expected}:\n{text}");
    }
}

fn read_with_highdicom(path: &Path) -> Value {
    let python = std::env::var("RADSIGHT_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "RADSIGHT_TEST_PYTHON is not set: the SR test needs the Python test venv with highdicom \
             (scripts/test.sh sets it up; or `python3 -m venv .venv-test && .venv-test/bin/pip install -r \
             tests/python/requirements.txt` and export RADSIGHT_TEST_PYTHON=$PWD/.venv-test/bin/python)"
        )
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/read_sr.py");
    let out = run(&python, &[script.as_os_str(), path.as_os_str()]);
    assert!(out.status.success(), "read_sr.py failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn code(value: &str, scheme: &str, meaning: &str) -> Value {
    serde_json::json!({"value": value, "scheme": scheme, "meaning": meaning})
}

#[test]
fn highdicom_reads_the_sr_as_a_tid_1500_measurement_report() {
    let report = report();
    let written = write_measurement_report(&report, None).unwrap();
    let dir = out_dir();
    let found = read_with_highdicom(&write_file(&dir, "sr.dcm", &written.bytes));

    assert_eq!(found["is_measurement_report"], true);
    assert_eq!(found["title"], code("126000", "DCM", "Imaging Measurement Report"));
    assert_eq!(found["coding_schemes"], serde_json::json!(["99RADSIGHT"]));
    assert_eq!(found["procedures_reported"], serde_json::json!([code("399208008", "SCT", "Plain chest X-ray")]));
    assert_eq!(found["languages"], serde_json::json!([code("en-US", "RFC5646", "English (United States)")]));
    let device = &found["device_observers"][0];
    assert_eq!(device["model"], "radsight-phantom-cxr");
    assert_eq!(device["manufacturer"], "radsight");

    let library: Vec<&str> = found["image_library"].as_array().unwrap().iter().map(|i| i["sop_instance_uid"].as_str().unwrap()).collect();
    assert_eq!(library, [SOURCE_UID, SOURCE_UID_2]);

    let groups = found["measurement_groups"].as_array().unwrap();
    assert_eq!(groups.len(), report.findings.len());
    for (group, finding) in groups.iter().zip(&report.findings) {
        let finding_code = code(&finding.code.value, &finding.code.scheme, &finding.code.meaning);
        assert_eq!(group["tracking_identifier"], finding.label.as_str());
        assert_eq!(group["finding_type"], finding_code);
        let measurements = group["measurements"].as_array().unwrap();
        assert_eq!(measurements.len(), 2, "{measurements:#?}");
        assert_eq!(measurements[0]["name"], code("122157", "DCM", "Probability"));
        // highdicom prefers the Floating Point Value: the probability comes back exactly.
        assert_eq!(measurements[0]["value"].as_f64().unwrap(), finding.probability);
        assert_eq!(measurements[0]["unit"], code("1", "UCUM", "no units"));
        assert_eq!(measurements[1]["name"], code("122411", "DCM", "Threshold Value"));
        assert_eq!(measurements[1]["value"].as_f64().unwrap(), finding.threshold);
        let call = if finding.positive { code("52101004", "SCT", "Present") } else { code("272519000", "SCT", "Absent") };
        assert_eq!(group["qualitative_evaluations"], serde_json::json!([{"name": finding_code, "value": call}]));
        let algorithm = &group["algorithm"];
        assert_eq!(algorithm["name"], serde_json::json!(["radsight-phantom-cxr"]));
        assert_eq!(algorithm["version"], serde_json::json!(["1.2.0"]));
        assert_eq!(algorithm["manufacturer"], serde_json::json!(["radsight"]));
        assert_eq!(algorithm["parameters"], serde_json::json!([format!("weights_sha256={WEIGHTS}")]));
    }
    assert_ne!(groups[0]["tracking_uid"], groups[1]["tracking_uid"]);

    assert!(found["comments"][0].as_str().unwrap().starts_with("AI-generated, not a diagnosis"));
    let receipt = report.receipt.as_ref().unwrap();
    assert_eq!(
        found["receipts"],
        serde_json::json!([{
            "leaf_index": ["17"], "tree_size": ["42"], "entry": [receipt.entry_base64],
            "proof": receipt.proof_base64, "checkpoint": [CHECKPOINT], "log_origin": [receipt.log_origin],
        }])
    );
    assert_eq!(
        found["results"],
        serde_json::json!([{
            "result_id": ["res_01HZX3"], "saliency_method": ["Grad-CAM"],
            "faithfulness_metric": ["deletion AUC"], "faithfulness_value": [0.1875],
        }])
    );
}
