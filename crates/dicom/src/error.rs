//! `DecodeError`: every way [`crate::decode`] refuses its input, each with a stable `code()`.
//!
//! **Invariant:** no `Display` text carries PHI. Variants carry UIDs of transfer syntaxes, attribute
//! keywords, sizes and codec messages, never patient or study attribute values.

/// Why a DICOM object could not be decoded into pixels.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not a DICOM Part 10 stream (no `DICM` magic at 0 or 128), or the file meta
    /// group could not be read.
    #[error("could not read the DICOM file meta group: {detail}")]
    ReadFileMeta { detail: String },
    /// The transfer syntax is not one this crate decodes (see the crate docs for the list).
    #[error("unsupported transfer syntax {uid}")]
    UnsupportedTransferSyntax { uid: String },
    /// JPEG (baseline or extended) with a sample precision other than 8 bits. The codec in
    /// dicom-pixeldata 0.10 cannot decode 12-bit JPEG extended, and we do not guess.
    #[error("unsupported JPEG sample precision of {precision} bits in transfer syntax {uid}: only 8-bit JPEG is decoded")]
    UnsupportedJpegPrecision { uid: String, precision: u8 },
    /// The object has pixels, but in a form this crate refuses (photometric interpretation,
    /// bit depth, Modality LUT Sequence, ...).
    #[error("unsupported image: {reason}")]
    UnsupportedImage { reason: String },
    /// The object has no pixel data or lacks an attribute every image has.
    #[error("not an image: {reason}")]
    NotImage { reason: String },
    /// A header value exceeds a [`crate::DecodeLimits`] bound; checked before any pixel is
    /// allocated or decoded.
    #[error("image too large: {what} is {value}, the limit is {limit}")]
    TooLarge { what: &'static str, value: u64, limit: u64 },
    /// The data set could not be parsed (truncated element, bad length, bad encoding).
    #[error("could not read the DICOM data set: {detail}")]
    ReadDataSet { detail: String },
    /// An image attribute has a value that cannot be right (for example Rows 0, or
    /// NumberOfFrames not a number).
    #[error("invalid value of attribute {keyword}")]
    InvalidAttribute { keyword: &'static str },
    /// Native pixel data is shorter than Rows x Columns x Frames x Samples x BitsAllocated.
    #[error("truncated pixel data: {actual} bytes, expected at least {expected}")]
    TruncatedPixelData { expected: u64, actual: u64 },
    /// The codec rejected the compressed pixel data, or produced fewer bytes than the header
    /// announces.
    #[error("could not decode the pixel data of transfer syntax {uid}: {detail}")]
    DecodePixelData { uid: String, detail: String },
    /// The codec panicked; the panic was caught at this crate's boundary (see `decode`).
    #[error("the pixel codec for transfer syntax {uid} failed on malformed data (panic caught)")]
    CodecPanicked { uid: String },
    /// The output buffer could not be allocated. The only error that may succeed on retry.
    #[error("could not allocate {bytes} bytes for the decoded pixels")]
    Allocate { bytes: u64 },
}

impl DecodeError {
    /// A stable machine-readable code, for job results and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::UnsupportedTransferSyntax { .. } => "dicom-unsupported-transfer-syntax",
            DecodeError::UnsupportedJpegPrecision { .. } => "dicom-unsupported-jpeg-precision",
            DecodeError::UnsupportedImage { .. } => "dicom-unsupported-image",
            DecodeError::NotImage { .. } => "dicom-not-image",
            DecodeError::TooLarge { .. } => "dicom-too-large",
            DecodeError::ReadFileMeta { .. }
            | DecodeError::ReadDataSet { .. }
            | DecodeError::InvalidAttribute { .. }
            | DecodeError::TruncatedPixelData { .. }
            | DecodeError::DecodePixelData { .. }
            | DecodeError::CodecPanicked { .. } => "dicom-corrupt",
            DecodeError::Allocate { .. } => "dicom-allocation-failed",
        }
    }

    /// Whether retrying with the same bytes is pointless. Decoding is a pure function of the
    /// bytes and the limits, so every error is permanent except a failed allocation, which may
    /// succeed when the worker has more memory free.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DecodeError::Allocate { .. })
    }
}
