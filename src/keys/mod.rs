//! Signing keys. Client keys (`radsight keys generate|token`, the tests' real keys) come from
//! the `radsight-keys` crate, which the demo EHR shares, re-exported under their old path.
//! radsight's own keys, with which it signs as a client of other systems (SMART Backend
//! Services assertions), live in a [`keyring::Keyring`].

pub mod keyring;

pub use radsight_keys::*;
