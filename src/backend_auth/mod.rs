//! radsight as a client of other systems' authorisation servers: SMART Backend Services
//! (client_credentials with a `private_key_jwt` assertion signed by radsight's own key), and
//! the JWKS it publishes so those servers can check the assertions.

pub mod jwks;
pub mod token;

pub use token::{BackendTokens, TokenError};
