//! The modules the SR and the Secondary Capture share, and writing a data set as a Part 10 file.
//!
//! Patient (PS3.3 C.7.1.1), General Study (C.7.2.1), General Equipment (C.7.5.1) and SOP Common
//! (C.12.1) carry the same values in both objects, so the PACS files both under the source study.

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::content::{put_opt_str, put_str};
use crate::error::{ObjectKind, WriteError};
use crate::model::{Algorithm, DicomDateTime, Report, SourceImage, StudyRef};
use crate::uid::{Uid, implementation_class_uid};
use crate::values::{Check, TextVr};

/// Explicit VR Little Endian: every PACS accepts it, and it is what the brief asks for.
const TRANSFER_SYNTAX: &str = "1.2.840.10008.1.2.1";
/// Implementation Version Name (0002,0013), SH.
const IMPLEMENTATION_VERSION_NAME: &str = "RADSIGHT_REPORT1";
/// Shown wherever a person may read the object, so nobody takes it for a radiologist's report.
pub(crate) const NOT_A_DIAGNOSIS: &str = "AI-generated, not a diagnosis";

/// Checks what every object takes from the report: the study, the algorithm and the result id.
pub(crate) fn check_common(check: &Check, report: &Report) -> Result<(), WriteError> {
    check_study(check, &report.study)?;
    check_algorithm(check, &report.algorithm)?;
    check.non_empty_text("result_id", &report.result_id, TextVr::Ut)
}

fn check_study(check: &Check, study: &StudyRef) -> Result<(), WriteError> {
    check.uid("study.study_instance_uid", &study.study_instance_uid)?;
    check.non_empty_text("study.patient_id", &study.patient_id, TextVr::Lo)?;
    let optional = [
        ("study.patient_name", study.patient_name.as_deref(), TextVr::Pn),
        ("study.referring_physician_name", study.referring_physician_name.as_deref(), TextVr::Pn),
        ("study.accession_number", study.accession_number.as_deref(), TextVr::Sh),
        ("study.study_id", study.study_id.as_deref(), TextVr::Sh),
    ];
    for (field, value, vr) in optional {
        if let Some(value) = value {
            check.text(field, value, vr)?;
        }
    }
    Ok(())
}

fn check_algorithm(check: &Check, algorithm: &Algorithm) -> Result<(), WriteError> {
    // They are written as Manufacturer (LO), Manufacturer's Model Name (LO) and Software
    // Versions (LO) as well as in the SR's TEXT items, so the LO limits apply.
    check.non_empty_text("algorithm.model_id", &algorithm.model_id, TextVr::Lo)?;
    check.non_empty_text("algorithm.model_version", &algorithm.model_version, TextVr::Lo)?;
    check.non_empty_text("algorithm.manufacturer", &algorithm.manufacturer, TextVr::Lo)?;
    let hex = &algorithm.weights_sha256_hex;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(check.fail("algorithm.weights_sha256_hex", "is not 64 lowercase hex digits"));
    }
    Ok(())
}

pub(crate) fn check_source_image(check: &Check, field: &str, image: &SourceImage) -> Result<(), WriteError> {
    check.uid(&format!("{field}.sop_class_uid"), &image.sop_class_uid)?;
    check.uid(&format!("{field}.sop_instance_uid"), &image.sop_instance_uid)?;
    check.uid(&format!("{field}.series_instance_uid"), &image.series_instance_uid)?;
    Ok(())
}

/// SOP Common Module (C.12.1), without the Coding Scheme Identification Sequence (the SR adds it).
pub(crate) fn put_sop_common(obj: &mut InMemDicomObject, sop_class_uid: &str, sop_instance_uid: &Uid, created: &DicomDateTime) {
    // UTF-8: names and free text may be in any script (PS3.3 C.12.1.1.2).
    put_str(obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put_str(obj, tags::SOP_CLASS_UID, VR::UI, sop_class_uid);
    put_str(obj, tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid.as_str());
    put_str(obj, tags::INSTANCE_CREATION_DATE, VR::DA, created.date.as_str());
    put_str(obj, tags::INSTANCE_CREATION_TIME, VR::TM, created.time.as_str());
}

/// Patient Module (C.7.1.1) and General Study Module (C.7.2.1); Type 2 attributes are written
/// empty when unknown.
pub(crate) fn put_patient_and_study(obj: &mut InMemDicomObject, study: &StudyRef) {
    put_opt_str(obj, tags::PATIENT_NAME, VR::PN, study.patient_name.as_deref());
    put_str(obj, tags::PATIENT_ID, VR::LO, &study.patient_id);
    put_opt_str(obj, tags::PATIENT_BIRTH_DATE, VR::DA, study.patient_birth_date.as_ref().map(|d| d.as_str()));
    put_opt_str(obj, tags::PATIENT_SEX, VR::CS, study.patient_sex.map(|s| s.code()));
    put_str(obj, tags::STUDY_INSTANCE_UID, VR::UI, &study.study_instance_uid);
    put_opt_str(obj, tags::STUDY_DATE, VR::DA, study.study_date.as_ref().map(|d| d.as_str()));
    put_opt_str(obj, tags::STUDY_TIME, VR::TM, study.study_time.as_ref().map(|t| t.as_str()));
    put_opt_str(obj, tags::REFERRING_PHYSICIAN_NAME, VR::PN, study.referring_physician_name.as_deref());
    put_opt_str(obj, tags::STUDY_ID, VR::SH, study.study_id.as_deref());
    put_opt_str(obj, tags::ACCESSION_NUMBER, VR::SH, study.accession_number.as_deref());
}

/// The series attributes both series share: a new series in the source study, made when the
/// result was.
pub(crate) fn put_series(obj: &mut InMemDicomObject, modality: &str, series_uid: &Uid, number: u32, description: &str, at: &DicomDateTime) {
    put_str(obj, tags::MODALITY, VR::CS, modality);
    put_str(obj, tags::SERIES_INSTANCE_UID, VR::UI, series_uid.as_str());
    put_str(obj, tags::SERIES_NUMBER, VR::IS, &number.to_string());
    put_str(obj, tags::SERIES_DESCRIPTION, VR::LO, description);
    put_str(obj, tags::SERIES_DATE, VR::DA, at.date.as_str());
    put_str(obj, tags::SERIES_TIME, VR::TM, at.time.as_str());
}

/// General Equipment Module (C.7.5.1): the algorithm is the equipment that made the object.
pub(crate) fn put_equipment(obj: &mut InMemDicomObject, algorithm: &Algorithm) {
    put_str(obj, tags::MANUFACTURER, VR::LO, &algorithm.manufacturer);
    put_str(obj, tags::MANUFACTURER_MODEL_NAME, VR::LO, &algorithm.model_id);
    put_str(obj, tags::SOFTWARE_VERSIONS, VR::LO, &algorithm.model_version);
}

/// The data set as a Part 10 file: preamble, `DICM`, file meta group, Explicit VR Little Endian.
pub(crate) fn to_part10(obj: InMemDicomObject, object: ObjectKind) -> Result<Vec<u8>, WriteError> {
    let implementation_uid = implementation_class_uid();
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(TRANSFER_SYNTAX)
        .implementation_class_uid(implementation_uid.as_str())
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    // with_meta fills Media Storage SOP Class/Instance UID from the data set.
    let file = obj.with_meta(meta).map_err(|source| WriteError::BuildFileMeta { object, source: Box::new(source) })?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).map_err(|source| WriteError::EncodePart10 { object, source: Box::new(source) })?;
    Ok(bytes)
}
