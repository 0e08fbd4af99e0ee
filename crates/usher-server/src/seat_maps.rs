//! Seat maps as served: built at most once per `USHER_SEAT_MAP_MAX_AGE_MS` per
//! performance in this instance, whatever the number of readers.
//!
//! A seat map of a large house (up to 200,000 units) is a big read and a big JSON body;
//! in a rush everyone asks for it at once. Readers of one performance queue behind one
//! rebuild and share its bytes (no stampede); the answer carries a strong `ETag`, so a
//! client that has it gets `304 Not Modified`. A kept map is dropped as soon as the live
//! feed hears that the performance's units changed, on this instance or another
//! ([`forget_changed`]); the max age only bounds how long a lost notice could leave a
//! map stale.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::problem::ApiError;

/// One built seat map.
#[derive(Clone)]
pub struct Built {
    pub at: Instant,
    /// A strong validator of `body`, quoted as HTTP wants it.
    pub etag: String,
    pub body: Bytes,
}

/// Entries kept at most; past it the cache starts over (a bound, not a policy).
const MAX_ENTRIES: usize = 1_000;

type Slot = Arc<tokio::sync::Mutex<Option<Built>>>;

#[derive(Default)]
pub struct SeatMaps {
    slots: Mutex<HashMap<Uuid, Slot>>,
}

impl SeatMaps {
    /// The performance's seat map, rebuilt with `build` if the one kept is older than
    /// `max_age` (a zero `max_age` builds every time).
    pub async fn get_or_build<F, Fut>(
        &self,
        performance_id: Uuid,
        max_age: Duration,
        build: F,
    ) -> Result<Built, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, ApiError>>,
    {
        if max_age.is_zero() {
            return Ok(built(build().await?));
        }
        let slot = {
            let mut slots = self
                .slots
                .lock()
                .map_err(|_| ApiError::Internal("seat map cache poisoned".into()))?;
            if slots.len() >= MAX_ENTRIES && !slots.contains_key(&performance_id) {
                slots.clear();
            }
            slots.entry(performance_id).or_default().clone()
        };
        // Readers of this performance wait here for one rebuild and share it.
        let mut kept = slot.lock().await;
        if let Some(fresh) = kept.as_ref().filter(|b| b.at.elapsed() < max_age) {
            return Ok(fresh.clone());
        }
        let fresh = built(build().await?);
        *kept = Some(fresh.clone());
        Ok(fresh)
    }
}

impl SeatMaps {
    /// Forgets a performance's seat map: its units changed (here or on another
    /// instance, as the live feed says). A rebuild already under way finishes for its
    /// own readers; the next reader builds afresh.
    pub fn forget(&self, performance_id: Uuid) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.remove(&performance_id);
        }
    }

    /// Forgets everything (the feed fell behind and cannot say what changed).
    pub fn clear(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.clear();
        }
    }
}

/// Keeps cached seat maps honest across instances: every change the live feed hears of
/// (this process's commits, other instances' through Redis or PostgreSQL) drops the
/// performance's cached map, so the max age is only an upper bound.
pub async fn forget_changed(
    state: crate::state::AppState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut changed = state.live().invalidations();
    loop {
        tokio::select! {
            id = changed.recv() => match id {
                Ok(id) => state.seat_maps().forget(id),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => state.seat_maps().clear(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            stopped = stop.changed() => {
                if stopped.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

fn built(body: Bytes) -> Built {
    let digest = Sha256::digest(&body);
    Built {
        at: Instant::now(),
        etag: format!("\"{}\"", hex::encode(&digest[..16])),
        body,
    }
}

/// Whether an `If-None-Match` header names this ETag.
pub fn matches(if_none_match: Option<&str>, etag: &str) -> bool {
    if_none_match.is_some_and(|header| {
        header
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        assert!(matches(Some("\"abc\""), "\"abc\""));
        assert!(matches(Some("\"x\", W/\"abc\""), "\"abc\""));
        assert!(matches(Some("*"), "\"abc\""));
        assert!(!matches(Some("\"abd\""), "\"abc\""));
        assert!(!matches(None, "\"abc\""));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_share_one_build_while_it_is_fresh() {
        let maps = Arc::new(SeatMaps::default());
        let builds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let id = Uuid::now_v7();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (maps, builds) = (maps.clone(), builds.clone());
                tokio::spawn(async move {
                    maps.get_or_build(id, Duration::from_secs(60), || async {
                        builds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(Bytes::from_static(b"{}"))
                    })
                    .await
                    .unwrap()
                    .etag
                })
            })
            .collect();
        let mut tags = std::collections::HashSet::new();
        for task in tasks {
            tags.insert(task.await.unwrap());
        }
        assert_eq!(
            builds.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one rebuild"
        );
        assert_eq!(tags.len(), 1);
    }
}
