//! Analysis results: how they are stored (with their audit entry, atomically), served to
//! authorised callers, linked from cards by signed URLs, and expressed as FHIR.

pub mod api;
pub mod faithfulness;
pub mod fhir;
pub mod overlay;
pub mod store;

pub use crate::auth::links::LinkSigner;
pub use store::{Finding, ModelIdentity, RegionArea, StandardCode};
