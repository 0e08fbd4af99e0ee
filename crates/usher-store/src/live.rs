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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use usher_core::{SeatingKind, UnitState};

use crate::PerformanceInventory;

/// Changes that wait in this process's bus for the hub; a hub that falls further
/// behind than this catches up from the change log.
const BUS_CAPACITY: usize = 8192;

/// One unit's new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitMove {
    pub unit_id: Uuid,
    pub state: UnitState,
}

/// What one transaction did to one performance's units, numbered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveChange {
    pub performance_id: Uuid,
    pub seq: i64,
    pub changes: Vec<UnitMove>,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
    /// Units available per section (reserved) or ticket type (general admission).
    pub groups: Vec<GroupAvailability>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupAvailability {
    pub id: Uuid,
    pub available: u64,
}

/// A performance's units as of one `seq`: where a watcher starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSnapshot {
    pub performance_id: Uuid,
    pub kind: SeatingKind,
    pub seq: i64,
    /// In seat-map order, each with its state as a buyer sees it.
    pub units: Vec<UnitMove>,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
    pub groups: Vec<GroupAvailability>,
}

impl LiveChange {
    /// The counts part of a change, from the inventory read in its transaction.
    pub fn counted(
        performance_id: Uuid,
        seq: i64,
        changes: Vec<UnitMove>,
        inventory: &PerformanceInventory,
    ) -> Self {
        Self {
            performance_id,
            seq,
            changes,
            available: inventory.total.available,
            held: inventory.total.held,
            sold: inventory.total.sold,
            groups: groups_of(inventory),
        }
    }
}

pub fn groups_of(inventory: &PerformanceInventory) -> Vec<GroupAvailability> {
    inventory
        .parts
        .iter()
        .map(|(id, counts)| GroupAvailability {
            id: *id,
            available: counts.available,
        })
        .collect()
}

/// Units changed inside one transaction, per performance, in the order they changed;
/// a unit changed twice keeps its last state.
#[derive(Debug, Default, Clone)]
pub struct ChangeSet {
    by_performance: BTreeMap<Uuid, Vec<UnitMove>>,
}

impl ChangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, performance_id: Uuid, unit_id: Uuid, state: UnitState) {
        let moves = self.by_performance.entry(performance_id).or_default();
        match moves.iter_mut().find(|m| m.unit_id == unit_id) {
            Some(existing) => existing.state = state,
            None => moves.push(UnitMove { unit_id, state }),
        }
    }

    pub fn extend(
        &mut self,
        state: UnitState,
        units: impl IntoIterator<Item = (Uuid, Uuid)>,
    ) -> &mut Self {
        for (performance_id, unit_id) in units {
            self.push(performance_id, unit_id, state);
        }
        self
    }

    pub fn merge(&mut self, other: ChangeSet) {
        for (performance_id, moves) in other.by_performance {
            for m in moves {
                self.push(performance_id, m.unit_id, m.state);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_performance.is_empty()
    }

    /// Per performance, in id order: the order every engine locks the feed's heads in.
    pub fn into_performances(self) -> impl Iterator<Item = (Uuid, Vec<UnitMove>)> {
        self.by_performance.into_iter()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_changed_twice_keeps_its_last_state() {
        let (p, u, v) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
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
