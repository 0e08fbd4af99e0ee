//! Where public reads go: a streaming replica (`DATABASE_READ_URL`) while it answers
//! and keeps up, the primary otherwise.
//!
//! Public reads are what any visitor may see and may see a moment late: the event list,
//! an event with its performances and their availability, a seat map (which is kept up
//! to a second anyway). Everything else — writes, what a caller must see right after
//! its own write (an organizer's own events, drafts, anything read to decide a write) —
//! goes to the primary, and never through here.
//!
//! A watcher compares the replica's replay position with the primary's write position
//! every [`POLL`]: the replica is behind by the time since the primary had written
//! what the replica has replayed. Past the allowed lag, or when it does not answer, it
//! is skipped until it catches up; a read it fails in between runs on the primary. No
//! caller ever sees an error for it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use usher_core::Viewer;
use usher_store::{Store, StoreResult};

/// How often the watcher compares positions.
pub const POLL: Duration = Duration::from_millis(100);

/// The primary, and the replica public reads go to while it is usable.
#[derive(Clone)]
pub struct Reads {
    primary: Arc<dyn Store>,
    replica: Option<Replica>,
}

#[derive(Clone)]
struct Replica {
    store: Arc<dyn Store>,
    usable: Arc<AtomicBool>,
}

impl Reads {
    /// Public reads on the primary alone.
    pub fn primary(primary: Arc<dyn Store>) -> Self {
        Self {
            primary,
            replica: None,
        }
    }

    /// Public reads on `replica` while it is at most `max_lag` behind `primary`; starts
    /// the watcher on the current Tokio runtime (it ends with the runtime). The replica
    /// is skipped until the watcher has seen it keep up.
    pub fn with_replica(
        primary: Arc<dyn Store>,
        replica: Arc<dyn Store>,
        max_lag: Duration,
    ) -> Self {
        let replica = Replica {
            store: replica,
            usable: Arc::new(AtomicBool::new(false)),
        };
        tokio::spawn(watch(primary.clone(), replica.clone(), max_lag));
        Self {
            primary,
            replica: Some(replica),
        }
    }

    /// Whether public reads go to the replica now.
    pub fn on_replica(&self) -> bool {
        self.replica
            .as_ref()
            .is_some_and(|r| r.usable.load(Ordering::Relaxed))
    }

    /// Runs `read` where what `viewer` reads may come from: the replica for visitors
    /// and buyers (see [`Self::public`]), who change nothing of the catalog; the primary
    /// for organizers and admins, who must see their own changes at once.
    pub async fn as_viewer<T, F, Fut>(&self, viewer: Viewer, read: F) -> StoreResult<T>
    where
        F: Fn(Arc<dyn Store>) -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        match viewer {
            Viewer::Anonymous | Viewer::Customer(_) => self.public(read).await,
            Viewer::Organizer(_) | Viewer::Admin(_) => read(self.primary.clone()).await,
        }
    }

    /// Runs a public read on the replica when it is usable, and on the primary when it
    /// is not or when the read fails there (the replica is then skipped until the
    /// watcher sees it answer and keep up again).
    pub async fn public<T, F, Fut>(&self, read: F) -> StoreResult<T>
    where
        F: Fn(Arc<dyn Store>) -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        if let Some(replica) = self.replica.as_ref().filter(|_| self.on_replica()) {
            match read(replica.store.clone()).await {
                Ok(value) => {
                    metrics::counter!("usher_public_reads_total", "on" => "replica").increment(1);
                    return Ok(value);
                }
                Err(error) => {
                    replica.usable.store(false, Ordering::Relaxed);
                    tracing::warn!(%error, "a read on the replica failed; reading from the primary");
                }
            }
        }
        metrics::counter!("usher_public_reads_total", "on" => "primary").increment(1);
        read(self.primary.clone()).await
    }
}

/// The primary's write positions of the last moments, to tell when it had written
/// what the replica has replayed.
struct Positions {
    seen: VecDeque<(Instant, u64)>,
    keep: Duration,
}

impl Positions {
    fn new(keep: Duration) -> Self {
        Self {
            seen: VecDeque::new(),
            keep,
        }
    }

    fn primary_at(&mut self, at: Instant, position: u64) {
        self.seen.push_back((at, position));
        while self
            .seen
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > self.keep)
        {
            self.seen.pop_front();
        }
    }

    /// How far behind a replica that has replayed `replayed` is at `now`: nothing if it
    /// has replayed all the primary had written at the last look, else the time since
    /// the last look at which the primary had written no more than that. `None` when
    /// it is further behind than the positions kept.
    fn lag(&self, replayed: u64, now: Instant) -> Option<Duration> {
        let (_, latest) = self.seen.back()?;
        if replayed >= *latest {
            return Some(Duration::ZERO);
        }
        self.seen
            .iter()
            .rev()
            .find(|(_, position)| *position <= replayed)
            .map(|(at, _)| now.duration_since(*at))
    }
}

async fn watch(primary: Arc<dyn Store>, replica: Replica, max_lag: Duration) {
    let mut positions = Positions::new(max_lag + POLL);
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_usable = false;
    loop {
        ticks.tick().await;
        let Ok(Ok(Some(written))) =
            tokio::time::timeout(max_lag, primary.replication_position()).await
        else {
            // Without the primary's position there is nothing to compare; public reads
            // keep going where they went.
            continue;
        };
        positions.primary_at(Instant::now(), written);
        let replayed = tokio::time::timeout(max_lag, replica.store.replication_position()).await;
        let lag = match replayed {
            Ok(Ok(Some(replayed))) => positions.lag(replayed, Instant::now()),
            _ => None,
        };
        let usable = lag.is_some_and(|lag| lag <= max_lag);
        replica.usable.store(usable, Ordering::Relaxed);
        metrics::gauge!("usher_read_replica_usable").set(if usable { 1.0 } else { 0.0 });
        if let Some(lag) = lag {
            metrics::gauge!("usher_read_replica_lag_seconds").set(lag.as_secs_f64());
        }
        if usable != was_usable {
            if usable {
                tracing::info!(
                    lag_ms = lag.map(|l| l.as_millis() as u64),
                    "public reads go to the replica"
                );
            } else {
                tracing::warn!(
                    lag_ms = lag.map(|l| l.as_millis() as u64),
                    max_lag_ms = max_lag.as_millis() as u64,
                    "the replica is down or behind; public reads go to the primary"
                );
            }
            was_usable = usable;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_is_behind_by_the_time_since_the_primary_had_written_what_it_replayed() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut positions = Positions::new(Duration::from_millis(1_100));
        assert_eq!(positions.lag(0, at(0)), None, "nothing seen of the primary");
        positions.primary_at(at(0), 100);
        positions.primary_at(at(100), 200);
        positions.primary_at(at(200), 300);
        assert_eq!(positions.lag(300, at(250)), Some(Duration::ZERO));
        assert_eq!(positions.lag(500, at(250)), Some(Duration::ZERO));
        assert_eq!(
            positions.lag(250, at(250)),
            Some(Duration::from_millis(150))
        );
        assert_eq!(
            positions.lag(100, at(250)),
            Some(Duration::from_millis(250))
        );
        assert_eq!(positions.lag(99, at(250)), None, "behind everything kept");
        // An idle primary writes nothing new: a replica that has it all is not behind.
        for ms in (300..=2_000).step_by(100) {
            positions.primary_at(at(ms), 300);
        }
        assert_eq!(positions.lag(300, at(2_000)), Some(Duration::ZERO));
        assert_eq!(
            positions.lag(200, at(2_000)),
            None,
            "older positions are forgotten"
        );
    }
}
