//! The written bytes parsed back with dicom-object: the header attributes and the content tree
//! carry the input unchanged.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use radsight_dicom_report::{
    CAPTURE_SERIES_DESCRIPTION, COMPREHENSIVE_SR, REPORT_SERIES_DESCRIPTION, SECONDARY_CAPTURE, write_measurement_report,
    write_saliency_capture,
};

use crate::fixture::*;

/// (Code Value, Coding Scheme Designator) of an item's Concept Name.
fn concept(item: &InMemDicomObject) -> (String, String) {
    let name = &items(item, tags::CONCEPT_NAME_CODE_SEQUENCE)[0];
    (string(name, tags::CODE_VALUE), string(name, tags::CODING_SCHEME_DESIGNATOR))
}

/// The direct children of `item` whose concept name is (value, scheme).
fn children<'a>(item: &'a InMemDicomObject, value: &str, scheme: &str) -> Vec<&'a InMemDicomObject> {
    items(item, tags::CONTENT_SEQUENCE).iter().filter(|c| concept(c) == (value.to_owned(), scheme.to_owned())).collect()
}

fn one<'a>(item: &'a InMemDicomObject, value: &str, scheme: &str) -> &'a InMemDicomObject {
    let found = children(item, value, scheme);
    assert_eq!(found.len(), 1, "expected one ({value}, {scheme})");
    found[0]
}

/// The raw Text Value, without dicom-rs's trimming, so trailing line breaks count too.
fn text_value(item: &InMemDicomObject) -> String {
    assert_eq!(string(item, tags::VALUE_TYPE), "TEXT");
    let bytes = element(item, tags::TEXT_VALUE).value().to_bytes().unwrap();
    // UT is padded to even length with one trailing space (PS3.5 §6.2).
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    text.strip_suffix(' ').map(str::to_owned).unwrap_or(text)
}

#[test]
fn the_sr_header_names_the_study_the_new_series_and_the_document_state() {
    let report = report();
    let written = write_measurement_report(&report, None).unwrap();
    let file = parse(&written.bytes);
    assert_eq!(file.meta().transfer_syntax().trim_end_matches('\0'), "1.2.840.10008.1.2.1");
    assert_eq!(file.meta().media_storage_sop_instance_uid().trim_end_matches('\0'), written.sop_instance_uid.as_str());
    let obj: &InMemDicomObject = &file;
    for (tag, expected) in [
        (tags::SOP_CLASS_UID, COMPREHENSIVE_SR),
        (tags::SOP_INSTANCE_UID, written.sop_instance_uid.as_str()),
        (tags::SERIES_INSTANCE_UID, written.series_instance_uid.as_str()),
        (tags::STUDY_INSTANCE_UID, STUDY_UID),
        (tags::MODALITY, "SR"),
        (tags::SERIES_DESCRIPTION, REPORT_SERIES_DESCRIPTION),
        (tags::COMPLETION_FLAG, "COMPLETE"),
        (tags::VERIFICATION_FLAG, "UNVERIFIED"),
        (tags::CONTENT_DATE, "20240501"),
        (tags::CONTENT_TIME, "103000.250"),
        (tags::PATIENT_ID, "MRN-0042"),
        (tags::PATIENT_NAME, "Doe^Jane"),
        (tags::ACCESSION_NUMBER, "ACC123"),
        (tags::MANUFACTURER, "radsight"),
        (tags::SPECIFIC_CHARACTER_SET, "ISO_IR 192"),
    ] {
        assert_eq!(string(obj, tag), expected, "{tag}");
    }
    assert_ne!(written.series_instance_uid.as_str(), SERIES_UID, "the SR is a new series");

    // The evidence lists every source instance under its series.
    let evidence = &items(obj, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)[0];
    assert_eq!(string(evidence, tags::STUDY_INSTANCE_UID), STUDY_UID);
    let series = &items(evidence, tags::REFERENCED_SERIES_SEQUENCE)[0];
    assert_eq!(string(series, tags::SERIES_INSTANCE_UID), SERIES_UID);
    let refs: Vec<String> =
        items(series, tags::REFERENCED_SOP_SEQUENCE).iter().map(|r| string(r, tags::REFERENCED_SOP_INSTANCE_UID)).collect();
    assert_eq!(refs, [SOURCE_UID, SOURCE_UID_2]);

    let scheme = &items(obj, tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE)[0];
    assert_eq!(string(scheme, tags::CODING_SCHEME_DESIGNATOR), "99RADSIGHT");
}

