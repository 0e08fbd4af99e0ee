//! The sweeper: every instance runs one. It moves held bookings past their deadline to
//! `expired` and frees the units they still hold. Buyers never wait for it — an expired
//! hold is already free to the next conditional write — it keeps the books tidy and the
//! counts honest. Running it in several instances at once is safe (SKIP LOCKED on
//! PostgreSQL, one writer on SQLite), and running it twice changes nothing.

use std::time::Duration;

use tokio::sync::watch;

use usher_core::Clock;
use usher_store::{CommandOutcome, InventoryCommand, Store, StoreResult};

/// Bookings expired per transaction; a backlog is worked off in several.
const BATCH: u32 = 500;

/// Sweeps until nothing is left to expire. Returns how many bookings it expired.
pub async fn sweep_once(store: &dyn Store, clock: &dyn Clock) -> StoreResult<usize> {
    let mut total = 0;
    loop {
        let outcome = usher_app::inventory::execute(
            store,
            InventoryCommand::Sweep {
                now: clock.now(),
                limit: BATCH,
            },
        )
        .await?;
        let CommandOutcome::Swept {
            expired,
            released_units,
        } = outcome
        else {
            return Ok(total);
        };
        if !expired.is_empty() {
            metrics::counter!("usher_holds_expired_total").increment(expired.len() as u64);
            metrics::counter!("usher_units_released_total").increment(released_units);
            tracing::info!(
                bookings = expired.len(),
                units = released_units,
                "expired holds swept"
            );
        }
        total += expired.len();
        if expired.len() < BATCH as usize {
            return Ok(total);
        }
    }
}

/// Old idempotency keys and live-feed log entries are purged this often.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Changes stay in the live feed's log this long (a watcher further behind reconnects).
const LIVE_LOG_RETENTION: chrono::Duration = chrono::Duration::minutes(10);

async fn purge(store: &dyn Store, clock: &dyn Clock) {
    // Idempotency keys are kept for a day.
    let cutoff = clock.now() - crate::idempotency::RETENTION;
    if let Err(error) = store.idempotency_purge(cutoff).await {
        tracing::error!(%error, "purging old idempotency keys failed");
    }
    if let Err(error) = store.live_purge(clock.now() - LIVE_LOG_RETENTION).await {
        tracing::error!(%error, "purging the live feed's old changes failed");
    }
}

/// Runs [`sweep_once`] every `interval` until `stop` turns true.
pub async fn run(
    store: std::sync::Arc<dyn Store>,
    clock: std::sync::Arc<dyn Clock>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_purge: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if let Err(error) = sweep_once(store.as_ref(), clock.as_ref()).await {
                    tracing::error!(%error, "sweeping expired holds failed; will retry");
                }
                if last_purge.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                    last_purge = Some(std::time::Instant::now());
                    purge(store.as_ref(), clock.as_ref()).await;
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}
