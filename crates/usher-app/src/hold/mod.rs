//! The hold use case: a buyer (or the waiting list) takes units for a new booking, all
//! or nothing.
//!
//! Holds go through the write pipeline ([`pipeline`], group commit): what waits is run
//! as one transaction, decided in arrival order by the core's hold rule
//! (`usher_core::hold`) over what the engine's port read, written by one conditional
//! update that must take exactly what was decided, and answered after the one commit.
//! A hold the batch cannot settle without waiting for other transactions' locks runs
//! alone afterwards ([`Holds::alone`]), where it may wait and try again.

pub mod pipeline;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use usher_core::ids::{BookingId, PerformanceId};

use usher_core::best_available::{Geometry, House};
use usher_core::hold::{self, HoldCommand, HoldFacts, Plan, Selection};
use usher_core::{Booking, UnitState};
use usher_store::{
    ChangeSet, CommandOutcome, HoldTx, LiveChange, NewHold, Store, StoreError, StoreResult,
};

pub use pipeline::{HoldWriter, MAX_BATCH, WritePipeline};

/// How often a hold alone is tried again after a lost race (a deadlock, best-available
/// seats taken between reading and locking).
const ATTEMPTS: usize = 5;
/// How often a general-admission hold alone looks again while enough units are free
/// but locked by other buyers' transactions.
const GENERAL_ATTEMPTS: usize = 10;

/// Where holds are made: through the write pipeline, or (without group commit) each in
/// a transaction of its own.
pub struct Holds {
    store: Arc<dyn Store>,
    pipeline: Option<WritePipeline>,
    geometries: Arc<Geometries>,
}

impl Holds {
    /// Starts the write pipeline on the current Tokio runtime when `group_commit` is on
    /// (`USHER_GROUP_COMMIT=off` turns it off, to measure the difference).
    pub fn start(store: Arc<dyn Store>, group_commit: bool) -> Self {
        let geometries = Arc::new(Geometries::default());
        let pipeline = group_commit.then(|| {
            let writers = store.hold_engine().writers;
            WritePipeline::start(
                Arc::new(Batches {
                    store: store.clone(),
                    geometries: geometries.clone(),
                }),
                writers,
            )
        });
        Self {
            store,
            pipeline,
            geometries,
        }
    }

    /// Makes the hold: `Held` with the booking, or why not.
    pub async fn hold(&self, hold: HoldCommand) -> StoreResult<CommandOutcome> {
        match &self.pipeline {
            Some(pipeline) => pipeline.hold(hold).await,
            None => alone(self.store.as_ref(), &self.geometries, &hold).await,
        }
    }