#[test]
fn the_sr_content_tree_carries_findings_probabilities_and_the_receipt_verbatim() {
    let report = report();
    let file = parse(&write_measurement_report(&report, None).unwrap().bytes);
    let root: &InMemDicomObject = &file;
    assert_eq!(concept(root), ("126000".into(), "DCM".into()));
    assert_eq!(string(&items(root, tags::CONTENT_TEMPLATE_SEQUENCE)[0], tags::TEMPLATE_IDENTIFIER), "1500");

    let library = one(root, "111028", "DCM");
    let group = one(library, "126200", "DCM");
    let images: Vec<String> = items(group, tags::CONTENT_SEQUENCE)
        .iter()
        .map(|i| string(&items(i, tags::REFERENCED_SOP_SEQUENCE)[0], tags::REFERENCED_SOP_INSTANCE_UID))
        .collect();
    assert_eq!(images, [SOURCE_UID, SOURCE_UID_2]);

    let groups = children(one(root, "126010", "DCM"), "125007", "DCM");
    assert_eq!(groups.len(), 2);
    for (group, finding) in groups.iter().zip(&report.findings) {
        assert_eq!(string(&items(group, tags::CONTENT_TEMPLATE_SEQUENCE)[0], tags::TEMPLATE_IDENTIFIER), "1501");
        assert_eq!(text_value(one(group, "112039", "DCM")), finding.label);
        let probability = &items(one(group, "122157", "DCM"), tags::MEASURED_VALUE_SEQUENCE)[0];
        assert_eq!(element(probability, tags::FLOATING_POINT_VALUE).to_float64().unwrap(), finding.probability);
        let ds: f64 = string(probability, tags::NUMERIC_VALUE).trim().parse().unwrap();
        assert!((ds - finding.probability).abs() < 1e-9);
        let threshold = &items(one(group, "122411", "DCM"), tags::MEASURED_VALUE_SEQUENCE)[0];
        assert_eq!(element(threshold, tags::FLOATING_POINT_VALUE).to_float64().unwrap(), finding.threshold);
        let call = &items(one(group, &finding.code.value, &finding.code.scheme), tags::CONCEPT_CODE_SEQUENCE)[0];
        assert_eq!(string(call, tags::CODE_VALUE), if finding.positive { "52101004" } else { "272519000" });
    }

    let receipt_input = report.receipt.as_ref().unwrap();
    let receipt = one(root, "RS-RECEIPT", "99RADSIGHT");
    let texts: Vec<(String, String)> = items(receipt, tags::CONTENT_SEQUENCE).iter().map(|i| (concept(i).0, text_value(i))).collect();
    let expected: Vec<(String, String)> = [
        ("RS-LEAF-INDEX", "17"),
        ("RS-TREE-SIZE", "42"),
        ("RS-ENTRY", receipt_input.entry_base64.as_str()),
        ("RS-PROOF-HASH", receipt_input.proof_base64[0].as_str()),
        ("RS-PROOF-HASH", receipt_input.proof_base64[1].as_str()),
        ("RS-CHECKPOINT", CHECKPOINT),
        ("RS-LOG-ORIGIN", receipt_input.log_origin.as_str()),
    ]
    .into_iter()
    .map(|(c, t)| (c.to_owned(), t.to_owned()))
    .collect();
    assert_eq!(texts, expected);

    let comment = one(one(root, "C0034375", "UMLS"), "121106", "DCM");
    assert!(text_value(comment).starts_with("AI-generated, not a diagnosis"));
}

