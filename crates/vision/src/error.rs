//! The crate's error type. Variants name the failed action and carry their context; none
//! carries pixel data or patient information.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing model card {path}: {reason}")]
    ParseCard { path: PathBuf, reason: String },
    #[error("model {model}: weights SHA-256 mismatch (card says {expected}, file has {actual}); refusing to load")]
    WeightsHashMismatch { model: String, expected: String, actual: String },
    #[error("model {model}: loading weights")]
    LoadWeights {
        model: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("model {id} not found in the registry")]
    ModelNotFound { id: String },
    #[error("two model folders declare the id {id}")]
    DuplicateModel { id: String },
    #[error("invalid image: {reason}")]
    InvalidImage { reason: String },
    #[error("image is {width}x{height}, model expects {expected}x{expected}")]
    InputSize { expected: usize, width: usize, height: usize },
    #[error("unknown label {label}")]
    UnknownLabel { label: String },
    #[error("{reason}")]
    Unsupported { reason: String },
    #[error("encoding PNG")]
    EncodePng(#[source] png::EncodingError),
    #[error("tensor computation")]
    Tensor(#[from] candle_core::Error),
}
