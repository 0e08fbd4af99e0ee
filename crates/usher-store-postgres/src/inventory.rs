//! Performances, units and bookings on PostgreSQL.
//!
//! Many instances write at once here. The conditional write (`… AND the unit is free`)
//! is the arbiter: under READ COMMITTED PostgreSQL re-checks it on the newest row version
//! after waiting for a concurrent writer. Statements that lock several units lock them
//! in id order (`ORDER BY id FOR UPDATE`), so two holds cannot deadlock each other; a
//! deadlock or serialization failure that happens anyway is retried.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use usher_core::ids::{BookingId, PerformanceId, UnitId};
use uuid::Uuid;

use usher_core::inventory::UnitPlan;
use usher_core::{
    Booking, BookingStatus, Cursor, PageLimit, Performance, SeatingPlan, Section, TicketType, Unit,
    User,
};
use usher_store::inventory::stored_currency;
use usher_store::{
    Attendee, BookedUnitRow, BookingCountRow, BookingRow, CountRow, InventoryTx, NewPerformance,
    Page, PerformanceInventory, PerformanceRow, PerformanceSales, PriceGroupRow, SaleScope,
    SalesRow, StoreError, StoreResult, UnitRow, UserRow, assemble_performances, paginate,
    push_group,
};
use usher_store::{Audit, AuditEntry};
use usher_store::{typed, typed_pairs, uuids};

use crate::hold::PgTx;
use crate::{PostgresStore, backend};

/// Units are inserted in batches of this many rows per statement.
const INSERT_BATCH: usize = 10_000;

impl PostgresStore {
    pub(crate) async fn insert_performance(
        &self,
        new: NewPerformance,
        audit: &Audit,
    ) -> StoreResult<Performance> {
        let id = Uuid::now_v7();
        let now = usher_store::now();
        let kind = new.seating.kind();
        let ttl = new.hold_ttl.seconds() as i32;
        let max = new.max_per_booking.get() as i32;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query!(
            "INSERT INTO performances (id, event_id, starts_at, hold_ttl_seconds, max_per_booking,
                                       kind, currency, on_sale_at, created_at, waiting_room)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            id,
            new.event_id.uuid(),
            new.starts_at,
            ttl,
            max,
            kind.as_str(),
            new.seating.currency.as_str(),
            new.on_sale_at,
            now,
            new.waiting_room
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let (groups, group_ids) = insert_groups(&mut tx, id, &new.seating).await?;
        insert_units(&mut tx, id, &new.seating, &group_ids).await?;
        let entry = usher_store::inventory::performance_created(audit, &new, id, now);
        crate::box_office::insert_audit(&mut tx, &entry).await?;
        tx.commit().await.map_err(backend)?;
        Ok(usher_store::inventory::created_performance(
            id, &new, groups, now,
        ))
    }

