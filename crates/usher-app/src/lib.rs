//! Usher's application layer: one module per use case. A use case loads facts through
//! the storage ports (`usher_store`), asks the core (`usher_core`) to decide, and
//! applies the decision through the ports in one transaction. Engines implement the
//! ports and decide nothing; the HTTP routes and the pages call these use cases.

pub mod accounts;
pub mod box_office;
pub mod catalog;
pub mod hold;
pub mod inventory;
pub mod payments;
pub mod waiting_list;
pub mod waiting_room;

pub use hold::Holds;
