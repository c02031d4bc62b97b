//! STOW-RS (PS3.18 §10.5): `POST {root}/studies/{study}` with a `multipart/related;
//! type="application/dicom"` body of Part 10 instances, answered with a DICOM JSON Store
//! Instances Response. radsight stores its outputs (the SR, the overlay) into the study they
//! describe; a PACS that stores an instance it already has (same SOP Instance UID) keeps one.
//!
//! The response decides the outcome: 200 with no Failed SOP Sequence is stored; 202 or a
//! Failed SOP Sequence is a partial store (retried: the same bytes again); 409 and other 4xx
//! are refusals that retrying cannot change; 5xx, a timeout or no connection may pass.

use serde_json::Value;

use super::{DicomwebClient, DicomwebError, PacsAuth, join};

/// What a STOW-RS request ended in, when the PACS answered 2xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// SOP Instance UIDs the PACS lists as stored (Referenced SOP Sequence).
    pub referenced: Vec<String>,
}

/// Why a STOW-RS request did not store everything.
#[derive(Debug, thiserror::Error)]
pub enum StowError {
    #[error(transparent)]
    Request(#[from] DicomwebError),
    /// Some instances were not stored (202, or a Failed SOP Sequence): the failure reasons
    /// (tag 00081197) as the PACS gave them.
    #[error("the PACS stored only part of the request (failure reasons {reasons:?})")]
    Partial { reasons: Vec<u64> },
    /// 409 or another 4xx: the PACS refuses these instances; sending them again cannot help.
    #[error("the PACS refused the instances (HTTP {status})")]
    Refused { status: u16 },
}

impl StowError {
    pub fn code(&self) -> &'static str {
        match self {
            StowError::Request(e) => e.code(),
            StowError::Partial { .. } => "stow-partial",
            StowError::Refused { status: 409 } => "stow-conflict",
            StowError::Refused { .. } => "stow-refused",
        }
    }

    /// Whether trying again later can help.
    pub fn is_transient(&self) -> bool {
        match self {
            StowError::Request(e) => e.is_transient(),
            StowError::Partial { .. } => true,
            StowError::Refused { .. } => false,
        }
    }
}

const BOUNDARY: &str = "radsight-stow-7f3c1e9a2b";

/// The `multipart/related` body of `instances`.
fn body(instances: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(instances.iter().map(|i| i.len() + 80).sum());
    for instance in instances {
        out.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
        out.extend_from_slice(instance);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// The items of sequence `tag` in a Store Instances Response (none when absent).
fn sequence<'a>(response: &'a Value, tag: &str) -> Vec<&'a Value> {
    response[tag]["Value"].as_array().map(|items| items.iter().collect()).unwrap_or_default()
}

impl DicomwebClient {
    /// Stores `instances` (Part 10) into study `study_uid` on `root`.
    pub async fn store(&self, root: &str, study_uid: &str, instances: &[&[u8]]) -> Result<Stored, StowError> {
        let url = join(root, &["studies", study_uid])?;
        let mut req = self
            .http
            .post(url)
            .header("content-type", format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"))
            .header("accept", "application/dicom+json")
            .timeout(self.timeout)
            .body(body(instances));
        req = match &self.auth {
            None => req,
            Some(PacsAuth::Basic { username, password }) => {
                use secrecy::ExposeSecret;
                req.basic_auth(username, Some(password.expose_secret()))
            }
            Some(PacsAuth::Bearer(token)) => {
                use secrecy::ExposeSecret;
                req.bearer_auth(token.expose_secret())
            }
        };
        let resp = req.send().await.map_err(|_| DicomwebError::Unreachable)?;
        let status = resp.status().as_u16();
        let text = crate::http_client::read_limited(resp, 4 * 1024 * 1024).await.unwrap_or_default();
        let response: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
        match status {
            200 | 202 => {
                let failed = sequence(&response, "00081198");
                if status == 202 || !failed.is_empty() {
                    let reasons = failed.iter().filter_map(|f| f["00081197"]["Value"][0].as_u64()).collect();
                    return Err(StowError::Partial { reasons });
                }
                let referenced =
                    sequence(&response, "00081199").iter().filter_map(|r| r["00081155"]["Value"][0].as_str().map(str::to_owned)).collect();
                Ok(Stored { referenced })
            }
            401 | 403 => Err(DicomwebError::AuthRefused.into()),
            status @ 400..=499 => Err(StowError::Refused { status }),
            status => Err(DicomwebError::Status { status }.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_frames_each_instance_as_one_application_dicom_part() {
        let b = body(&[b"DICM-one", b"DICM-two"]);
        let text = String::from_utf8_lossy(&b);
        assert_eq!(text.matches("Content-Type: application/dicom\r\n\r\n").count(), 2);
        assert!(text.ends_with(&format!("--{BOUNDARY}--\r\n")));
        assert!(text.contains("DICM-one\r\n--"));
    }

    #[test]
    fn refusals_are_permanent_and_partial_stores_are_retried() {
        assert!(!StowError::Refused { status: 409 }.is_transient());
        assert_eq!(StowError::Refused { status: 409 }.code(), "stow-conflict");
        assert!(StowError::Partial { reasons: vec![0xA700] }.is_transient());
        assert!(StowError::Request(DicomwebError::Unreachable).is_transient());
        assert!(!StowError::Request(DicomwebError::AuthRefused).is_transient());
    }
}
