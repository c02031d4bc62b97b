//! Fuzz target: `radsight-fhir`'s entry points on any JSON: `parse_resource`, `parse_bundle`,
//! `parse_resources` (what prefetch and fetched search results go through) and
//! `parse_notification` (the `POST /fhir/notifications` body). The bytes are read with
//! serde_json first, as every caller does.
//!
//! Invariants: no panic, no hang, no unbounded allocation; the entry points agree with each
//! other (`parse_resources` is `parse_bundle` for a Bundle and `[parse_resource]` otherwise; a
//! Bundle yields at most one resource per entry; a notification names at most as many studies
//! as it has entries, and every endpoint reference is either resolved or listed unresolved); a
//! parsed `ServiceRequest` keeps its JSON unchanged in `raw`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| radsight_fuzz::fhir::run(data));
