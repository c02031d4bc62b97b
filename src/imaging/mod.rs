//! Imaging domain knowledge that needs no model: what an order asks for.

pub mod procedure;
