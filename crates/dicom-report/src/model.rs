//! The input: one stored AI result as plain typed values, with no DICOM encoding in it.
//!
//! The service fills these from its result store. Strings are taken as they are and checked
//! against their DICOM value representation when an object is written (`WriteError::CheckInput`
//! names the field); dates and times are parsed up front because every object needs them.

use crate::uid::Uid;

/// One stored AI result and what it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub study: StudyRef,
    /// The instances the model read; the SR's Image Library (TID 1600) and evidence list them.
    pub source_images: Vec<SourceImage>,
    pub algorithm: Algorithm,
    pub findings: Vec<Finding>,
    pub saliency: Option<Saliency>,
    /// radsight's id for the result: the UIDs are derived from it, so a retry reuses them.
    pub result_id: String,
    /// Where a person can see the result in radsight (optional).
    pub result_url: Option<String>,
    /// When the model produced the result: Content Date/Time, Series and Instance Creation
    /// Date/Time. No wall clock is read here, so the same input gives the same bytes.
    pub observed_at: DicomDateTime,
    /// Procedure reported (121058, DCM), TID 1500 row 4. `None` writes (363679005, SCT, "Imaging procedure").
    pub procedure_reported: Option<Code>,
    /// The audit-log inclusion receipt of the result's entry, when it is known.
    pub receipt: Option<Receipt>,
}

/// The study the result belongs to; the new series go into it.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyRef {
    pub study_instance_uid: String,
    pub patient_id: String,
    /// DICOM PN form, `Family^Given^Middle^Prefix^Suffix`.
    pub patient_name: Option<String>,
    pub patient_birth_date: Option<DicomDate>,
    pub patient_sex: Option<PatientSex>,
    pub accession_number: Option<String>,
    pub study_id: Option<String>,
    pub study_date: Option<DicomDate>,
    pub study_time: Option<DicomTime>,
    /// DICOM PN form.
    pub referring_physician_name: Option<String>,
}

/// Patient's Sex (0010,0040) enumerated values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatientSex {
    Male,
    Female,
    Other,
}

impl PatientSex {
    pub(crate) fn code(self) -> &'static str {
        match self {
            PatientSex::Male => "M",
            PatientSex::Female => "F",
            PatientSex::Other => "O",
        }
    }
}

/// One instance the model read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceImage {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
}

/// The model that made the result (TID 4019 Algorithm Identification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Algorithm {
    pub model_id: String,
    pub model_version: String,
    /// SHA-256 of the weights file, lowercase hex (64 characters).
    pub weights_sha256_hex: String,
    /// Manufacturer of the equipment and the algorithm, e.g. "radsight".
    pub manufacturer: String,
}

/// A coded concept: (value, scheme designator, meaning), as in PS3.3 §8.8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub value: String,
    /// Coding Scheme Designator, e.g. "SCT", "RADLEX", "DCM".
    pub scheme: String,
    pub meaning: String,
}

impl Code {
    pub fn new(value: &str, scheme: &str, meaning: &str) -> Self {
        Self { value: value.into(), scheme: scheme.into(), meaning: meaning.into() }
    }
}

/// One finding the model scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// A short human label, written as the Tracking Identifier (112039, DCM) of its group.
    pub label: String,
    pub code: Code,
    /// Calibrated probability in [0, 1].
    pub probability: f64,
    /// Operating threshold in [0, 1]; `positive` is the model's call against it.
    pub threshold: f64,
    pub positive: bool,
}

/// The explanation shown with the result, and how faithful it measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Saliency {
    /// e.g. "Grad-CAM".
    pub method: String,
    /// e.g. "deletion AUC (lower is better)".
    pub faithfulness_metric_name: String,
    pub faithfulness_value: f64,
}

/// An RFC 9162 inclusion receipt for the result's audit-log entry, as a third party checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub leaf_index: u64,
    pub tree_size: u64,
    /// The exact logged leaf bytes, base64.
    pub entry_base64: String,
    /// The inclusion proof hashes, base64, in RFC 9162 order.
    pub proof_base64: Vec<String>,
    /// The C2SP signed note of the checkpoint, multi-line, verbatim.
    pub checkpoint: String,
    pub log_origin: String,
}

/// The saliency overlay as people see it: 8-bit RGB, interleaved, row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayImage {
    pub width: u16,
    pub height: u16,
    /// `width * height * 3` bytes, R G B per pixel.
    pub rgb: Vec<u8>,
    /// Pixel Spacing in mm when the overlay keeps the source's geometry.
    pub pixel_spacing_mm: Option<PixelSpacing>,
    /// The instance the overlay is drawn on (Source Image Sequence).
    pub source: SourceImage,
    /// The source image's anatomy, copied into the overlay series. Without it Laterality is sent
    /// empty (General Series, Type 2C), which validators flag as a warning.
    pub anatomy: Option<Anatomy>,
}

