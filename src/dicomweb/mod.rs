//! The DICOMweb client (PS3.18): QIDO-RS to find a study's instances, WADO-RS to retrieve them.
//!
//! **Boundary:** only roots that the configuration allowlists are called (a job's endpoint was
//! checked when its notification arrived; HL7 jobs use `dicomweb.default_endpoint`). Every
//! request has the configured timeout; a study's retrieval stops at `max_study_bytes` without
//! buffering more. Redirects are not followed (the shared client).
//!
//! Errors carry a stable code ([`DicomwebError::code`]) for the job row and the audit trail;
//! nothing from the PACS's response text is kept.

pub mod multipart;
pub mod stow;

use std::collections::HashMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

pub use crate::configuration::SelectionRules;
use crate::configuration::{PacsAuthKind, PacsCredentials};

/// How requests to one PACS are authenticated.
#[derive(Clone, Debug)]
pub enum PacsAuth {
    Basic { username: String, password: SecretString },
    Bearer(SecretString),
}

#[derive(Debug, thiserror::Error)]
#[error("could not read the PACS secret file {path}")]
pub struct ReadSecret {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

/// The credentials of every configured PACS, by root (without trailing slash). Secret files
/// are read once, at start.
#[derive(Clone, Debug, Default)]
pub struct PacsCredentialStore(HashMap<String, PacsAuth>);

impl PacsCredentialStore {
    pub fn load(credentials: &[PacsCredentials]) -> Result<PacsCredentialStore, ReadSecret> {
        let mut map = HashMap::new();
        for c in credentials {
            let secret = || -> Result<SecretString, ReadSecret> {
                let path = c.secret_file.clone().unwrap_or_default();
                let text = std::fs::read_to_string(&path).map_err(|source| ReadSecret { path: path.display().to_string(), source })?;
                Ok(SecretString::from(text.trim_end_matches(['\r', '\n']).to_owned()))
            };
            let auth = match c.auth {
                PacsAuthKind::None => continue,
                PacsAuthKind::Basic => PacsAuth::Basic { username: c.username.clone().unwrap_or_default(), password: secret()? },
                PacsAuthKind::Bearer => PacsAuth::Bearer(secret()?),
            };
            map.insert(c.url.trim_end_matches('/').to_owned(), auth);
        }
        Ok(PacsCredentialStore(map))
    }

    pub fn for_root(&self, root: &str) -> Option<&PacsAuth> {
        self.0.get(root.trim_end_matches('/'))
    }
}

/// One instance found by QIDO-RS, with the attributes selection rules look at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceRef {
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: Option<String>,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub series_description: Option<String>,
}

/// Whether `rules` select instance `i` (the rules are `[dicomweb.select]` in the configuration).
pub fn selects(rules: &SelectionRules, i: &InstanceRef) -> bool {
    let one_of = |list: &[String], v: &Option<String>| {
        list.is_empty() || v.as_deref().is_some_and(|v| list.iter().any(|x| x.eq_ignore_ascii_case(v)))
    };
    let described = rules.series_description_contains.is_empty()
        || i.series_description.as_deref().is_some_and(|d| {
            let d = d.to_lowercase();
            rules.series_description_contains.iter().any(|x| d.contains(&x.to_lowercase()))
        });
    one_of(&rules.modalities, &i.modality)
        && (rules.sop_classes.is_empty() || i.sop_class_uid.as_deref().is_some_and(|c| rules.sop_classes.iter().any(|x| x == c)))
        && one_of(&rules.body_parts, &i.body_part)
        && described
}

