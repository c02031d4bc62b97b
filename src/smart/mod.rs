//! The SMART on FHIR app's server side: launching it from registered EHRs, serving it, and the
//! API it reads results through.
//!
//! - `launch`: `/smart/launch` (the `iss` allowlist), `/smart/` (the built `smart-app/dist`),
//!   `/smart/error` (clear pages for a launch that cannot go on).
//! - `token`: validating the EHR's access tokens (RFC 7662 introspection or JWKS).
//! - `api`: `/api/patients/{id}/studies`, `/api/results/{id}[/image.png|heatmap.png|
//!   mask.png|saliency.png|audit|feedback]`, each read audited and checked against the token's patient.
//!
//! Its settings (`[smart]`) live in `configuration::smart`; the demo EHR is the
//! `radsight-demo-ehr` crate, wired by `demo` only in builds with the `demo` feature.
//!
//! **Boundary:** the app is launched only by registered EHRs, and tokens are only ever sent to
//! the introspection endpoint of the EHR registered for the `iss` they came with.

pub mod api;
pub mod launch;
pub mod token;

use actix_web::web;
use anyhow::Context;
use secrecy::SecretString;

pub use crate::configuration::smart::{DEFAULT_SCOPES, EhrSettings, SmartSettings, TokenValidation};

use crate::configuration::Settings;

/// The SMART app's own state beside the core: the validator of registered EHRs' tokens.
pub struct SmartState {
    pub tokens: token::TokenValidator,
    /// The CSP `frame-ancestors` of the app's pages: radsight itself and the registered EHRs,
    /// so no other site can frame the app (and its feedback buttons).
    pub frame_ancestors: String,
}

impl SmartState {
    /// Registers the configured EHRs, and `extra` ones that start-up adds with their
    /// introspection secrets in memory (the demo EHR).
    pub fn build(
        settings: &Settings,
        extra: Vec<(EhrSettings, Option<SecretString>)>,
        http: reqwest::Client,
    ) -> anyhow::Result<SmartState> {
        let tokens = token::TokenValidator::new(&settings.smart, extra, &settings.auth, http).context("registering SMART EHRs")?;
        let frame_ancestors = std::iter::once("'self'".to_owned()).chain(tokens.origins()).collect::<Vec<_>>().join(" ");
        Ok(SmartState { tokens, frame_ancestors })
    }
}

/// The app and its API.
pub fn routes(cfg: &mut web::ServiceConfig) {
    api::routes(cfg);
    launch::routes(cfg);
}
