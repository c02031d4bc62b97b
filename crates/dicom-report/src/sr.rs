//! The AI result as a Comprehensive SR (1.2.840.10008.5.1.4.1.1.88.33) following TID 1500
//! Measurement Report, in a new SR series of the source study.
//!
//! The content tree (PS3.16 TID 1500 rows in brackets):
//!
//! ```text
//! CONTAINER (126000, DCM, "Imaging Measurement Report")            TID 1500 root
//!   HAS CONCEPT MOD  CODE Language = en-US                         [1] TID 1204
//!   HAS OBS CONTEXT  Observer Type = Device, Device Observer UID,  [3] TID 1001/1002/1004
//!                    Name, Manufacturer, Model Name
//!   HAS CONCEPT MOD  CODE Procedure reported                       [4]
//!   CONTAINS CONTAINER Image Library                               [5] TID 1600
//!     CONTAINS CONTAINER Image Library Group (one per series)         TID 1601
//!       CONTAINS IMAGE Source (each source instance)
//!   CONTAINS CONTAINER Imaging Measurements                        [6]
//!     CONTAINS CONTAINER Measurement Group (one per finding)       [9] TID 1501
//!       HAS OBS CONTEXT  TEXT Tracking Identifier = label, UIDREF Tracking Unique Identifier
//!       CONTAINS         CODE Finding = the finding's code
//!       HAS CONCEPT MOD  TEXT Algorithm Name/Version/Manufacturer/Parameters   TID 4019
//!       CONTAINS         NUM Probability, NUM Threshold Value (UCUM "1")        TID 300
//!       CONTAINS         CODE <finding code> = Present | Absent (the model's call)
//!   CONTAINS CONTAINER Qualitative Evaluations                     [12]
//!     CONTAINS TEXT Comment = "AI-generated, not a diagnosis ..."
//!   CONTAINS CONTAINER AI result (99RADSIGHT)                      extension
//!     result id, result URL, saliency method, faithfulness metric and value
//!   CONTAINS CONTAINER Audit log inclusion receipt (99RADSIGHT)    extension (receipt.rs)
//! ```
//!
//! TID 1500 is extensible, so the two radsight containers at the end are allowed; readers that
//! know only TID 1500 skip them.

use std::collections::BTreeMap;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::codes;
use crate::common::{
    NOT_A_DIAGNOSIS, check_common, check_source_image, put_equipment, put_patient_and_study, put_series, put_sop_common, to_part10,
};
use crate::content::{ContentItem, Relationship, put_seq, put_str, sop_reference};
use crate::error::{ObjectKind, WriteError};
use crate::model::{Finding, Report, SourceImage, WrittenObject};
use crate::receipt::{check_receipt, receipt_container};
use crate::uid::{UidKind, UidRoot, derive_device_uid, derive_uid};
use crate::values::{Check, TextVr};

/// Comprehensive SR Storage.
pub const COMPREHENSIVE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";
/// Series Number of the SR series. Fixed so a resend is the same series in every respect.
pub const REPORT_SERIES_NUMBER: u32 = 9901;
pub const REPORT_SERIES_DESCRIPTION: &str = "radsight AI findings (not a diagnosis)";

