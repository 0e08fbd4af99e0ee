//! The waiting room in front of an on-sale: buyers join its queue (in batches, one
//! transaction for each batch), everyone who joined before the opening is numbered in
//! the order of a random draw at the opening, later arrivals take the next number, and
//! the gatekeeper admits as many as what is left to sell calls for
//! ([`SaleState::to_admit`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use chrono::{DateTime, Utc};
use usher_core::ids::PerformanceId;
use uuid::Uuid;

use usher_store::waiting::{QueueTicketRow, QueueTx, SaleState};
use usher_store::{AdmissionPolicy, QueueJoin, QueueJoined, QueueRoom, Store, StoreResult};

/// Joins queues, many at once, in one transaction. Each join's answer, in order.
pub async fn join(store: &dyn Store, joins: &[QueueJoin]) -> StoreResult<Vec<QueueJoined>> {
    let mut tx = store.begin_queue().await?;
    let ran = join_in(tx.as_mut(), joins).await;
    crate::settle(tx, ran, |_| true).await
}

async fn join_in(tx: &mut dyn QueueTx, joins: &[QueueJoin]) -> StoreResult<Vec<QueueJoined>> {
    // Per performance: its room, if it takes joins now (why not, otherwise).
    let mut rooms: HashMap<Uuid, Result<QueueRoom, QueueJoined>> = HashMap::new();
    let mut answers: Vec<Result<QueueTicketRow, QueueJoined>> = Vec::with_capacity(joins.len());
    for join in joins {
        let room = match rooms.entry(join.performance_id.uuid()) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => {
                slot.insert(room_for_joins(tx, join.performance_id, join.now).await?)
            }
        };
        let room = match room {
            Ok(room) => room,
            Err(refused) => {
                answers.push(Err(refused.clone()));
                continue;
            }
        };
        // Once numbered (after the opening), a new arrival takes the next number.
        let seq = room.opened_at.map(|_| room.numbered + 1);
        if tx.insert_ticket(join, seq).await? && seq.is_some() {
            room.numbered += 1;
            tx.save_room(room, join.now).await?;
        }
        answers.push(Ok(tx.ticket_of(join.performance_id, join.user_id).await?));
    }
    // Places in the draw: each performance's draws read once for the whole batch.
    let mut draws: HashMap<Uuid, Vec<(i64, Uuid)>> = HashMap::new();
    for (join, answer) in joins.iter().zip(&answers) {
        let unnumbered = answer.as_ref().is_ok_and(|row| row.seq.is_none());
        if unnumbered && !draws.contains_key(&join.performance_id.uuid()) {
            draws.insert(
                join.performance_id.uuid(),
                tx.draws(join.performance_id).await?,
            );
        }
    }
    Ok(answers
        .into_iter()
        .zip(joins)
        .map(
            |(answer, join)| match (answer, rooms.get(&join.performance_id.uuid())) {
                (Err(refused), _) => refused,
                (Ok(row), Some(Ok(room))) => {
                    let ahead = draws
                        .get(&join.performance_id.uuid())
                        .map_or(0, |all| place_in_draw(all, row.id));
                    let fresh = row.id == join.ticket_id;
                    let ticket = row.into_ticket(room.clone(), ahead);
                    match fresh {
                        true => QueueJoined::Joined(ticket),
                        false => QueueJoined::Again(ticket),
                    }
                }
                (Ok(_), _) => QueueJoined::NoWaitingRoom,
            },
        )
        .collect())
}

/// The performance's room, opened if need be, when it takes joins now; why not otherwise.
async fn room_for_joins(
    tx: &mut dyn QueueTx,
    performance_id: PerformanceId,
    now: DateTime<Utc>,
) -> StoreResult<Result<QueueRoom, QueueJoined>> {
    let Some((waiting_room, selling)) = tx.door(performance_id, now).await? else {
        return Ok(Err(QueueJoined::NoSuchPerformance));
    };
    if !(waiting_room && selling) {
        return Ok(Err(QueueJoined::NoWaitingRoom));
    }
    tx.open_room(performance_id, now).await?;
    Ok(tx
        .lock_room(performance_id)
        .await?
        .ok_or(QueueJoined::NoWaitingRoom))
}

/// How many tickets come before this one in the draw.
fn place_in_draw(all: &[(i64, Uuid)], ticket: Uuid) -> u64 {
    all.iter()
        .find(|(_, id)| *id == ticket)
        .map_or(0, |(mine, _)| {
            all.partition_point(|(draw, _)| draw < mine) as u64
        })
}

/// The gatekeeper's step for one performance: makes the draw at the opening, admits as
/// many as what is left to sell calls for, closes the queue when everything is sold.
/// The room afterwards.
pub async fn advance(
    store: &dyn Store,
    performance_id: PerformanceId,
    now: DateTime<Utc>,
    policy: AdmissionPolicy,
) -> StoreResult<Option<QueueRoom>> {
    let mut tx = store.begin_queue().await?;
    match advance_in(tx.as_mut(), performance_id, now, policy).await {
        Ok(room) => {
            tx.commit().await?;
            Ok(room)
        }
        Err(error) => {
            let _ = tx.rollback().await;
            Err(error)
        }
    }
}

async fn advance_in(
    tx: &mut dyn QueueTx,
    performance_id: PerformanceId,
    now: DateTime<Utc>,
    policy: AdmissionPolicy,
) -> StoreResult<Option<QueueRoom>> {
    let Some(mut room) = tx.lock_room(performance_id).await? else {
        return Ok(None);
    };
    if room.opened_at.is_none() {
        if room.on_sale_at.is_some_and(|at| at > now) {
            return Ok(Some(room));
        }
        // The opening: everyone here is numbered in the order of their draws.
        room.numbered += tx.number_by_draw(performance_id, room.numbered).await?;
        room.opened_at = Some(now);
    }
    let opened_at = room.opened_at.unwrap_or(now);
    let state: SaleState = tx
        .sale_state(performance_id, now, now - policy.ttl, opened_at)
        .await?;
    let admit = state.to_admit(policy.max_per_step) as i64;
    let through = (room.admitted_through + admit).min(room.numbered);
    if through > room.admitted_through {
        tx.admit(performance_id, room.admitted_through, through, now)
            .await?;
        room.admitted_through = through;
    }
    room.closed = state.sold_out();
    tx.save_room(&room, now).await?;
    Ok(Some(room))
}
