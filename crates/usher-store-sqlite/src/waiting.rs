//! The waiting list and the waiting room on SQLite. Every write runs on the one writer
//! connection, so a serving or a gatekeeper step never runs beside another.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
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

use crate::hold::SqliteTx;
use crate::payments::enqueue;
use crate::{SqliteStore, backend};

/// An entry with its offer's booking and its place in line (`?1`: which entries).
macro_rules! entry_rows {
    ($conn:expr, $filter:literal, $($arg:expr),*) => {
        sqlx::query_as!(
            WaitlistRow,
            r#"SELECT w.id AS "id!: Uuid", w.user_id AS "user_id!: Uuid",
                      w.performance_id AS "performance_id!: Uuid",
                      w.ticket_type_id AS "ticket_type_id?: Uuid", w.quantity, w.status,
                      w.booking_id AS "booking_id?: Uuid", b.status AS "booking_status?: String",
                      b.held_until AS "booking_held_until?: DateTime<Utc>",
                      CASE WHEN w.status = 'waiting' THEN
                          (SELECT COUNT(*) FROM waitlist_entries o
                           WHERE o.performance_id = w.performance_id AND o.status = 'waiting'
                             AND o.ticket_type_id IS w.ticket_type_id
                             AND o.line < w.line) + 1
                      END AS "position?: i64",
                      w.created_at AS "created_at!: DateTime<Utc>"
               FROM waitlist_entries w LEFT JOIN bookings b ON b.id = w.booking_id
               WHERE "# + $filter,
            $($arg),*
        )
        .fetch_all($conn)
        .await
        .map_err(backend)
    };
}

impl SqliteStore {
    /// The join's transaction, on the writer: one join at a time.
    pub(crate) async fn joining(&self, _performance_id: Uuid) -> StoreResult<Box<dyn JoinTx>> {
        let tx = self.writer.begin().await.map_err(backend)?;
        Ok(Box::new(SqliteTx { tx }))
    }

    pub(crate) async fn waitlist_entry_at(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WaitlistEntry>> {
        let mut conn = self.readers.acquire().await.map_err(backend)?;
        entry_rows!(&mut *conn, "w.id = ?1", id)?
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
        let mut conn = self.readers.acquire().await.map_err(backend)?;
        let rows = entry_rows!(
            &mut *conn,
            "w.user_id = ?1 AND (?2 IS NULL OR w.id < ?2) ORDER BY w.id DESC LIMIT ?3",
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
            "UPDATE waitlist_entries SET status = 'left', updated_at = ?2
             WHERE id = ?1 AND status IN ('waiting', 'offered')",
            id,
            now
        )
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        self.waitlist_entry_at(id, now).await
    }

    /// The serving transaction, on the writer: one serving at a time.
    pub(crate) async fn serving(
        &self,
        performance_id: Uuid,
    ) -> StoreResult<Option<Box<dyn ServeTx>>> {
        // Most releases happen where nobody waits: a read says so without the writer.
        let anyone = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM waitlist_entries
                              WHERE performance_id = ?1 AND status = 'waiting') AS "any!: bool""#,
            performance_id
        )
        .fetch_one(&self.readers)
        .await
        .map_err(backend)?;
        if !anyone {
            return Ok(None);
        }
        let tx = self.writer.begin().await.map_err(backend)?;
        Ok(Some(Box::new(SqliteTx { tx })))
    }

    pub(crate) async fn waitlists_due(&self, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
        sqlx::query_scalar!(
            r#"SELECT DISTINCT w.performance_id AS "id!: Uuid"
               FROM waitlist_entries w
               JOIN performances p ON p.id = w.performance_id
               JOIN events e ON e.id = p.event_id
               WHERE w.status = 'waiting' AND p.status = 'scheduled' AND e.status = 'published'
                 AND p.starts_at > ?1 AND (p.on_sale_at IS NULL OR p.on_sale_at <= ?1)
                 AND EXISTS (SELECT 1 FROM units u
                             WHERE u.performance_id = w.performance_id
                               AND (u.state = 'available' OR (u.state = 'held' AND u.held_until <= ?1)))"#,
            now
        )
        .fetch_all(&self.readers)
        .await
        .map_err(backend)
    }

    // --- the waiting room -----------------------------------------------------------

    pub(crate) async fn ticket(&self, id: Uuid) -> StoreResult<Option<QueueTicket>> {
        let mut conn = self.readers.acquire().await.map_err(backend)?;
        let Some(row) = sqlx::query_as!(
            QueueTicketRow,
            r#"SELECT id AS "id!: Uuid", user_id AS "user_id!: Uuid",
                      performance_id AS "performance_id!: Uuid", seq,
                      admitted_at AS "admitted_at?: DateTime<Utc>",
                      joined_at AS "joined_at!: DateTime<Utc>"
               FROM queue_tickets WHERE id = ?1"#,
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
                "SELECT COUNT(*) FROM queue_tickets
                 WHERE performance_id = ?1 AND seq IS NULL
                   AND draw < (SELECT draw FROM queue_tickets WHERE id = ?2)",
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
        let mut conn = self.readers.acquire().await.map_err(backend)?;
        room(&mut conn, performance_id).await
    }

    pub(crate) async fn rooms_due(&self, now: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
        sqlx::query_scalar!(
            r#"SELECT r.performance_id AS "id!: Uuid"
               FROM queue_rooms r JOIN performances p ON p.id = r.performance_id
               WHERE (p.on_sale_at IS NULL OR p.on_sale_at <= ?1)
                 AND (r.opened_at IS NULL OR r.admitted_through < r.next_seq - 1)"#,
            now
        )
        .fetch_all(&self.readers)
        .await
        .map_err(backend)
    }
}

