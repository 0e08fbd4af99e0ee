//! Performances, units and bookings on SQLite.
//!
//! Every inventory change runs on the single writer connection, so the read that picks
//! units and the conditional write that takes them cannot interleave with another
//! writer. The conditional write still checks that each unit is free: it is the arbiter,
//! whatever the caller read before.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use usher_core::ids::{BookingId, PerformanceId, UnitId, UserId};
use uuid::Uuid;

use usher_core::{
    Booking, BookingStatus, Cursor, PageLimit, Performance, SeatingPlan, Section, TicketType, Unit,
    User,
};
use usher_store::inventory::stored_currency;
use usher_store::{
    Attendee, BookedUnitRow, BookingCountRow, BookingRow, CountRow, InventoryTx, NewPerformance,
    Page, PerformanceInventory, PerformanceRow, PerformanceSales, PriceGroupRow, SaleScope,
    SalesRow, StoreResult, UnitRow, UserRow, assemble_performances, paginate, push_group,
};
use usher_store::{Audit, AuditEntry, typed, typed_pairs};

use crate::hold::SqliteTx;
use crate::{SqliteStore, backend};

/// Units are inserted in batches of this many rows per statement.
const INSERT_BATCH: usize = 5_000;

/// A JSON array of ids as hex, for `IN (SELECT unhex(value) FROM json_each(?))`.
/// Where such a list meets `performance_id = ?`, the queries write `+performance_id`:
/// without it SQLite's planner walks the performance's whole seat-map index (every unit
/// of a 10,000-seat house per hold) instead of looking the few ids up by key.
pub(crate) fn id_list<Id: Copy + Into<Uuid>>(ids: &[Id]) -> String {
    let hex: Vec<String> = ids
        .iter()
        .map(|id| (*id).into().simple().to_string())
        .collect();
    serde_json::Value::from(hex).to_string()
}

