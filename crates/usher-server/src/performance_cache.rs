//! Performances and their events as the hold path reads them, kept for a second.
//!
//! Every hold needs its performance (limits, seating kind, on-sale time) and its event
//! (published?). In a rush that is the same two rows thousands of times a second, so
//! this instance keeps them briefly instead of reading them per request. Changes made
//! here forget them at once; changes made by another instance show within
//! [`FRESH_FOR`]. Nothing here arbitrates: the hold's own transaction checks again that
//! the performance is on sale, so a stale entry can only cost a refused hold its
//! database round trip.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use usher_core::{Event, Performance};

/// How long an entry is used before it is read again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// Entries kept at most; past it the cache starts over (a bound, not an eviction policy).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct PerformanceCache {
    entries: Mutex<HashMap<Uuid, (Instant, Performance, Event)>>,
}

impl PerformanceCache {
    pub fn get(&self, performance_id: Uuid) -> Option<(Performance, Event)> {
        let entries = self.entries.lock().ok()?;
        let (at, performance, event) = entries.get(&performance_id)?;
        (at.elapsed() < FRESH_FOR).then(|| (performance.clone(), event.clone()))
    }

    pub fn put(&self, performance: Performance, event: Event) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(performance.id.uuid(), (Instant::now(), performance, event));
        }
    }

    /// Forgets every performance of this event (the event or one of them changed).
    pub fn forget_event(&self, event_id: Uuid) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, (_, _, event)| event.id != event_id.into());
        }
    }
}
