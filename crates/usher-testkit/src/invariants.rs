//! The invariants of DESIGN.md, checked through the storage contract after a race, a
//! crash or a random walk. Each check names what it found wrong.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use usher_core::lifecycle::PaymentStatus;
use usher_core::{Booking, BookingStatus, UnitState};
use usher_store::Store;

/// Checks one performance against the bookings known to have been made on it.
/// `bookings` must include every booking ever held on the performance.
pub async fn check_performance(
    store: &dyn Store,
    performance_id: Uuid,
    bookings: &[Uuid],
    now: DateTime<Utc>,
) -> Result<(), String> {
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

    // Each unit belongs to at most one live booking, and a live booking's units are
    // held (or sold) for it.
    let mut live_units: HashSet<Uuid> = HashSet::new();
    let mut live_held = 0u64;
    for id in bookings {
        let Some(booking) = store.booking(*id).await.map_err(|e| e.to_string())? else {
            continue;
        };
        if booking.performance_id != performance_id {
            continue;
        }
        let status = booking.status_at(now);
        if !matches!(status, BookingStatus::Held | BookingStatus::Confirmed) {
            continue;
        }
        check_total(&booking)?;
        for unit in &booking.units {
            if !live_units.insert(unit.unit_id) {
                return Err(format!("unit {} is in two live bookings", unit.unit_id));
            }
            let state = units.iter().find(|u| u.id == unit.unit_id).map(|u| u.state);
            let expected = if status == BookingStatus::Held {
                UnitState::Held
            } else {
                UnitState::Sold
            };
            if state != Some(expected) {
                return Err(format!(
                    "unit {} of {status} booking {} reads {state:?}",
                    unit.unit_id, booking.id
                ));
            }
        }
        if status == BookingStatus::Held {
            live_held += booking.units.len() as u64;
        }
    }
    // No held unit without a live booking behind it.
    if live_held != total.held {
        return Err(format!(
            "{} units held but live bookings hold {live_held}",
            total.held
        ));
    }
    Ok(())
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

/// Invariants 3 and 4 of DESIGN.md for these bookings: a confirmed booking names the one
/// succeeded payment that confirmed it; every other payment that captured money is being
/// (or has been) refunded; a refunded booking's confirming payment is refunded too.
pub async fn check_money(store: &dyn Store, bookings: &[Uuid]) -> Result<(), String> {
    for id in bookings {
        let Some(booking) = store.booking(*id).await.map_err(|e| e.to_string())? else {
            continue;
        };
        let payments = store
            .payments_of_booking(*id)
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

/// The wallet's invariants: each balance is the sum of its ledger, every entry's running
/// balance follows from the one before, and none is ever below zero.
pub async fn check_wallet(store: &dyn Store, user_id: Uuid) -> Result<(), String> {
    use std::collections::HashMap;
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
