//! The hold port on PostgreSQL: set-based statements, so a batch of holds costs a
//! handful of statements whatever its size. Every statement that locks units locks them
//! in id order (as sweeps and payments do), so none deadlocks with another.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use usher_core::ids::{PerformanceId, TicketTypeId, UnitId};
use uuid::Uuid;

use usher_core::best_available::{Read, Seat, SeatRow};
use usher_core::hold::{HeldUnit, HoldFacts, LockedUnit, UnitTake};
use usher_core::{SeatingKind, UnitState};
use usher_store::inventory::stored_currency;
use usher_store::{ChangeSet, HoldTx, LiveChange, NewHold, StoreResult, Tx, corrupt_value};
use usher_store::{typed, uuids};

use crate::backend;

/// An open transaction of the hold path (and of waiting-list serving).
pub(crate) struct PgTx {
    pub(crate) tx: Transaction<'static, Postgres>,
}

/// A free seat as best available reads it.
fn free_seat(id: Uuid, section: i32, row: i32, seat: i32) -> Seat {
    Seat {
        unit_id: id.into(),
        section: section as u32,
        row: row as u32,
        seat: seat as u32,
        free: true,
    }
}

#[async_trait]
impl Tx for PgTx {
    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.tx.commit().await.map_err(backend)
    }

    async fn rollback(self: Box<Self>) -> StoreResult<()> {
        self.tx.rollback().await.map_err(backend)
    }
}

#[async_trait]
impl HoldTx for PgTx {
    async fn hold_facts(
        &mut self,
        performances: &[PerformanceId],
    ) -> StoreResult<Vec<(PerformanceId, HoldFacts)>> {
        let rows = sqlx::query!(
            r#"SELECT p.id, p.currency, p.kind, p.starts_at, p.on_sale_at,
                      (p.status = 'scheduled' AND e.status = 'published') AS "open!",
                      ARRAY(SELECT g.id FROM price_groups g WHERE g.performance_id = p.id
                            ORDER BY g.position) AS "group_ids!",
                      ARRAY(SELECT g.name FROM price_groups g WHERE g.performance_id = p.id
                            ORDER BY g.position) AS "group_names!",
                      EXISTS (SELECT 1 FROM waitlist_entries w WHERE w.performance_id = p.id
                              AND w.status = 'waiting' AND w.ticket_type_id IS NULL) AS "seats_waited_for!",
                      ARRAY(SELECT DISTINCT w.ticket_type_id FROM waitlist_entries w
                            WHERE w.performance_id = p.id AND w.status = 'waiting'
                              AND w.ticket_type_id IS NOT NULL) AS "types_waited_for!: Vec<Uuid>"
               FROM performances p JOIN events e ON e.id = p.event_id
               WHERE p.id = ANY($1)"#,
            &uuids(performances)
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|r| {
                let seats = r.seats_waited_for.then_some(None).into_iter();
                Ok((
                    PerformanceId::from(r.id),
                    HoldFacts {
                        currency: stored_currency(&r.currency)?,
                        kind: SeatingKind::parse(&r.kind)
                            .map_err(corrupt_value("performances.kind"))?,
                        open: r.open,
                        starts_at: r.starts_at,
                        on_sale_at: r.on_sale_at,
                        groups: r.group_ids.into_iter().zip(r.group_names).collect(),
                        waited_for: seats
                            .chain(r.types_waited_for.into_iter().map(Some))
                            .map(|t| t.map(TicketTypeId::from))
                            .collect(),
                    },
                ))
            })
            .collect()
    }

