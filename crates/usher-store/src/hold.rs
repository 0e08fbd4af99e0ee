//! The port a hold runs on: what the hold use case (`usher_app::hold`) reads and
//! writes inside one transaction. Engines implement it with SQL and nothing else; the
//! rule that decides between holds is `usher_core::hold`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use usher_core::ids::{BookingId, PerformanceId, TicketTypeId, UnitId, UserId};

use usher_core::best_available::{Read, Seat, SeatRow};
use usher_core::hold::{HeldUnit, HoldFacts, LockedUnit, UnitTake};

use crate::{ChangeSet, LiveChange, StoreResult};

/// How an engine's hold transactions behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldEngine {
    /// How many transactions may write holds at once, so how many writer tasks the
    /// write pipeline runs (each a shard of performances).
    pub writers: usize,
    /// Nothing but this transaction writes while it runs (one writer connection): what
    /// it read stays as read, so a short read is final and a read choice never loses.
    pub serialised: bool,
}

/// A booking a hold created, as the batch writes it.
#[derive(Debug, Clone)]
pub struct NewHold {
    pub booking_id: BookingId,
    pub user_id: UserId,
    pub performance_id: PerformanceId,
    pub held_until: DateTime<Utc>,
    pub currency: usher_core::Currency,
    pub created_at: DateTime<Utc>,
    pub offer: bool,
    /// (unit, price) of every unit it took.
    pub units: Vec<(UnitId, i64)>,
}

/// An open transaction of a port: what it wrote stands once committed.
#[async_trait]
pub trait Tx: Send {
    /// A lost race (deadlock, serialisation) is [`crate::StoreError::Conflict`].
    async fn commit(self: Box<Self>) -> StoreResult<()>;
    async fn rollback(self: Box<Self>) -> StoreResult<()>;
}

/// One open transaction of the hold path. Every statement that locks units locks them
/// in id order, so holds, sweeps and payments never deadlock on each other.
#[async_trait]
pub trait HoldTx: Tx {
    /// What holds need to know of these performances (those that exist).
    async fn hold_facts(
        &mut self,
        performances: &[PerformanceId],
    ) -> StoreResult<Vec<(PerformanceId, HoldFacts)>>;
    /// The rows of the performance's seat map (none for general admission), in
    /// section and row order. They never change once the performance exists.
    async fn seat_rows(&mut self, performance_id: PerformanceId) -> StoreResult<Vec<SeatRow>>;
    /// Up to `read.limit` seats of the section's price group marked available, from
    /// row `read.from_row` on, in row then seat order; not locked. Walks the available
    /// seats alone (an index on them), never the taken ones.
    async fn available_seats(&mut self, read: Read) -> StoreResult<Vec<Seat>>;
    /// The performance's seats still marked held whose holds ran out by `now` (free),
    /// in any order; not locked. Found through the holds that ran out (an index on
    /// them), never by walking the seats.
    async fn expired_seats(
        &mut self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Seat>>;
    /// These units as they are, locked until the transaction ends. Unknown ids are
    /// left out.
    async fn lock_units(&mut self, ids: &[UnitId]) -> StoreResult<Vec<LockedUnit>>;
    /// Up to `wanted` units of the ticket type free at `now`, locked. `skip_locked`:
    /// units other transactions are locking are passed over instead of waited for.
    async fn free_units(
        &mut self,
        ticket_type_id: TicketTypeId,
        now: DateTime<Utc>,
        wanted: u32,
        skip_locked: bool,
    ) -> StoreResult<Vec<UnitId>>;
    /// How many units of the ticket type are free at `now`, locked by others or not.
    async fn count_free(
        &mut self,
        ticket_type_id: TicketTypeId,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// The arbiter: takes each unit for its booking only if it is free at its `now`,
    /// and returns what it took.
    async fn take_units(&mut self, takes: &[UnitTake]) -> StoreResult<Vec<HeldUnit>>;
    /// Writes the bookings and their units.
    async fn insert_holds(&mut self, holds: &[NewHold]) -> StoreResult<()>;
    /// Logs the moves for live seat maps; the changes are published after the commit.
    /// The feed's heads are the last locks a transaction takes: call it last.
    async fn record_live(
        &mut self,
        moved: ChangeSet,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<LiveChange>>;
}

/// One open transaction of the other inventory changes: cancellations, expiry and
/// blocking (`usher_app::inventory`). Its hold-path methods lock and read units the same
/// way.
#[async_trait]
pub trait InventoryTx: HoldTx {
    /// Cancels the booking if it is held and its hold has not run out at `now` (one
    /// conditional write); false when it changed nothing.
    async fn cancel_held(&mut self, booking_id: BookingId, now: DateTime<Utc>)
    -> StoreResult<bool>;
    /// Expires up to `limit` held bookings past their time, skipping any another
    /// transaction is working on (sweepers of several instances share the work). Their ids.
    async fn expire_held(&mut self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<BookingId>>;
    /// Frees the units these bookings still hold (a unit re-taken by the next buyer
    /// names the new booking and is left alone), locked in id order. Each as
    /// `(performance id, unit id)`.
    async fn release_held(
        &mut self,
        bookings: &[BookingId],
    ) -> StoreResult<Vec<(PerformanceId, UnitId)>>;
    async fn booking(&mut self, id: BookingId) -> StoreResult<Option<usher_core::Booking>>;
    /// Blocks these units, detaching any (expired) hold; those whose state changed.
    async fn block_units(&mut self, ids: &[UnitId]) -> StoreResult<Vec<UnitId>>;
    /// Makes these blocked units available; those whose state changed.
    async fn unblock_units(&mut self, ids: &[UnitId]) -> StoreResult<Vec<UnitId>>;
    async fn insert_audit(&mut self, entry: &crate::AuditEntry) -> StoreResult<()>;
}
