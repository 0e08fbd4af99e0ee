//! Changes to inventory besides holds: a buyer's cancellation of a hold, the sweep that
//! expires holds past their time, house seats blocked and unblocked. Each runs in one
//! transaction over the engine's [`InventoryTx`] port; a lost race (a deadlock) is run
//! again.

use chrono::{DateTime, Utc};
use usher_core::ids::{BookingId, PerformanceId, UnitId};

use usher_core::UnitState;
use usher_core::hold::LockedUnit;
use usher_store::box_office::{AuditAction, AuditTarget};
use usher_store::{
    Audit, ChangeSet, CommandOutcome, InventoryCommand, InventoryTx, Store, StoreError, StoreResult,
};

/// How often a command is tried again after a lost race (a deadlock).
const ATTEMPTS: usize = 5;

/// Runs the command in a transaction of its own, again after a lost race.
pub async fn execute(store: &dyn Store, command: InventoryCommand) -> StoreResult<CommandOutcome> {
    let mut attempt = 1;
    loop {
        match attempt_once(store, &command).await {
            Err(StoreError::Conflict(_)) if attempt < ATTEMPTS => attempt += 1,
            done => return done,
        }
    }
}

async fn attempt_once(
    store: &dyn Store,
    command: &InventoryCommand,
) -> StoreResult<CommandOutcome> {
    let mut tx = store.begin_inventory().await?;
    let ran = match command {
        InventoryCommand::Cancel { booking_id, now } => {
            cancel(tx.as_mut(), *booking_id, *now).await
        }
        InventoryCommand::Sweep { now, limit } => sweep(tx.as_mut(), *now, *limit).await,
        InventoryCommand::SetBlocked {
            performance_id,
            unit_ids,
            blocked,
            now,
            audit,
        } => {
            let blocking = Blocking {
                performance_id: *performance_id,
                unit_ids,
                blocked: *blocked,
                now: *now,
                audit,
            };
            set_blocked(tx.as_mut(), blocking).await
        }
    };
    let (outcome, moved, now) = match ran {
        Ok(done) => done,
        Err(error) => {
            let _ = tx.rollback().await;
            return Err(error);
        }
    };
    finish(store, tx, outcome, moved, now).await
}

/// What a command did: its answer, the units it moved (`None`: nothing written, roll
/// back) and when.
type Ran = (CommandOutcome, Option<ChangeSet>, DateTime<Utc>);

/// Commits what changed (logging the moves for live seat maps, last) and publishes the
/// moves; rolls back what did not.
async fn finish(
    store: &dyn Store,
    mut tx: Box<dyn InventoryTx>,
    outcome: CommandOutcome,
    moved: Option<ChangeSet>,
    now: DateTime<Utc>,
) -> StoreResult<CommandOutcome> {
    let Some(moved) = moved else {
        tx.rollback().await?;
        return Ok(outcome);
    };
    let live = match tx.record_live(moved, now).await {
        Ok(live) => live,
        Err(error) => {
            let _ = tx.rollback().await;
            return Err(error);
        }
    };
    tx.commit().await?;
    store.live_bus().publish(live);
    Ok(outcome)
}

/// A buyer lets a live hold go: its units are free at once.
async fn cancel(
    tx: &mut dyn InventoryTx,
    booking_id: BookingId,
    now: DateTime<Utc>,
) -> StoreResult<Ran> {
    if !tx.cancel_held(booking_id, now).await? {
        let outcome = match tx.booking(booking_id).await? {
            Some(booking) => CommandOutcome::NotCancellable {
                status: booking.status_at(now),
            },
            None => CommandOutcome::NoSuchBooking,
        };
        return Ok((outcome, None, now));
    }
    let mut moved = ChangeSet::new();
    moved.extend(UnitState::Available, tx.release_held(&[booking_id]).await?);
    let booking = tx
        .booking(booking_id)
        .await?
        .ok_or_else(|| StoreError::Backend("booking vanished after cancel".into()))?;
    Ok((CommandOutcome::Cancelled(booking), Some(moved), now))
}

/// Holds past their time become `expired` and their units free. Idempotent; safe from
/// several instances at once.
async fn sweep(tx: &mut dyn InventoryTx, now: DateTime<Utc>, limit: u32) -> StoreResult<Ran> {
    let expired = tx.expire_held(now, limit).await?;
    let released = match expired.is_empty() {
        true => Vec::new(),
        false => tx.release_held(&expired).await?,
    };
    let released_units = released.len() as u64;
    let mut moved = ChangeSet::new();
    moved.extend(UnitState::Available, released);
    let outcome = CommandOutcome::Swept {
        expired: expired.into_iter().collect(),
        released_units,
    };
    Ok((outcome, Some(moved), now))
}

/// House seats and broken seats, as an organizer asks.
struct Blocking<'a> {
    performance_id: PerformanceId,
    unit_ids: &'a [UnitId],
    blocked: bool,
    now: DateTime<Utc>,
    audit: &'a Audit,
}

/// Blocks free units, or makes blocked ones available again; all or nothing: a held or
/// sold unit refuses the whole command.
async fn set_blocked(tx: &mut dyn InventoryTx, asked: Blocking<'_>) -> StoreResult<Ran> {
    let now = asked.now;
    let locked = tx.lock_units(asked.unit_ids).await?;
    if let Some(refused) = refuse_blocking(&asked, &locked) {
        return Ok((refused, None, now));
    }
    let (changed, state, kind) = match asked.blocked {
        true => (
            tx.block_units(asked.unit_ids).await?,
            UnitState::Blocked,
            AuditAction::UnitsBlocked,
        ),
        false => (
            tx.unblock_units(asked.unit_ids).await?,
            UnitState::Available,
            AuditAction::UnitsUnblocked,
        ),
    };
    let audit = asked
        .audit
        .clone()
        .note(
            "unit_ids",
            asked
                .unit_ids
                .iter()
                .map(UnitId::to_string)
                .collect::<Vec<_>>(),
        )
        .note("changed", changed.len());
    let entry = audit.entry(
        kind,
        AuditTarget::Performance(asked.performance_id),
        None,
        now,
    );
    tx.insert_audit(&entry).await?;
    let mut moved = ChangeSet::new();
    moved.extend(state, changed.iter().map(|id| (asked.performance_id, *id)));
    let outcome = CommandOutcome::BlockingChanged {
        changed: changed.len() as u64,
    };
    Ok((outcome, Some(moved), now))
}

/// Why a blocking may not go ahead: units that are not the performance's, or units
/// someone holds or bought (an expired hold's unit is free: blocking detaches it).
fn refuse_blocking(asked: &Blocking<'_>, locked: &[LockedUnit]) -> Option<CommandOutcome> {
    let find = |id: &UnitId| {
        locked
            .iter()
            .find(|u| u.id == (*id) && u.performance_id == asked.performance_id)
    };
    let unknown: Vec<UnitId> = asked
        .unit_ids
        .iter()
        .filter(|id| find(id).is_none())
        .copied()
        .collect();
    if !unknown.is_empty() {
        return Some(CommandOutcome::UnknownUnits {
            unit_ids: unknown.into_iter().collect(),
        });
    }
    let taken: Vec<UnitId> = asked
        .unit_ids
        .iter()
        .filter(|id| find(id).is_some_and(|u| u.state.taken(u.held_until, asked.now)))
        .copied()
        .collect();
    (!taken.is_empty()).then_some(CommandOutcome::Unavailable {
        unit_ids: taken.into_iter().collect(),
    })
}
