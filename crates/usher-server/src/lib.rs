//! Usher's HTTP surface: the router, its middleware, the handlers, authentication,
//! the problem+json error format and the web UI's pages. Storage is reached only through `usher_store::Store`.

pub mod access;
pub mod app;
pub mod auth;
pub mod config;
pub mod connections;
pub mod extract;
pub mod idempotency;
pub mod jobs;
mod lingering;
pub mod live;
pub mod master_key;
pub mod openapi;
pub mod performance_cache;
pub mod problem;
pub mod rate_limit;
pub mod reads;
pub mod redis;
pub mod routes;
pub mod sealed;
pub mod seat_maps;
pub mod state;
pub mod sweeper;
pub mod telemetry;
pub mod tickets;
pub mod waiting;
pub mod web;

pub use app::{Application, BuildError};
pub use config::{MailConfig, PaymentsConfig, ServerConfig};
pub use master_key::MasterKeySource;
