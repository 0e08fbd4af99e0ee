//! Live seat maps: the hub that turns the store's change feed ([`usher_store::live`])
//! into one ordered stream of messages per watched performance.
//!
//! Changes reach the hub from up to three sources — this process's commits (the store's
//! bus), other instances' commits (Redis pub/sub, PostgreSQL notifications) — in any
//! order and possibly twice. Per performance the hub keeps a view (the last snapshot
//! with every change since applied) and delivers changes strictly by `seq`: one already
//! applied is dropped, one that comes early waits for the gap to fill, and a gap that
//! does not fill by itself (a lost message, a crashed publisher) is read from the
//! store's change log. Every message is serialised once and shared by all watchers
//! through a bounded broadcast; a watcher too slow to keep up lags out of it and is
//! disconnected, never buffered.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use usher_core::{Clock, PerformanceId, SeatingKind, UnitState};
use usher_store::live::LiveUnit;
use usher_store::{LiveChange, LiveSnapshot, Store, StoreResult, UnitMove};

use crate::redis::Redis;

/// How often the hub looks for watched performances that fell behind their head.
const TICK: Duration = Duration::from_millis(100);
/// How often it asks the store for the heads of everything watched (covers changes
/// whose announcement was lost).
const HEADS_EVERY: Duration = Duration::from_secs(1);
/// How long a known gap may wait for its message before the log is read.
const GAP_GRACE: Duration = Duration::from_millis(150);
/// Changes read from the log per request.
const CATCH_UP_BATCH: u32 = 1_000;
/// Early changes kept per performance while a gap fills; beyond, the log is read.
const MAX_PENDING: usize = 4_096;

/// One message to watchers, serialised once.
#[derive(Clone, Debug)]
pub struct Frame {
    pub seq: i64,
    pub text: Utf8Bytes,
}

#[derive(Clone)]
pub struct LiveHub {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Messages a watcher may fall behind by before it is disconnected.
    backlog: usize,
    feeds: Mutex<HashMap<Uuid, Arc<Feed>>>,
    /// Changes of performances nobody here watches still invalidate cached reads.
    invalidations: broadcast::Sender<Uuid>,
}

struct Feed {
    sender: broadcast::Sender<Frame>,
    /// Serialises the first snapshot read: one read while other watchers wait.
    first_read: tokio::sync::Mutex<()>,
    state: Mutex<FeedState>,
}

#[derive(Default)]
struct FeedState {
    view: Option<View>,
    /// Changes that came ahead of the view, by seq.
    pending: BTreeMap<i64, LiveChange>,
    /// The highest seq known to exist (from announcements and the heads).
    known_head: i64,
    /// Since when the view has been behind `known_head` or has had pending changes.
    behind_since: Option<Instant>,
    /// The snapshot message as of `view.seq`, built on demand.
    snapshot: Option<Frame>,
}

/// A performance as watchers see it: every unit's state, and the counts that follow
/// from them (kept as changes apply, never recounted).
struct View {
    kind: SeatingKind,
    seq: i64,
    units: Vec<LiveUnit>,
    index: HashMap<Uuid, usize>,
    available: u64,
    held: u64,
    sold: u64,
    /// Available units per section or ticket type, in seat-map order.
    groups: Vec<(Uuid, u64)>,
}

impl View {
    fn from_snapshot(snapshot: LiveSnapshot) -> Self {
        let mut view = Self {
            kind: snapshot.kind,
            seq: snapshot.seq,
            index: HashMap::with_capacity(snapshot.units.len()),
            units: Vec::with_capacity(snapshot.units.len()),
            available: 0,
            held: 0,
            sold: 0,
            groups: Vec::new(),
        };
        for unit in snapshot.units {
            if view
                .groups
                .last()
                .is_none_or(|(id, _)| *id != unit.group_id)
            {
                view.groups.push((unit.group_id, 0));
            }
            view.index.insert(unit.unit_id.uuid(), view.units.len());
            view.count(unit.group_id, unit.state, true);
            view.units.push(unit);
        }
        view
    }

