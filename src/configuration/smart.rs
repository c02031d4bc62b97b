//! `[smart]`: the EHRs that may launch the SMART app, how their access tokens are validated,
//! where the built app is served from, and the demo EHR.
//!
//! ```toml
//! [smart]
//! app_dir = "smart-app/dist"          # the built app (npm --prefix smart-app run build)
//! introspection_cache_secs = 30       # an active introspection answer is reused this long
//! token_timeout_ms = 3000             # per introspection or JWKS request
//!
//! [smart.demo_ehr]
//! enabled = false                     # /demo-ehr/: a SMART authorisation server and FHIR API
//!
//! [[smart.ehrs]]
//! iss = "https://ehr.example.org/fhir"   # the FHIR base URL the EHR launches with
//! client_id = "radsight"
//! validation = "introspection"           # or "jwks"
//! introspection_endpoint = "https://ehr.example.org/oauth2/introspect"
//! client_secret_file = "/run/secrets/ehr-introspection"
//! # validation = "jwks": jwks_url, token_issuer, token_audience
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The scopes the app asks for (SMART App Launch 2.2, v2 scopes).
pub const DEFAULT_SCOPES: &str = "launch openid fhirUser patient/Patient.rs patient/ImagingStudy.rs patient/DiagnosticReport.rs";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmartSettings {
    /// The built app (`smart-app/dist`), served at `/smart/`. Relative to the working directory.
    pub app_dir: PathBuf,
    /// How long an active introspection answer is reused (keyed by the token's SHA-256), capped
    /// by the token's `exp`. 0 asks the EHR on every call. Default 30 s.
    pub introspection_cache_secs: u64,
    /// Timeout of each introspection or JWKS request. Default 3 s.
    pub token_timeout_ms: u64,
    /// Largest feedback comment accepted, in characters. Default 2000.
    pub max_comment_chars: usize,
    pub demo_ehr: DemoEhrSettings,
    /// The EHRs that may launch the app; any other `iss` is refused.
    pub ehrs: Vec<EhrSettings>,
}

impl Default for SmartSettings {
    fn default() -> Self {
        SmartSettings {
            app_dir: "smart-app/dist".into(),
            introspection_cache_secs: 30,
            token_timeout_ms: 3000,
            max_comment_chars: 2000,
            demo_ehr: DemoEhrSettings::default(),
            ehrs: Vec::new(),
        }
    }
}

/// The built-in demo EHR at `/demo-ehr/`: a launcher page, a SMART authorisation server that
/// approves at once (its launcher also offers a denied consent) and a FHIR API with a demo
/// patient. It registers itself as an EHR and stores a synthetic demo study. Off by default;
/// never enable it where real patients are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoEhrSettings {
    pub enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenValidation {
    /// RFC 7662 token introspection at `introspection_endpoint`, authenticated with
    /// `client_id` and the secret in `client_secret_file` (HTTP Basic).
    Introspection,
    /// JWT access tokens, verified with the EHR's keys at `jwks_url`.
    Jwks,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EhrSettings {
    /// The FHIR base URL the EHR sends as `iss` in the launch.
    pub iss: String,
    /// radsight's client id at this EHR.
    pub client_id: String,
    /// The scopes the app asks for; default [`DEFAULT_SCOPES`].
    #[serde(default = "default_scopes")]
    pub scopes: String,
    pub validation: TokenValidation,
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    /// The client id radsight authenticates with at the introspection endpoint; default `client_id`.
    #[serde(default)]
    pub introspection_client_id: Option<String>,
    /// A file holding the introspection client secret (read at start, never logged).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The `iss` claim of the EHR's JWT access tokens; default `iss`.
    #[serde(default)]
    pub token_issuer: Option<String>,
    /// The `aud` claim expected in JWT access tokens; default `iss`.
    #[serde(default)]
    pub token_audience: Option<String>,
}

fn default_scopes() -> String {
    DEFAULT_SCOPES.to_owned()
}

impl EhrSettings {
    /// True when `iss` names this EHR (trailing slashes aside).
    pub fn is(&self, iss: &str) -> bool {
        self.iss.trim_end_matches('/') == iss.trim_end_matches('/')
    }
}

impl SmartSettings {
    pub fn ehr(&self, iss: &str) -> Option<&EhrSettings> {
        self.ehrs.iter().find(|e| e.is(iss))
    }

    pub fn validate(&self) -> Result<(), String> {
        for (i, e) in self.ehrs.iter().enumerate() {
            if url::Url::parse(&e.iss).is_err() {
                return Err(format!("smart.ehrs: {} is not an absolute URL", e.iss));
            }
            if self.ehrs[..i].iter().any(|o| o.is(&e.iss)) {
                return Err(format!("smart.ehrs: {} is registered twice", e.iss));
            }
            if e.client_id.is_empty() {
                return Err(format!("smart.ehrs {}: client_id is empty", e.iss));
            }
            let url_ok = |u: &Option<String>| u.as_deref().is_some_and(|u| url::Url::parse(u).is_ok());
            match e.validation {
                TokenValidation::Introspection if !url_ok(&e.introspection_endpoint) || e.client_secret_file.is_none() => {
                    return Err(format!("smart.ehrs {}: introspection needs introspection_endpoint (a URL) and client_secret_file", e.iss));
                }
                TokenValidation::Jwks if !url_ok(&e.jwks_url) => {
                    return Err(format!("smart.ehrs {}: jwks needs jwks_url (a URL)", e.iss));
                }
                _ => {}
            }
        }
        Ok(())
    }
}