/// Body Part Examined (0018,0015) and, for a paired body part, Laterality (0020,0060).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anatomy {
    /// A PS3.16 Annex L defined term, e.g. "CHEST", "BREAST" (CS, 16 characters).
    pub body_part_examined: String,
    /// `None` for an unpaired body part.
    pub laterality: Option<Laterality>,
}

/// Laterality (0020,0060) enumerated values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Laterality {
    Right,
    Left,
}

impl Laterality {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Laterality::Right => "R",
            Laterality::Left => "L",
        }
    }
}

/// Pixel Spacing (0028,0030): row spacing (between rows), then column spacing, in mm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelSpacing {
    pub row_mm: f64,
    pub column_mm: f64,
}

/// A DICOM DA value, `YYYYMMDD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomDate(String);

impl DicomDate {
    pub fn parse(value: &str) -> Result<Self, DateTimeError> {
        let b = value.as_bytes();
        if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
            return Err(DateTimeError::DateNotYyyyMmDd);
        }
        let month: u32 = value[4..6].parse().map_err(|_| DateTimeError::DateNotYyyyMmDd)?;
        let day: u32 = value[6..8].parse().map_err(|_| DateTimeError::DateNotYyyyMmDd)?;
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
            return Err(DateTimeError::DateOutOfRange);
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A DICOM TM value, `HHMMSS` with an optional fraction of up to 6 digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomTime(String);

impl DicomTime {
    pub fn parse(value: &str) -> Result<Self, DateTimeError> {
        let (whole, fraction) = match value.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (value, None),
        };
        if whole.len() != 6 || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DateTimeError::TimeNotHhMmSs);
        }
        if let Some(f) = fraction
            && (f.is_empty() || f.len() > 6 || !f.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(DateTimeError::TimeNotHhMmSs);
        }
        let field = |r: std::ops::Range<usize>| whole[r].parse::<u32>().map_err(|_| DateTimeError::TimeNotHhMmSs);
        // PS3.5 §6.2 TM allows 60 seconds for a leap second.
        if field(0..2)? > 23 || field(2..4)? > 59 || field(4..6)? > 60 {
            return Err(DateTimeError::TimeOutOfRange);
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A moment as DICOM writes it in a Date and a Time attribute pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomDateTime {
    pub date: DicomDate,
    pub time: DicomTime,
}

impl DicomDateTime {
    pub fn parse(date: &str, time: &str) -> Result<Self, DateTimeError> {
        Ok(Self { date: DicomDate::parse(date)?, time: DicomTime::parse(time)? })
    }
}

/// Why a DICOM date or time was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateTimeError {
    #[error("a date must be YYYYMMDD")]
    DateNotYyyyMmDd,
    #[error("a date's month or day is out of range")]
    DateOutOfRange,
    #[error("a time must be HHMMSS with an optional fraction of 1 to 6 digits")]
    TimeNotHhMmSs,
    #[error("a time's hour, minute or second is out of range")]
    TimeOutOfRange,
}

/// What was written: the Part 10 bytes and the UIDs that name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenObject {
    /// A complete Part 10 file (preamble, `DICM`, file meta group, Explicit VR Little Endian data set).
    pub bytes: Vec<u8>,
    pub sop_class_uid: &'static str,
    pub sop_instance_uid: Uid,
    pub series_instance_uid: Uid,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_are_checked() {
        assert!(DicomDate::parse("20240229").is_ok());
        assert_eq!(DicomDate::parse("2024-02-29"), Err(DateTimeError::DateNotYyyyMmDd));
        assert_eq!(DicomDate::parse("20241301"), Err(DateTimeError::DateOutOfRange));
        assert!(DicomTime::parse("235960").is_ok());
        assert!(DicomTime::parse("120000.123456").is_ok());
        assert_eq!(DicomTime::parse("1200"), Err(DateTimeError::TimeNotHhMmSs));
        assert_eq!(DicomTime::parse("120000."), Err(DateTimeError::TimeNotHhMmSs));
        assert_eq!(DicomTime::parse("120000.1234567"), Err(DateTimeError::TimeNotHhMmSs));
        assert_eq!(DicomTime::parse("246000"), Err(DateTimeError::TimeOutOfRange));
    }
}