    pub(crate) async fn load_performances(
        &self,
        event_id: Option<Uuid>,
        performance_id: Option<Uuid>,
    ) -> StoreResult<Vec<Performance>> {
        let rows = sqlx::query_as!(
            PerformanceRow,
            r#"SELECT id, event_id, starts_at, hold_ttl_seconds::bigint AS "hold_ttl_seconds!",
                      max_per_booking::bigint AS "max_per_booking!", kind, currency, status,
                      on_sale_at, waiting_room, created_at
               FROM performances
               WHERE ($1::uuid IS NULL OR event_id = $1) AND ($2::uuid IS NULL OR id = $2)
               ORDER BY starts_at, id"#,
            event_id,
            performance_id
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let groups = sqlx::query_as!(
            PriceGroupRow,
            r#"SELECT g.id, g.performance_id, g.name, g.price_amount, g.capacity::bigint AS "capacity!"
               FROM price_groups g JOIN performances p ON p.id = g.performance_id
               WHERE ($1::uuid IS NULL OR p.event_id = $1) AND ($2::uuid IS NULL OR p.id = $2)
               ORDER BY g.position"#,
            event_id,
            performance_id
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        assemble_performances(rows, &groups)
    }

    pub(crate) async fn count_inventory(
        &self,
        performance_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<PerformanceInventory> {
        let rows = sqlx::query_as!(
            CountRow,
            r#"SELECT group_id,
                      count(*) AS "capacity!",
                      count(*) FILTER (WHERE state = 'available' OR (state = 'held' AND held_until <= $2)) AS "available!",
                      count(*) FILTER (WHERE state = 'held' AND held_until > $2) AS "held!",
                      count(*) FILTER (WHERE state = 'sold') AS "sold!",
                      count(*) FILTER (WHERE state = 'blocked') AS "blocked!"
               FROM units WHERE performance_id = $1
               GROUP BY group_id ORDER BY min(group_position)"#,
            performance_id,
            now
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(PerformanceInventory::from_rows(rows))
    }

    pub(crate) async fn list_units(
        &self,
        performance_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Unit>> {
        let Some(currency) = sqlx::query_scalar!(
            "SELECT currency FROM performances WHERE id = $1",
            performance_id
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        else {
            return Ok(Vec::new());
        };
        let currency = stored_currency(&currency)?;
        let rows = sqlx::query_as!(
            UnitRow,
            r#"SELECT u.id,
                      CASE WHEN p.kind = 'reserved' THEN g.name END AS "section?",
                      u.row_label, u.seat_label,
                      CASE WHEN p.kind = 'general' THEN u.group_id END AS "ticket_type_id?",
                      u.price_amount, u.state, u.held_until
               FROM units u
               JOIN price_groups g ON g.id = u.group_id
               JOIN performances p ON p.id = u.performance_id
               WHERE u.performance_id = $1
               ORDER BY u.group_position, u.row_position, u.seat_position"#,
            performance_id
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|r| r.into_unit(currency, now))
            .collect()
    }

    pub(crate) async fn get_booking(&self, id: Uuid) -> StoreResult<Option<Booking>> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        Ok(load_bookings(&mut conn, &[id])
            .await
            .map_err(Retry::into_error)?
            .pop())
    }

    pub(crate) async fn user_bookings(
        &self,
        user_id: Uuid,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<Booking>> {
        let after = after.map(Cursor::id);
        let fetch = i64::from(limit.get()) + 1;
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        let ids = sqlx::query_scalar!(
            "SELECT id FROM bookings WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3",
            user_id,
            after,
            fetch
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
        let bookings = load_bookings(&mut conn, &ids)
            .await
            .map_err(Retry::into_error)?;
        Ok(paginate(bookings, limit, |b| b.id.uuid()))
    }

    pub(crate) async fn event_sales(
        &self,
        event_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PerformanceSales>> {
        let rows = sqlx::query_as!(
            SalesRow,
            r#"SELECT p.id, p.starts_at, p.currency,
                      CASE WHEN e.status = 'cancelled' THEN 'cancelled' ELSE p.status END AS "status!",
                      count(u.id) AS "capacity!",
                      count(u.id) FILTER (WHERE u.state = 'available' OR (u.state = 'held' AND u.held_until <= $2)) AS "available!",
                      count(u.id) FILTER (WHERE u.state = 'held' AND u.held_until > $2) AS "held!",
                      count(u.id) FILTER (WHERE u.state = 'sold') AS "sold!",
                      count(u.id) FILTER (WHERE u.state = 'blocked') AS "blocked!",
                      coalesce(sum(u.price_amount) FILTER (WHERE u.state = 'sold'), 0)::bigint AS "revenue!"
               FROM performances p JOIN events e ON e.id = p.event_id
               LEFT JOIN units u ON u.performance_id = p.id
               WHERE p.event_id = $1
               GROUP BY p.id, e.status ORDER BY p.starts_at, p.id"#,
            event_id,
            now
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let bookings = sqlx::query_as!(
            BookingCountRow,
            r#"SELECT p.id AS performance_id,
                      (SELECT count(*) FROM bookings b WHERE b.performance_id = p.id
                         AND b.status = 'held' AND b.held_until > $2) AS "held!",
                      (SELECT count(*) FROM bookings b WHERE b.performance_id = p.id
                         AND b.status = 'confirmed') AS "confirmed!",
                      (SELECT count(*) FROM bookings b WHERE b.performance_id = p.id
                         AND b.status = 'refunded') AS "refunded!",
                      (SELECT count(*) FROM payments m JOIN bookings b ON b.id = m.booking_id
                         WHERE b.performance_id = p.id AND m.status = 'refund_pending') AS "refunds_pending!",
                      (SELECT count(*) FROM payments m JOIN bookings b ON b.id = m.booking_id
                         WHERE b.performance_id = p.id AND m.status = 'refunded') AS "refunds_done!"
               FROM performances p WHERE p.event_id = $1"#,
            event_id,
            now
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|row| {
                let counts = BookingCountRow::counts_of(&bookings, row.id.into());
                row.into_sales(counts)
            })
            .collect()
    }

    pub(crate) async fn list_attendees(
        &self,
        performance_id: Uuid,
        status: Option<BookingStatus>,
        now: DateTime<Utc>,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<Attendee>> {
        let after = after.map(Cursor::id);
        let fetch = i64::from(limit.get()) + 1;
        let status = status.map(BookingStatus::as_str);
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        // `held` and `expired` as a reader sees them: a hold past its time is expired.
        let ids = sqlx::query_scalar!(
            "SELECT id FROM bookings
             WHERE performance_id = $1 AND ($2::uuid IS NULL OR id < $2)
               AND ($3::text IS NULL
                    OR ($3 = 'held' AND status = 'held' AND held_until > $4)
                    OR ($3 = 'expired' AND (status = 'expired' OR (status = 'held' AND held_until <= $4)))
                    OR ($3 NOT IN ('held', 'expired') AND status = $3))
             ORDER BY id DESC LIMIT $5",
            performance_id,
            after,
            status,
            now,
            fetch
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
        let bookings = load_bookings(&mut conn, &ids)
            .await
            .map_err(Retry::into_error)?;
        let user_ids: Vec<Uuid> = bookings.iter().map(|b| b.user_id.uuid()).collect();
        let buyers = sqlx::query_as!(
            UserRow,
            r#"SELECT id AS "id!: Uuid", email, name, role, disabled_at IS NOT NULL AS "disabled!",
                      created_at AS "created_at!: DateTime<Utc>"
               FROM users WHERE id = ANY($1)"#,
            &user_ids
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?
        .into_iter()
        .map(UserRow::into_user)
        .collect::<StoreResult<Vec<User>>>()?;
        let attendees = usher_store::attendees(bookings, &buyers)?;
        Ok(paginate(attendees, limit, |a| a.booking.id.uuid()))
    }

    pub(crate) async fn list_live_bookings(
        &self,
        scope: SaleScope,
        limit: u32,
    ) -> StoreResult<Vec<Uuid>> {
        let (event_id, performance_id) = match scope {
            SaleScope::Event(id) => (Some(id), None),
            SaleScope::Performance(id) => (None, Some(id)),
        };
        sqlx::query_scalar!(
            "SELECT b.id FROM bookings b JOIN performances p ON p.id = b.performance_id
             WHERE ($1::uuid IS NULL OR p.event_id = $1) AND ($2::uuid IS NULL OR p.id = $2)
               AND b.status IN ('held', 'confirmed')
             ORDER BY b.id LIMIT $3",
            event_id,
            performance_id,
            i64::from(limit)
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)
    }
}

/// Whether a failed step may be retried as a whole.
pub(crate) enum Retry {
    Again(StoreError),
    Fail(StoreError),
}

impl Retry {
    fn into_error(self) -> StoreError {
        match self {
            Retry::Again(e) | Retry::Fail(e) => e,
        }
    }
}

impl From<sqlx::Error> for Retry {
    fn from(error: sqlx::Error) -> Self {
        if crate::is_retryable(&error) {
            Retry::Again(backend(error))
        } else {
            Retry::Fail(backend(error))
        }
    }
}

impl From<Retry> for StoreError {
    fn from(retry: Retry) -> Self {
        retry.into_error()
    }
}

impl From<StoreError> for Retry {
    fn from(error: StoreError) -> Self {
        Retry::Fail(error)
    }
}

/// Frees the units these bookings still hold. A unit already re-taken by the next buyer
/// names the new booking and is left alone. Returns `(performance id, unit id)` of each
/// unit freed.
async fn release_units(
    conn: &mut PgConnection,
    bookings: &[Uuid],
) -> Result<Vec<(Uuid, Uuid)>, Retry> {
    let released = sqlx::query!(
        "UPDATE units SET state = 'available', booking_id = NULL, held_until = NULL
         WHERE id IN (SELECT id FROM units
                      WHERE booking_id = ANY($1) AND state = 'held'
                      ORDER BY id FOR UPDATE)
           AND booking_id = ANY($1) AND state = 'held'
         RETURNING performance_id, id",
        bookings
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(released
        .into_iter()
        .map(|r| (r.performance_id, r.id))
        .collect())
}

/// Bookings with their units, in the order of `ids`.
pub(crate) async fn load_bookings(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<Booking>, Retry> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query_as!(
        BookingRow,
        "SELECT id, user_id, performance_id, status, held_until, total_amount, currency,
                paid_by, offer, created_at, updated_at
         FROM bookings WHERE id = ANY($1)",
        ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let units = sqlx::query_as!(
        BookedUnitRow,
        r#"SELECT bu.booking_id, bu.unit_id,
                  CASE WHEN p.kind = 'reserved' THEN g.name END AS "section?",
                  u.row_label, u.seat_label,
                  CASE WHEN p.kind = 'general' THEN u.group_id END AS "ticket_type_id?",
                  bu.price_amount, t.serial AS "ticket_serial?"
           FROM booking_units bu
           JOIN units u ON u.id = bu.unit_id
           JOIN price_groups g ON g.id = u.group_id
           JOIN performances p ON p.id = u.performance_id
           LEFT JOIN tickets t ON t.booking_id = bu.booking_id AND t.unit_id = bu.unit_id
           WHERE bu.booking_id = ANY($1)
           ORDER BY u.group_position, u.row_position, u.seat_position"#,
        ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut bookings = rows
        .into_iter()
        .map(|row| row.into_booking(&units))
        .collect::<StoreResult<Vec<_>>>()?;
    bookings.sort_by_key(|b| ids.iter().position(|id| *id == b.id.uuid()));
    Ok(bookings)
}

/// Column-wise unit rows for `UNNEST`.
struct UnitColumns {
    ids: Vec<Uuid>,
    groups: Vec<Uuid>,
    group_positions: Vec<i32>,
    row_positions: Vec<i32>,
    seat_positions: Vec<i32>,
    row_labels: Vec<Option<String>>,
    seat_labels: Vec<Option<String>>,
    prices: Vec<i64>,
}

impl UnitColumns {
    fn with_capacity(n: usize) -> Self {
        Self {
            ids: Vec::with_capacity(n),
            groups: Vec::with_capacity(n),
            group_positions: Vec::with_capacity(n),
            row_positions: Vec::with_capacity(n),
            seat_positions: Vec::with_capacity(n),
            row_labels: Vec::with_capacity(n),
            seat_labels: Vec::with_capacity(n),
            prices: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, group: Uuid, unit: &UnitPlan<'_>) {
        self.ids.push(Uuid::now_v7());
        self.groups.push(group);
        self.group_positions.push(unit.group as i32);
        self.row_positions.push(unit.row as i32);
        self.seat_positions.push(unit.seat as i32);
        self.row_labels.push(unit.row_label.map(str::to_owned));
        self.seat_labels.push(unit.seat_label.map(str::to_owned));
        self.prices.push(unit.price.amount);
    }
}

#[async_trait]
impl InventoryTx for PgTx {
    async fn cancel_held(
        &mut self,
        booking_id: BookingId,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let cancelled = sqlx::query!(
            "UPDATE bookings SET status = 'cancelled', updated_at = $2
             WHERE id = $1 AND status = 'held' AND held_until > $2",
            booking_id.uuid(),
            now
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(cancelled.rows_affected() == 1)
    }

    /// SKIP LOCKED: sweepers in several instances share the work instead of waiting
    /// for each other; a booking being cancelled right now is skipped too.
    async fn expire_held(&mut self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<BookingId>> {
        sqlx::query_scalar!(
            "UPDATE bookings SET status = 'expired', updated_at = $1
             WHERE id IN (SELECT id FROM bookings
                          WHERE status = 'held' AND held_until <= $1
                          ORDER BY held_until LIMIT $2
                          FOR UPDATE SKIP LOCKED)
               AND status = 'held' AND held_until <= $1
             RETURNING id",
            now,
            i64::from(limit)
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(backend)
        .map(typed)
    }

    async fn release_held(
        &mut self,
        bookings: &[BookingId],
    ) -> StoreResult<Vec<(PerformanceId, UnitId)>> {
        Ok(typed_pairs(
            release_units(&mut self.tx, &uuids(bookings)).await?,
        ))
    }

    async fn booking(&mut self, id: BookingId) -> StoreResult<Option<Booking>> {
        Ok(load_bookings(&mut self.tx, &[id.uuid()]).await?.pop())
    }

    async fn block_units(&mut self, ids: &[UnitId]) -> StoreResult<Vec<UnitId>> {
        sqlx::query_scalar!(
            "UPDATE units SET state = 'blocked', booking_id = NULL, held_until = NULL
             WHERE id = ANY($1) AND state <> 'blocked' RETURNING id",
            &uuids(ids)
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(backend)
        .map(typed)
    }

    async fn unblock_units(&mut self, ids: &[UnitId]) -> StoreResult<Vec<UnitId>> {
        sqlx::query_scalar!(
            "UPDATE units SET state = 'available' WHERE id = ANY($1) AND state = 'blocked'
             RETURNING id",
            &uuids(ids)
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(backend)
        .map(typed)
    }

    async fn insert_audit(&mut self, entry: &AuditEntry) -> StoreResult<()> {
        crate::box_office::insert_audit(&mut self.tx, entry).await
    }
}

/// The seating plan's sections or ticket types, in plan order; with their ids.
async fn insert_groups(
    tx: &mut PgConnection,
    performance_id: Uuid,
    seating: &SeatingPlan,
) -> StoreResult<((Vec<Section>, Vec<TicketType>), Vec<Uuid>)> {
    let (mut sections, mut ticket_types, mut group_ids) = (Vec::new(), Vec::new(), Vec::new());
    for (position, group) in seating.price_groups().into_iter().enumerate() {
        let group_id = Uuid::now_v7();
        sqlx::query!(
            "INSERT INTO price_groups (id, performance_id, position, name, price_amount, capacity)
             VALUES ($1, $2, $3, $4, $5, $6)",
            group_id,
            performance_id,
            position as i32,
            group.name,
            group.price.amount,
            group.capacity as i32
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        push_group(
            &mut sections,
            &mut ticket_types,
            seating.kind(),
            group_id,
            &group,
        );
        group_ids.push(group_id);
    }
    Ok(((sections, ticket_types), group_ids))
}

/// One unit per sellable place, [`INSERT_BATCH`] rows a statement.
async fn insert_units(
    tx: &mut PgConnection,
    performance_id: Uuid,
    seating: &SeatingPlan,
    group_ids: &[Uuid],
) -> StoreResult<()> {
    // Each batch's columns are built when it is sent, not a stadium's at once.
    for batch in seating.units().chunks(INSERT_BATCH) {
        let mut units = UnitColumns::with_capacity(batch.len());
        for u in batch {
            units.push(group_ids[u.group], u);
        }
        sqlx::query!(
            "INSERT INTO units (id, performance_id, group_id, group_position, row_position,
                                seat_position, row_label, seat_label, price_amount, state)
             SELECT u.id, $1, u.group_id, u.group_position, u.row_position, u.seat_position,
                    u.row_label, u.seat_label, u.price_amount, 'available'
             FROM UNNEST($2::uuid[], $3::uuid[], $4::int[], $5::int[], $6::int[],
                         $7::text[], $8::text[], $9::bigint[])
                  AS u(id, group_id, group_position, row_position, seat_position,
                       row_label, seat_label, price_amount)",
            performance_id,
            &units.ids,
            &units.groups,
            &units.group_positions,
            &units.row_positions,
            &units.seat_positions,
            &units.row_labels as &[Option<String>],
            &units.seat_labels as &[Option<String>],
            &units.prices
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }
    Ok(())
}