/// Writes the result as a TID 1500 Measurement Report in a Comprehensive SR Part 10 file.
///
/// UIDs come from `root` (or the `2.25.` form when `None`) and `report.result_id`, so the same
/// report always gives the same bytes and UIDs.
pub fn write_measurement_report(report: &Report, root: Option<&UidRoot>) -> Result<WrittenObject, WriteError> {
    let check = Check { object: ObjectKind::MeasurementReport };
    check_report(&check, report)?;

    let series_uid = derive_uid(root, &report.result_id, UidKind::ReportSeries);
    let instance_uid = derive_uid(root, &report.result_id, UidKind::ReportInstance);

    let mut obj = InMemDicomObject::new_empty();
    put_sop_common(&mut obj, COMPREHENSIVE_SR, &instance_uid, &report.observed_at);
    put_private_scheme(&mut obj);
    put_patient_and_study(&mut obj, &report.study);
    // SR Document Series Module (C.17.1).
    put_series(&mut obj, "SR", &series_uid, REPORT_SERIES_NUMBER, REPORT_SERIES_DESCRIPTION, &report.observed_at);
    put_seq(&mut obj, tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, Vec::new());
    put_equipment(&mut obj, &report.algorithm);
    // SR Document General Module (C.17.2): the algorithm's output is complete, and no person has
    // verified it.
    put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
    put_str(&mut obj, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    put_str(&mut obj, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    put_str(&mut obj, tags::CONTENT_DATE, VR::DA, report.observed_at.date.as_str());
    put_str(&mut obj, tags::CONTENT_TIME, VR::TM, report.observed_at.time.as_str());
    put_seq(&mut obj, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, Vec::new());
    put_seq(
        &mut obj,
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![evidence(&report.study.study_instance_uid, &report.source_images)],
    );
    // SR Document Content Module (C.17.3).
    measurement_report(report, root).write_root(&mut obj);

    let bytes = to_part10(obj, ObjectKind::MeasurementReport)?;
    Ok(WrittenObject { bytes, sop_class_uid: COMPREHENSIVE_SR, sop_instance_uid: instance_uid, series_instance_uid: series_uid })
}

fn check_report(check: &Check, report: &Report) -> Result<(), WriteError> {
    check_common(check, report)?;
    // TID 1500 requires the Image Library [5] and at least one measurement group in [6] for
    // this use; an empty result is not a report.
    if report.source_images.is_empty() {
        return Err(check.fail("source_images", "is empty; the Image Library needs at least one image"));
    }
    for (i, image) in report.source_images.iter().enumerate() {
        check_source_image(check, &format!("source_images[{i}]"), image)?;
    }
    if report.findings.is_empty() {
        return Err(check.fail("findings", "is empty; Imaging Measurements needs at least one group"));
    }
    for (i, finding) in report.findings.iter().enumerate() {
        let field = format!("findings[{i}]");
        check.non_empty_text(&format!("{field}.label"), &finding.label, TextVr::Ut)?;
        check.code(&format!("{field}.code"), &finding.code)?;
        check.unit_interval(&format!("{field}.probability"), finding.probability)?;
        check.unit_interval(&format!("{field}.threshold"), finding.threshold)?;
    }
    if let Some(procedure) = &report.procedure_reported {
        check.code("procedure_reported", procedure)?;
    }
    if let Some(saliency) = &report.saliency {
        check.non_empty_text("saliency.method", &saliency.method, TextVr::Ut)?;
        check.non_empty_text("saliency.faithfulness_metric_name", &saliency.faithfulness_metric_name, TextVr::Ut)?;
        check.finite("saliency.faithfulness_value", saliency.faithfulness_value)?;
    }
    if let Some(url) = &report.result_url {
        check.non_empty_text("result_url", url, TextVr::Ut)?;
    }
    if let Some(receipt) = &report.receipt {
        check_receipt(check, receipt)?;
    }
    Ok(())
}

/// Coding Scheme Identification Sequence (C.12.1): declares the private scheme (PS3.16 §8.2).
fn put_private_scheme(obj: &mut InMemDicomObject) {
    let mut item = InMemDicomObject::new_empty();
    put_str(&mut item, tags::CODING_SCHEME_DESIGNATOR, VR::SH, codes::PRIVATE_SCHEME);
    put_str(&mut item, tags::CODING_SCHEME_NAME, VR::ST, codes::PRIVATE_SCHEME_NAME);
    put_str(&mut item, tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION, VR::ST, codes::PRIVATE_SCHEME_ORGANIZATION);
    put_seq(obj, tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE, vec![item]);
}

/// The source instances grouped by series, in their first-seen order (a stable order keeps the
/// bytes deterministic).
fn by_series(images: &[SourceImage]) -> Vec<(&str, Vec<&SourceImage>)> {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: BTreeMap<&str, Vec<&SourceImage>> = BTreeMap::new();
    for image in images {
        let series = image.series_instance_uid.as_str();
        if !groups.contains_key(series) {
            order.push(series);
        }
        let group = groups.entry(series).or_default();
        if !group.iter().any(|i| i.sop_instance_uid == image.sop_instance_uid) {
            group.push(image);
        }
    }
    order.into_iter().map(|s| (s, groups.remove(s).unwrap_or_default())).collect()
}

/// A Hierarchical SOP Instance Reference Macro item (Table C.17-3) for the evidence sequence.
fn evidence(study_uid: &str, images: &[SourceImage]) -> InMemDicomObject {
    let mut study = InMemDicomObject::new_empty();
    put_str(&mut study, tags::STUDY_INSTANCE_UID, VR::UI, study_uid);
    let series_items = by_series(images)
        .into_iter()
        .map(|(series_uid, images)| {
            let mut series = InMemDicomObject::new_empty();
            put_str(&mut series, tags::SERIES_INSTANCE_UID, VR::UI, series_uid);
            put_seq(
                &mut series,
                tags::REFERENCED_SOP_SEQUENCE,
                images.iter().map(|i| sop_reference(&i.sop_class_uid, &i.sop_instance_uid)).collect(),
            );
            series
        })
        .collect();
    put_seq(&mut study, tags::REFERENCED_SERIES_SEQUENCE, series_items);
    study
}

/// The TID 1500 content tree (see the module doc).
fn measurement_report(report: &Report, root: Option<&UidRoot>) -> ContentItem {
    use Relationship::{Contains, HasConceptMod, HasObsContext};
    let algorithm = &report.algorithm;
    let device_uid = derive_device_uid(root, &algorithm.model_id, &algorithm.model_version);

    let mut children = vec![
        ContentItem::code(HasConceptMod, codes::language_of_content(), codes::english_us()),
        ContentItem::code(HasObsContext, codes::observer_type(), codes::device()),
        ContentItem::uid_ref(HasObsContext, codes::device_observer_uid(), device_uid.as_str()),
        ContentItem::text(HasObsContext, codes::device_observer_name(), &format!("{} {}", algorithm.manufacturer, algorithm.model_id)),
        ContentItem::text(HasObsContext, codes::device_observer_manufacturer(), &algorithm.manufacturer),
        ContentItem::text(HasObsContext, codes::device_observer_model_name(), &algorithm.model_id),
        ContentItem::code(
            HasConceptMod,
            codes::procedure_reported(),
            report.procedure_reported.clone().unwrap_or_else(codes::imaging_procedure),
        ),
        image_library(&report.source_images),
        ContentItem::container(
            Contains,
            codes::imaging_measurements(),
            report.findings.iter().enumerate().map(|(i, finding)| measurement_group(report, root, i, finding)).collect(),
        ),
        ContentItem::container(
            Contains,
            codes::qualitative_evaluations(),
            vec![ContentItem::text(Contains, codes::comment(), &disclaimer(report))],
        ),
        result_container(report),
    ];
    if let Some(receipt) = &report.receipt {
        children.push(receipt_container(receipt));
    }
    ContentItem::container(Contains, codes::imaging_measurement_report(), children).with_template("1500")
}

/// TID 1600 Image Library: one Image Library Group (TID 1601) per source series.
fn image_library(images: &[SourceImage]) -> ContentItem {
    let groups = by_series(images)
        .into_iter()
        .map(|(_, images)| {
            let entries = images
                .iter()
                .map(|i| ContentItem::image(Relationship::Contains, codes::source(), &i.sop_class_uid, &i.sop_instance_uid))
                .collect();
            ContentItem::container(Relationship::Contains, codes::image_library_group(), entries)
        })
        .collect();
    ContentItem::container(Relationship::Contains, codes::image_library(), groups)
}

/// TID 1501 Measurement and Qualitative Evaluation Group for one finding.
fn measurement_group(report: &Report, root: Option<&UidRoot>, index: usize, finding: &Finding) -> ContentItem {
    use Relationship::{Contains, HasConceptMod, HasObsContext};
    let algorithm = &report.algorithm;
    let tracking_uid = derive_uid(root, &report.result_id, UidKind::FindingTracking(index));
    let call = if finding.positive { codes::present() } else { codes::absent() };
    let children = vec![
        ContentItem::text(HasObsContext, codes::tracking_identifier(), &finding.label),
        ContentItem::uid_ref(HasObsContext, codes::tracking_unique_identifier(), tracking_uid.as_str()),
        ContentItem::code(Contains, codes::finding(), finding.code.clone()),
        // TID 4019 Algorithm Identification (TID 1501 row 8).
        ContentItem::text(HasConceptMod, codes::algorithm_name(), &algorithm.model_id),
        ContentItem::text(HasConceptMod, codes::algorithm_version(), &algorithm.model_version),
        ContentItem::text(HasConceptMod, codes::algorithm_manufacturer(), &algorithm.manufacturer),
        ContentItem::text(HasConceptMod, codes::algorithm_parameters(), &format!("weights_sha256={}", algorithm.weights_sha256_hex)),
        ContentItem::num(Contains, codes::probability(), finding.probability, codes::no_units()),
        ContentItem::num(Contains, codes::threshold_value(), finding.threshold, codes::no_units()),
        // The model's call as a coded qualitative evaluation: "<finding> = Present/Absent".
        ContentItem::code(Contains, finding.code.clone(), call),
    ];
    ContentItem::container(Contains, codes::measurement_group(), children).with_template("1501")
}

fn disclaimer(report: &Report) -> String {
    format!(
        "{NOT_A_DIAGNOSIS}. These findings were produced by the {} model {} version {} and have not been \
         verified by a person; a qualified clinician must review the images.",
        report.algorithm.manufacturer, report.algorithm.model_id, report.algorithm.model_version
    )
}

/// radsight's own container: the result's identity and its explanation's faithfulness.
fn result_container(report: &Report) -> ContentItem {
    use Relationship::Contains;
    let mut children = vec![ContentItem::text(Contains, codes::result_identifier(), &report.result_id)];
    if let Some(url) = &report.result_url {
        children.push(ContentItem::text(Contains, codes::result_url(), url));
    }
    if let Some(saliency) = &report.saliency {
        children.push(ContentItem::text(Contains, codes::saliency_method(), &saliency.method));
        children.push(ContentItem::text(Contains, codes::faithfulness_metric(), &saliency.faithfulness_metric_name));
        children.push(ContentItem::num(Contains, codes::faithfulness_value(), saliency.faithfulness_value, codes::no_units()));
    }
    ContentItem::container(Contains, codes::ai_result(), children)
}
