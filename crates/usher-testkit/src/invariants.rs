//! The invariants of docs/ARCHITECTURE.md, checked through the storage contract after a race, a
//! crash or a random walk. Each check names what it found wrong.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use usher_core::ids::{BookingId, PerformanceId, UnitId, UserId};
use uuid::Uuid;

use usher_core::lifecycle::PaymentStatus;
use usher_core::{Booking, BookingStatus, UnitState};
use usher_store::Store;

/// Checks one performance against what its buyers were told and what the store holds.
///
/// `acknowledged` names every booking a buyer was told was made (a hold answered 201, a
/// command answered `Held`): each must still exist, on this performance. Refused holds
/// are not bookings and must not be named. Every booking the store keeps on the
/// performance is read as well (a hold can commit and lose its answer to a crash), so a
/// held or sold unit that no live booking accounts for is reported, and so is a live
/// booking whose units read otherwise.
pub async fn check_performance(
    store: &dyn Store,
    performance_id: PerformanceId,
    acknowledged: &[impl Copy + Into<BookingId>],
    now: DateTime<Utc>,
) -> Result<(), String> {
    let acknowledged: Vec<BookingId> = acknowledged.iter().map(|id| (*id).into()).collect();
    let units = store
        .units(performance_id, now)
        .await
        .map_err(|e| e.to_string())?;
    let inventory = store
        .inventory(performance_id, now)
        .await
        .map_err(|e| e.to_string())?;
    let total = inventory.total;

    // available + held + sold + blocked = capacity, in the counts and in the seat map.
    if total.available + total.held + total.sold + total.blocked != total.capacity {
        return Err(format!("counts do not add up: {total:?}"));
    }
    if units.len() as u64 != total.capacity {
        return Err(format!(
            "{} units but capacity {}",
            units.len(),
            total.capacity
        ));
    }
    let count = |state| units.iter().filter(|u| u.state == state).count() as u64;
    if (
        count(UnitState::Available),
        count(UnitState::Held),
        count(UnitState::Sold),
    ) != (total.available, total.held, total.sold)
    {
        return Err(format!("seat map and counts disagree: {total:?}"));
    }

    // Nothing acknowledged is lost: every booking a buyer was told of is still there.
    for &id in &acknowledged {
        let Some(booking) = store.booking(id).await.map_err(|e| e.to_string())? else {
            return Err(format!("booking {id} was acknowledged and is gone"));
        };
        if booking.performance_id != performance_id {
            return Err(format!(
                "booking {id} was acknowledged on performance {performance_id} but is on {}",
                booking.performance_id
            ));
        }
    }

    // Each unit belongs to at most one live booking, a live booking's units are held (or
    // sold) for it, and every held or sold unit has a live booking behind it.
    let stored = bookings_of(store, performance_id, now).await?;
    let state_of: HashMap<UnitId, UnitState> = units.iter().map(|u| (u.id, u.state)).collect();
    let mut live_units: HashSet<Uuid> = HashSet::new();
    let (mut live_held, mut live_sold) = (0u64, 0u64);
    for booking in &stored {
        let status = booking.status_at(now);
        let expected = match status {
            BookingStatus::Held => UnitState::Held,
            BookingStatus::Confirmed => UnitState::Sold,
            _ => continue,
        };
        check_total(booking)?;
        for unit in &booking.units {
            if !live_units.insert(unit.unit_id.uuid()) {
                return Err(format!("unit {} is in two live bookings", unit.unit_id));
            }
            let state = state_of.get(&unit.unit_id).copied();
            if state != Some(expected) {
                return Err(format!(
                    "unit {} of {status} booking {} reads {state:?}",
                    unit.unit_id, booking.id
                ));
            }
        }
        match status {
            BookingStatus::Held => live_held += booking.units.len() as u64,
            _ => live_sold += booking.units.len() as u64,
        }
    }
    if live_held != total.held {
        return Err(format!(
            "{} units held but live bookings hold {live_held}",
            total.held
        ));
    }
    if live_sold != total.sold {
        return Err(format!(
            "{} units sold but confirmed bookings hold {live_sold}",
            total.sold
        ));
    }
    Ok(())
}

/// Every booking the store keeps on a performance, whatever its state.
pub async fn bookings_of(
    store: &dyn Store,
    performance_id: PerformanceId,
    now: DateTime<Utc>,
) -> Result<Vec<Booking>, String> {
    let limit = usher_core::PageLimit::parse(Some(100)).map_err(|e| e.to_string())?;
    let mut bookings = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .attendees(performance_id, None, now, limit, after)
            .await
            .map_err(|e| e.to_string())?;
        bookings.extend(page.items.into_iter().map(|a| a.booking));
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(bookings),
        }
    }
}