/// A retrieved study: the DICOM Part 10 instances (decoding is a later step).
#[derive(Debug)]
pub struct RetrievedStudy {
    pub instances: Vec<Vec<u8>>,
    pub bytes: usize,
    /// The transfer syntax the answer was asked in (`*`: as stored), for the audit trail.
    pub asked: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DicomwebError {
    #[error("the PACS could not be reached")]
    Unreachable,
    #[error("the PACS refused radsight's credentials")]
    AuthRefused,
    #[error("the PACS answered HTTP {status}")]
    Status { status: u16 },
    #[error("the study was not found on the PACS")]
    StudyNotFound,
    #[error("no instance of the study matches the selection rules")]
    NothingSelected,
    #[error("the study exceeds {limit} bytes")]
    StudyTooLarge { limit: usize },
    #[error("the QIDO-RS answer is not DICOM JSON")]
    NotDicomJson,
    #[error("the WADO-RS answer could not be read: {0}")]
    Multipart(#[from] multipart::MultipartError),
    #[error("a WADO-RS part is not a DICOM Part 10 instance")]
    NotDicom,
}

impl DicomwebError {
    pub fn code(&self) -> &'static str {
        match self {
            DicomwebError::Unreachable => "pacs-unreachable",
            DicomwebError::AuthRefused => "pacs-auth-refused",
            DicomwebError::Status { .. } => "pacs-error-status",
            DicomwebError::StudyNotFound => "study-not-found",
            DicomwebError::NothingSelected => "no-instance-selected",
            DicomwebError::StudyTooLarge { .. } => "study-too-large",
            DicomwebError::NotDicomJson => "pacs-response-not-dicom-json",
            DicomwebError::Multipart(_) => "pacs-response-not-multipart",
            DicomwebError::NotDicom => "pacs-part-not-dicom",
        }
    }

    /// Whether trying again later can help (a PACS that is down may come back; an oversize
    /// study stays oversize).
    pub fn is_transient(&self) -> bool {
        matches!(self, DicomwebError::Unreachable | DicomwebError::Status { .. } | DicomwebError::StudyNotFound)
    }
}

/// Client options; defaults come from `[dicomweb]`.
#[derive(Debug, Clone)]
pub struct DicomwebClient {
    http: reqwest::Client,
    timeout: Duration,
    max_study_bytes: usize,
    auth: Option<PacsAuth>,
    /// Asked for first; `*` (as stored) when the PACS cannot transcode.
    transfer_syntax: String,
}

impl DicomwebClient {
    /// A client for one PACS; `auth` is that PACS's credentials, if it needs any.
    pub fn new(http: reqwest::Client, timeout: Duration, max_study_bytes: usize, auth: Option<PacsAuth>) -> DicomwebClient {
        DicomwebClient { http, timeout, max_study_bytes, auth, transfer_syntax: "*".into() }
    }

    /// Asks for `uid` first (`*`: the stored syntax), falling back to `*` when the PACS
    /// answers the request with an error status (it cannot transcode).
    pub fn with_transfer_syntax(mut self, uid: &str) -> DicomwebClient {
        self.transfer_syntax = uid.to_owned();
        self
    }

    fn request(&self, url: url::Url, accept: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(url).header("accept", accept).timeout(self.timeout);
        match &self.auth {
            None => req,
            Some(PacsAuth::Basic { username, password }) => req.basic_auth(username, Some(password.expose_secret())),
            Some(PacsAuth::Bearer(token)) => req.bearer_auth(token.expose_secret()),
        }
    }

    async fn get(&self, url: url::Url, accept: &str) -> Result<reqwest::Response, DicomwebError> {
        let resp = self.request(url, accept).send().await.map_err(|_| DicomwebError::Unreachable)?;
        match resp.status().as_u16() {
            200 => Ok(resp),
            401 | 403 => Err(DicomwebError::AuthRefused),
            204 | 404 => Err(DicomwebError::StudyNotFound),
            status => Err(DicomwebError::Status { status }),
        }
    }

