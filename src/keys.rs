//! Client signing keys (`radsight keys`, the tests' real keys): the `radsight-keys` crate, which
//! the demo EHR shares, re-exported under its old path.

pub use radsight_keys::*;
