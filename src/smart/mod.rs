//! The SMART on FHIR app's server side: launching it from registered EHRs, serving it, and the
//! API it reads results through.
//!
//! - `settings`: `[smart]` (registered EHRs, token validation mode, the demo EHR).
//! - `launch`: `/smart/launch` (the `iss` allowlist), `/smart/` (the built `smart-app/dist`),
//!   `/smart/error` (clear pages for a launch that cannot go on).
//! - `token`: validating the EHR's access tokens (RFC 7662 introspection or JWKS).
//! - `api`: `/api/patients/{id}/studies`, `/api/results/{id}[/image.png|heatmap.png|
//!   saliency.png|audit|feedback]`, each read audited and checked against the token's patient.
//! - `ehr_sim`: a SMART authorisation server and FHIR API: the demo EHR at `/demo-ehr/`, and the
//!   tests' fixture EHR.
//! - `demo`, `png`: the synthetic study the demo (and the tests) show.
//!
//! **Boundary:** the app is launched only by registered EHRs, and tokens are only ever sent to
//! the introspection endpoint of the EHR registered for the `iss` they came with.

pub mod api;
pub mod demo;
pub mod ehr_sim;
pub mod launch;
pub mod png;
pub mod settings;
pub mod token;

use actix_web::web;
use anyhow::Context;
use secrecy::SecretString;

pub use settings::{DEFAULT_SCOPES, EhrSettings, SmartSettings, TokenValidation};

use crate::configuration::Settings;
use ehr_sim::{EhrSim, SimClient};

/// radsight's client id at the demo EHR.
pub const DEMO_CLIENT_ID: &str = "radsight-demo";

pub struct SmartState {
    pub tokens: token::TokenValidator,
    /// The built-in demo EHR, when `[smart.demo_ehr] enabled`.
    pub demo: Option<EhrSim>,
}

impl SmartState {
    /// Registers the configured EHRs and, when enabled, builds the demo EHR (at
    /// `{public_url}/demo-ehr`, registered as an EHR with an in-memory introspection secret).
    pub fn build(settings: &Settings, http: reqwest::Client) -> anyhow::Result<SmartState> {
        let mut extra = Vec::new();
        let demo = settings.smart.demo_ehr.enabled.then(|| {
            let public = &settings.server.public_url;
            let sim = EhrSim::new(&format!("{public}/demo-ehr"), vec![ehr_sim::demo_patient(demo::DEMO_PATIENT)]);
            sim.register_client(SimClient {
                client_id: DEMO_CLIENT_ID.into(),
                redirect_uris: vec![format!("{public}/smart/")],
                launch_url: format!("{public}/smart/launch"),
            });
            let secret = ehr_sim::random_string(32);
            sim.register_introspection_client(DEMO_CLIENT_ID, &secret);
            extra.push((
                EhrSettings {
                    iss: sim.iss(),
                    client_id: DEMO_CLIENT_ID.into(),
                    scopes: DEFAULT_SCOPES.into(),
                    validation: TokenValidation::Introspection,
                    introspection_endpoint: Some(sim.introspection_endpoint()),
                    introspection_client_id: None,
                    client_secret_file: None,
                    jwks_url: None,
                    token_issuer: None,
                    token_audience: None,
                },
                Some(SecretString::from(secret)),
            ));
            sim
        });
        let tokens = token::TokenValidator::new(&settings.smart, extra, &settings.auth, http).context("registering SMART EHRs")?;
        Ok(SmartState { tokens, demo })
    }
}

/// The request path as the access log may show it: patient ids in the app's API and in FHIR
/// paths are replaced by `:id` (they identify a person; result ids are random UUIDs).
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::with_capacity(path.len());
    let mut redact_next = false;
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if redact_next && !segment.is_empty() { ":id" } else { segment });
        redact_next = segment == "patients" || segment == "Patient";
    }
    if out == path { std::borrow::Cow::Borrowed(path) } else { std::borrow::Cow::Owned(out) }
}

/// The app, its API and (when enabled) the demo EHR.
pub fn routes(cfg: &mut web::ServiceConfig, demo: Option<&EhrSim>) {
    api::routes(cfg);
    launch::routes(cfg);
    if let Some(sim) = demo {
        let sim = sim.clone();
        cfg.service(web::scope("/demo-ehr").configure(move |c| sim.routes(c)));
    }
}

#[cfg(test)]
mod tests {
    use super::loggable_path;

    #[test]
    fn patient_ids_never_reach_the_access_log() {
        assert_eq!(loggable_path("/api/patients/example-patient/studies"), "/api/patients/:id/studies");
        assert_eq!(loggable_path("/demo-ehr/fhir/Patient/p1"), "/demo-ehr/fhir/Patient/:id");
        assert_eq!(loggable_path("/api/results/6f1c1d8e/audit"), "/api/results/6f1c1d8e/audit");
        assert_eq!(loggable_path("/cds-services"), "/cds-services");
    }
}