    /// QIDO-RS `GET {root}/studies/{study}/instances`: the study's instances, with the
    /// attributes the selection rules need.
    pub async fn find_instances(&self, root: &str, study_uid: &str) -> Result<Vec<InstanceRef>, DicomwebError> {
        let mut url = join(root, &["studies", study_uid, "instances"])?;
        url.query_pairs_mut().extend_pairs(["00080016", "00080060", "00180015", "0008103E"].map(|t| ("includefield", t)));
        let resp = self.get(url, "application/dicom+json").await?;
        let body = crate::http_client::read_limited(resp, 16 * 1024 * 1024).await.map_err(|_| DicomwebError::NotDicomJson)?;
        let items: Vec<Value> = serde_json::from_slice(&body).map_err(|_| DicomwebError::NotDicomJson)?;
        let text = |item: &Value, tag: &str| item[tag]["Value"][0].as_str().map(str::to_owned);
        let found: Vec<InstanceRef> = items
            .iter()
            .map(|i| match (text(i, "0020000E"), text(i, "00080018")) {
                (Some(series_uid), Some(sop_instance_uid)) => Ok(InstanceRef {
                    series_uid,
                    sop_instance_uid,
                    sop_class_uid: text(i, "00080016"),
                    modality: text(i, "00080060"),
                    body_part: text(i, "00180015"),
                    series_description: text(i, "0008103E"),
                }),
                _ => Err(DicomwebError::NotDicomJson),
            })
            .collect::<Result<_, _>>()?;
        if found.is_empty() { Err(DicomwebError::StudyNotFound) } else { Ok(found) }
    }

    /// Retrieves what `rules` select of the instances `found`: the whole study in one WADO-RS
    /// request when the rules select everything, else instance by instance. The byte limit
    /// holds for the total.
    pub async fn retrieve_selected(
        &self,
        root: &str,
        study_uid: &str,
        found: &[InstanceRef],
        rules: &SelectionRules,
    ) -> Result<RetrievedStudy, DicomwebError> {
        if rules.selects_everything() {
            return self.retrieve(join(root, &["studies", study_uid])?, self.max_study_bytes).await;
        }
        let selected: Vec<&InstanceRef> = found.iter().filter(|i| selects(rules, i)).collect();
        if selected.is_empty() {
            return Err(DicomwebError::NothingSelected);
        }
        let mut all = RetrievedStudy { instances: Vec::new(), bytes: 0, asked: String::new() };
        for i in selected {
            let url = join(root, &["studies", study_uid, "series", &i.series_uid, "instances", &i.sop_instance_uid])?;
            let left = self.max_study_bytes.checked_sub(all.bytes).ok_or(DicomwebError::StudyTooLarge { limit: self.max_study_bytes })?;
            let one = self.retrieve(url, left).await.map_err(|e| match e {
                DicomwebError::StudyTooLarge { .. } => DicomwebError::StudyTooLarge { limit: self.max_study_bytes },
                other => other,
            })?;
            all.bytes += one.bytes;
            all.instances.extend(one.instances);
            all.asked = one.asked;
        }
        Ok(all)
    }

    /// WADO-RS `GET {root}/studies/{study}`: every instance, as Part 10 bytes, up to the limit.
    pub async fn retrieve_study(&self, root: &str, study_uid: &str) -> Result<RetrievedStudy, DicomwebError> {
        self.retrieve(join(root, &["studies", study_uid])?, self.max_study_bytes).await
    }

