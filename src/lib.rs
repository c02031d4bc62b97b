//! radsight: explainable imaging AI in the EHR through CDS Hooks, SMART on FHIR, HL7v2 and
//! DICOMweb. See ARCHITECTURE.md for the map and the layering rule, which `layering` checks.
//!
//! The layers, from the bottom up (a module imports only from its own layer or those below):
//! 1. core: `domain`, `imaging`, `configuration`, `store`, `audit`, `auth`, `keys`,
//!    `http_client`, `telemetry`, `state`;
//! 2. edge: `http`, `mllp`;
//! 3. features: `dicomweb`, `results`, `analysis`, `jobs`, `backend_auth`, `outbox`, `hl7`,
//!    `notifications`, `cds_hooks`, `smart`, `audit_api`, `health`;
//! 4. application: `demo` (with the `demo` feature), `startup`, `cli`.

// Core.
pub mod audit;
pub mod auth;
pub mod configuration;
pub mod domain;
pub mod http_client;
pub mod imaging;
pub mod keys;
pub mod state;
pub mod store;
pub mod telemetry;

// Edge.
pub mod http;
pub mod mllp;

// Features.
pub mod analysis;
pub mod audit_api;
pub mod backend_auth;
pub mod cds_hooks;
pub mod dicomweb;
pub mod health;
pub mod hl7;
pub mod jobs;
pub mod notifications;
pub mod outbox;
pub mod results;
pub mod smart;

// Application.
pub mod cli;
#[cfg(feature = "demo")]
pub mod demo;
pub mod startup;

#[cfg(test)]
mod layering;
