//! The change feed behind live seat maps.
//!
//! Every transaction that changes units of a performance also, in that transaction,
//! raises the performance's `seq` by one and writes one [`LiveChange`] (the units that
//! changed, their new states, the counts after it) to the change log. Because the
//! number and the row commit with the change itself, the feed has no gaps and no
//! phantom entries, whatever instance made the change and whether it died right after.
//! After the commit the engine also hands the change to this process's [`LiveBus`] for
//! instant delivery; other instances learn of it through PostgreSQL notifications,
//! Redis, or by reading the log, and order everything by `seq`.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use usher_core::ids::{PerformanceId, UnitId};
use uuid::Uuid;

use chrono::{DateTime, Utc};
use usher_core::{SeatingKind, UnitState};

use crate::{StoreError, StoreResult};

/// Changes that wait in this process's bus for the hub; a hub that falls further
/// behind than this catches up from the change log.
const BUS_CAPACITY: usize = 1024;

/// One unit's new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitMove {
    pub unit_id: UnitId,
    pub state: UnitState,
}

/// What one transaction did to one performance's units, numbered. Counts are not part
/// of it: they follow from the units' states, so watchers derive them (and the hot
/// path never counts a performance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveChange {
    pub performance_id: PerformanceId,
    pub seq: i64,
    pub changes: Vec<UnitMove>,
}

impl LiveChange {
    /// The change as the log keeps it: its moves as JSON, beside its numbers.
    pub fn log_body(changes: &[UnitMove]) -> StoreResult<String> {
        serde_json::to_string(changes).map_err(|e| StoreError::Backend(e.to_string()))
    }

    /// A change read back from the log.
    pub fn from_log(performance_id: PerformanceId, seq: i64, body: &str) -> StoreResult<Self> {
        let changes = serde_json::from_str(body)
            .map_err(|e| StoreError::Backend(format!("a logged live change: {e}")))?;
        Ok(Self {
            performance_id,
            seq,
            changes,
        })
    }
}

/// One unit as a watcher starts from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveUnit {
    pub unit_id: UnitId,
    /// Its section (reserved) or ticket type (general admission).
    pub group_id: Uuid,
    pub state: UnitState,
}

/// A performance's units as of one `seq`: where a watcher starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSnapshot {
    pub performance_id: PerformanceId,
    pub kind: SeatingKind,
    pub seq: i64,
    /// In seat-map order, each with its state as a buyer sees it.
    pub units: Vec<LiveUnit>,
}