#[test]
fn a_report_without_receipt_saliency_or_url_leaves_their_items_out() {
    let mut report = report();
    report.receipt = None;
    report.saliency = None;
    report.result_url = None;
    report.procedure_reported = None;
    let file = parse(&write_measurement_report(&report, None).unwrap().bytes);
    let root: &InMemDicomObject = &file;
    assert!(children(root, "RS-RECEIPT", "99RADSIGHT").is_empty());
    let result = one(root, "RS-RESULT", "99RADSIGHT");
    assert_eq!(items(result, tags::CONTENT_SEQUENCE).len(), 1, "only the result id");
    let procedure = &items(one(root, "121058", "DCM"), tags::CONCEPT_CODE_SEQUENCE)[0];
    assert_eq!(string(procedure, tags::CODE_VALUE), "363679005");
}

#[test]
fn the_capture_carries_the_overlay_pixels_and_points_at_its_source() {
    let report = report();
    let overlay = overlay();
    let written = write_saliency_capture(&report, &overlay, None).unwrap();
    let file = parse(&written.bytes);
    assert_eq!(file.meta().transfer_syntax().trim_end_matches('\0'), "1.2.840.10008.1.2.1");
    let obj: &InMemDicomObject = &file;
    for (tag, expected) in [
        (tags::SOP_CLASS_UID, SECONDARY_CAPTURE),
        (tags::SOP_INSTANCE_UID, written.sop_instance_uid.as_str()),
        (tags::SERIES_INSTANCE_UID, written.series_instance_uid.as_str()),
        (tags::STUDY_INSTANCE_UID, STUDY_UID),
        (tags::SERIES_DESCRIPTION, CAPTURE_SERIES_DESCRIPTION),
        (tags::IMAGE_TYPE, "DERIVED\\SECONDARY"),
        (tags::BURNED_IN_ANNOTATION, "YES"),
        (tags::CONVERSION_TYPE, "WSD"),
        (tags::PHOTOMETRIC_INTERPRETATION, "RGB"),
        (tags::PIXEL_SPACING, "0.143\\0.143"),
        (tags::BODY_PART_EXAMINED, "CHEST"),
    ] {
        assert_eq!(string(obj, tag), expected, "{tag}");
    }
    assert!(string(obj, tags::DERIVATION_DESCRIPTION).contains("AI saliency overlay (Grad-CAM)"));
    assert_eq!(element(obj, tags::ROWS).to_int::<u16>().unwrap(), overlay.height);
    assert_eq!(element(obj, tags::COLUMNS).to_int::<u16>().unwrap(), overlay.width);
    assert_eq!(element(obj, tags::SAMPLES_PER_PIXEL).to_int::<u16>().unwrap(), 3);
    let pixels = element(obj, tags::PIXEL_DATA).value().to_bytes().unwrap();
    // 45 bytes of RGB, padded to even length with one zero.
    assert_eq!(&pixels[..overlay.rgb.len()], overlay.rgb.as_slice());
    assert_eq!(pixels.len(), overlay.rgb.len() + 1);
    assert_eq!(pixels[overlay.rgb.len()], 0);
    let source = &items(obj, tags::SOURCE_IMAGE_SEQUENCE)[0];
    assert_eq!(string(source, tags::REFERENCED_SOP_INSTANCE_UID), SOURCE_UID);
    assert_eq!(string(&items(source, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE)[0], tags::CODE_VALUE), "121322");
}

#[test]
fn non_ascii_names_and_text_survive_as_utf8() {
    let mut report = report();
    report.study.patient_name = Some("Müller^Zoë=ミュラー^ゾエ".into());
    report.findings[0].label = "pneumothorax (Pneumothorax, rechts)".into();
    let file = parse(&write_measurement_report(&report, None).unwrap().bytes);
    assert_eq!(string(&file, tags::PATIENT_NAME), "Müller^Zoë=ミュラー^ゾエ");
}
