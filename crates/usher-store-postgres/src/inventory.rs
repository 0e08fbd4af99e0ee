//! Performances, units and bookings on PostgreSQL.
//!
//! Many instances write at once here. The conditional write (`… AND the unit is free`)
//! is the arbiter: under READ COMMITTED PostgreSQL re-checks it on the newest row version
//! after waiting for a concurrent writer. Statements that lock several units lock them
//! in id order (`ORDER BY id FOR UPDATE`), so two holds cannot deadlock each other; a
//! deadlock or serialization failure that happens anyway is retried.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use usher_core::best_available::{self, Seat};
use usher_core::inventory::UnitPlan;
use usher_core::{
    Booking, BookingStatus, Cursor, PageLimit, Performance, PerformanceStatus, Unit, UnitState,
    User,
};
use usher_store::box_office::action;
use usher_store::inventory::stored_currency;
use usher_store::payments::job_kind;
use usher_store::{
    Attendee, BookedUnitRow, BookingCountRow, BookingRow, CommandOutcome, CountRow, HoldCommand,
    HoldWriter, InventoryCommand, NewPerformance, Page, PerformanceInventory, PerformancePatch,
    PerformanceRow, PerformanceSales, PerformanceUpdate, PriceGroupRow, SaleScope, SalesRow,
    Selection, StoreError, StoreResult, UnitRow, UserRow, assemble_performances, paginate,
    push_group, taken_units,
};
use usher_store::{Audit, ChangeSet, LiveBus, LiveChange};

use crate::payments::enqueue;
use crate::{PostgresStore, backend};

/// Units are inserted in batches of this many rows per statement.
const INSERT_BATCH: usize = 10_000;
/// How often a command is retried after a deadlock or a lost race for best seats.
const ATTEMPTS: usize = 5;
/// How often a general-admission hold looks again while enough units are free but
/// locked by other buyers' transactions.
const GENERAL_ATTEMPTS: usize = 10;

/// Deadlocks and serialization failures: the transaction was rolled back and may be
/// run again.
fn is_retryable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e)
        if matches!(e.code().as_deref(), Some("40P01") | Some("40001")))
}

/// What one attempt of a hold concluded.
pub(crate) enum Attempt {
    Done(CommandOutcome),
    /// Best-available seats were taken between reading and writing: choose again.
    LostRace,
    /// General admission took fewer units than asked; some may be locked by other
    /// buyers' transactions that have not finished.
    Short {
        ticket_type_id: Uuid,
        asked: u64,
    },
}