impl LiveSnapshot {
    /// Assembles a snapshot from the rows both engines read: `(unit id, group id, stored
    /// state, held until)` in seat-map order.
    pub fn assemble(
        performance_id: PerformanceId,
        kind: &str,
        seq: i64,
        rows: impl IntoIterator<Item = (Uuid, Uuid, String, Option<DateTime<Utc>>)>,
        now: DateTime<Utc>,
    ) -> StoreResult<Self> {
        let corrupt = |e: usher_core::ParseError| StoreError::Backend(e.to_string());
        let units = rows
            .into_iter()
            .map(|(unit_id, group_id, state, held_until)| {
                Ok(LiveUnit {
                    unit_id: unit_id.into(),
                    group_id,
                    state: UnitState::parse(&state)
                        .map_err(corrupt)?
                        .effective(held_until, now),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Self {
            performance_id,
            kind: SeatingKind::parse(kind).map_err(corrupt)?,
            seq,
            units,
        })
    }
}

/// Units changed inside one transaction, per performance, in the order they changed;
/// a unit changed twice keeps its last state.
#[derive(Debug, Default, Clone)]
pub struct ChangeSet {
    by_performance: BTreeMap<PerformanceId, Moves>,
}

#[derive(Debug, Default, Clone)]
struct Moves {
    moves: Vec<UnitMove>,
    /// Where each unit is in `moves` (a batch moves hundreds of units).
    at: HashMap<UnitId, usize>,
}

impl ChangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, performance_id: PerformanceId, unit_id: UnitId, state: UnitState) {
        let Moves { moves, at } = self.by_performance.entry(performance_id).or_default();
        match at.entry(unit_id) {
            Entry::Occupied(i) => moves[*i.get()].state = state,
            Entry::Vacant(slot) => {
                slot.insert(moves.len());
                moves.push(UnitMove { unit_id, state });
            }
        }
    }

    pub fn extend(
        &mut self,
        state: UnitState,
        units: impl IntoIterator<Item = (PerformanceId, UnitId)>,
    ) -> &mut Self {
        for (performance_id, unit_id) in units {
            self.push(performance_id, unit_id, state);
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.by_performance.is_empty()
    }

    /// Per performance, in id order: the order every engine locks the feed's heads in.
    pub fn into_performances(self) -> impl Iterator<Item = (PerformanceId, Vec<UnitMove>)> {
        self.by_performance
            .into_iter()
            .map(|(performance_id, m)| (performance_id, m.moves))
    }
}

/// This process's side of the feed: changes committed here, as soon as they commit.
#[derive(Clone)]
pub struct LiveBus {
    sender: broadcast::Sender<LiveChange>,
}

impl Default for LiveBus {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveBus {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(BUS_CAPACITY);
        Self { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LiveChange> {
        self.sender.subscribe()
    }

    /// Called after the commit. With nobody listening the changes just go; the log has
    /// them.
    pub fn publish(&self, changes: Vec<LiveChange>) {
        for change in changes {
            let _ = self.sender.send(change);
        }
    }
}

/// Announcements of changes committed by any instance, as `(performance id, seq)`.
pub type LiveNotices = tokio::sync::mpsc::Receiver<(Uuid, i64)>;

/// The PostgreSQL channel on which each committed change is announced as
/// `"<performance id> <seq>"`.
pub const NOTIFY_CHANNEL: &str = "usher_live";

/// Parses a notification payload.
pub fn parse_notice(payload: &str) -> Option<(Uuid, i64)> {
    let (id, seq) = payload.split_once(' ')?;
    Some((id.parse().ok()?, seq.parse().ok()?))
}

/// Where notices come from: a `LISTEN` connection of an engine, which may drop.
#[async_trait::async_trait]
pub trait NoticeSource: Send + 'static {
    /// The next payload; `Ok(None)` when the connection dropped (the next call
    /// reconnects), `Err` when it failed.
    async fn next(&mut self) -> Result<Option<String>, String>;
}

/// Forwards live notices (`(performance id, seq)`) until nobody receives them. A
/// dropped connection loses nothing the hub's regular look at the heads does not
/// cover; when the hub falls behind, notices are dropped for the same reason.
pub async fn forward_live(
    mut source: impl NoticeSource,
    send: tokio::sync::mpsc::Sender<(Uuid, i64)>,
) {
    use tokio::sync::mpsc::error::TrySendError;
    loop {
        match source.next().await {
            Ok(Some(payload)) => {
                let notice = parse_notice(&payload);
                if let Some(Err(TrySendError::Closed(_))) = notice.map(|n| send.try_send(n)) {
                    return;
                }
            }
            Ok(None) => tracing::warn!("the live feed's LISTEN connection dropped; reconnecting"),
            Err(error) => {
                if send.is_closed() {
                    return;
                }
                tracing::warn!(%error, "the live feed's LISTEN connection failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

/// Forwards account notices until nobody receives them. When the connection drops,
/// notices sent meanwhile are lost, and when the receiver falls behind it cannot catch
/// up: either way it is told to forget everything it remembered.
pub async fn forward_accounts(
    mut source: impl NoticeSource,
    send: tokio::sync::mpsc::Sender<crate::AccountNotice>,
) {
    use crate::AccountNotice;
    use tokio::sync::mpsc::error::TrySendError;
    loop {
        let notice = match source.next().await {
            Ok(Some(payload)) => match AccountNotice::from_payload(&payload) {
                Some(notice) => notice,
                None => continue,
            },
            Ok(None) => {
                tracing::warn!("the account notices' LISTEN connection dropped; reconnecting");
                AccountNotice::Everything
            }
            Err(error) => {
                tracing::warn!(%error, "the account notices' LISTEN connection failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                AccountNotice::Everything
            }
        };
        let sent = match send.try_send(notice) {
            Err(TrySendError::Full(_)) => {
                send.send(AccountNotice::Everything).await.map_err(|_| ())
            }
            Err(TrySendError::Closed(_)) => Err(()),
            Ok(()) => Ok(()),
        };
        if sent.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_changed_twice_keeps_its_last_state() {
        let (p, u, v) = (
            PerformanceId::generate(),
            UnitId::generate(),
            UnitId::generate(),
        );
        let mut set = ChangeSet::new();
        set.push(p, u, UnitState::Held);
        set.push(p, v, UnitState::Held);
        set.push(p, u, UnitState::Available);
        let all: Vec<_> = set.into_performances().collect();
        assert_eq!(
            all,
            vec![(
                p,
                vec![
                    UnitMove {
                        unit_id: u,
                        state: UnitState::Available
                    },
                    UnitMove {
                        unit_id: v,
                        state: UnitState::Held
                    }
                ]
            )]
        );
    }

    #[test]
    fn notices_round_trip() {
        let p = Uuid::now_v7();
        assert_eq!(parse_notice(&format!("{p} 42")), Some((p, 42)));
        assert_eq!(parse_notice("nonsense"), None);
    }
}
