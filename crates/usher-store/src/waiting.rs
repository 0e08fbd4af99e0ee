//! The waiting list (people waiting for a sold-out performance, served as units come
//! back) and the waiting room (the queue in front of an on-sale). Both engines store
//! them; the rules that decide who is served and who is admitted live here, once.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use usher_core::ids::{BookingId, PerformanceId, TicketTypeId, UserId};
use uuid::Uuid;

pub use usher_core::waiting_room::SaleState;

use crate::{StoreError, StoreResult};

pub use usher_core::waiting_list::MAX_PASSES;

#[derive(Debug, Clone)]
pub struct WaitlistJoin {
    pub id: Uuid,
    pub user_id: UserId,
    pub performance_id: PerformanceId,
    /// General admission: the ticket type waited for; reserved seating: `None`.
    pub ticket_type_id: Option<TicketTypeId>,
    pub quantity: u32,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitlistJoined {
    Joined(WaitlistEntry),
    /// The user already waits for this performance; that entry.
    AlreadyWaiting(WaitlistEntry),
    /// Enough units are free and nobody waits for them: hold them instead.
    NotSoldOut {
        free: u64,
    },
    /// Cancelled, started, not yet on sale, or its event not published.
    NotOnSale,
    NoSuchPerformance,
    /// General admission: no such ticket type (or none given); reserved: one was given.
    WrongTicketType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitlistStatus {
    Waiting,
    /// A hold was made for them and is still live.
    Offered,
    /// The offer was paid for.
    Booked,
    /// The offer ran out unpaid.
    Lapsed,
    /// They left the list, or turned the offer down.
    Left,
}

impl std::fmt::Display for WaitlistStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl WaitlistStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitlistStatus::Waiting => "waiting",
            WaitlistStatus::Offered => "offered",
            WaitlistStatus::Booked => "booked",
            WaitlistStatus::Lapsed => "lapsed",
            WaitlistStatus::Left => "left",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitlistEntry {
    pub id: Uuid,
    pub user_id: UserId,
    pub performance_id: PerformanceId,
    pub ticket_type_id: Option<TicketTypeId>,
    pub quantity: u32,
    pub status: WaitlistStatus,
    /// 1 for the first in line; only while waiting.
    pub position: Option<u64>,
    /// The hold made for them, once offered.
    pub booking_id: Option<BookingId>,
    pub offer_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// An entry as both engines read it, with its offer's booking.
#[derive(Debug)]
pub struct WaitlistRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub performance_id: Uuid,
    pub ticket_type_id: Option<Uuid>,
    pub quantity: i64,
    pub status: String,
    pub booking_id: Option<Uuid>,
    pub booking_status: Option<String>,
    pub booking_held_until: Option<DateTime<Utc>>,
    pub position: Option<i64>,
    pub created_at: DateTime<Utc>,
}

impl WaitlistRow {
    /// The entry as it reads at `now`: an offer's fate comes from its booking.
    pub fn into_entry(self, now: DateTime<Utc>) -> StoreResult<WaitlistEntry> {
        let live_offer = self.booking_held_until.filter(|until| *until > now);
        let status = match (self.status.as_str(), self.booking_status.as_deref()) {
            ("waiting", _) => WaitlistStatus::Waiting,
            // Paid for, even if they left the list as the payment landed.
            (_, Some("confirmed" | "refunded")) => WaitlistStatus::Booked,
            ("left", _) => WaitlistStatus::Left,
            ("offered", Some("held")) if live_offer.is_some() => WaitlistStatus::Offered,
            ("offered", Some("held" | "expired")) => WaitlistStatus::Lapsed,
            ("offered", Some("cancelled")) => WaitlistStatus::Left,
            (status, booking) => {
                return Err(StoreError::Backend(format!(
                    "corrupt waiting-list entry {}: {status} with booking {booking:?}",
                    self.id
                )));
            }
        };
        Ok(WaitlistEntry {
            id: self.id,
            user_id: self.user_id.into(),
            performance_id: self.performance_id.into(),
            ticket_type_id: self.ticket_type_id.map(Into::into),
            quantity: u32::try_from(self.quantity).unwrap_or(0),
            status,
            position: (status == WaitlistStatus::Waiting)
                .then(|| self.position.map(|p| p.max(1) as u64))
                .flatten(),
            booking_id: self.booking_id.map(Into::into),
            offer_expires_at: (status == WaitlistStatus::Offered)
                .then_some(live_offer)
                .flatten(),
            created_at: self.created_at,
        })
    }
}

/// The answer to a join, from the user's waiting entry as read after the insert: this
/// join's own, or the one another join of theirs committed first (the insert then wrote
/// nothing).
pub fn joined(rows: Vec<WaitlistRow>, join: &WaitlistJoin) -> StoreResult<WaitlistJoined> {
    let row = rows.into_iter().next().ok_or_else(|| {
        StoreError::Backend("waiting-list entry vanished after its insert".into())
    })?;
    let fresh = row.id == join.id;
    let entry = row.into_entry(join.now)?;
    Ok(if fresh {
        WaitlistJoined::Joined(entry)
    } else {
        WaitlistJoined::AlreadyWaiting(entry)
    })
}

/// What a join needs of the engine, inside one transaction that no other join or
/// serving of the same performance runs beside (`usher_app::waiting_list::join`).
#[async_trait]
pub trait JoinTx: crate::HoldTx {
    /// The user's waiting entry for the performance, if they wait already.
    async fn waiting_entry(
        &mut self,
        performance_id: PerformanceId,
        user_id: UserId,
    ) -> StoreResult<Option<WaitlistRow>>;
    /// Units of the performance (of the ticket type, when one is given) free at `now`.
    async fn count_free_in(
        &mut self,
        performance_id: PerformanceId,
        ticket_type_id: Option<TicketTypeId>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Puts the entry at the end of the line (numbered max + 1), unless the user waits
    /// already: then nothing is written.
    async fn insert_entry(&mut self, join: &WaitlistJoin) -> StoreResult<()>;
}

/// A waiting entry as serving reads it, in line order.
#[derive(Debug, Clone)]
pub struct WaitingRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub ticket_type_id: Option<Uuid>,
    pub quantity: i64,
    pub passed_over: i64,
}

/// What serving needs of the engine, inside one transaction that no other serving of
/// the same performance runs beside.
#[async_trait]
pub trait ServeTx: crate::HoldTx {
    /// The performance's waiting entries in line order (arrival).
    async fn waiting(&mut self, performance_id: PerformanceId) -> StoreResult<Vec<WaitingRow>>;
    /// Marks the entry offered with its hold and queues the offer's email.
    async fn offered(
        &mut self,
        entry_id: Uuid,
        booking_id: BookingId,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Counts one more pass of the entry first in line.
    async fn passed_over(&mut self, entry_id: Uuid, now: DateTime<Utc>) -> StoreResult<()>;
}

// --- the waiting room ---------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct QueueJoin {
    pub ticket_id: Uuid,
    pub user_id: UserId,
    pub performance_id: PerformanceId,
    /// Orders everyone who joins before the opening (a random number).
    pub draw: i64,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueJoined {
    Joined(QueueTicket),
    /// The user had joined this queue before: that ticket.
    Again(QueueTicket),
    NoSuchPerformance,
    /// The performance has no waiting room (or is not on sale at all).
    NoWaitingRoom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueState {
    Waiting,
    Admitted,
    /// Everything is sold: there is nothing left to wait for.
    Closed,
}

impl std::fmt::Display for QueueState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl QueueState {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Waiting => "waiting",
            QueueState::Admitted => "admitted",
            QueueState::Closed => "closed",
        }
    }
}

/// The queue of one performance as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRoom {
    pub performance_id: PerformanceId,
    pub on_sale_at: Option<DateTime<Utc>>,
    /// When the draw was made; `None` before the opening.
    pub opened_at: Option<DateTime<Utc>>,
    /// Everyone numbered up to here is admitted.
    pub admitted_through: i64,
    /// Numbers handed out so far.
    pub numbered: i64,
    pub closed: bool,
}

impl QueueRoom {
    /// Seconds until someone `position` places from the front is admitted, at the pace
    /// seen so far; before the opening, at least the time until it.
    pub fn eta_seconds(&self, position: u64, now: DateTime<Utc>) -> Option<u64> {
        match self.opened_at {
            None => self
                .on_sale_at
                .map(|at| (at - now).num_seconds().max(0) as u64),
            Some(opened) => {
                let elapsed = (now - opened).num_milliseconds().max(1_000) as f64 / 1_000.0;
                let rate = self.admitted_through as f64 / elapsed;
                (rate > 0.0).then(|| (position as f64 / rate).ceil() as u64)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTicket {
    pub id: Uuid,
    pub user_id: UserId,
    pub performance_id: PerformanceId,
    pub state: QueueState,
    /// Places from the front (1: next); 0 once admitted. Before the opening, the place
    /// in the draw among those here so far: final at the opening.
    pub position: u64,
    pub admitted_at: Option<DateTime<Utc>>,
    pub joined_at: DateTime<Utc>,
    /// Its number in the queue, from the opening on.
    pub seq: Option<i64>,
    pub room: QueueRoom,
}

impl QueueTicket {
    /// The ticket in a later state of its room; `None` when that takes a read (it had
    /// no number yet and the room has opened since, or it has been admitted since).
    pub fn in_room(&self, room: &QueueRoom) -> Option<QueueTicket> {
        if self.seq.is_none() && room.opened_at.is_some() {
            return None;
        }
        let (state, position) = place(self.seq, self.position.saturating_sub(1), room);
        // Admitted since: when exactly (the admission's clock) takes a read.
        if state == QueueState::Admitted && self.admitted_at.is_none() {
            return None;
        }
        Some(QueueTicket {
            state,
            position,
            room: room.clone(),
            ..self.clone()
        })
    }
}

/// Where a ticket numbered `seq` (or, before the opening, with `ahead` before it in the
/// draw) stands in `room`.
fn place(seq: Option<i64>, ahead: u64, room: &QueueRoom) -> (QueueState, u64) {
    match seq {
        Some(seq) if seq <= room.admitted_through => (QueueState::Admitted, 0),
        _ if room.closed => (QueueState::Closed, 0),
        Some(seq) => (QueueState::Waiting, (seq - room.admitted_through) as u64),
        None => (QueueState::Waiting, ahead + 1),
    }
}

/// A ticket row as both engines read it.
#[derive(Debug)]
pub struct QueueTicketRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub performance_id: Uuid,
    pub seq: Option<i64>,
    pub admitted_at: Option<DateTime<Utc>>,
    pub joined_at: DateTime<Utc>,
}

impl QueueTicketRow {
    /// The ticket as it reads in `room`; `ahead` counts tickets before it in the draw
    /// (used only while it has no number).
    pub fn into_ticket(self, room: QueueRoom, ahead: u64) -> QueueTicket {
        let (state, position) = place(self.seq, ahead, &room);
        QueueTicket {
            id: self.id,
            user_id: self.user_id.into(),
            performance_id: self.performance_id.into(),
            state,
            position,
            admitted_at: self.admitted_at,
            joined_at: self.joined_at,
            seq: self.seq,
            room,
        }
    }
}

/// What joining a waiting room and stepping its gatekeeper need of the engine, in one
/// transaction (`usher_app::waiting_room`). The room's row is locked when read.
#[async_trait]
pub trait QueueTx: crate::Tx {
    /// Whether the performance exists: `(has a waiting room, selling at now: scheduled,
    /// published and not started)`.
    async fn door(
        &mut self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(bool, bool)>>;
    /// Opens the performance's room if it has none yet.
    async fn open_room(
        &mut self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// The room, locked until the transaction ends.
    async fn lock_room(&mut self, performance_id: PerformanceId) -> StoreResult<Option<QueueRoom>>;
    /// A ticket for the join, numbered `seq`, unless the buyer has one for the
    /// performance (then nothing is written); whether it was written.
    async fn insert_ticket(&mut self, join: &QueueJoin, seq: Option<i64>) -> StoreResult<bool>;
    async fn ticket_of(
        &mut self,
        performance_id: PerformanceId,
        user_id: UserId,
    ) -> StoreResult<QueueTicketRow>;
    /// `(draw, ticket id)` of everyone not numbered yet, by draw.
    async fn draws(&mut self, performance_id: PerformanceId) -> StoreResult<Vec<(i64, Uuid)>>;
    /// Numbers everyone not numbered yet after `base`, in the order of their draws; how
    /// many were numbered.
    async fn number_by_draw(
        &mut self,
        performance_id: PerformanceId,
        base: i64,
    ) -> StoreResult<i64>;
    /// What the gatekeeper weighs: units free and held at `now`, buyers admitted since
    /// `admitted_since` who have not held, bookings since `opened_at`.
    async fn sale_state(
        &mut self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
        admitted_since: DateTime<Utc>,
        opened_at: DateTime<Utc>,
    ) -> StoreResult<SaleState>;
    /// Admits the tickets numbered after `after` up to `through`.
    async fn admit(
        &mut self,
        performance_id: PerformanceId,
        after: i64,
        through: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Writes the room as it is now.
    async fn save_room(&mut self, room: &QueueRoom, now: DateTime<Utc>) -> StoreResult<()>;
}

/// How the gatekeeper admits.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionPolicy {
    /// How long an admission lasts; an admitted buyer who has not held by then no
    /// longer counts as about to buy.
    pub ttl: Duration,
    /// Admitted at most per step, whatever is left.
    pub max_per_step: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        status: &str,
        booking: Option<&str>,
        held_until: Option<DateTime<Utc>>,
    ) -> WaitlistRow {
        WaitlistRow {
            id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            performance_id: Uuid::now_v7(),
            ticket_type_id: None,
            quantity: 2,
            status: status.into(),
            booking_id: booking.map(|_| Uuid::now_v7()),
            booking_status: booking.map(Into::into),
            booking_held_until: held_until,
            position: Some(3),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn an_offer_reads_what_became_of_its_hold() {
        let now = Utc::now();
        let read = |row: WaitlistRow| row.into_entry(now).unwrap();
        let waiting = read(entry("waiting", None, None));
        assert_eq!(
            (waiting.status, waiting.position),
            (WaitlistStatus::Waiting, Some(3))
        );
        let later = now + Duration::minutes(5);
        let offered = read(entry("offered", Some("held"), Some(later)));
        assert_eq!(
            (offered.status, offered.position, offered.offer_expires_at),
            (WaitlistStatus::Offered, None, Some(later))
        );
        let earlier = Some(now - Duration::seconds(1));
        assert_eq!(
            read(entry("offered", Some("held"), earlier)).status,
            WaitlistStatus::Lapsed
        );
        assert_eq!(
            read(entry("offered", Some("expired"), earlier)).status,
            WaitlistStatus::Lapsed
        );
        assert_eq!(
            read(entry("offered", Some("cancelled"), earlier)).status,
            WaitlistStatus::Left
        );
        assert_eq!(
            read(entry("offered", Some("confirmed"), earlier)).status,
            WaitlistStatus::Booked
        );
        // Left as the payment landed: it was paid for.
        assert_eq!(
            read(entry("left", Some("confirmed"), earlier)).status,
            WaitlistStatus::Booked
        );
        assert_eq!(
            read(entry("left", Some("cancelled"), earlier)).status,
            WaitlistStatus::Left
        );
        assert!(entry("offered", None, None).into_entry(now).is_err());
    }
}
