//! Input that would make an invalid object is refused with an error naming the field, never
//! quoting the value (it may be PHI).

use dicom_dictionary_std::tags;
use radsight_dicom_report::{Code, Report, WriteError, write_measurement_report, write_saliency_capture};

use crate::fixture::*;

fn check_refused(change: impl FnOnce(&mut Report), field: &str) {
    let mut report = report();
    change(&mut report);
    let err = write_measurement_report(&report, None).expect_err(field);
    let message = err.to_string();
    assert!(matches!(err, WriteError::CheckInput { .. }), "{message}");
    assert!(message.contains(field), "{field}: {message}");
    assert!(!message.contains("Doe") && !message.contains("MRN-0042"), "PHI in {message}");
}

#[test]
fn invalid_reports_are_refused_naming_the_field() {
    check_refused(|r| r.findings[0].probability = 1.5, "findings[0].probability");
    check_refused(|r| r.findings[1].threshold = f64::NAN, "findings[1].threshold");
    check_refused(|r| r.findings.clear(), "findings");
    check_refused(|r| r.source_images.clear(), "source_images");
    check_refused(|r| r.source_images[1].sop_instance_uid = "1.2.03".into(), "source_images[1].sop_instance_uid");
    check_refused(|r| r.study.study_instance_uid = "not a uid".into(), "study.study_instance_uid");
    check_refused(|r| r.study.patient_id = "MRN\\0042".into(), "study.patient_id");
    check_refused(|r| r.study.patient_name = Some(format!("Doe^{}", "J".repeat(70))), "study.patient_name");
    check_refused(|r| r.findings[0].code = Code::new("36118008", "SCT", &"x".repeat(65)), "findings[0].code.meaning");
    check_refused(|r| r.findings[0].code = Code::new("36118008", "TOO-LONG-SCHEME-XY", "Pneumothorax"), "findings[0].code.scheme");
    check_refused(|r| r.algorithm.weights_sha256_hex = "ABC".into(), "algorithm.weights_sha256_hex");
    check_refused(|r| r.result_id = " ".into(), "result_id");
    check_refused(|r| r.receipt.as_mut().unwrap().leaf_index = 42, "receipt.leaf_index");
    check_refused(|r| r.receipt.as_mut().unwrap().proof_base64.push("a\nb".into()), "receipt.proof_base64[2]");
    check_refused(|r| r.saliency.as_mut().unwrap().faithfulness_value = f64::INFINITY, "saliency.faithfulness_value");
}

#[test]
fn a_long_code_value_is_written_as_long_code_value() {
    let mut report = report();
    report.findings[0].code = Code::new("http://snomed.info/id/36118008", "SCT", "Pneumothorax");
    let file = parse(&write_measurement_report(&report, None).unwrap().bytes);
    // Root > Imaging Measurements (item 9) > first group > Finding (item 3) > its code.
    let measurements = &items(&file, tags::CONTENT_SEQUENCE)[8];
    let group = &items(measurements, tags::CONTENT_SEQUENCE)[0];
    let finding = &items(group, tags::CONTENT_SEQUENCE)[2];
    let code = &items(finding, tags::CONCEPT_CODE_SEQUENCE)[0];
    assert_eq!(string(code, tags::LONG_CODE_VALUE), "http://snomed.info/id/36118008");
    assert!(code.get(tags::CODE_VALUE).is_none());
}

#[test]
fn an_overlay_of_the_wrong_size_is_refused() {
    let mut overlay = overlay();
    overlay.rgb.pop();
    let err = write_saliency_capture(&report(), &overlay, None).unwrap_err();
    assert!(err.to_string().contains("overlay.rgb"), "{err}");
    let mut overlay = crate::fixture::overlay();
    overlay.anatomy.as_mut().unwrap().body_part_examined = "chest".into();
    let err = write_saliency_capture(&report(), &overlay, None).unwrap_err();
    assert!(err.to_string().contains("overlay.anatomy.body_part_examined"), "{err}");
}
