//! The hold port on SQLite. Every hold transaction runs on the single writer
//! connection, so what it reads stays as read until it commits; the conditional write
//! still checks that each unit is free: it is the arbiter, whatever was read before.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Sqlite, Transaction};
use usher_core::ids::{PerformanceId, TicketTypeId, UnitId};
use uuid::Uuid;

use usher_core::best_available::{Read, Seat, SeatRow};
use usher_core::hold::{HeldUnit, HoldFacts, LockedUnit, UnitTake};
use usher_core::{SeatingKind, UnitState};
use usher_store::inventory::stored_currency;
use usher_store::{ChangeSet, HoldTx, LiveChange, NewHold, StoreResult, Tx, corrupt_value};

use crate::backend;
use crate::inventory::id_list;

/// An open transaction on the writer connection: holds, and waiting-list serving.
pub(crate) struct SqliteTx {
    pub(crate) tx: Transaction<'static, Sqlite>,
}

/// A free seat as best available reads it.
fn free_seat(id: Uuid, section: i64, row: i64, seat: i64) -> Seat {
    Seat {
        unit_id: id.into(),
        section: section as u32,
        row: row as u32,
        seat: seat as u32,
        free: true,
    }
}

/// A time as sqlx writes it into a text column, for values passed inside JSON.
fn stored_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

#[async_trait]
impl Tx for SqliteTx {
    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.tx.commit().await.map_err(backend)
    }

    async fn rollback(self: Box<Self>) -> StoreResult<()> {
        self.tx.rollback().await.map_err(backend)
    }
}

#[async_trait]
impl HoldTx for SqliteTx {
    async fn hold_facts(
        &mut self,
        performances: &[PerformanceId],
    ) -> StoreResult<Vec<(PerformanceId, HoldFacts)>> {
        let mut facts = Vec::with_capacity(performances.len());
        for &performance_id in performances {
            let Some(row) = sqlx::query!(
                r#"SELECT p.currency, p.kind, p.starts_at AS "starts_at!: DateTime<Utc>",
                          p.on_sale_at AS "on_sale_at?: DateTime<Utc>",
                          (p.status = 'scheduled' AND e.status = 'published') AS "open!: bool"
                   FROM performances p JOIN events e ON e.id = p.event_id WHERE p.id = ?1"#,
                performance_id
            )
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(backend)?
            else {
                continue;
            };
            let groups = sqlx::query!(
                r#"SELECT id AS "id!: Uuid", name FROM price_groups WHERE performance_id = ?1
                   ORDER BY position"#,
                performance_id
            )
            .fetch_all(&mut *self.tx)
            .await
            .map_err(backend)?;
            let waited_for = sqlx::query_scalar!(
                r#"SELECT DISTINCT ticket_type_id AS "ticket_type_id?: Uuid"
                   FROM waitlist_entries WHERE performance_id = ?1 AND status = 'waiting'"#,
                performance_id
            )
            .fetch_all(&mut *self.tx)
            .await
            .map_err(backend)?;
            let hold_facts = HoldFacts {
                currency: stored_currency(&row.currency)?,
                kind: SeatingKind::parse(&row.kind).map_err(corrupt_value("performances.kind"))?,
                open: row.open,
                starts_at: row.starts_at,
                on_sale_at: row.on_sale_at,
                groups: groups.into_iter().map(|g| (g.id, g.name)).collect(),
                waited_for: waited_for.into_iter().map(|t| t.map(Into::into)).collect(),
            };
            facts.push((performance_id, hold_facts));
        }
        Ok(facts)
    }

