//! The CDS Hooks 2.0 service: discovery, the imaging hooks and feedback.
//!
//! Life of a hook call: authenticate the client JWT → read the body under the size limit →
//! validate the request for the service's hook → gather prefetch (fetching missing keys only from
//! a registered `fhirServer`) → run the safety rules on the imaging orders and read stored AI
//! results → in one transaction, append the audit entry and store every card → answer.
//! Any failure after authentication is audited too, before the error is sent.

pub mod cards;
pub mod definitions;
pub mod error;
mod feedback;
mod hooks;
pub mod prefetch;
pub mod request;
pub mod results;
pub mod rules;
pub mod stored_card;

use std::time::Duration;

use actix_web::{HttpResponse, web};
use anyhow::Context;

use crate::audit::{Action, AuditEvent, Outcome};
use crate::configuration::Settings;
use crate::http::HttpError;
use crate::http::client_auth::CdsClient;
use crate::imaging::procedure::ProcedureCatalog;
use crate::state::AppState;
use definitions::ServiceDefinitions;
use prefetch::FhirFetcher;

/// What the hooks need beside the core: the discovery document, the FHIR fetcher for missing
/// prefetch, and the procedure catalog the rules classify orders with.
pub struct HookState {
    pub definitions: ServiceDefinitions,
    pub fhir: FhirFetcher,
    pub catalog: ProcedureCatalog,
}

impl HookState {
    pub fn build(settings: &Settings, http: reqwest::Client) -> anyhow::Result<HookState> {
        Ok(HookState {
            definitions: ServiceDefinitions::load(&settings.hooks.definitions_file).context("loading service definitions")?,
            fhir: FhirFetcher::new(http, Duration::from_millis(settings.hooks.fhir_timeout_ms), settings.hooks.fhir_max_response_bytes),
            catalog: ProcedureCatalog::load(&settings.procedures).context("loading the procedure catalog")?,
        })
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cds-services", web::get().to(discovery))
        .route("/cds-services/{id}", web::post().to(hooks::call_service))
        .route("/cds-services/{id}/feedback", web::post().to(feedback::receive_feedback));
}

async fn discovery(
    CdsClient(client): CdsClient,
    state: web::Data<AppState>,
    hooks: web::Data<HookState>,
) -> Result<HttpResponse, HttpError> {
    let event = AuditEvent::new(Action::Discovery, Outcome::Success).actor(Some(&client.iss), None);
    state.audit.record(&state.db, event).await.map_err(HttpError::internal)?;
    Ok(HttpResponse::Ok().content_type("application/json").body(hooks.definitions.discovery_json().to_owned()))
}
