//! Deterministic DICOM UIDs for the objects made from one AI result.
//!
//! A retry of the same result must produce the same SOP Instance UID and Series Instance UID, so
//! that the PACS sees a resend as the same object and not a duplicate. UIDs are therefore derived,
//! never random: SHA-256 over a fixed label, the result id and the object kind, then
//!
//! - with a configured organisation root: `root + "." + decimal(first 12 bytes)` (or the first 8
//!   bytes when a long root leaves no room for 12), always at most 64 characters;
//! - without one: `2.25.` + the 128-bit UUID form of the first 16 bytes (version 8, "custom",
//!   RFC 9562 §5.8), as PS3.5 §B.2 allows for UIDs made without a registered root.
//!
//! A decimal integer has no leading zeros, so every added component is valid per PS3.5 §9.1.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::UidRootError;

/// A UID at most 64 characters of digits and dots, each component without a leading zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(String);

impl Uid {
    /// Checks a UID string against PS3.5 §9.1 (as every UID we write or take in must be valid).
    pub fn parse(value: &str) -> Result<Self, UidRootError> {
        check_uid_syntax(value, MAX_UID_LEN)?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Uid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The organisation's UID root under which radsight makes UIDs (configured per site).
///
/// It must leave room for a suffix of at least 8 hash bytes (20 decimal digits and a dot), so it
/// is at most 43 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidRoot(String);

/// The longest root that still leaves room for the shortest suffix (1 dot + 20 digits).
pub const MAX_ROOT_LEN: usize = MAX_UID_LEN - 1 - 20;
const MAX_UID_LEN: usize = 64;

impl UidRoot {
    pub fn parse(value: &str) -> Result<Self, UidRootError> {
        check_uid_syntax(value, MAX_ROOT_LEN)?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a derived UID names; the kind is part of the hash, so each kind gets its own UID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UidKind {
    /// Series Instance UID of the SR series.
    ReportSeries,
    /// SOP Instance UID of the SR document.
    ReportInstance,
    /// Series Instance UID of the saliency Secondary Capture series.
    CaptureSeries,
    /// SOP Instance UID of the saliency Secondary Capture image.
    CaptureInstance,
    /// Tracking Unique Identifier (112040, DCM) of the n-th finding's measurement group (TID 1501).
    FindingTracking(usize),
}

impl UidKind {
    fn label(self) -> String {
        match self {
            UidKind::ReportSeries => "sr-series".into(),
            UidKind::ReportInstance => "sr-instance".into(),
            UidKind::CaptureSeries => "sc-series".into(),
            UidKind::CaptureInstance => "sc-instance".into(),
            UidKind::FindingTracking(n) => format!("finding-tracking-{n}"),
        }
    }
}

/// The UID for `kind` of the objects made from result `result_id`, under `root` (or `2.25.`).
pub fn derive_uid(root: Option<&UidRoot>, result_id: &str, kind: UidKind) -> Uid {
    derive_from(root, "result", result_id, &kind.label())
}

/// The Device Observer UID (121012, DCM) of a model version: the same for every result it makes.
pub fn derive_device_uid(root: Option<&UidRoot>, model_id: &str, model_version: &str) -> Uid {
    derive_from(root, "device", model_id, model_version)
}

/// Implementation Class UID (0002,0012) of this writer: fixed, in the `2.25.` form, so it is
/// valid without a registered root and the same at every site.
pub(crate) fn implementation_class_uid() -> Uid {
    derive_from(None, "implementation", "radsight-dicom-report", "v1")
}

fn derive_from(root: Option<&UidRoot>, namespace: &str, id: &str, kind: &str) -> Uid {
    let digest = hash(namespace, id, kind);
    let uid = match root {
        Some(root) => {
            // 12 bytes are up to 29 digits; fall back to 8 (20 digits) for a long root.
            let take = if root.0.len() + 1 + 29 <= MAX_UID_LEN { 12 } else { 8 };
            let mut n: u128 = 0;
            for b in &digest[..take] {
                n = (n << 8) | u128::from(*b);
            }
            format!("{}.{n}", root.0)
        }
        None => {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            // RFC 9562: version 8 in the high nibble of byte 6, variant 0b10 in byte 8.
            bytes[6] = (bytes[6] & 0x0f) | 0x80;
            bytes[8] = (bytes[8] & 0x3f) | 0x80;
            format!("2.25.{}", u128::from_be_bytes(bytes))
        }
    };
    debug_assert!(check_uid_syntax(&uid, MAX_UID_LEN).is_ok(), "derived UID {uid} is invalid");
    Uid(uid)
}

/// SHA-256 with length prefixes, so that no two (namespace, id, kind) triples hash the same bytes.
fn hash(namespace: &str, id: &str, kind: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"radsight-dicom-report uid v1");
    for part in [namespace, id, kind] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

fn check_uid_syntax(value: &str, max_len: usize) -> Result<(), UidRootError> {
    if value.is_empty() {
        return Err(UidRootError::Empty);
    }
    if value.len() > max_len {
        return Err(UidRootError::TooLong { len: value.len(), max: max_len });
    }
    for component in value.split('.') {
        if component.is_empty() || !component.bytes().all(|b| b.is_ascii_digit()) {
            return Err(UidRootError::BadComponent);
        }
        if component.len() > 1 && component.starts_with('0') {
            return Err(UidRootError::LeadingZero);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_root(value: &str, ok: bool) {
        assert_eq!(UidRoot::parse(value).is_ok(), ok, "{value:?}");
    }

    #[test]
    fn roots_are_digits_and_dots_without_leading_zeros_and_leave_room() {
        check_root("1.2.826.0.1.3680043.10.543", true);
        check_root("1.2.3", true);
        check_root("", false);
        check_root("1..2", false);
        check_root("1.2.", false);
        check_root(".1.2", false);
        check_root("1.02", false);
        check_root("1.2a", false);
        check_root(&format!("1.{}", "2".repeat(MAX_ROOT_LEN - 2)), true);
        check_root(&format!("1.{}", "2".repeat(MAX_ROOT_LEN - 1)), false);
    }

    #[test]
    fn derived_uids_are_valid_for_short_long_and_absent_roots() {
        let long = UidRoot::parse(&format!("1.{}", "9".repeat(MAX_ROOT_LEN - 2))).unwrap();
        let short = UidRoot::parse("1.2.3").unwrap();
        for root in [None, Some(&short), Some(&long)] {
            for kind in [UidKind::ReportSeries, UidKind::ReportInstance, UidKind::CaptureInstance, UidKind::FindingTracking(7)] {
                let uid = derive_uid(root, "result-1", kind);
                assert!(uid.as_str().len() <= 64, "{uid}");
                Uid::parse(uid.as_str()).unwrap();
            }
        }
        assert!(derive_uid(None, "r", UidKind::ReportInstance).as_str().starts_with("2.25."));
        assert!(derive_uid(Some(&short), "r", UidKind::ReportInstance).as_str().starts_with("1.2.3."));
    }

    #[test]
    fn the_uuid_form_carries_version_8_and_the_rfc_variant() {
        let uid = derive_uid(None, "result-1", UidKind::ReportInstance);
        let n: u128 = uid.as_str().strip_prefix("2.25.").unwrap().parse().unwrap();
        let bytes = n.to_be_bytes();
        assert_eq!(bytes[6] >> 4, 8);
        assert_eq!(bytes[8] >> 6, 0b10);
    }

    #[test]
    fn kinds_and_results_get_distinct_uids() {
        let a = derive_uid(None, "result-1", UidKind::ReportInstance);
        assert_eq!(a, derive_uid(None, "result-1", UidKind::ReportInstance));
        assert_ne!(a, derive_uid(None, "result-1", UidKind::ReportSeries));
        assert_ne!(a, derive_uid(None, "result-2", UidKind::ReportInstance));
        assert_ne!(derive_uid(None, "r", UidKind::FindingTracking(0)), derive_uid(None, "r", UidKind::FindingTracking(1)));
    }
}