    async fn seat_rows(&mut self, performance_id: PerformanceId) -> StoreResult<Vec<SeatRow>> {
        let rows = sqlx::query!(
            r#"SELECT group_id AS "group_id!: Uuid", group_position AS "group_position!: i64",
                      row_position AS "row_position!: i64",
                      min(seat_position) AS "first!: i64", max(seat_position) AS "last!: i64"
               FROM units WHERE performance_id = ?1
               GROUP BY group_position, row_position, group_id
               ORDER BY group_position, row_position"#,
            performance_id
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|r| SeatRow {
                group: r.group_id.into(),
                section: r.group_position as u32,
                row: r.row_position as u32,
                first: r.first as u32,
                last: r.last as u32,
            })
            .collect())
    }

    async fn available_seats(&mut self, read: Read) -> StoreResult<Vec<Seat>> {
        let (from_row, limit) = (i64::from(read.from_row), i64::from(read.limit));
        let seats = sqlx::query!(
            r#"SELECT id AS "id!: Uuid", group_position AS "group_position!: i64",
                      row_position AS "row_position!: i64", seat_position AS "seat_position!: i64"
               FROM units
               WHERE group_id = ?1 AND state = 'available' AND row_position >= ?2
               ORDER BY row_position, seat_position LIMIT ?3"#,
            read.group,
            from_row,
            limit
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(seats
            .into_iter()
            .map(|s| free_seat(s.id, s.group_position, s.row_position, s.seat_position))
            .collect())
    }

    async fn expired_seats(
        &mut self,
        performance_id: PerformanceId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Seat>> {
        let seats = sqlx::query!(
            r#"SELECT u.id AS "id!: Uuid", u.group_position AS "group_position!: i64",
                      u.row_position AS "row_position!: i64",
                      u.seat_position AS "seat_position!: i64"
               FROM bookings b INDEXED BY bookings_held
               JOIN units u ON u.booking_id = b.id
               WHERE b.status = 'held' AND b.held_until <= ?2 AND b.performance_id = ?1
                 AND u.state = 'held' AND u.held_until <= ?2"#,
            performance_id,
            now
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(seats
            .into_iter()
            .map(|s| free_seat(s.id, s.group_position, s.row_position, s.seat_position))
            .collect())
    }

    /// Nothing to lock: this transaction is the only writer.
    async fn lock_units(&mut self, ids: &[UnitId]) -> StoreResult<Vec<LockedUnit>> {
        let list = id_list(ids);
        let rows = sqlx::query!(
            r#"SELECT id AS "id!: Uuid", performance_id AS "performance_id!: Uuid", state,
                      held_until AS "held_until?: DateTime<Utc>"
               FROM units WHERE id IN (SELECT unhex(value) FROM json_each(?1))"#,
            list
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|r| {
                Ok(LockedUnit {
                    id: r.id.into(),
                    performance_id: r.performance_id.into(),
                    state: UnitState::parse(&r.state).map_err(corrupt_value("units.state"))?,
                    held_until: r.held_until,
                })
            })
            .collect()
    }

    /// Available units first, then units of holds that have run out: each an index
    /// walk in position order (units_group_free), never a sort of the type. Nobody else
    /// locks anything here, so `skip_locked` changes nothing.
    async fn free_units(
        &mut self,
        ticket_type_id: TicketTypeId,
        now: DateTime<Utc>,
        wanted: u32,
        _skip_locked: bool,
    ) -> StoreResult<Vec<UnitId>> {
        let wanted = i64::from(wanted);
        let mut free = sqlx::query_scalar!(
            r#"SELECT id AS "id!: Uuid" FROM units
               WHERE group_id = ?1 AND state = 'available'
               ORDER BY row_position, seat_position LIMIT ?2"#,
            ticket_type_id,
            wanted
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(backend)?;
        let missing = wanted - free.len() as i64;
        free.extend(
            sqlx::query_scalar!(
                r#"SELECT id AS "id!: Uuid" FROM units
                   WHERE group_id = ?1 AND state = 'held' AND held_until <= ?2
                   ORDER BY row_position, seat_position LIMIT ?3"#,
                ticket_type_id,
                now,
                missing
            )
            .fetch_all(&mut *self.tx)
            .await
            .map_err(backend)?,
        );
        Ok(free.into_iter().map(Into::into).collect())
    }

    async fn count_free(
        &mut self,
        ticket_type_id: TicketTypeId,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let free = sqlx::query_scalar!(
            r#"SELECT count(*) AS "free!: i64" FROM units
               WHERE group_id = ?1 AND (state = 'available' OR (state = 'held' AND held_until <= ?2))"#,
            ticket_type_id,
            now
        )
        .fetch_one(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(free as u64)
    }

    async fn take_units(&mut self, takes: &[UnitTake]) -> StoreResult<Vec<HeldUnit>> {
        let takes: Vec<serde_json::Value> = takes
            .iter()
            .map(|t| {
                serde_json::json!([
                    t.unit_id.uuid().simple().to_string(),
                    t.booking_id.uuid().simple().to_string(),
                    stored_time(t.held_until),
                    stored_time(t.now),
                ])
            })
            .collect();
        let takes = serde_json::Value::from(takes).to_string();
        let rows = sqlx::query!(
            r#"UPDATE units SET state = 'held', booking_id = unhex(j.value ->> 1),
                                held_until = j.value ->> 2
               FROM json_each(?1) AS j
               WHERE units.id = unhex(j.value ->> 0)
                 AND (units.state = 'available'
                      OR (units.state = 'held' AND units.held_until <= j.value ->> 3))
               RETURNING units.id AS "id!: Uuid", units.booking_id AS "booking_id!: Uuid",
                         units.price_amount AS "price_amount!: i64",
                         units.group_id AS "group_id!: Uuid", units.group_position,
                         units.row_position, units.seat_position, units.row_label,
                         units.seat_label"#,
            takes
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|r| HeldUnit {
                booking_id: r.booking_id.into(),
                id: r.id.into(),
                price_amount: r.price_amount,
                group_id: r.group_id,
                group_position: r.group_position,
                row_position: r.row_position,
                seat_position: r.seat_position,
                row_label: r.row_label,
                seat_label: r.seat_label,
            })
            .collect())
    }

    async fn insert_holds(&mut self, holds: &[NewHold]) -> StoreResult<()> {
        let bookings: Vec<serde_json::Value> = holds
            .iter()
            .map(|h| {
                serde_json::json!([
                    h.booking_id.uuid().simple().to_string(),
                    h.user_id.uuid().simple().to_string(),
                    h.performance_id.uuid().simple().to_string(),
                    stored_time(h.held_until),
                    h.units.iter().map(|u| u.1).sum::<i64>(),
                    h.currency.as_str(),
                    stored_time(h.created_at),
                    h.offer,
                ])
            })
            .collect();
        let units: Vec<serde_json::Value> = holds
            .iter()
            .flat_map(|h| {
                h.units.iter().map(|(unit, price)| {
                    serde_json::json!([
                        h.booking_id.uuid().simple().to_string(),
                        unit.uuid().simple().to_string(),
                        price,
                    ])
                })
            })
            .collect();
        let bookings = serde_json::Value::from(bookings).to_string();
        sqlx::query!(
            "INSERT INTO bookings (id, user_id, performance_id, status, held_until, total_amount,
                                   currency, created_at, updated_at, offer)
             SELECT unhex(j.value ->> 0), unhex(j.value ->> 1), unhex(j.value ->> 2), 'held',
                    j.value ->> 3, j.value ->> 4, j.value ->> 5, j.value ->> 6, j.value ->> 6,
                    j.value ->> 7
             FROM json_each(?1) AS j",
            bookings
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        let units = serde_json::Value::from(units).to_string();
        sqlx::query!(
            "INSERT INTO booking_units (booking_id, unit_id, price_amount)
             SELECT unhex(j.value ->> 0), unhex(j.value ->> 1), j.value ->> 2 FROM json_each(?1) AS j",
            units
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn record_live(
        &mut self,
        moved: ChangeSet,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<LiveChange>> {
        crate::live::record(&mut self.tx, moved, now).await
    }
}