impl SqliteStore {
    pub(crate) async fn insert_performance(
        &self,
        new: NewPerformance,
        audit: &Audit,
    ) -> StoreResult<Performance> {
        let id = Uuid::now_v7();
        let now = usher_store::now();
        let (kind_name, currency_name) =
            (new.seating.kind().as_str(), new.seating.currency.as_str());
        let ttl = i64::from(new.hold_ttl.seconds());
        let max = i64::from(new.max_per_booking.get());
        let mut tx = self.writer.begin().await.map_err(backend)?;
        sqlx::query!(
            "INSERT INTO performances (id, event_id, starts_at, hold_ttl_seconds, max_per_booking,
                                       kind, currency, on_sale_at, waiting_room, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?10, ?9)",
            id,
            new.event_id,
            new.starts_at,
            ttl,
            max,
            kind_name,
            currency_name,
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
            r#"SELECT id AS "id!: Uuid", event_id AS "event_id!: Uuid",
                      starts_at AS "starts_at!: DateTime<Utc>", hold_ttl_seconds,
                      max_per_booking, kind, currency, status,
                      on_sale_at AS "on_sale_at?: DateTime<Utc>",
                      waiting_room AS "waiting_room!: bool",
                      created_at AS "created_at!: DateTime<Utc>"
               FROM performances
               WHERE (?1 IS NULL OR event_id = ?1) AND (?2 IS NULL OR id = ?2)
               ORDER BY starts_at, id"#,
            event_id,
            performance_id
        )
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        let groups = sqlx::query_as!(
            PriceGroupRow,
            r#"SELECT g.id AS "id!: Uuid", g.performance_id AS "performance_id!: Uuid", g.name,
                      g.price_amount, g.capacity
               FROM price_groups g JOIN performances p ON p.id = g.performance_id
               WHERE (?1 IS NULL OR p.event_id = ?1) AND (?2 IS NULL OR p.id = ?2)
               ORDER BY g.position"#,
            event_id,
            performance_id
        )
        .fetch_all(&self.readers)
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
            r#"SELECT group_id AS "group_id!: Uuid",
                      count(*) AS "capacity!: i64",
                      sum(state = 'available' OR (state = 'held' AND held_until <= ?2)) AS "available!: i64",
                      sum(state = 'held' AND held_until > ?2) AS "held!: i64",
                      sum(state = 'sold') AS "sold!: i64",
                      sum(state = 'blocked') AS "blocked!: i64"
               FROM units WHERE performance_id = ?1
               GROUP BY group_id ORDER BY min(group_position)"#,
            performance_id,
            now
        )
        .fetch_all(&self.readers)
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
            "SELECT currency FROM performances WHERE id = ?1",
            performance_id
        )
        .fetch_optional(&self.readers)
        .await
        .map_err(backend)?
        else {
            return Ok(Vec::new());
        };
        let currency = stored_currency(&currency)?;
        let rows = sqlx::query_as!(
            UnitRow,
            r#"SELECT u.id AS "id!: Uuid",
                      CASE WHEN p.kind = 'reserved' THEN g.name END AS "section?: String",
                      u.row_label AS "row_label?: String", u.seat_label AS "seat_label?: String",
                      CASE WHEN p.kind = 'general' THEN u.group_id END AS "ticket_type_id?: Uuid",
                      u.price_amount, u.state,
                      u.held_until AS "held_until?: DateTime<Utc>"
               FROM units u
               JOIN price_groups g ON g.id = u.group_id
               JOIN performances p ON p.id = u.performance_id
               WHERE u.performance_id = ?1
               ORDER BY u.group_position, u.row_position, u.seat_position"#,
            performance_id
        )
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|r| r.into_unit(currency, now))
            .collect()
    }

    pub(crate) async fn get_booking(&self, id: Uuid) -> StoreResult<Option<Booking>> {
        let mut conn = self.readers.acquire().await.map_err(backend)?;
        Ok(load_bookings(&mut conn, &[id]).await?.pop())
    }

    pub(crate) async fn user_bookings(
        &self,
        user_id: Uuid,
        limit: PageLimit,
        after: Option<Cursor>,
    ) -> StoreResult<Page<Booking>> {
        let after = after.map(Cursor::id);
        let fetch = i64::from(limit.get()) + 1;
        let mut conn = self.readers.acquire().await.map_err(backend)?;
        let ids = sqlx::query_scalar!(
            r#"SELECT id AS "id!: Uuid" FROM bookings
               WHERE user_id = ?1 AND (?2 IS NULL OR id < ?2)
               ORDER BY id DESC LIMIT ?3"#,
            user_id,
            after,
            fetch
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
        let bookings = load_bookings(&mut conn, &ids).await?;
        Ok(paginate(bookings, limit, |b| b.id.uuid()))
    }

    pub(crate) async fn event_sales(
        &self,
        event_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PerformanceSales>> {
        let rows = sqlx::query_as!(
            SalesRow,
            r#"SELECT p.id AS "id!: Uuid", p.starts_at AS "starts_at!: DateTime<Utc>", p.currency,
                      CASE WHEN e.status = 'cancelled' THEN 'cancelled' ELSE p.status END AS "status!: String",
                      count(u.id) AS "capacity!: i64",
                      coalesce(sum(u.state = 'available' OR (u.state = 'held' AND u.held_until <= ?2)), 0) AS "available!: i64",
                      coalesce(sum(u.state = 'held' AND u.held_until > ?2), 0) AS "held!: i64",
                      coalesce(sum(u.state = 'sold'), 0) AS "sold!: i64",
                      coalesce(sum(u.state = 'blocked'), 0) AS "blocked!: i64",
                      coalesce(sum(CASE WHEN u.state = 'sold' THEN u.price_amount END), 0) AS "revenue!: i64"
               FROM performances p JOIN events e ON e.id = p.event_id
               LEFT JOIN units u ON u.performance_id = p.id
               WHERE p.event_id = ?1
               GROUP BY p.id ORDER BY p.starts_at, p.id"#,
            event_id,
            now
        )
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        let bookings = sqlx::query_as!(
            BookingCountRow,
            r#"SELECT p.id AS "performance_id!: Uuid",
                      (SELECT count(*) FROM bookings b WHERE b.performance_id = p.id
                         AND b.status = 'held' AND b.held_until > ?2) AS "held!: i64",
                      (SELECT count(*) FROM bookings b WHERE b.performance_id = p.id
                         AND b.status = 'confirmed') AS "confirmed!: i64",
                      (SELECT count(*) FROM bookings b WHERE b.performance_id = p.id
                         AND b.status = 'refunded') AS "refunded!: i64",
                      (SELECT count(*) FROM payments m JOIN bookings b ON b.id = m.booking_id
                         WHERE b.performance_id = p.id AND m.status = 'refund_pending') AS "refunds_pending!: i64",
                      (SELECT count(*) FROM payments m JOIN bookings b ON b.id = m.booking_id
                         WHERE b.performance_id = p.id AND m.status = 'refunded') AS "refunds_done!: i64"
               FROM performances p WHERE p.event_id = ?1"#,
            event_id,
            now
        )
        .fetch_all(&self.readers)
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
        let mut conn = self.readers.acquire().await.map_err(backend)?;
        // `held` and `expired` as a reader sees them: a hold past its time is expired.
        let ids = sqlx::query_scalar!(
            r#"SELECT id AS "id!: Uuid" FROM bookings
               WHERE performance_id = ?1 AND (?2 IS NULL OR id < ?2)
                 AND (?3 IS NULL
                      OR (?3 = 'held' AND status = 'held' AND held_until > ?4)
                      OR (?3 = 'expired' AND (status = 'expired' OR (status = 'held' AND held_until <= ?4)))
                      OR (?3 NOT IN ('held', 'expired') AND status = ?3))
               ORDER BY id DESC LIMIT ?5"#,
            performance_id,
            after,
            status,
            now,
            fetch
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
        let bookings = load_bookings(&mut conn, &ids).await?;
        let user_ids: Vec<UserId> = bookings.iter().map(|b| b.user_id).collect();
        let list = id_list(&user_ids);
        let buyers = sqlx::query_as!(
            UserRow,
            r#"SELECT id AS "id!: Uuid", email, name, role, disabled_at IS NOT NULL AS "disabled!: bool",
                      created_at AS "created_at!: DateTime<Utc>"
               FROM users WHERE id IN (SELECT unhex(value) FROM json_each(?1))"#,
            list
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
        let limit = i64::from(limit);
        sqlx::query_scalar!(
            r#"SELECT b.id AS "id!: Uuid" FROM bookings b JOIN performances p ON p.id = b.performance_id
               WHERE (?1 IS NULL OR p.event_id = ?1) AND (?2 IS NULL OR p.id = ?2)
                 AND b.status IN ('held', 'confirmed')
               ORDER BY b.id LIMIT ?3"#,
            event_id,
            performance_id,
            limit
        )
        .fetch_all(&self.readers)
        .await
        .map_err(backend)
    }
}

/// Bookings with their units, in the order of `ids`.
pub(crate) async fn load_bookings(
    conn: &mut SqliteConnection,
    ids: &[Uuid],
) -> StoreResult<Vec<Booking>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = id_list(ids);
    let rows = sqlx::query_as!(
        BookingRow,
        r#"SELECT id AS "id!: Uuid", user_id AS "user_id!: Uuid",
                  performance_id AS "performance_id!: Uuid", status,
                  held_until AS "held_until!: DateTime<Utc>", total_amount, currency,
                  paid_by AS "paid_by?: Uuid", offer AS "offer!: bool",
                  created_at AS "created_at!: DateTime<Utc>", updated_at AS "updated_at!: DateTime<Utc>"
           FROM bookings WHERE id IN (SELECT unhex(value) FROM json_each(?1))"#,
        list
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    let units = sqlx::query_as!(
        BookedUnitRow,
        r#"SELECT bu.booking_id AS "booking_id!: Uuid", bu.unit_id AS "unit_id!: Uuid",
                  CASE WHEN p.kind = 'reserved' THEN g.name END AS "section?: String",
                  u.row_label AS "row_label?: String", u.seat_label AS "seat_label?: String",
                  CASE WHEN p.kind = 'general' THEN u.group_id END AS "ticket_type_id?: Uuid",
                  bu.price_amount, t.serial AS "ticket_serial?: i64"
           FROM booking_units bu
           JOIN units u ON u.id = bu.unit_id
           JOIN price_groups g ON g.id = u.group_id
           JOIN performances p ON p.id = u.performance_id
           LEFT JOIN tickets t ON t.booking_id = bu.booking_id AND t.unit_id = bu.unit_id
           WHERE bu.booking_id IN (SELECT unhex(value) FROM json_each(?1))
           ORDER BY u.group_position, u.row_position, u.seat_position"#,
        list
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    let mut bookings = rows
        .into_iter()
        .map(|row| row.into_booking(&units))
        .collect::<StoreResult<Vec<_>>>()?;
    bookings.sort_by_key(|b| ids.iter().position(|id| *id == b.id.uuid()));
    Ok(bookings)
}

#[async_trait]
impl InventoryTx for SqliteTx {
    async fn cancel_held(
        &mut self,
        booking_id: BookingId,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let cancelled = sqlx::query!(
            "UPDATE bookings SET status = 'cancelled', updated_at = ?2
             WHERE id = ?1 AND status = 'held' AND held_until > ?2",
            booking_id,
            now
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(cancelled.rows_affected() == 1)
    }

    async fn expire_held(&mut self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<BookingId>> {
        let limit = i64::from(limit);
        sqlx::query_scalar!(
            r#"UPDATE bookings SET status = 'expired', updated_at = ?1
               WHERE id IN (SELECT id FROM bookings
                            WHERE status = 'held' AND held_until <= ?1
                            ORDER BY held_until LIMIT ?2)
               RETURNING id AS "id!: Uuid""#,
            now,
            limit
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
        let list = id_list(bookings);
        let released = sqlx::query!(
            r#"UPDATE units SET state = 'available', booking_id = NULL, held_until = NULL
               WHERE state = 'held' AND booking_id IN (SELECT unhex(value) FROM json_each(?1))
               RETURNING performance_id AS "performance_id!: Uuid", id AS "id!: Uuid""#,
            list
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(typed_pairs(
            released.into_iter().map(|r| (r.performance_id, r.id)),
        ))
    }

    async fn booking(&mut self, id: BookingId) -> StoreResult<Option<Booking>> {
        Ok(load_bookings(&mut self.tx, &[id.uuid()]).await?.pop())
    }

    async fn block_units(&mut self, ids: &[UnitId]) -> StoreResult<Vec<UnitId>> {
        let list = id_list(ids);
        sqlx::query_scalar!(
            r#"UPDATE units SET state = 'blocked', booking_id = NULL, held_until = NULL
               WHERE id IN (SELECT unhex(value) FROM json_each(?1)) AND state <> 'blocked'
               RETURNING id AS "id!: Uuid""#,
            list
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(backend)
        .map(typed)
    }

    async fn unblock_units(&mut self, ids: &[UnitId]) -> StoreResult<Vec<UnitId>> {
        let list = id_list(ids);
        sqlx::query_scalar!(
            r#"UPDATE units SET state = 'available'
               WHERE id IN (SELECT unhex(value) FROM json_each(?1)) AND state = 'blocked'
               RETURNING id AS "id!: Uuid""#,
            list
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

/// The seating plan's sections or ticket types, in plan order; with their ids (hex).
async fn insert_groups(
    tx: &mut SqliteConnection,
    performance_id: Uuid,
    seating: &SeatingPlan,
) -> StoreResult<((Vec<Section>, Vec<TicketType>), Vec<String>)> {
    let (mut sections, mut ticket_types, mut group_ids) = (Vec::new(), Vec::new(), Vec::new());
    for (position, group) in seating.price_groups().into_iter().enumerate() {
        let group_id = Uuid::now_v7();
        let (position_i, capacity_i) = (position as i64, i64::from(group.capacity));
        sqlx::query!(
            "INSERT INTO price_groups (id, performance_id, position, name, price_amount, capacity)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            group_id,
            performance_id,
            position_i,
            group.name,
            group.price.amount,
            capacity_i
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
        group_ids.push(group_id.simple().to_string());
    }
    Ok(((sections, ticket_types), group_ids))
}

/// One unit per sellable place, inserted in batches through `json_each`.
async fn insert_units(
    tx: &mut SqliteConnection,
    id: Uuid,
    seating: &SeatingPlan,
    group_ids: &[String],
) -> StoreResult<()> {
    // Each unit as [id, group, group position, row position, seat position, row label,
    // seat label, price], inserted in batches through `json_each`, each batch's JSON
    // built when it is sent (a stadium's units at once would be tens of megabytes).
    for batch in seating.units().chunks(INSERT_BATCH) {
        let units: Vec<serde_json::Value> = batch
            .iter()
            .map(|u| {
                serde_json::json!([
                    Uuid::now_v7().simple().to_string(),
                    group_ids[u.group],
                    u.group,
                    u.row,
                    u.seat,
                    u.row_label,
                    u.seat_label,
                    u.price.amount
                ])
            })
            .collect();
        let batch = serde_json::Value::from(units).to_string();
        sqlx::query!(
            "INSERT INTO units (id, performance_id, group_id, group_position, row_position,
                        seat_position, row_label, seat_label, price_amount, state)
             SELECT unhex(j.value ->> 0), ?1, unhex(j.value ->> 1), j.value ->> 2,
                j.value ->> 3, j.value ->> 4, j.value ->> 5, j.value ->> 6,
                j.value ->> 7, 'available'
             FROM json_each(?2) AS j",
            id,
            batch
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }
    Ok(())
}