    /// The store holds are made in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// Most seat maps' shapes kept at once (a few kilobytes each); past it they are read
/// again as they are needed.
const GEOMETRIES_KEPT: usize = 4096;

/// The shapes of performances' seat maps (their rows), read once and kept: they never
/// change once a performance exists.
#[derive(Default)]
pub struct Geometries {
    known: Mutex<HashMap<PerformanceId, Arc<Geometry>>>,
}

impl Geometries {
    async fn of(
        &self,
        tx: &mut dyn HoldTx,
        performance_id: PerformanceId,
    ) -> StoreResult<Arc<Geometry>> {
        if let Some(known) = self.known().get(&performance_id) {
            return Ok(known.clone());
        }
        let geometry = Arc::new(Geometry::new(tx.seat_rows(performance_id).await?));
        if geometry.rows() > 0 {
            let mut known = self.known();
            if known.len() >= GEOMETRIES_KEPT {
                known.clear();
            }
            known.insert(performance_id, geometry.clone());
        }
        Ok(geometry)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<PerformanceId, Arc<Geometry>>> {
        // A panic elsewhere leaves shapes that are still true.
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs holds in `tx`, in arrival order, and writes the winners' bookings. `Some` for
/// each hold decided (a booking held, or why not), `None` for one to run alone. Units
/// others lock are passed over when `skip_locked`, waited for otherwise.
pub async fn decide_and_write(
    tx: &mut dyn HoldTx,
    geometries: &Geometries,
    holds: &[HoldCommand],
    skip_locked: bool,
    serialised: bool,
) -> StoreResult<Vec<Option<CommandOutcome>>> {
    let mut performance_ids: Vec<PerformanceId> = holds.iter().map(|h| h.performance_id).collect();
    performance_ids.sort_unstable();
    performance_ids.dedup();
    let facts: HashMap<PerformanceId, HoldFacts> =
        tx.hold_facts(&performance_ids).await?.into_iter().collect();
    let mut plans: Vec<Plan> = holds
        .iter()
        .map(|h| hold::screen(h, facts.get(&h.performance_id)))
        .collect();
    choose_best_seats(tx, geometries, holds, &mut plans).await?;
    let locked = tx.lock_units(&hold::seats_to_lock(holds, &plans)).await?;
    hold::settle_seats(holds, &mut plans, &locked);
    let mut free = HashMap::new();
    for (ticket_type_id, wanted, now) in hold::general_demand(holds, &plans) {
        let units = tx
            .free_units(ticket_type_id, now, wanted, skip_locked)
            .await?;
        free.insert(ticket_type_id, units);
    }
    hold::share_general(holds, &mut plans, free, serialised);
    let held = take(tx, holds, &plans, &facts).await?;
    let mut held: HashMap<BookingId, Vec<hold::HeldUnit>> = held;
    Ok(holds
        .iter()
        .zip(plans)
        .map(|(hold, plan)| match plan {
            Plan::Decided(outcome) => Some(outcome),
            Plan::Alone => None,
            Plan::Take(_) => {
                let units = held.remove(&hold.booking_id).unwrap_or_default();
                let facts = facts.get(&hold.performance_id)?;
                Some(CommandOutcome::Held(hold::held_booking(hold, facts, units)))
            }
        })
        .collect())
}

/// Best available: each performance's free seats read once for the batch, a section
/// at a time and only as far as its choices need, seats chosen in arrival order and
/// marked as the batch goes.
async fn choose_best_seats(
    tx: &mut dyn HoldTx,
    geometries: &Geometries,
    holds: &[HoldCommand],
    plans: &mut [Plan],
) -> StoreResult<()> {
    let mut houses: HashMap<PerformanceId, House> = HashMap::new();
    for (hold, plan) in holds.iter().zip(plans.iter_mut()) {
        let (Plan::Take(_), Selection::BestAvailable { quantity }) = (&*plan, &hold.selection)
        else {
            continue;
        };
        let house = match houses.entry(hold.performance_id) {
            Entry::Occupied(house) => house.into_mut(),
            Entry::Vacant(slot) => {
                let geometry = geometries.of(tx, hold.performance_id).await?;
                let expired = tx.expired_seats(hold.performance_id, hold.now).await?;
                slot.insert(House::new(geometry, expired))
            }
        };
        *plan = loop {
            match hold::choose_best(*quantity, house) {
                Ok(plan) => break plan,
                Err(read) => {
                    let seats = tx.available_seats(read).await?;
                    house.add(read, seats);
                }
            }
        };
    }
    Ok(())
}

/// Every winner's units in one conditional update, which must take exactly what was
/// decided (or nothing of the batch stands), then their bookings.
async fn take(
    tx: &mut dyn HoldTx,
    holds: &[HoldCommand],
    plans: &[Plan],
    facts: &HashMap<PerformanceId, HoldFacts>,
) -> StoreResult<HashMap<BookingId, Vec<hold::HeldUnit>>> {
    let takes = hold::takes(holds, plans);
    let mut held: HashMap<BookingId, Vec<hold::HeldUnit>> = HashMap::new();
    if takes.is_empty() {
        return Ok(held);
    }
    let taken = tx.take_units(&takes).await?;
    if taken.len() != takes.len() {
        return Err(StoreError::Backend(format!(
            "a hold batch took {} of the {} units it had read free",
            taken.len(),
            takes.len()
        )));
    }
    for unit in taken {
        held.entry(unit.booking_id).or_default().push(unit);
    }
    let bookings: Vec<NewHold> = holds
        .iter()
        .filter_map(|hold| {
            let units = held.get(&hold.booking_id)?;
            Some(NewHold {
                booking_id: hold.booking_id,
                user_id: hold.user_id,
                performance_id: hold.performance_id,
                held_until: hold.held_until,
                currency: facts.get(&hold.performance_id)?.currency,
                created_at: hold.now,
                offer: hold.offer,
                units: units.iter().map(|u| (u.id, u.price_amount)).collect(),
            })
        })
        .collect();
    tx.insert_holds(&bookings).await?;
    Ok(held)
}

/// The live seat maps' moves of these bookings' units: held.
pub fn held_moves<'a>(bookings: impl IntoIterator<Item = &'a Booking>) -> ChangeSet {
    let mut moved = ChangeSet::new();
    for booking in bookings {
        moved.extend(
            UnitState::Held,
            booking
                .units
                .iter()
                .map(|u| (booking.performance_id, u.unit_id)),
        );
    }
    moved
}

/// Records the held outcomes' moves for live seat maps (last, see [`HoldTx::record_live`]).
async fn record_held<'a>(
    tx: &mut dyn HoldTx,
    outcomes: impl IntoIterator<Item = &'a CommandOutcome>,
    now: Option<DateTime<Utc>>,
) -> StoreResult<Vec<LiveChange>> {
    let moved = held_moves(outcomes.into_iter().filter_map(|o| match o {
        CommandOutcome::Held(booking) => Some(booking),
        _ => None,
    }));
    match now {
        Some(now) if !moved.is_empty() => tx.record_live(moved, now).await,
        _ => Ok(Vec::new()),
    }
}

/// One hold in transactions of its own: tried again after a lost race, and, for
/// general admission short of free units while others lock some, waiting for their
/// locks.
pub async fn alone(
    store: &dyn Store,
    geometries: &Geometries,
    hold: &HoldCommand,
) -> StoreResult<CommandOutcome> {
    let mut skip_locked = true;
    for attempt in 1..=GENERAL_ATTEMPTS {
        let retry = match attempt_alone(store, geometries, hold, skip_locked).await {
            Ok(Attempt::Done(outcome)) => return Ok(outcome),
            // Enough are free, but locked by buyers still deciding: wait for them.
            Ok(Attempt::Short { enough_free }) => {
                skip_locked = false;
                enough_free
            }
            Ok(Attempt::LostRace) => attempt < ATTEMPTS,
            Err(StoreError::Conflict(_)) if attempt < ATTEMPTS => true,
            Err(error) => return Err(error),
        };
        if !retry {
            break;
        }
    }
    Ok(CommandOutcome::Unavailable {
        unit_ids: Vec::new(),
    })
}

/// What one attempt of a hold alone came to.
enum Attempt {
    Done(CommandOutcome),
    /// Best-available seats were taken between reading and locking: choose again.
    LostRace,
    /// General admission found fewer units than asked that nobody locks.
    Short {
        enough_free: bool,
    },
}

async fn attempt_alone(
    store: &dyn Store,
    geometries: &Geometries,
    hold: &HoldCommand,
    skip_locked: bool,
) -> StoreResult<Attempt> {
    let serialised = store.hold_engine().serialised;
    let mut tx = store.begin_holds().await?;
    let decided = decide_and_write(
        tx.as_mut(),
        geometries,
        std::slice::from_ref(hold),
        skip_locked,
        serialised,
    )
    .await
    .map(|mut outcomes| outcomes.pop().flatten());
    let short = match (&decided, &hold.selection) {
        (
            Ok(None),
            Selection::General {
                ticket_type_id,
                quantity,
            },
        ) => Some(
            tx.count_free(*ticket_type_id, hold.now)
                .await
                .map(|free| free >= u64::from(*quantity)),
        ),
        _ => None,
    };
    match decided {
        Ok(Some(outcome @ CommandOutcome::Held(_))) => commit_held(store, tx, outcome, hold.now)
            .await
            .map(Attempt::Done),
        other => {
            let rolled_back = tx.rollback().await;
            let attempt = match (other?, short) {
                (Some(refused), _) => Attempt::Done(refused),
                (None, Some(enough_free)) => Attempt::Short {
                    enough_free: enough_free?,
                },
                (None, None) => Attempt::LostRace,
            };
            rolled_back.map(|()| attempt)
        }
    }
}

/// Records a held booking's moves, commits, and publishes them.
async fn commit_held(
    store: &dyn Store,
    mut tx: Box<dyn HoldTx>,
    outcome: CommandOutcome,
    now: DateTime<Utc>,
) -> StoreResult<CommandOutcome> {
    let outcomes = std::slice::from_ref(&outcome);
    let live = match record_held(tx.as_mut(), outcomes, Some(now)).await {
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

/// Hold batches for the write pipeline: one transaction and one commit each.
struct Batches {
    store: Arc<dyn Store>,
    geometries: Arc<Geometries>,
}

#[async_trait::async_trait]
impl HoldWriter for Batches {
    /// If the batch fails, nothing of it stands and each hold runs alone; against a
    /// database that is gone that would only make every caller wait in turn, so the
    /// whole batch answers "unavailable" at once.
    async fn hold_batch(&self, holds: &[HoldCommand]) -> StoreResult<Vec<Option<CommandOutcome>>> {
        let serialised = self.store.hold_engine().serialised;
        let mut tx = self.store.begin_holds().await?;
        let ran = decide_and_write(tx.as_mut(), &self.geometries, holds, true, serialised).await;
        let now = holds.iter().map(|h| h.now).max();
        let ran = match ran {
            Ok(outcomes) => record_held(tx.as_mut(), outcomes.iter().flatten(), now)
                .await
                .map(|live| (outcomes, live)),
            Err(error) => Err(error),
        };
        match ran {
            Ok((outcomes, live)) => match tx.commit().await {
                Ok(()) => {
                    self.store.live_bus().publish(live);
                    Ok(outcomes)
                }
                Err(StoreError::Conflict(_)) => Ok(vec![None; holds.len()]),
                Err(error) => Err(error),
            },
            Err(error @ StoreError::Unavailable(_)) => {
                let _ = tx.rollback().await;
                Err(error)
            }
            Err(error) => {
                tracing::warn!(%error, holds = holds.len(), "a hold batch failed; its holds run alone");
                let _ = tx.rollback().await;
                Ok(vec![None; holds.len()])
            }
        }
    }

    async fn hold_alone(&self, hold: &HoldCommand) -> StoreResult<CommandOutcome> {
        alone(self.store.as_ref(), &self.geometries, hold).await
    }
}
