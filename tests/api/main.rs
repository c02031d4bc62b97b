//! radsight's API tests: one binary, every test against a freshly spawned service on SQLite
//! and again on PostgreSQL (see `backend_tests!`), with a FHIR server fixture as the EHR.

mod fhir_fixture;
#[macro_use]
mod helpers;

mod analysis;
mod audit_log;
mod audit_trail;
mod bad_input;
mod bounded_audit;
mod card_storage_migration;
mod client_auth;
mod compressed_pacs;
mod crash_under_load;
mod dicomweb;
mod discovery;
mod feedback;
mod fuzz_regressions;
mod hardening;
mod headers;
mod hl7;
mod identity;
mod jobs;
mod mllp_tls;
mod models_cli;
mod notifications;
mod order_hooks;
mod own_model;
mod pacs;
mod pacs_outputs;
mod patient_view;
mod png;
mod prefetch;
mod prefetch_safety;
mod results;
mod ris_ehr_outputs;
mod segmentation;
mod smart_api;
mod smart_browser;
#[cfg(feature = "demo")]
mod smart_demo;
mod smart_ehr;
mod smart_launch;
mod synthetic;
