//! Fuzz target: CDS client JWT verification, `auth::client_jwt::ClientVerifier::verify`, the
//! whole path: bearer parsing, header decoding and the algorithm/`typ`/`kid` checks, the
//! unverified `iss` read, the client and key lookup (one registered client with an inline JWKS
//! holding a P-256 key generated at start-up), the signature, the claim checks and the `jti`
//! replay store (an in-memory SQLite database, migrated). `ClientVerifier::claimed_issuer`
//! (used to audit failures) is fed the same header.
//!
//! The first byte chooses how the rest becomes the `Authorization` header:
//! - 0: the rest is the header value as sent (`Bearer <token>`, or anything).
//! - 1: `header JSON \0 claims JSON \0 signature`, each base64url-encoded and joined: a forged
//!   token whose JSON the fuzzer controls directly.
//! - 2: `header JSON \0 claims JSON`, signed with the registered key: a genuine signature, so
//!   every claim check and the replay store are reached.
//!
//! In modes 1 and 2 the text `KID` in the header becomes the key's `kid`, and `NOW` and `LATER`
//! in the claims become the current time and five minutes on, so seeds stay valid.
//!
//! Invariants: no panic, no hang; nothing verifies without the registered key's signature
//! (modes 0 and 1 never succeed); a token that verified is refused as a replay the second
//! time; a verified client is the registered issuer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| radsight_fuzz::client_jwt::run(data));