#[async_trait]
impl ServeTx for SqliteTx {
    async fn waiting(&mut self, performance_id: PerformanceId) -> StoreResult<Vec<WaitingRow>> {
        sqlx::query_as!(
            WaitingRow,
            r#"SELECT id AS "id!: Uuid", user_id AS "user_id!: Uuid",
                      ticket_type_id AS "ticket_type_id?: Uuid", quantity, passed_over
               FROM waitlist_entries
               WHERE performance_id = ?1 AND status = 'waiting'
               ORDER BY line"#,
            performance_id
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
            "UPDATE waitlist_entries SET status = 'offered', booking_id = ?2, updated_at = ?3
             WHERE id = ?1",
            entry_id,
            booking_id,
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
            "UPDATE waitlist_entries SET passed_over = passed_over + 1, updated_at = ?2
             WHERE id = ?1",
            entry_id,
            now
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(())
    }
}

async fn room(conn: &mut SqliteConnection, performance_id: Uuid) -> StoreResult<Option<QueueRoom>> {
    let row = sqlx::query!(
        r#"SELECT p.on_sale_at AS "on_sale_at?: DateTime<Utc>",
                  r.opened_at AS "opened_at?: DateTime<Utc>", r.admitted_through, r.next_seq,
                  r.closed AS "closed!: bool"
           FROM queue_rooms r JOIN performances p ON p.id = r.performance_id
           WHERE r.performance_id = ?1"#,
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
impl JoinTx for SqliteTx {
    async fn waiting_entry(
        &mut self,
        performance_id: PerformanceId,
        user_id: UserId,
    ) -> StoreResult<Option<WaitlistRow>> {
        let rows = entry_rows!(
            &mut *self.tx,
            "w.performance_id = ?1 AND w.user_id = ?2 AND w.status = 'waiting'",
            performance_id,
            user_id
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
            "SELECT COUNT(*) FROM units
             WHERE performance_id = ?1 AND (?2 IS NULL OR group_id = ?2)
               AND (state = 'available' OR (state = 'held' AND held_until <= ?3))",
            performance_id,
            ticket_type_id,
            now
        )
        .fetch_one(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(free as u64)
    }

    async fn insert_entry(&mut self, join: &WaitlistJoin) -> StoreResult<()> {
        let quantity = i64::from(join.quantity);
        sqlx::query!(
            "INSERT INTO waitlist_entries (id, performance_id, user_id, ticket_type_id, quantity,
                                           status, created_at, updated_at, line)
             VALUES (?1, ?2, ?3, ?4, ?5, 'waiting', ?6, ?6,
                     (SELECT COALESCE(MAX(line), 0) + 1 FROM waitlist_entries WHERE performance_id = ?2))
             ON CONFLICT (performance_id, user_id) WHERE status = 'waiting' DO NOTHING",
            join.id,
            join.performance_id,
            join.user_id,
            join.ticket_type_id,
            quantity,
            join.now
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(())
    }
}

/// Joins and gatekeeper steps run on the writer, one at a time.
#[async_trait]
impl QueueTx for SqliteTx {
    async fn door(
        &mut self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(bool, bool)>> {
        let door = sqlx::query!(
            r#"SELECT p.waiting_room AS "waiting_room!: bool",
                      (p.status = 'scheduled' AND e.status = 'published' AND p.starts_at > ?2)
                          AS "selling!: bool"
               FROM performances p JOIN events e ON e.id = p.event_id WHERE p.id = ?1"#,
            performance_id,
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
            "INSERT INTO queue_rooms (performance_id, updated_at) VALUES (?1, ?2)
             ON CONFLICT (performance_id) DO NOTHING",
            performance_id,
            now
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(())
    }

    /// Nothing to lock: this transaction is the only writer.
    async fn lock_room(&mut self, performance_id: PerformanceId) -> StoreResult<Option<QueueRoom>> {
        room(&mut self.tx, performance_id.uuid()).await
    }

    async fn insert_ticket(&mut self, join: &QueueJoin, seq: Option<i64>) -> StoreResult<bool> {
        let inserted = sqlx::query!(
            "INSERT INTO queue_tickets (id, performance_id, user_id, draw, seq, joined_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (performance_id, user_id) DO NOTHING",
            join.ticket_id,
            join.performance_id,
            join.user_id,
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
            r#"SELECT id AS "id!: Uuid", user_id AS "user_id!: Uuid",
                      performance_id AS "performance_id!: Uuid", seq,
                      admitted_at AS "admitted_at?: DateTime<Utc>",
                      joined_at AS "joined_at!: DateTime<Utc>"
               FROM queue_tickets WHERE performance_id = ?1 AND user_id = ?2"#,
            performance_id,
            user_id
        )
        .fetch_one(&mut *self.tx)
        .await
        .map_err(backend)
    }

    async fn draws(&mut self, performance_id: PerformanceId) -> StoreResult<Vec<(i64, Uuid)>> {
        let all = sqlx::query!(
            r#"SELECT draw, id AS "id!: Uuid" FROM queue_tickets
               WHERE performance_id = ?1 AND seq IS NULL ORDER BY draw"#,
            performance_id
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
            "UPDATE queue_tickets SET seq = ?2 + r.rn
             FROM (SELECT id, row_number() OVER (ORDER BY draw, id) AS rn
                   FROM queue_tickets WHERE performance_id = ?1 AND seq IS NULL) AS r
             WHERE queue_tickets.id = r.id",
            performance_id,
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
                 (SELECT COUNT(*) FROM units WHERE performance_id = ?1
                    AND (state = 'available' OR (state = 'held' AND held_until <= ?2))) AS "free!: i64",
                 (SELECT COUNT(*) FROM units WHERE performance_id = ?1
                    AND state = 'held' AND held_until > ?2) AS "held!: i64",
                 (SELECT COUNT(*) FROM queue_tickets t
                  WHERE t.performance_id = ?1 AND t.admitted_at > ?3
                    AND NOT EXISTS (SELECT 1 FROM bookings b
                                    WHERE b.user_id = t.user_id AND b.performance_id = t.performance_id
                                      AND b.created_at >= t.admitted_at)) AS "waiting_to_buy!: i64",
                 (SELECT COUNT(*) FROM bookings
                  WHERE performance_id = ?1 AND created_at >= ?4 AND offer = 0) AS "bookings!: i64",
                 (SELECT COUNT(*) FROM booking_units bu JOIN bookings b ON b.id = bu.booking_id
                  WHERE b.performance_id = ?1 AND b.created_at >= ?4 AND b.offer = 0) AS "units!: i64",
                 p.max_per_booking,
                 (p.status = 'scheduled' AND e.status = 'published' AND p.starts_at > ?2) AS "selling!: bool"
               FROM performances p JOIN events e ON e.id = p.event_id WHERE p.id = ?1"#,
            performance_id,
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
            "UPDATE queue_tickets SET admitted_at = ?4
             WHERE performance_id = ?1 AND seq > ?2 AND seq <= ?3",
            performance_id,
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
        let next = room.numbered + 1;
        sqlx::query!(
            "UPDATE queue_rooms SET opened_at = ?2, next_seq = ?3, admitted_through = ?4,
                                    closed = ?5, updated_at = ?6
             WHERE performance_id = ?1",
            room.performance_id,
            room.opened_at,
            next,
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
