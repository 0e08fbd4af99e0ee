//! The waiting list and the waiting room at work in every instance.
//!
//! - **Joins to a waiting room** are many at the opening of a sale, and each is a write:
//!   they are gathered into batches, one transaction each ([`WaitingRoom::join`]), so
//!   ten thousand arrivals cost a few dozen commits, not ten thousand.
//! - **The gatekeeper** steps every due queue a few times a second: the draw at the
//!   opening, then admissions at the pace of what is left to sell. Its state lives in
//!   the database, so any instance may take a step and a restart loses no one's place.
//!   Each queue's latest state is shared with this instance's live queue sockets through
//!   a watch channel ([`WaitingRoom::watch`]).
//! - **The waiting list** is served as soon as this instance frees units (its own
//!   commits, from the store's bus), and every few seconds for any performance with
//!   people waiting and units free (another instance's releases, a crash between a
//!   release and its serving, holds that ran out without a sweep yet).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use uuid::Uuid;

use usher_core::UnitState;
use usher_store::{
    AdmissionPolicy, QueueJoin, QueueJoined, QueueRoom, Store, StoreError, StoreResult,
};

use crate::state::AppState;

/// Joins gathered into one transaction at most.
const JOIN_BATCH: usize = 2_000;
/// Queued joins beyond this are told the service is busy.
const JOIN_QUEUE: usize = 50_000;
/// Every waiting list with units free is looked at this often.
const SERVE_ALL_EVERY: Duration = Duration::from_secs(2);
/// Admitted per queue per step at most.
const ADMIT_PER_STEP: u32 = 1_000;

type JoinReply = oneshot::Sender<StoreResult<QueueJoined>>;

pub struct WaitingRoom {
    joins: mpsc::Sender<(QueueJoin, JoinReply)>,
    boards: Mutex<HashMap<Uuid, watch::Sender<Option<QueueRoom>>>>,
}

impl WaitingRoom {
    /// Starts the task that writes joins in batches.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (joins, queue) = mpsc::channel(JOIN_QUEUE);
        tokio::spawn(write_joins(store, queue));
        Self {
            joins,
            boards: Mutex::new(HashMap::new()),
        }
    }

    /// Joins a queue: written with whatever other joins are waiting, in one transaction.
    pub async fn join(&self, join: QueueJoin) -> StoreResult<QueueJoined> {
        let (reply, answer) = oneshot::channel();
        self.joins
            .try_send((join, reply))
            .map_err(|_| StoreError::Unavailable("the waiting room's join queue is full".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the join writer stopped".into()))?
    }

    /// The queue's latest state as this instance knows it, and every change after.
    pub fn watch(&self, performance_id: Uuid) -> watch::Receiver<Option<QueueRoom>> {
        let mut boards = self.boards.lock().unwrap_or_else(|e| e.into_inner());
        boards
            .entry(performance_id)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    fn publish(&self, room: QueueRoom) {
        let boards = self.boards.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(board) = boards.get(&room.performance_id.uuid()) {
            board.send_if_modified(|current| {
                let changed = current.as_ref() != Some(&room);
                if changed {
                    *current = Some(room);
                }
                changed
            });
        }
    }

    /// Queues somebody here watches; boards nobody watches any more are dropped.
    fn watched(&self) -> Vec<Uuid> {
        let mut boards = self.boards.lock().unwrap_or_else(|e| e.into_inner());
        boards.retain(|_, board| board.receiver_count() > 0);
        boards.keys().copied().collect()
    }
}

async fn write_joins(store: Arc<dyn Store>, mut queue: mpsc::Receiver<(QueueJoin, JoinReply)>) {
    let mut batch = Vec::with_capacity(JOIN_BATCH);
    while queue.recv_many(&mut batch, JOIN_BATCH).await > 0 {
        let (joins, replies): (Vec<QueueJoin>, Vec<JoinReply>) = batch.drain(..).unzip();
        match usher_app::waiting_room::join(store.as_ref(), &joins).await {
            Ok(answers) => {
                metrics::counter!("usher_queue_joins_total").increment(joins.len() as u64);
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(error) => {
                tracing::error!(%error, joins = joins.len(), "writing queue joins failed");
                for reply in replies {
                    let _ = reply.send(Err(copy_error(&error)));
                }
            }
        }
    }
}

/// The same error for each of a failed batch's callers.
fn copy_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
        other => StoreError::Backend(other.to_string()),
    }
}

/// Steps waiting rooms and serves waiting lists every `interval` until `stop`.
pub async fn run(state: AppState, interval: Duration, mut stop: watch::Receiver<bool>) {
    let store = state.store_arc();
    let mut freed = store.live_bus().subscribe();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Performances where this instance freed units since the last tick.
    let mut to_serve: HashSet<Uuid> = HashSet::new();
    let mut last_full: Option<Instant> = None;
    loop {
        tokio::select! {
            change = freed.recv() => match change {
                Ok(change) => {
                    if change.changes.iter().any(|m| m.state == UnitState::Available) {
                        to_serve.insert(change.performance_id.uuid());
                    }
                }
                // Missed some: the full look at the next tick covers them.
                Err(broadcast::error::RecvError::Lagged(_)) => last_full = None,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticks.tick() => {
                if last_full.is_none_or(|at| at.elapsed() >= SERVE_ALL_EVERY) {
                    last_full = Some(Instant::now());
                    match store.waitlists_to_serve(state.clock().now()).await {
                        Ok(due) => to_serve.extend(due),
                        Err(error) => tracing::warn!(%error, "finding waiting lists to serve failed"),
                    }
                }
                for performance_id in std::mem::take(&mut to_serve) {
                    serve(&state, performance_id).await;
                }
                step_rooms(&state).await;
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// Serves one performance's waiting list now.
pub async fn serve(state: &AppState, performance_id: Uuid) {
    let now = state.clock().now();
    match usher_app::waiting_list::serve(
        state.store(),
        performance_id.into(),
        now,
        state.config().offer_ttl,
    )
    .await
    {
        Ok(offers) => {
            for (entry_id, booking) in &offers {
                tracing::info!(%performance_id, %entry_id, booking_id = %booking.id,
                    units = booking.units.len(), "waiting list served");
            }
            metrics::counter!("usher_waitlist_offers_total").increment(offers.len() as u64);
        }
        Err(error) => {
            tracing::warn!(%error, %performance_id, "serving a waiting list failed; will retry")
        }
    }
}

/// One gatekeeper step for every due queue, then fresh state for every watched one.
pub async fn step_rooms(state: &AppState) {
    let store = state.store();
    let now = state.clock().now();
    let policy = AdmissionPolicy {
        ttl: state.config().admission_ttl,
        max_per_step: ADMIT_PER_STEP,
    };
    let due = match store.queue_rooms_due(now).await {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, "finding waiting rooms to step failed");
            Vec::new()
        }
    };
    for performance_id in &due {
        match usher_app::waiting_room::advance(store, (*performance_id).into(), now, policy).await {
            Ok(Some(room)) => state.waiting_room().publish(room),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, %performance_id, "stepping a waiting room failed"),
        }
    }
    for performance_id in state.waiting_room().watched() {
        if due.contains(&performance_id) {
            continue;
        }
        match store.queue_room(performance_id.into()).await {
            Ok(Some(room)) => state.waiting_room().publish(room),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, %performance_id, "reading a waiting room failed"),
        }
    }
}
