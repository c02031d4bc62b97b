//! Errors of this crate, each named after the action that failed.
//!
//! No variant carries a value from the input: patient names, ids and report text are PHI, and
//! these errors end up in logs. A field path (`findings[2].code.meaning`) says where instead.

/// Why a UID or UID root was refused (PS3.5 §9.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidRootError {
    #[error("the UID is empty")]
    Empty,
    #[error("the UID is {len} characters long, more than {max}")]
    TooLong { len: usize, max: usize },
    #[error("a UID component is empty or not all digits")]
    BadComponent,
    #[error("a UID component has a leading zero")]
    LeadingZero,
}

/// Which object was being written when writing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    MeasurementReport,
    SaliencyCapture,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::MeasurementReport => "measurement report SR",
            ObjectKind::SaliencyCapture => "saliency secondary capture",
        })
    }
}

/// Why an object could not be written. dicom-rs's errors are boxed: they are large, and this
/// error travels in every `Result` of the crate.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The input breaks a DICOM constraint (a VR's length or character set, a range).
    #[error("check the input for the {object}: {field}: {problem}")]
    CheckInput { object: ObjectKind, field: String, problem: String },
    #[error("build the file meta group of the {object}")]
    BuildFileMeta {
        object: ObjectKind,
        #[source]
        source: Box<dicom_object::WithMetaError>,
    },
    #[error("encode the {object} as a Part 10 file")]
    EncodePart10 {
        object: ObjectKind,
        #[source]
        source: Box<dicom_object::WriteError>,
    },
}
