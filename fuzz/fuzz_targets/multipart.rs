//! Fuzz target: the WADO-RS `multipart/related` reader (`dicomweb::multipart`). The input's
//! first line is the response's `Content-Type` (given to `multipart::boundary`; when it has no
//! usable boundary, `XyZ` is used so the body is still parsed), the rest is the body given to
//! `multipart::parse`.
//!
//! Invariants: no panic, no hang; every part's body is a slice of the input body and together
//! they are no longer than it; round trip: the parts written out again as a multipart body
//! (`--b`, a `Content-Type` header when the part had one, the body, ..., `--b--`) parse back to
//! the same parts, whenever that body is unambiguous (no part's body followed by the delimiter
//! contains the delimiter earlier).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| radsight_fuzz::multipart::run(data));