    /// Adds one unit in this state to the counts, or takes it away.
    fn count(&mut self, group_id: Uuid, state: UnitState, add: bool) {
        let step = |n: &mut u64| *n = if add { *n + 1 } else { n.saturating_sub(1) };
        match state {
            UnitState::Available => {
                step(&mut self.available);
                if let Some((_, available)) = self.groups.iter_mut().find(|(id, _)| *id == group_id)
                {
                    step(available);
                }
            }
            UnitState::Held => step(&mut self.held),
            UnitState::Sold => step(&mut self.sold),
            UnitState::Blocked => {}
        }
    }

    fn apply(&mut self, change: &LiveChange) {
        for m in &change.changes {
            let Some(&i) = self.index.get(&m.unit_id.uuid()) else {
                continue;
            };
            let LiveUnit {
                group_id, state, ..
            } = self.units[i];
            self.count(group_id, state, false);
            self.count(group_id, m.state, true);
            self.units[i].state = m.state;
        }
        self.seq = change.seq;
    }

    /// General admission: what each ticket type has left.
    fn ticket_types(&self) -> Option<Vec<TicketTypeAvailability>> {
        (self.kind == SeatingKind::General).then(|| {
            self.groups
                .iter()
                .map(|&(id, available)| TicketTypeAvailability { id, available })
                .collect()
        })
    }
}

#[derive(Serialize)]
struct TicketTypeAvailability {
    id: Uuid,
    available: u64,
}

#[derive(Serialize)]
struct SnapshotMessage {
    #[serde(rename = "type")]
    kind: &'static str,
    performance_id: Uuid,
    seq: i64,
    available: u64,
    held: u64,
    sold: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    units: Option<Vec<UnitMove>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket_types: Option<Vec<TicketTypeAvailability>>,
}

#[derive(Serialize)]
struct UnitsMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    performance_id: Uuid,
    seq: i64,
    changes: &'a [UnitMove],
    available: u64,
    held: u64,
    sold: u64,
    /// General admission: what each ticket type has left.
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket_types: Option<Vec<TicketTypeAvailability>>,
}

fn frame(seq: i64, message: &impl Serialize) -> Frame {
    let text = serde_json::to_string(message).unwrap_or_else(|e| {
        // Plain structs of numbers, ids and enums: this cannot fail.
        tracing::error!(error = %e, "a live message did not serialise");
        String::new()
    });
    Frame {
        seq,
        text: text.into(),
    }
}

/// What a new watcher starts from.
pub struct Watch {
    pub snapshot: Frame,
    pub frames: broadcast::Receiver<Frame>,
}