/// A booking's total is the sum of its units' prices.
pub fn check_total(booking: &Booking) -> Result<(), String> {
    let sum: i64 = booking.units.iter().map(|u| u.price.amount).sum();
    if sum != booking.total.amount {
        return Err(format!(
            "booking {} totals {} but its units sum to {sum}",
            booking.id, booking.total.amount
        ));
    }
    Ok(())
}

/// Invariants 3 and 4 of docs/ARCHITECTURE.md for these bookings: a confirmed booking names the one
/// succeeded payment that confirmed it; every other payment that captured money is being
/// (or has been) refunded; a refunded booking's confirming payment is refunded too.
/// Every booking named must exist: one acknowledged and gone is reported.
pub async fn check_money(
    store: &dyn Store,
    bookings: &[impl Copy + Into<BookingId>],
) -> Result<(), String> {
    for id in bookings.iter().map(|id| (*id).into()) {
        let Some(booking) = store.booking(id).await.map_err(|e| e.to_string())? else {
            return Err(format!("booking {id} was acknowledged and is gone"));
        };
        let payments = store
            .payments_of_booking(id)
            .await
            .map_err(|e| e.to_string())?;
        for payment in &payments {
            let confirming = booking.paid_by == Some(payment.id);
            match payment.status {
                PaymentStatus::Succeeded
                    if !(confirming && booking.status == BookingStatus::Confirmed) =>
                {
                    return Err(format!(
                        "payment {} of {} booking {id} kept its money without buying it",
                        payment.id, booking.status
                    ));
                }
                PaymentStatus::Pending | PaymentStatus::Failed if confirming => {
                    return Err(format!(
                        "booking {id} is paid by uncaptured payment {}",
                        payment.id
                    ));
                }
                _ => {}
            }
        }
        if booking.status == BookingStatus::Confirmed {
            let paid = booking
                .paid_by
                .and_then(|p| payments.iter().find(|m| m.id == p))
                .map(|m| m.status);
            if paid != Some(PaymentStatus::Succeeded) {
                return Err(format!(
                    "confirmed booking {id} has no succeeded payment ({paid:?})"
                ));
            }
        }
    }
    Ok(())
}

/// Every payment a buyer was told of (a checkout answered with its id) still exists, its
/// booking exists, the booking lists it among its payments, and it asks for the booking's
/// total.
pub async fn check_payments(store: &dyn Store, payments: &[Uuid]) -> Result<(), String> {
    for id in payments {
        let Some(payment) = store
            .payment((*id).into())
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err(format!("payment {id} was acknowledged and is gone"));
        };
        let Some(booking) = store
            .booking(payment.booking_id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err(format!(
                "payment {id} is for booking {}, which is gone",
                payment.booking_id
            ));
        };
        let listed = store
            .payments_of_booking(booking.id)
            .await
            .map_err(|e| e.to_string())?;
        if !listed.iter().any(|p| p.id == (*id).into()) {
            return Err(format!(
                "booking {} does not list its payment {id}",
                booking.id
            ));
        }
        if payment.amount != booking.total {
            return Err(format!(
                "payment {id} asks {:?} for booking {} of {:?}",
                payment.amount, booking.id, booking.total
            ));
        }
    }
    Ok(())
}

/// The wallet's invariants: each balance is the sum of its ledger, every entry's running
/// balance follows from the one before, and none is ever below zero.
pub async fn check_wallet(store: &dyn Store, user_id: UserId) -> Result<(), String> {
    let mut entries = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .wallet_entries(
                user_id,
                usher_core::PageLimit::parse(Some(100)).unwrap(),
                after,
            )
            .await
            .map_err(|e| e.to_string())?;
        entries.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    entries.reverse(); // oldest first
    let mut running: HashMap<String, i64> = HashMap::new();
    for entry in &entries {
        let balance = running
            .entry(entry.amount.currency.as_str().to_owned())
            .or_default();
        *balance += entry.amount.amount;
        if *balance != entry.balance_after {
            return Err(format!(
                "entry {} says {} after it, the ledger sums to {balance}",
                entry.id, entry.balance_after
            ));
        }
        if *balance < 0 {
            return Err(format!("entry {} takes the balance below zero", entry.id));
        }
    }
    let balances = store
        .wallet_balances(user_id)
        .await
        .map_err(|e| e.to_string())?;
    for money in &balances {
        let summed = running.get(money.currency.as_str()).copied().unwrap_or(0);
        if money.amount != summed {
            return Err(format!(
                "balance {} {} but the ledger sums to {summed}",
                money.amount, money.currency
            ));
        }
    }
    if balances.len() != running.len() {
        return Err(format!(
            "{} balances for {} currencies in the ledger",
            balances.len(),
            running.len()
        ));
    }
    Ok(())
}
