//! Handlers, one module per area of the API.

pub mod accounts;
pub mod admin;
pub mod bookings;
pub mod box_office;
pub mod events;
pub mod live;
pub mod ops;
pub mod payments;
pub mod performances;
pub mod waiting;
