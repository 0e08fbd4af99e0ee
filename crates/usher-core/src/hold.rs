//! The hold rule: which holds of a batch win their units, decided in arrival order.
//!
//! A hold (or a batch of them, one group commit) is decided in steps, each a pure
//! function over what the hold use case read through its port
//! (`usher_app::hold`): [`screen`] rules out what the performance alone refuses,
//! [`choose_best`] picks best-available seats from the seat map, [`settle_seats`] decides
//! named and chosen seats against the units as locked, [`share_general`] shares out
//! general-admission units. What they decide is written by one conditional update that
//! stays the arbiter under concurrency: a decision here never replaces the `WHERE`
//! clause that makes the write safe.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::best_available::{Choice, House, Read};
use crate::{
    BookedUnit, Booking, BookingId, BookingStatus, Currency, Money, PerformanceId, SeatingKind,
    TicketTypeId, UnitId, UnitState, UserId,
};

/// Which units a hold asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Exactly these units (reserved seating).
    Units(Vec<UnitId>),
    /// Any `quantity` free units of one ticket type (general admission).
    General {
        ticket_type_id: TicketTypeId,
        quantity: u32,
    },
    /// The best `quantity` free seats, adjacent when possible (reserved seating).
    BestAvailable { quantity: u32 },
}

#[derive(Debug, Clone)]
pub struct HoldCommand {
    /// Chosen by the caller, so a retried command is recognisable.
    pub booking_id: BookingId,
    pub user_id: UserId,
    pub performance_id: PerformanceId,
    pub selection: Selection,
    pub now: DateTime<Utc>,
    pub held_until: DateTime<Utc>,
    /// Made by the waiting list: it may take units kept for the waiting list.
    pub offer: bool,
}

