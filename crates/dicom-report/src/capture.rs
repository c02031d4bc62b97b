//! The saliency overlay as a Secondary Capture Image (1.2.840.10008.5.1.4.1.1.7): a picture for
//! people in the PACS viewer, in a new series of the source study.
//!
//! It is only a picture (STANDARDS.md: Secondary Capture only as a picture for people): the
//! colours are burned in, and the findings themselves are in the SR. Modules written, from
//! PS3.3 A.8.1: Patient, General Study, General Series, General Equipment, SC Equipment,
//! General Image, Image Pixel, SC Image, SOP Common.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::codes;
use crate::common::{
    NOT_A_DIAGNOSIS, check_common, check_source_image, put_equipment, put_patient_and_study, put_series, put_sop_common, to_part10,
};
use crate::content::{code_item, put_seq, put_str, sop_reference};
use crate::error::{ObjectKind, WriteError};
use crate::model::{OverlayImage, Report, WrittenObject};
use crate::uid::{UidKind, UidRoot, derive_uid};
use crate::values::{Check, format_ds};

/// Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
/// Series Number of the overlay series. Fixed so a resend is the same series in every respect.
pub const CAPTURE_SERIES_NUMBER: u32 = 9902;
pub const CAPTURE_SERIES_DESCRIPTION: &str = "radsight AI saliency overlay (not a diagnosis)";

