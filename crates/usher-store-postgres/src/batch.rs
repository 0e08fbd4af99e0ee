//! Hold batches on PostgreSQL, set-based: a batch of holds costs a handful of
//! statements whatever its size, not a handful per hold.
//!
//! 1. The batch's performances (and their sections or ticket types) in one read.
//! 2. Every seat the batch names, locked in one `SELECT … FOR UPDATE` in id order (the
//!    order every statement that locks units follows, so no deadlock with holds,
//!    sweeps or payments). General admission units per ticket type in one
//!    `… FOR UPDATE SKIP LOCKED`, as many as the batch asks for.
//! 3. Winners decided in Rust, in arrival order: a hold wins if all its units exist,
//!    are free as locked, and no earlier hold of the batch took them.
//! 4. One conditional `UPDATE … FROM UNNEST(…)` takes every winner's units; it must take
//!    exactly as many as were decided, or nothing of the batch stands. It stays the
//!    arbiter, so several instances remain correct.
//! 5. The bookings and their units written in two statements.
//!
//! Best-available holds choose from each performance's seat map, read once per batch
//! and marked as the batch chooses; their choices are locked and checked with the named
//! seats. A hold the batch cannot settle without waiting — a best-available choice taken
//! since the read, general admission short of free units others are locking — runs
//! alone after the commit, where it may wait for locks and retry.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use usher_core::best_available::{self, Seat};
use usher_core::{SeatingKind, UnitState};
use usher_store::inventory::stored_currency;
use usher_store::{
    ChangeSet, CommandOutcome, HeldUnit, HoldCommand, HoldFacts, LiveChange, Selection, StoreError,
    StoreResult, corrupt_value, held_booking,
};

use crate::backend;

/// What the batch decided for one hold.
enum Plan {
    Decided(CommandOutcome),
    /// Run it alone after the commit.
    Alone,
    Take(Vec<Uuid>),
}