impl HoldCommand {
    /// The refusal of a hold whose units are not to be had: the named ones, if any.
    pub fn refused(&self) -> CommandOutcome {
        CommandOutcome::Unavailable {
            unit_ids: match &self.selection {
                Selection::Units(ids) => ids.clone(),
                _ => Vec::new(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    Held(Booking),
    /// Some asked units are taken (or not enough are free); nothing was held.
    Unavailable {
        unit_ids: Vec<UnitId>,
    },
    /// Some asked units do not exist in this performance (none named: the performance
    /// does not exist).
    UnknownUnits {
        unit_ids: Vec<UnitId>,
    },
    /// The performance sells no such ticket type (or sells seats).
    UnknownTicketType {
        ticket_type_id: TicketTypeId,
    },
    Cancelled(Booking),
    /// The booking is not (or no longer) held; it is in this state.
    NotCancellable {
        status: BookingStatus,
    },
    NoSuchBooking,
    Swept {
        expired: Vec<BookingId>,
        released_units: u64,
    },
    /// Units blocked or unblocked; `changed` counts those whose state changed.
    BlockingChanged {
        changed: u64,
    },
    /// The performance (or its event) is cancelled, or not yet on sale.
    NotOnSale,
}

/// What a hold needs to know of its performance; engines read it once per batch.
#[derive(Debug, Clone)]
pub struct HoldFacts {
    pub currency: Currency,
    pub kind: SeatingKind,
    /// Scheduled, and its event published.
    pub open: bool,
    pub starts_at: DateTime<Utc>,
    pub on_sale_at: Option<DateTime<Utc>>,
    /// Sections or ticket types: (id, name).
    pub groups: Vec<(Uuid, String)>,
    /// What people wait for on the waiting list: a ticket type, or (`None`) any seat.
    pub waited_for: Vec<Option<TicketTypeId>>,
}

impl HoldFacts {
    /// Whether this hold must leave its units to the waiting list: while anyone waits
    /// for what it asks, units that come free are theirs first. Offers are exempt.
    pub fn kept_for_waiting_list(&self, hold: &HoldCommand) -> bool {
        if hold.offer {
            return false;
        }
        let asked = match hold.selection {
            Selection::General { ticket_type_id, .. } => Some(ticket_type_id),
            Selection::Units(_) | Selection::BestAvailable { .. } => None,
        };
        self.anyone_waits_for(asked)
    }

    /// Whether anyone on the waiting list waits for this ticket type (`None`: the seats),
    /// or for anything at all.
    pub fn anyone_waits_for(&self, asked: Option<TicketTypeId>) -> bool {
        self.waited_for
            .iter()
            .any(|scope| scope.is_none() || *scope == asked)
    }

    /// Whether this is a general-admission performance with this ticket type.
    pub fn sells(&self, ticket_type_id: TicketTypeId) -> bool {
        self.kind == SeatingKind::General
            && self
                .groups
                .iter()
                .any(|(id, _)| *id == ticket_type_id.uuid())
    }

    /// Whether holds are taken at `now`: open, not started, past its on-sale time.
    pub fn on_sale(&self, now: DateTime<Utc>) -> bool {
        self.open && self.starts_at > now && self.on_sale_at.is_none_or(|t| t <= now)
    }
}

/// A unit a hold took, as the engine's update returned it.
#[derive(Debug, Clone)]
pub struct HeldUnit {
    /// The booking that took it.
    pub booking_id: BookingId,
    pub id: UnitId,
    pub price_amount: i64,
    pub group_id: Uuid,
    pub group_position: i64,
    pub row_position: i64,
    pub seat_position: i64,
    pub row_label: Option<String>,
    pub seat_label: Option<String>,
}

/// The booking a hold created, as a read would return it, assembled from what the
/// engine's statements returned (so that a batch need not read its bookings back).
/// `groups` names the performance's sections or ticket types.
pub fn held_booking(hold: &HoldCommand, facts: &HoldFacts, mut units: Vec<HeldUnit>) -> Booking {
    let (currency, kind, groups) = (facts.currency, facts.kind, &facts.groups);
    units.sort_by_key(|u| (u.group_position, u.row_position, u.seat_position));
    let reserved = kind == SeatingKind::Reserved;
    let section = |id: Uuid| {
        groups
            .iter()
            .find(|(g, _)| *g == id)
            .map(|(_, name)| name.clone())
    };
    let total: i64 = units.iter().map(|u| u.price_amount).sum();
    Booking {
        id: hold.booking_id,
        user_id: hold.user_id,
        performance_id: hold.performance_id,
        status: BookingStatus::Held,
        held_until: hold.held_until,
        total: Money::new(total, currency),
        units: units
            .into_iter()
            .map(|u| BookedUnit {
                unit_id: u.id,
                section: if reserved { section(u.group_id) } else { None },
                row: u.row_label,
                label: u.seat_label,
                ticket_type_id: (!reserved).then_some(TicketTypeId::from_uuid(u.group_id)),
                price: Money::new(u.price_amount, currency),
                ticket: None,
            })
            .collect(),
        paid_by: None,
        offer: hold.offer,
        created_at: hold.now,
        updated_at: hold.now,
    }
}

/// What the batch has decided for one hold so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Answered without taking anything.
    Decided(CommandOutcome),
    /// Cannot be settled in this batch without waiting for others' locks: run it alone.
    Alone,
    /// Still in the running (empty: its units are not chosen yet), or, once every step
    /// ran, the units it takes.
    Take(Vec<UnitId>),
}

/// A unit as the hold's transaction read it, locked where the engine locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockedUnit {
    pub id: UnitId,
    pub performance_id: PerformanceId,
    pub state: UnitState,
    pub held_until: Option<DateTime<Utc>>,
}

/// A unit to take for a booking, if it is still free at `now` (the arbiter's terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitTake {
    pub unit_id: UnitId,
    pub booking_id: BookingId,
    pub held_until: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// The first step: what the performance alone decides (`None`: no such performance).
/// Not on sale, or kept for the waiting list, or a ticket type it does not have.
pub fn screen(hold: &HoldCommand, facts: Option<&HoldFacts>) -> Plan {
    let Some(facts) = facts else {
        return Plan::Decided(CommandOutcome::UnknownUnits {
            unit_ids: Vec::new(),
        });
    };
    if !facts.on_sale(hold.now) {
        return Plan::Decided(CommandOutcome::NotOnSale);
    }
    if facts.kept_for_waiting_list(hold) {
        return Plan::Decided(hold.refused());
    }
    match &hold.selection {
        Selection::General { ticket_type_id, .. } if !facts.sells(*ticket_type_id) => {
            Plan::Decided(CommandOutcome::UnknownTicketType {
                ticket_type_id: *ticket_type_id,
            })
        }
        Selection::Units(ids) => Plan::Take(ids.clone()),
        Selection::General { .. } | Selection::BestAvailable { .. } => Plan::Take(Vec::new()),
    }
}

/// Best available: the hold's seats chosen from its performance's house as this batch
/// has read and marked it so far, and marked taken in it; `Err` names what must be read
/// of the house first.
pub fn choose_best(quantity: u32, house: &mut House) -> Result<Plan, Read> {
    match house.choose(quantity as usize) {
        Choice::Seats(chosen) => Ok(Plan::Take(chosen)),
        Choice::Unavailable => Ok(Plan::Decided(CommandOutcome::Unavailable {
            unit_ids: Vec::new(),
        })),
        Choice::Read(read) => Err(read),
    }
}

/// Every seat the batch names or chose, once: what is locked and read before
/// [`settle_seats`].
pub fn seats_to_lock(holds: &[HoldCommand], plans: &[Plan]) -> Vec<UnitId> {
    let mut ids: Vec<UnitId> = holds
        .iter()
        .zip(plans)
        .filter(|(hold, _)| !matches!(hold.selection, Selection::General { .. }))
        .flat_map(|(_, plan)| match plan {
            Plan::Take(ids) => ids.clone(),
            _ => Vec::new(),
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Named and chosen seats, in arrival order: a hold wins if every unit exists in its
/// performance, is free as read, and no earlier hold of the batch took it. A
/// best-available choice taken since the seat map was read chooses again, alone.
pub fn settle_seats(holds: &[HoldCommand], plans: &mut [Plan], locked: &[LockedUnit]) {
    let locked: HashMap<UnitId, &LockedUnit> = locked.iter().map(|u| (u.id, u)).collect();
    let mut claimed: HashSet<UnitId> = HashSet::new();
    for (hold, plan) in holds.iter().zip(plans.iter_mut()) {
        let best = match (&*plan, &hold.selection) {
            (Plan::Take(_), Selection::Units(_)) => false,
            (Plan::Take(_), Selection::BestAvailable { .. }) => true,
            _ => continue,
        };
        let Plan::Take(ids) = &*plan else { continue };
        let ids = ids.clone();
        let unknown: Vec<UnitId> = ids
            .iter()
            .filter(|id| {
                locked
                    .get(id)
                    .is_none_or(|u| u.performance_id != hold.performance_id)
            })
            .copied()
            .collect();
        let taken: Vec<UnitId> = ids
            .iter()
            .filter(|id| {
                claimed.contains(*id)
                    || locked
                        .get(id)
                        .is_some_and(|u| !u.state.free(u.held_until, hold.now))
            })
            .copied()
            .collect();
        *plan = match (unknown.is_empty(), taken.is_empty(), best) {
            (false, _, _) => Plan::Decided(CommandOutcome::UnknownUnits { unit_ids: unknown }),
            (true, false, true) => Plan::Alone,
            (true, false, false) => Plan::Decided(CommandOutcome::Unavailable { unit_ids: taken }),
            (true, true, _) => {
                claimed.extend(ids.iter().copied());
                Plan::Take(ids)
            }
        };
    }
}

/// General admission: per ticket type, how many units the batch asks for and the
/// earliest `now` among those asking (units free at that moment are free for all).
pub fn general_demand(
    holds: &[HoldCommand],
    plans: &[Plan],
) -> Vec<(TicketTypeId, u32, DateTime<Utc>)> {
    let mut demand: Vec<(TicketTypeId, u32, DateTime<Utc>)> = Vec::new();
    for (hold, plan) in holds.iter().zip(plans) {
        let (
            Plan::Take(_),
            Selection::General {
                ticket_type_id,
                quantity,
            },
        ) = (plan, &hold.selection)
        else {
            continue;
        };
        match demand.iter_mut().find(|(t, _, _)| t == ticket_type_id) {
            Some((_, wanted, since)) => {
                *wanted = wanted.saturating_add(*quantity);
                *since = (*since).min(hold.now);
            }
            None => demand.push((*ticket_type_id, *quantity, hold.now)),
        }
    }
    demand
}

/// Shares the free units read per ticket type among the batch's general-admission
/// holds, in arrival order. A hold the units left cannot fill takes none (a later,
/// smaller one may still be filled); it is refused when `complete` says nothing else
/// can come free while this transaction runs, and runs alone otherwise (others may be
/// locking units that will come free).
pub fn share_general(
    holds: &[HoldCommand],
    plans: &mut [Plan],
    mut free: HashMap<TicketTypeId, Vec<UnitId>>,
    complete: bool,
) {
    for list in free.values_mut() {
        list.reverse();
    }
    for (hold, plan) in holds.iter().zip(plans.iter_mut()) {
        let (
            Plan::Take(_),
            Selection::General {
                ticket_type_id,
                quantity,
            },
        ) = (&*plan, &hold.selection)
        else {
            continue;
        };
        let left = free.entry(*ticket_type_id).or_default();
        let wanted = *quantity as usize;
        *plan = if left.len() >= wanted {
            Plan::Take((0..wanted).filter_map(|_| left.pop()).collect())
        } else if complete {
            Plan::Decided(CommandOutcome::Unavailable {
                unit_ids: Vec::new(),
            })
        } else {
            Plan::Alone
        };
    }
}

/// Every winner's units, as the one conditional update takes them.
pub fn takes(holds: &[HoldCommand], plans: &[Plan]) -> Vec<UnitTake> {
    holds
        .iter()
        .zip(plans)
        .flat_map(|(hold, plan)| {
            let units = match plan {
                Plan::Take(units) => units.as_slice(),
                _ => &[],
            };
            units.iter().map(|unit_id| UnitTake {
                unit_id: *unit_id,
                booking_id: hold.booking_id,
                held_until: hold.held_until,
                now: hold.now,
            })
        })
        .collect()
}
