//! The waiting list and the waiting room on PostgreSQL. Several instances may serve the
//! same waiting list or step the same queue: each serving and each join locks its
//! performance's row (`FOR NO KEY UPDATE`, which new bookings' foreign keys do not wait
//! for; a join numbers its place in line under it, so places follow commit order), each
//! gatekeeper step and each batch of joins locks the queue's room row. Offers are made
//! by the hold path itself, so the conditional writes stay the arbiter.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use usher_core::ids::{BookingId, PerformanceId, TicketTypeId, UserId};
use uuid::Uuid;

use usher_core::{Cursor, PageLimit};
use usher_store::payments::JobKind;
use usher_store::waiting::{
    JoinTx, QueueTicketRow, QueueTx, SaleState, ServeTx, WaitingRow, WaitlistRow,
};
use usher_store::{
    Page, QueueJoin, QueueRoom, QueueTicket, StoreResult, WaitlistEntry, WaitlistJoin, paginate,
};

use crate::hold::PgTx;
use crate::payments::enqueue;
use crate::{PostgresStore, backend};

/// Entries with their offer's booking and their place in line.
macro_rules! entry_rows {
    ($conn:expr, $filter:literal, $($arg:expr),*) => {
        sqlx::query_as!(
            WaitlistRow,
            r#"SELECT w.id, w.user_id, w.performance_id, w.ticket_type_id,
                      w.quantity::bigint AS "quantity!", w.status, w.booking_id,
                      b.status AS "booking_status?", b.held_until AS "booking_held_until?",
                      CASE WHEN w.status = 'waiting' THEN
                          (SELECT COUNT(*) FROM waitlist_entries o
                           WHERE o.performance_id = w.performance_id AND o.status = 'waiting'
                             AND o.ticket_type_id IS NOT DISTINCT FROM w.ticket_type_id
                             AND o.line < w.line) + 1
                      END AS "position?",
                      w.created_at
               FROM waitlist_entries w LEFT JOIN bookings b ON b.id = w.booking_id
               WHERE "# + $filter,
            $($arg),*
        )
        .fetch_all($conn)
        .await
        .map_err(backend)
    };
}

impl PostgresStore {
    /// The join's transaction, with the performance's row locked (as serving locks it):
    /// each join is numbered and told its place after every join before it has
    /// committed.
    pub(crate) async fn joining(&self, performance_id: Uuid) -> StoreResult<Box<dyn JoinTx>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query!(
            "SELECT id FROM performances WHERE id = $1 FOR NO KEY UPDATE",
            performance_id
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        Ok(Box::new(PgTx { tx }))
    }

    pub(crate) async fn waitlist_entry_at(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WaitlistEntry>> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        entry_rows!(&mut *conn, "w.id = $1", id)?
            .pop()
            .map(|row| row.into_entry(now))
            .transpose()
    }

    pub(crate) async fn user_waitlist(
        &self,
        user_id: Uuid,
        now: DateTime<Utc>,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<WaitlistEntry>> {
        let after = after.map(Cursor::id);
        let fetch = i64::from(limit.get()) + 1;
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        let rows = entry_rows!(
            &mut *conn,
            "w.user_id = $1 AND ($2::uuid IS NULL OR w.id < $2) ORDER BY w.id DESC LIMIT $3",
            user_id,
            after,
            fetch
        )?;
        let entries = rows
            .into_iter()
            .map(|row| row.into_entry(now))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(entries, limit, |e| e.id))
    }

