//! Handlers, one module per area of the API.

pub mod accounts;
pub mod events;
pub mod ops;
