//! radsight: explainable imaging AI in the EHR through CDS Hooks, SMART on FHIR, HL7v2 and
//! DICOMweb. See ARCHITECTURE.md for the map.

pub mod analysis;
pub mod audit;
pub mod auth;
pub mod cds_hooks;
pub mod cli;
pub mod configuration;
pub mod dicomweb;
pub mod domain;
pub mod health;
pub mod hl7;
pub mod http_client;
pub mod imaging;
pub mod jobs;
pub mod keys;
pub mod notifications;
pub mod results;
pub mod smart;
pub mod startup;
pub mod store;
pub mod telemetry;
