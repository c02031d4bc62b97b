//! Why a message could not be written.
//!
//! No variant carries a value from the input: patient ids, names and report text are PHI, and
//! these errors end up in logs. A field path (`findings[2].probability`) says where instead.

/// What is wrong with an input field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The field is empty (or `Some` of an empty string, which should be `None`).
    Empty,
    /// The field is longer than HL7 v2.5.1 allows there.
    TooLong {
        /// The length as written (after escaping, or base64 for the receipt).
        len: usize,
        /// The most v2.5.1 allows there.
        max: usize,
    },
    /// A number that is NaN or infinite.
    NotFinite,
    /// A number outside [0, 1].
    OutOfRange,
    /// A code that is not in the HL7 table the field takes.
    NotInTable {
        /// The table's number, e.g. "0103".
        table: &'static str,
    },
    /// A time that is not in the years 1 to 9999.
    TimeOutOfRange,
    /// `positive` says the opposite of probability against threshold.
    ContradictsThreshold,
    /// Not 64 lowercase hex digits.
    NotSha256Hex,
    /// Not a DICOM UID (digits and dots, at most 64 characters, no empty component, no
    /// leading zero).
    NotDicomUid,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Empty => f.write_str("is empty"),
            Problem::TooLong { len, max } => write!(f, "is {len} characters long, more than {max}"),
            Problem::NotFinite => f.write_str("is not a finite number"),
            Problem::OutOfRange => f.write_str("is outside 0..=1"),
            Problem::NotInTable { table } => write!(f, "is not a value of HL7 table {table}"),
            Problem::TimeOutOfRange => f.write_str("is not a time in the years 1 to 9999"),
            Problem::ContradictsThreshold => f.write_str("contradicts the probability and threshold"),
            Problem::NotSha256Hex => f.write_str("is not 64 lowercase hex digits"),
            Problem::NotDicomUid => f.write_str("is not a DICOM UID"),
        }
    }
}

/// Why `write_oru_r01` refused the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// An input field would make a wrong or unreadable message.
    #[error("check the ORU^R01 input: {field} {problem}")]
    CheckInput {
        /// Where, as a path into `OruResult` (`order.study_instance_uid`).
        field: String,
        /// What is wrong.
        problem: Problem,
    },
}

impl WriteError {
    pub(crate) fn check(field: impl Into<String>, problem: Problem) -> Self {
        WriteError::CheckInput { field: field.into(), problem }
    }
}
