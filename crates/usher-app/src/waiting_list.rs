//! The waiting list: joining it (who must wait, at which place) and serving it (people
//! waiting for a sold-out performance get offers, a hold made for them, as units come
//! back; who is served past whom). Leaving and reading the list are single statements
//! of the store ([`usher_store::waiting`]).

use chrono::{DateTime, Duration, Utc};
use usher_core::ids::{BookingId, PerformanceId};
use uuid::Uuid;

use usher_core::hold::{HoldCommand, Selection};
use usher_core::waiting_list::{JoinRefusal, Line, join_refusal, must_wait};
use usher_core::{Booking, TicketTypeId};
use usher_store::waiting::joined;
use usher_store::{
    CommandOutcome, JoinTx, ServeTx, Store, StoreError, StoreResult, WaitlistJoin, WaitlistJoined,
};

use crate::hold;

/// Serves a performance's waiting list with whatever units are free: in line order,
/// each entry a whole group at once (a general-admission quantity of its ticket type,
/// or the best adjacent seats), as a hold made for that person with `offer_ttl` to pay.
/// An entry that cannot be served stays first in line for its ticket type (or for the
/// seats); later groups smaller than every one refused before them may be served past
/// it, at most `MAX_PASSES` times ([`usher_core::waiting_list::Line`]), after which the units that come back wait for it.
/// Returns the offers made.
pub async fn serve(
    store: &dyn Store,
    performance_id: PerformanceId,
    now: DateTime<Utc>,
    offer_ttl: Duration,
) -> StoreResult<Vec<(Uuid, Booking)>> {
    let Some(mut tx) = store.begin_serving(performance_id).await? else {
        return Ok(Vec::new());
    };
    let offers = match serve_in(
        tx.as_mut(),
        performance_id,
        now,
        offer_ttl,
        store.hold_engine().serialised,
    )
    .await
    {
        Ok(offers) if offers.is_empty() => {
            tx.rollback().await?;
            return Ok(offers);
        }
        Ok(offers) => offers,
        Err(error) => {
            let _ = tx.rollback().await;
            return Err(error);
        }
    };
    let moved = hold::held_moves(offers.iter().map(|(_, booking)| booking));
    let live = match tx.record_live(moved, now).await {
        Ok(live) => live,
        Err(error) => {
            let _ = tx.rollback().await;
            return Err(error);
        }
    };
    tx.commit().await?;
    store.live_bus().publish(live);
    Ok(offers)
}

/// The walk down the line, inside the serving transaction.
async fn serve_in(
    tx: &mut dyn ServeTx,
    performance_id: PerformanceId,
    now: DateTime<Utc>,
    offer_ttl: Duration,
    serialised: bool,
) -> StoreResult<Vec<(Uuid, Booking)>> {
    let waiting = tx.waiting(performance_id).await?;
    let geometries = hold::Geometries::default();
    let mut line = Line::new();
    let mut offers = Vec::new();
    for entry in waiting {
        let scope = entry.ticket_type_id.map(TicketTypeId::from);
        if !line.may_try(scope, entry.quantity) {
            continue;
        }
        let quantity = u32::try_from(entry.quantity).map_err(|_| {
            StoreError::Backend(format!("entry {} wants {}", entry.id, entry.quantity))
        })?;
        let hold = HoldCommand {
            booking_id: BookingId::generate(),
            user_id: entry.user_id.into(),
            performance_id,
            selection: match scope {
                Some(ticket_type_id) => Selection::General {
                    ticket_type_id,
                    quantity,
                },
                None => Selection::BestAvailable { quantity },
            },
            now,
            held_until: now + offer_ttl,
            offer: true,
        };
        // The hold path itself, waiting for locks: a hold that cannot have all its
        // units writes nothing.
        let offered = hold::decide_and_write(
            tx,
            &geometries,
            std::slice::from_ref(&hold),
            false,
            serialised,
        )
        .await?
        .pop()
        .flatten();
        match offered {
            Some(CommandOutcome::Held(booking)) => {
                tx.offered(entry.id, booking.id, now).await?;
                if let Some(passed_over) = line.served(scope) {
                    tx.passed_over(passed_over, now).await?;
                }
                offers.push((entry.id, booking));
            }
            _ => line.refused(scope, entry.id, entry.passed_over, entry.quantity),
        }
    }
    Ok(offers)
}

/// Puts the buyer on the performance's waiting list, if what they ask cannot be had
/// now (not enough units free, or others already waiting for them), at the end of the
/// line: places follow the order joins commit, so what a join answers is what later
/// reads say.
pub async fn join(store: &dyn Store, join: WaitlistJoin) -> StoreResult<WaitlistJoined> {
    let mut tx = store.begin_join(join.performance_id).await?;
    let ran = join_in(tx.as_mut(), &join).await;
    crate::settle(tx, ran, |joined| {
        matches!(joined, WaitlistJoined::Joined(_))
    })
    .await
}

async fn join_in(tx: &mut dyn JoinTx, join: &WaitlistJoin) -> StoreResult<WaitlistJoined> {
    let now = join.now;
    let facts = tx
        .hold_facts(&[join.performance_id])
        .await?
        .pop()
        .map(|(_, facts)| facts);
    if let Some(refusal) = join_refusal(facts.as_ref(), join.ticket_type_id, now) {
        return Ok(match refusal {
            JoinRefusal::NoSuchPerformance => WaitlistJoined::NoSuchPerformance,
            JoinRefusal::NotOnSale => WaitlistJoined::NotOnSale,
            JoinRefusal::WrongTicketType => WaitlistJoined::WrongTicketType,
        });
    }
    let Some(facts) = facts else {
        return Ok(WaitlistJoined::NoSuchPerformance);
    };
    if let Some(row) = tx.waiting_entry(join.performance_id, join.user_id).await? {
        return Ok(WaitlistJoined::AlreadyWaiting(row.into_entry(now)?));
    }
    let free = tx
        .count_free_in(join.performance_id, join.ticket_type_id, now)
        .await?;
    if !must_wait(&facts, join.ticket_type_id, join.quantity, free) {
        return Ok(WaitlistJoined::NotSoldOut { free });
    }
    tx.insert_entry(join).await?;
    // Another join of the same buyer may have committed since the look above: theirs
    // stands, this one wrote nothing.
    let entry = tx.waiting_entry(join.performance_id, join.user_id).await?;
    joined(entry.into_iter().collect(), join)
}