/// Writes the overlay as an RGB Secondary Capture Part 10 file (Explicit VR Little Endian).
///
/// UIDs come from `root` (or the `2.25.` form) and `report.result_id`, as for the SR.
pub fn write_saliency_capture(report: &Report, overlay: &OverlayImage, root: Option<&UidRoot>) -> Result<WrittenObject, WriteError> {
    let check = Check { object: ObjectKind::SaliencyCapture };
    check_common(&check, report)?;
    check_source_image(&check, "overlay.source", &overlay.source)?;
    check_overlay(&check, overlay)?;

    let series_uid = derive_uid(root, &report.result_id, UidKind::CaptureSeries);
    let instance_uid = derive_uid(root, &report.result_id, UidKind::CaptureInstance);
    let at = &report.observed_at;

    let mut obj = InMemDicomObject::new_empty();
    put_sop_common(&mut obj, SECONDARY_CAPTURE, &instance_uid, at);
    put_patient_and_study(&mut obj, &report.study);
    // General Series (C.7.3.1): "OT", since the overlay is no acquisition of the source modality.
    put_series(&mut obj, "OT", &series_uid, CAPTURE_SERIES_NUMBER, CAPTURE_SERIES_DESCRIPTION, at);
    // Laterality is Type 2C: required (possibly empty) for a paired body part, absent otherwise.
    // Without the anatomy it is unknown, so it is sent empty.
    match &overlay.anatomy {
        Some(anatomy) => {
            put_str(&mut obj, tags::BODY_PART_EXAMINED, VR::CS, &anatomy.body_part_examined);
            if let Some(laterality) = anatomy.laterality {
                put_str(&mut obj, tags::LATERALITY, VR::CS, laterality.code());
            }
        }
        None => {
            obj.put(DataElement::new(tags::LATERALITY, VR::CS, PrimitiveValue::Empty));
        }
    }
    put_equipment(&mut obj, &report.algorithm);
    // SC Equipment (C.8.6.1): made on a workstation by the algorithm.
    put_str(&mut obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
    put_str(&mut obj, tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER, VR::LO, &report.algorithm.manufacturer);
    put_str(&mut obj, tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER_MODEL_NAME, VR::LO, &report.algorithm.model_id);
    put_str(&mut obj, tags::SECONDARY_CAPTURE_DEVICE_SOFTWARE_VERSIONS, VR::LO, &report.algorithm.model_version);
    // General Image (C.7.6.1).
    put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
    obj.put(DataElement::new(tags::PATIENT_ORIENTATION, VR::CS, PrimitiveValue::Empty));
    put_str(&mut obj, tags::CONTENT_DATE, VR::DA, at.date.as_str());
    put_str(&mut obj, tags::CONTENT_TIME, VR::TM, at.time.as_str());
    obj.put(DataElement::new(
        tags::IMAGE_TYPE,
        VR::CS,
        PrimitiveValue::Strs(["DERIVED".to_owned(), "SECONDARY".to_owned()].into_iter().collect()),
    ));
    put_str(&mut obj, tags::DERIVATION_DESCRIPTION, VR::ST, &derivation(report));
    put_str(&mut obj, tags::IMAGE_COMMENTS, VR::LT, NOT_A_DIAGNOSIS);
    // The heat map's colours and any legend are part of the pixels.
    put_str(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    let mut source = sop_reference(&overlay.source.sop_class_uid, &overlay.source.sop_instance_uid);
    put_seq(&mut source, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, vec![code_item(&codes::source_image_for_processing())]);
    put_seq(&mut obj, tags::SOURCE_IMAGE_SEQUENCE, vec![source]);
    // SC Image (C.8.6.2).
    put_str(&mut obj, tags::DATE_OF_SECONDARY_CAPTURE, VR::DA, at.date.as_str());
    put_str(&mut obj, tags::TIME_OF_SECONDARY_CAPTURE, VR::TM, at.time.as_str());
    if let Some(spacing) = overlay.pixel_spacing_mm {
        let value = [format_ds(spacing.row_mm), format_ds(spacing.column_mm)].into_iter().collect();
        obj.put(DataElement::new(tags::PIXEL_SPACING, VR::DS, PrimitiveValue::Strs(value)));
    }
    put_image_pixel(&mut obj, overlay);

    let bytes = to_part10(obj, ObjectKind::SaliencyCapture)?;
    Ok(WrittenObject { bytes, sop_class_uid: SECONDARY_CAPTURE, sop_instance_uid: instance_uid, series_instance_uid: series_uid })
}

fn check_overlay(check: &Check, overlay: &OverlayImage) -> Result<(), WriteError> {
    if overlay.width == 0 || overlay.height == 0 {
        return Err(check.fail("overlay.width/height", "is zero"));
    }
    let expected = usize::from(overlay.width) * usize::from(overlay.height) * 3;
    if overlay.rgb.len() != expected {
        return Err(check.fail("overlay.rgb", format!("has {} bytes, not width * height * 3 = {expected}", overlay.rgb.len())));
    }
    if let Some(anatomy) = &overlay.anatomy {
        let term = &anatomy.body_part_examined;
        // CS: 16 characters of upper-case letters, digits, space and underscore.
        if term.is_empty()
            || term.len() > 16
            || !term.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'_')
        {
            return Err(check.fail("overlay.anatomy.body_part_examined", "is not a code string (1 to 16 of A-Z, 0-9, space, underscore)"));
        }
    }
    if let Some(spacing) = overlay.pixel_spacing_mm {
        for (field, value) in
            [("overlay.pixel_spacing_mm.row_mm", spacing.row_mm), ("overlay.pixel_spacing_mm.column_mm", spacing.column_mm)]
        {
            if !(value.is_finite() && value > 0.0) {
                return Err(check.fail(field, "is not a positive finite number"));
            }
        }
    }
    Ok(())
}

/// Derivation Description (ST, 1024 characters): what the picture is, from which model.
fn derivation(report: &Report) -> String {
    let method = report.saliency.as_ref().map_or("saliency", |s| s.method.as_str());
    let text = format!(
        "AI saliency overlay ({method}) by {} {} version {} blended over the source image; {NOT_A_DIAGNOSIS}.",
        report.algorithm.manufacturer, report.algorithm.model_id, report.algorithm.model_version
    );
    // Input lengths are bounded (LO) except the method; keep within ST by cutting on a char boundary.
    text.chars().take(1024).collect()
}

/// Image Pixel Module (C.7.6.3): 8-bit RGB, colour-by-pixel (Planar Configuration 0).
fn put_image_pixel(obj: &mut InMemDicomObject, overlay: &OverlayImage) {
    let us = |v: u16| PrimitiveValue::from(v);
    obj.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, us(3)));
    put_str(obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
    obj.put(DataElement::new(tags::PLANAR_CONFIGURATION, VR::US, us(0)));
    obj.put(DataElement::new(tags::ROWS, VR::US, us(overlay.height)));
    obj.put(DataElement::new(tags::COLUMNS, VR::US, us(overlay.width)));
    obj.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, us(8)));
    obj.put(DataElement::new(tags::BITS_STORED, VR::US, us(8)));
    obj.put(DataElement::new(tags::HIGH_BIT, VR::US, us(7)));
    obj.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, us(0)));
    let mut pixels = overlay.rgb.clone();
    // Values have even length (PS3.5 §7.1.1); OB Pixel Data pads with one zero byte.
    if pixels.len() % 2 == 1 {
        pixels.push(0);
    }
    obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(pixels)));
}