    async fn retrieve(&self, url: url::Url, limit: usize) -> Result<RetrievedStudy, DicomwebError> {
        let accept = |ts: &str| format!("multipart/related; type=\"application/dicom\"; transfer-syntax={ts}");
        let mut asked = self.transfer_syntax.clone();
        let resp = match self.get(url.clone(), &accept(&asked)).await {
            // The PACS cannot give that syntax: take the instances as stored. PS3.18 says 406;
            // Orthanc answers 400 for a syntax it does not know and 500 for one it cannot
            // transcode into (JPEG 2000 without its plugin), so any error status asks again.
            Err(DicomwebError::Status { .. }) if asked != "*" => {
                asked = "*".into();
                self.get(url, &accept(&asked)).await?
            }
            other => other?,
        };
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let boundary = multipart::boundary(&content_type)?;
        let body = crate::http_client::read_limited(resp, limit).await.map_err(|e| match e {
            crate::http_client::BodyError::TooLarge { .. } => DicomwebError::StudyTooLarge { limit },
            crate::http_client::BodyError::Read(_) => DicomwebError::Unreachable,
        })?;
        let parts = multipart::parse(&body, &boundary)?;
        let mut instances = Vec::with_capacity(parts.len());
        for p in parts {
            // A Part 10 file: a 128-byte preamble, then "DICM".
            if p.body.len() < 132 || &p.body[128..132] != b"DICM" {
                return Err(DicomwebError::NotDicom);
            }
            instances.push(p.body.to_vec());
        }
        if instances.is_empty() {
            return Err(DicomwebError::StudyNotFound);
        }
        Ok(RetrievedStudy { instances, bytes: body.len(), asked })
    }
}

/// `root` + path segments, each percent-encoded.
fn join(root: &str, segments: &[&str]) -> Result<url::Url, DicomwebError> {
    let mut url = url::Url::parse(root.trim_end_matches('/')).map_err(|_| DicomwebError::Unreachable)?;
    url.path_segments_mut().map_err(|_| DicomwebError::Unreachable)?.pop_if_empty().extend(segments);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_pacs_credentials() {
        let url = url::Url::parse("http://pacs/dicom-web/studies").unwrap();
        let client = |auth| DicomwebClient::new(reqwest::Client::new(), Duration::from_secs(1), 1, auth);
        let header = |c: DicomwebClient| {
            c.request(url.clone(), "application/dicom+json")
                .build()
                .unwrap()
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(header(client(None)), None);
        let basic = PacsAuth::Basic { username: "u".into(), password: SecretString::from("p".to_owned()) };
        assert_eq!(header(client(Some(basic))).as_deref(), Some("Basic dTpw"));
        assert_eq!(header(client(Some(PacsAuth::Bearer(SecretString::from("t0k".to_owned()))))).as_deref(), Some("Bearer t0k"));
    }

    #[test]
    fn selection_rules_match_every_listed_attribute() {
        let ct = InstanceRef {
            modality: Some("CT".into()),
            sop_class_uid: Some("1.2.840.10008.5.1.4.1.1.2".into()),
            body_part: Some("CHEST".into()),
            series_description: Some("Axial 1.25mm LUNG".into()),
            ..Default::default()
        };
        let rules = |m: &[&str], c: &[&str], b: &[&str], d: &[&str]| SelectionRules {
            modalities: m.iter().map(|s| s.to_string()).collect(),
            sop_classes: c.iter().map(|s| s.to_string()).collect(),
            body_parts: b.iter().map(|s| s.to_string()).collect(),
            series_description_contains: d.iter().map(|s| s.to_string()).collect(),
        };
        let cases = [
            (rules(&[], &[], &[], &[]), true),
            (rules(&["ct"], &[], &[], &[]), true),
            (rules(&["MR", "DX"], &[], &[], &[]), false),
            (rules(&[], &["1.2.840.10008.5.1.4.1.1.2"], &["chest"], &["lung"]), true),
            (rules(&["CT"], &[], &["ABDOMEN"], &[]), false),
            (rules(&[], &[], &[], &["scout"]), false),
        ];
        for (r, expected) in cases {
            assert_eq!(selects(&r, &ct), expected, "{r:?}");
        }
        assert!(!selects(&rules(&["CT"], &[], &[], &[]), &InstanceRef::default()), "a missing attribute does not match a rule");
    }

    #[test]
    fn paths_are_joined_under_the_root() {
        let u = join("http://pacs:8042/dicom-web/", &["studies", "1.2.3", "instances"]).unwrap();
        assert_eq!(u.as_str(), "http://pacs:8042/dicom-web/studies/1.2.3/instances");
    }
}