impl PostgresStore {
    pub(crate) async fn insert_performance(
        &self,
        new: NewPerformance,
        audit: &Audit,
    ) -> StoreResult<Performance> {
        let id = Uuid::now_v7();
        let now = usher_store::now();
        let kind = new.seating.kind();
        let currency = new.seating.currency;
        let ttl = new.hold_ttl.seconds() as i32;
        let max = new.max_per_booking.get() as i32;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query!(
            "INSERT INTO performances (id, event_id, starts_at, hold_ttl_seconds, max_per_booking,
                                       kind, currency, on_sale_at, created_at, waiting_room)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            id,
            new.event_id,
            new.starts_at,
            ttl,
            max,
            kind.as_str(),
            currency.as_str(),
            new.on_sale_at,
            now,
            new.waiting_room
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?;

        let mut sections = Vec::new();
        let mut ticket_types = Vec::new();
        let mut group_ids = Vec::new();
        for (position, group) in new.seating.price_groups().into_iter().enumerate() {
            let group_id = Uuid::now_v7();
            sqlx::query!(
                "INSERT INTO price_groups (id, performance_id, position, name, price_amount, capacity)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                group_id,
                id,
                position as i32,
                group.name,
                group.price.amount,
                group.capacity as i32
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            push_group(&mut sections, &mut ticket_types, kind, group_id, &group);
            group_ids.push(group_id);
        }
        let mut units = UnitColumns::with_capacity(new.seating.capacity());
        for u in new.seating.units() {
            units.push(group_ids[u.group], &u);
        }
        for start in (0..units.ids.len()).step_by(INSERT_BATCH) {
            let end = (start + INSERT_BATCH).min(units.ids.len());
            sqlx::query!(
                "INSERT INTO units (id, performance_id, group_id, group_position, row_position,
                                    seat_position, row_label, seat_label, price_amount, state)
                 SELECT u.id, $1, u.group_id, u.group_position, u.row_position, u.seat_position,
                        u.row_label, u.seat_label, u.price_amount, 'available'
                 FROM UNNEST($2::uuid[], $3::uuid[], $4::int[], $5::int[], $6::int[],
                             $7::text[], $8::text[], $9::bigint[])
                      AS u(id, group_id, group_position, row_position, seat_position,
                           row_label, seat_label, price_amount)",
                id,
                &units.ids[start..end],
                &units.groups[start..end],
                &units.group_positions[start..end],
                &units.row_positions[start..end],
                &units.seat_positions[start..end],
                &units.row_labels[start..end] as &[Option<String>],
                &units.seat_labels[start..end] as &[Option<String>],
                &units.prices[start..end]
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        let audit = audit
            .clone()
            .note("starts_at", new.starts_at.to_rfc3339())
            .note("kind", kind.as_str())
            .note("capacity", new.seating.units().len());
        crate::box_office::insert_audit(
            &mut tx,
            &audit.entry(
                action::PERFORMANCE_CREATED,
                ("performance", id),
                Some(new.event_id),
                now,
            ),
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        Ok(Performance {
            id,
            event_id: new.event_id,
            starts_at: new.starts_at,
            status: PerformanceStatus::Scheduled,
            on_sale_at: new.on_sale_at,
            waiting_room: new.waiting_room,
            hold_ttl: new.hold_ttl,
            max_per_booking: new.max_per_booking,
            kind,
            currency,
            sections,
            ticket_types,
            created_at: now,
        })
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

    pub(crate) async fn run_command(
        &self,
        command: InventoryCommand,
    ) -> StoreResult<CommandOutcome> {
        if let (InventoryCommand::Hold(hold), Some(pipeline)) = (&command, &self.pipeline) {
            return pipeline.hold(hold.clone()).await;
        }
        self.run_alone(command).await
    }

    /// Runs a command in transactions of its own, retrying what may be retried.
    pub(crate) async fn run_alone(&self, command: InventoryCommand) -> StoreResult<CommandOutcome> {
        let mut attempt = 0;
        // General admission first skips units other transactions are locking right now;
        // if that leaves it short while enough units are free, it waits for those locks.
        let mut wait_for_locks = false;
        loop {
            attempt += 1;
            let result = match &command {
                InventoryCommand::Hold(hold) => {
                    hold_attempt(&self.pool, &self.live, hold, wait_for_locks).await
                }
                InventoryCommand::Cancel { booking_id, now } => {
                    self.cancel(*booking_id, *now).await.map(Attempt::Done)
                }
                InventoryCommand::Sweep { now, limit } => {
                    self.sweep(*now, *limit).await.map(Attempt::Done)
                }
                InventoryCommand::SetBlocked {
                    performance_id,
                    unit_ids,
                    blocked,
                    now,
                    audit,
                } => self
                    .set_blocked(*performance_id, unit_ids, *blocked, *now, audit)
                    .await
                    .map(Attempt::Done),
            };
            match result {
                Ok(Attempt::Done(outcome)) => return Ok(outcome),
                Ok(Attempt::LostRace) if attempt < ATTEMPTS => continue,
                Ok(Attempt::Short {
                    ticket_type_id,
                    asked,
                }) if attempt < GENERAL_ATTEMPTS => {
                    let InventoryCommand::Hold(hold) = &command else {
                        unreachable!("only holds come up short")
                    };
                    if free_units(&self.pool, ticket_type_id, hold.now).await? >= asked {
                        wait_for_locks = true;
                        continue;
                    }
                    return Ok(CommandOutcome::Unavailable {
                        unit_ids: Vec::new(),
                    });
                }
                Ok(Attempt::LostRace | Attempt::Short { .. }) => {
                    return Ok(CommandOutcome::Unavailable {
                        unit_ids: Vec::new(),
                    });
                }
                Err(Retry::Again(_)) if attempt < ATTEMPTS => continue,
                Err(Retry::Again(e)) | Err(Retry::Fail(e)) => return Err(e),
            }
        }
    }

    /// Blocks (house seats, broken seats) or unblocks units, all or nothing.
    async fn set_blocked(
        &self,
        performance_id: Uuid,
        unit_ids: &[Uuid],
        blocked: bool,
        now: DateTime<Utc>,
        audit: &Audit,
    ) -> Result<CommandOutcome, Retry> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query!(
            r#"SELECT id, state, held_until FROM units
               WHERE performance_id = $1 AND id = ANY($2)
               ORDER BY id FOR UPDATE"#,
            performance_id,
            unit_ids
        )
        .fetch_all(&mut *tx)
        .await?;
        let outcome = if rows.len() != unit_ids.len() {
            CommandOutcome::UnknownUnits {
                unit_ids: unit_ids
                    .iter()
                    .filter(|id| !rows.iter().any(|r| r.id == **id))
                    .copied()
                    .collect(),
            }
        } else {
            let taken = taken_units(
                rows.iter().map(|r| (r.id, r.state.as_str(), r.held_until)),
                now,
            )?;
            if !taken.is_empty() {
                CommandOutcome::Unavailable { unit_ids: taken }
            } else {
                // An expired hold's unit is free: blocking it detaches it from that hold.
                let (changed, state) = if blocked {
                    let ids = sqlx::query_scalar!(
                        "UPDATE units SET state = 'blocked', booking_id = NULL, held_until = NULL
                         WHERE id = ANY($1) AND state <> 'blocked' RETURNING id",
                        unit_ids
                    )
                    .fetch_all(&mut *tx)
                    .await?;
                    (ids, UnitState::Blocked)
                } else {
                    let ids = sqlx::query_scalar!(
                        "UPDATE units SET state = 'available' WHERE id = ANY($1) AND state = 'blocked'
                         RETURNING id",
                        unit_ids
                    )
                    .fetch_all(&mut *tx)
                    .await?;
                    (ids, UnitState::Available)
                };
                let mut moved = ChangeSet::new();
                moved.extend(state, changed.iter().map(|id| (performance_id, *id)));
                let live = crate::live::record(&mut tx, moved, now).await?;
                let action = if blocked {
                    action::UNITS_BLOCKED
                } else {
                    action::UNITS_UNBLOCKED
                };
                let audit = audit
                    .clone()
                    .note(
                        "unit_ids",
                        unit_ids.iter().map(Uuid::to_string).collect::<Vec<_>>(),
                    )
                    .note("changed", changed.len());
                crate::box_office::insert_audit(
                    &mut tx,
                    &audit.entry(action, ("performance", performance_id), None, now),
                )
                .await?;
                tx.commit().await?;
                self.live.publish(live);
                return Ok(CommandOutcome::BlockingChanged {
                    changed: changed.len() as u64,
                });
            }
        };
        tx.rollback().await?;
        Ok(outcome)
    }

    async fn cancel(&self, booking_id: Uuid, now: DateTime<Utc>) -> Result<CommandOutcome, Retry> {
        let mut tx = self.pool.begin().await?;
        let outcome = cancel_in(&mut tx, booking_id, now).await;
        match outcome {
            Ok((CommandOutcome::Cancelled(booking), live)) => {
                tx.commit().await?;
                self.live.publish(live);
                Ok(CommandOutcome::Cancelled(booking))
            }
            other => {
                let _ = tx.rollback().await;
                other.map(|(outcome, _)| outcome)
            }
        }
    }

    async fn sweep(&self, now: DateTime<Utc>, limit: u32) -> Result<CommandOutcome, Retry> {
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: sweepers in several instances share the work instead of waiting
        // for each other; a booking being cancelled right now is skipped too.
        let expired = sqlx::query_scalar!(
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
        .fetch_all(&mut *tx)
        .await?;
        let released = if expired.is_empty() {
            Vec::new()
        } else {
            release_units(&mut tx, &expired).await?
        };
        let released_units = released.len() as u64;
        let mut moved = ChangeSet::new();
        moved.extend(UnitState::Available, released);
        let live = crate::live::record(&mut tx, moved, now).await?;
        tx.commit().await?;
        self.live.publish(live);
        Ok(CommandOutcome::Swept {
            expired,
            released_units,
        })
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
        Ok(paginate(bookings, limit, |b| b.id))
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
                let counts = BookingCountRow::counts_of(&bookings, row.id);
                row.into_sales(counts)
            })
            .collect()
    }

    pub(crate) async fn patch_performance(
        &self,
        id: Uuid,
        patch: PerformancePatch,
        now: DateTime<Utc>,
        audit: &Audit,
    ) -> StoreResult<PerformanceUpdate> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let status = sqlx::query_scalar!(
            "SELECT status FROM performances WHERE id = $1 FOR UPDATE",
            id
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        match status.as_deref() {
            None => return Ok(PerformanceUpdate::NoSuchPerformance),
            Some("cancelled") => return Ok(PerformanceUpdate::AlreadyCancelled),
            Some(_) => {}
        }
        let cancel = patch.status == Some(PerformanceStatus::Cancelled);
        sqlx::query!(
            "UPDATE performances
             SET starts_at = coalesce($2, starts_at),
                 hold_ttl_seconds = coalesce($3, hold_ttl_seconds),
                 max_per_booking = coalesce($4, max_per_booking),
                 on_sale_at = CASE WHEN $5 THEN $6 ELSE on_sale_at END,
                 status = CASE WHEN $7 THEN 'cancelled' ELSE status END,
                 waiting_room = coalesce($8, waiting_room)
             WHERE id = $1",
            id,
            patch.starts_at,
            patch.hold_ttl.map(|t| t.seconds() as i32),
            patch.max_per_booking.map(|m| m.get() as i32),
            patch.on_sale_at.is_some(),
            patch.on_sale_at.flatten(),
            cancel,
            patch.waiting_room
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if cancel {
            // In the same transaction: a crash after the commit still has the job.
            enqueue(
                &mut tx,
                job_kind::CANCEL_SALE,
                serde_json::json!({ "performance_id": id }),
                now,
            )
            .await?;
        }
        let action = if cancel {
            action::PERFORMANCE_CANCELLED
        } else {
            action::PERFORMANCE_UPDATED
        };
        crate::box_office::insert_audit(
            &mut tx,
            &audit.entry(action, ("performance", id), None, now),
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        match self.load_performances(None, Some(id)).await?.pop() {
            Some(performance) => Ok(PerformanceUpdate::Updated(performance)),
            None => Ok(PerformanceUpdate::NoSuchPerformance),
        }
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
        let user_ids: Vec<Uuid> = bookings.iter().map(|b| b.user_id).collect();
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
        Ok(paginate(attendees, limit, |a| a.booking.id))
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

/// Free units of a ticket type in committed state, counting those other transactions
/// are locking right now.
async fn free_units(pool: &PgPool, ticket_type_id: Uuid, now: DateTime<Utc>) -> StoreResult<u64> {
    let free = sqlx::query_scalar!(
        r#"SELECT count(*) AS "free!" FROM units
           WHERE group_id = $1 AND (state = 'available' OR (state = 'held' AND held_until <= $2))"#,
        ticket_type_id,
        now
    )
    .fetch_one(pool)
    .await
    .map_err(backend)?;
    Ok(free as u64)
}

/// Runs one attempt of a hold in its own transaction, committed only when units were
/// taken. Every other outcome rolls back explicitly: a transaction merely dropped keeps
/// its row locks until its connection is next used, and SKIP LOCKED buyers would see
/// those units as gone.
async fn hold_attempt(
    pool: &PgPool,
    bus: &LiveBus,
    hold: &HoldCommand,
    wait_for_locks: bool,
) -> Result<Attempt, Retry> {
    let mut tx = pool.begin().await?;
    match hold_in(&mut tx, hold, wait_for_locks).await {
        Ok(Attempt::Done(CommandOutcome::Held(booking))) => {
            let mut moved = ChangeSet::new();
            moved.extend(
                UnitState::Held,
                booking
                    .units
                    .iter()
                    .map(|u| (hold.performance_id, u.unit_id)),
            );
            let live = match crate::live::record(&mut tx, moved, hold.now).await {
                Ok(live) => live,
                Err(error) => {
                    let _ = tx.rollback().await;
                    return Err(Retry::Fail(error));
                }
            };
            tx.commit().await?;
            bus.publish(live);
            Ok(Attempt::Done(CommandOutcome::Held(booking)))
        }
        Ok(other) => {
            tx.rollback().await?;
            Ok(other)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Holds for the write pipeline: one writer per shard of performances, each batch one
/// transaction on one connection.
pub(crate) struct PgHolds {
    pub(crate) store: PostgresStore,
}

#[async_trait]
impl HoldWriter for PgHolds {
    /// One transaction, one commit and a handful of set-based statements for the whole
    /// batch ([`crate::batch`]). If the batch fails, nothing of it stands and each hold
    /// runs alone.
    async fn hold_batch(&self, holds: &[HoldCommand]) -> StoreResult<Vec<Option<CommandOutcome>>> {
        let mut tx = self.store.pool.begin().await.map_err(backend)?;
        match crate::batch::hold_batch(&mut tx, holds).await {
            Ok((outcomes, live)) => match tx.commit().await {
                Ok(()) => {
                    self.store.live.publish(live);
                    Ok(outcomes)
                }
                // Not committed: every hold runs alone.
                Err(error) if is_retryable(&error) => Ok(vec![None; holds.len()]),
                Err(error) => Err(backend(error)),
            },
            // Running each hold alone against a database that is gone would only make
            // every caller wait for the pool in turn: the whole batch answers 503 now.
            Err(error @ StoreError::Unavailable(_)) => Err(error),
            Err(error) => {
                tracing::warn!(%error, holds = holds.len(), "a hold batch failed; its holds run alone");
                let _ = tx.rollback().await;
                Ok(vec![None; holds.len()])
            }
        }
    }

    async fn hold_alone(&self, hold: &HoldCommand) -> StoreResult<CommandOutcome> {
        self.store
            .run_alone(InventoryCommand::Hold(hold.clone()))
            .await
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
        if is_retryable(&error) {
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

/// A performance's seats as best available chooses among them (free: available, or
/// held past its time), unlocked; shared by holds alone and hold batches.
pub(crate) async fn seats_to_choose_from(
    conn: &mut PgConnection,
    performance_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<Seat>, sqlx::Error> {
    let seats = sqlx::query!(
        r#"SELECT id, group_position, row_position, seat_position,
                  (state = 'available' OR (state = 'held' AND held_until <= $2)) AS "free!"
           FROM units WHERE performance_id = $1"#,
        performance_id,
        now
    )
    .fetch_all(conn)
    .await?;
    Ok(seats
        .into_iter()
        .map(|s| Seat {
            unit_id: s.id,
            section: s.group_position as u32,
            row: s.row_position as u32,
            seat: s.seat_position as u32,
            free: s.free,
        })
        .collect())
}

/// One attempt of a hold inside the caller's transaction.
pub(crate) async fn hold_in(
    tx: &mut PgConnection,
    hold: &HoldCommand,
    wait_for_locks: bool,
) -> Result<Attempt, Retry> {
    let now = hold.now;
    let asked_type = match &hold.selection {
        Selection::General { ticket_type_id, .. } => Some(*ticket_type_id),
        _ => None,
    };
    let Some(performance) = sqlx::query!(
        r#"SELECT p.currency,
                  (p.status = 'scheduled' AND e.status = 'published' AND p.starts_at > $2
                   AND (p.on_sale_at IS NULL OR p.on_sale_at <= $2)) AS "on_sale!",
                  EXISTS (SELECT 1 FROM waitlist_entries w
                          WHERE w.performance_id = p.id AND w.status = 'waiting'
                            AND (w.ticket_type_id IS NULL OR w.ticket_type_id = $3)) AS "waited_for!"
           FROM performances p JOIN events e ON e.id = p.event_id WHERE p.id = $1"#,
        hold.performance_id,
        now,
        asked_type
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(Attempt::Done(CommandOutcome::UnknownUnits {
            unit_ids: Vec::new(),
        }));
    };
    if !performance.on_sale {
        return Ok(Attempt::Done(CommandOutcome::NotOnSale));
    }
    if performance.waited_for && !hold.offer {
        return Ok(Attempt::Done(hold.refused()));
    }
    let currency = performance.currency;
    let asked = match &hold.selection {
        Selection::Units(ids) => ids.len(),
        Selection::General { quantity, .. } | Selection::BestAvailable { quantity } => {
            *quantity as usize
        }
    };
    // (id, price) of every unit taken.
    let taken: Vec<(Uuid, i64)> = match &hold.selection {
        Selection::Units(ids) => {
            let known = sqlx::query_scalar!(
                "SELECT id FROM units WHERE performance_id = $1 AND id = ANY($2)",
                hold.performance_id,
                ids
            )
            .fetch_all(&mut *tx)
            .await?;
            let unknown: Vec<Uuid> = ids
                .iter()
                .filter(|id| !known.contains(id))
                .copied()
                .collect();
            if !unknown.is_empty() {
                return Ok(Attempt::Done(CommandOutcome::UnknownUnits {
                    unit_ids: unknown,
                }));
            }
            let taken = take_units(tx, hold, ids).await?;
            if taken.len() != ids.len() {
                let unavailable = ids
                    .iter()
                    .filter(|id| !taken.iter().any(|t| t.0 == **id))
                    .copied()
                    .collect();
                return Ok(Attempt::Done(CommandOutcome::Unavailable {
                    unit_ids: unavailable,
                }));
            }
            taken
        }
        Selection::General {
            ticket_type_id,
            quantity,
        } => {
            let known = sqlx::query_scalar!(
                r#"SELECT g.id FROM price_groups g
                       JOIN performances p ON p.id = g.performance_id
                       WHERE g.id = $1 AND p.id = $2 AND p.kind = 'general'"#,
                ticket_type_id,
                hold.performance_id
            )
            .fetch_optional(&mut *tx)
            .await?;
            if known.is_none() {
                return Ok(Attempt::Done(CommandOutcome::UnknownUnits {
                    unit_ids: vec![*ticket_type_id],
                }));
            }
            // SKIP LOCKED: concurrent buyers of one ticket type take disjoint units
            // instead of queueing behind each other's row locks. When that comes up
            // short while enough units are free, the retry waits for the locks instead
            // (in id order, as every statement that locks units does).
            let rows = if wait_for_locks {
                sqlx::query!(
                    r#"UPDATE units SET state = 'held', booking_id = $1, held_until = $2
                       WHERE id IN (SELECT id FROM units
                                    WHERE group_id = $3
                                      AND (state = 'available' OR (state = 'held' AND held_until <= $4))
                                    ORDER BY id LIMIT $5
                                    FOR UPDATE)
                         AND (state = 'available' OR (state = 'held' AND held_until <= $4))
                       RETURNING id, price_amount"#,
                    hold.booking_id,
                    hold.held_until,
                    ticket_type_id,
                    now,
                    i64::from(*quantity)
                )
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|r| (r.id, r.price_amount))
                .collect::<Vec<_>>()
            } else {
                sqlx::query!(
                    r#"UPDATE units SET state = 'held', booking_id = $1, held_until = $2
                       WHERE id IN (SELECT id FROM units
                                    WHERE group_id = $3
                                      AND (state = 'available' OR (state = 'held' AND held_until <= $4))
                                    ORDER BY id LIMIT $5
                                    FOR UPDATE SKIP LOCKED)
                         AND (state = 'available' OR (state = 'held' AND held_until <= $4))
                       RETURNING id, price_amount"#,
                    hold.booking_id,
                    hold.held_until,
                    ticket_type_id,
                    now,
                    i64::from(*quantity)
                )
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|r| (r.id, r.price_amount))
                .collect::<Vec<_>>()
            };
            if rows.len() != asked {
                return Ok(Attempt::Short {
                    ticket_type_id: *ticket_type_id,
                    asked: asked as u64,
                });
            }
            rows
        }
        Selection::BestAvailable { quantity } => {
            let seats = seats_to_choose_from(tx, hold.performance_id, now).await?;
            let Some(chosen) = best_available::choose(&seats, *quantity as usize) else {
                return Ok(Attempt::Done(CommandOutcome::Unavailable {
                    unit_ids: Vec::new(),
                }));
            };
            let taken = take_units(tx, hold, &chosen).await?;
            if taken.len() != chosen.len() {
                // Someone took one of them since we looked; look again.
                return Ok(Attempt::LostRace);
            }
            taken
        }
    };
    let total: i64 = taken.iter().map(|t| t.1).sum();
    sqlx::query!(
        "INSERT INTO bookings (id, user_id, performance_id, status, held_until, total_amount,
                                   currency, created_at, updated_at, offer)
             VALUES ($1, $2, $3, 'held', $4, $5, $6, $7, $7, $8)",
        hold.booking_id,
        hold.user_id,
        hold.performance_id,
        hold.held_until,
        total,
        currency,
        now,
        hold.offer
    )
    .execute(&mut *tx)
    .await?;
    let (ids, prices): (Vec<Uuid>, Vec<i64>) = taken.into_iter().unzip();
    sqlx::query!(
        "INSERT INTO booking_units (booking_id, unit_id, price_amount)
             SELECT $1, u.id, u.price FROM UNNEST($2::uuid[], $3::bigint[]) AS u(id, price)",
        hold.booking_id,
        &ids,
        &prices
    )
    .execute(&mut *tx)
    .await?;
    let booking = load_bookings(tx, &[hold.booking_id]).await?.pop();
    booking
        .map(|b| Attempt::Done(CommandOutcome::Held(b)))
        .ok_or_else(|| Retry::Fail(StoreError::Backend("booking vanished after insert".into())))
}

/// Cancels a held booking inside the caller's transaction.
async fn cancel_in(
    tx: &mut PgConnection,
    booking_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(CommandOutcome, Vec<LiveChange>), Retry> {
    let cancelled = sqlx::query!(
        "UPDATE bookings SET status = 'cancelled', updated_at = $2
         WHERE id = $1 AND status = 'held' AND held_until > $2",
        booking_id,
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if cancelled == 0 {
        let outcome = match status_at(tx, booking_id, now).await? {
            Some(status) => CommandOutcome::NotCancellable { status },
            None => CommandOutcome::NoSuchBooking,
        };
        return Ok((outcome, Vec::new()));
    }
    let mut moved = ChangeSet::new();
    moved.extend(
        UnitState::Available,
        release_units(tx, &[booking_id]).await?,
    );
    let live = crate::live::record(tx, moved, now).await?;
    load_bookings(tx, &[booking_id])
        .await?
        .pop()
        .map(|b| (CommandOutcome::Cancelled(b), live))
        .ok_or_else(|| Retry::Fail(StoreError::Backend("booking vanished after cancel".into())))
}

/// Takes these units for the hold if each is free; returns those taken with their prices.
async fn take_units(
    conn: &mut PgConnection,
    hold: &HoldCommand,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, i64)>, Retry> {
    let rows = sqlx::query!(
        "UPDATE units SET state = 'held', booking_id = $1, held_until = $2
         WHERE id IN (SELECT id FROM units
                      WHERE performance_id = $3 AND id = ANY($4)
                      ORDER BY id FOR UPDATE)
           AND (state = 'available' OR (state = 'held' AND held_until <= $5))
         RETURNING id, price_amount",
        hold.booking_id,
        hold.held_until,
        hold.performance_id,
        ids,
        hold.now
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.price_amount)).collect())
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

/// What a booking reads as at `now`, for saying why a conditional update changed
/// nothing; `None` when there is no such booking.
pub(crate) async fn status_at(
    conn: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<BookingStatus>, Retry> {
    Ok(load_bookings(conn, &[id])
        .await?
        .pop()
        .map(|b| b.status_at(now)))
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
    bookings.sort_by_key(|b| ids.iter().position(|id| *id == b.id));
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
