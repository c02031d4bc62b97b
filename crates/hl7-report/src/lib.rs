//! An HL7 v2.5.1 ORU^R01 message for one radsight AI result, to go to a RIS over MLLP.
//!
//! `write_oru_r01` turns an `OruResult` (plain owned values: the header, patient, order,
//! findings, conclusion, model, and optionally a result URL and the audit-log receipt) into
//! the message text, segments joined by `\r`, without MLLP framing. `escape` is the HL7
//! escaping every text field goes through.
//!
//! A pure library: no I/O, no clock, no randomness. The same input gives the same bytes, so the
//! outbox can store the message and a resend is identical (same MSH-10).
//!
//! **Boundary:** this crate knows HL7 v2 and the result's values, nothing of MLLP, ACKs, the
//! database or HTTP; the service's outbox sends the text and reads the ACK. Input that would
//! make a wrong message is refused with `WriteError::CheckInput`, which names the field and
//! never quotes the value (the input holds PHI).
//!
//! The message, segment by segment, and why each choice was made, is in `write`.

#![warn(missing_docs)]

mod error;
mod escape;
mod model;
mod write;

pub use error::{Problem, WriteError};
pub use escape::escape;
pub use model::{Code, Finding, Header, ModelIdentity, Order, OruResult, Patient, PersonName, ResultStatus};
pub use write::{
    AI_ANALYSIS, CONCLUSION, DICOM_STUDY, MAX_CONTROL_ID_LEN, MODEL_IDENTITY, PRIVATE_SYSTEM, RECEIPT, RESULT_URL, write_oru_r01,
};