    pub(crate) async fn leave_waitlist(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WaitlistEntry>> {
        sqlx::query!(
            "UPDATE waitlist_entries SET status = 'left', updated_at = $2
             WHERE id = $1 AND status IN ('waiting', 'offered')",
            id,
            now
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        self.waitlist_entry_at(id, now).await
    }

    /// The serving transaction, with the performance's row locked: one serving per
    /// performance at a time, across instances.
    pub(crate) async fn serving(
        &self,
        performance_id: Uuid,
    ) -> StoreResult<Option<Box<dyn ServeTx>>> {
        // Most releases happen where nobody waits: a read says so without a transaction.
        let anyone = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM waitlist_entries
                              WHERE performance_id = $1 AND status = 'waiting') AS "any!""#,
            performance_id
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        if !anyone {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let locked = sqlx::query_scalar!(
            "SELECT id FROM performances WHERE id = $1 FOR NO KEY UPDATE",
            performance_id
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        Ok(locked.map(|_| Box::new(PgTx { tx }) as Box<dyn ServeTx>))
    }

    pub(crate) async fn waitlists_due(&self, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
        sqlx::query_scalar!(
            r#"SELECT DISTINCT w.performance_id AS "id!"
               FROM waitlist_entries w
               JOIN performances p ON p.id = w.performance_id
               JOIN events e ON e.id = p.event_id
               WHERE w.status = 'waiting' AND p.status = 'scheduled' AND e.status = 'published'
                 AND p.starts_at > $1 AND (p.on_sale_at IS NULL OR p.on_sale_at <= $1)
                 AND EXISTS (SELECT 1 FROM units u
                             WHERE u.performance_id = w.performance_id
                               AND (u.state = 'available' OR (u.state = 'held' AND u.held_until <= $1)))"#,
            now
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)
    }

    // --- the waiting room -----------------------------------------------------------

    pub(crate) async fn ticket(&self, id: Uuid) -> StoreResult<Option<QueueTicket>> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        let Some(row) = sqlx::query_as!(
            QueueTicketRow,
            "SELECT id, user_id, performance_id, seq, admitted_at, joined_at
             FROM queue_tickets WHERE id = $1",
            id
        )
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?
        else {
            return Ok(None);
        };
        let Some(room) = room(&mut conn, row.performance_id).await? else {
            return Ok(None);
        };
        let ahead = if row.seq.is_none() {
            sqlx::query_scalar!(
                r#"SELECT COUNT(*) AS "n!" FROM queue_tickets
                   WHERE performance_id = $1 AND seq IS NULL
                     AND draw < (SELECT draw FROM queue_tickets WHERE id = $2)"#,
                row.performance_id,
                id
            )
            .fetch_one(&mut *conn)
            .await
            .map_err(backend)? as u64
        } else {
            0
        };
        Ok(Some(row.into_ticket(room, ahead)))
    }

    pub(crate) async fn queue_room_of(
        &self,
        performance_id: Uuid,
    ) -> StoreResult<Option<QueueRoom>> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        room(&mut conn, performance_id).await
    }

    pub(crate) async fn rooms_due(&self, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
        sqlx::query_scalar!(
            "SELECT r.performance_id
             FROM queue_rooms r JOIN performances p ON p.id = r.performance_id
             WHERE (p.on_sale_at IS NULL OR p.on_sale_at <= $1)
               AND (r.opened_at IS NULL OR r.admitted_through < r.next_seq - 1)",
            now
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)
    }
}

#[async_trait]
impl ServeTx for PgTx {
    async fn waiting(&mut self, performance_id: PerformanceId) -> StoreResult<Vec<WaitingRow>> {
        sqlx::query_as!(
            WaitingRow,
            r#"SELECT id, user_id, ticket_type_id, quantity::bigint AS "quantity!",
                      passed_over::bigint AS "passed_over!"
               FROM waitlist_entries
               WHERE performance_id = $1 AND status = 'waiting'
               ORDER BY line"#,
            performance_id.uuid()
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(backend)
    }

    async fn offered(
        &mut self,
        entry_id: Uuid,
        booking_id: BookingId,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query!(
            "UPDATE waitlist_entries SET status = 'offered', booking_id = $2, updated_at = $3
             WHERE id = $1",
            entry_id,
            booking_id.uuid(),
            now
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        enqueue(
            &mut self.tx,
            JobKind::OfferEmail,
            serde_json::json!({ "booking_id": booking_id }),
            now,
        )
        .await
    }

    async fn passed_over(&mut self, entry_id: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query!(
            "UPDATE waitlist_entries SET passed_over = passed_over + 1, updated_at = $2
             WHERE id = $1",
            entry_id,
            now
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(())
    }
}

/// A performance's queue as it reads now.
async fn room(conn: &mut PgConnection, performance_id: Uuid) -> StoreResult<Option<QueueRoom>> {
    let row = sqlx::query!(
        r#"SELECT p.on_sale_at, r.opened_at, r.admitted_through, r.next_seq, r.closed
           FROM queue_rooms r JOIN performances p ON p.id = r.performance_id
           WHERE r.performance_id = $1"#,
        performance_id
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(row.map(|r| QueueRoom {
        performance_id: performance_id.into(),
        on_sale_at: r.on_sale_at,
        opened_at: r.opened_at,
        admitted_through: r.admitted_through,
        numbered: r.next_seq - 1,
        closed: r.closed,
    }))
}

#[async_trait]
impl JoinTx for PgTx {
    async fn waiting_entry(
        &mut self,
        performance_id: PerformanceId,
        user_id: UserId,
    ) -> StoreResult<Option<WaitlistRow>> {
        let rows = entry_rows!(
            &mut *self.tx,
            "w.performance_id = $1 AND w.user_id = $2 AND w.status = 'waiting'",
            performance_id.uuid(),
            user_id.uuid()
        )?;
        Ok(rows.into_iter().next())
    }

    async fn count_free_in(
        &mut self,
        performance_id: PerformanceId,
        ticket_type_id: Option<TicketTypeId>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let free = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "n!" FROM units
               WHERE performance_id = $1 AND ($2::uuid IS NULL OR group_id = $2)
                 AND (state = 'available' OR (state = 'held' AND held_until <= $3))"#,
            performance_id.uuid(),
            ticket_type_id.map(Uuid::from),
            now
        )
        .fetch_one(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(free as u64)
    }

    async fn insert_entry(&mut self, join: &WaitlistJoin) -> StoreResult<()> {
        sqlx::query!(
            "INSERT INTO waitlist_entries (id, performance_id, user_id, ticket_type_id, quantity,
                                           status, created_at, updated_at, line)
             VALUES ($1, $2, $3, $4, $5, 'waiting', $6, $6,
                     (SELECT COALESCE(MAX(line), 0) + 1 FROM waitlist_entries WHERE performance_id = $2))
             ON CONFLICT (performance_id, user_id) WHERE status = 'waiting' DO NOTHING",
            join.id,
            join.performance_id.uuid(),
            join.user_id.uuid(),
            join.ticket_type_id.map(Uuid::from),
            join.quantity as i32,
            join.now
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(())
    }
}

/// Joins and gatekeeper steps lock the room's row (several instances step the same
/// queue; each batch of joins numbers late arrivals under the lock).
#[async_trait]
impl QueueTx for PgTx {
    async fn door(
        &mut self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(bool, bool)>> {
        let door = sqlx::query!(
            r#"SELECT p.waiting_room,
                      (p.status = 'scheduled' AND e.status = 'published' AND p.starts_at > $2)
                          AS "selling!"
               FROM performances p JOIN events e ON e.id = p.event_id WHERE p.id = $1"#,
            performance_id.uuid(),
            now
        )
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(door.map(|d| (d.waiting_room, d.selling)))
    }

    async fn open_room(
        &mut self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query!(
            "INSERT INTO queue_rooms (performance_id, updated_at) VALUES ($1, $2)
             ON CONFLICT (performance_id) DO NOTHING",
            performance_id.uuid(),
            now
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn lock_room(&mut self, performance_id: PerformanceId) -> StoreResult<Option<QueueRoom>> {
        let row = sqlx::query!(
            r#"SELECT p.on_sale_at, r.opened_at, r.admitted_through, r.next_seq, r.closed
               FROM queue_rooms r JOIN performances p ON p.id = r.performance_id
               WHERE r.performance_id = $1
               FOR UPDATE OF r"#,
            performance_id.uuid()
        )
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(row.map(|r| QueueRoom {
            performance_id,
            on_sale_at: r.on_sale_at,
            opened_at: r.opened_at,
            admitted_through: r.admitted_through,
            numbered: r.next_seq - 1,
            closed: r.closed,
        }))
    }

    async fn insert_ticket(&mut self, join: &QueueJoin, seq: Option<i64>) -> StoreResult<bool> {
        let inserted = sqlx::query!(
            "INSERT INTO queue_tickets (id, performance_id, user_id, draw, seq, joined_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (performance_id, user_id) DO NOTHING",
            join.ticket_id,
            join.performance_id.uuid(),
            join.user_id.uuid(),
            join.draw,
            seq,
            join.now
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn ticket_of(
        &mut self,
        performance_id: PerformanceId,
        user_id: UserId,
    ) -> StoreResult<QueueTicketRow> {
        sqlx::query_as!(
            QueueTicketRow,
            "SELECT id, user_id, performance_id, seq, admitted_at, joined_at
             FROM queue_tickets WHERE performance_id = $1 AND user_id = $2",
            performance_id.uuid(),
            user_id.uuid()
        )
        .fetch_one(&mut *self.tx)
        .await
        .map_err(backend)
    }

    async fn draws(&mut self, performance_id: PerformanceId) -> StoreResult<Vec<(i64, Uuid)>> {
        let all = sqlx::query!(
            "SELECT draw, id FROM queue_tickets
             WHERE performance_id = $1 AND seq IS NULL ORDER BY draw",
            performance_id.uuid()
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(all.into_iter().map(|r| (r.draw, r.id)).collect())
    }

    async fn number_by_draw(
        &mut self,
        performance_id: PerformanceId,
        base: i64,
    ) -> StoreResult<i64> {
        let numbered = sqlx::query!(
            "UPDATE queue_tickets t SET seq = $2 + r.rn
             FROM (SELECT id, row_number() OVER (ORDER BY draw, id) AS rn
                   FROM queue_tickets WHERE performance_id = $1 AND seq IS NULL) AS r
             WHERE t.id = r.id",
            performance_id.uuid(),
            base
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(numbered.rows_affected() as i64)
    }

    async fn sale_state(
        &mut self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
        admitted_since: DateTime<Utc>,
        opened_at: DateTime<Utc>,
    ) -> StoreResult<SaleState> {
        let sale = sqlx::query!(
            r#"SELECT
                 (SELECT COUNT(*) FROM units WHERE performance_id = $1
                    AND (state = 'available' OR (state = 'held' AND held_until <= $2))) AS "free!",
                 (SELECT COUNT(*) FROM units WHERE performance_id = $1
                    AND state = 'held' AND held_until > $2) AS "held!",
                 (SELECT COUNT(*) FROM queue_tickets t
                  WHERE t.performance_id = $1 AND t.admitted_at > $3
                    AND NOT EXISTS (SELECT 1 FROM bookings b
                                    WHERE b.user_id = t.user_id AND b.performance_id = t.performance_id
                                      AND b.created_at >= t.admitted_at)) AS "waiting_to_buy!",
                 (SELECT COUNT(*) FROM bookings
                  WHERE performance_id = $1 AND created_at >= $4 AND NOT offer) AS "bookings!",
                 (SELECT COUNT(*) FROM booking_units bu JOIN bookings b ON b.id = bu.booking_id
                  WHERE b.performance_id = $1 AND b.created_at >= $4 AND NOT b.offer) AS "units!",
                 p.max_per_booking,
                 (p.status = 'scheduled' AND e.status = 'published' AND p.starts_at > $2) AS "selling!"
               FROM performances p JOIN events e ON e.id = p.event_id WHERE p.id = $1"#,
            performance_id.uuid(),
            now,
            admitted_since,
            opened_at
        )
        .fetch_one(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(SaleState {
            free: sale.free as u64,
            held: sale.held as u64,
            admitted_not_buying: sale.waiting_to_buy as u64,
            bookings: sale.bookings as u64,
            booked_units: sale.units as u64,
            max_per_booking: sale.max_per_booking as u32,
            selling: sale.selling,
        })
    }

    async fn admit(
        &mut self,
        performance_id: PerformanceId,
        after: i64,
        through: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query!(
            "UPDATE queue_tickets SET admitted_at = $4
             WHERE performance_id = $1 AND seq > $2 AND seq <= $3",
            performance_id.uuid(),
            after,
            through,
            now
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn save_room(&mut self, room: &QueueRoom, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query!(
            "UPDATE queue_rooms SET opened_at = $2, next_seq = $3, admitted_through = $4,
                                    closed = $5, updated_at = $6
             WHERE performance_id = $1",
            room.performance_id.uuid(),
            room.opened_at,
            room.numbered + 1,
            room.admitted_through,
            room.closed,
            now
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(())
    }
}
