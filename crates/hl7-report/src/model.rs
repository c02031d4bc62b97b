//! The input: one AI result as plain owned values, with no HL7 encoding in it.
//!
//! The service fills these from its result store and the order the result answers. Text is
//! taken as it is: `write_oru_r01` checks it (`WriteError::CheckInput` names the field) and
//! escapes it. Times are Unix seconds, written in UTC.

/// One AI result, as the ORU^R01 reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct OruResult {
    /// The message header (MSH).
    pub header: Header,
    /// Whose result it is (PID).
    pub patient: Patient,
    /// The order the result answers (ORC, OBR).
    pub order: Order,
    /// One NM observation each, in this order.
    pub findings: Vec<Finding>,
    /// One-line summary of the result, written as a TX observation.
    pub conclusion: String,
    /// The model that produced the result.
    pub model: ModelIdentity,
    /// Where a person can see the result in radsight, written as an RP observation when given.
    pub result_url: Option<String>,
    /// The audit-log receipt of the result as compact JSON, carried base64 in an ED observation
    /// when given.
    pub receipt_json: Option<String>,
}

/// The MSH fields that vary between sites and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// MSH-3 (HD namespace id), e.g. "RADSIGHT". Required.
    pub sending_application: String,
    /// MSH-4 (HD namespace id). May be empty.
    pub sending_facility: String,
    /// MSH-5 (HD namespace id), the RIS. Required.
    pub receiving_application: String,
    /// MSH-6 (HD namespace id). May be empty.
    pub receiving_facility: String,
    /// MSH-10: unique per message, at most 20 characters (the v2.5.1 length). A resend of the
    /// same result reuses it, so the receiver can recognise the duplicate.
    pub message_control_id: String,
    /// MSH-7: when the message was created, Unix seconds (written in UTC). Also OBR-22, the
    /// time the result status was reported.
    pub created_at_unix: i64,
    /// MSH-11, HL7 table 0103: "P" (production), "T" (training) or "D" (debugging).
    pub processing_id: String,
}

/// The patient, as the order identified them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patient {
    /// PID-3.1, the id the receiver knows the patient by (usually the MRN from the order).
    pub id: String,
    /// PID-3.4, the namespace id of the authority that assigned `id`.
    pub assigning_authority: Option<String>,
    /// PID-5. `None` writes a name with type "U" (unspecified) and no parts: see `write`.
    pub name: Option<PersonName>,
}

/// A person's name (XPN family and given name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName {
    /// XPN-1.1 (surname).
    pub family: String,
    /// XPN-2.
    pub given: String,
}

/// The imaging order the result answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// ORC-2 and OBR-2, as the placer (the EHR) numbered the order.
    pub placer_order_number: Option<String>,
    /// ORC-3 and OBR-3, as the filler (the RIS) numbered the order.
    pub filler_order_number: Option<String>,
    /// OBR-18 (placer field 1), where IHE Scheduled Workflow carries the accession number.
    pub accession_number: Option<String>,
    /// The DICOM Study Instance UID the model read, written as an observation coded
    /// (113014, DCM, "DICOM Study") as IHE RAD does.
    pub study_instance_uid: String,
    /// OBR-4, the ordered procedure; `None` writes radsight's code for "AI analysis of imaging study".
    pub procedure: Option<Code>,
    /// OBR-7 and OBX-14: when the model read the study, Unix seconds (written in UTC).
    pub observed_at_unix: i64,
    /// OBR-25 and OBX-11.
    pub result_status: ResultStatus,
}

/// The status of the result (HL7 tables 0123 for OBR-25 and 0085 for OBX-11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultStatus {
    /// "F": final.
    Final,
    /// "C": a correction of a result sent before as final.
    Corrected,
    /// "P": preliminary.
    Preliminary,
}

impl ResultStatus {
    /// The code, the same in tables 0123 and 0085.
    pub fn code(self) -> &'static str {
        match self {
            ResultStatus::Final => "F",
            ResultStatus::Corrected => "C",
            ResultStatus::Preliminary => "P",
        }
    }
}

/// A coded concept, written as a CE (identifier ^ text ^ name of coding system).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// CE-1, e.g. "36118008".
    pub code: String,
    /// CE-2, the text people read, e.g. "Pneumothorax"; may be empty (CE-2 is optional).
    pub display: String,
    /// CE-3, an HL7 table 0396 name, e.g. "SCT", "RADLEX", "LN", or a local "99..." name.
    pub system: String,
}

impl Code {
    /// A code from its three parts.
    pub fn new(code: &str, display: &str, system: &str) -> Self {
        Self { code: code.into(), display: display.into(), system: system.into() }
    }
}

/// One finding the model scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// OBX-3, what was looked for.
    pub code: Code,
    /// OBX-5, the calibrated probability in [0, 1].
    pub probability: f64,
    /// The operating threshold in [0, 1], written as the reference range `<threshold` (OBX-7).
    pub threshold: f64,
    /// The model's call against the threshold: OBX-8 "A" (abnormal) when true, else "N".
    /// It must agree with the numbers (`probability >= threshold` when positive,
    /// `probability <= threshold` when not).
    pub positive: bool,
}

/// Which model produced the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelIdentity {
    /// e.g. "radsight-phantom-cxr".
    pub id: String,
    /// e.g. "1.1.0".
    pub version: String,
    /// SHA-256 of the weights file, 64 lowercase hex digits.
    pub weights_sha256_hex: String,
}
