//! DICOM objects for one stored radsight AI result, to go back to the PACS by STOW-RS.
//!
//! - `write_measurement_report`: a Comprehensive SR following TID 1500 Measurement Report, with
//!   each finding as a TID 1501 group (coded Present/Absent, probability and threshold, TID 4019
//!   algorithm identification), the saliency method and its faithfulness, and the audit-log
//!   inclusion receipt as readable text.
//! - `write_saliency_capture`: the saliency overlay as an RGB Secondary Capture image.
//!
//! A pure library: plain typed input (`model`), Part 10 bytes out, no I/O, no clock. UIDs are
//! derived from the result id (`uid`), so a retry writes byte-identical objects with the same
//! SOP Instance and Series Instance UIDs. The service's outbox sends the bytes.
//!
//! **Boundary:** this crate knows DICOM and the result's values, nothing of FHIR, HL7, the
//! database or HTTP. Every string is checked against its value representation before writing
//! (`WriteError::CheckInput` names the field, never the value: the input holds PHI).

mod capture;
mod codes;
mod common;
mod content;
mod error;
mod model;
mod receipt;
mod sr;
mod uid;
mod values;

pub use capture::{CAPTURE_SERIES_DESCRIPTION, CAPTURE_SERIES_NUMBER, SECONDARY_CAPTURE, write_saliency_capture};
pub use codes::PRIVATE_SCHEME;
pub use error::{ObjectKind, UidRootError, WriteError};
pub use model::{
    Algorithm, Anatomy, Code, DateTimeError, DicomDate, DicomDateTime, DicomTime, Finding, Laterality, OverlayImage, PatientSex,
    PixelSpacing, Receipt, Report, Saliency, SourceImage, StudyRef, WrittenObject,
};
pub use sr::{COMPREHENSIVE_SR, REPORT_SERIES_DESCRIPTION, REPORT_SERIES_NUMBER, write_measurement_report};
pub use uid::{MAX_ROOT_LEN, Uid, UidKind, UidRoot, derive_device_uid, derive_uid};