/// Runs a batch in the caller's transaction. `None` for a hold to run alone.
pub(crate) async fn hold_batch(
    tx: &mut PgConnection,
    holds: &[HoldCommand],
) -> StoreResult<(Vec<Option<CommandOutcome>>, Vec<LiveChange>)> {
    let facts = performances(tx, holds).await?;
    let mut plans: Vec<Plan> = holds
        .iter()
        .map(|hold| match facts.get(&hold.performance_id) {
            None => Plan::Decided(CommandOutcome::UnknownUnits {
                unit_ids: Vec::new(),
            }),
            Some(f) if !f.on_sale(hold.now) => Plan::Decided(CommandOutcome::NotOnSale),
            Some(f) if f.kept_for_waiting_list(hold) => Plan::Decided(hold.refused()),
            Some(_) => match &hold.selection {
                Selection::BestAvailable { .. } => Plan::Take(Vec::new()),
                Selection::Units(ids) => Plan::Take(ids.clone()),
                Selection::General { ticket_type_id, .. } => {
                    let known = facts.get(&hold.performance_id).is_some_and(|f| {
                        f.kind == SeatingKind::General
                            && f.groups.iter().any(|(id, _)| id == ticket_type_id)
                    });
                    if known {
                        Plan::Take(Vec::new())
                    } else {
                        Plan::Decided(CommandOutcome::UnknownUnits {
                            unit_ids: vec![*ticket_type_id],
                        })
                    }
                }
            },
        })
        .collect();

    // Best available: each performance's seat map read once (unlocked) for the batch,
    // seats chosen in arrival order and marked as the batch goes; the choices are then
    // locked and checked with the named seats below. A choice someone else took since
    // the read sends its hold to run alone.
    let mut seat_maps: HashMap<Uuid, Vec<Seat>> = HashMap::new();
    for (hold, plan) in holds.iter().zip(plans.iter_mut()) {
        let (Plan::Take(_), Selection::BestAvailable { quantity }) = (&*plan, &hold.selection)
        else {
            continue;
        };
        if let Entry::Vacant(slot) = seat_maps.entry(hold.performance_id) {
            let seats = crate::inventory::seats_to_choose_from(tx, hold.performance_id, hold.now)
                .await
                .map_err(backend)?;
            slot.insert(seats);
        }
        let Some(seats) = seat_maps.get_mut(&hold.performance_id) else {
            continue;
        };
        match best_available::choose(seats, *quantity as usize) {
            None => {
                *plan = Plan::Decided(CommandOutcome::Unavailable {
                    unit_ids: Vec::new(),
                })
            }
            Some(chosen) => {
                let picked: HashSet<&Uuid> = chosen.iter().collect();
                for seat in seats.iter_mut().filter(|s| picked.contains(&s.unit_id)) {
                    seat.free = false;
                }
                *plan = Plan::Take(chosen);
            }
        }
    }

    // Named and chosen seats: lock them all in id order, then decide in arrival order.
    let named: Vec<Uuid> = holds
        .iter()
        .zip(&plans)
        .filter(|(h, _)| !matches!(h.selection, Selection::General { .. }))
        .flat_map(|(h, p)| match (&h.selection, p) {
            (Selection::Units(ids), Plan::Take(_)) => ids.clone(),
            (Selection::BestAvailable { .. }, Plan::Take(chosen)) => chosen.clone(),
            _ => Vec::new(),
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let locked: HashMap<Uuid, (Uuid, UnitState, Option<DateTime<Utc>>)> = if named.is_empty() {
        HashMap::new()
    } else {
        sqlx::query!(
            "SELECT id, performance_id, state, held_until FROM units
             WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &named
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .into_iter()
        .map(|r| {
            let state = UnitState::parse(&r.state).map_err(corrupt_value("units.state"))?;
            Ok((r.id, (r.performance_id, state, r.held_until)))
        })
        .collect::<StoreResult<_>>()?
    };
    let mut claimed: HashSet<Uuid> = HashSet::new();
    for (hold, plan) in holds.iter().zip(plans.iter_mut()) {
        let best = matches!(hold.selection, Selection::BestAvailable { .. });
        let ids = match (&*plan, &hold.selection) {
            (Plan::Take(_), Selection::Units(ids)) => ids.clone(),
            (Plan::Take(chosen), Selection::BestAvailable { .. }) => chosen.clone(),
            _ => continue,
        };
        let unknown: Vec<Uuid> = ids
            .iter()
            .filter(|id| {
                locked
                    .get(id)
                    .is_none_or(|(p, _, _)| *p != hold.performance_id)
            })
            .copied()
            .collect();
        if !unknown.is_empty() {
            *plan = Plan::Decided(CommandOutcome::UnknownUnits { unit_ids: unknown });
            continue;
        }
        let taken: Vec<Uuid> = ids
            .iter()
            .filter(|id| {
                let (_, state, held_until) = &locked[*id];
                !state.free(*held_until, hold.now) || claimed.contains(*id)
            })
            .copied()
            .collect();
        if !taken.is_empty() {
            *plan = if best {
                // Taken since the seat map was read: choose again, alone.
                Plan::Alone
            } else {
                Plan::Decided(CommandOutcome::Unavailable { unit_ids: taken })
            };
            continue;
        }
        claimed.extend(ids.iter().copied());
        *plan = Plan::Take(ids);
    }

    // General admission: per ticket type, as many free units as the batch asks for.
    let mut demand: Vec<(Uuid, i64, DateTime<Utc>)> = Vec::new();
    for (hold, plan) in holds.iter().zip(&plans) {
        if let (
            Plan::Take(_),
            Selection::General {
                ticket_type_id,
                quantity,
            },
        ) = (plan, &hold.selection)
        {
            match demand.iter_mut().find(|(t, _, _)| t == ticket_type_id) {
                Some((_, wanted, since)) => {
                    *wanted += i64::from(*quantity);
                    *since = (*since).min(hold.now);
                }
                None => demand.push((*ticket_type_id, i64::from(*quantity), hold.now)),
            }
        }
    }
    let mut free_by_type: HashMap<Uuid, std::vec::IntoIter<Uuid>> = HashMap::new();
    for (ticket_type_id, wanted, now) in demand {
        let free = sqlx::query_scalar!(
            "SELECT id FROM units
             WHERE group_id = $1 AND (state = 'available' OR (state = 'held' AND held_until <= $2))
             ORDER BY id LIMIT $3
             FOR UPDATE SKIP LOCKED",
            ticket_type_id,
            now,
            wanted
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        free_by_type.insert(ticket_type_id, free.into_iter());
    }
    for (hold, plan) in holds.iter().zip(plans.iter_mut()) {
        if let (
            Plan::Take(_),
            Selection::General {
                ticket_type_id,
                quantity,
            },
        ) = (&*plan, &hold.selection)
        {
            let free = free_by_type.get_mut(ticket_type_id);
            let units: Vec<Uuid> = free
                .map(|f| f.by_ref().take(*quantity as usize).collect())
                .unwrap_or_default();
            // Short: others may be locking units that will come free; alone, it waits.
            *plan = if units.len() == *quantity as usize {
                Plan::Take(units)
            } else {
                Plan::Alone
            };
        }
    }

    // Every winner's units in one conditional update.
    let (mut unit_ids, mut booking_ids, mut until, mut nows) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (hold, plan) in holds.iter().zip(&plans) {
        if let Plan::Take(units) = plan {
            for unit in units {
                unit_ids.push(*unit);
                booking_ids.push(hold.booking_id);
                until.push(hold.held_until);
                nows.push(hold.now);
            }
        }
    }
    let mut held: HashMap<Uuid, Vec<HeldUnit>> = HashMap::new();
    if !unit_ids.is_empty() {
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
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        if rows.len() != unit_ids.len() {
            return Err(StoreError::Backend(format!(
                "a hold batch took {} of the {} units it had locked free",
                rows.len(),
                unit_ids.len()
            )));
        }
        for r in rows {
            held.entry(r.booking_id).or_default().push(HeldUnit {
                id: r.id,
                price_amount: r.price_amount,
                group_id: r.group_id,
                group_position: r.group_position,
                row_position: r.row_position,
                seat_position: r.seat_position,
                row_label: r.row_label,
                seat_label: r.seat_label,
            });
        }
    }

    // The bookings and their units, two statements for the batch.
    let (mut ids, mut users, mut perfs, mut helds, mut totals, mut currencies, mut created) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut offers = Vec::new();
    let (mut bu_booking, mut bu_unit, mut bu_price) = (Vec::new(), Vec::new(), Vec::new());
    for (hold, plan) in holds.iter().zip(&plans) {
        let (Plan::Take(_), Some(units), Some(f)) = (
            plan,
            held.get(&hold.booking_id),
            facts.get(&hold.performance_id),
        ) else {
            continue;
        };
        ids.push(hold.booking_id);
        users.push(hold.user_id);
        perfs.push(hold.performance_id);
        helds.push(hold.held_until);
        totals.push(units.iter().map(|u| u.price_amount).sum::<i64>());
        currencies.push(f.currency.as_str().to_owned());
        created.push(hold.now);
        offers.push(hold.offer);
        for unit in units {
            bu_booking.push(hold.booking_id);
            bu_unit.push(unit.id);
            bu_price.push(unit.price_amount);
        }
    }
    if !ids.is_empty() {
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
            &helds,
            &totals,
            &currencies,
            &created,
            &offers
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query!(
            "INSERT INTO booking_units (booking_id, unit_id, price_amount)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[])",
            &bu_booking,
            &bu_unit,
            &bu_price
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }

    // The feed last: its heads are the last locks a transaction takes.
    let mut moved = ChangeSet::new();
    for (hold, plan) in holds.iter().zip(&plans) {
        if let Plan::Take(units) = plan {
            moved.extend(
                UnitState::Held,
                units.iter().map(|u| (hold.performance_id, *u)),
            );
        }
    }
    let live = match holds.iter().map(|h| h.now).max() {
        Some(now) if !moved.is_empty() => crate::live::record(tx, moved, now).await?,
        _ => Vec::new(),
    };

    let outcomes = holds
        .iter()
        .zip(plans)
        .map(|(hold, plan)| match plan {
            Plan::Decided(outcome) => Some(outcome),
            Plan::Alone => None,
            Plan::Take(_) => {
                let units = held.remove(&hold.booking_id).unwrap_or_default();
                let f = facts.get(&hold.performance_id)?;
                Some(CommandOutcome::Held(held_booking(
                    hold, f.currency, f.kind, &f.groups, units,
                )))
            }
        })
        .collect();
    Ok((outcomes, live))
}

/// The batch's performances with their sections or ticket types, in two reads.
async fn performances(
    tx: &mut PgConnection,
    holds: &[HoldCommand],
) -> StoreResult<HashMap<Uuid, HoldFacts>> {
    let ids: Vec<Uuid> = holds
        .iter()
        .map(|h| h.performance_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let rows = sqlx::query!(
        r#"SELECT p.id, p.currency, p.kind, p.starts_at, p.on_sale_at,
                  (p.status = 'scheduled' AND e.status = 'published') AS "open!"
           FROM performances p JOIN events e ON e.id = p.event_id
           WHERE p.id = ANY($1)"#,
        &ids
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(backend)?;
    let groups = sqlx::query!(
        "SELECT id, performance_id, name FROM price_groups WHERE performance_id = ANY($1)",
        &ids
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(backend)?;
    let waited_for = sqlx::query!(
        "SELECT DISTINCT performance_id, ticket_type_id FROM waitlist_entries
         WHERE performance_id = ANY($1) AND status = 'waiting'",
        &ids
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(backend)?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.id,
                HoldFacts {
                    currency: stored_currency(&r.currency)?,
                    kind: SeatingKind::parse(&r.kind).map_err(crate::corrupt)?,
                    open: r.open,
                    starts_at: r.starts_at,
                    on_sale_at: r.on_sale_at,
                    groups: groups
                        .iter()
                        .filter(|g| g.performance_id == r.id)
                        .map(|g| (g.id, g.name.clone()))
                        .collect(),
                    waited_for: waited_for
                        .iter()
                        .filter(|w| w.performance_id == r.id)
                        .map(|w| w.ticket_type_id)
                        .collect(),
                },
            ))
        })
        .collect()
}
