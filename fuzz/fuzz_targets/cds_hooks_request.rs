//! Fuzz target: a CDS Hooks call's body as the hook handler reads it: `http::body::parse_json`
//! (JSON that names no key twice), then `cds_hooks::request::parse_hook_request` for each
//! service radsight ships (`cds-hooks/services.json`: order-select, order-sign, patient-view),
//! then `cds_hooks::prefetch::resolve` with that service's prefetch templates. The calling
//! client has no registered FHIR server, so `resolve` never reaches the network: a missing key
//! is refused (412) and an unusable slot becomes a card, as in production without a server.
//! Each template is also filled (`fill_template`) and each sent prefetch value checked against
//! each template's type (`check_slot`).
//!
//! Invariants: no panic, no hang, no unbounded allocation; `parse_json` agrees with serde_json
//! (the same value when it accepts, and when it refuses JSON serde_json reads, it is for a
//! repeated key); a filled template holds no `{{`-token text from the context unescaped (values
//! are form-urlencoded).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| radsight_fuzz::cds_hooks_request::run(data));