impl LiveHub {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, backlog: usize) -> Self {
        let (invalidations, _) = broadcast::channel(4096);
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                backlog: backlog.max(1),
                feeds: Mutex::new(HashMap::new()),
                invalidations,
            }),
        }
    }

    /// Performances whose units changed (here or elsewhere), for caches to forget.
    pub fn invalidations(&self) -> broadcast::Receiver<Uuid> {
        self.inner.invalidations.subscribe()
    }

    fn feed(&self, performance_id: Uuid) -> Option<Arc<Feed>> {
        self.inner.feeds.lock().ok()?.get(&performance_id).cloned()
    }

    /// Starts watching a performance: its snapshot now, and every change after it.
    /// `None` when there is no such performance.
    pub async fn watch(&self, performance_id: Uuid) -> StoreResult<Option<Watch>> {
        let feed = {
            let mut feeds = self.inner.feeds.lock().map_err(poisoned)?;
            feeds
                .entry(performance_id)
                .or_insert_with(|| {
                    Arc::new(Feed {
                        sender: broadcast::channel(self.inner.backlog).0,
                        first_read: tokio::sync::Mutex::new(()),
                        state: Mutex::new(FeedState::default()),
                    })
                })
                .clone()
        };
        // Subscribed before the snapshot is read: nothing after it can be missed.
        let frames = feed.sender.subscribe();
        if feed.state.lock().map_err(poisoned)?.view.is_none() {
            let _reading = feed.first_read.lock().await;
            if feed.state.lock().map_err(poisoned)?.view.is_none() {
                let now = self.inner.clock.now();
                let Some(snapshot) = self
                    .inner
                    .store
                    .live_snapshot(performance_id.into(), now)
                    .await?
                else {
                    drop(frames);
                    self.forget_if_idle(performance_id);
                    return Ok(None);
                };
                let mut state = feed.state.lock().map_err(poisoned)?;
                if state.view.is_none() {
                    state.known_head = state.known_head.max(snapshot.seq);
                    state.view = Some(View::from_snapshot(snapshot));
                    drain(&feed, &mut state);
                }
            }
        }
        let mut state = feed.state.lock().map_err(poisoned)?;
        let snapshot = snapshot_frame(performance_id, &mut state);
        Ok(snapshot.map(|snapshot| Watch { snapshot, frames }))
    }

    /// Takes a change from any source.
    pub fn offer(&self, change: LiveChange) {
        let _ = self.inner.invalidations.send(change.performance_id.uuid());
        let Some(feed) = self.feed(change.performance_id.uuid()) else {
            return;
        };
        let Ok(mut state) = feed.state.lock() else {
            return;
        };
        state.known_head = state.known_head.max(change.seq);
        let applied = state.view.as_ref().map_or(0, |v| v.seq);
        if change.seq <= applied {
            return;
        }
        if state.pending.len() >= MAX_PENDING {
            // Something is badly out of order; the log will be read instead.
            state.pending.clear();
        }
        state.pending.insert(change.seq, change);
        drain(&feed, &mut state);
    }

    /// Takes an announcement that a change exists (from PostgreSQL).
    pub fn announce(&self, performance_id: Uuid, seq: i64) {
        let _ = self.inner.invalidations.send(performance_id);
        if let Some(feed) = self.feed(performance_id)
            && let Ok(mut state) = feed.state.lock()
        {
            state.known_head = state.known_head.max(seq);
            let applied = state.view.as_ref().map_or(0, |v| v.seq);
            if seq > applied && state.behind_since.is_none() {
                state.behind_since = Some(Instant::now());
            }
        }
    }

    /// Watched performances, dropping those nobody watches any more.
    fn watched(&self) -> Vec<(Uuid, Arc<Feed>)> {
        let Ok(mut feeds) = self.inner.feeds.lock() else {
            return Vec::new();
        };
        feeds.retain(|_, feed| feed.sender.receiver_count() > 0);
        feeds.iter().map(|(id, f)| (*id, f.clone())).collect()
    }

    fn forget_if_idle(&self, performance_id: Uuid) {
        if let Ok(mut feeds) = self.inner.feeds.lock()
            && feeds
                .get(&performance_id)
                .is_some_and(|f| f.sender.receiver_count() == 0)
        {
            feeds.remove(&performance_id);
        }
    }

    /// Number of open watchers, all performances (a gauge).
    pub fn watchers(&self) -> usize {
        self.inner
            .feeds
            .lock()
            .map(|feeds| feeds.values().map(|f| f.sender.receiver_count()).sum())
            .unwrap_or(0)
    }

    /// Reads from the log what watched performances miss.
    async fn catch_up(&self, heads: bool) {
        let watched = self.watched();
        if watched.is_empty() {
            return;
        }
        if heads {
            let ids: Vec<PerformanceId> = watched.iter().map(|(id, _)| (*id).into()).collect();
            match self.inner.store.live_heads(&ids).await {
                Ok(heads) => {
                    for (id, seq) in heads {
                        self.announce(id.uuid(), seq);
                    }
                }
                Err(error) => tracing::warn!(%error, "reading the live feed's heads failed"),
            }
        }
        for (performance_id, feed) in watched {
            let after = {
                let Ok(state) = feed.state.lock() else {
                    continue;
                };
                let Some(view) = &state.view else { continue };
                match state.behind_since {
                    Some(since) if since.elapsed() >= GAP_GRACE => view.seq,
                    _ => continue,
                }
            };
            let known_head = feed.state.lock().map_or(after, |state| state.known_head);
            match self
                .inner
                .store
                .live_changes(performance_id.into(), after, CATCH_UP_BATCH)
                .await
            {
                Ok(changes) => {
                    // The log must go on from the view: an empty answer while more is
                    // known to exist means it was purged.
                    let continues = match changes.first() {
                        Some(first) => first.seq == after + 1,
                        None => known_head <= after,
                    };
                    if !continues {
                        // The log no longer reaches back to this view: start over, and
                        // let watchers reconnect for a fresh snapshot.
                        tracing::warn!(%performance_id, after, "the live log no longer has what watchers miss; they reconnect");
                        self.restart(performance_id);
                        continue;
                    }
                    metrics::counter!("usher_live_catch_up_total").increment(1);
                    for change in changes {
                        self.offer(change);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, %performance_id, "reading the live log failed")
                }
            }
        }
    }

    /// Drops a feed: its watchers' streams end and they reconnect.
    fn restart(&self, performance_id: Uuid) {
        if let Ok(mut feeds) = self.inner.feeds.lock() {
            feeds.remove(&performance_id);
        }
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> usher_store::StoreError {
    usher_store::StoreError::Backend("the live hub's lock was poisoned".into())
}

/// Applies and sends what follows the view without a gap.
fn drain(feed: &Feed, state: &mut FeedState) {
    let FeedState {
        view,
        pending,
        known_head,
        behind_since,
        snapshot,
    } = state;
    let Some(view) = view.as_mut() else { return };
    while let Some(entry) = pending.first_entry() {
        let seq = *entry.key();
        if seq <= view.seq {
            entry.remove();
            continue;
        }
        if seq != view.seq + 1 {
            break;
        }
        let change = entry.remove();
        view.apply(&change);
        *snapshot = None;
        let message = UnitsMessage {
            kind: "units",
            performance_id: change.performance_id.uuid(),
            seq,
            changes: &change.changes,
            available: view.available,
            held: view.held,
            sold: view.sold,
            ticket_types: view.ticket_types(),
        };
        // Nobody listening is fine: the view is kept for the next watcher.
        let _ = feed.sender.send(frame(seq, &message));
        metrics::counter!("usher_live_changes_delivered_total").increment(1);
    }
    if pending.is_empty() && *known_head <= view.seq {
        *behind_since = None;
    } else if behind_since.is_none() {
        *behind_since = Some(Instant::now());
    }
}

fn snapshot_frame(performance_id: Uuid, state: &mut FeedState) -> Option<Frame> {
    let view = state.view.as_ref()?;
    if let Some(snapshot) = state.snapshot.as_ref().filter(|s| s.seq == view.seq) {
        return Some(snapshot.clone());
    }
    let general = view.kind == SeatingKind::General;
    let message = SnapshotMessage {
        kind: "snapshot",
        performance_id,
        seq: view.seq,
        available: view.available,
        held: view.held,
        sold: view.sold,
        units: (!general).then(|| {
            view.units
                .iter()
                .map(|u| UnitMove {
                    unit_id: u.unit_id,
                    state: u.state,
                })
                .collect()
        }),
        ticket_types: view.ticket_types(),
    };
    let built = frame(view.seq, &message);
    state.snapshot = Some(built.clone());
    Some(built)
}

/// Feeds the hub until `stop`: this process's commits, other instances' (Redis, the
/// store's announcements), and a regular look at the log for what went missing.
pub async fn run(hub: LiveHub, redis: Option<Redis>, mut stop: watch::Receiver<bool>) {
    let store = hub.inner.store.clone();
    let mut local = store.live_bus().subscribe();
    let mut notices = match store.live_notices().await {
        Ok(notices) => notices,
        Err(error) => {
            tracing::warn!(%error, "could not follow the store's announcements; relying on polling");
            None
        }
    };
    if let Some(redis) = &redis {
        tokio::spawn(follow_redis(hub.clone(), redis.clone(), stop.clone()));
    }
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heads = Instant::now();
    loop {
        tokio::select! {
            change = local.recv() => match change {
                Ok(change) => {
                    if let Some(redis) = &redis {
                        redis.publish_change(&change);
                    }
                    hub.offer(change);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "the live hub fell behind this process's commits; reading the log");
                    last_heads = Instant::now() - HEADS_EVERY;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            notice = async {
                match notices.as_mut() {
                    Some(n) => n.recv().await,
                    None => std::future::pending().await,
                }
            } => match notice {
                Some((performance_id, seq)) => hub.announce(performance_id, seq),
                None => notices = None,
            },
            _ = ticks.tick() => {
                let heads = last_heads.elapsed() >= HEADS_EVERY;
                if heads {
                    last_heads = Instant::now();
                    metrics::gauge!("usher_live_watchers").set(hub.watchers() as f64);
                }
                hub.catch_up(heads).await;
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// Other instances' changes through Redis, resubscribing whenever the link drops.
async fn follow_redis(hub: LiveHub, redis: Redis, stop: watch::Receiver<bool>) {
    redis
        .follow_changes(stop, move |change| hub.offer(change))
        .await;
}
