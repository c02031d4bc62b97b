//! The coded concepts the documents use, with the template rows or context groups they come
//! from, and radsight's private coding scheme.
//!
//! Meanings are spelled as in PS3.16 (and pydicom's concept dictionary, which is generated from
//! it), because validators and readers compare them.

use crate::model::Code;

/// radsight's private coding scheme (PS3.16 §8.2: private designators begin with "99"). It is
/// declared in the Coding Scheme Identification Sequence of every SR written.
pub const PRIVATE_SCHEME: &str = "99RADSIGHT";
pub const PRIVATE_SCHEME_NAME: &str = "radsight AI result and audit receipt concepts";
pub const PRIVATE_SCHEME_ORGANIZATION: &str = "radsight";

fn dcm(value: &str, meaning: &str) -> Code {
    Code::new(value, "DCM", meaning)
}

fn sct(value: &str, meaning: &str) -> Code {
    Code::new(value, "SCT", meaning)
}

fn private(value: &str, meaning: &str) -> Code {
    Code::new(value, PRIVATE_SCHEME, meaning)
}

/// Document title, CID 7021; the root of TID 1500.
pub fn imaging_measurement_report() -> Code {
    dcm("126000", "Imaging Measurement Report")
}

/// TID 1204 row 1.
pub fn language_of_content() -> Code {
    dcm("121049", "Language of Content Item and Descendants")
}

/// English (United States), RFC 5646 (CID 5000).
pub fn english_us() -> Code {
    Code::new("en-US", "RFC5646", "English (United States)")
}

/// TID 1002 Observer Context rows: the observer is a device (CID 270).
pub fn observer_type() -> Code {
    dcm("121005", "Observer Type")
}
pub fn device() -> Code {
    dcm("121007", "Device")
}
/// TID 1004 Device Observer Identifying Attributes.
pub fn device_observer_uid() -> Code {
    dcm("121012", "Device Observer UID")
}
pub fn device_observer_name() -> Code {
    dcm("121013", "Device Observer Name")
}
pub fn device_observer_manufacturer() -> Code {
    dcm("121014", "Device Observer Manufacturer")
}
pub fn device_observer_model_name() -> Code {
    dcm("121015", "Device Observer Model Name")
}

/// TID 1500 row 4.
pub fn procedure_reported() -> Code {
    dcm("121058", "Procedure reported")
}
/// The default procedure reported when the result does not name one.
pub fn imaging_procedure() -> Code {
    sct("363679005", "Imaging procedure")
}

/// TID 1600 Image Library and its groups (TID 1601).
pub fn image_library() -> Code {
    dcm("111028", "Image Library")
}
pub fn image_library_group() -> Code {
    dcm("126200", "Image Library Group")
}
pub fn source() -> Code {
    sct("260753009", "Source")
}

/// TID 1500 row 6, and the TID 1501 groups in it.
pub fn imaging_measurements() -> Code {
    dcm("126010", "Imaging Measurements")
}
pub fn measurement_group() -> Code {
    dcm("125007", "Measurement Group")
}
/// TID 1501 rows 2 and 3 (TID 4108 Tracking Identifier).
pub fn tracking_identifier() -> Code {
    dcm("112039", "Tracking Identifier")
}
pub fn tracking_unique_identifier() -> Code {
    dcm("112040", "Tracking Unique Identifier")
}
/// TID 1501 row 5: the type of finding the group is about.
pub fn finding() -> Code {
    dcm("121071", "Finding")
}

/// The values of a qualitative evaluation, CID 240/241 (Present/Absent).
pub fn present() -> Code {
    sct("52101004", "Present")
}
pub fn absent() -> Code {
    sct("272519000", "Absent")
}

/// The NUM concepts of a finding's group.
pub fn probability() -> Code {
    dcm("122157", "Probability")
}
pub fn threshold_value() -> Code {
    dcm("122411", "Threshold Value")
}
/// UCUM "1": a dimensionless ratio (CID 7181).
pub fn no_units() -> Code {
    Code::new("1", "UCUM", "no units")
}

/// TID 4019 Algorithm Identification.
pub fn algorithm_name() -> Code {
    dcm("111001", "Algorithm Name")
}
pub fn algorithm_version() -> Code {
    dcm("111003", "Algorithm Version")
}
pub fn algorithm_parameters() -> Code {
    dcm("111002", "Algorithm Parameters")
}
pub fn algorithm_manufacturer() -> Code {
    dcm("122405", "Algorithm Manufacturer")
}

/// TID 1500 row 12: Qualitative Evaluations, with CODE or TEXT children.
pub fn qualitative_evaluations() -> Code {
    Code::new("C0034375", "UMLS", "Qualitative Evaluations")
}
/// CID 12101 (and TID 1400-series comments).
pub fn comment() -> Code {
    dcm("121106", "Comment")
}

/// Purpose of Reference for the overlay's source image, CID 7202.
pub fn source_image_for_processing() -> Code {
    dcm("121322", "Source image for image processing operation")
}

// radsight's own concepts (99RADSIGHT): nothing in DCM, SCT or LOINC names these.

pub fn ai_result() -> Code {
    private("RS-RESULT", "AI result")
}
pub fn result_identifier() -> Code {
    private("RS-RESULT-ID", "AI result identifier")
}
pub fn result_url() -> Code {
    private("RS-RESULT-URL", "AI result URL")
}
pub fn saliency_method() -> Code {
    private("RS-SAL-METHOD", "Saliency method")
}
pub fn faithfulness_metric() -> Code {
    private("RS-FAITH-METRIC", "Saliency faithfulness metric")
}
pub fn faithfulness_value() -> Code {
    private("RS-FAITH-VALUE", "Saliency faithfulness value")
}

/// The audit-log receipt container and its items (receipt.rs).
pub fn log_receipt() -> Code {
    private("RS-RECEIPT", "Audit log inclusion receipt")
}
pub fn leaf_index() -> Code {
    private("RS-LEAF-INDEX", "Log leaf index")
}
pub fn tree_size() -> Code {
    private("RS-TREE-SIZE", "Log tree size")
}
pub fn log_entry() -> Code {
    private("RS-ENTRY", "Log entry (base64)")
}
pub fn proof_hash() -> Code {
    private("RS-PROOF-HASH", "Inclusion proof hash (base64)")
}
pub fn checkpoint() -> Code {
    private("RS-CHECKPOINT", "Signed checkpoint note")
}
pub fn log_origin() -> Code {
    private("RS-LOG-ORIGIN", "Log origin")
}