    async fn seat_rows(&mut self, performance_id: PerformanceId) -> StoreResult<Vec<SeatRow>> {
        let rows = sqlx::query!(
            r#"SELECT group_id, group_position, row_position,
                      min(seat_position) AS "first!", max(seat_position) AS "last!"
               FROM units WHERE performance_id = $1
               GROUP BY group_position, row_position, group_id
               ORDER BY group_position, row_position"#,
            performance_id.uuid()
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
        let seats = sqlx::query!(
            "SELECT id, group_position, row_position, seat_position FROM units
             WHERE group_id = $1 AND state = 'available' AND row_position >= $2
             ORDER BY row_position, seat_position LIMIT $3",
            read.group.uuid(),
            read.from_row as i32,
            i64::from(read.limit)
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
            "SELECT u.id, u.group_position, u.row_position, u.seat_position
             FROM bookings b JOIN units u ON u.booking_id = b.id
             WHERE b.status = 'held' AND b.held_until <= $2 AND b.performance_id = $1
               AND u.state = 'held' AND u.held_until <= $2",
            performance_id.uuid(),
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

    async fn lock_units(&mut self, ids: &[UnitId]) -> StoreResult<Vec<LockedUnit>> {
        let rows = sqlx::query!(
            "SELECT id, performance_id, state, held_until FROM units
             WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &uuids(ids)
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

    /// SKIP LOCKED: concurrent buyers of one ticket type take disjoint units instead
    /// of queueing behind each other's row locks.
    async fn free_units(
        &mut self,
        ticket_type_id: TicketTypeId,
        now: DateTime<Utc>,
        wanted: u32,
        skip_locked: bool,
    ) -> StoreResult<Vec<UnitId>> {
        let wanted = i64::from(wanted);
        let free = if skip_locked {
            sqlx::query_scalar!(
                "SELECT id FROM units
                 WHERE group_id = $1 AND (state = 'available' OR (state = 'held' AND held_until <= $2))
                 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
                ticket_type_id.uuid(),
                now,
                wanted
            )
            .fetch_all(&mut *self.tx)
            .await
        } else {
            sqlx::query_scalar!(
                "SELECT id FROM units
                 WHERE group_id = $1 AND (state = 'available' OR (state = 'held' AND held_until <= $2))
                 ORDER BY id LIMIT $3 FOR UPDATE",
                ticket_type_id.uuid(),
                now,
                wanted
            )
            .fetch_all(&mut *self.tx)
            .await
        };
        free.map_err(backend).map(typed)
    }

    async fn count_free(
        &mut self,
        ticket_type_id: TicketTypeId,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let free = sqlx::query_scalar!(
            r#"SELECT count(*) AS "free!" FROM units
               WHERE group_id = $1 AND (state = 'available' OR (state = 'held' AND held_until <= $2))"#,
            ticket_type_id.uuid(),
            now
        )
        .fetch_one(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(free as u64)
    }

    async fn take_units(&mut self, takes: &[UnitTake]) -> StoreResult<Vec<HeldUnit>> {
        let unit_ids: Vec<Uuid> = takes.iter().map(|t| t.unit_id.uuid()).collect();
        let booking_ids: Vec<Uuid> = takes.iter().map(|t| t.booking_id.uuid()).collect();
        let until: Vec<DateTime<Utc>> = takes.iter().map(|t| t.held_until).collect();
        let nows: Vec<DateTime<Utc>> = takes.iter().map(|t| t.now).collect();
        let rows = sqlx::query!(
            r#"UPDATE units u SET state = 'held', booking_id = v.booking_id, held_until = v.held_until
               FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[])
                    AS v(unit_id, booking_id, held_until, now)
               WHERE u.id = v.unit_id
                 AND (u.state = 'available' OR (u.state = 'held' AND u.held_until <= v.now))
               RETURNING u.id, u.booking_id AS "booking_id!", u.price_amount, u.group_id,
                         u.group_position::bigint AS "group_position!",
                         u.row_position::bigint AS "row_position!",
                         u.seat_position::bigint AS "seat_position!",
                         u.row_label, u.seat_label"#,
            &unit_ids,
            &booking_ids,
            &until,
            &nows
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
        let ids: Vec<Uuid> = holds.iter().map(|h| h.booking_id.uuid()).collect();
        let users: Vec<Uuid> = holds.iter().map(|h| h.user_id.uuid()).collect();
        let perfs: Vec<Uuid> = holds.iter().map(|h| h.performance_id.uuid()).collect();
        let until: Vec<DateTime<Utc>> = holds.iter().map(|h| h.held_until).collect();
        let totals: Vec<i64> = holds
            .iter()
            .map(|h| h.units.iter().map(|u| u.1).sum())
            .collect();
        let currencies: Vec<String> = holds
            .iter()
            .map(|h| h.currency.as_str().to_owned())
            .collect();
        let created: Vec<DateTime<Utc>> = holds.iter().map(|h| h.created_at).collect();
        let offers: Vec<bool> = holds.iter().map(|h| h.offer).collect();
        sqlx::query!(
            "INSERT INTO bookings (id, user_id, performance_id, status, held_until, total_amount,
                                   currency, created_at, updated_at, offer)
             SELECT b.id, b.user_id, b.performance_id, 'held', b.held_until, b.total, b.currency,
                    b.created, b.created, b.offer
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::bigint[],
                         $6::text[], $7::timestamptz[], $8::bool[])
                  AS b(id, user_id, performance_id, held_until, total, currency, created, offer)",
            &ids,
            &users,
            &perfs,
            &until,
            &totals,
            &currencies,
            &created,
            &offers
        )
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        let units = holds
            .iter()
            .flat_map(|h| h.units.iter().map(|u| (h.booking_id, u.0, u.1)));
        let (mut booking, mut unit, mut price) = (Vec::new(), Vec::new(), Vec::new());
        for (b, u, p) in units {
            booking.push(b);
            unit.push(u);
            price.push(p);
        }
        sqlx::query!(
            "INSERT INTO booking_units (booking_id, unit_id, price_amount)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[])",
            &uuids(&booking),
            &uuids(&unit),
            &price
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
