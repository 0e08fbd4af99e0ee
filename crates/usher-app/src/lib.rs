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

use usher_store::{StoreResult, Tx};

/// Ends a use case's transaction with what ran in it: commits when `keep` says the
/// result is worth keeping, rolls back otherwise. An error rolls back too (a failing
/// rollback is beside the point then) and is returned.
async fn settle<X: Tx + ?Sized, T>(
    tx: Box<X>,
    ran: StoreResult<T>,
    keep: impl FnOnce(&T) -> bool,
) -> StoreResult<T> {
    match ran {
        Ok(value) if keep(&value) => {
            tx.commit().await?;
            Ok(value)
        }
        Ok(value) => {
            tx.rollback().await?;
            Ok(value)
        }
        Err(error) => {
            let _ = tx.rollback().await;
            Err(error)
        }
    }
}
